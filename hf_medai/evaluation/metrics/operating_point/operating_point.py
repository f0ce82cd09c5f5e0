"""Operating points on the ROC curve, read from scikit-learn's `roc_curve`.

For a target sensitivity t: the best specificity among thresholds whose sensitivity is >= t (and the
threshold). For a target specificity t: the best sensitivity among thresholds with specificity >= t.
Label 1 is the positive class; a threshold T means "predict positive when score >= T", sklearn's
convention. The curve keeps every threshold (`drop_intermediate=False`): sklearn's default drops
collinear points, and with tied scores the best feasible point can be one of them.

Example: the mean sensitivity of 157 dermatologists on dermoscopic melanoma images was 0.741
(Brinker et al., Eur J Cancer 2019;113:47-54): `min_sensitivity=[0.741]` gives the model's
specificity at dermatologist-level sensitivity.

`operating_point(...)` is the single definition: `_compute` calls it, and so does hf_medai's
bootstrap, which passes `references` of shape (B, n), one resample per row.
"""

import warnings

import datasets
import evaluate
import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_curve

_DESCRIPTION = """Specificity at a minimum sensitivity and sensitivity at a minimum specificity, read off the
ROC curve (every threshold kept), with the thresholds that reach them."""

_KWARGS_DESCRIPTION = """
Args:
    references: true binary labels 0/1.
    prediction_scores: score of class 1 per example.
    min_sensitivity: target sensitivities (a float or a list).
    min_specificity: target specificities (a float or a list).
Returns:
    for each target t: "specificity_at_sensitivity_{t:g}" and "threshold_at_sensitivity_{t:g}",
    or "sensitivity_at_specificity_{t:g}" and "threshold_at_specificity_{t:g}"; NaN if undefined.
"""

_CITATION = """@article{brinker2019, title={Deep learning outperformed 136 of 157 dermatologists in a
head-to-head dermoscopic melanoma image classification task}, author={Brinker, Titus J. and others},
journal={European Journal of Cancer}, volume={113}, pages={47--54}, year={2019}}"""

# sensitivity and specificity are ratios of counts: allow float rounding when comparing to a target
_TOLERANCE = 1e-12


def operating_point(references, prediction_scores, min_sensitivity=(), min_specificity=()):
    """Operating points of one evaluation (1-D), or of each row of a (B, n) batch (arrays of B)."""
    y = np.asarray(references)
    s = np.asarray(prediction_scores, dtype=np.float64)
    sens_targets = [float(t) for t in np.atleast_1d(min_sensitivity)]
    spec_targets = [float(t) for t in np.atleast_1d(min_specificity)]
    for t in sens_targets + spec_targets:
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"operating-point targets must lie in [0, 1], got {t}")
    if y.ndim == 1:
        return _one(y, s, sens_targets, spec_targets)
    rows = [_one(yb, sb, sens_targets, spec_targets) for yb, sb in zip(y, s)]
    return {key: np.array([row[key] for row in rows]) for key in rows[0]} if rows else {}


def _one(y, s, sens_targets, spec_targets):
    out = {}
    if not ((y == 1).any() and (y != 1).any()):  # one class only: no ROC curve
        for t in sens_targets:
            out[f"specificity_at_sensitivity_{t:g}"] = out[f"threshold_at_sensitivity_{t:g}"] = float("nan")
        for t in spec_targets:
            out[f"sensitivity_at_specificity_{t:g}"] = out[f"threshold_at_specificity_{t:g}"] = float("nan")
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, thresholds = roc_curve(y, s, pos_label=1, drop_intermediate=False)
    # sklearn's first threshold is +inf ("predict nothing positive"): keep it finite for JSON
    thresholds[0] = np.nextafter(thresholds[1], np.inf)
    spec = 1.0 - fpr
    for t in sens_targets:
        ok = np.flatnonzero(tpr >= t - _TOLERANCE)  # never empty: the last point has sensitivity 1
        best = ok[spec[ok] == spec[ok].max()][-1]  # among equal specificities, the most sensitive
        out[f"specificity_at_sensitivity_{t:g}"] = float(spec[best])
        out[f"threshold_at_sensitivity_{t:g}"] = float(thresholds[best])
    for t in spec_targets:
        ok = np.flatnonzero(spec >= t - _TOLERANCE)  # never empty: the first point has specificity 1
        best = ok[tpr[ok] == tpr[ok].max()][0]  # among equal sensitivities, the most specific
        out[f"sensitivity_at_specificity_{t:g}"] = float(tpr[best])
        out[f"threshold_at_specificity_{t:g}"] = float(thresholds[best])
    return out


class OperatingPoint(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"prediction_scores": datasets.Value("float64"), "references": datasets.Value("int32")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.roc_curve.html"],
        )

    def _compute(self, references, prediction_scores, min_sensitivity=(), min_specificity=()):
        return operating_point(references, prediction_scores, min_sensitivity, min_specificity)
