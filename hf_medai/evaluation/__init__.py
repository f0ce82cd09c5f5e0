"""Evaluation shared by every recipe: metrics (as `evaluate` modules over scikit-learn) with bootstrap
intervals, calibration, and subgroup (fairness) reports built on fairlearn's MetricFrame."""

from hf_medai.evaluation.calibration import (
    TemperatureScaler,
    expected_calibration_error,
    reliability_diagram,
    roc_pr_plot,
)
from hf_medai.evaluation.classification import (
    DEFAULT_OPERATING_POINTS,
    DERMATOLOGIST_SENSITIVITY,
    binary_metrics,
    choose_threshold,
    multiclass_metrics,
    paired_difference,
    regression_metrics,
)
from hf_medai.evaluation.fairness import subgroup_report
from hf_medai.evaluation.metrics import METRIC_NAMES, load_metric, metric_function
from hf_medai.evaluation.subgroup_metrics import DEFAULT_SUBGROUP_METRICS
from hf_medai.evaluation.subgroup_table import subgroup_table_markdown

__all__ = [
    "DEFAULT_OPERATING_POINTS",
    "DEFAULT_SUBGROUP_METRICS",
    "DERMATOLOGIST_SENSITIVITY",
    "METRIC_NAMES",
    "TemperatureScaler",
    "binary_metrics",
    "choose_threshold",
    "expected_calibration_error",
    "load_metric",
    "metric_function",
    "multiclass_metrics",
    "paired_difference",
    "regression_metrics",
    "reliability_diagram",
    "roc_pr_plot",
    "subgroup_report",
    "subgroup_table_markdown",
]
