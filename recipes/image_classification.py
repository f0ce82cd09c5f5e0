"""Fine-tune an image classifier on any image folder (<class>/*.png): chest X-rays, fundus photographs, slides...

Offline default (a toy task: tiles of two real images that scikit-image ships, a retinal fundus photograph and an
immunohistochemistry slide, one class per image; small ViT from a config; CPU, about a minute):
    accelerate launch recipes/image_classification.py \
        --config recipes/configs/image_classification/offline_default.yaml
Your own images (one sub-folder per class), e.g. chest X-rays:
    accelerate launch recipes/image_classification.py --data_dir DIR --modality "chest X-rays" --output_dir runs/cxr

The run folder holds the model (loads with `pipeline("image-classification", model=DIR)`), the card (README.md)
and CHAI card, metrics.json, predictions.csv, plots and run_config.yaml; `hf-medai demo DIR` serves it.
Splits are by image, stratified by label: an image folder names no patients (say so, and check, for your data).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from hf_medai.audits import write_robustness
from hf_medai.audits.images import audit_images
from hf_medai.config import EvalArguments, RunArguments, parse_args, resolved_config
from hf_medai.data.image_batches import add_pixel_values
from hf_medai.data.splits import split_report
from hf_medai.errors import run_main
from hf_medai.hub import finish_run
from hf_medai.image_classification import (
    TRAINING_DEFAULTS,
    ImageClassifierArguments,
    evaluate_and_save,
    image_classifier_trainer,
)
from hf_medai.image_folder import (
    SAMPLE_DESCRIPTION,
    SAMPLE_MODALITY,
    TOY_TASK,
    image_folder_splits,
    load_image_folder,
    scikit_image_sample,
)
from hf_medai.models import efficientnet
from hf_medai.models.vision import build_image_classifier
from hf_medai.run_folder import begin_run


@dataclass
class DataArguments:
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Image folder, one sub-folder per class. Default: tiles of scikit-image's real sample images."
        },
    )
    modality: str | None = field(
        default=None, metadata={"help": "What the images are, in words (e.g. 'chest X-rays'): the card names it."}
    )
    val_fraction: float = field(default=0.15, metadata={"help": "Fraction of images held out for validation."})
    test_fraction: float = field(default=0.15, metadata={"help": "Fraction of images held out for test."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the label-stratified split."})
    skip_bad_rows: bool = field(
        default=False, metadata={"help": "Skip and count images that do not decode instead of stopping at the first."}
    )
    max_image_side: int = field(
        default=512, metadata={"help": "Images are decoded once and cached with the longer side at most this."}
    )
    sample_tiles_per_class: int = field(
        default=200, metadata={"help": "Tiles per class in the offline sample (default data only)."}
    )


DEFAULTS = dict(TRAINING_DEFAULTS, output_dir="runs/image_classification", num_train_epochs=5)
CONFIG_DATACLASSES = (DataArguments, ImageClassifierArguments, EvalArguments, RunArguments, TrainingArguments)


def main(args=None, callbacks=None):
    data_args, model_args, eval_args, run_args, training_args = parse_args(
        *CONFIG_DATACLASSES, args=args, defaults=DEFAULTS
    )
    resume, push = begin_run(training_args, run_args)
    sample = data_args.data_dir is None

    # Data: an image folder (or the offline sample, written once) -> decode once (cached) -> split by image
    with training_args.main_process_first(desc="data"):
        folder = scikit_image_sample(data_args.sample_tiles_per_class) if sample else data_args.data_dir
        dataset, class_names, report = load_image_folder(folder, data_args.skip_bad_rows, data_args.max_image_side)
        splits = image_folder_splits(dataset, data_args.val_fraction, data_args.test_fraction, data_args.split_seed)

    # Model: a hub id or folder, or a small ViT from a config; its processor makes each split's pixels once
    model, processor = build_image_classifier(model_args.model_name_or_path, class_names, model_args.image_size)
    test_images = splits["test"]  # decoded images: the robustness audit draws its artefacts on these
    with training_args.main_process_first(desc="pixels"):
        splits = {name: add_pixel_values(ds, processor) for name, ds in splits.items()}

    # Train! (class imbalance as --class_balance says; validation picks the kept checkpoint)
    trainer = image_classifier_trainer(
        model, processor, splits, class_names, model_args, training_args, callbacks=callbacks or ()
    )
    train_result = trainer.train(resume_from_checkpoint=resume)

    # Test on held-out images, save the model, write the report and both cards (no subgroup columns in a folder)
    facts = {
        "recipe": "image_classification",
        "kind": "image_classifier",
        "task": "image-classification",
        "base_model": model_args.model_name_or_path or "small ViT from config (random init)",
        "dataset": f"{SAMPLE_DESCRIPTION} (scikit-image)" if sample else str(data_args.data_dir),
        "modality": data_args.modality or (SAMPLE_MODALITY if sample else None),
        "toy_task": TOY_TASK if sample else None,
        "synthetic_data": False,  # the sample's tiles are real images
        "data_report": report.to_dict(),
        "splits": split_report(splits, group_column="id"),
    }
    if model_args.model_name_or_path in efficientnet.MODEL_NAMES:  # packaged weights: which, licence, provenance
        facts.update(efficientnet.weights_facts(model_args.model_name_or_path, len(class_names)))
    metrics = evaluate_and_save(
        trainer, train_result, processor, splits, class_names, model_args, eval_args, None, resume, facts
    )
    if metrics is not None:  # the main process: artefact audit, run_config.yaml, both cards, the push if asked for
        if eval_args.robustness_audit:
            audit = audit_images(
                training_args.output_dir, test_images, metrics, None, training_args.seed, eval_args.n_bootstrap
            )
            write_robustness(training_args.output_dir, audit)
        finish_run(
            training_args.output_dir,
            resolved_config(data_args, model_args, eval_args, run_args, training_args),
            training_args,
            push,
        )
    trainer.accelerator.wait_for_everyone()
    return training_args.output_dir


if __name__ == "__main__":
    run_main(main)
