"""The predictive run folder's report: predictions.csv, metrics.json and plots, from one set of predictions.

Every classifier recipe (and `hf-medai evaluate`) writes through here, so the metrics in metrics.json,
in the card and in a recomputation from predictions.csv are the same numbers by construction, and the
tests check them against scikit-learn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from hf_medai.evaluation import (
    binary_metrics,
    choose_threshold,
    multiclass_metrics,
    reliability_diagram,
    roc_pr_plot,
    subgroup_report,
)
from hf_medai.io import write_csv, write_json

PLOTS = {"reliability": "reliability_diagram.png", "roc_pr": "roc_pr_curves.png"}


def score_column(class_name: str) -> str:
    return f"score_{class_name}"


def predictions_frame(ids, y_true, probs, class_names, subgroups: pd.DataFrame | None, threshold=None) -> pd.DataFrame:
    probs = np.asarray(probs, dtype=np.float64)
    names = np.asarray(class_names, dtype=object)
    frame = pd.DataFrame({"id": list(ids), "label": names[np.asarray(y_true, dtype=int)], "pred": names[probs.argmax(1)]})
    if threshold is not None:
        frame["pred_at_threshold"] = names[(probs[:, 1] >= threshold).astype(int)]
    for j, c in enumerate(class_names):
        frame[score_column(c)] = probs[:, j]
    if subgroups is not None:
        for col in subgroups.columns:
            frame[col] = subgroups[col].to_numpy()
    return frame


def classification_metrics(y_true, probs, class_names, threshold, eval_args, subgroups: pd.DataFrame | None, subgroup_columns) -> dict[str, Any]:
    """Flat test metrics + `subgroups`, for binary (positive class = class_names[1]) or multi-class."""
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    if len(class_names) == 2:
        metrics = binary_metrics(y_true, probs[:, 1], threshold=threshold, n_bootstrap=eval_args.n_bootstrap, seed=0)
        y_pred = (probs[:, 1] >= threshold).astype(int)
        score, task = probs[:, 1], "binary"
    else:
        metrics = multiclass_metrics(y_true, probs, list(class_names), n_bootstrap=eval_args.n_bootstrap, seed=0)
        y_pred = probs.argmax(1)
        score, task = probs, "multiclass"
    cols = [c for c in subgroup_columns if subgroups is not None and c in subgroups]
    if cols:
        metrics["subgroups"] = subgroup_report(
            y_true, score, y_pred, subgroups[cols].reset_index(drop=True), task=task, min_group_size=eval_args.min_group_size
        )
    else:
        metrics["subgroups"] = {}
    return metrics


def write_classifier_report(
    output_dir: str | Path,
    ids: Sequence,
    y_true,
    probs,
    class_names: Sequence[str],
    subgroups: pd.DataFrame | None,
    eval_args,
    val_true=None,
    val_probs=None,
    threshold: float | None = None,
    subgroup_columns: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write predictions.csv, metrics.json and the plots; return the metrics.

    The binary decision threshold is, in order: `threshold` if given (e.g. frozen from the training run
    for an external test set), else chosen on the validation predictions by `eval_args.threshold_method`.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    class_names = list(class_names)
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=int)
    binary = len(class_names) == 2
    threshold_source = "given"
    if binary and threshold is None:
        if eval_args.threshold_method == "fixed" or val_probs is None:
            threshold, threshold_source = float(eval_args.threshold), "fixed"
        else:
            threshold = choose_threshold(np.asarray(val_true, dtype=int), np.asarray(val_probs)[:, 1], method=eval_args.threshold_method)
            threshold_source = f"{eval_args.threshold_method} on validation"
    if subgroup_columns is None:
        subgroup_columns = [c for c in (subgroups.columns if subgroups is not None else []) if c not in ("lesion_id", "patient_id", "subject_id")]

    frame = predictions_frame(ids, y_true, probs, class_names, subgroups, threshold if binary else None)
    metrics: dict[str, Any] = {
        "class_names": class_names,
        "positive_class": class_names[1] if binary else None,
        "threshold": threshold if binary else None,
        "threshold_source": threshold_source if binary else None,
    }
    metrics.update(classification_metrics(y_true, probs, class_names, threshold, eval_args, subgroups, subgroup_columns))
    if val_probs is not None:
        vp = np.asarray(val_probs, dtype=np.float64)
        vt = np.asarray(val_true, dtype=int)
        val = (binary_metrics(vt, vp[:, 1], threshold=threshold, n_bootstrap=0) if binary
               else multiclass_metrics(vt, vp, class_names, n_bootstrap=0))
        metrics["validation"] = {k: v for k, v in val.items() if not k.endswith(("_ci_low", "_ci_high"))}
    plots = {}
    reliability_diagram(y_true, probs[:, 1] if binary else probs, output_dir / PLOTS["reliability"], title="Reliability (test)")
    plots["reliability"] = PLOTS["reliability"]
    if binary:
        roc_pr_plot(y_true, probs[:, 1], output_dir / PLOTS["roc_pr"])
        plots["roc_pr"] = PLOTS["roc_pr"]
    metrics["plots"] = plots
    metrics.update(extra or {})
    write_csv(output_dir / "predictions.csv", frame)
    # allow_nan=False: an undefined metric must be null, never NaN, so any JSON reader can load it.
    json.dumps(metrics, allow_nan=False, default=str)
    write_json(output_dir / "metrics.json", metrics)
    return metrics
