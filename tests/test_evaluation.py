"""Metrics: our `evaluate` modules (loaded by path, offline) and the flat dicts equal scikit-learn's;
bootstrap intervals behave; operating points and thresholds on hand-made cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from hf_medai.evaluation import (
    DEFAULT_OPERATING_POINTS,
    METRIC_NAMES,
    binary_metrics,
    choose_threshold,
    load_metric,
    metric_function,
    multiclass_metrics,
    regression_metrics,
)

BINARY_KEYS = [
    "auroc",
    "auprc",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "accuracy",
    "brier",
    "ece",
    "specificity_at_sensitivity_0.741",
    "sensitivity_at_specificity_0.9",
]


def _binary_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    return y, score


def _multiclass_data(n: int, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def test_metric_folders_are_loaded_by_path_and_cached():
    assert {
        "roc_auc",
        "average_precision",
        "balanced_accuracy",
        "accuracy",
        "sensitivity_specificity",
        "brier",
        "ece",
        "mae",
    } <= set(METRIC_NAMES)
    module = load_metric("roc_auc")
    assert module is load_metric("roc_auc")
    assert module.name == "roc_auc"
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("accuracy_typo")


def test_modules_compute_equals_sklearn():
    y, s = _binary_data(300)
    pred = (s >= 0.5).astype(int)
    approx = pytest.approx
    assert load_metric("roc_auc").compute(references=y, prediction_scores=s)["roc_auc"] == approx(
        skm.roc_auc_score(y, s), abs=1e-12
    )
    assert load_metric("average_precision").compute(references=y, prediction_scores=s)["average_precision"] == approx(
        skm.average_precision_score(y, s), abs=1e-12
    )
    assert load_metric("balanced_accuracy").compute(references=y, predictions=pred)["balanced_accuracy"] == approx(
        skm.balanced_accuracy_score(y, pred), abs=1e-12
    )
    assert load_metric("accuracy").compute(references=y, predictions=pred)["accuracy"] == approx(
        skm.accuracy_score(y, pred), abs=1e-12
    )
    assert load_metric("brier").compute(references=y, prediction_scores=s)["brier"] == approx(
        skm.brier_score_loss(y, s), abs=1e-12
    )
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    rates = load_metric("sensitivity_specificity").compute(references=y, predictions=pred)
    assert rates == approx(
        {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "ppv": tp / (tp + fp), "npv": tn / (tn + fn)},
        abs=1e-12,
    )
    assert rates["sensitivity"] == approx(skm.recall_score(y, pred), abs=1e-12)
    assert rates["ppv"] == approx(skm.precision_score(y, pred), abs=1e-12)

    yk, probs = _multiclass_data(300)
    multi = load_metric("roc_auc", "multiclass").compute(references=yk, prediction_scores=probs)["roc_auc"]
    assert multi == approx(skm.roc_auc_score(yk, probs, multi_class="ovr", average="macro"), abs=1e-12)
    predk = probs.argmax(1)
    assert load_metric("accuracy").compute(references=yk, predictions=predk)["accuracy"] == approx(
        skm.accuracy_score(yk, predk), abs=1e-12
    )
    assert load_metric("balanced_accuracy").compute(references=yk, predictions=predk)["balanced_accuracy"] == approx(
        skm.balanced_accuracy_score(yk, predk), abs=1e-12
    )

    rng = np.random.default_rng(1)
    target = rng.normal(size=200)
    guess = target + rng.normal(scale=0.5, size=200)
    assert load_metric("mae").compute(references=target, predictions=guess)["mae"] == approx(
        skm.mean_absolute_error(target, guess), abs=1e-12
    )
    assert load_metric("rmse").compute(references=target, predictions=guess)["rmse"] == approx(
        skm.root_mean_squared_error(target, guess), abs=1e-12
    )
    assert load_metric("r2").compute(references=target, predictions=guess)["r2"] == approx(
        skm.r2_score(target, guess), abs=1e-12
    )


def test_batched_form_equals_one_resample_at_a_time():
    """The bootstrap's fast paths (sklearn's multilabel / multioutput forms) score each row as sklearn does."""
    y, s = _binary_data(200)
    rng = np.random.default_rng(2)
    idx = rng.integers(0, y.size, size=(6, y.size))
    ys, ss = y[idx], s[idx]
    ps = (ss >= 0.5).astype(int)
    for name, kwargs, reference in [
        ("roc_auc", {"prediction_scores": ss}, lambda i: skm.roc_auc_score(ys[i], ss[i])),
        ("average_precision", {"prediction_scores": ss}, lambda i: skm.average_precision_score(ys[i], ss[i])),
        ("accuracy", {"predictions": ps}, lambda i: skm.accuracy_score(ys[i], ps[i])),
        ("balanced_accuracy", {"predictions": ps}, lambda i: skm.balanced_accuracy_score(ys[i], ps[i])),
        ("brier", {"prediction_scores": ss}, lambda i: skm.brier_score_loss(ys[i], ss[i])),
        (
            "ece",
            {"prediction_scores": ss},
            lambda i: metric_function("ece")(references=ys[i], prediction_scores=ss[i])["ece"],
        ),
    ]:
        batched = metric_function(name)(references=ys, **kwargs)[name]
        np.testing.assert_allclose(batched, [reference(i) for i in range(len(idx))], atol=1e-12, err_msg=name)
    rates = metric_function("sensitivity_specificity")(references=ys, predictions=ps)
    np.testing.assert_allclose(rates["specificity"], [skm.recall_score(ys[i], ps[i], pos_label=0) for i in range(6)])
    yk, probs = _multiclass_data(150)
    idx_k = rng.integers(0, yk.size, size=(6, yk.size))
    per_class = metric_function("roc_auc")(references=yk[idx_k], prediction_scores=probs[idx_k], average=None)[
        "roc_auc"
    ]
    for i in range(6):
        rows = idx_k[i]
        np.testing.assert_allclose(
            per_class[i], skm.roc_auc_score(yk[rows], probs[rows], multi_class="ovr", average=None), atol=1e-12
        )
    target = rng.normal(size=(6, 80))
    guess = target + rng.normal(size=(6, 80))
    np.testing.assert_allclose(
        metric_function("r2")(references=target, predictions=guess)["r2"],
        [skm.r2_score(target[i], guess[i]) for i in range(6)],
        atol=1e-12,
    )


def test_binary_metrics_equal_sklearn_and_serialise():
    y, s = _binary_data(400)
    result = binary_metrics(y, s, threshold=0.55, n_bootstrap=100)
    pred = (s >= 0.55).astype(int)
    expected = {
        "auroc": skm.roc_auc_score(y, s),
        "auprc": skm.average_precision_score(y, s),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "sensitivity": skm.recall_score(y, pred),
        "specificity": skm.recall_score(y, pred, pos_label=0),
        "ppv": skm.precision_score(y, pred),
        "npv": skm.precision_score(y, pred, pos_label=0),
        "accuracy": skm.accuracy_score(y, pred),
        "brier": skm.brier_score_loss(y, s),
    }
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    assert result["ece"] == pytest.approx(load_metric("ece").compute(references=y, prediction_scores=s)["ece"])
    assert (result["threshold"], result["n"], result["n_positive"]) == (0.55, 400, int(y.sum()))
    assert result["prevalence"] == pytest.approx(y.mean())
    for key in BINARY_KEYS:
        assert result[f"{key}_ci_low"] <= result[key] <= result[f"{key}_ci_high"], key
    assert result["bootstrap_undefined"] == {}
    json.dumps(result, allow_nan=False)


def test_intervals_narrow_with_more_data_and_are_deterministic():
    small = binary_metrics(*_binary_data(150, seed=3), n_bootstrap=150, seed=7)
    large = binary_metrics(*_binary_data(1500, seed=3), n_bootstrap=150, seed=7)
    for key in ("auroc", "sensitivity", "brier"):
        assert large[f"{key}_ci_high"] - large[f"{key}_ci_low"] < small[f"{key}_ci_high"] - small[f"{key}_ci_low"]
    assert binary_metrics(*_binary_data(150, seed=3), n_bootstrap=150, seed=7) == small
    other = binary_metrics(*_binary_data(150, seed=3), n_bootstrap=150, seed=8)
    assert other["auroc"] == small["auroc"] and other["auroc_ci_low"] != small["auroc_ci_low"]


def test_resampling_keeps_every_class():
    """Stratified: with a single positive, every resample still holds it, so AUROC is always defined."""
    y = np.zeros(60, dtype=int)
    y[7] = 1
    s = np.linspace(0, 1, 60)
    result = binary_metrics(y, s, n_bootstrap=50)
    assert result["auroc_ci_low"] is not None
    assert "auroc" not in result["bootstrap_undefined"]


def test_operating_points_and_thresholds_by_hand():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    # sensitivity >= 0.75 first at threshold 0.7 (3 of 4 positives, no negative) -> specificity 1.0;
    # sensitivity 1.0 needs threshold 0.4, which lets the negative at 0.6 through -> specificity 0.75
    result = binary_metrics(
        y, s, operating_points={"sensitivity": [0.75, 1.0], "specificity": [1.0, 0.75]}, n_bootstrap=0
    )
    assert result["specificity_at_sensitivity_0.75"] == 1.0
    assert result["specificity_at_sensitivity_1"] == 0.75
    assert result["sensitivity_at_specificity_1"] == 0.75
    assert result["sensitivity_at_specificity_0.75"] == 1.0
    assert result["auroc_ci_low"] is None and "bootstrap_undefined" not in result
    assert choose_threshold(y, s, "sensitivity@1.0") == 0.4
    assert choose_threshold(y, s, "specificity@1.0") == 0.7
    assert choose_threshold(y, s, "youden") == 0.7  # J = 0.75 at 0.7 and at 0.4: the first (stricter) wins
    with pytest.raises(ValueError, match="unknown method"):
        choose_threshold(y, s, "f1")


def test_operating_point_keeps_collinear_roc_points():
    """Tied scores put ROC points on one line; sklearn's default drops them, yet they are reachable."""
    y = np.array([0, 1, 0, 1, 0, 1])
    s = np.array([0.2, 0.2, 0.5, 0.5, 0.8, 0.8])
    points = load_metric("operating_point").compute(references=y, prediction_scores=s, min_sensitivity=[0.3])
    assert points["specificity_at_sensitivity_0.3"] == pytest.approx(2 / 3)
    assert points["threshold_at_sensitivity_0.3"] == 0.8


def test_default_operating_points_are_the_dermatologists():
    assert DEFAULT_OPERATING_POINTS == {"sensitivity": [0.741], "specificity": [0.9]}
    y, s = _binary_data(300)
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    result = binary_metrics(y, s, n_bootstrap=0)
    assert result["specificity_at_sensitivity_0.741"] == pytest.approx((1 - fpr)[tpr >= 0.741].max())
    assert result["sensitivity_at_specificity_0.9"] == pytest.approx(tpr[(1 - fpr) >= 0.9].max())


def test_undefined_metrics_are_none_not_nan():
    y, s = _binary_data(100)
    result = binary_metrics(y, s * 0.4, threshold=0.5, n_bootstrap=40)  # nothing predicted positive
    assert result["ppv"] is None and result["ppv_ci_low"] is None
    assert result["bootstrap_undefined"]["ppv"] == 40
    assert result["sensitivity"] == 0.0
    single = binary_metrics(np.zeros(20, dtype=int), np.linspace(0, 1, 20), n_bootstrap=20)
    assert single["auroc"] is None and single["sensitivity"] is None and single["specificity"] is not None
    json.dumps(result, allow_nan=False)
    json.dumps(single, allow_nan=False)


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="0/1"):
        binary_metrics([1, 2, 1], [0.1, 0.2, 0.3], n_bootstrap=0)
    with pytest.raises(ValueError, match="probabilities"):
        binary_metrics([0, 1, 1], [-1.0, 0.2, 3.0], n_bootstrap=0)
    with pytest.raises(ValueError, match="operating_points"):
        binary_metrics([0, 1], [0.1, 0.9], operating_points={"sensitivty": [0.9]}, n_bootstrap=0)
    with pytest.raises(ValueError, match="class_names"):
        multiclass_metrics([0, 1, 2], np.full((3, 3), 1 / 3), ["a", "b"], n_bootstrap=0)


def test_multiclass_metrics_equal_sklearn():
    yk, probs = _multiclass_data(400)
    names = ["mel", "nv", "bcc", "bkl"]
    result = multiclass_metrics(yk, probs, names, n_bootstrap=60)
    pred = probs.argmax(1)
    assert result["auroc"] == pytest.approx(
        skm.roc_auc_score(yk, probs, multi_class="ovr", average="macro"), abs=1e-12
    )
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(yk, pred), abs=1e-12)
    assert result["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(yk, pred), abs=1e-12)
    for k, name in enumerate(names):
        assert result[f"auroc_{name}"] == pytest.approx(skm.roc_auc_score(yk == k, probs[:, k]), abs=1e-12)
        assert result[f"auroc_{name}_ci_low"] <= result[f"auroc_{name}"] <= result[f"auroc_{name}_ci_high"]
    confidence, correct = probs.max(1), (pred == yk)
    bins = np.clip(np.ceil(confidence * 15).astype(int) - 1, 0, 14)
    by_hand = sum(abs(confidence[bins == b].sum() - correct[bins == b].sum()) for b in range(15)) / len(yk)
    assert result["ece"] == pytest.approx(by_hand, abs=1e-12)
    assert result["n"] == 400
    json.dumps(result, allow_nan=False)


def test_regression_metrics_equal_sklearn():
    rng = np.random.default_rng(4)
    target = rng.normal(60, 10, size=300)
    guess = target + rng.normal(0, 5, size=300)
    result = regression_metrics(target, guess, n_bootstrap=100)
    assert result["mae"] == pytest.approx(skm.mean_absolute_error(target, guess), abs=1e-12)
    assert result["rmse"] == pytest.approx(skm.root_mean_squared_error(target, guess), abs=1e-12)
    assert result["r2"] == pytest.approx(skm.r2_score(target, guess), abs=1e-12)
    for key in ("mae", "rmse", "r2"):
        assert result[f"{key}_ci_low"] <= result[key] <= result[f"{key}_ci_high"]
    assert regression_metrics(target, guess, n_bootstrap=100) == result
    json.dumps(result, allow_nan=False)
