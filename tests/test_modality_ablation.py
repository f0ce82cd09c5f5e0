"""The metadata baseline (sklearn HistGradientBoosting), the modality ablation table and its card macro."""

from __future__ import annotations

import jinja2
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from hf_medai.evaluation.modality_ablation import missing_modality, modality_ablation, tabular_baseline

BINARY = ["rest", "mel"]


def _scores(y: np.ndarray, signal: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) probabilities whose positive score separates the classes by `signal` standard deviations."""
    s = 1 / (1 + np.exp(-(signal * y + rng.normal(0, 1, y.size))))
    return np.stack([1 - s, s], axis=1)


def _labels(n: int, rng: np.random.Generator, prevalence: float = 0.3) -> np.ndarray:
    return (rng.random(n) < prevalence).astype(int)


def test_aurocs_equal_sklearn_and_the_better_model_wins_with_a_ci_above_zero():
    rng = np.random.default_rng(0)
    yv, yt = _labels(300, rng), _labels(600, rng)
    val = {"image": _scores(yv, 1.5, rng), "metadata": _scores(yv, 0.8, rng), "fused": _scores(yv, 3.0, rng)}
    test = {"image": _scores(yt, 1.5, rng), "metadata": _scores(yt, 0.8, rng), "fused": _scores(yt, 3.0, rng)}
    a = modality_ablation(yv, val, yt, test, BINARY, n_bootstrap=300)
    rows = {r["model"]: r for r in a["rows"]}
    for name in test:
        assert rows[name]["test_auroc"] == pytest.approx(roc_auc_score(yt, test[name][:, 1]), abs=1e-12)
        assert rows[name]["val_auroc"] == pytest.approx(roc_auc_score(yv, val[name][:, 1]), abs=1e-12)
        assert rows[name]["test_auroc_ci_low"] <= rows[name]["test_auroc"] <= rows[name]["test_auroc_ci_high"]
    assert rows["fused"]["modalities"] == ["image", "metadata"] and rows["image"]["modalities"] == ["image"]
    assert rows["fused"]["fused_minus_model"] is None
    assert a["best_single"] == "image" and "validation" in a["best_single_chosen_on"]
    truth = roc_auc_score(yt, test["fused"][:, 1]) - roc_auc_score(yt, test["image"][:, 1])
    assert a["fused_minus_best_single"] == pytest.approx(truth, abs=1e-12)
    assert 0 < a["fused_minus_best_single_ci_low"] <= truth <= a["fused_minus_best_single_ci_high"]
    assert a["fused_gain"] == "above_zero"
    assert rows["metadata"]["fused_minus_model"] > rows["image"]["fused_minus_model"]


def test_best_single_is_chosen_on_validation_even_when_test_would_pick_the_other():
    rng = np.random.default_rng(1)
    yv, yt = _labels(300, rng), _labels(300, rng)
    val = {"image": _scores(yv, 2.0, rng), "metadata": _scores(yv, 0.5, rng), "fused": _scores(yv, 2.5, rng)}
    test = {"image": _scores(yt, 0.5, rng), "metadata": _scores(yt, 2.0, rng), "fused": _scores(yt, 2.5, rng)}
    a = modality_ablation(yv, val, yt, test, BINARY, n_bootstrap=0)
    rows = {r["model"]: r for r in a["rows"]}
    assert rows["metadata"]["test_auroc"] > rows["image"]["test_auroc"]  # test would choose metadata
    assert a["best_single"] == "image"
    assert a["fused_minus_best_single"] == pytest.approx(rows["fused"]["test_auroc"] - rows["image"]["test_auroc"])
    assert a["fused_gain"] == "unknown"  # no bootstrap, no interval


def test_paired_ci_contains_the_truth_and_straddles_zero_for_equal_models():
    """Two models of equal skill on a large population: the paired CI on a sample straddles 0; and it contains the
    population difference when one model is better."""
    rng = np.random.default_rng(2)
    big = _labels(200_000, rng)
    weak, strong = _scores(big, 1.0, rng), _scores(big, 1.4, rng)
    truth = roc_auc_score(big, strong[:, 1]) - roc_auc_score(big, weak[:, 1])
    yt, yv = _labels(800, rng), _labels(200, rng)
    val = {"a": _scores(yv, 1.0, rng), "b": _scores(yv, 1.0, rng), "fused": _scores(yv, 1.4, rng)}
    test = {"a": _scores(yt, 1.0, rng), "b": _scores(yt, 1.0, rng), "fused": _scores(yt, 1.4, rng)}
    a = modality_ablation(yv, val, yt, test, BINARY, n_bootstrap=500)
    assert a["fused_minus_best_single_ci_low"] <= truth <= a["fused_minus_best_single_ci_high"]
    same = modality_ablation(yv, val, yt, {**test, "fused": _scores(yt, 1.0, rng)}, BINARY, n_bootstrap=500)
    assert same["fused_minus_best_single_ci_low"] < 0 < same["fused_minus_best_single_ci_high"]
    assert same["fused_gain"] == "includes_zero"


def test_multiclass_ablation_and_explicit_modalities():
    rng = np.random.default_rng(3)
    names = ["nv", "mel", "bkl"]

    def probs(y, signal):
        logits = rng.normal(0, 1, (y.size, 3))
        logits[np.arange(y.size), y] += signal
        e = np.exp(logits)
        return e / e.sum(1, keepdims=True)

    yv, yt = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    val = {"img": probs(yv, 1.0), "meta": probs(yv, 0.5), "img+meta": probs(yv, 1.5)}
    test = {"img": probs(yt, 1.0), "meta": probs(yt, 0.5), "img+meta": probs(yt, 1.5)}
    modalities = {"img": ["image"], "meta": ["metadata"], "img+meta": ["image", "metadata"]}
    a = modality_ablation(yv, val, yt, test, names, fused="img+meta", modalities=modalities, n_bootstrap=100)
    rows = {r["model"]: r for r in a["rows"]}
    macro = roc_auc_score(yt, test["img"], multi_class="ovr", average="macro")
    assert rows["img"]["test_auroc"] == pytest.approx(macro, abs=1e-12)
    assert a["best_single"] == "img" and a["fused_gain"] == "above_zero"
    with pytest.raises(ValueError, match="modalities"):
        modality_ablation(yv, val, yt, test, names, fused="img+meta", modalities={"img": ["image"]})


def test_missing_modality_rows_compare_with_the_full_fused_model():
    rng = np.random.default_rng(4)
    yt = _labels(600, rng)
    full, without = _scores(yt, 3.0, rng), _scores(yt, 1.5, rng)
    name = "fused, metadata absent"
    (row,) = missing_modality(yt, full, {name: without}, BINARY, absent={name: ["metadata"]}, n_bootstrap=200)
    assert row["absent"] == ["metadata"]
    assert row["test_auroc"] == pytest.approx(roc_auc_score(yt, without[:, 1]), abs=1e-12)
    truth = roc_auc_score(yt, full[:, 1]) - roc_auc_score(yt, without[:, 1])
    assert row["fused_minus_model"] == pytest.approx(truth, abs=1e-12)
    assert row["fused_minus_model_ci_low"] > 0


# ---------------------------------------------------------------------------------------------------- baseline


def _metadata(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    age = rng.normal(55, 15, n)
    site = rng.choice(["back", "face", "lower extremity", "trunk"], n)
    sex = rng.choice(["male", "female"], n)
    logit = 0.08 * (age - 55) + np.where((site == "back") & (sex == "male"), 1.5, 0.0) - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({"age": age, "sex": sex, "localization": site})
    frame.loc[rng.random(n) < 0.05, "age"] = np.nan
    frame.loc[rng.random(n) < 0.05, "sex"] = None
    return frame, y


def test_tabular_baseline_learns_handles_missing_and_unseen_and_is_deterministic():
    rng = np.random.default_rng(5)
    train, y = _metadata(1500, rng)
    test, yt = _metadata(600, rng)
    test.loc[test.index[:20], "localization"] = "acral"  # never seen in training
    test.loc[test.index[20:40], "localization"] = np.nan
    cols = dict(categorical=["sex", "localization"], numeric=["age"])
    model, probs = tabular_baseline(train, y, {"test": test, "train": train}, **cols, seed=0)
    p = probs["test"]
    assert p.shape == (600, 2) and np.isfinite(p).all() and np.allclose(p.sum(1), 1)
    assert roc_auc_score(yt, p[:, 1]) > 0.7
    assert model.n_iter_ == model.max_iter  # no early stopping: validation and test never steer it
    _, again = tabular_baseline(train, y, {"test": test}, **cols, seed=0)
    assert np.array_equal(again["test"], p)
    assert (test["localization"] == "acral").sum() == 20  # the input frame is not modified
    as_missing = test.assign(localization=test["localization"].where(test["localization"] != "acral"))
    _, missing = tabular_baseline(train, y, {"test": as_missing}, **cols, seed=0)
    assert np.array_equal(missing["test"], p)  # an unseen category is treated as missing
    with pytest.raises(ValueError, match="not in the frame"):
        tabular_baseline(train, y, {"test": test.drop(columns="age")}, **cols)


def test_tabular_baseline_multiclass():
    rng = np.random.default_rng(6)
    train, _ = _metadata(900, rng)
    y = np.digitize(train["age"].fillna(55), [45, 65])  # 3 classes by age
    model, probs = tabular_baseline(train, y, {"train": train}, ["sex", "localization"], ["age"])
    assert probs["train"].shape == (900, 3)
    assert roc_auc_score(y, probs["train"], multi_class="ovr") > 0.9
    with pytest.raises(ValueError, match="every class"):
        tabular_baseline(train, np.where(y == 1, 2, y), {}, ["sex"], ["age"])


# ---------------------------------------------------------------------------------------------------- card macro


def _render(ablation: dict) -> str:
    from hf_medai.cards import TEMPLATES_DIR
    from hf_medai.reporting_text import fmt

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), undefined=jinja2.StrictUndefined)
    env.globals.update(fmt=fmt)
    template = env.from_string('{% import "_macros.md.j2" as c %}{{ c.ablation_section(a) }}')
    return template.render(a=ablation)


def _ablation(low: float, high: float, gain: str) -> dict:
    return {
        "metric": "auroc",
        "fused": "fused",
        "rows": [
            {
                "model": "image",
                "modalities": ["image"],
                "test_auroc": 0.85,
                "test_auroc_ci_low": 0.81,
                "test_auroc_ci_high": 0.89,
                "val_auroc": 0.86,
                "fused_minus_model": 0.04,
                "fused_minus_model_ci_low": low,
                "fused_minus_model_ci_high": high,
            },
            {
                "model": "metadata",
                "modalities": ["metadata"],
                "test_auroc": 0.78,
                "test_auroc_ci_low": 0.73,
                "test_auroc_ci_high": 0.83,
                "val_auroc": 0.77,
                "fused_minus_model": 0.11,
                "fused_minus_model_ci_low": 0.07,
                "fused_minus_model_ci_high": 0.15,
            },
            {
                "model": "fused",
                "modalities": ["image", "metadata"],
                "test_auroc": 0.89,
                "test_auroc_ci_low": 0.86,
                "test_auroc_ci_high": 0.92,
                "val_auroc": 0.9,
                "fused_minus_model": None,
                "fused_minus_model_ci_low": None,
                "fused_minus_model_ci_high": None,
            },
        ],
        "best_single": "image",
        "best_single_chosen_on": "validation AUROC (the test set never chooses it)",
        "best_single_val_auroc": 0.86,
        "fused_minus_best_single": 0.04,
        "fused_minus_best_single_ci_low": low,
        "fused_minus_best_single_ci_high": high,
        "fused_gain": gain,
        "n_val": 600,
        "n_test": 600,
        "n_bootstrap": 1000,
        "ci_level": 0.95,
    }


def test_ablation_macro_renders_the_table_and_an_honest_sentence():
    text = _render(_ablation(0.02, 0.06, "above_zero"))
    assert "| Model | Modalities | Test AUROC (95% CI) | Fused − model (paired 95% CI) |" in text
    assert "| image | image | 0.850 (0.810–0.890) | +0.040 (+0.020 to +0.060) |" in text
    assert "| fused | image + metadata | 0.890 (0.860–0.920) | — |" in text
    assert "best single modality is **image**, chosen on validation AUROC (0.860)" in text
    assert "interval lies above 0" in text and "better than the best single modality" in text

    doubtful = _render(_ablation(-0.01, 0.09, "includes_zero"))
    assert "includes 0" in doubtful and "does not show that fusion beats" in doubtful
    assert "better than the best" not in doubtful
    worse = _render(_ablation(-0.09, -0.01, "below_zero"))
    assert "lies below 0" in worse and "worse than the best single modality" in worse


def test_ablation_macro_renders_missing_modality_rows():
    a = _ablation(0.02, 0.06, "above_zero")
    a["missing_modality"] = [
        {
            "model": "fused, metadata absent",
            "absent": ["metadata"],
            "test_auroc": 0.84,
            "test_auroc_ci_low": 0.8,
            "test_auroc_ci_high": 0.88,
            "fused_minus_model": 0.05,
            "fused_minus_model_ci_low": 0.03,
            "fused_minus_model_ci_high": 0.07,
        }
    ]
    assert "| fused, metadata absent | metadata absent | 0.840 (0.800–0.880) | +0.050 (+0.030 to +0.070) |" in _render(
        a
    )
