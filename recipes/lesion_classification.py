"""Fine-tune an image classifier on skin-lesion images: melanoma vs rest, or the 7 HAM10000 classes.

Offline default (synthetic HAM10000-format sample, small ViT, CPU, a few minutes):
    accelerate launch recipes/lesion_classification.py --output_dir runs/lesions
Real HAM10000 with a pretrained ViT (see recipes/configs/lesion_classification/):
    accelerate launch recipes/lesion_classification.py --config recipes/configs/lesion_classification/ham10000_vit_base.yaml

The run folder holds the model (loads with `pipeline("image-classification", model=DIR)`), the card
(README.md), metrics.json, predictions.csv, plots and run_config.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from transformers import TrainingArguments

from hf_medai.config import EvalArguments, RunArguments, parse_args, resolved_config
from hf_medai.data.image_batches import DermoscopyAugment, ImageCollator, add_pixel_values
from hf_medai.data.images import with_images
from hf_medai.data.lesions import (
    LESION_GROUP,
    add_extra_training_images,
    lesion_splits,
    load_lesion_images,
    load_lesions,
    subgroup_frame,
)
from hf_medai.data.splits import split_report
from hf_medai.data.synthetic.lesions import is_synthetic
from hf_medai.errors import ConfigError, run_main
from hf_medai.evaluation import binary_metrics, multiclass_metrics
from hf_medai.hub import finish_run
from hf_medai.io import save_pretrained_atomic
from hf_medai.models.heads import fold_into_head, prior_correction
from hf_medai.models.vision import build_image_classifier
from hf_medai.paths import cache_root
from hf_medai.run_folder import begin_run
from hf_medai.run_outputs import kept_checkpoint, write_classifier_report
from hf_medai.throughput import ThroughputCallback, peak_memory_mb
from hf_medai.trainer import MedTrainer


@dataclass
class DataArguments:
    data_dir: str | None = field(default=None, metadata={"help": "Dataset folder or CSV. Default: a synthetic HAM10000-format sample, generated once."})
    data_format: str = field(default="auto", metadata={"help": "auto | imagefolder | ham10000 | isic2019 | isic2020 | csv."})
    task: str = field(default="binary", metadata={"help": "binary (melanoma vs rest) | multiclass (the data's own classes)."})
    test_data_dir: str | None = field(default=None, metadata={"help": "A fixed external test set (same formats); default: a held-out split."})
    test_data_format: str = field(default="auto", metadata={"help": "Format of test_data_dir."})
    val_fraction: float = field(default=0.15, metadata={"help": "Fraction of lesions held out for validation."})
    test_fraction: float = field(default=0.15, metadata={"help": "Fraction of lesions held out for test (ignored with test_data_dir)."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the lesion-grouped, label-stratified split."})
    skip_bad_rows: bool = field(default=False, metadata={"help": "Skip and count bad rows/images instead of stopping at the first."})
    max_image_side: int = field(default=512, metadata={"help": "Images are decoded once and cached with the longer side at most this."})
    synthetic_n: int = field(default=4000, metadata={"help": "Images in the synthetic sample (offline default only)."})
    extra_train_dir: str | None = field(default=None, metadata={"help": "An image folder (<class>/*.png) added to the TRAINING split only, e.g. generated images (recipes/augmentation_experiment.py)."})
    subgroup_columns: list[str] = field(default_factory=lambda: ["sex", "age_band", "fitzpatrick", "site"], metadata={"help": "Metadata columns reported per subgroup."})

    def __post_init__(self):
        if self.task not in ("binary", "multiclass"):
            raise ValueError(f"task must be binary or multiclass, got {self.task!r}")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "Hub id or folder of an image classifier/backbone. Default: a small ViT from a config."})
    image_size: int = field(default=64, metadata={"help": "Input size of the default small ViT (ignored for pretrained models)."})
    class_balance: str = field(default="weighted_loss", metadata={"help": "weighted_loss | balanced_sampler | none."})
    augment: bool = field(default=True, metadata={"help": "Dermoscopy augmentation: crops, flips, 90-degree rotations, mild colour jitter."})

    def __post_init__(self):
        if self.class_balance not in ("weighted_loss", "balanced_sampler", "none"):
            raise ValueError(f"class_balance must be weighted_loss, balanced_sampler or none, got {self.class_balance!r}")



# The recipe's own defaults; YAML and flags override them.
DEFAULTS = dict(
    output_dir="runs/lesion_classification",
    num_train_epochs=15,
    learning_rate=1e-3,
    weight_decay=0.05,
    warmup_steps=0.05,
    per_device_train_batch_size=64,
    per_device_eval_batch_size=128,
    eval_strategy="epoch",
    save_strategy="epoch",
    save_total_limit=2,
    load_best_model_at_end=True,
    metric_for_best_model="auroc",
    greater_is_better=True,
    logging_steps=10,
    report_to="none",
    remove_unused_columns=False,  # the collator needs `pixels`, which the model's forward does not name
    dataloader_num_workers=0,
)


class LesionTrainer(MedTrainer):
    """Trainer with an optional class-balanced sampler (same seed on every process, so DDP shards agree)."""

    sample_weights: torch.Tensor | None = None

    def _get_train_sampler(self, train_dataset=None):
        if self.sample_weights is None:
            return super()._get_train_sampler(train_dataset)
        g = torch.Generator().manual_seed(self.args.seed)
        return torch.utils.data.WeightedRandomSampler(self.sample_weights, len(self.sample_weights), replacement=True, generator=g)


CONFIG_DATACLASSES = (DataArguments, ModelArguments, EvalArguments, RunArguments, TrainingArguments)


def main(args=None, callbacks=None):
    data_args, model_args, eval_args, run_args, training_args = parse_args(*CONFIG_DATACLASSES, args=args, defaults=DEFAULTS)
    resume, push = begin_run(training_args, run_args)

    # Data: load -> decode once (cached) -> lesion-grouped split
    with training_args.main_process_first(desc="data"):
        dataset, class_names, report, source = load_lesion_images(
            data_args.data_dir, data_args.data_format, data_args.task, data_args.skip_bad_rows, data_args.max_image_side,
            data_args.synthetic_n)
        if data_args.test_data_dir:
            splits = lesion_splits(dataset, data_args.val_fraction, 0.0, data_args.split_seed)
            test, test_classes, test_report = load_lesions(data_args.test_data_dir, data_args.test_data_format, data_args.task, data_args.skip_bad_rows)
            if test_classes != class_names:
                raise ConfigError(f"test set classes {test_classes} differ from training classes {class_names}")
            splits["test"] = with_images(test, test_report, max_side=data_args.max_image_side, cache_dir=cache_root() / "images")
            report.notes["external_test_set"] = test_report.to_dict()
        else:
            splits = lesion_splits(dataset, data_args.val_fraction, data_args.test_fraction, data_args.split_seed)

        if data_args.extra_train_dir:
            splits["train"] = add_extra_training_images(splits["train"], data_args.extra_train_dir, data_args.task, class_names,
                                                        report, data_args.skip_bad_rows, data_args.max_image_side)

        model, processor = build_image_classifier(model_args.model_name_or_path, class_names, model_args.image_size)
        splits = {name: add_pixel_values(ds, processor) for name, ds in splits.items()}

    # Class imbalance: inverse-frequency class weights in the loss, or a balanced sampler.
    train_labels = np.asarray(splits["train"]["label"])
    counts = np.bincount(train_labels, minlength=len(class_names)).astype(float)
    class_weights = torch.tensor(counts.sum() / (len(class_names) * np.maximum(counts, 1)), dtype=torch.float32)

    def weighted_loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        loss = F.cross_entropy(logits, labels, weight=class_weights.to(logits.device), reduction="sum")
        return loss / (num_items_in_batch if num_items_in_batch is not None else labels.numel())

    def compute_metrics(eval_pred):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float32), -1).numpy()
        scores = (binary_metrics(labels, probs[:, 1], n_bootstrap=0) if len(class_names) == 2
                  else multiclass_metrics(labels, probs, class_names, n_bootstrap=0))
        out = {k: v for k, v in scores.items() if isinstance(v, (int, float)) and not k.endswith(("_ci_low", "_ci_high"))}
        if "auroc" not in out:  # a class absent from validation: select on the macro AUROC of the classes present
            per_class = [v for k, v in out.items() if k.startswith("auroc_")]
            out["auroc"] = float(np.mean(per_class)) if per_class else 0.5
        return out

    throughput = ThroughputCallback()
    trainer = LesionTrainer(
        model=model,
        args=training_args,
        # Only what the collator reads: decoding the metadata columns for every batch would cost throughput.
        train_dataset=splits["train"].select_columns(["pixels", "label"]),
        eval_dataset=splits["validation"].select_columns(["pixels", "label"]),
        # Augmented batches for training only: validation (which picks the kept checkpoint) and test see clean images.
        data_collator=ImageCollator(processor, None),
        train_data_collator=ImageCollator(processor, DermoscopyAugment()) if model_args.augment else None,
        processing_class=processor,
        compute_loss_func=weighted_loss if model_args.class_balance == "weighted_loss" else None,
        compute_metrics=compute_metrics,
        callbacks=[throughput, *(callbacks or [])],
    )
    if model_args.class_balance == "balanced_sampler":
        trainer.sample_weights = (1.0 / torch.as_tensor(counts))[torch.as_tensor(train_labels)]

    # Train!
    train_result = trainer.train(resume_from_checkpoint=resume)
    val_out = trainer.predict(splits["validation"].select_columns(["pixels", "label"]), metric_key_prefix="val")
    test_out = trainer.predict(splits["test"].select_columns(["pixels", "label"]), metric_key_prefix="test")
    # Balanced training inflates rare classes' probabilities; give the saved model the data's prevalence back: a
    # shift of the logits, folded into the head (exactly what it does to the predictions above).
    shift = prior_correction(counts) if model_args.class_balance != "none" else np.zeros(len(class_names))
    model = trainer.whole_model()  # every process: under FSDP / ZeRO-3 this gathers the weights

    if trainer.is_world_process_zero():
        out = training_args.output_dir
        if model_args.class_balance != "none":
            fold_into_head(model, shift=shift)
        save_pretrained_atomic(model, out)
        save_pretrained_atomic(processor, out)
        to_probs = lambda o: torch.softmax(torch.as_tensor(o.predictions, dtype=torch.float32) + torch.as_tensor(
            shift, dtype=torch.float32), -1).numpy()
        test_ds = splits["test"]
        write_classifier_report(
            out,
            ids=test_ds["id"],
            y_true=test_out.label_ids,
            probs=to_probs(test_out),
            class_names=class_names,
            subgroups=subgroup_frame(test_ds, data_args.subgroup_columns),
            val_true=val_out.label_ids,
            val_probs=to_probs(val_out),
            eval_args=eval_args,
            extra={
                "recipe": "lesion_classification",
                "task": "image-classification",
                "base_model": model_args.model_name_or_path or "small ViT from config (random init)",
                "dataset": str(data_args.data_dir or "synthetic HAM10000-format sample (hf-medai data lesions)"),
                "synthetic_data": is_synthetic(source),
                "data_report": report.to_dict(),
                "splits": split_report(splits, group_column=LESION_GROUP),
                "training": {
                    "global_step": trainer.state.global_step,
                    "train_loss": train_result.training_loss,
                    "best_checkpoint": trainer.state.best_model_checkpoint,
                    "best_val_auroc": trainer.state.best_metric,
                    "kept_checkpoint": kept_checkpoint(trainer.state, training_args),
                    "resumed_from": str(resume) if resume else None,
                    "loss_curve": [e["loss"] for e in trainer.state.log_history if "loss" in e],
                    "eval_loss_curve": [(e["step"], e["eval_loss"]) for e in trainer.state.log_history if "eval_loss" in e],
                    "num_parameters": sum(p.numel() for p in model.parameters()),
                    "prior_correction": (dict(zip(class_names, shift.round(4).tolist()))
                                         if model_args.class_balance != "none" else None),
                },
                "throughput": {**throughput.summary(training_args.world_size), **peak_memory_mb(),
                               "device": str(training_args.device)},
            },
        )
        finish_run(out, resolved_config(data_args, model_args, eval_args, run_args, training_args), training_args, push)
    trainer.accelerator.wait_for_everyone()
    return training_args.output_dir


if __name__ == "__main__":
    run_main(main)
