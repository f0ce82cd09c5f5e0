"""Calibration: ECE, temperature scaling, and the reliability / ROC / PR figures for the model card.

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


def expected_calibration_error(y_true: Sequence[int] | np.ndarray, probs: Sequence[Any] | np.ndarray,
                               n_bins: int = 15) -> float:
    """ECE over `n_bins` equal-width bins (our `ece` metric module; definition in its docstring).

    `probs`: 1-D probability of class 1 (binary: calibration of that risk), or (n, K) class
    probabilities (multiclass: top-label confidence against accuracy of the arg-max).
    """
    y, p = _check(y_true, probs)
    return float(metric_function("ece")(references=y, prediction_scores=p, n_bins=n_bins)["ece"])


def reliability_diagram(y_true: Sequence[int] | np.ndarray, probs: Sequence[Any] | np.ndarray,
                        path: str | Path, n_bins: int = 15, title: str = "Reliability diagram") -> Path:
    """Write a reliability diagram PNG to `path`: observed frequency per confidence bin against the
    diagonal of perfect calibration, the ECE in the legend, and the bin counts below. Returns `path`."""
    y, p = _check(y_true, probs)
    bins = metric_function("ece")(references=y, prediction_scores=p, n_bins=n_bins, return_bins=True)
    edges = np.asarray(bins["bin_edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, 1.0 / n_bins
    count = np.asarray(bins["bin_count"])
    frequency = np.nan_to_num(np.asarray(bins["bin_frequency"], dtype=np.float64))
    confidence = np.where(count > 0, np.asarray(bins["bin_confidence"], dtype=np.float64), centres)
    binary = p.ndim == 1
    fig, (top, bottom) = _figure(nrows=2, figsize=(5.0, 6.0), height_ratios=(3, 1))
    top.bar(centres, frequency, width=width, edgecolor="black", linewidth=0.5, label="observed")
    top.bar(centres, confidence - frequency, bottom=frequency, width=width, color="tab:red", alpha=0.3,
            label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), title=title,
            ylabel="observed fraction of class 1" if binary else "accuracy")
    top.legend(loc="upper left", title=f"ECE = {bins['ece']:.3f} ({n_bins} bins)", fontsize=8)
    bottom.bar(centres, count, width=width, color="grey", edgecolor="black", linewidth=0.5)
    bottom.set(xlim=(0, 1), ylabel="count",
               xlabel="predicted probability of class 1" if binary else "confidence (top-label)")
    return _save_png(fig, path)


def roc_pr_plot(y_true: Sequence[int] | np.ndarray, pos_score: Sequence[float] | np.ndarray, path: str | Path,
                title: str | None = None,
                reference_points: Mapping[str, tuple[float, float]] | None = None) -> Path:
    """Write ROC and precision-recall curves side by side (AUROC and AP in the legends) to `path`.

    `reference_points`: name -> (sensitivity, specificity) drawn on the ROC, e.g. the dermatologists
    of Brinker et al. 2019, {"dermatologists (mean)": (0.741, 0.600)}. Returns `path`.
    """
    from sklearn.metrics import precision_recall_curve
    from sklearn.metrics import roc_curve

    y, s = _check(y_true, pos_score)
    if s.ndim != 1:
        raise ValueError("roc_pr_plot takes the 1-D score of the positive class")
    auroc = metric_function("roc_auc")(references=y, prediction_scores=s)["roc_auc"]
    ap = metric_function("average_precision")(references=y, prediction_scores=s)["average_precision"]
    fpr, tpr, _ = roc_curve(y, s, pos_label=1)
    precision, recall, _ = precision_recall_curve(y, s, pos_label=1)
    fig, (roc_ax, pr_ax) = _figure(ncols=2, figsize=(10.0, 4.5))
    roc_ax.plot(fpr, tpr, label=f"model (AUROC = {auroc:.3f})")
    roc_ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="chance")
    for name, (sensitivity, specificity) in (reference_points or {}).items():
        roc_ax.plot(1 - specificity, sensitivity, "o", label=name)
    roc_ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    roc_ax.legend(loc="lower right", fontsize=8)
    pr_ax.step(recall, precision, where="post", label=f"model (AP = {ap:.3f})")
    pr_ax.axhline(float(np.mean(y == 1)), color="k", linestyle="--", linewidth=1, label="prevalence")
    pr_ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision (PPV)",
              title="Precision-recall")
    pr_ax.legend(loc="lower left", fontsize=8)
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
        result = minimize_scalar(lambda log_t: _nll(z / np.exp(log_t), y), method="bounded",
                                 bounds=tuple(np.log(self.bounds)), options={"xatol": 1e-6})
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


# --- helpers -----------------------------------------------------------------------------------------


def _check(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {y.shape}")
    if p.shape[0] != y.size or p.ndim not in (1, 2):
        raise ValueError(f"probs must have shape ({y.size},) or ({y.size}, K), got {p.shape}")
    return y, p


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


def _figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (5.0, 5.0),
            height_ratios: Sequence[float] | None = None) -> tuple[Any, Any]:
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
