"""What every predictive classifier kind shares: its CHAI key metrics, its subgroup (fairness) results and the
model-index keys. The kinds of image and note classifiers build on these."""

from __future__ import annotations

from hf_medai.kinds.base import Results
from hf_medai.reporting_text import BINARY_METRICS

# (metrics.json key, label) per CHAI key-metric group. Only keys present in metrics.json are written.
# Usefulness: the card's overall table up to its calibration rows, then the regression metrics.
USEFULNESS = (*BINARY_METRICS[: BINARY_METRICS.index(("ece", "ECE"))], ("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R2"))
SAFETY = (
    ("ece", "Expected calibration error"),
    ("brier", "Brier score"),
    ("specificity_at_sensitivity_0.741", "Specificity at sensitivity 0.741"),
    ("sensitivity_at_specificity_0.9", "Sensitivity at specificity 0.9"),
)
METRIC_KEYS = ("auroc", "auprc", "balanced_accuracy", "sensitivity", "specificity", "accuracy", "ece")


def subgroup_results(m: dict) -> Results:
    """Per subgroup column and metric: the worst group, the largest gap and every group, with their intervals."""
    rows = []
    for column, sec in (m.get("subgroups") or {}).items():
        if not isinstance(sec, dict) or "groups" not in sec:
            continue
        for metric in ("auroc", "sensitivity", "specificity", "mae"):
            worst = (sec.get("worst") or {}).get(metric)
            if not worst:
                continue
            rows.append(
                (
                    f"{metric} by {column}: worst group and largest gap",
                    {
                        "metric": metric,
                        "subgroup_column": column,
                        "worst_group": worst.get("group"),
                        "worst_value": worst.get("value"),
                        "worst_ci": [worst.get("ci_low"), worst.get("ci_high")],
                        "largest_gap": (sec.get("largest_gap") or {}).get(metric),
                        "largest_gap_ci": (sec.get("largest_gap_ci") or {}).get(metric),
                        "ci_level": sec.get("ci_level"),
                        "groups": {
                            g: {
                                "n": v.get("n"),
                                metric: v.get(metric),
                                "ci": [v.get(f"{metric}_ci_low"), v.get(f"{metric}_ci_high")],
                                **(
                                    {"not_estimable": v["not_estimable"][metric]}
                                    if metric in (v.get("not_estimable") or {})
                                    else {}
                                ),
                            }
                            for g, v in sec["groups"].items()
                        },
                        "small_groups": sec.get("small_groups", []),
                        "min_group_size": sec.get("min_group_size"),
                        "min_class_count": sec.get("min_class_count"),
                    },
                )
            )
    return rows
