"""Expected calibration error (ECE) with equal-width bins. scikit-learn has no ECE, so this is numpy.

Definition (Naeini et al. 2015; Guo et al. 2017): split [0, 1] into `n_bins` equal-width bins
(0, 1/M], (1/M, 2/M], ..., with 0 put in the first bin; then

    ECE = sum over bins b of (n_b / n) * |mean confidence in b - observed frequency in b|.

- Binary (1-D `prediction_scores`, the probability of class 1): confidence is that probability and
  the observed frequency is the fraction of label 1, i.e. calibration of the positive-class risk.
- Multiclass (config "multiclass": one probability per class per example): top-label ECE; confidence
  is the highest probability and the observed frequency is the accuracy of the arg-max prediction.

`ece(...)` is the single definition: `_compute` calls it, and so does hf_medai's bootstrap, which
passes `references` of shape (B, n), one resample per row, to score B resamples in one call.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Expected calibration error: the bin-size-weighted mean gap between predicted confidence
and observed frequency over equal-width probability bins (lower is better; 0 = perfectly calibrated)."""

_KWARGS_DESCRIPTION = """
Args:
    references: true labels; binary 0/1, or multiclass class indices 0..K-1.
    prediction_scores: binary: probability of class 1; multiclass: K class probabilities per example.
    n_bins: number of equal-width bins on [0, 1] (default 15).
    return_bins: also return per-bin edges, counts, mean confidence and observed frequency.
Returns:
    ece: float (NaN for no examples); with return_bins, bin_edges, bin_count, bin_confidence, bin_frequency.
"""

_CITATION = """@inproceedings{guo2017calibration, title={On Calibration of Modern Neural Networks},
author={Guo, Chuan and Pleiss, Geoff and Sun, Yu and Weinberger, Kilian Q.}, booktitle={ICML}, year={2017}}"""


def ece(references, prediction_scores, n_bins=15, return_bins=False):
    """ECE of one evaluation (1-D `references`) or of each row of a (B, n) batch of resamples."""
    y = np.asarray(references)
    s = np.asarray(prediction_scores, dtype=np.float64)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if s.size and (np.nanmin(s) < 0 or np.nanmax(s) > 1 or np.isnan(s).any()):
        raise ValueError("prediction_scores must be probabilities in [0, 1]")
    single = y.ndim == 1
    y2 = y[None] if single else y
    s2 = s[None] if single else s
    if s2.ndim == y2.ndim + 1:  # multiclass: top-label confidence and correctness of the arg-max
        confidence = s2.max(axis=-1)
        observed = (s2.argmax(axis=-1) == y2).astype(np.float64)
    else:
        confidence = s2
        observed = (y2 == 1).astype(np.float64)
    n_rows, n = confidence.shape
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.digitize(confidence, edges[1:-1], right=True)  # right-closed bins, 0 falls in the first
    # One bincount over (row, bin) keys gives every row's per-bin sums without a Python loop
    keys = (bins + n_bins * np.arange(n_rows)[:, None]).ravel()
    size = n_rows * n_bins
    count = np.bincount(keys, minlength=size).reshape(n_rows, n_bins)
    conf_sum = np.bincount(keys, weights=confidence.ravel(), minlength=size).reshape(n_rows, n_bins)
    obs_sum = np.bincount(keys, weights=observed.ravel(), minlength=size).reshape(n_rows, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        # sum_b (n_b/n)|conf_b/n_b - obs_b/n_b| = sum_b |conf_sum_b - obs_sum_b| / n
        values = np.abs(conf_sum - obs_sum).sum(axis=1) / n if n else np.full(n_rows, np.nan)
    if not single:
        return values
    value = float(values[0])
    if not return_bins:
        return value
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "ece": value,
            "bin_edges": edges.tolist(),
            "bin_count": count[0].tolist(),
            "bin_confidence": (conf_sum[0] / count[0]).tolist(),  # NaN for empty bins
            "bin_frequency": (obs_sum[0] / count[0]).tolist(),
        }


class ExpectedCalibrationError(evaluate.Metric):
    def _info(self):
        multiclass = self.config_name == "multiclass"
        scores = datasets.Sequence(datasets.Value("float64")) if multiclass else datasets.Value("float64")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"prediction_scores": scores, "references": datasets.Value("int32")}),
            reference_urls=["https://arxiv.org/abs/1706.04599"],
        )

    def _compute(self, references, prediction_scores, n_bins=15, return_bins=False):
        result = ece(references, prediction_scores, n_bins=n_bins, return_bins=return_bins)
        return result if isinstance(result, dict) else {"ece": result}
