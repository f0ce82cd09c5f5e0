"""The predictive run folder's report: predictions.csv, metrics.json and plots, from one set of predictions.

Every classifier recipe (and `hf-medai evaluate`) writes through here, so the metrics in metrics.json,
in the card and in a recomputation from predictions.csv are the same numbers by construction, and the
tests check them against scikit-learn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from hf_medai.evaluation import (
    binary_metrics,
    choose_threshold,
    multiclass_metrics,
    paired_difference,  # noqa: F401  (lives in evaluation; callers import it from here too)
    regression_metrics,
    reliability_diagram,
    roc_pr_plot,
    subgroup_report,
)
from hf_medai.io import write_csv, write_json

PLOTS = {"reliability": "reliability_diagram.png", "roc_pr": "roc_pr_curves.png"}


def kept_checkpoint(state, args) -> dict[str, Any]:
    """Which weights a Trainer run kept, for metrics.json["training"]["kept_checkpoint"] and the card.

    `state`: the `TrainerState` after `train()`; `args`: its `TrainingArguments`. With `load_best_model_at_end`
    and a best checkpoint: that checkpoint, its step and epoch (from the evaluation logged at that step) and the
    validation metric it won on; otherwise the weights of the last step.
    """
    metric = args.metric_for_best_model or "loss"
    key = metric if metric.startswith("eval_") else f"eval_{metric}"
    evaluations = [e for e in state.log_history if "step" in e and any(k.startswith("eval_") for k in e)]
    best = bool(args.load_best_model_at_end and state.best_model_checkpoint)
    if best:
        name = Path(state.best_model_checkpoint).name
        step = getattr(state, "best_global_step", None) or int(name.rsplit("-", 1)[-1])
    else:
        name, step = None, state.global_step
    at_step = next((e for e in reversed(evaluations) if e["step"] == step), {})
    epoch = at_step.get("epoch", state.epoch if not best else None)
    value = state.best_metric if best else at_step.get(key)
    return {
        "rule": "best validation " + metric.removeprefix("eval_") if best else "last step",
        "checkpoint": name,
        "step": int(step),
        "epoch": None if epoch is None else round(float(epoch), 2),
        "metric": metric.removeprefix("eval_"),
        "value": None if value is None else float(value),
        "greater_is_better": bool(args.greater_is_better) if args.greater_is_better is not None else None,
        "n_evaluations": len(evaluations),
        "final_step": int(state.global_step),
    }


def checkpoint_selection(state, args) -> dict[str, Any]:
    """metrics.json["training"]'s record of how a Trainer run chose its kept checkpoint (on validation AUROC)."""
    return {
        "best_checkpoint": state.best_model_checkpoint,
        "best_val_auroc": state.best_metric,
        "kept_checkpoint": kept_checkpoint(state, args),
        "eval_loss_curve": [(e["step"], e["eval_loss"]) for e in state.log_history if "eval_loss" in e],
    }


def score_column(class_name: str) -> str:
    return f"score_{class_name}"


def predictions_frame(ids, y_true, probs, class_names, subgroups: pd.DataFrame | None, threshold=None) -> pd.DataFrame:
    probs = np.asarray(probs, dtype=np.float64)
    names = np.asarray(class_names, dtype=object)
    frame = pd.DataFrame(
        {"id": list(ids), "label": names[np.asarray(y_true, dtype=int)], "pred": names[probs.argmax(1)]}
    )
    if threshold is not None:
        frame["pred_at_threshold"] = names[(probs[:, 1] >= threshold).astype(int)]
    for j, c in enumerate(class_names):
        frame[score_column(c)] = probs[:, j]
    if subgroups is not None:
        for col in subgroups.columns:
            frame[col] = subgroups[col].to_numpy()
    return frame


def subgroup_settings(eval_args) -> dict[str, Any]:
    """`subgroup_report`'s settings from EvalArguments: the same resamples and seed as the headline intervals."""
    return {
        "min_group_size": eval_args.min_group_size,
        "n_bootstrap": eval_args.n_bootstrap,
        "seed": 0,
        "min_class_count": getattr(eval_args, "min_group_class_count", 10),
    }


def classification_metrics(
    y_true, probs, class_names, threshold, eval_args, subgroups: pd.DataFrame | None, subgroup_columns
) -> dict[str, Any]:
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
            y_true,
            score,
            y_pred,
            subgroups[cols].reset_index(drop=True),
            task=task,
            class_names=class_names,
            **subgroup_settings(eval_args),
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
            threshold = choose_threshold(
                np.asarray(val_true, dtype=int), np.asarray(val_probs)[:, 1], method=eval_args.threshold_method
            )
            threshold_source = f"{eval_args.threshold_method} on validation"
    if subgroup_columns is None:
        subgroup_columns = [
            c
            for c in (subgroups.columns if subgroups is not None else [])
            if c not in ("lesion_id", "patient_id", "subject_id")
        ]

    frame = predictions_frame(ids, y_true, probs, class_names, subgroups, threshold if binary else None)
    metrics: dict[str, Any] = {
        "class_names": class_names,
        "positive_class": class_names[1] if binary else None,
        "threshold": threshold if binary else None,
        "threshold_source": threshold_source if binary else None,
    }
    metrics.update(
        classification_metrics(y_true, probs, class_names, threshold, eval_args, subgroups, subgroup_columns)
    )
    if val_probs is not None:
        vp = np.asarray(val_probs, dtype=np.float64)
        vt = np.asarray(val_true, dtype=int)
        val = (
            binary_metrics(vt, vp[:, 1], threshold=threshold, n_bootstrap=0)
            if binary
            else multiclass_metrics(vt, vp, class_names, n_bootstrap=0)
        )
        metrics["validation"] = {k: v for k, v in val.items() if not k.endswith(("_ci_low", "_ci_high"))}
    plots = {}
    reliability_diagram(
        y_true,
        probs[:, 1] if binary else probs,
        output_dir / PLOTS["reliability"],
        title=f"Reliability on the test set ({len(y_true)} examples)",
        ece_ci=(metrics.get("ece_ci_low"), metrics.get("ece_ci_high")),
        positive_class=class_names[1] if binary else None,
    )
    plots["reliability"] = PLOTS["reliability"]
    if binary and len(np.unique(y_true)) == 2:
        roc_pr_plot(
            y_true,
            probs[:, 1],
            output_dir / PLOTS["roc_pr"],
            positive_class=class_names[1],
            negative_class=class_names[0],
            threshold=threshold,
            threshold_source=threshold_source,
            n_bootstrap=eval_args.n_bootstrap,
            seed=0,
            title=f"Test set: {len(y_true)} examples",
        )
        plots["roc_pr"] = PLOTS["roc_pr"]
    metrics["plots"] = plots
    metrics.update(extra or {})
    write_csv(output_dir / "predictions.csv", frame)
    write_json(output_dir / "metrics.json", metrics)
    return metrics


# --- additions for the clinical-outcome recipes: baselines, calibration summaries, regression ----------------

PLOTS["observed_vs_predicted"] = "observed_vs_predicted.png"


def headline_metrics(
    y_true,
    scores,
    class_names: Sequence[str] | None,
    eval_args,
    val_true=None,
    val_scores=None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Flat test metrics with CIs (no subgroups) scored exactly like the main model's, e.g. for a baseline.

    Classification: `scores` are (n, K) probabilities; a binary threshold comes from `threshold`, else from
    the validation scores by `eval_args.threshold_method`. Regression (`class_names=None`): `scores` are the
    predicted values.
    """
    if class_names is None:
        return regression_metrics(
            np.asarray(y_true, dtype=np.float64),
            np.asarray(scores, dtype=np.float64),
            n_bootstrap=eval_args.n_bootstrap,
            seed=0,
        )
    probs = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y_true, dtype=int)
    if len(class_names) != 2:
        return multiclass_metrics(y, probs, list(class_names), n_bootstrap=eval_args.n_bootstrap, seed=0)
    if threshold is None:
        if eval_args.threshold_method == "fixed" or val_scores is None:
            threshold = float(eval_args.threshold)
        else:
            threshold = choose_threshold(
                np.asarray(val_true, dtype=int), np.asarray(val_scores)[:, 1], method=eval_args.threshold_method
            )
    return binary_metrics(y, probs[:, 1], threshold=threshold, n_bootstrap=eval_args.n_bootstrap, seed=0)


def calibration_summary(y_true, probs) -> dict[str, float]:
    """ECE (15 bins; top-label for K > 2), Brier score (binary) and negative log-likelihood of probabilities."""
    from hf_medai.evaluation import expected_calibration_error

    y = np.asarray(y_true, dtype=int)
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    out = {"nll": float(-np.mean(np.log(p[np.arange(len(y)), y])))}
    if p.shape[1] == 2:
        out["ece"] = expected_calibration_error(y, p[:, 1])
        out["brier"] = float(np.mean((p[:, 1] - y) ** 2))
    else:
        out["ece"] = expected_calibration_error(y, p)
    return out


def write_regression_report(
    output_dir: str | Path,
    ids: Sequence,
    y_true,
    y_pred,
    subgroups: pd.DataFrame | None,
    eval_args,
    val_true=None,
    val_pred=None,
    subgroup_columns: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Regression counterpart of `write_classifier_report`: predictions.csv (id, label, pred, subgroups),
    metrics.json (mae, rmse, r2 with CIs, `subgroups`, `validation`) and an observed-vs-predicted plot."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    frame = pd.DataFrame({"id": list(ids), "label": y, "pred": pred})
    if subgroups is not None:
        for col in subgroups.columns:
            frame[col] = subgroups[col].to_numpy()
    if subgroup_columns is None:
        subgroup_columns = [
            c
            for c in (subgroups.columns if subgroups is not None else [])
            if c not in ("lesion_id", "patient_id", "subject_id")
        ]
    metrics: dict[str, Any] = {"class_names": None, "positive_class": None, "threshold": None}
    metrics.update(regression_metrics(y, pred, n_bootstrap=eval_args.n_bootstrap, seed=0))
    cols = [c for c in subgroup_columns if subgroups is not None and c in subgroups]
    metrics["subgroups"] = (
        subgroup_report(
            y, None, pred, subgroups[cols].reset_index(drop=True), task="regression", **subgroup_settings(eval_args)
        )
        if cols
        else {}
    )
    if val_pred is not None:
        val = regression_metrics(
            np.asarray(val_true, dtype=np.float64), np.asarray(val_pred, dtype=np.float64), n_bootstrap=0
        )
        metrics["validation"] = {k: v for k, v in val.items() if not k.endswith(("_ci_low", "_ci_high"))}
    _observed_vs_predicted(y, pred, output_dir / PLOTS["observed_vs_predicted"])
    metrics["plots"] = {"observed_vs_predicted": PLOTS["observed_vs_predicted"]}
    metrics.update(extra or {})
    write_csv(output_dir / "predictions.csv", frame)
    write_json(output_dir / "metrics.json", metrics)
    return metrics


def _observed_vs_predicted(y, pred, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from hf_medai.io import atomic_path

    fig = Figure(figsize=(5.0, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.scatter(pred, y, s=8, alpha=0.5)
    hi = float(max(np.max(y), np.max(pred), 1.0))
    ax.plot([0, hi], [0, hi], "k--", linewidth=1, label="perfect prediction")
    ax.set(xlabel="predicted", ylabel="observed", title=f"Observed vs predicted (MAE {np.mean(np.abs(y - pred)):.2f})")
    ax.legend(loc="upper left", fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def calibration_report(
    output_dir: str | Path, y_true: dict, raw_probs: dict, probs: dict, temperature: float, shift, method: str
) -> dict[str, Any]:
    """Calibration before and after, per split ({split: labels / (n, K) probabilities}), and a reliability diagram
    of the test predictions before calibration (the report's main diagram shows them after)."""
    test = np.asarray(raw_probs["test"], dtype=np.float64)
    reliability_diagram(
        y_true["test"],
        test[:, 1] if test.shape[1] == 2 else test,
        Path(output_dir) / "reliability_diagram_before.png",
        title="Reliability before calibration (test)",
    )
    return {
        "method": method,
        "temperature": float(temperature),
        "prior_correction": [float(v) for v in shift],
        "before": {s: calibration_summary(y_true[s], raw_probs[s]) for s in raw_probs},
        "after": {s: calibration_summary(y_true[s], probs[s]) for s in probs},
        "plot_before": "reliability_diagram_before.png",
    }
