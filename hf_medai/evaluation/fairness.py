"""Subgroup performance: one fairlearn `MetricFrame` per subgroup column, over our metric modules.

A model that is accurate on average can fail a subgroup (older patients, darker skin, one hospital).
`subgroup_report` gives every group's size and metrics, the worst group per metric, the largest gap
between groups, and warnings for groups too small or too one-sided to judge. It never crashes on
such a group and never emits NaN: an undefined metric is None, so the report is strict JSON.
The metrics per task, a group's counts and bootstrap draws, the worst group and the largest gap are
computed in `hf_medai.evaluation.subgroup_metrics`; this module assembles them into the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from hf_medai.data.subgroups import UNKNOWN
from hf_medai.evaluation.classification import percentile_interval
from hf_medai.evaluation.subgroup_metrics import (
    DEFAULT_SUBGROUP_METRICS,
    GROUP_METRICS,
    count_words,
    finite_or_none,
    group_counts,
    group_draws,
    pred_metric,
    score_metric,
    short_counts,
    worst_and_gap,
)


def subgroup_report(
    y_true: Sequence[Any] | np.ndarray,
    y_score: Sequence[Any] | np.ndarray | None,
    y_pred: Sequence[Any] | np.ndarray | None,
    groups: pd.DataFrame,
    task: str = "binary",
    min_group_size: int = 30,
    metrics: Sequence[str] | None = None,
    min_class_count: int = 10,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    class_names: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per-subgroup metrics with bootstrap intervals, for each column of `groups` (one row per example,
    aligned by position).

    task "binary": `y_true` 0/1, `y_score` probability of 1, `y_pred` 0/1 at the chosen threshold;
    "multiclass": `y_true` in 0..K-1, `y_score` (n, K) probabilities, `y_pred` labels; "regression":
    `y_true` and `y_pred` values (`y_score` unused). Missing subgroup values form the group "unknown".
    `class_names` (optional) word the reasons ("0 melanoma" rather than "0 positives").

    A group's metric is compared (worst group, largest gap) only when the group has `min_group_size`
    examples AND at least `min_class_count` of each count the metric depends on: positives for
    sensitivity, negatives for specificity, both classes and the predicted positives for PPV, both classes
    for AUROC, every class for multiclass metrics. With none of a needed count the metric is not estimable
    there: its value is None and `not_estimable` says why (an age band without melanomas has no PPV to
    rank, not a "worst PPV" of 0). With some but too few, the value and interval are shown and `too_few`
    says why it is left out of the comparison.

    Intervals: percentile, over `n_bootstrap` resamples of each group's own rows (stratified by label), the
    same resamples for every metric of the group; 0 gives none. The largest gap (max - min over the compared
    groups) gets its interval from the gap recomputed on every replicate, in which each group is resampled.

    Returns {column: {"groups": {group: {"n", ["n_positive", "n_negative", "n_predicted_positive"], metric,
    metric_ci_low, metric_ci_high, ..., "not_estimable": {metric: reason}, "too_few": {metric: reason}}},
    "worst": {metric: {"group", "value", "ci_low", "ci_high"}}, "largest_gap": {metric: max - min},
    "largest_gap_ci": {metric: [low, high] or None}, "compared": {metric: [groups]}, "higher_is_better":
    {metric: bool}, "small_groups": [...], "min_group_size", "min_class_count", "n_bootstrap", "ci_level",
    "warnings": [...]}}. Strict JSON: an undefined number is None, never NaN.
    """
    from fairlearn.metrics import MetricFrame  # imported here: fairlearn costs a second to import

    if task not in GROUP_METRICS:
        raise ValueError(f"task must be one of {sorted(GROUP_METRICS)}, got {task!r}")
    names = list(DEFAULT_SUBGROUP_METRICS[task] if metrics is None else metrics)
    unknown = [m for m in names if m not in GROUP_METRICS[task]]
    if unknown:
        raise ValueError(f"unknown {task} metrics {unknown}; available: {sorted(GROUP_METRICS[task])}")
    if n_bootstrap < 0 or not 0.0 < ci < 1.0 or min_class_count < 1:
        raise ValueError(
            f"need n_bootstrap >= 0, 0 < ci < 1 and min_class_count >= 1; got {n_bootstrap}, {ci}, {min_class_count}"
        )
    if isinstance(groups, pd.Series):
        groups = groups.to_frame()
    if not isinstance(groups, pd.DataFrame):
        raise TypeError(f"groups must be a pandas DataFrame (one column per subgroup variable), got {type(groups)}")
    y, score, pred = _check_inputs(y_true, y_score, y_pred, task, names, len(groups))
    words = count_words(task, class_names, score, y)

    functions: dict[str, Callable[..., float]] = {"n": lambda y_t, y_p: float(len(y_t))}
    # Score metrics get each group's row numbers and read the scores by them: fairlearn splits only
    # 1-D sample parameters by group, and multiclass scores are (n, K)
    rows = np.arange(len(y))
    sample_params: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        spec = GROUP_METRICS[task][name]
        if spec.uses == "score":
            functions[name] = score_metric(spec.compute, score)
            sample_params[name] = {"rows": rows}
        else:
            functions[name] = pred_metric(spec.compute)
    # MetricFrame needs a y_pred even when every requested metric reads the score
    y_pred_frame = pred if pred is not None else np.zeros(len(y))

    report: dict[str, dict[str, Any]] = {}
    for column_index, column in enumerate(groups.columns):
        labels, order = _group_labels(groups[column])
        frame = MetricFrame(
            metrics=functions,
            y_true=y,
            y_pred=y_pred_frame,
            sensitive_features=labels,
            sample_params=sample_params or None,
        )
        by_group = frame.by_group.reindex(order)
        label_array = labels.to_numpy()
        entries: dict[str, dict[str, Any]] = {}
        draws: dict[str, dict[str, np.ndarray]] = {}
        compared: dict[str, list[str]] = {m: [] for m in names}
        for group_index, g in enumerate(order):
            members = np.flatnonzero(label_array == g)
            counts = group_counts(y[members], None if pred is None else pred[members], task, words)
            entry = {"n": int(members.size), **{k: v for k, v in counts.items() if not k.startswith("_")}}
            not_estimable, too_few = {}, {}
            for m in names:
                value = finite_or_none(by_group.at[g, m])
                missing, short = short_counts(GROUP_METRICS[task][m].needs, counts, words, min_class_count)
                if missing:
                    not_estimable[m], value = missing, None
                elif value is None:
                    not_estimable[m] = "undefined here (a zero denominator)"
                elif entry["n"] < min_group_size:
                    too_few[m] = f"n={entry['n']} < min_group_size={min_group_size}"
                elif short:
                    too_few[m] = f"{short} < {min_class_count}"
                else:
                    compared[m].append(g)
                entry[m] = value
            estimable = [m for m in names if entry[m] is not None]
            draws[g] = (
                group_draws(y, score, pred, members, estimable, task, n_bootstrap, [seed, column_index, group_index])
                if n_bootstrap and estimable
                else {}
            )
            for m in names:
                low, high = percentile_interval(draws[g][m], ci) if m in draws[g] else (None, None)
                entry[f"{m}_ci_low"], entry[f"{m}_ci_high"] = low, high
            entry["not_estimable"], entry["too_few"] = not_estimable, too_few
            entries[g] = entry
        small = [g for g in order if entries[g]["n"] < min_group_size]
        report[str(column)] = {
            "groups": entries,
            **worst_and_gap(entries, draws, compared, names, task, ci),
            "compared": compared,
            "higher_is_better": {m: GROUP_METRICS[task][m].higher_is_better for m in names},
            "small_groups": small,
            "min_group_size": int(min_group_size),
            "min_class_count": int(min_class_count),
            "n_bootstrap": int(n_bootstrap),
            "ci_level": float(ci),
            "warnings": _warnings(
                str(column), y, label_array, order, entries, small, names, task, score, min_group_size
            ),
        }
    return report


# --- helpers -----------------------------------------------------------------------------------------


def _check_inputs(y_true: Any, y_score: Any, y_pred: Any, task: str, names: list[str], n_rows: int):
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {y.shape}")
    if y.size != n_rows:
        raise ValueError(f"groups has {n_rows} rows but y_true has {y.size}")
    if task == "regression":
        y = y.astype(np.float64)
    elif task == "binary" and not np.isin(y, (0, 1)).all():
        raise ValueError(f"binary y_true must be 0/1 (1 = positive), got labels {np.unique(y).tolist()}")
    needs = {GROUP_METRICS[task][m].uses for m in names}
    score = pred = None
    if "score" in needs:
        if y_score is None:
            raise ValueError(f"metrics {[m for m in names if GROUP_METRICS[task][m].uses == 'score']} need y_score")
        score = np.asarray(y_score, dtype=np.float64)
        expected = 2 if task == "multiclass" else 1
        if score.ndim != expected or score.shape[0] != y.size:
            raise ValueError(f"y_score must have {y.size} rows and {expected} dimension(s), got {score.shape}")
    if "pred" in needs:
        if y_pred is None:
            raise ValueError(f"metrics {[m for m in names if GROUP_METRICS[task][m].uses == 'pred']} need y_pred")
        pred = np.asarray(y_pred)
        if pred.shape != y.shape:
            raise ValueError(f"y_pred must have shape {y.shape}, got {pred.shape}")
    return y, score, pred


def _group_labels(column: pd.Series) -> tuple[pd.Series, list[str]]:
    """String group labels (missing -> "unknown") by position, and the groups in display order."""
    values = column.reset_index(drop=True)
    missing = values.isna().to_numpy()
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.dropna().unique())
        ordered = [c for c in values.cat.categories if c in present]
    else:
        distinct = list(pd.unique(values[~missing]))
        try:
            ordered = sorted(distinct)
        except TypeError:  # mixed types: order by text
            ordered = sorted(distinct, key=str)
    order = list(dict.fromkeys(str(v) for v in ordered))
    labels = pd.Series(np.where(missing, UNKNOWN, values.astype(str).to_numpy()), name=str(column.name), dtype=object)
    if missing.any() and UNKNOWN not in order:
        order.append(UNKNOWN)
    return labels, order


def _warnings(
    column: str,
    y: np.ndarray,
    label_array: np.ndarray,
    order: list[str],
    entries: dict[str, dict],
    small: list[str],
    names: list[str],
    task: str,
    score: np.ndarray | None,
    min_group_size: int,
) -> list[str]:
    messages: list[str] = []
    n_classes = score.shape[1] if task == "multiclass" and score is not None else None
    for g in order:
        where, entry = f"{column}={g}", entries[g]
        if g in small:
            messages.append(
                f"{where}: n={entry['n']} < min_group_size={min_group_size}; shown but left out of "
                "worst group and largest gap"
            )
        reason = ""
        if task != "regression":
            present = np.unique(y[label_array == g])
            if present.size == 1:
                reason = f"only one class in y_true (label {present[0]})"
                if "balanced_accuracy" in names and entry.get("balanced_accuracy") is not None:
                    reason += ", so balanced_accuracy is that class's recall alone"
            elif n_classes is not None and present.size < n_classes:
                absent = sorted(set(range(n_classes)) - set(present.tolist()))
                reason = f"classes {absent} absent from y_true"
        if entry["not_estimable"]:
            messages.append(
                f"{where}: {reason + '; ' if reason else ''}not estimable: "
                f"{', '.join(entry['not_estimable'])} ({_join_reasons(entry['not_estimable'])})"
            )
        elif reason:
            messages.append(f"{where}: {reason}")
        if entry["too_few"] and g not in small:
            messages.append(
                f"{where}: too few to compare: {', '.join(entry['too_few'])} "
                f"({_join_reasons(entry['too_few'])}); shown but left out of worst group and largest gap"
            )
    return messages


def _join_reasons(reasons: dict[str, str]) -> str:
    return "; ".join(dict.fromkeys(reasons.values()))
