"""Average precision (area under the precision-recall curve), computed by scikit-learn.

Binary: `prediction_scores` is the score of the positive class (label 1). Undefined (NaN) when
`references` holds no positive: sklearn would return 0 there, which reads like a real result.

`average_precision(...)` is the single definition: `_compute` calls it, and so does hf_medai's
bootstrap, which passes `references` of shape (B, n), one resample per row, to score B at once.
"""

import warnings

import datasets
import evaluate
import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import average_precision_score

_DESCRIPTION = """Average precision: the mean of precisions at each threshold, weighted by the increase
in recall (sklearn's step-wise, non-interpolated AUPRC). Its chance level is the prevalence."""

_KWARGS_DESCRIPTION = """
Args:
    references: true binary labels 0/1.
    prediction_scores: score of class 1 per example.
Returns:
    average_precision: float; NaN when there is no positive example.
"""

_CITATION = """@article{scikit-learn, title={Scikit-learn: Machine Learning in Python},
author={Pedregosa, F. and others}, journal={JMLR}, volume={12}, pages={2825--2830}, year={2011}}"""


def average_precision(references, prediction_scores):
    """AP of one evaluation (1-D `references`) or of each row of a (B, n) batch of resamples."""
    y = np.asarray(references)
    s = np.asarray(prediction_scores, dtype=np.float64)
    with warnings.catch_warnings():
        # sklearn warns about references without positives; we return NaN for those below
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="No positive class found in y_true")
        if y.ndim == 1:
            return float(average_precision_score(y, s)) if (y == 1).any() else float("nan")
        if y.shape[0] > 1:
            # sklearn's multilabel form scores each column as its own binary problem: resamples as columns
            # (C-ordered copies: on transposed views sklearn's column slicing is several times slower)
            values = average_precision_score(np.ascontiguousarray(y.T), np.ascontiguousarray(s.T), average=None)
            values = np.asarray(values, dtype=np.float64)
        else:
            values = np.array([average_precision_score(y[0], s[0])], dtype=np.float64)
    values[~(y == 1).any(axis=1)] = np.nan
    return values


class AveragePrecision(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"prediction_scores": datasets.Value("float64"), "references": datasets.Value("int32")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.average_precision_score.html"
            ],
        )

    def _compute(self, references, prediction_scores):
        return {"average_precision": average_precision(references, prediction_scores)}
