"""Which modality earns its place: a metadata-only baseline, and the ablation table of a multimodal (fusion) model.

`tabular_baseline` is the single-modality model of the metadata (age, sex, body site, ...): scikit-learn's
HistGradientBoostingClassifier, which takes categorical columns and missing values natively, so the baseline is a
well-kept library's model and not a hand-rolled one. `modality_ablation` puts each model's test AUROC (with its
bootstrap interval, from the same metric functions as every other number in a run folder) beside the paired
bootstrap difference fused - best single modality, the best single modality being picked on VALIDATION AUROC so
that the comparison is not tuned on the test set. `missing_modality` scores the fused model with a modality absent.

The dict `modality_ablation` returns is JSON-ready (metrics.json["modality_ablation"]); the card renders it with
the `ablation_section` macro of hf_medai/model_cards/_macros.md.j2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from hf_medai.evaluation.classification import binary_metrics, multiclass_metrics, paired_difference

# Conservative defaults for a few thousand rows: shallow trees, small steps, a fixed number of them.
# Early stopping is off: HGB's internal validation split is by row, and rows of one lesion (or patient) would
# sit on both sides of it; a fixed budget is deterministic and uses the training split only.
TABULAR_DEFAULTS: dict[str, Any] = dict(
    learning_rate=0.05,
    max_iter=150,
    max_leaf_nodes=8,
    min_samples_leaf=20,
    l2_regularization=1.0,
    early_stopping=False,
)


def tabular_frame(
    frame: pd.DataFrame,
    categorical: Sequence[str],
    numeric: Sequence[str],
    categories: Mapping[str, list] | None = None,
) -> pd.DataFrame:
    """The model's input: `categorical` columns as pandas categories (None/NaN = missing), `numeric` as float64 (NaN
    kept). With `categories` (the training frame's), a value not seen in training becomes missing."""
    missing = [c for c in [*categorical, *numeric] if c not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the frame (it has {list(frame.columns)})")
    out = pd.DataFrame(index=frame.index)
    for col in categorical:
        present = frame[col].notna()
        values = frame[col].astype(str).where(present)  # NaN where missing
        known = categories[col] if categories is not None else sorted(values[present].unique())
        out[col] = pd.Categorical(values, categories=known)
    for col in numeric:
        out[col] = pd.to_numeric(frame[col], errors="coerce").astype(np.float64)
    return out


def tabular_baseline(
    train: pd.DataFrame,
    y_train: Sequence[int] | np.ndarray,
    others: Mapping[str, pd.DataFrame],
    categorical: Sequence[str],
    numeric: Sequence[str],
    seed: int = 0,
    **params: Any,
):
    """Fit a HistGradientBoostingClassifier on the `train` metadata; return (estimator, {name: (n, K) probabilities}).

    `y_train`: class indices 0..K-1, every class present (binary: K = 2). Categorical columns use sklearn's native
    categorical support (the categories are the training values; an unseen value in `others` is treated as missing);
    missing numerics stay NaN and missing categories stay missing: HGB learns where they go. `params` override
    TABULAR_DEFAULTS (e.g. `early_stopping=True`, which holds out a fraction of `train`, never validation or test).
    Deterministic for a seed.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    y = np.asarray(y_train)
    if y.ndim != 1 or len(y) != len(train):
        raise ValueError(f"y_train must be 1-D with one label per training row ({len(train)}), got shape {y.shape}")
    classes = np.unique(y)
    if not np.array_equal(classes, np.arange(len(classes))) or len(classes) < 2:
        raise ValueError(f"y_train must hold class indices 0..K-1 with every class present (K >= 2), got {classes}")
    x_train = tabular_frame(train, categorical, numeric)
    categories = {c: list(x_train[c].cat.categories) for c in categorical}
    model = HistGradientBoostingClassifier(
        categorical_features="from_dtype", random_state=seed, **{**TABULAR_DEFAULTS, **params}
    )
    model.fit(x_train, y)
    probs = {
        name: model.predict_proba(tabular_frame(frame, categorical, numeric, categories))
        for name, frame in others.items()
    }
    return model, probs


# ---------------------------------------------------------------------------------------------------- ablation


def _probs(scores: Any, n_classes: int, name: str, n: int) -> np.ndarray:
    """(n, K) probabilities; a binary model may give the positive class's probability as a vector."""
    p = np.asarray(scores, dtype=np.float64)
    if p.ndim == 1 and n_classes == 2:
        p = np.stack([1 - p, p], axis=1)
    if p.ndim != 2 or p.shape != (n, n_classes):
        raise ValueError(f"scores of {name!r} must have shape ({n}, {n_classes}), got {p.shape}")
    return p


def auroc_with_ci(
    y_true, probs: np.ndarray, class_names: Sequence[str], n_bootstrap: int = 1000, seed: int = 0, ci=0.95
):
    """(AUROC, CI low, CI high): binary_metrics (positive class = index 1) or multiclass_metrics (macro one-vs-rest),
    the functions behind every run's metrics.json, so the values equal scikit-learn's roc_auc_score."""
    if len(class_names) == 2:
        m = binary_metrics(y_true, probs[:, 1], operating_points={}, n_bootstrap=n_bootstrap, seed=seed, ci=ci)
    else:
        m = multiclass_metrics(y_true, probs, class_names, n_bootstrap=n_bootstrap, seed=seed, ci=ci)
    return m["auroc"], m["auroc_ci_low"], m["auroc_ci_high"]


def _difference_keys(diff: dict[str, Any] | None) -> dict[str, Any]:
    if diff is None:
        return {"fused_minus_model": None, "fused_minus_model_ci_low": None, "fused_minus_model_ci_high": None}
    return {
        "fused_minus_model": float(diff["difference"]),
        "fused_minus_model_ci_low": diff["difference_ci_low"],
        "fused_minus_model_ci_high": diff["difference_ci_high"],
    }


def _verdict(low: float | None, high: float | None) -> str:
    """Where the paired interval of fused - model lies: "above_zero", "includes_zero", "below_zero" or "unknown"."""
    if low is None or high is None:
        return "unknown"
    return "above_zero" if low > 0 else "below_zero" if high < 0 else "includes_zero"


def modality_ablation(
    y_val: Sequence[int] | np.ndarray,
    val_scores: Mapping[str, Any],
    y_test: Sequence[int] | np.ndarray,
    test_scores: Mapping[str, Any],
    class_names: Sequence[str],
    fused: str = "fused",
    modalities: Mapping[str, Sequence[str]] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """The ablation table: one row per model, the best single modality (on validation), fused - best (on test).

    `val_scores` / `test_scores`: {model name: (n, K) probabilities (binary: or the positive class's)}, the same
    names in both, `fused` among them. `modalities`: {model name: the modalities it sees}; by default each model
    other than `fused` sees one modality, its own name, and `fused` sees all of them. The best single-modality model
    is the one with the highest VALIDATION AUROC (ties: the first given); test numbers never choose it. Each row has
    the test AUROC with its bootstrap CI, the validation AUROC and the paired bootstrap difference fused - model on
    the test rows (both models scored on each resample, stratified by class).
    """
    names = list(test_scores)
    if set(val_scores) != set(names):
        raise ValueError(f"val_scores and test_scores must name the same models, got {sorted(val_scores)} and {names}")
    if fused not in names:
        raise ValueError(f"the fused model {fused!r} is not among the scored models {names}")
    if len(names) < 2:
        raise ValueError("an ablation needs the fused model and at least one single-modality model")
    K = len(class_names)
    yv, yt = np.asarray(y_val), np.asarray(y_test)
    val = {m: _probs(val_scores[m], K, m, len(yv)) for m in names}
    test = {m: _probs(test_scores[m], K, m, len(yt)) for m in names}
    if modalities is None:
        singles = [m for m in names if m != fused]
        modalities = {**{m: [m] for m in singles}, fused: singles}
    unknown = [m for m in names if m not in modalities]
    if unknown:
        raise ValueError(f"`modalities` does not say what {unknown} see")
    single = [m for m in names if m != fused and len(modalities[m]) == 1]
    if not single:
        raise ValueError(f"no single-modality model among {names} (modalities: {dict(modalities)})")

    rows = []
    for m in names:
        auroc, low, high = auroc_with_ci(yt, test[m], class_names, n_bootstrap, seed, ci)
        diff = None if m == fused else paired_difference(yt, test[fused], test[m], class_names, n_bootstrap, seed, ci)
        rows.append(
            {
                "model": m,
                "modalities": list(modalities[m]),
                "test_auroc": auroc,
                "test_auroc_ci_low": low,
                "test_auroc_ci_high": high,
                "val_auroc": auroc_with_ci(yv, val[m], class_names, n_bootstrap=0)[0],
                **_difference_keys(diff),
            }
        )
    by_name = {r["model"]: r for r in rows}
    best = max(single, key=lambda m: (by_name[m]["val_auroc"], -single.index(m)))
    gain = by_name[best]
    return {
        "metric": "auroc" if K == 2 else "auroc (macro one-vs-rest)",
        "fused": fused,
        "rows": rows,
        "best_single": best,
        "best_single_chosen_on": "validation AUROC (the test set never chooses it)",
        "best_single_val_auroc": gain["val_auroc"],
        "fused_minus_best_single": gain["fused_minus_model"],
        "fused_minus_best_single_ci_low": gain["fused_minus_model_ci_low"],
        "fused_minus_best_single_ci_high": gain["fused_minus_model_ci_high"],
        "fused_gain": _verdict(gain["fused_minus_model_ci_low"], gain["fused_minus_model_ci_high"]),
        "n_val": int(len(yv)),
        "n_test": int(len(yt)),
        "n_bootstrap": int(n_bootstrap),
        "ci_level": float(ci),
    }


def missing_modality(
    y_test: Sequence[int] | np.ndarray,
    fused_scores: Any,
    absent_scores: Mapping[str, Any],
    class_names: Sequence[str],
    absent: Mapping[str, Sequence[str]] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> list[dict[str, Any]]:
    """Rows for the fused model scored with a modality absent (e.g. {"fused, metadata absent": probs}).

    Each row: test AUROC with CI and the paired difference full fused - this (positive: what losing the modality
    costs), on the same test rows. `absent`: {row name: the modalities left out}, recorded in the row.
    Append them to an ablation dict as `ablation["missing_modality"] = missing_modality(...)`.
    """
    yt = np.asarray(y_test)
    K = len(class_names)
    full = _probs(fused_scores, K, "fused", len(yt))
    rows = []
    for name, scores in absent_scores.items():
        p = _probs(scores, K, name, len(yt))
        auroc, low, high = auroc_with_ci(yt, p, class_names, n_bootstrap, seed, ci)
        rows.append(
            {
                "model": name,
                "absent": list((absent or {}).get(name, [])),
                "test_auroc": auroc,
                "test_auroc_ci_low": low,
                "test_auroc_ci_high": high,
                **_difference_keys(paired_difference(yt, full, p, class_names, n_bootstrap, seed, ci)),
            }
        )
    return rows
