"""Subgroup reports: values equal scikit-learn per group by hand; gaps, worst groups, warnings, JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from hf_medai.evaluation import (
    AGE_BANDS,
    age_band,
    expected_calibration_error,
    subgroup_report,
    subgroup_table_markdown,
)


def test_age_band_scalars_and_series():
    cases = {0: "<30", 29.9: "<30", 30: "30-44", 44.99: "30-44", 45: "45-59", 59: "45-59", 60: "60-74",
             74.9: "60-74", 75: "75+", 101: "75+"}
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
    groups = pd.DataFrame({"sex": sex, "site": site, "age": age_band(pd.Series(rng.uniform(20, 90, n))).array},
                          index=np.arange(1000, 1000 + n))  # a non-default index: alignment is by position
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
    assert f"| female | {female['n']} | {female['n_positive']} | {female['auroc']:.3f} |" in text
    with pytest.raises(ValueError, match="unknown binary metrics"):
        subgroup_report(y, score, pred, groups, metrics=["auroc", "f1"])
    with pytest.raises(ValueError, match="rows"):
        subgroup_report(y[:-1], score[:-1], pred[:-1], groups)
