"""Image classifiers of any modality (recipes/image_classification.py): the generic card, CHAI facts and demo.

The lesion classifier (lesion_classifier.py) is this kind plus what only dermatology says.
"""

from __future__ import annotations

from pathlib import Path

from hf_medai.kinds import classifier
from hf_medai.kinds.base import ChaiFacts, Kind
from hf_medai.reporting_text import (
    BINARY_METRICS,
    DEPLOYER,
    MULTICLASS_METRICS,
    first_upper,
    model_config,
    operating_points,
)

# model types of ours: the import that registers each with transformers' Auto classes, for the card's How to use
REGISTER_IMPORTS = {"hf_medai_efficientnet_lite": "import hf_medai.models.efficientnet  # registers EfficientNet-Lite"}
TRIPOD = {
    6: "Training data (images read and kept); clinical setting: " + DEPLOYER.lower(),
    8: "Model details (classes); Bias, risks and limitations (label quality)",
    9: "Model details (input image size); How to use",
    13: "Calibration (class balancing and the prior correction); Training details",
    15: "Evaluation (decision threshold chosen on validation); How to use",
}


def image_classifier_context(m: dict, config: dict, run_dir: Path) -> dict:
    """Template variables of every image classifier's card."""
    model_dir = Path(m.get("evaluated_model") or run_dir)
    model = model_config(run_dir)
    binary = m.get("positive_class") is not None
    if binary:  # two classes: name both ("ihc slide vs fundus photograph"), more: the positive one vs the rest
        others = [c for c in m["class_names"] if c != m["positive_class"]]
        other = others[0] if len(others) == 1 and others[0] != f"not_{m['positive_class']}" else "rest"
        versus = f"{m['positive_class']} vs {other}".replace("_", " ")
    return dict(
        architecture=(model.get("architectures") or ["?"])[0],
        image_size=model.get("image_size", "?"),
        metric_labels=BINARY_METRICS if binary else MULTICLASS_METRICS,
        operating_points=operating_points(m),
        model_path=str(model_dir),
        task_label=versus if binary else f"{len(m['class_names'])} classes",
        title_task=first_upper(versus) if binary else f"{len(m['class_names'])}-class",
        register_import=REGISTER_IMPORTS.get(model.get("model_type"), ""),
    )


KIND = Kind(
    name="image_classifier",
    task="image-classification",
    template="image_classifier.md",
    context=image_classifier_context,
    chai=ChaiFacts(
        outputs="Class probabilities for an image (binary: the positive class vs rest, with a decision threshold "
        "chosen on validation; or one probability per class).",
        io="Input: an RGB image (JPEG/PNG) of the modality the model was trained on. Output: a probability per class.",
        population="Patients whose images match the development data in modality, device and site (see "
        "DevelopmentDataCharacterization); other modalities, devices and populations are untested.",
        risk="Research use only; if used to inform diagnosis it would be decision support: a false negative can "
        "delay a diagnosis. Not a medical device; no regulatory classification made.",
        usefulness=classifier.USEFULNESS,
        safety=classifier.SAFETY,
        fairness=classifier.subgroup_results,
        splits="Splits stratified by label. An image folder names no patients: where one patient has several "
        "images, they can fall in two splits and make the test numbers optimistic.",
    ),
    tripod=TRIPOD,
    metric_keys=classifier.METRIC_KEYS,
    demo=("hf_medai.demos.image_classifier", "ImageClassifierDemo"),
    audit=("hf_medai.audits.images", "audit_image_run"),
)
