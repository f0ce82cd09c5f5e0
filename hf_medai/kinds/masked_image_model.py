"""Image encoders pre-trained as masked autoencoders on unlabelled images (recipes/image_pretraining.py)."""

from __future__ import annotations

from pathlib import Path

from hf_medai.kinds.base import ChaiFacts, Kind

MAE_SETTINGS = [
    "model_name_or_path",
    "image_size",
    "mask_ratio",
    "norm_pix_loss",
    "augment",
    "learning_rate",
    "lr_scheduler_type",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "adam_beta2",
    "warmup_steps",
    "seed",
    "bf16",
]


def masked_image_context(m: dict, config: dict, run_dir: Path) -> dict:
    """Template variables of MAE-pretrained encoders (recipes/image_pretraining.py)."""
    splits = m.get("splits") or {}
    by_patient = (m.get("pretraining_data") or {}).get("format") not in (None, "folder")
    return dict(
        enc=m.get("encoder") or {},
        pdata=m.get("pretraining_data") or {},
        heldout=m.get("heldout") or {},
        train_split=splits.get("train") or {},
        val_split=splits.get("validation") or {},
        by_patient=by_patient,
        settings=[(k, config[k]) for k in MAE_SETTINGS if k in config],
    )


KIND = Kind(
    name="masked_image_model",
    task="image-feature-extraction",
    template="masked_image_model.md",
    context=masked_image_context,
    chai=ChaiFacts(
        outputs="Image features (one embedding per patch and a CLS embedding) for fine-tuning; no finding, no score.",
        io="Input: an image (resized to the encoder's input size). Output: feature vectors; no patient-level "
        "prediction.",
        population="None directly: an encoder for downstream models, each of which needs its own card. Pre-trained "
        "on the images described in DevelopmentDataCharacterization.",
        risk="Low as a component (no patient-level output). The weights can reproduce pre-training images (the "
        "decoder in mae/ redraws masked patches), so they are as sensitive as those images.",
        usefulness=(
            ("reconstruction_loss", "Held-out reconstruction loss (masked patches, fixed masks)"),
            ("reconstruction_loss_before", "Held-out reconstruction loss before pre-training"),
        ),
        no_fairness="pre-training reads no labels or subgroup columns, so nothing is measured per group here: judge "
        "fairness on each model fine-tuned from the encoder",
        splits="Held-out images split by patient where the data names patients (lesion formats), else by image: no "
        "patient's images on both sides.",
    ),
)
