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
    assert load_metric("ece", "multiclass").compute(references=[0, 1, 1], prediction_scores=probs, n_bins=10)[
        "ece"
    ] == pytest.approx(1 / 3)
    bins = load_metric("ece").compute(
        references=[0, 1, 1, 1], prediction_scores=[0.2, 0.2, 0.8, 0.8], n_bins=5, return_bins=True
    )
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
    curves = roc_pr_plot(
        y, p, tmp_path / "plots" / "roc_pr.png", reference_points={"dermatologists (mean)": (0.741, 0.600)}
    )
    assert curves.read_bytes().startswith(PNG_MAGIC) and curves.stat().st_size > 1000
    assert sorted(f.name for f in (tmp_path / "plots").iterdir()) == [
        "reliability.png",
        "reliability_multi.png",
        "roc_pr.png",
    ]  # no temp files left


# --- what a reader sees in the figures (issue 13, item 7) ---------------------------------------------------------


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures the plotting functions save, kept for inspection (the PNG is still written)."""
    from hf_medai.evaluation import calibration

    figures = []
    save = calibration._save_png

    def keep(fig, path):
        figures.append(fig)
        return save(fig, path)

    monkeypatch.setattr(calibration, "_save_png", keep)
    return figures


def _texts(fig) -> str:
    """Every piece of text on the figure: titles, axis labels, legend entries and titles, annotations."""
    parts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text") and callable(a.get_text))]
    return "\n".join(p for p in parts if p)


def test_reliability_diagram_draws_no_empty_bin_and_shows_counts_and_the_ece_interval(tmp_path, drawn):
    from matplotlib.patches import Rectangle

    # probabilities only in two of the ten bins: (0.1, 0.2] (40 cases) and (0.7, 0.8] (10 cases)
    probs = np.r_[np.full(40, 0.15), np.full(10, 0.75)]
    labels = np.r_[np.ones(6), np.zeros(34), np.ones(7), np.zeros(3)].astype(int)
    reliability_diagram(labels, probs, tmp_path / "r.png", n_bins=10, ece_ci=(0.021, 0.094), positive_class="melanoma")
    fig = drawn[-1]
    top = fig.axes[0]
    bars = [p for p in top.patches if isinstance(p, Rectangle) and p.get_width() > 0 and p.get_height() != 0]
    centres = sorted(round(b.get_x() + b.get_width() / 2, 3) for b in bars)
    assert centres == [0.15, 0.75]  # a bar only where there are cases: none for the 8 empty bins
    text = _texts(fig)
    assert "40" in [t.get_text() for t in top.texts] and "10" in [t.get_text() for t in top.texts]  # counts shown
    assert "95% CI 0.021–0.094" in text and "ECE = " in text
    assert "melanoma" in text and "class 1" not in text


def test_roc_pr_plot_names_the_class_marks_the_operating_point_and_draws_a_band(tmp_path, drawn):
    from matplotlib.collections import PolyCollection

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    s = np.clip(0.3 * y + 0.7 * rng.random(300), 0, 1)
    roc_pr_plot(
        y,
        s,
        tmp_path / "c.png",
        positive_class="melanoma",
        negative_class="not_melanoma",
        threshold=0.42,
        threshold_source="youden on validation",
        n_bootstrap=200,
    )
    fig = drawn[-1]
    roc_ax, pr_ax = fig.axes[:2]
    text = _texts(fig)
    assert "melanoma" in roc_ax.get_ylabel() and "melanoma" in pr_ax.get_xlabel() and "class 1" not in text
    call = s >= 0.42
    sens, spec, ppv = call[y == 1].mean(), (~call[y == 0]).mean(), y[call].mean()

    def marked(ax, x, y_):
        return any(
            len(line.get_xdata()) == 1 and np.isclose(line.get_xdata()[0], x) and np.isclose(line.get_ydata()[0], y_)
            for line in ax.get_lines()
        )

    assert marked(roc_ax, 1 - spec, sens) and marked(pr_ax, sens, ppv)  # the operating point on both curves
    assert "threshold 0.420" in text and "youden on validation" in text
    for ax in (roc_ax, pr_ax):  # a bootstrap band around each curve
        assert any(isinstance(c, PolyCollection) for c in ax.collections)
    assert "95% CI" in text
