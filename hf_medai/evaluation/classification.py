"""Flat metric dicts with bootstrap confidence intervals, for binary, multiclass and regression models.

Every number comes from one of our `evaluate` metric modules (see `metrics/`), which call
scikit-learn; the bootstrap calls the very same functions on batches of resamples, so a point
estimate and its interval can never disagree about what the metric is.

Conventions: binary labels are 0/1 with 1 the positive class (the disease); a threshold T predicts
positive when score >= T (sklearn's `roc_curve` convention); an undefined value is None, never NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sklearn
from sklearn.metrics import roc_auc_score, roc_curve

from hf_medai.evaluation.metrics import metric_function

# Mean sensitivity of 157 dermatologists on dermoscopic melanoma images (Brinker et al., Eur J Cancer
# 2019;113:47-54): the model's specificity at that sensitivity is the head-to-head comparison.
DERMATOLOGIST_SENSITIVITY = 0.741
DEFAULT_OPERATING_POINTS: dict[str, list[float]] = {"sensitivity": [DERMATOLOGIST_SENSITIVITY], "specificity": [0.9]}
# A percentile interval over the resamples where a metric happens to be defined is biased towards
# the easy resamples; past this fraction of undefined resamples we report no interval at all.
MAX_UNDEFINED_FRACTION = 0.1
# Resamples are scored in blocks of about this many values, to bound memory on large test sets.
_BLOCK_ELEMENTS = 2_000_000

Values = dict[str, Any]  # metric name -> float (one evaluation) or array (one value per resample)


def choose_threshold(
    y_true: Sequence[int] | np.ndarray, pos_score: Sequence[float] | np.ndarray, method: str = "youden"
) -> float:
    """Pick a decision threshold on VALIDATION data (never on the test set you report).

    method: "youden" (maximise sensitivity + specificity - 1), "sensitivity@0.95" (the most specific
    threshold with sensitivity >= 0.95) or "specificity@0.9" (the most sensitive with specificity
    >= 0.9), any target in [0, 1]. Predict positive when score >= the returned threshold.
    """
    y, s = _check_binary(y_true, pos_score)
    if not (y == 1).any() or not (y == 0).any():
        raise ValueError("choose_threshold needs both classes in y_true")
    if method == "youden":
        fpr, tpr, thresholds = roc_curve(y, s, pos_label=1, drop_intermediate=False)
        # index 0 is sklearn's +inf threshold ("predict nothing positive"): never a useful answer
        best = 1 + int(np.argmax((tpr - fpr)[1:]))
        return float(thresholds[best])
    kind, sep, target = method.partition("@")
    if sep and kind in ("sensitivity", "specificity") and _is_number(target):
        t = float(target)
        points = metric_function("operating_point")(references=y, prediction_scores=s, **{f"min_{kind}": [t]})
        return points[f"threshold_at_{kind}_{t:g}"]
    raise ValueError(f"unknown method {method!r}: use 'youden', 'sensitivity@<t>' or 'specificity@<t>'")


def binary_metrics(
    y_true: Sequence[int] | np.ndarray,
    pos_score: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
    operating_points: Mapping[str, Sequence[float]] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Metrics of a binary classifier (label 1 = positive, `pos_score` = probability of 1), flat.

    Keys: auroc, auprc, balanced_accuracy, sensitivity, specificity, ppv, npv, accuracy, brier, ece,
    plus specificity_at_sensitivity_<t> / sensitivity_at_specificity_<t> for `operating_points`
    (default: sensitivity 0.741, dermatologists' mean, and specificity 0.9), each with <key>_ci_low
    and <key>_ci_high; and threshold, prevalence, n, n_positive, n_bootstrap, ci_level, and (when
    n_bootstrap > 0) bootstrap_undefined, {metric: resamples skipped because it was undefined there}.
    Intervals: percentile bootstrap, resampled within each class; None when undefined too often.
    """
    y, s = _check_binary(y_true, pos_score)
    if (s < 0).any() or (s > 1).any():
        raise ValueError("pos_score must be probabilities of class 1 in [0, 1] (apply a sigmoid to logits)")
    ops = DEFAULT_OPERATING_POINTS if operating_points is None else operating_points
    unknown = set(ops) - {"sensitivity", "specificity"}
    if unknown:
        raise ValueError(f"operating_points keys must be 'sensitivity' and/or 'specificity', got {sorted(unknown)}")
    min_sens = [float(t) for t in ops.get("sensitivity", [])]
    min_spec = [float(t) for t in ops.get("specificity", [])]
    threshold = float(threshold)

    def values(y_: np.ndarray, s_: np.ndarray) -> Values:
        pred = (s_ >= threshold).astype(np.int64)
        rates = metric_function("sensitivity_specificity")(references=y_, predictions=pred)
        out = {
            "auroc": metric_function("roc_auc")(references=y_, prediction_scores=s_)["roc_auc"],
            "auprc": metric_function("average_precision")(references=y_, prediction_scores=s_)["average_precision"],
            "balanced_accuracy": metric_function("balanced_accuracy")(references=y_, predictions=pred)[
                "balanced_accuracy"
            ],
            "sensitivity": rates["sensitivity"],
            "specificity": rates["specificity"],
            "ppv": rates["ppv"],
            "npv": rates["npv"],
            "accuracy": metric_function("accuracy")(references=y_, predictions=pred)["accuracy"],
            "brier": metric_function("brier")(references=y_, prediction_scores=s_)["brier"],
            "ece": metric_function("ece")(references=y_, prediction_scores=s_)["ece"],
        }
        if min_sens or min_spec:
            points = metric_function("operating_point")(
                references=y_, prediction_scores=s_, min_sensitivity=min_sens, min_specificity=min_spec
            )
            out.update({k: v for k, v in points.items() if not k.startswith("threshold_")})
        return out

    result = _with_intervals(values, (y, s), strata=y, n_bootstrap=n_bootstrap, seed=seed, ci=ci)
    result.update(
        threshold=threshold,
        prevalence=float(y.mean()),
        n=int(y.size),
        n_positive=int(y.sum()),
        n_bootstrap=int(n_bootstrap),
        ci_level=float(ci),
    )
    return result


def multiclass_metrics(
    y_true: Sequence[int] | np.ndarray,
    probs: Sequence[Sequence[float]] | np.ndarray,
    class_names: Sequence[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Metrics of a K-class classifier (`y_true` in 0..K-1, `probs` of shape (n, K)), flat.

    Keys: auroc (one-vs-rest, macro), accuracy, balanced_accuracy, ece (top-label), and auroc_<class>
    (one-vs-rest) per class, each with <key>_ci_low and <key>_ci_high; and n, n_bootstrap, ci_level.
    Predictions are the arg-max class. Resampling is within each class.
    """
    y = _check_labels(y_true)
    p = np.asarray(probs, dtype=np.float64)
    names = [str(c) for c in class_names]
    if p.ndim != 2 or p.shape[0] != y.size:
        raise ValueError(f"probs must have shape (n, K) with n = len(y_true) = {y.size}, got {p.shape}")
    if p.shape[1] != len(names):
        raise ValueError(f"probs has {p.shape[1]} columns but {len(names)} class_names were given")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be unique, got {names}")
    if y.size and (y.min() < 0 or y.max() >= len(names)):
        raise ValueError(f"y_true must hold class indices 0..{len(names) - 1}")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("probs must be finite probabilities whose rows sum to 1 (apply softmax to logits)")
    p = p / p.sum(axis=1, keepdims=True)  # float32 softmax rounding would trip sklearn's stricter check

    def values(y_: np.ndarray, p_: np.ndarray) -> Values:
        pred = p_.argmax(axis=-1)
        per_class = np.asarray(
            metric_function("roc_auc")(references=y_, prediction_scores=p_, average=None)["roc_auc"]
        )
        out = {
            # sklearn's one-vs-rest "macro" is exactly the unweighted mean of these per-class values (a
            # test pins it); one sklearn call instead of two halves the bootstrap's dominant cost
            "auroc": per_class.mean(axis=-1),
            "accuracy": metric_function("accuracy")(references=y_, predictions=pred)["accuracy"],
            "balanced_accuracy": metric_function("balanced_accuracy")(references=y_, predictions=pred)[
                "balanced_accuracy"
            ],
            "ece": metric_function("ece")(references=y_, prediction_scores=p_)["ece"],
        }
        for k, name in enumerate(names):
            out[f"auroc_{name}"] = per_class[..., k]
        return out

    result = _with_intervals(values, (y, p), strata=y, n_bootstrap=n_bootstrap, seed=seed, ci=ci)
    result.update(n=int(y.size), n_bootstrap=int(n_bootstrap), ci_level=float(ci))
    return result


def regression_metrics(
    y_true: Sequence[float] | np.ndarray,
    y_pred: Sequence[float] | np.ndarray,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Metrics of a regression model, flat: mae, rmse, r2, each with <key>_ci_low and <key>_ci_high;
    and n, n_bootstrap, ci_level. Resampling is of rows (no strata)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.ndim != 1 or p.shape != y.shape or y.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty 1-D arrays of one length, got {y.shape}, {p.shape}")
    if not (np.isfinite(y).all() and np.isfinite(p).all()):
        raise ValueError("y_true and y_pred must be finite (drop or impute missing values first)")

    def values(y_: np.ndarray, p_: np.ndarray) -> Values:
        return {name: metric_function(name)(references=y_, predictions=p_)[name] for name in ("mae", "rmse", "r2")}

    result = _with_intervals(values, (y, p), strata=None, n_bootstrap=n_bootstrap, seed=seed, ci=ci)
    result.update(n=int(y.size), n_bootstrap=int(n_bootstrap), ci_level=float(ci))
    return result


def curve_bands(
    y_true: Sequence[int] | np.ndarray,
    pos_score: Sequence[float] | np.ndarray,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    grid_points: int = 101,
) -> dict[str, np.ndarray]:
    """Pointwise percentile bands of the ROC and precision-recall curves over resamples stratified by class.

    On a fixed grid of false-positive rates (ROC: the sensitivity, linearly interpolated as the curve is drawn)
    and of recalls (PR: the precision at the highest threshold whose recall reaches the grid value, as the step
    curve is drawn). Returns {"grid", "tpr_low", "tpr_high", "precision_low", "precision_high"}.
    """
    from sklearn.metrics import precision_recall_curve

    y, s = _check_binary(y_true, pos_score)
    if not (y == 1).any() or not (y == 0).any():
        raise ValueError("curve_bands needs both classes in y_true")
    grid = np.linspace(0.0, 1.0, grid_points)
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(y == c) for c in (0, 1)]
    idx = np.concatenate([g[rng.integers(0, g.size, size=(n_bootstrap, g.size))] for g in strata], axis=1)
    tpr = np.empty((n_bootstrap, grid_points))
    precision = np.empty((n_bootstrap, grid_points))
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        for b in range(n_bootstrap):
            yb, sb = y[idx[b]], s[idx[b]]
            fpr_b, tpr_b, _ = roc_curve(yb, sb, pos_label=1)
            tpr[b] = np.interp(grid, fpr_b, tpr_b)
            prec_b, rec_b, _ = precision_recall_curve(yb, sb, pos_label=1)
            # recall falls along the arrays: the last index whose recall still reaches the grid value
            last = rec_b.size - 1 - np.searchsorted(rec_b[::-1], grid, side="left")
            precision[b] = prec_b[np.clip(last, 0, rec_b.size - 1)]
    q = [100 * (1 - ci) / 2, 100 * (1 + ci) / 2]
    tpr_low, tpr_high = np.percentile(tpr, q, axis=0)
    precision_low, precision_high = np.percentile(precision, q, axis=0)
    return {
        "grid": grid,
        "tpr_low": tpr_low,
        "tpr_high": tpr_high,
        "precision_low": precision_low,
        "precision_high": precision_high,
    }


def paired_difference(
    y_true,
    scores_a,
    scores_b,
    class_names: Sequence[str] | None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Model A minus model B on the same test rows, with a paired bootstrap interval (both scored on each resample).

    Classification: AUROC (macro one-vs-rest for K > 2) from (n, K) probabilities; regression: MAE from
    predictions. Resamples are drawn within each class (classification), as for the metrics' own intervals.
    """
    y = np.asarray(y_true)
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if class_names is None:
        name, metric = "mae", lambda idx, s: float(np.mean(np.abs(y[idx] - s[idx])))
    elif len(class_names) == 2:
        name, metric = "auroc", lambda idx, s: roc_auc_score(y[idx], s[idx, 1])
    else:
        labels = list(range(len(class_names)))
        name, metric = (
            "auroc",
            lambda idx, s: roc_auc_score(y[idx], s[idx], multi_class="ovr", average="macro", labels=labels),
        )
    every = np.arange(len(y))
    out: dict[str, Any] = {
        "metric": name,
        "difference": metric(every, a) - metric(every, b),
        "difference_ci_low": None,
        "difference_ci_high": None,
        "n_bootstrap": int(n_bootstrap),
    }
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        groups = [every] if class_names is None else [np.flatnonzero(y == c) for c in np.unique(y)]
        draws = []
        for _ in range(n_bootstrap):
            idx = np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups])
            try:
                draws.append(metric(idx, a) - metric(idx, b))
            except ValueError:  # a class missing from a regression-free resample: skip it
                continue
        if draws:
            lo, hi = np.percentile(draws, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
            out.update(difference_ci_low=float(lo), difference_ci_high=float(hi))
    return out


# --- bootstrap ---------------------------------------------------------------------------------------


def _with_intervals(
    values: Callable[..., Values],
    arrays: tuple[np.ndarray, ...],
    strata: np.ndarray | None,
    n_bootstrap: int,
    seed: int,
    ci: float,
) -> dict[str, Any]:
    """Point estimates of `values(*arrays)` plus percentile intervals over `n_bootstrap` resamples.

    A resample where a metric is undefined (e.g. no positive prediction, so no PPV) is skipped and
    counted in "bootstrap_undefined" ({metric: count}, present when n_bootstrap > 0); past
    MAX_UNDEFINED_FRACTION of them the interval is None. With n_bootstrap=0 every interval is None.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must lie in (0, 1), got {ci}")
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    point = values(*arrays)
    draws = bootstrap_draws(values, arrays, strata, n_bootstrap, seed) if n_bootstrap else {}
    result: dict[str, Any] = {}
    undefined_counts: dict[str, int] = {}
    for key, estimate in point.items():
        result[key] = _finite_or_none(estimate)
        low = high = None
        if n_bootstrap:
            undefined = int(draws[key].size - np.isfinite(draws[key]).sum())
            if undefined:
                undefined_counts[key] = undefined
            low, high = percentile_interval(draws[key], ci)
        result[f"{key}_ci_low"] = low
        result[f"{key}_ci_high"] = high
    if n_bootstrap:
        result["bootstrap_undefined"] = undefined_counts
    return result


def percentile_interval(draws: np.ndarray, ci: float) -> tuple[float | None, float | None]:
    """Percentile interval of the bootstrap `draws` (NaN = undefined in that resample); (None, None)
    when none is defined or more than MAX_UNDEFINED_FRACTION are undefined."""
    draws = np.asarray(draws, dtype=np.float64)
    defined = np.isfinite(draws)
    if not defined.any() or draws.size - defined.sum() > MAX_UNDEFINED_FRACTION * draws.size:
        return None, None
    low, high = np.percentile(draws[defined], [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
    return float(low), float(high)


def bootstrap_draws(
    values: Callable[..., Values],
    arrays: tuple[np.ndarray, ...],
    strata: np.ndarray | None,
    n_bootstrap: int,
    seed: int | Sequence[int],
) -> dict[str, np.ndarray]:
    """`values` on `n_bootstrap` resamples, scored a block of resamples per call; arrays per key.

    Each resample is a matrix of row indices (one row per resample), so `values` sees arrays with a
    leading resample axis. With `strata`, each resample draws within each stratum as many rows as it
    holds (so every resample keeps the class balance and both classes). Deterministic for a seed
    (an int, or a sequence of ints such as [seed, subgroup]) and inputs.
    """
    n = arrays[0].shape[0]
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == c) for c in np.unique(strata)]
    row_size = max(1, int(np.prod(arrays[1].shape[1:], dtype=np.int64))) * n
    block = max(1, min(n_bootstrap, _BLOCK_ELEMENTS // row_size))
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    # sklearn's per-call argument checks are a large share of the cost on these small inputs, and the
    # inputs were already checked by the point estimate: skip them inside the loop
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        while done < n_bootstrap:
            b = min(block, n_bootstrap - done)
            idx = np.concatenate([g[rng.integers(0, g.size, size=(b, g.size))] for g in groups], axis=1)
            for key, value in values(*(a[idx] for a in arrays)).items():
                parts.setdefault(key, []).append(np.asarray(value, dtype=np.float64).reshape(b))
            done += b
    return {key: np.concatenate(chunks) for key, chunks in parts.items()}


# --- input checks ---------------------------------------------------------------------------------------


def _check_labels(y_true: Any) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {y.shape}")
    if y.dtype == bool:
        return y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        raise ValueError("y_true must hold integer class labels")
    return y.astype(np.int64)


def _check_binary(y_true: Any, pos_score: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _check_labels(y_true)
    s = np.asarray(pos_score, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"pos_score must be 1-D with one score per label: {s.shape} vs {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"binary y_true must be 0/1 (1 = positive), got labels {np.unique(y).tolist()}")
    if not np.isfinite(s).all():
        raise ValueError("pos_score must be finite")
    return y, s


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
