"""Clinical-text encoders after continued masked-language-model pretraining (recipes/clinical_pretraining.py)."""

from __future__ import annotations

from pathlib import Path

from hf_medai.kinds.base import ChaiFacts, Kind, Results
from hf_medai.reporting_text import model_config

MLM_SETTINGS = [
    "model_name_or_path",
    "max_length",
    "stride",
    "mlm_probability",
    "note_sections",
    "task",
    "learning_rate",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "warmup_steps",
    "train_sampling_strategy",
    "seed",
    "bf16",
]


def masked_lm_context(m: dict, config: dict, run_dir: Path) -> dict:
    """Template variables of continued-pretraining encoders (recipes/clinical_pretraining.py)."""
    model = model_config(run_dir)
    phi = (m.get("data_report") or {}).get("phi") or {}
    return dict(
        architecture=(model.get("architectures") or ["?"])[0],
        pop=m.get("population") or {},
        head_new=bool(m.get("mlm_head_newly_initialised")),
        phi_text=(
            f"The notes were screened for identifiers (policy `{phi.get('policy')}`): "
            f"{phi.get('texts_flagged', 0)} of {phi.get('texts_scanned', 0)} flagged"
            f"{' and redacted' if phi.get('redacted') else ''}. Do not share "
            "weights pretrained on real notes outside the data use agreement."
        ),
        settings=[(k, config[k]) for k in MLM_SETTINGS if k in config],
        min_group_size_int=int(config.get("min_group_size", 30)),
    )


def perplexity_by_group(m: dict) -> Results:
    subgroups = m.get("subgroups") or {}
    after = subgroups.get("after", subgroups) if isinstance(subgroups, dict) else {}
    return [
        (f"perplexity by {column}", {"metric": "perplexity", "subgroup_column": column, "groups": groups})
        for column, groups in after.items()
        if isinstance(groups, dict) and groups
    ]


KIND = Kind(
    name="masked_lm",
    task="fill-mask",
    template="masked_lm.md",
    context=masked_lm_context,
    chai=ChaiFacts(
        outputs="Token predictions for masked words, and contextual embeddings of clinical text for fine-tuning.",
        io="Input: clinical text (tokenised). Output: token probabilities or embeddings; no patient-level prediction.",
        population="None directly: an encoder for downstream models, each of which needs its own card. Pretrained "
        "on the notes described in DevelopmentDataCharacterization.",
        risk="Low as a component (no patient-level output); can memorise rare strings of its training notes, so the "
        "weights are as sensitive as the notes.",
        usefulness=(
            ("perplexity", "Held-out masked-token perplexity"),
            ("perplexity_before", "Perplexity before pretraining"),
        ),
        fairness=perplexity_by_group,
    ),
    metric_keys=("perplexity",),
)
