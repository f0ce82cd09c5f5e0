"""Accuracy (fraction of correct predictions), computed by scikit-learn.

`accuracy(...)` is the single definition: `_compute` calls it, and so does hf_medai's bootstrap,
which passes `references` of shape (B, n), one resample per row, to score B resamples in one call.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, multilabel_confusion_matrix

_DESCRIPTION = """Accuracy: the fraction of examples whose predicted label equals the true label."""

_KWARGS_DESCRIPTION = """
Args:
    references: true labels (ints).
    predictions: predicted labels (ints).
Returns:
    accuracy: float.
"""

_CITATION = """@article{scikit-learn, title={Scikit-learn: Machine Learning in Python},
author={Pedregosa, F. and others}, journal={JMLR}, volume={12}, pages={2825--2830}, year={2011}}"""


def accuracy(references, predictions):
    """Accuracy of one evaluation (1-D `references`) or of each row of a (B, n) batch of resamples."""
    y = np.asarray(references)
    p = np.asarray(predictions)
    if y.ndim == 1:
        return float(accuracy_score(y, p))
    if y.shape[0] > 1 and y.min() >= 0 and p.min() >= 0 and max(y.max(), p.max()) <= 1:
        # Binary 0/1 resamples: sklearn's confusion matrices of all columns in one call, instead of one
        # accuracy_score call per resample (the bootstrap's hot path); the tests pin the equality.
        cm = multilabel_confusion_matrix(y.T, p.T)
        return (cm[:, 0, 0] + cm[:, 1, 1]) / y.shape[1]
    return np.array([accuracy_score(yb, pb) for yb, pb in zip(y, p)], dtype=np.float64)


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, references, predictions):
        return {"accuracy": accuracy(references, predictions)}
