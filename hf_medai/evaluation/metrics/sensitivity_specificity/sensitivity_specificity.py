"""Sensitivity, specificity, PPV and NPV of a binary classifier, from scikit-learn's confusion matrix.

Label 1 is the positive class (the disease). A rate whose denominator is zero (no positives for
sensitivity, no positive predictions for PPV, ...) is NaN: undefined, not 0.

`sensitivity_specificity(...)` is the single definition: `_compute` calls it, and so does hf_medai's
bootstrap, which passes `references` of shape (B, n), one resample per row, to score B at once.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix

_DESCRIPTION = """The four rates of the 2x2 confusion matrix (label 1 = positive):
sensitivity = TP/(TP+FN), specificity = TN/(TN+FP), ppv = TP/(TP+FP), npv = TN/(TN+FN)."""

_KWARGS_DESCRIPTION = """
Args:
    references: true binary labels 0/1.
    predictions: predicted binary labels 0/1.
Returns:
    sensitivity, specificity, ppv, npv: floats; NaN where the denominator is zero.
"""

_CITATION = """@article{scikit-learn, title={Scikit-learn: Machine Learning in Python},
author={Pedregosa, F. and others}, journal={JMLR}, volume={12}, pages={2825--2830}, year={2011}}"""


def sensitivity_specificity(references, predictions):
    """The four rates of one evaluation (1-D) or of each row of a (B, n) batch of resamples."""
    y = np.asarray(references)
    p = np.asarray(predictions)
    if y.ndim == 1:
        cm = confusion_matrix(y, p, labels=[0, 1])[None]
    elif y.shape[0] > 1:
        # sklearn's multilabel form gives one 2x2 matrix per column: resamples as columns, one call
        cm = multilabel_confusion_matrix(y.T, p.T)
    else:
        cm = confusion_matrix(y[0], p[0], labels=[0, 1])[None]
    cm = cm.astype(np.float64)
    tn, fp, fn, tp = cm[:, 0, 0], cm[:, 0, 1], cm[:, 1, 0], cm[:, 1, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
        }
    if y.ndim == 1:
        return {name: float(value[0]) for name, value in rates.items()}
    return rates


class SensitivitySpecificity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.confusion_matrix.html"],
        )

    def _compute(self, references, predictions):
        return sensitivity_specificity(references, predictions)
