"""Brier score of binary probabilities, computed by scikit-learn.

The Brier score is the mean squared difference between the predicted probability of class 1 and the
0/1 outcome (lower is better). One evaluation goes through `brier_score_loss`, which also checks the
inputs; a (B, n) batch of bootstrap resamples goes through `mean_squared_error` with one output per
resample, the same quantity in one call (the tests pin the equality).

`brier(...)` is the single definition: `_compute` calls it, and so does hf_medai's bootstrap.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import brier_score_loss, mean_squared_error

_DESCRIPTION = """Brier score: mean of (p - y)^2 for the probability p of class 1 and the outcome y in {0, 1}."""

_KWARGS_DESCRIPTION = """
Args:
    references: true binary labels 0/1.
    prediction_scores: predicted probability of class 1, in [0, 1].
Returns:
    brier: float.
"""

_CITATION = """@article{brier1950, title={Verification of forecasts expressed in terms of probability},
author={Brier, Glenn W.}, journal={Monthly Weather Review}, volume={78}, pages={1--3}, year={1950}}"""


def brier(references, prediction_scores):
    """Brier score of one evaluation (1-D) or of each row of a (B, n) batch of resamples."""
    y = np.asarray(references)
    s = np.asarray(prediction_scores, dtype=np.float64)
    if y.ndim == 1:
        return float(brier_score_loss(y, s, pos_label=1))
    return np.atleast_1d(mean_squared_error(y.T.astype(np.float64), s.T, multioutput="raw_values"))


class Brier(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"prediction_scores": datasets.Value("float64"), "references": datasets.Value("int32")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.brier_score_loss.html"],
        )

    def _compute(self, references, prediction_scores):
        return {"brier": brier(references, prediction_scores)}
