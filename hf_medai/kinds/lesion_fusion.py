"""Skin-lesion models that fuse the dermoscopic image with the patient's metadata (recipes/lesion_fusion.py): the
lesion classifier's card, CHAI facts and TRIPOD cells, plus what is fused and how, the modality ablation and what the
model scores when the metadata or the image is absent. The demo takes an image and the metadata fields."""

from __future__ import annotations

from pathlib import Path

from hf_medai.kinds import classifier
from hf_medai.kinds.base import ChaiFacts, Kind
from hf_medai.kinds.fusion import fusion_context
from hf_medai.kinds.image_classifier import TRIPOD
from hf_medai.kinds.lesion_classifier import LESION_SPLITS, lesion_classifier_context

FUSION_TRIPOD = {
    11: "Fusion (a metadata field not recorded is the model's learned missing token, never imputed); "
    "Missing-modality behaviour (test scores with the metadata or the image absent)",
    12: "Model details; Fusion; Modality ablation (fused vs each single modality, same split); Training details; "
    "Evaluation; Calibration",
}


def lesion_fusion_context(m: dict, config: dict, run_dir: Path) -> dict:
    """The lesion classifier's variables (title, weakest skin type), then the fusion's."""
    return dict(
        lesion_classifier_context(m, config, run_dir), **fusion_context(m, config, run_dir, "image", "metadata")
    )


KIND = Kind(
    name="lesion_fusion",
    task="image-classification",
    template="lesion_fusion.md",
    context=lesion_fusion_context,
    chai=ChaiFacts(
        outputs="Class probabilities for a skin lesion from its dermoscopic image together with the patient's "
        "metadata (age, sex, anatomical site; any of them may be missing), with a decision threshold chosen on "
        "validation for a binary model.",
        io="Input: an RGB dermoscopic image (JPEG/PNG) and the patient's metadata fields (age in years, sex, "
        "anatomical site; a field not recorded is left blank). Output: a probability per class.",
        population="People with a single pigmented skin lesion imaged by dermoscopy whose age, sex and lesion site "
        "were recorded as in the development data (see DevelopmentDataCharacterization); other populations, skin "
        "types, devices and ways of recording metadata are untested.",
        risk="Research use only; if used to inform diagnosis it would be decision support for a serious condition "
        "(melanoma): a false negative delays diagnosis. Metadata can shift a score for a patient whose image alone "
        "would read otherwise. Not a medical device; no regulatory classification made.",
        usefulness=classifier.USEFULNESS,
        safety=classifier.SAFETY,
        fairness=classifier.subgroup_results,
        splits=LESION_SPLITS,
        bias_steps=(
            "Metadata not recorded is a learned missing token, never imputed; the model is trained with whole "
            "modalities dropped, and the card reports its scores with the metadata or the image absent.",
            "The fused model is compared with the image-only and metadata-only models on the same split, so a gain "
            "from metadata is shown with its interval rather than assumed.",
        ),
    ),
    tripod={**TRIPOD, 9: "Model details (input image size); Fusion (metadata predictors)", **FUSION_TRIPOD},
    metric_keys=classifier.METRIC_KEYS,
    demo=("hf_medai.demos.fusion", "LesionFusionDemo"),
    audit=("hf_medai.audits.images", "audit_image_run"),
)
