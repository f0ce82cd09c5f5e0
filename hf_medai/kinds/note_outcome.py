"""Models of an outcome from clinical notes (recipes/clinical_outcomes.py): classifiers (mortality, readmission,
length-of-stay bins, comorbidity) and a length-of-stay regressor."""

from __future__ import annotations

from pathlib import Path

from hf_medai.kinds import classifier
from hf_medai.kinds.base import ChaiFacts, Kind
from hf_medai.reporting_text import (
    BINARY_METRICS,
    DEPLOYER,
    MULTICLASS_METRICS,
    TRAINING_SETTINGS,
    counts_text,
    fmt,
    model_config,
    operating_points,
)

REGRESSION_METRICS = [("mae", "MAE (days)"), ("rmse", "RMSE (days)"), ("r2", "R²")]
OUTCOME_LABELS = {
    "mortality": ("in-hospital mortality", "binary classifier"),
    "readmission": ("30-day unplanned readmission", "binary classifier, predicted at discharge"),
    "los": ("length of stay", "classifier of length-of-stay bins"),
    "los_days": ("length of stay in days", "regression"),
    "comorbidity": ("the Charlson comorbidity group", "classifier of Charlson index bins"),
}
TEXT_SETTINGS = [
    "model_name_or_path",
    "max_length",
    "long_notes",
    "pooling",
    "stride",
    "head_tokens",
    "max_chunks",
    "note_sections",
    "class_balance",
    "temperature_scaling",
    *TRAINING_SETTINGS,
    "train_sampling_strategy",
    "metric_for_best_model",
    "seed",
    "bf16",
]


def note_outcome_context(m: dict, config: dict, run_dir: Path) -> dict:
    """Template variables of clinical-note classifiers and regressors (recipes/clinical_outcomes.py)."""
    model = model_config(run_dir)
    regression = m.get("class_names") is None
    binary = m.get("positive_class") is not None
    outcome = m.get("outcome", "")
    outcome_label, kind_label = OUTCOME_LABELS.get(outcome, (outcome, "classifier"))
    window = model.get("hf_medai_note_windows") or {"strategy": "head", "pooling": "mean"}
    max_length = window.get("max_length", config.get("max_length", "?"))
    window_text = {
        "head": f"the first {max_length} tokens of each note",
        "head_tail": f"the first {window.get('head_tokens') or 'quarter of the'} and last tokens of each note "
        f"({max_length} in all)",
        "chunks": f"every {max_length}-token chunk of each note (stride {window.get('stride', 0)}), chunk logits "
        f"pooled by {window.get('pooling')}",
    }.get(window.get("strategy"), "?")
    report = m.get("data_report", {})
    sections = (report.get("note_sections") or {}).get("used", "full")
    splits = report.get("splits", {})
    split_how = (
        "by patient (no patient in two splits), stratified by the label"
        if splits.get("how") == "patient"
        else f"temporal: test years {splits.get('test_years')}, validation years {splits.get('validation_years')}"
    )
    leakage = [
        f"Note text: {sections} sections ({(report.get('note_sections') or {}).get('why', '')}).",
        "Splits are by patient: no patient's admissions are in two splits.",
        "Addenda, written after the summary, are dropped.",
        "The decision threshold, the temperature and the baseline's regularisation are chosen on validation, never "
        "on test.",
    ]
    if outcome == "readmission":
        leakage.append(
            "Admissions ending in in-hospital death are excluded (their summary states how the stay ended)."
        )
    overlap = report.get("pretraining_overlap")
    if overlap:
        leakage.append(
            "The encoder was pretrained by clinical_pretraining: "
            + (
                f"{overlap.get('overlap', 0)} validation/test patients' notes were in its pretraining data."
                if overlap.get("checked")
                else overlap.get("why", "")
            )
        )
    label_limits = {
        "mortality": "In-hospital death only: deaths after discharge (e.g. to hospice) count as survival.",
        "readmission": "Readmissions to other hospitals are invisible in a single-centre database and count as "
        "negatives; planned (elective) readmissions do not count.",
        "los": "Length of stay reflects discharge practice and bed availability as much as illness.",
        "los_days": "Length of stay reflects discharge practice and bed availability as much as illness; long stays "
        "are rare and poorly predicted.",
        "comorbidity": "Charlson groups come from billing codes, which under-code some conditions.",
    }.get(outcome, "")
    phi = report.get("phi") or {}
    phi_text = (
        f"The notes were screened for identifiers left in the text (policy `{phi.get('policy')}`): "
        f"{phi.get('texts_flagged', 0)} of {phi.get('texts_scanned', 0)} notes flagged"
        f"{' and redacted' if phi.get('redacted') else ''}. A language model can memorise rare strings of "
        "its training notes: do not share weights trained on real notes outside the data use agreement."
    )
    base = m.get("baseline_tfidf")
    verdict = ""
    if base and base.get("difference"):
        d = base["difference"]
        lo, hi = d.get("difference_ci_low"), d.get("difference_ci_high")
        better = d["difference"] < 0 if d["metric"] == "mae" else d["difference"] > 0
        if lo is not None and (lo > 0 or hi < 0):
            verdict = f"The {'transformer' if better else 'TF-IDF baseline'} is better: the interval excludes zero."
        else:
            verdict = (
                "The interval includes zero: on this test set the two cannot be told apart, and the simpler "
                "baseline deserves consideration."
            )
    worst = (m.get("subgroups") or {}).items()
    worst_auroc = "; ".join(
        f"{col}={sec['worst']['auroc']['group']} {fmt(sec['worst']['auroc']['value'])}"
        for col, sec in worst
        if (sec.get("worst") or {}).get("auroc", {}).get("group")
    )
    return dict(
        architecture=(model.get("architectures") or ["?"])[0],
        outcome_label=outcome_label,
        kind_label=kind_label,
        regression=regression,
        metric_labels=REGRESSION_METRICS if regression else BINARY_METRICS if binary else MULTICLASS_METRICS,
        operating_points=operating_points(m),
        window=window,
        window_text=window_text,
        max_length=max_length,
        sections_used=sections,
        pop=m.get("population") or {},
        counts=counts_text,
        split_how=split_how,
        baseline=base,
        baseline_verdict=verdict,
        worst_auroc=worst_auroc,
        leakage=leakage,
        label_limits=label_limits,
        phi_text=phi_text,
        settings=[(k, config[k]) for k in TEXT_SETTINGS if k in config],
        model_path=str(run_dir),
    )


KIND = Kind(
    name="note_outcome",
    task="text-classification",
    template="text_classifier.md",
    context=note_outcome_context,
    chai=ChaiFacts(
        outputs="A probability of the outcome (or a predicted value for regression) for one hospital admission, "
        "from its clinical note.",
        io="Input: the text of a clinical note (sections as stated in the Hub card). Output: class probabilities "
        "(or a number of days for regression).",
        population="Adult hospital admissions with clinical notes, as in the development data (see "
        "DevelopmentDataCharacterization); other hospitals, note styles and periods are untested.",
        risk="Research use only; a prognostic model of this kind could change care if deployed, so it would need "
        "local validation, monitoring and regulatory review. Not a medical device.",
        usefulness=classifier.USEFULNESS,
        safety=classifier.SAFETY,
        fairness=classifier.subgroup_results,
    ),
    tripod={
        6: "Training data (population, cohort filters); clinical setting: " + DEPLOYER.lower(),
        8: "First paragraph (outcome); Bias, risks and limitations (label limits)",
        9: "Model details (note sections and token window)",
        13: "Calibration; Training details (class_balance)",
        15: "Evaluation (decision threshold chosen on validation); How to use",
    },
    metric_keys=classifier.METRIC_KEYS + ("mae", "rmse"),
    audit=("hf_medai.audits.notes", "audit_note_outcome"),
    demo=("hf_medai.demos.clinical", "ClinicalDemo"),
)
