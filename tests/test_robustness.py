"""The audits' shared arithmetic (hf_medai.evaluation.robustness) and the card section it feeds."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from hf_medai.evaluation.robustness import audit_section, is_material, paired_shift, verdict


def _pair(n=400, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p0 = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.15, n), 0, 1)
    p1 = np.clip(p0 + shift + rng.normal(0, 0.01, n), 0, 1)
    return y, p0, p1


def test_paired_shift_equals_a_direct_recomputation():
    y, p0, p1 = _pair(shift=0.1)
    s = paired_shift(p0, p1, y, threshold=0.55, n_bootstrap=500, seed=1)
    change = p1 - p0
    assert s["n"] == len(y)
    assert s["mean_change"] == pytest.approx(change.mean())
    assert s["mean_abs_change"] == pytest.approx(np.abs(change).mean())
    d0, d1 = p0 >= 0.55, p1 >= 0.55
    assert s["flipped"] == pytest.approx(np.mean(d0 != d1))
    assert s["flipped_up"] == pytest.approx(np.mean(~d0 & d1))
    assert s["flipped_down"] == pytest.approx(np.mean(d0 & ~d1))
    assert s["metric_before"] == pytest.approx(roc_auc_score(y, p0))
    assert s["metric_after"] == pytest.approx(roc_auc_score(y, p1))
    lo, hi = s["mean_change_ci"]
    assert lo < change.mean() < hi and hi - lo < 0.01  # a paired interval of a near-constant shift is narrow


def test_multiclass_reads_the_true_class_and_the_argmax():
    rng = np.random.default_rng(0)
    p0 = rng.dirichlet(np.ones(3), 200)
    p1 = rng.dirichlet(np.ones(3), 200)
    y = rng.integers(0, 3, 200)
    s = paired_shift(p0, p1, y, n_bootstrap=0)
    idx = np.arange(200)
    assert s["mean_change"] == pytest.approx(np.mean(p1[idx, y] - p0[idx, y]))
    assert s["flipped"] == pytest.approx(np.mean(p0.argmax(1) != p1.argmax(1)))
    assert s["metric"] == "accuracy" and s["metric_after"] == pytest.approx(np.mean(p1.argmax(1) == y))
    assert s["mean_change_ci"] == [None, None]


def test_material_only_when_the_interval_clears_the_margin_or_decisions_flip():
    y, p0, p1 = _pair(shift=0.12)
    big = paired_shift(p0, p1, y, threshold=0.5, n_bootstrap=300)
    assert is_material(big)
    assert "raises melanoma probability by 0.1" in verdict("Adding ink markings", big, "melanoma probability")
    assert verdict("ink markings", big, "melanoma probability").endswith("a material shift.")
    y, p0, p1 = _pair(shift=0.0)
    none = paired_shift(p0, p1, y, threshold=0.5, n_bootstrap=300)
    assert not is_material(none)
    assert verdict("blur", none, "melanoma probability").endswith("no material shift.")


def test_audit_section_names_the_material_rows():
    y, p0, p1 = _pair(shift=0.12)
    rows = {"ink": paired_shift(p0, p1, y, n_bootstrap=100), "none": paired_shift(p0, p0, y, n_bootstrap=100)}
    sec = audit_section("Image artefacts", "what", rows, {"ink": "ink", "none": "nothing"}, "melanoma probability")
    assert sec["material"] == ["ink"]
    assert set(sec["verdicts"]) == {"ink", "none"}
    assert sec["rows"]["none"]["mean_change"] == 0.0 and sec["rows"]["none"]["flipped"] == 0.0


def test_paired_shift_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="one shape"):
        paired_shift(np.zeros(3), np.zeros(4))
