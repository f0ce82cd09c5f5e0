"""The lesion data and split settings that must agree across recipes, and the split they make.

The lesion classifier, the lesion-image diffusion model and the augmentation experiment declare these once, here:
the diffusion model's training patients are then exactly the classifier's, so its images never show the
classifier's validation or test patients (recipes/augmentation_experiment.py relies on it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from hf_medai.data.lesions import (
    LESION_GROUP,
    add_extra_training_images,
    lesion_splits,
    load_lesion_images,
    load_lesions,
    with_images,
)
from hf_medai.data.splits import label_subset, split_report
from hf_medai.data.synthetic.lesions import is_synthetic
from hf_medai.errors import ConfigError
from hf_medai.paths import cache_root

LesionFormat = Literal["auto", "imagefolder", "ham10000", "isic2019", "isic2020", "csv"]


@dataclass
class LesionSplitArguments:
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Dataset folder or CSV. Default: a synthetic HAM10000-format sample, generated once."},
    )
    data_format: LesionFormat = field(default="auto", metadata={"help": "Format of data_dir."})
    task: Literal["binary", "multiclass"] = field(
        default="binary", metadata={"help": "binary (melanoma vs rest) | multiclass (the data's own classes)."}
    )
    val_fraction: float = field(default=0.15, metadata={"help": "Fraction of patients held out for validation."})
    test_fraction: float = field(
        default=0.15, metadata={"help": "Fraction of patients held out for test (ignored with test_data_dir)."}
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of the patient-grouped, label-stratified split."})
    skip_bad_rows: bool = field(
        default=False, metadata={"help": "Skip and count bad rows/images instead of stopping at the first."}
    )
    max_image_side: int = field(
        default=512, metadata={"help": "Images are decoded once and cached with the longer side at most this."}
    )
    synthetic_n: int = field(default=4000, metadata={"help": "Images in the synthetic sample (offline default only)."})


SPLIT_KEYS = tuple(f.name for f in fields(LesionSplitArguments))


@dataclass
class LesionClassifierDataArguments(LesionSplitArguments):
    """The split settings, and what only a lesion classifier reads (recipes/lesion_classification.py and the
    classifier runs of recipes/augmentation_experiment.py)."""

    test_data_dir: str | None = field(
        default=None, metadata={"help": "A fixed external test set (same formats); default: a held-out split."}
    )
    test_data_format: LesionFormat = field(default="auto", metadata={"help": "Format of test_data_dir."})
    extra_train_dir: str | None = field(
        default=None,
        metadata={
            "help": "An image folder (<class>/*.png) added to the TRAINING split only, e.g. generated images "
            "(recipes/augmentation_experiment.py)."
        },
    )
    subgroup_columns: list[str] = field(
        default_factory=lambda: ["sex", "age_band", "fitzpatrick", "site"],
        metadata={"help": "Metadata columns reported per subgroup."},
    )
    label_fraction: float = field(
        default=1.0,
        metadata={
            "help": "Train on the labels of this fraction of the training patients (stratified, nested, seeded by "
            "split_seed; validation and test untouched): recipes/label_efficiency.py."
        },
    )


def load_lesion_split(
    args: LesionSplitArguments,
    test_data_dir: str | None = None,
    test_data_format: str = "auto",
    extra_train_dir: str | None = None,
):
    """Load the lesion data (decoded once, cached) and split it by patient: (splits, class_names, report, source).

    `test_data_dir`: a fixed external test set instead of a held-out split. `extra_train_dir`: an image folder
    (<class>/*.png, e.g. generated images) added to the TRAINING split only.
    """
    dataset, class_names, report, source = load_lesion_images(
        args.data_dir, args.data_format, args.task, args.skip_bad_rows, args.max_image_side, args.synthetic_n
    )
    if test_data_dir:
        splits = lesion_splits(dataset, args.val_fraction, 0.0, args.split_seed)
        test, test_classes, test_report = load_lesions(test_data_dir, test_data_format, args.task, args.skip_bad_rows)
        if test_classes != class_names:
            raise ConfigError(f"test set classes {test_classes} differ from training classes {class_names}")
        splits["test"] = with_images(
            test, test_report, max_side=args.max_image_side, cache_dir=cache_root() / "images"
        )
        report.notes["external_test_set"] = test_report.to_dict()
    else:
        splits = lesion_splits(dataset, args.val_fraction, args.test_fraction, args.split_seed)
    fraction = getattr(args, "label_fraction", 1.0)
    if fraction < 1:
        full = len(splits["train"])
        splits["train"] = label_subset(splits["train"], fraction, LESION_GROUP, "label", args.split_seed)
        report.notes["label_fraction"] = {"fraction": fraction, "train_images": len(splits["train"]), "of": full}
    if extra_train_dir:
        splits["train"] = add_extra_training_images(
            splits["train"], extra_train_dir, args.task, class_names, report, args.skip_bad_rows, args.max_image_side
        )
    return splits, class_names, report, source


def lesion_classifier_facts(
    args: LesionSplitArguments, model_name_or_path: str | None, report, source, splits
) -> dict:
    """What a lesion classifier's metrics.json says about itself and its data (beside the metrics)."""
    return {
        "recipe": "lesion_classification",
        "kind": "lesion_classifier",
        "task": "image-classification",
        "base_model": model_name_or_path or "small ViT from config (random init)",
        "dataset": str(args.data_dir or "synthetic HAM10000-format sample (hf-medai data lesions)"),
        "synthetic_data": is_synthetic(source),
        "data_report": report.to_dict(),
        "splits": split_report(splits, group_column=LESION_GROUP),
    }
