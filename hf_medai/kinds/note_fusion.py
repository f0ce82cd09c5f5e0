"""Outcome models that fuse an admission's clinical note with its structured EHR data (labs, vitals and
demographics of the first hours; recipes/clinical_fusion.py): the note outcome model's CHAI facts and TRIPOD cells,
plus what is fused and how, the prediction time, the modality ablation and the scores when the note or the
structured data is absent. The demo takes a note and the structured fields."""

from __future__ import annotations

from pathlib import Path

from hf_medai.kinds import classifier, note_outcome
from hf_medai.kinds.base import ChaiFacts, Kind
from hf_medai.kinds.fusion import fusion_context
from hf_medai.reporting_text import counts_text, first_upper

WINDOW_HOURS = 24  # the recipe's default prediction time: admission + 24 h


def note_fusion_context(m: dict, config: dict, run_dir: Path) -> dict:
    """The fusion's variables, the outcome and the prediction time (admission + window)."""
    report = m.get("data_report") or {}
    outcome = m.get("outcome") or ""
    outcome_label, _ = note_outcome.OUTCOME_LABELS.get(outcome, (outcome or "the outcome", "classifier"))
    hours = report.get("window_hours") or config.get("window_hours") or m.get("window_hours") or WINDOW_HOURS
    return dict(
        fusion_context(m, config, run_dir, "note", "EHR"),
        outcome_label=outcome_label,
        title_outcome=first_upper(outcome_label),
        window_hours=f"{float(hours):g}",
        pop=m.get("population") or {},
        counts=counts_text,
    )


KIND = Kind(
    name="note_fusion",
    task="text-classification",
    template="note_fusion.md",
    context=note_fusion_context,
    chai=ChaiFacts(
        outputs="A probability of the outcome for one hospital admission, from its clinical note together with the "
        "structured EHR data (labs, vitals, demographics) recorded up to the prediction time, admission + 24 h.",
        io="Input: the text of a clinical note and the structured features of the first 24 h of the admission "
        "(aggregated labs and vitals, demographics; a feature not measured is left blank). Output: class "
        "probabilities.",
        population="Adult hospital admissions with a clinical note and structured data of the first 24 h, as in "
        "the development data (see DevelopmentDataCharacterization); other hospitals, note styles, laboratory "
        "practices and periods are untested.",
        risk="Research use only; a prognostic model of this kind could change care if deployed, so it would need "
        "local validation, monitoring and regulatory review. Not a medical device.",
        usefulness=classifier.USEFULNESS,
        safety=classifier.SAFETY,
        fairness=classifier.subgroup_results,
        bias_steps=(
            "Only measurements charted between admission and the prediction time (admission + 24 h) enter; nothing "
            "recorded later does.",
            "A lab or vital not measured is a learned missing token, never imputed; the model is trained with whole "
            "modalities dropped, and the card reports its scores with the note or the structured data absent.",
        ),
    ),
    tripod={
        **note_outcome.KIND.tripod,
        9: "Model details (note window); Fusion (structured EHR predictors and their time window)",
        11: "Fusion (a lab or vital not measured is the model's learned missing token, never imputed); "
        "Missing-modality behaviour (test scores with the note or the structured data absent)",
        12: "Model details; Fusion; Modality ablation (fused vs each single modality, same split); Training "
        "details; Evaluation; Calibration",
    },
    metric_keys=classifier.METRIC_KEYS,
    audit=("hf_medai.audits.notes", "audit_note_fusion"),
    demo=("hf_medai.demos.fusion", "NoteFusionDemo"),
)
