"""The computations behind `hf_medai.evaluation.fairness.subgroup_report`, one group or one metric at a time: the
metrics per task (what each reads, which way is better, the counts it needs), a group's counts and why a metric is
not estimable or has too few to compare, the bootstrap draws of a group's metrics, and the worst group and largest
gap (with its interval) over the groups compared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hf_medai.evaluation.classification import bootstrap_draws, percentile_interval
from hf_medai.evaluation.metrics import metric_function


@dataclass(frozen=True)
class GroupMetric:
    """A per-group metric: what it reads (the score or the predicted label), which way is better, and the
    counts it depends on (see `_COUNT_WORDS`): with none of them in a group the metric is not estimable there
    (sensitivity with no positives; PPV with no positives reads 0 whatever the model does)."""

    uses: str  # "score" | "pred"
    higher_is_better: bool
    compute: Callable[[np.ndarray, np.ndarray], float]  # (y_true, score or pred) -> value, NaN if undefined
    needs: tuple[str, ...] = ()


def _scored(module: str, key: str | None = None) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda y, s: metric_function(module)(references=y, prediction_scores=s)[key or module]


def _predicted(module: str, key: str | None = None) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda y, p: metric_function(module)(references=y, predictions=p)[key or module]


_BOTH = ("positives", "negatives")
GROUP_METRICS: dict[str, dict[str, GroupMetric]] = {
    "binary": {
        "auroc": GroupMetric("score", True, _scored("roc_auc"), _BOTH),
        "auprc": GroupMetric("score", True, _scored("average_precision"), _BOTH),
        "sensitivity": GroupMetric("pred", True, _predicted("sensitivity_specificity", "sensitivity"), ("positives",)),
        "specificity": GroupMetric("pred", True, _predicted("sensitivity_specificity", "specificity"), ("negatives",)),
        # predictive values depend on the group's prevalence: both classes, and the calls they are the share of
        "ppv": GroupMetric(
            "pred", True, _predicted("sensitivity_specificity", "ppv"), (*_BOTH, "predicted_positives")
        ),
        "npv": GroupMetric(
            "pred", True, _predicted("sensitivity_specificity", "npv"), (*_BOTH, "predicted_negatives")
        ),
        "accuracy": GroupMetric("pred", True, _predicted("accuracy"), _BOTH),
        "balanced_accuracy": GroupMetric("pred", True, _predicted("balanced_accuracy"), _BOTH),
        "brier": GroupMetric("score", False, _scored("brier")),
        "ece": GroupMetric("score", False, _scored("ece")),
    },
    "multiclass": {
        "accuracy": GroupMetric("pred", True, _predicted("accuracy"), ("every_class",)),
        "balanced_accuracy": GroupMetric("pred", True, _predicted("balanced_accuracy"), ("every_class",)),
        "auroc": GroupMetric("score", True, _scored("roc_auc"), ("every_class",)),  # macro one-vs-rest
        "ece": GroupMetric("score", False, _scored("ece")),  # top-label
    },
    "regression": {
        "mae": GroupMetric("pred", False, _predicted("mae")),
        "rmse": GroupMetric("pred", False, _predicted("rmse")),
        "r2": GroupMetric("pred", True, _predicted("r2")),
    },
}
DEFAULT_SUBGROUP_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auroc", "sensitivity", "specificity", "ppv", "npv", "balanced_accuracy", "ece"),
    "multiclass": ("accuracy", "balanced_accuracy", "auroc", "ece"),
    "regression": ("mae", "rmse"),
}


def score_metric(compute: Callable[[np.ndarray, np.ndarray], float], score: np.ndarray) -> Callable[..., float]:
    def metric(y_true: np.ndarray, y_pred: np.ndarray, rows: np.ndarray) -> float:
        return compute(y_true, score[rows])

    return metric


def pred_metric(compute: Callable[[np.ndarray, np.ndarray], float]) -> Callable[..., float]:
    def metric(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return compute(y_true, y_pred)

    return metric


_COUNT_WORDS = {
    "positives": "positives",
    "negatives": "negatives",
    "predicted_positives": "predicted positives",
    "predicted_negatives": "predicted negatives",
}


def count_words(
    task: str, class_names: Sequence[str] | None, score: np.ndarray | None, y: np.ndarray
) -> dict[str, Any]:
    """How each count is named in reasons: the class names when known ("0 melanoma"), else generic words."""
    words: dict[str, Any] = dict(_COUNT_WORDS)
    if task == "binary" and class_names is not None and len(class_names) == 2:
        negative, positive = (str(c) for c in class_names)
        words.update(
            positives=positive,
            negatives=negative,
            predicted_positives=f"predicted {positive}",
            predicted_negatives=f"predicted {negative}",
        )
    if task == "multiclass":
        k = score.shape[1] if score is not None else int(y.max()) + 1
        words["classes"] = (
            [str(c) for c in class_names]
            if class_names is not None and len(class_names) == k
            else [f"class {c}" for c in range(k)]
        )
    return words


def group_counts(y: np.ndarray, pred: np.ndarray | None, task: str, words: dict[str, Any]) -> dict[str, Any]:
    """A group's counts: reported ones (n_positive, ...) and, under "_"-keys, those the metrics depend on."""
    if task == "binary":
        out: dict[str, Any] = {"n_positive": int(np.sum(y == 1)), "n_negative": int(np.sum(y == 0))}
        needs = {"positives": out["n_positive"], "negatives": out["n_negative"]}
        if pred is not None:
            out["n_predicted_positive"] = int(np.sum(pred == 1))
            needs.update(
                predicted_positives=out["n_predicted_positive"],
                predicted_negatives=int(pred.size - out["n_predicted_positive"]),
            )
        out["_needs"] = needs
        return out
    if task == "multiclass":
        per_class = np.bincount(y.astype(np.int64), minlength=len(words["classes"]))
        return {"class_counts": dict(zip(words["classes"], per_class.tolist())), "_needs": {}}
    return {"_needs": {}}


def short_counts(
    needs: tuple[str, ...], counts: dict[str, Any], words: dict[str, Any], min_class_count: int
) -> tuple[str, str]:
    """("0 melanoma", "") when a needed count is zero; ("", "4 melanoma") when it is below the minimum."""
    have = dict(counts["_needs"])
    if "every_class" in needs:
        have.update(counts["class_counts"])
        needs = tuple(n for n in needs if n != "every_class") + tuple(counts["class_counts"])
    found = [(have[n], words.get(n, n)) for n in needs if n in have]
    missing = ", ".join(f"0 {word}" for count, word in found if count == 0)
    short = ", ".join(f"{count} {word}" for count, word in found if 0 < count < min_class_count)
    return missing, short


def group_draws(
    y: np.ndarray,
    score: np.ndarray | None,
    pred: np.ndarray | None,
    members: np.ndarray,
    names: list[str],
    task: str,
    n_bootstrap: int,
    seed: list[int],
) -> dict[str, np.ndarray]:
    """Each metric in `names` on `n_bootstrap` resamples of the group's rows (index matrices, stratified by label)."""
    arrays = [y[members]]
    for part in (score, pred):
        if part is not None:
            arrays.append(part[members])
    position = {"score": 1, "pred": 1 if score is None else 2}

    def values(*batch: np.ndarray) -> dict[str, np.ndarray]:
        return {
            m: GROUP_METRICS[task][m].compute(batch[0], batch[position[GROUP_METRICS[task][m].uses]]) for m in names
        }

    if len(arrays) == 1:  # no score and no prediction: nothing a metric could read
        return {}
    strata = None if task == "regression" else arrays[0]
    return bootstrap_draws(values, tuple(arrays), strata, n_bootstrap, seed)


def worst_and_gap(
    entries: dict[str, dict[str, Any]],
    draws: dict[str, dict[str, np.ndarray]],
    compared: dict[str, list[str]],
    names: list[str],
    task: str,
    ci: float,
) -> dict[str, dict[str, Any]]:
    """Worst group and largest gap (max - min) per metric over the groups compared for it; the gap's interval from
    the gap on each bootstrap replicate (every group resampled in each), undefined where a group's value is."""
    worst: dict[str, Any] = {m: {"group": None, "value": None, "ci_low": None, "ci_high": None} for m in names}
    gap: dict[str, Any] = {m: None for m in names}
    gap_ci: dict[str, Any] = {m: None for m in names}
    for m in names:
        groups = compared[m]
        if not groups:
            continue
        values = [entries[g][m] for g in groups]
        pick = int(np.argmax(values) if not GROUP_METRICS[task][m].higher_is_better else np.argmin(values))
        entry = entries[groups[pick]]
        worst[m] = {
            "group": groups[pick],
            "value": values[pick],
            "ci_low": entry[f"{m}_ci_low"],
            "ci_high": entry[f"{m}_ci_high"],
        }
        if len(groups) < 2:  # a "gap" over one group would read as perfect parity
            continue
        gap[m] = finite_or_none(max(values) - min(values))
        if all(m in draws[g] for g in groups):
            replicate = np.stack([draws[g][m] for g in groups])  # (groups, resamples); NaN propagates
            low, high = percentile_interval(replicate.max(axis=0) - replicate.min(axis=0), ci)
            gap_ci[m] = None if low is None else [low, high]
    return {"worst": worst, "largest_gap": gap, "largest_gap_ci": gap_ci}


def finite_or_none(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
