"""Area under the ROC curve, computed by scikit-learn's `roc_auc_score`.

Binary (default config): `prediction_scores` is the score of the positive class (label 1).
Multiclass (config "multiclass", declared as evaluate's own roc_auc does it: one sequence of class
probabilities per example): one-vs-rest AUROC, macro-averaged; `average=None` gives one per class.

`roc_auc(...)` is the single definition: `_compute` calls it, and so does hf_medai's bootstrap, which
passes `references` of shape (B, n), one resample per row, to score B resamples in one call (binary batches
by the rank-sum identity, equal to sklearn's value; see `_rank_auc`).
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
        if not multiclass:
            return _rank_auc(y, s)
        if average in ("macro", None):  # one-vs-rest: each class's binary AUROC, as sklearn binarises them
            classes = np.arange(s.shape[-1]) if labels is None else np.asarray(labels)
            per_class = np.stack(
                [_rank_auc((y == c).astype(np.int64), s[..., k]) for k, c in enumerate(classes)], axis=-1
            )
            return per_class if average is None else per_class.mean(axis=-1)
        return np.array([_one(yb, sb, multiclass, average, labels) for yb, sb in zip(y, s)])


def _rank_auc(y, s):
    """Binary AUROC of each row of a (B, n) batch, as the Mann-Whitney statistic: (rank sum of the positives -
    n1 (n1 + 1) / 2) / (n1 n0), ties at their mean rank. This is the area under sklearn's ROC (ties count half),
    equal to `roc_auc_score` row by row (a test pins it), without sklearn's per-call checks, which cost about a
    millisecond per resample. NaN where a row lacks a class."""
    from scipy.stats import rankdata

    positive = y == 1
    n1 = positive.sum(axis=1).astype(np.float64)
    n0 = y.shape[1] - n1
    rank_sum = np.where(positive, rankdata(s, axis=1), 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), values, np.nan)


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
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.roc_auc_score.html"],
        )

    def _compute(self, references, prediction_scores, average="macro", labels=None):
        return {"roc_auc": roc_auc(references, prediction_scores, average=average, labels=labels)}
