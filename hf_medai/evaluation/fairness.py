"""Subgroup performance: one fairlearn `MetricFrame` per subgroup column, over our metric modules.

A model that is accurate on average can fail a subgroup (older patients, darker skin, one hospital).
`subgroup_report` gives every group's size and metrics, the worst group per metric, the largest gap
between groups, and warnings for groups too small or too one-sided to judge. It never crashes on
such a group and never emits NaN: an undefined metric is None, so the report is strict JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hf_medai.evaluation.metrics import metric_function

AGE_BANDS: tuple[str, ...] = ("<30", "30-44", "45-59", "60-74", "75+")
_AGE_EDGES = np.array([30.0, 45.0, 60.0, 75.0])
UNKNOWN = "unknown"  # the group of rows whose subgroup value is missing


def age_band(age: Any) -> str | None | pd.Series:
    """Age in years -> "<30", "30-44", "45-59", "60-74" or "75+" (lower edge included); missing -> None.

    A pandas Series gives an ordered categorical Series (same index and name), so reports list the
    bands in age order.
    """
    if isinstance(age, (pd.Series, pd.Index, np.ndarray, list, tuple)):
        series = age if isinstance(age, pd.Series) else pd.Series(np.asarray(age, dtype=object))
        try:
            years = pd.to_numeric(series, errors="raise").astype("float64")
        except (ValueError, TypeError) as err:
            raise ValueError(f"age must be numbers of years (or missing): {err}") from None
        if (years < 0).any():
            raise ValueError(f"age must be >= 0, got {years[years < 0].iloc[0]}")
        codes = np.where(years.isna(), -1, np.searchsorted(_AGE_EDGES, years.fillna(0), side="right"))
        bands = pd.Categorical.from_codes(codes, categories=list(AGE_BANDS), ordered=True)
        return pd.Series(bands, index=series.index, name=series.name)
    if _is_missing(age):
        return None
    try:
        years = float(age)
    except (TypeError, ValueError):
        raise ValueError(f"age must be a number of years (or missing), got {age!r}") from None
    if years < 0:
        raise ValueError(f"age must be >= 0, got {years}")
    return AGE_BANDS[int(np.searchsorted(_AGE_EDGES, years, side="right"))]


@dataclass(frozen=True)
class _GroupMetric:
    """A per-group metric: what it reads (the score or the predicted label) and which way is better."""

    uses: str  # "score" | "pred"
    higher_is_better: bool
    compute: Callable[[np.ndarray, np.ndarray], float]  # (y_true, score or pred) -> value, NaN if undefined


def _scored(module: str, key: str | None = None) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda y, s: metric_function(module)(references=y, prediction_scores=s)[key or module]


def _predicted(module: str, key: str | None = None) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda y, p: metric_function(module)(references=y, predictions=p)[key or module]


_METRICS: dict[str, dict[str, _GroupMetric]] = {
    "binary": {
        "auroc": _GroupMetric("score", True, _scored("roc_auc")),
        "auprc": _GroupMetric("score", True, _scored("average_precision")),
        "sensitivity": _GroupMetric("pred", True, _predicted("sensitivity_specificity", "sensitivity")),
        "specificity": _GroupMetric("pred", True, _predicted("sensitivity_specificity", "specificity")),
        "ppv": _GroupMetric("pred", True, _predicted("sensitivity_specificity", "ppv")),
        "npv": _GroupMetric("pred", True, _predicted("sensitivity_specificity", "npv")),
        "accuracy": _GroupMetric("pred", True, _predicted("accuracy")),
        "balanced_accuracy": _GroupMetric("pred", True, _predicted("balanced_accuracy")),
        "brier": _GroupMetric("score", False, _scored("brier")),
        "ece": _GroupMetric("score", False, _scored("ece")),
    },
    "multiclass": {
        "accuracy": _GroupMetric("pred", True, _predicted("accuracy")),
        "balanced_accuracy": _GroupMetric("pred", True, _predicted("balanced_accuracy")),
        "auroc": _GroupMetric("score", True, _scored("roc_auc")),  # macro one-vs-rest
        "ece": _GroupMetric("score", False, _scored("ece")),  # top-label
    },
    "regression": {
        "mae": _GroupMetric("pred", False, _predicted("mae")),
        "rmse": _GroupMetric("pred", False, _predicted("rmse")),
        "r2": _GroupMetric("pred", True, _predicted("r2")),
    },
}
DEFAULT_SUBGROUP_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auroc", "sensitivity", "specificity", "ppv", "npv", "balanced_accuracy", "ece"),
    "multiclass": ("accuracy", "balanced_accuracy", "auroc", "ece"),
    "regression": ("mae", "rmse"),
}


def subgroup_report(
    y_true: Sequence[Any] | np.ndarray,
    y_score: Sequence[Any] | np.ndarray | None,
    y_pred: Sequence[Any] | np.ndarray | None,
    groups: pd.DataFrame,
    task: str = "binary",
    min_group_size: int = 30,
    metrics: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per-subgroup metrics for each column of `groups` (one row per example, aligned by position).

    task "binary": `y_true` 0/1, `y_score` probability of 1, `y_pred` 0/1 at the chosen threshold;
    "multiclass": `y_true` in 0..K-1, `y_score` (n, K) probabilities, `y_pred` labels; "regression":
    `y_true` and `y_pred` values (`y_score` unused). Missing subgroup values form the group "unknown".

    Returns {column: {"groups": {group: {"n", ["n_positive"], metric...}}, "worst": {metric: {"group",
    "value"}}, "largest_gap": {metric: max - min}, "higher_is_better": {metric: bool}, "small_groups":
    [...], "min_group_size": int, "warnings": [...]}}. Groups under `min_group_size` are shown but left
    out of worst and largest_gap: their metrics are too noisy to rank.
    """
    from fairlearn.metrics import MetricFrame  # imported here: fairlearn costs a second to import

    if task not in _METRICS:
        raise ValueError(f"task must be one of {sorted(_METRICS)}, got {task!r}")
    names = list(DEFAULT_SUBGROUP_METRICS[task] if metrics is None else metrics)
    unknown = [m for m in names if m not in _METRICS[task]]
    if unknown:
        raise ValueError(f"unknown {task} metrics {unknown}; available: {sorted(_METRICS[task])}")
    if isinstance(groups, pd.Series):
        groups = groups.to_frame()
    if not isinstance(groups, pd.DataFrame):
        raise TypeError(f"groups must be a pandas DataFrame (one column per subgroup variable), got {type(groups)}")
    y, score, pred = _check_inputs(y_true, y_score, y_pred, task, names, len(groups))

    functions: dict[str, Callable[..., float]] = {"n": lambda y_t, y_p: float(len(y_t))}
    if task == "binary":
        functions["n_positive"] = lambda y_t, y_p: float(np.sum(y_t == 1))
    # Score metrics get each group's row numbers and read the scores by them: fairlearn splits only
    # 1-D sample parameters by group, and multiclass scores are (n, K)
    rows = np.arange(len(y))
    sample_params: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        spec = _METRICS[task][name]
        if spec.uses == "score":
            functions[name] = _score_metric(spec.compute, score)
            sample_params[name] = {"rows": rows}
        else:
            functions[name] = _pred_metric(spec.compute)
    # MetricFrame needs a y_pred even when every requested metric reads the score
    y_pred_frame = pred if pred is not None else np.zeros(len(y))

    report: dict[str, dict[str, Any]] = {}
    for column in groups.columns:
        labels, order = _group_labels(groups[column])
        frame = MetricFrame(metrics=functions, y_true=y, y_pred=y_pred_frame, sensitive_features=labels,
                            sample_params=sample_params or None)
        by_group = frame.by_group.reindex(order)
        sizes = {g: int(by_group.at[g, "n"]) for g in order}
        small = [g for g in order if sizes[g] < min_group_size]
        large = [g for g in order if sizes[g] >= min_group_size]
        if small and large:
            # worst and largest_gap compare only groups large enough: a second frame over their rows
            keep = labels.isin(large).to_numpy()
            frame = MetricFrame(
                metrics=functions, y_true=y[keep], y_pred=y_pred_frame[keep], sensitive_features=labels[keep],
                sample_params={m: {k: v[keep] for k, v in p.items()} for m, p in sample_params.items()} or None,
            )
        report[str(column)] = {
            "groups": {g: _group_entry(by_group.loc[g], names, task) for g in order},
            **_worst_and_gap(frame if large else None, names, task),
            "higher_is_better": {m: _METRICS[task][m].higher_is_better for m in names},
            "small_groups": small,
            "min_group_size": int(min_group_size),
            "warnings": _warnings(str(column), labels, y, score, order, sizes, small, by_group, names, task,
                                  min_group_size),
        }
    return report


def subgroup_table_markdown(report: dict[str, dict[str, Any]]) -> str:
    """A markdown table per subgroup column (group, n, metrics; small groups flagged) for a model card."""
    parts: list[str] = []
    for column, section in report.items():
        metrics = list(section["higher_is_better"])
        counts = ["n"] + (["n_positive"] if any("n_positive" in g for g in section["groups"].values()) else [])
        header = ["group", *counts, *metrics]
        lines = [f"#### {column}", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|"]
        for group, entry in section["groups"].items():
            flag = " *" if group in section["small_groups"] else ""
            cells = [f"{group}{flag}", *(str(entry[c]) for c in counts), *(_fmt(entry[m]) for m in metrics)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if section["small_groups"]:
            lines.append(f"\\* fewer than {section['min_group_size']} examples: shown, but too few to compare; "
                         "left out of worst group and largest gap.")
            lines.append("")
        worst = [f"{m} {_fmt(w['value'])} ({w['group']})" for m, w in section["worst"].items() if w["group"]]
        if worst:
            lines.append("Worst group: " + "; ".join(worst) + ".")
        gaps = [f"{m} {_fmt(v)}" for m, v in section["largest_gap"].items() if v is not None]
        if gaps:
            lines.append("Largest gap between groups: " + "; ".join(gaps) + ".")
        lines.extend(f"- {w}" for w in section["warnings"])
        parts.append("\n".join(lines).rstrip() + "\n")
    return "\n".join(parts)


# --- helpers -----------------------------------------------------------------------------------------


def _score_metric(compute: Callable[[np.ndarray, np.ndarray], float], score: np.ndarray) -> Callable[..., float]:
    def metric(y_true: np.ndarray, y_pred: np.ndarray, rows: np.ndarray) -> float:
        return compute(y_true, score[rows])

    return metric


def _pred_metric(compute: Callable[[np.ndarray, np.ndarray], float]) -> Callable[..., float]:
    def metric(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return compute(y_true, y_pred)

    return metric


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
    needs = {_METRICS[task][m].uses for m in names}
    score = pred = None
    if "score" in needs:
        if y_score is None:
            raise ValueError(f"metrics {[m for m in names if _METRICS[task][m].uses == 'score']} need y_score")
        score = np.asarray(y_score, dtype=np.float64)
        expected = 2 if task == "multiclass" else 1
        if score.ndim != expected or score.shape[0] != y.size:
            raise ValueError(f"y_score must have {y.size} rows and {expected} dimension(s), got {score.shape}")
    if "pred" in needs:
        if y_pred is None:
            raise ValueError(f"metrics {[m for m in names if _METRICS[task][m].uses == 'pred']} need y_pred")
        pred = np.asarray(y_pred)
        if pred.shape != y.shape:
            raise ValueError(f"y_pred must have shape {y.shape}, got {pred.shape}")
    return y, score, pred


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


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


def _group_entry(row: pd.Series, names: list[str], task: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"n": int(row["n"])}
    if task == "binary":
        entry["n_positive"] = int(row["n_positive"])
    entry.update({m: _finite_or_none(row[m]) for m in names})
    return entry


def _worst_and_gap(frame: Any, names: list[str], task: str) -> dict[str, dict[str, Any]]:
    worst: dict[str, Any] = {m: {"group": None, "value": None} for m in names}
    gap: dict[str, Any] = {m: None for m in names}
    if frame is None:
        return {"worst": worst, "largest_gap": gap}
    by_group = frame.by_group
    differences = frame.difference()  # max - min over groups, per metric; undefined groups skipped
    lows, highs = frame.group_min(), frame.group_max()
    for m in names:
        values = pd.to_numeric(by_group[m], errors="coerce")
        if values.notna().sum() == 0:
            continue
        if _METRICS[task][m].higher_is_better:
            worst[m] = {"group": str(values.idxmin()), "value": _finite_or_none(lows[m])}
        else:
            worst[m] = {"group": str(values.idxmax()), "value": _finite_or_none(highs[m])}
        if values.notna().sum() >= 2:  # a "gap" over one group would read as perfect parity
            gap[m] = _finite_or_none(differences[m])
    return {"worst": worst, "largest_gap": gap}


def _warnings(column: str, labels: pd.Series, y: np.ndarray, score: np.ndarray | None, order: list[str],
              sizes: dict[str, int], small: list[str], by_group: pd.DataFrame, names: list[str], task: str,
              min_group_size: int) -> list[str]:
    messages: list[str] = []
    label_array = labels.to_numpy()
    n_classes = score.shape[1] if task == "multiclass" and score is not None else None
    for g in order:
        where = f"{column}={g}"
        if g in small:
            messages.append(f"{where}: n={sizes[g]} < min_group_size={min_group_size}; shown but left out of "
                            "worst group and largest gap")
        undefined = [m for m in names if _finite_or_none(by_group.at[g, m]) is None]
        reason = ""
        if task != "regression":
            present = np.unique(y[label_array == g])
            if present.size == 1:
                reason = f"only one class in y_true (label {present[0]})"
                if "balanced_accuracy" in names:
                    reason += ", so balanced_accuracy is that class's recall alone"
            elif n_classes is not None and present.size < n_classes:
                absent = sorted(set(range(n_classes)) - set(present.tolist()))
                reason = f"classes {absent} absent from y_true"
        if reason or undefined:
            text = f"{where}: {reason or 'a zero denominator'}"
            messages.append(text + (f"; undefined: {', '.join(undefined)}" if undefined else ""))
    return messages


def _finite_or_none(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
