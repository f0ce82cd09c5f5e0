"""Area under the ROC curve, computed by scikit-learn's `roc_auc_score`.

Binary (default config): `prediction_scores` is the score of the positive class (label 1).
Multiclass (config "multiclass", declared as evaluate's own roc_auc does it: one sequence of class
probabilities per example): one-vs-rest AUROC, macro-averaged; `average=None` gives one per class.

`roc_auc(...)` is the single definition: `_compute` calls it, and so does hf_medai's bootstrap, which
passes `references` of shape (B, n), one resample per row, to score B resamples in one call.
Undefined values (a class absent from `references`) come back as NaN.
"""

import warnings

import datasets
import evaluate
import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score

_DESCRIPTION = """AUROC: the probability that a random positive example scores above a random negative
one (ties count half). Multiclass: one-vs-rest AUROC per class, macro-averaged."""

_KWARGS_DESCRIPTION = """
Args:
    references: true labels; binary 0/1, or multiclass class indices 0..K-1.
    prediction_scores: binary: score of class 1 per example; multiclass: K class probabilities per example.
    average: multiclass only: "macro" (default), "weighted", or None for one value per class.
    labels: multiclass only: the class indices the score columns stand for (default 0..K-1).
Returns:
    roc_auc: float (or one per class with average=None); NaN where undefined.
"""

_CITATION = """@article{scikit-learn, title={Scikit-learn: Machine Learning in Python},
author={Pedregosa, F. and others}, journal={JMLR}, volume={12}, pages={2825--2830}, year={2011}}"""


def roc_auc(references, prediction_scores, average="macro", labels=None):
    """AUROC of one evaluation (1-D `references`) or of each row of a (B, n) batch of resamples."""
    y = np.asarray(references)
    s = np.asarray(prediction_scores, dtype=np.float64)
    multiclass = s.ndim == y.ndim + 1
    with warnings.catch_warnings():
        # sklearn warns and returns NaN when only one class is present: NaN is our "undefined"
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        if y.ndim == 1:
            return _one(y, s, multiclass, average, labels)
        if not multiclass and y.shape[0] > 1:
            # sklearn's multilabel form scores each column as its own binary problem: resamples as columns
            # (C-ordered copies: on transposed views sklearn's column slicing is several times slower)
            values = roc_auc_score(np.ascontiguousarray(y.T), np.ascontiguousarray(s.T), average=None)
            return np.asarray(values, dtype=np.float64)
        return np.array([_one(yb, sb, multiclass, average, labels) for yb, sb in zip(y, s)])


def _one(y, s, multiclass, average, labels):
    if not multiclass:
        return float(roc_auc_score(y, s))
    labels = np.arange(s.shape[1]) if labels is None else labels
    value = roc_auc_score(y, s, multi_class="ovr", average=average, labels=labels)
    return np.asarray(value, dtype=np.float64) if average is None else float(value)


class RocAuc(evaluate.Metric):
    def _info(self):
        multiclass = self.config_name == "multiclass"
        scores = datasets.Sequence(datasets.Value("float64")) if multiclass else datasets.Value("float64")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"prediction_scores": scores, "references": datasets.Value("int32")}),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.roc_auc_score.html"
            ],
        )

    def _compute(self, references, prediction_scores, average="macro", labels=None):
        return {"roc_auc": roc_auc(references, prediction_scores, average=average, labels=labels)}
