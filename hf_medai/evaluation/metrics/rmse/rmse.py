"""Root mean squared error of a regression, computed by scikit-learn's `root_mean_squared_error`.

`rmse(...)` is the single definition: `_compute` calls it, and so does hf_medai's bootstrap, which
passes `references` of shape (B, n), one resample per row; sklearn's multioutput form then scores
every resample in one call.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import root_mean_squared_error

_DESCRIPTION = """RMSE: square root of the mean of (prediction - reference)^2, in the unit of the target
(lower is better)."""

_KWARGS_DESCRIPTION = """
Args:
    references: true values (floats).
    predictions: predicted values (floats).
Returns:
    rmse: float.
"""

_CITATION = """@article{scikit-learn, title={Scikit-learn: Machine Learning in Python},
author={Pedregosa, F. and others}, journal={JMLR}, volume={12}, pages={2825--2830}, year={2011}}"""


def rmse(references, predictions):
    """RMSE of one evaluation (1-D) or of each row of a (B, n) batch of resamples."""
    y = np.asarray(references, dtype=np.float64)
    p = np.asarray(predictions, dtype=np.float64)
    if y.ndim == 1:
        return float(root_mean_squared_error(y, p))
    return np.atleast_1d(root_mean_squared_error(y.T, p.T, multioutput="raw_values"))


class RootMeanSquaredError(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.root_mean_squared_error.html"
            ],
        )

    def _compute(self, references, predictions):
        return {"rmse": rmse(references, predictions)}
