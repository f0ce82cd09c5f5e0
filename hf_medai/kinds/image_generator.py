"""Class-conditional diffusion models of lesion images (recipes/image_diffusion.py)."""

from __future__ import annotations

from pathlib import Path

from hf_medai.kinds.base import ChaiFacts, Kind, Results
from hf_medai.kinds.lesion_classifier import LESION_SPLITS

DIFFUSION_SETTINGS = [
    "resolution",
    "block_out_channels",
    "layers_per_block",
    "attention_levels",
    "learning_rate",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "lr_scheduler_type",
    "warmup_steps",
    "ema_decay",
    "augment",
    "bf16",
    "seed",
]


def image_diffusion_context(m: dict, config: dict, run_dir: Path) -> dict:
    """Template variables of lesion-image diffusion pipelines (recipes/image_diffusion.py)."""
    return dict(
        memo=m["memorisation"],
        feat=m["memorisation"].get("feature"),
        settings=[(k, config[k]) for k in DIFFUSION_SETTINGS if k in config],
    )


def fidelity_per_class(m: dict) -> Results:
    per_class = (m.get("fidelity") or {}).get("per_class") or {}
    if not per_class:
        return []
    return [
        (
            "class fidelity per lesion class",
            {
                "metric": "class_fidelity",
                "groups": {c: {"n": v.get("n"), "fidelity": v.get("fidelity")} for c, v in per_class.items()},
            },
        )
    ]


KIND = Kind(
    name="image_generator",
    task="image-generation",
    template="image_diffusion.md",
    context=image_diffusion_context,
    chai=ChaiFacts(
        outputs="Synthetic dermoscopic images of a requested lesion class.",
        io="Input: a class label and a random seed. Output: RGB images.",
        population="None: generates images; trained on the lesion images described in "
        "DevelopmentDataCharacterization.",
        risk="Low for patients directly; generated images can reproduce training images (privacy) and must not be "
        "presented as real cases.",
        usefulness=(
            ("class_fidelity", "Class fidelity"),
            ("fid", "FID (classifier features)"),
            ("fid_heldout_reference", "FID of held-out real images"),
            ("kid", "KID"),
            ("diversity_pixel", "Pixel diversity"),
        ),
        safety=(
            ("memorised_fraction", "Generated images memorised from training"),
            ("nearest_training_similarity_max", "Max similarity to a training image"),
            ("heldout_nearest_training_similarity_max", "Max similarity of held-out real images (reference)"),
        ),
        fairness=fidelity_per_class,
        no_fairness="no per-class fidelity was computed in this run",
        bias_steps=(
            "Memorisation check: each generated image compared with its nearest training image; pairs kept "
            "locally, never published.",
        ),
        splits=LESION_SPLITS,
        generative=True,
    ),
    demo=("hf_medai.demos.image_diffusion", "ImageDiffusionDemo"),
)
