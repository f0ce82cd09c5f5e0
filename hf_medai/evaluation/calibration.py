"""Calibration: ECE, temperature scaling (`calibrate_into_head` folds it into a classifier's head), and the
reliability / ROC / PR figures for the model card.

A clinician reads a 0.8 as "8 in 10 like this have the disease"; these tools check and fix that.
Figures are drawn on matplotlib's Agg canvas (no display, no pyplot global state) and written
atomically: a reader never sees half a PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hf_medai.evaluation.metrics import metric_function
from hf_medai.io import atomic_path


def expected_calibration_error(
    y_true: Sequence[int] | np.ndarray, probs: Sequence[Any] | np.ndarray, n_bins: int = 15
) -> float:
    """ECE over `n_bins` equal-width bins (our `ece` metric module; definition in its docstring).

    `probs`: 1-D probability of class 1 (binary: calibration of that risk), or (n, K) class
    probabilities (multiclass: top-label confidence against accuracy of the arg-max).
    """
    y, p = _check(y_true, probs)
    return float(metric_function("ece")(references=y, prediction_scores=p, n_bins=n_bins)["ece"])


def reliability_diagram(
    y_true: Sequence[int] | np.ndarray,
    probs: Sequence[Any] | np.ndarray,
    path: str | Path,
    n_bins: int = 15,
    title: str = "Reliability diagram",
    ece_ci: tuple[float | None, float | None] | None = None,
    positive_class: str | None = None,
) -> Path:
    """Write a reliability diagram PNG to `path`. Returns `path`.

    Top: for each NON-EMPTY confidence bin, the observed frequency (bar, with its 95% Wilson interval), the
    mean predicted probability (marker) and the bin's count above the bar; empty bins are left blank, not drawn
    as a gap. The legend gives the ECE and, when given, its bootstrap interval `ece_ci` (as in metrics.json).
    Bottom: the bin counts. `positive_class` names what a binary probability is the probability of.
    """
    y, p = _check(y_true, probs)
    bins = metric_function("ece")(references=y, prediction_scores=p, n_bins=n_bins, return_bins=True)
    edges = np.asarray(bins["bin_edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, 1.0 / n_bins
    count = np.asarray(bins["bin_count"])
    used = count > 0
    frequency = np.asarray(bins["bin_frequency"], dtype=np.float64)[used]
    confidence = np.asarray(bins["bin_confidence"], dtype=np.float64)[used]
    low, high = wilson_interval(frequency * count[used], count[used])
    binary = p.ndim == 1
    outcome = positive_class or "class 1"
    fig, (top, bottom) = _figure(nrows=2, figsize=(6.5, 8.0), height_ratios=(3, 1))
    fig.suptitle(title)
    x = centres[used]
    top.bar(
        x,
        frequency,
        width=width * 0.9,
        color="tab:blue",
        edgecolor="black",
        linewidth=0.5,
        label=f"observed fraction {outcome}" if binary else "observed accuracy",
    )
    top.errorbar(
        x,
        frequency,
        yerr=np.maximum([frequency - low, high - frequency], 0),
        fmt="none",
        ecolor="black",
        elinewidth=0.8,
        capsize=2,
        label="95% interval of that fraction (Wilson)",
    )
    top.plot(x, confidence, "D", color="tab:red", markersize=4, label="mean predicted probability in the bin")
    for xi, hi, n in zip(x, high, count[used]):
        top.annotate(f"{n}", (xi, hi), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7)
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set(
        xlim=(0, 1), ylim=(0, 1.12), ylabel=f"observed fraction {outcome}" if binary else "accuracy of the top class"
    )
    heading = f"ECE = {bins['ece']:.3f}"
    if ece_ci is not None and ece_ci[0] is not None and ece_ci[1] is not None:
        heading += f" (95% CI {ece_ci[0]:.3f}–{ece_ci[1]:.3f})"
        if bins["ece"] < ece_ci[0]:  # binning noise inflates a resample's ECE: say so rather than let it puzzle
            heading += "; the interval lies above the estimate: resampling inflates ECE"
    heading += f"\n{n_bins} equal-width bins; the number above each bar is its count of examples"
    # above the axes: inside, the legend would hide bars whatever the calibration
    top.legend(
        loc="lower left",
        bbox_to_anchor=(0, 1.01, 1, 0.3),
        mode="expand",
        ncol=2,
        title=heading,
        fontsize=7,
        title_fontsize=7.5,
        borderaxespad=0,
    )
    bottom.bar(centres, count, width=width * 0.9, color="grey", edgecolor="black", linewidth=0.5)
    bottom.set(
        xlim=(0, 1),
        ylabel="count",
        xlabel=f"predicted probability of {outcome}" if binary else "confidence (top-label probability)",
    )
    return _save_png(fig, path)


def roc_pr_plot(
    y_true: Sequence[int] | np.ndarray,
    pos_score: Sequence[float] | np.ndarray,
    path: str | Path,
    title: str | None = None,
    reference_points: Mapping[str, tuple[float, float]] | None = None,
    positive_class: str | None = None,
    negative_class: str | None = None,
    threshold: float | None = None,
    threshold_source: str | None = None,
    n_bootstrap: int = 0,
    seed: int = 0,
    ci: float = 0.95,
) -> Path:
    """Write ROC and precision-recall curves side by side (AUROC and AP in the legends) to `path`.

    `positive_class` / `negative_class` name the classes on the axes. `threshold` (the operating threshold, chosen
    on validation: `threshold_source` says how) is marked on both curves with its test sensitivity, specificity
    and PPV. With `n_bootstrap` > 0 a pointwise `ci` band (resamples stratified by class) surrounds each curve.
    `reference_points`: name -> (sensitivity, specificity) drawn on the ROC, e.g. the dermatologists of Brinker
    et al. 2019, {"dermatologists (mean)": (0.741, 0.600)}. Returns `path`.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    from hf_medai.evaluation.classification import curve_bands

    y, s = _check(y_true, pos_score)
    if s.ndim != 1:
        raise ValueError("roc_pr_plot takes the 1-D score of the positive class")
    positive, negative = positive_class or "class 1", negative_class or "class 0"
    auroc = metric_function("roc_auc")(references=y, prediction_scores=s)["roc_auc"]
    ap = metric_function("average_precision")(references=y, prediction_scores=s)["average_precision"]
    fpr, tpr, _ = roc_curve(y, s, pos_label=1)
    precision, recall, _ = precision_recall_curve(y, s, pos_label=1)
    fig, (roc_ax, pr_ax) = _figure(ncols=2, figsize=(11.0, 5.0))
    if n_bootstrap:
        bands = curve_bands(y, s, n_bootstrap=n_bootstrap, seed=seed, ci=ci)
        label = f"{100 * ci:.0f}% CI (bootstrap, pointwise)"
        roc_ax.fill_between(
            bands["grid"], bands["tpr_low"], bands["tpr_high"], color="tab:blue", alpha=0.2, linewidth=0, label=label
        )
        pr_ax.fill_between(
            bands["grid"],
            bands["precision_low"],
            bands["precision_high"],
            color="tab:blue",
            alpha=0.2,
            linewidth=0,
            label=label,
        )
    roc_ax.plot(fpr, tpr, color="tab:blue", label=f"model (AUROC = {auroc:.3f})")
    roc_ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="chance")
    for name, (sensitivity, specificity) in (reference_points or {}).items():
        roc_ax.plot(1 - specificity, sensitivity, "o", label=name)
    pr_ax.step(recall, precision, where="post", color="tab:blue", label=f"model (AP = {ap:.3f})")
    pr_ax.axhline(
        float(np.mean(y == 1)),
        color="k",
        linestyle="--",
        linewidth=1,
        label=f"prevalence of {positive} ({np.mean(y == 1):.3f})",
    )
    if threshold is not None:
        call = s >= threshold
        sens = float(np.mean(call[y == 1])) if (y == 1).any() else float("nan")
        spec = float(np.mean(~call[y == 0])) if (y == 0).any() else float("nan")
        ppv = float(np.mean(y[call] == 1)) if call.any() else float("nan")
        how = f", {threshold_source}" if threshold_source else ""
        roc_ax.plot(
            1 - spec,
            sens,
            "o",
            color="black",
            markersize=8,
            markerfacecolor="gold",
            zorder=5,
            label=f"operating point: threshold {threshold:.3f}{how}\nsensitivity {sens:.3f}, specificity {spec:.3f}",
        )
        if np.isfinite(ppv):
            pr_ax.plot(
                sens,
                ppv,
                "o",
                color="black",
                markersize=8,
                markerfacecolor="gold",
                zorder=5,
                label=f"operating point: threshold {threshold:.3f}{how}\nrecall {sens:.3f}, precision {ppv:.3f}",
            )
    roc_ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=f"ROC: {positive} vs {negative}",
        xlabel=f"1 - specificity (fraction of {negative} called {positive})",
        ylabel=f"sensitivity (fraction of {positive} found)",
    )
    roc_ax.legend(loc="lower right", fontsize=7)
    pr_ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=f"Precision-recall: {positive}",
        xlabel=f"recall = sensitivity (fraction of {positive} found)",
        ylabel=f"precision = PPV (fraction of {positive} calls that are {positive})",
    )
    pr_ax.legend(loc="upper right", fontsize=7)
    if title:
        fig.suptitle(title)
    return _save_png(fig, path)


class TemperatureScaler:
    """Post-hoc calibration by one temperature T: probabilities = softmax(logits / T) (Guo et al. 2017).

    Fit T on VALIDATION logits by minimising the negative log-likelihood (a bounded 1-D search; the
    NLL is convex in 1/T). T > 1 softens over-confident predictions; the ranking, hence AUROC and the
    arg-max, is unchanged. Logits: (n, K), or 1-D for a binary model's logit of class 1.
    """

    def __init__(self, min_temperature: float = 0.01, max_temperature: float = 100.0) -> None:
        if not 0 < min_temperature < max_temperature:
            raise ValueError("need 0 < min_temperature < max_temperature")
        self.bounds = (float(min_temperature), float(max_temperature))
        self.temperature: float | None = None

    def fit(self, logits: Sequence[Any] | np.ndarray, labels: Sequence[int] | np.ndarray) -> TemperatureScaler:
        """Find the temperature that minimises the NLL of `labels` under `logits`; returns self."""
        from scipy.optimize import minimize_scalar

        z = _as_class_logits(logits)
        y = np.asarray(labels)
        integer = np.issubdtype(y.dtype, np.integer) or y.dtype == bool
        if y.shape != (z.shape[0],) or not integer:
            raise ValueError(f"labels must be {z.shape[0]} integer class indices, got shape {y.shape}")
        y = y.astype(np.int64)
        if y.min() < 0 or y.max() >= z.shape[1]:
            raise ValueError(f"labels must lie in 0..{z.shape[1] - 1}")
        # search log T: the scale on which over- and under-confidence are symmetric
        result = minimize_scalar(
            lambda log_t: _nll(z / np.exp(log_t), y),
            method="bounded",
            bounds=tuple(np.log(self.bounds)),
            options={"xatol": 1e-6},
        )
        self.temperature = float(np.exp(result.x))
        return self

    def transform(self, logits: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Calibrated probabilities: (n, K) for (n, K) logits, the probability of class 1 for 1-D."""
        if self.temperature is None:
            raise RuntimeError("TemperatureScaler.transform called before fit")
        binary = np.asarray(logits).ndim == 1
        z = _as_class_logits(logits) / self.temperature
        z -= z.max(axis=1, keepdims=True)
        probs = np.exp(z)
        probs /= probs.sum(axis=1, keepdims=True)
        return probs[:, 1] if binary else probs


def calibrate_into_head(
    model,
    val_logits: np.ndarray,
    val_labels,
    class_weights: np.ndarray | None = None,
    temperature_scaling: bool = True,
) -> tuple[np.ndarray, float]:
    """Fit the saved classifier's calibration on validation and fold it into `model`'s head.

    First the class-prior correction of a class-weighted loss (shift = -log(weight): such a loss inflates each
    class's odds by its weight), then a temperature fitted on the corrected validation logits. Returns
    (shift, temperature); the folded model outputs softmax((logits + shift) / temperature).
    """
    from hf_medai.models.heads import fold_into_head

    shift = (
        -np.log(np.asarray(class_weights, dtype=np.float64))
        if class_weights is not None
        else np.zeros(np.asarray(val_logits).shape[1])
    )
    temperature = TemperatureScaler().fit(val_logits + shift, val_labels).temperature if temperature_scaling else 1.0
    fold_into_head(model, shift=shift, temperature=temperature)
    return shift, temperature


# --- helpers -----------------------------------------------------------------------------------------


def _check(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {y.shape}")
    if p.shape[0] != y.size or p.ndim not in (1, 2):
        raise ValueError(f"probs must have shape ({y.size},) or ({y.size}, K), got {p.shape}")
    return y, p


def wilson_interval(successes: np.ndarray, n: np.ndarray, z: float = 1.959964) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of successes / n (n > 0), elementwise."""
    successes, n = np.asarray(successes, dtype=np.float64), np.asarray(n, dtype=np.float64)
    phat = successes / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def _as_class_logits(logits: Any) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:  # a binary model's logit of class 1: softmax([0, z]) = sigmoid(z)
        z = np.stack([np.zeros_like(z), z], axis=1)
    if z.ndim != 2 or z.shape[0] == 0 or not np.isfinite(z).all():
        raise ValueError(f"logits must be finite, of shape (n, K) or (n,), got {np.shape(logits)}")
    return z


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    from scipy.special import logsumexp

    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(y)), y]))


def _figure(
    nrows: int = 1,
    ncols: int = 1,
    figsize: tuple[float, float] = (5.0, 5.0),
    height_ratios: Sequence[float] | None = None,
) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: renders without a display, whatever backend is configured
    axes = fig.subplots(nrows, ncols, gridspec_kw={"height_ratios": height_ratios} if height_ratios else None)
    return fig, axes


def _save_png(fig: Any, path: str | Path) -> Path:
    with atomic_path(path) as tmp:  # a temporary file beside `path`, then os.replace
        fig.savefig(tmp, format="png", dpi=120)
    return Path(path)
