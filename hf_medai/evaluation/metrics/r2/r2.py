"""Coefficient of determination (R^2) of a regression, computed by scikit-learn's `r2_score`.

`r2(...)` is the single definition: `_compute` calls it, and so does hf_medai's bootstrap, which
passes `references` of shape (B, n), one resample per row; sklearn's multioutput form then scores
every resample in one call.

R^2 is undefined (NaN) when the references are constant: sklearn's default would report 0 or 1
there (`force_finite`), which reads like a real result.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import r2_score

_DESCRIPTION = """R^2: 1 - residual sum of squares / total sum of squares around the mean of the references
(1 is perfect; 0 is no better than predicting the mean)."""

_KWARGS_DESCRIPTION = """
Args:
    references: true values (floats).
    predictions: predicted values (floats).
Returns:
    r2: float.
"""

_CITATION = """@article{scikit-learn, title={Scikit-learn: Machine Learning in Python},
author={Pedregosa, F. and others}, journal={JMLR}, volume={12}, pages={2825--2830}, year={2011}}"""


def r2(references, predictions):
    """R^2 of one evaluation (1-D) or of each row of a (B, n) batch of resamples; NaN if undefined."""
    y = np.asarray(references, dtype=np.float64)
    p = np.asarray(predictions, dtype=np.float64)
    if y.ndim == 1:
        return float(r2_score(y, p, force_finite=False))
    return np.atleast_1d(r2_score(y.T, p.T, multioutput="raw_values", force_finite=False))


class R2(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.r2_score.html"],
        )

    def _compute(self, references, predictions):
        return {"r2": r2(references, predictions)}
