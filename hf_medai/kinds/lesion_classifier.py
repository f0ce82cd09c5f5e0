"""Skin-lesion classifiers (recipes/lesion_classification.py): an image classifier whose card, CHAI facts and demo
speak dermatology (dermoscopy, melanoma, Fitzpatrick skin types, the dermatologists' operating point).

The only kind that says any of that: a classifier of another modality is `image_classifier`.
"""

from __future__ import annotations

from pathlib import Path

from hf_medai.kinds import classifier
from hf_medai.kinds.base import ChaiFacts, Kind
from hf_medai.kinds.image_classifier import TRIPOD, image_classifier_context

# The lesion recipes split by patient, or by lesion where the data has no patient ids (HAM10000).
LESION_SPLITS = (
    "Splits by patient (or lesion): no patient's data in two splits, so test numbers are not inflated "
    "by near-duplicates."
)


def lesion_classifier_context(m: dict, config: dict, run_dir: Path) -> dict:
    """The image classifier's variables, and the weakest Fitzpatrick skin type."""
    return dict(
        image_classifier_context(m, config, run_dir),
        worst_fitzpatrick=(m.get("subgroups") or {}).get("fitzpatrick", {}).get("worst", {}).get("auroc"),
    )


KIND = Kind(
    name="lesion_classifier",
    task="image-classification",
    template="lesion_classifier.md",
    context=lesion_classifier_context,
    chai=ChaiFacts(
        outputs="Class probabilities for a dermoscopic image of a skin lesion (binary: the positive class vs rest, "
        "with a decision threshold chosen on validation; or one probability per class).",
        io="Input: an RGB dermoscopic image (JPEG/PNG). Output: a probability per class.",
        population="People with a single pigmented skin lesion imaged by dermoscopy, as in the development data "
        "(see DevelopmentDataCharacterization); other populations, skin types and devices are untested.",
        risk="Research use only; if used to inform diagnosis it would be decision support for a serious condition "
        "(melanoma): a false negative delays diagnosis. Not a medical device; no regulatory classification made.",
        usefulness=classifier.USEFULNESS,
        safety=classifier.SAFETY,
        fairness=classifier.subgroup_results,
        splits=LESION_SPLITS,
    ),
    tripod=TRIPOD,
    metric_keys=classifier.METRIC_KEYS,
    demo=("hf_medai.demos.lesion", "LesionDemo"),
    audit=("hf_medai.audits.images", "audit_image_run"),
)
