"""How the reports write things: numbers, labels, the kept weights in words, and who supplies what a run cannot know.

Shared by the card renderers (`cards`, `chai`, `tripod`), the kinds (`hf_medai.kinds`) and the run summary, so a
number reads the same in README.md, model_card.chai.xml and the terminal. Imports nothing of hf_medai.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

DEPLOYER = "To be supplied by the deployer"
DEVELOPER = "To be supplied by the developer"

# The training settings every card lists (each kind adds its own around them).
TRAINING_SETTINGS = [
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "warmup_steps",
]

# (metrics.json key, label) of the overall table of a classifier's card.
BINARY_METRICS = [
    ("auroc", "AUROC"),
    ("auprc", "AUPRC"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("ppv", "PPV"),
    ("npv", "NPV"),
    ("accuracy", "Accuracy"),
    ("ece", "ECE"),
    ("brier", "Brier score"),
]
MULTICLASS_METRICS = [
    ("auroc", "AUROC (macro one-vs-rest)"),
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("ece", "ECE (top label)"),
]
METRIC_LABELS = {
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "mae": "MAE",
    "rmse": "RMSE",
    "loss": "loss",
    "balanced_accuracy": "balanced accuracy",
    "accuracy": "accuracy",
}


def fmt(value: Any, digits: int = 3) -> str:
    """How every number appears in a card (tests parse them back)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def first_upper(text: str) -> str:
    text = str(text)
    return text[:1].upper() + text[1:]


def short_architecture(name: str) -> str:
    """ "ViTForImageClassification" -> "ViT", "BertForSequenceClassification" -> "Bert" (for titles)."""
    return re.sub(r"(For[A-Z]\w*|Model)$", "", name or "") or name or "?"


def counts_text(counts: dict | None) -> str:
    """{"a": 3, "b": 1} -> "a 3 (75%), b 1 (25%)", largest first."""
    if not counts:
        return "n/a"
    total = sum(counts.values()) or 1
    return ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def model_config(run_dir: str | Path) -> dict:
    """The run folder's config.json ({} when it has none, e.g. an adapter or a diffusion pipeline)."""
    path = Path(run_dir) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def operating_points(m: dict) -> list[tuple[str, str]]:
    """(key, label) of the operating points metrics.json holds, e.g. specificity_at_sensitivity_0.9."""
    return [
        (k, k.replace("_", " "))
        for k in m
        if k.startswith(("specificity_at_", "sensitivity_at_")) and not k.endswith(("_ci_low", "_ci_high"))
    ]


def kept_weights(m: dict) -> str:
    """Which weights the run folder holds, in words: the checkpoint, its step and epoch, and the validation metric
    it was chosen on (metrics.json["training"]["kept_checkpoint"], written by `run_outputs.kept_checkpoint`)."""
    training = m.get("training") or {}
    kept = training.get("kept_checkpoint")
    if not kept:  # a run folder from before kept_checkpoint was recorded
        if training.get("best_checkpoint"):
            best = training.get("best_val_auroc", training.get("best_metric"))
            return f"`{Path(training['best_checkpoint']).name}`, the best on the validation metric ({fmt(best)})"
        return f"the weights of the last step ({training.get('global_step', '?')})"
    metric = METRIC_LABELS.get(kept["metric"], kept["metric"])
    epoch = "" if kept.get("epoch") is None else f", epoch {kept['epoch']:g}"
    if kept.get("checkpoint"):
        return (
            f"`{kept['checkpoint']}` (step {kept['step']} of {kept['final_step']}{epoch}), kept because it had "
            f"the "
            f"{'highest' if kept.get('greater_is_better', True) else 'lowest'} validation {metric} "
            f"({fmt(kept['value'])}) of {kept['n_evaluations']} evaluations"
        )
    there = "" if kept.get("value") is None else f"; validation {metric} there: {fmt(kept['value'])}"
    return f"the weights of the last step (step {kept['step']}{epoch}): no checkpoint selection{there}"
