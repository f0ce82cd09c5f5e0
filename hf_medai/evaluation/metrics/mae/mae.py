"""Mean absolute error of a regression, computed by scikit-learn's `mean_absolute_error`.

`mae(...)` is the single definition: `_compute` calls it, and so does hf_medai's bootstrap, which
passes `references` of shape (B, n), one resample per row; sklearn's multioutput form then scores
every resample in one call.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import mean_absolute_error

_DESCRIPTION = """MAE: mean of |prediction - reference|, in the unit of the target (lower is better)."""

_KWARGS_DESCRIPTION = """
Args:
    references: true values (floats).
    predictions: predicted values (floats).
Returns:
    mae: float.
"""

_CITATION = """@article{scikit-learn, title={Scikit-learn: Machine Learning in Python},
author={Pedregosa, F. and others}, journal={JMLR}, volume={12}, pages={2825--2830}, year={2011}}"""


def mae(references, predictions):
    """MAE of one evaluation (1-D) or of each row of a (B, n) batch of resamples."""
    y = np.asarray(references, dtype=np.float64)
    p = np.asarray(predictions, dtype=np.float64)
    if y.ndim == 1:
        return float(mean_absolute_error(y, p))
    return np.atleast_1d(mean_absolute_error(y.T, p.T, multioutput="raw_values"))


class MeanAbsoluteError(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.mean_absolute_error.html"
            ],
        )

    def _compute(self, references, predictions):
        return {"mae": mae(references, predictions)}
