"""Lesion classifier runs as the building blocks of experiments (recipes/augmentation_experiment.py,
recipes/label_efficiency.py): one run folder from the lesion recipe's own flags, and the paired comparison of two.

    metrics = train_lesion_classifier(["--output_dir", "runs/x/baseline", "--seed", "0"])
    diff = paired_runs("runs/x/augmented", "runs/x/baseline")  # A - B on the same test images, paired bootstrap
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import TrainingArguments, set_seed

from hf_medai.config import EvalArguments, RunArguments, parse_args, resolved_config
from hf_medai.data.image_batches import add_pixel_values
from hf_medai.data.lesions import subgroup_frame
from hf_medai.errors import ConfigError
from hf_medai.evaluation.classification import paired_difference
from hf_medai.hub import finish_run
from hf_medai.image_classification import (
    TRAINING_DEFAULTS,
    LesionModelArguments,
    evaluate_and_save,
    image_classifier_trainer,
)
from hf_medai.lesion_split import LesionClassifierDataArguments, lesion_classifier_facts, load_lesion_split
from hf_medai.models import efficientnet
from hf_medai.models.vision import build_image_classifier
from hf_medai.run_folder import begin_run, cached_default_run
from hf_medai.run_outputs import score_column

RECIPES = Path(__file__).resolve().parents[1] / "recipes"  # a source checkout's recipes
DEFAULT_ENCODER = "mae-tiny-vit-synthetic-lesion-pool-v1"  # the cache folder of the offline default's encoder
CLASSIFIER_DATACLASSES = (
    LesionClassifierDataArguments,
    LesionModelArguments,
    EvalArguments,
    RunArguments,
    TrainingArguments,
)


def lesion_backbone(model_args: LesionModelArguments) -> str | None:
    """What a lesion classifier starts from: `model_name_or_path` if given; None (the small ViT, random weights) with
    `from_scratch`; else the offline default's pre-trained encoder, recipes/image_pretraining.py's default run (MAE on
    the synthetic unlabelled lesion pool), made once and cached."""
    if model_args.from_scratch and model_args.model_name_or_path == efficientnet.IMAGENET_NAME:
        raise ConfigError(
            f"--from_scratch true with --model_name_or_path {efficientnet.IMAGENET_NAME}: for the same architecture "
            f"from random weights pass --model_name_or_path {efficientnet.SCRATCH_NAME}"
        )
    if model_args.model_name_or_path or model_args.from_scratch:
        return model_args.model_name_or_path
    recipe = RECIPES / "image_pretraining.py"
    if not recipe.is_file():
        raise ConfigError(
            f"the offline default's pre-trained encoder is made by recipes/image_pretraining.py, not found at {recipe} "
            "(an installed package has no recipes): pass --model_name_or_path or --from_scratch true"
        )
    return str(cached_default_run(recipe, DEFAULT_ENCODER))


def build_lesion_classifier(model_args: LesionModelArguments, class_names, seed: int):
    """(model, image processor, backbone) of a lesion classifier run: the backbone as `lesion_backbone` resolves it,
    then the seed again, so the new head's init does not depend on whether the default encoder was just made."""
    backbone = lesion_backbone(model_args)
    set_seed(seed)
    model, processor = build_image_classifier(backbone, class_names, model_args.image_size)
    return model, processor, backbone


def backbone_facts(backbone: str | None, num_labels: int | None = None) -> dict:
    """What metrics.json and the card say about the backbone's own pre-training: for EfficientNet-Lite0 by name, which
    weights (package, version, file hash, licence, ImageNet-1k) or random ones; for an image_pretraining run folder
    (its metrics.json), on what, how many images, by which objective, how well it reconstructs."""
    if backbone in efficientnet.MODEL_NAMES:
        return efficientnet.weights_facts(backbone, num_labels)
    path = Path(backbone) / "metrics.json" if backbone else None
    if path is None or not path.is_file():
        return {}
    m = json.loads(path.read_text())
    if m.get("recipe") != "image_pretraining":
        return {}
    default = Path(backbone).name == DEFAULT_ENCODER
    return {
        **(
            {"base_model": f"small ViT pre-trained by MAE, the offline default encoder ({backbone})"}
            if default
            else {}
        ),
        "pretrained_encoder": {
            "folder": str(backbone),
            "dataset": m.get("dataset"),
            "images": m["pretraining_data"]["images"],
            "synthetic_data": bool(m.get("synthetic_data")),
            "objective": f"masked-autoencoder reconstruction, {m['heldout']['mask_ratio']:.0%} of patches hidden",
            "optimizer_steps": m["training"].get("global_step"),
            "reconstruction_loss": m.get("reconstruction_loss"),
            "reconstruction_loss_before": m.get("reconstruction_loss_before"),
        },
    }


def train_lesion_classifier(flags: list[str], callbacks=()) -> dict:
    """One lesion classifier run folder, as recipes/lesion_classification.py writes it, from that recipe's flags;
    returns its metrics.json. An interrupted run resumes like the recipe's own."""
    data, model_args, eval_args, run_args, training_args = parse_args(
        *CLASSIFIER_DATACLASSES, args=flags, defaults=TRAINING_DEFAULTS
    )
    resume, _ = begin_run(training_args, run_args)
    splits, class_names, report, source = load_lesion_split(data, extra_train_dir=data.extra_train_dir)
    model, processor, backbone = build_lesion_classifier(model_args, class_names, training_args.seed)
    splits = {name: add_pixel_values(ds, processor) for name, ds in splits.items()}
    trainer = image_classifier_trainer(model, processor, splits, class_names, model_args, training_args, callbacks)
    metrics = evaluate_and_save(
        trainer,
        trainer.train(resume_from_checkpoint=resume),
        processor,
        splits,
        class_names,
        model_args,
        eval_args,
        subgroups=subgroup_frame(splits["test"], data.subgroup_columns),
        resume=resume,
        extra={
            **lesion_classifier_facts(data, backbone, report, source, splits),
            **backbone_facts(backbone, len(class_names)),
        },
    )
    config = resolved_config(data, model_args, eval_args, run_args, training_args)
    finish_run(training_args.output_dir, config, training_args, push=False)
    return metrics


def paired_runs(run_a: str | Path, run_b: str | Path, n_bootstrap: int = 1000) -> dict:
    """AUROC of run A minus run B on the same test images (their predictions.csv), with a paired bootstrap CI."""
    frames = [pd.read_csv(Path(r) / "predictions.csv", keep_default_na=False) for r in (run_a, run_b)]
    class_names = json.loads((Path(run_a) / "metrics.json").read_text())["class_names"]
    if list(frames[0]["id"]) != list(frames[1]["id"]):
        raise ConfigError(f"{run_a} and {run_b} were tested on different images; they must share data and split")
    y = np.array([class_names.index(v) for v in frames[0]["label"]])
    a, b = (f[[score_column(c) for c in class_names]].to_numpy() for f in frames)
    return paired_difference(y, a, b, class_names, n_bootstrap=n_bootstrap)
