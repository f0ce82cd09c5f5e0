"""LoRA adapters of a causal language model for multiple-choice medical QA (recipes/medqa_lora.py)."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from hf_medai.kinds.base import ChaiFacts, Kind, Results
from hf_medai.reporting_text import DEPLOYER


def qa_adapter_context(m: dict, config: dict, run_dir: Path) -> dict:
    """Template variables of LoRA adapters for multiple-choice QA (recipes/medqa_lora.py)."""
    conversion = {}
    base_path = Path(m.get("base_model_path") or "")
    if (base_path / "hf_medai_conversion.json").is_file():
        conversion = json.loads((base_path / "hf_medai_conversion.json").read_text())
    try:
        peft_version = metadata.version("peft")
    except metadata.PackageNotFoundError:
        peft_version = "n/a"
    safety = m.get("safety") or {}
    base_pass = {p["id"]: p["passed"] for p in ((safety.get("base") or {}).get("probes") or [])}
    keys = [
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
        "load_in_4bit",
        "batching",
        "target",
        "max_length",
        "learning_rate",
        "num_train_epochs",
        "max_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "lr_scheduler_type",
        "warmup_steps",
        "weight_decay",
        "seed",
        "bf16",
    ]
    return dict(
        conversion=conversion,
        peft_version=peft_version,
        letters=[k.rsplit("_", 1)[1] for k in m if k.startswith("position_bias_pred_fraction_")],
        safety_rows=[(p, base_pass.get(p["id"])) for p in ((safety.get("tuned") or {}).get("probes") or [])],
        qa_hyperparameters=[(k, config[k]) for k in keys if k in config],
        model_path=str(run_dir),
    )


def per_subject_and_position_bias(m: dict) -> Results:
    rows = []
    if m.get("per_subject"):
        rows.append(("accuracy by subject", {"metric": "accuracy_loglik", "groups": m["per_subject"]}))
    if "position_bias_max_pred_fraction_gap" in m:
        rows.append(
            (
                "position bias: largest gap in how often each answer letter is predicted",
                {
                    "metric": "position_bias_max_pred_fraction_gap",
                    "value": m["position_bias_max_pred_fraction_gap"],
                    "consistency_across_orders": m.get("position_bias_consistency"),
                },
            )
        )
    return rows


KIND = Kind(
    name="qa_adapter",
    task="text-generation",
    template="qa_adapter.md",
    context=qa_adapter_context,
    chai=ChaiFacts(
        outputs="The letter of the chosen answer to a multiple-choice medical question, or free text.",
        io="Input: a question and its options as text (chat template). Output: generated text / an option letter.",
        population="None: exam-style medical questions, not patients.",
        risk="Research use only; free-text medical advice can harm if followed. Not for patients or clinical "
        "decisions; see the safety probes.",
        usefulness=(
            ("accuracy_loglik", "Accuracy (log-likelihood of options)"),
            ("accuracy_generate", "Accuracy (generated letter)"),
            ("chance_accuracy", "Chance accuracy"),
            ("base_accuracy_loglik", "Base model accuracy (log-likelihood)"),
            ("accuracy_loglik_difference", "Accuracy difference vs base (log-likelihood)"),
        ),
        safety=(
            ("safety_pass_rate", "Safety probe pass rate"),
            ("base_safety_pass_rate", "Base model safety pass rate"),
            ("ece", "Expected calibration error"),
            ("contamination_fraction_flagged", "Test questions flagged as seen in training"),
        ),
        fairness=per_subject_and_position_bias,
        splits=None,
        bias_steps=(
            "Answer-position bias measured by permuting options; answer stability under rule-based paraphrases "
            "of the question stem and rotated options (robustness audit); test questions checked for contamination "
            "by n-gram overlap with training data; safety probes compared with the base model.",
        ),
    ),
    tripod={
        6: "Not applicable: exam questions, not patients (Training data describes them)",
        8: "Training data (gold answer letter per question)",
        9: "Training data (question and options as the prompt)",
        13: "Position bias (balance of answer letters)",
        14: "Per-subject accuracy and position bias; patient subgroups do not apply to exam questions",
        15: "Evaluation (letter by log-likelihood or generation); How to use",
        23: "Evaluation (95% bootstrap intervals); Calibration; Per-subject accuracy; Safety probes",
        25: "Evaluation; Position bias; Bias, risks and limitations",
        27: "Intended use; Out-of-scope use; Safety probes; workflow: " + DEPLOYER.lower(),
    },
    metric_keys=("accuracy_loglik", "accuracy_generate", "accuracy", "ece"),
    demo=("hf_medai.demos.qa", "QADemo"),
    audit=("hf_medai.audits.qa", "audit_qa_adapter"),
)
