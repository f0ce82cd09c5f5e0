"""Robustness and shortcut audits: how much a model's output moves when something that should not matter changes.

Every audit has the same shape. The same test examples are scored twice, as they are and with one controlled change
(an ink marking drawn on a lesion image, "he" swapped for "she" in a note, a question stem paraphrased), and
`paired_shift` summarises the paired change of the score a decision is read from:

- mean change (signed) and mean absolute change, each with a paired bootstrap interval over the examples;
- the share of decisions that flip: at the run's decision threshold for a binary model, or the predicted class or
  answer otherwise (flips up and down counted apart);
- the metric (AUROC, or accuracy) before and after, where labels are given.

`verdict` turns one summary into the card's sentence ("ink markings raise melanoma probability by 0.12
(0.09–0.15); 8% of decisions flip"), and calls a shift material when its interval lies beyond `MARGIN` or more than
`FLIP_MARGIN` of decisions flip. `audit_section` is the block an audit writes into metrics.json["robustness"].
The changes themselves live with their modality (hf_medai.data.artefacts for images).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from hf_medai.evaluation.classification import bootstrap_draws, percentile_interval

MARGIN = 0.05  # a mean (absolute) shift of the score whose interval lies wholly beyond this is material
FLIP_MARGIN = 0.05  # ... and so is a change that flips more than this share of decisions
FLIP_FLOOR = 0.01  # ... unless the scores barely moved (a model whose scores all sit at the threshold flips on noise)


def decision_scores(probs: np.ndarray, y: np.ndarray | None, positive_index: int | None) -> np.ndarray:
    """The score a decision is read from: the positive class's probability (binary with a threshold), else the
    probability of the true class (or, without labels, of the class predicted on the unchanged input)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        return probs
    if positive_index is not None:
        return probs[:, positive_index]
    if y is None:
        raise ValueError("decision_scores needs labels or a positive class for (n, K) probabilities")
    return probs[np.arange(len(probs)), np.asarray(y)]


def paired_shift(
    probs_before: np.ndarray,
    probs_after: np.ndarray,
    y: Sequence[int] | None = None,
    threshold: float | None = None,
    positive_index: int | None = None,
    n_bootstrap: int = 1000,
    seed: int | Sequence[int] = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Paired summary of one change over the same examples.

    `probs_*`: (n,) positive-class probabilities, or (n, K) class probabilities (then `positive_index` names the
    positive column for a thresholded binary decision; without it the decision is the argmax and the score the true
    class's probability). `threshold`: the run's operating threshold for binary decisions (default 0.5).
    """
    before, after = np.asarray(probs_before, dtype=np.float64), np.asarray(probs_after, dtype=np.float64)
    if before.shape != after.shape or before.shape[0] == 0:
        raise ValueError(f"paired_shift needs two non-empty arrays of one shape, got {before.shape} and {after.shape}")
    labels = None if y is None else np.asarray(y)
    s0, s1 = decision_scores(before, labels, positive_index), decision_scores(after, labels, positive_index)
    binary = before.ndim == 1 or positive_index is not None
    if binary:
        t = 0.5 if threshold is None else float(threshold)
        d0, d1 = (s0 >= t).astype(int), (s1 >= t).astype(int)
    else:
        d0, d1 = before.argmax(1), after.argmax(1)
    change = s1 - s0

    def values(c: np.ndarray, _: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return {"mean_change": c.mean(-1), "mean_abs_change": np.abs(c).mean(-1)}

    # (bootstrap_draws resamples rows of every array it is given; the second copy only satisfies its signature)
    draws = bootstrap_draws(values, (change, change), None, n_bootstrap, seed) if n_bootstrap else {}
    out: dict[str, Any] = {"n": int(change.size)}
    for key, value in values(change).items():
        out[key] = float(value)
        out[f"{key}_ci"] = list(percentile_interval(draws[key], ci)) if n_bootstrap else [None, None]
    out.update(
        flipped=float(np.mean(d0 != d1)),
        n_flipped=int(np.sum(d0 != d1)),
        largest_change=float(change[np.argmax(np.abs(change))]),
    )
    if binary:
        out.update(
            flipped_up=float(np.mean((d0 == 0) & (d1 == 1))), flipped_down=float(np.mean((d0 == 1) & (d1 == 0)))
        )
    if labels is not None:
        if binary and np.unique(labels).size == 2:
            pos = labels if positive_index is None else (labels == positive_index).astype(int)
            out.update(metric="auroc", metric_before=_auroc(pos, s0), metric_after=_auroc(pos, s1))
        elif not binary:
            out.update(
                metric="accuracy",
                metric_before=float(np.mean(d0 == labels)),
                metric_after=float(np.mean(d1 == labels)),
            )
    return out


def _auroc(y: np.ndarray, s: np.ndarray) -> float | None:
    return float(roc_auc_score(y, s)) if np.unique(y).size == 2 else None


def is_material(summary: dict[str, Any], margin: float = MARGIN, flip_margin: float = FLIP_MARGIN) -> bool:
    """Material: the interval of the mean change (or of the mean absolute change) lies wholly beyond `margin`, or
    more than `flip_margin` of the decisions flip while the scores moved by more than FLIP_FLOOR on average. Without
    intervals, the point estimates decide."""
    lo, hi = summary["mean_change_ci"]
    lo, hi = (summary["mean_change"],) * 2 if lo is None else (lo, hi)
    abs_lo = summary["mean_abs_change_ci"][0]
    abs_lo = summary["mean_abs_change"] if abs_lo is None else abs_lo
    flips = summary["flipped"] > flip_margin and summary["mean_abs_change"] > FLIP_FLOOR
    return bool(lo > margin or hi < -margin or abs_lo > margin or flips)


def verdict(label: str, summary: dict[str, Any], score: str, signed: bool = True) -> str:
    """One sentence for the card. `label`: the change, as the subject of a singular verb ("Adding purple ink
    markings"); `score`: what moved ("melanoma probability"); `signed`: report the signed mean (artefacts) or the mean absolute change (swaps in both
    directions)."""
    if signed:
        mean, (lo, hi) = summary["mean_change"], summary["mean_change_ci"]
        moved = f"{label} {'raises' if mean > 0 else 'lowers'} {score} by {abs(mean):.3f}"
        if lo is not None:
            a, b = sorted((abs(lo), abs(hi)))
            moved += f" ({lo:+.3f} to {hi:+.3f})" if lo < 0 < hi else f" ({a:.3f}–{b:.3f})"
    else:
        mean, (lo, hi) = summary["mean_abs_change"], summary["mean_abs_change_ci"]
        moved = f"{label} moves {score} by {mean:.3f} on average"
        if lo is not None:
            moved += f" ({lo:.3f}–{hi:.3f})"
    flips = f"{100 * summary['flipped']:.0f}% of decisions flip ({summary['n_flipped']} of {summary['n']})"
    judged = "a material shift" if is_material(summary) else "no material shift"
    return f"{moved}; {flips}: {judged}."


def audit_section(
    title: str,
    what: str,
    rows: dict[str, dict[str, Any]],
    labels: dict[str, str],
    score: str,
    signed: bool = True,
    **facts: Any,
) -> dict[str, Any]:
    """The metrics.json block of one audit: its rows (one `paired_shift` each, under a short key), the card's label
    of each, a verdict sentence per row, which rows are material, and the audit's own `facts` (threshold, n, ...)."""
    return {
        "title": title,
        "what": what,
        "score": score,
        "signed": signed,
        "margin": MARGIN,
        "flip_margin": FLIP_MARGIN,
        **facts,
        "rows": {key: {"label": labels[key], **row, "material": is_material(row)} for key, row in rows.items()},
        "verdicts": {key: verdict(labels[key], row, score, signed) for key, row in rows.items()},
        "material": [key for key, row in rows.items() if is_material(row)],
    }
