"""Calibration: ECE on hand-made cases, temperature scaling, and the figures."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss

from hf_medai.evaluation import (
    TemperatureScaler,
    expected_calibration_error,
    load_metric,
    reliability_diagram,
    roc_pr_plot,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def test_ece_is_zero_when_frequencies_match_probabilities():
    # 10 cases at 0.3 with 3 positives, 10 at 0.8 with 8 positives: perfectly calibrated
    probs = np.r_[np.full(10, 0.3), np.full(10, 0.8)]
    labels = np.r_[np.ones(3), np.zeros(7), np.ones(8), np.zeros(2)].astype(int)
    assert expected_calibration_error(labels, probs) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    p = rng.random(100_000)
    assert expected_calibration_error((rng.random(p.size) < p).astype(int), p) < 0.01


def test_ece_known_values_by_hand():
    # 5 bins. (0, 0.2]: confidence 0.2, frequency 1/2 -> 2/4 * 0.3; (0.6, 0.8]: 0.8 vs 1 -> 2/4 * 0.2
    assert expected_calibration_error([0, 1, 1, 1], [0.2, 0.2, 0.8, 0.8], n_bins=5) == pytest.approx(0.25)
    # multiclass top-label, 10 bins: 0.9 right (gap 0.1), 0.6 wrong (gap 0.6), 0.7 right (gap 0.3)
    probs = [[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]]
    assert expected_calibration_error([0, 1, 1], probs, n_bins=10) == pytest.approx(1 / 3)
    assert load_metric("ece", "multiclass").compute(references=[0, 1, 1], prediction_scores=probs,
                                                    n_bins=10)["ece"] == pytest.approx(1 / 3)
    bins = load_metric("ece").compute(references=[0, 1, 1, 1], prediction_scores=[0.2, 0.2, 0.8, 0.8], n_bins=5,
                                      return_bins=True)
    assert bins["bin_count"] == [2, 0, 0, 2, 0]
    assert bins["bin_frequency"][0] == 0.5 and bins["bin_frequency"][3] == 1.0
    with pytest.raises(ValueError, match="probabilities"):
        expected_calibration_error([0, 1], [0.5, 1.5])


def test_temperature_scaling_recovers_a_planted_temperature_and_lowers_nll():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(scale=1.5, size=(4000, 4))
    labels = np.array([rng.choice(4, p=p) for p in _softmax(true_logits)])
    overconfident = 3.0 * true_logits  # what a calibrated model's logits look like at temperature 1/3
    scaler = TemperatureScaler().fit(overconfident, labels)
    assert scaler.temperature == pytest.approx(3.0, rel=0.15)
    before = log_loss(labels, _softmax(overconfident), labels=range(4))
    after = log_loss(labels, scaler.transform(overconfident), labels=range(4))
    assert after < before
    assert (scaler.transform(overconfident).argmax(1) == overconfident.argmax(1)).all()  # ranking unchanged


def test_temperature_scaling_binary_logits():
    rng = np.random.default_rng(1)
    logit = rng.normal(scale=2.0, size=3000)
    labels = (rng.random(logit.size) < 1 / (1 + np.exp(-logit))).astype(int)
    scaler = TemperatureScaler().fit(2.0 * logit, labels)
    assert scaler.temperature == pytest.approx(2.0, rel=0.15)
    probs = scaler.transform(2.0 * logit)
    assert probs.shape == (3000,) and log_loss(labels, probs) < log_loss(labels, 1 / (1 + np.exp(-2.0 * logit)))
    with pytest.raises(RuntimeError, match="before fit"):
        TemperatureScaler().transform(logit)


def test_figures_are_written_atomically(tmp_path):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + 0.7 * rng.random(200), 0, 1)
    path = reliability_diagram(y, p, tmp_path / "plots" / "reliability.png", n_bins=10, title="Test")
    assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 1000
    probs = _softmax(rng.normal(size=(200, 3)))
    multi = reliability_diagram(rng.integers(0, 3, 200), probs, tmp_path / "plots" / "reliability_multi.png")
    assert multi.read_bytes().startswith(PNG_MAGIC)
    curves = roc_pr_plot(y, p, tmp_path / "plots" / "roc_pr.png",
                         reference_points={"dermatologists (mean)": (0.741, 0.600)})
    assert curves.read_bytes().startswith(PNG_MAGIC) and curves.stat().st_size > 1000
    assert sorted(f.name for f in (tmp_path / "plots").iterdir()) == ["reliability.png", "reliability_multi.png",
                                                                      "roc_pr.png"]  # no temp files left
