"""Balanced accuracy (mean recall over the classes present), computed by scikit-learn.

`balanced_accuracy(...)` is the single definition: `_compute` calls it, and so does hf_medai's
bootstrap, which passes `references` of shape (B, n), one resample per row, to score B at once.
"""

import warnings

import datasets
import evaluate
import numpy as np
from sklearn.metrics import balanced_accuracy_score, multilabel_confusion_matrix

_DESCRIPTION = """Balanced accuracy: the recall of each class present in the references, averaged with
equal weight per class, so a rare class counts as much as a common one."""

_KWARGS_DESCRIPTION = """
Args:
    references: true labels (ints).
    predictions: predicted labels (ints).
Returns:
    balanced_accuracy: float.
"""

_CITATION = """@article{scikit-learn, title={Scikit-learn: Machine Learning in Python},
author={Pedregosa, F. and others}, journal={JMLR}, volume={12}, pages={2825--2830}, year={2011}}"""


def balanced_accuracy(references, predictions):
    """Balanced accuracy of one evaluation (1-D) or of each row of a (B, n) batch of resamples."""
    y = np.asarray(references)
    p = np.asarray(predictions)
    with warnings.catch_warnings():
        # sklearn warns when a predicted class is absent from the references; the value stays defined
        warnings.simplefilter("ignore", UserWarning)
        if y.ndim == 1:
            return float(balanced_accuracy_score(y, p))
        if y.shape[0] > 1 and y.min() >= 0 and p.min() >= 0 and max(y.max(), p.max()) <= 1:
            # Binary 0/1 resamples: sklearn's confusion matrices of all columns in one call; recall of each
            # class present, averaged, as balanced_accuracy_score does (the tests pin the equality).
            cm = multilabel_confusion_matrix(y.T, p.T).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                recall_pos = cm[:, 1, 1] / (cm[:, 1, 1] + cm[:, 1, 0])
                recall_neg = cm[:, 0, 0] / (cm[:, 0, 0] + cm[:, 0, 1])
            return np.nanmean(np.stack([recall_neg, recall_pos]), axis=0)
        return np.array([balanced_accuracy_score(yb, pb) for yb, pb in zip(y, p)], dtype=np.float64)


class BalancedAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.balanced_accuracy_score.html"
            ],
        )

    def _compute(self, references, predictions):
        return {"balanced_accuracy": balanced_accuracy(references, predictions)}
