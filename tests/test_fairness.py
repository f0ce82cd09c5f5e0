"""Subgroup reports: values equal scikit-learn per group by hand; gaps, worst groups, warnings, JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from hf_medai.data.subgroups import AGE_BANDS, age_band
from hf_medai.evaluation import expected_calibration_error, subgroup_report, subgroup_table_markdown


def test_age_band_scalars_and_series():
    cases = {
        0: "<30",
        29.9: "<30",
        30: "30-44",
        44.99: "30-44",
        45: "45-59",
        59: "45-59",
        60: "60-74",
        74.9: "60-74",
        75: "75+",
        101: "75+",
    }
    assert {age: age_band(age) for age in cases} == cases
    assert age_band(None) is None and age_band(float("nan")) is None and age_band(np.nan) is None
    with pytest.raises(ValueError):
        age_band(-3)
    ages = pd.Series([80.0, None, 35, 12], index=[10, 11, 12, 13], name="age")
    bands = age_band(ages)
    assert list(bands.index) == [10, 11, 12, 13] and bands.name == "age"
    assert list(bands.cat.categories) == list(AGE_BANDS) and bands.cat.ordered
    assert bands.tolist()[0] == "75+" and pd.isna(bands.tolist()[1]) and bands.tolist()[2:] == ["30-44", "<30"]


@pytest.fixture(scope="module")
def binary_case():
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, n)
    score = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    sex = rng.choice(["female", "male"], n).astype(object)
    sex[40:60] = None  # 20 missing -> "unknown", a small group
    site = np.where(np.arange(n) < 40, "clinic_c", rng.choice(["clinic_a", "clinic_b"], n))
    y[:40][site[:40] == "clinic_c"] = 0  # clinic_c: negatives only
    score[:40] = np.clip(0.7 * rng.random(40), 0, 1)
    groups = pd.DataFrame(
        {"sex": sex, "site": site, "age": age_band(pd.Series(rng.uniform(20, 90, n))).array},
        index=np.arange(1000, 1000 + n),
    )  # a non-default index: alignment is by position
    return y, score, (score >= 0.5).astype(int), groups


def test_binary_report_equals_sklearn_per_group(binary_case):
    y, score, pred, groups = binary_case
    report = subgroup_report(y, score, pred, groups, min_group_size=30)
    json.dumps(report, allow_nan=False)
    sex = report["sex"]
    assert list(sex["groups"]) == ["female", "male", "unknown"]
    for group in ("female", "male", "unknown"):
        mask = groups["sex"].fillna("unknown").to_numpy() == group
        entry = sex["groups"][group]
        assert entry["n"] == mask.sum() and entry["n_positive"] == y[mask].sum()
        assert entry["auroc"] == pytest.approx(skm.roc_auc_score(y[mask], score[mask]), abs=1e-12)
        assert entry["sensitivity"] == pytest.approx(skm.recall_score(y[mask], pred[mask]), abs=1e-12)
        assert entry["specificity"] == pytest.approx(skm.recall_score(y[mask], pred[mask], pos_label=0), abs=1e-12)
        assert entry["ppv"] == pytest.approx(skm.precision_score(y[mask], pred[mask]), abs=1e-12)
        assert entry["npv"] == pytest.approx(skm.precision_score(y[mask], pred[mask], pos_label=0), abs=1e-12)
        assert entry["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y[mask], pred[mask]), abs=1e-12)
        assert entry["ece"] == pytest.approx(expected_calibration_error(y[mask], score[mask]), abs=1e-12)
    assert list(report["age"]["groups"]) == [b for b in AGE_BANDS if b in report["age"]["groups"]]  # age order


def test_worst_and_gap_over_groups_large_enough(binary_case):
    y, score, pred, groups = binary_case
    sex = subgroup_report(y, score, pred, groups, min_group_size=30)["sex"]
    assert sex["small_groups"] == ["unknown"]
    compared = {g: sex["groups"][g] for g in ("female", "male")}  # "unknown" (n=20) is left out
    for metric, higher_is_better in sex["higher_is_better"].items():
        values = {g: e[metric] for g, e in compared.items()}
        assert sex["largest_gap"][metric] == pytest.approx(max(values.values()) - min(values.values()), abs=1e-12)
        pick = min if higher_is_better else max
        assert sex["worst"][metric]["value"] == pick(values.values())
        assert sex["worst"][metric]["group"] == pick(values, key=values.get)
    assert sex["higher_is_better"]["ece"] is False
    assert any("sex=unknown: n=20 < min_group_size=30" in w for w in sex["warnings"])


def test_single_class_group_is_warned_with_none_metrics(binary_case):
    y, score, pred, groups = binary_case
    site = subgroup_report(y, score, pred, groups, min_group_size=30)["site"]
    clinic_c = site["groups"]["clinic_c"]
    assert clinic_c["n_positive"] == 0 and clinic_c["auroc"] is None and clinic_c["sensitivity"] is None
    assert clinic_c["specificity"] is not None
    assert any(w.startswith("site=clinic_c: only one class") and "auroc" in w for w in site["warnings"])
    assert site["worst"]["auroc"]["group"] in ("clinic_a", "clinic_b")  # undefined groups cannot be worst
    values = [site["groups"][g]["auroc"] for g in ("clinic_a", "clinic_b")]
    assert site["largest_gap"]["auroc"] == pytest.approx(max(values) - min(values), abs=1e-12)


def test_multiclass_and_regression_reports():
    rng = np.random.default_rng(1)
    n = 300
    y = rng.integers(0, 3, n)
    probs = rng.dirichlet([1, 1, 1], n)
    site = pd.DataFrame({"site": np.where(np.arange(n) < 100, "a", "b")})
    y[:100][y[:100] == 2] = 1  # site a lacks class 2: its macro AUROC is undefined
    report = subgroup_report(y, probs, probs.argmax(1), site, task="multiclass")
    json.dumps(report, allow_nan=False)
    b = np.arange(n) >= 100
    entry = report["site"]["groups"]["b"]
    assert entry["auroc"] == pytest.approx(skm.roc_auc_score(y[b], probs[b], multi_class="ovr"), abs=1e-12)
    assert entry["accuracy"] == pytest.approx(skm.accuracy_score(y[b], probs[b].argmax(1)), abs=1e-12)
    assert report["site"]["groups"]["a"]["auroc"] is None
    assert any("classes [2] absent" in w for w in report["site"]["warnings"])

    target = rng.normal(50, 10, n)
    guess = target + rng.normal(0, np.where(b, 8, 2))
    report = subgroup_report(target, None, guess, site, task="regression", metrics=["mae"])
    maes = {g: skm.mean_absolute_error(target[m], guess[m]) for g, m in (("a", ~b), ("b", b))}
    assert report["site"]["groups"]["b"]["mae"] == pytest.approx(maes["b"], abs=1e-12)
    assert report["site"]["worst"]["mae"]["group"] == "b"  # lower is better: the highest MAE is worst
    assert report["site"]["largest_gap"]["mae"] == pytest.approx(maes["b"] - maes["a"], abs=1e-12)


def test_markdown_table_and_argument_errors(binary_case):
    y, score, pred, groups = binary_case
    report = subgroup_report(y, score, pred, groups[["sex"]], min_group_size=30)
    text = subgroup_table_markdown(report)
    assert "#### sex" in text
    assert "| group | n | n_positive | auroc |" in text
    assert "| unknown * | 20 |" in text and "fewer than 30 examples" in text
    female = report["sex"]["groups"]["female"]
    assert (
        f"| female | {female['n']} | {female['n_positive']} | {female['auroc']:.3f} "
        f"({female['auroc_ci_low']:.3f}–{female['auroc_ci_high']:.3f}) |"
    ) in text
    gap, (low, high) = report["sex"]["largest_gap"]["auroc"], report["sex"]["largest_gap_ci"]["auroc"]
    assert f"auroc {gap:.3f} ({low:.3f}–{high:.3f})" in text
    with pytest.raises(ValueError, match="unknown binary metrics"):
        subgroup_report(y, score, pred, groups, metrics=["auroc", "f1"])
    with pytest.raises(ValueError, match="rows"):
        subgroup_report(y[:-1], score[:-1], pred[:-1], groups)


# --- intervals and the small-group rule (issue 13, item 6) ------------------------------------------------------


def _lesion_like(n: int, seed: int):
    """Melanoma vs rest with an age band that holds no melanoma at all, though the model calls some there."""
    rng = np.random.default_rng(seed)
    age = rng.choice(["<30", "45-59", "60-74"], n, p=[0.2, 0.4, 0.4]).astype(object)
    y = ((rng.random(n) < 0.3) & (age != "<30")).astype(int)
    score = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    return y, score, (score >= 0.45).astype(int), pd.DataFrame({"age_band": age})


def test_subgroup_intervals_contain_the_sklearn_value_narrow_with_data_and_repeat():
    y, score, pred, groups = _lesion_like(600, seed=0)
    report = subgroup_report(y, score, pred, groups, n_bootstrap=300, seed=3)
    json.dumps(report, allow_nan=False)
    band = report["age_band"]["groups"]["45-59"]
    rows = groups["age_band"].to_numpy() == "45-59"
    assert band["auroc"] == pytest.approx(skm.roc_auc_score(y[rows], score[rows]), abs=1e-12)
    assert band["sensitivity"] == pytest.approx(skm.recall_score(y[rows], pred[rows]), abs=1e-12)
    assert band["ppv"] == pytest.approx(skm.precision_score(y[rows], pred[rows]), abs=1e-12)
    for metric in ("auroc", "sensitivity", "specificity", "ppv", "npv", "balanced_accuracy", "ece"):
        assert band[f"{metric}_ci_low"] <= band[metric] <= band[f"{metric}_ci_high"], metric
    # the same seed repeats exactly; another seed moves the intervals, not the values
    assert subgroup_report(y, score, pred, groups, n_bootstrap=300, seed=3) == report
    other = subgroup_report(y, score, pred, groups, n_bootstrap=300, seed=4)["age_band"]["groups"]["45-59"]
    assert other["auroc"] == band["auroc"] and other["auroc_ci_low"] != band["auroc_ci_low"]
    # ten times the data: narrower intervals, for the group metrics and for the gap between groups
    big = subgroup_report(*_lesion_like(6000, seed=0), n_bootstrap=300, seed=3)["age_band"]
    for metric in ("auroc", "sensitivity", "specificity"):
        width = band[f"{metric}_ci_high"] - band[f"{metric}_ci_low"]
        assert big["groups"]["45-59"][f"{metric}_ci_high"] - big["groups"]["45-59"][f"{metric}_ci_low"] < width
    small_gap, big_gap = report["age_band"]["largest_gap_ci"]["auroc"], big["largest_gap_ci"]["auroc"]
    assert big_gap[1] - big_gap[0] < small_gap[1] - small_gap[0]
    # no resamples, no intervals
    plain = subgroup_report(y, score, pred, groups, n_bootstrap=0)["age_band"]
    assert plain["groups"]["45-59"]["auroc_ci_low"] is None and plain["largest_gap_ci"]["auroc"] is None
    assert plain["groups"]["45-59"]["auroc"] == band["auroc"]


def test_gap_interval_bootstraps_the_gap_itself():
    """Two groups, one scored well and one at chance: the gap's interval excludes 0 and holds the gap."""
    rng = np.random.default_rng(5)
    n = 800
    site = np.where(np.arange(n) < n // 2, "a", "b")
    y = rng.integers(0, 2, n)
    score = np.where(site == "a", np.clip(0.5 * y + 0.5 * rng.random(n), 0, 1), rng.random(n))
    site_report = subgroup_report(
        y, score, (score >= 0.5).astype(int), pd.DataFrame({"site": site}), metrics=["auroc"], n_bootstrap=400
    )["site"]
    values = {g: site_report["groups"][g]["auroc"] for g in ("a", "b")}
    low, high = site_report["largest_gap_ci"]["auroc"]
    assert site_report["largest_gap"]["auroc"] == pytest.approx(values["a"] - values["b"], abs=1e-12)
    assert 0 < low <= site_report["largest_gap"]["auroc"] <= high
    worst = site_report["worst"]["auroc"]
    assert worst["group"] == "b" and (worst["ci_low"], worst["ci_high"]) == (
        site_report["groups"]["b"]["auroc_ci_low"],
        site_report["groups"]["b"]["auroc_ci_high"],
    )


def test_age_band_without_melanoma_is_not_estimable_never_worst_ppv():
    """The issue's case: an age band of 120 images with 0 melanomas, where the model still calls some melanoma.
    Its PPV is trivially 0 and its sensitivity undefined: not estimable, never the worst group."""
    y, score, pred, groups = _lesion_like(600, seed=1)
    rows = groups["age_band"].to_numpy() == "<30"
    assert rows.sum() >= 30 and y[rows].sum() == 0 and pred[rows].sum() > 0  # the case as the issue describes it
    section = subgroup_report(y, score, pred, groups, n_bootstrap=100, class_names=["not_melanoma", "melanoma"])[
        "age_band"
    ]
    young = section["groups"]["<30"]
    assert young["n_positive"] == 0 and young["n_predicted_positive"] > 0
    for metric in ("ppv", "sensitivity", "auroc", "npv", "balanced_accuracy"):
        assert young[metric] is None and young[f"{metric}_ci_low"] is None, metric
        assert "0 melanoma" in young["not_estimable"][metric], metric
        assert section["worst"][metric]["group"] != "<30", metric
        assert "<30" not in section["compared"][metric]
    # what it can say: how often its negatives were called negative (and the calibration of its scores)
    assert young["specificity"] == pytest.approx(skm.recall_score(y[rows], pred[rows], pos_label=0), abs=1e-12)
    assert "<30" in section["compared"]["specificity"] and young["specificity_ci_low"] is not None
    assert any(
        w.startswith("age_band=<30:") and "not estimable: " in w and "0 melanoma" in w for w in section["warnings"]
    )
    text = subgroup_table_markdown({"age_band": section})
    assert "| <30 | " in text and "| n/e |" in text and "0 melanoma in <30 (auroc, sensitivity, ppv, npv" in text


def test_a_handful_of_positives_is_shown_but_not_compared():
    """n is large enough, but 4 positives cannot rank sensitivity: shown (with its wide interval), not compared."""
    rng = np.random.default_rng(2)
    n = 400
    site = np.where(np.arange(n) < 100, "rural", "city")
    y = (rng.random(n) < 0.4).astype(int)
    y[:100] = 0
    y[:4] = 1  # rural: 100 patients, 4 positives
    score = np.clip(0.4 * y + 0.6 * rng.random(n), 0, 1)
    pred = (score >= 0.5).astype(int)
    section = subgroup_report(y, score, pred, pd.DataFrame({"site": site}), n_bootstrap=100, min_class_count=10)[
        "site"
    ]
    rural = section["groups"]["rural"]
    assert rural["sensitivity"] == pytest.approx(skm.recall_score(y[:100], pred[:100]), abs=1e-12)
    assert rural["too_few"]["sensitivity"] == "4 positives < 10"
    assert section["compared"]["sensitivity"] == ["city"] and section["largest_gap"]["sensitivity"] is None
    assert "rural" in section["compared"]["specificity"]  # 96 negatives are plenty
    assert "†" in subgroup_table_markdown({"site": section})
