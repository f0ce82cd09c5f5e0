"""Predict a hospital outcome from the clinical note: in-hospital mortality, 30-day readmission, length of stay
(binned, or days by regression) or the Charlson comorbidity group, with any text encoder.

Offline default (synthetic MIMIC-III tables, pretrained all-MiniLM-L6-v2, CPU, about 5 minutes; readmission 15):
    accelerate launch recipes/clinical_outcomes.py --output_dir runs/mortality
    accelerate launch recipes/clinical_outcomes.py --config recipes/configs/clinical_outcomes/offline_readmission.yaml
Real MIMIC with Bio_ClinicalBERT on a GPU: recipes/configs/clinical_outcomes/mimic3_bioclinicalbert_mortality.yaml.

`--task mortality,readmission` trains one shared encoder with a head per task and writes a run folder per task.
Each run folder holds the model (loads with `pipeline("text-classification", model=DIR)`, temperature folded
into the head), the card (README.md), metrics.json (with the TF-IDF baseline and, for classifiers, the counterfactual
note audit: sex words, ages, race and insurance swapped or inserted), predictions.csv, plots and run_config.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from transformers import DataCollatorWithPadding, TrainingArguments

from hf_medai.audits import write_robustness
from hf_medai.audits.notes import note_outcome_sections
from hf_medai.cards import write_card
from hf_medai.clinical_tasks import (
    DEFAULT_ENCODER,
    ClinicalDataArguments,
    check_classes,
    check_pretraining,
    dataset_label,
    load_task,
    multitask_split,
    prepare_targets,
)
from hf_medai.config import EvalArguments, RunArguments, parse_args, resolved_config
from hf_medai.data.clinical_notes import TASKS
from hf_medai.data.splits import label_subset
from hf_medai.errors import ConfigError, run_main
from hf_medai.hub import pusher
from hf_medai.io import write_yaml
from hf_medai.models.note_windows import pool_chunk_logits, sorted_by_length, window_dataset
from hf_medai.models.text import MultiTaskTextModel, build_text_model, softmax
from hf_medai.note_outcome_report import report_note_outcome
from hf_medai.run_folder import begin_run, finish_run, run_record
from hf_medai.run_outputs import headline_metrics, kept_checkpoint
from hf_medai.run_summary import print_run_summary
from hf_medai.throughput import ThroughputCallback
from hf_medai.trainer import MedTrainer


@dataclass
class DataArguments(ClinicalDataArguments):
    """The notes and split (the fields of clinical_pretraining.py too), and the outcome labels."""

    task: str = field(
        default="mortality",
        metadata={
            "help": "mortality | readmission | los | los_days | comorbidity; "
            "a comma list trains a shared encoder with a head per task."
        },
    )
    los_bins: list[float] = field(
        default_factory=lambda: [3, 7, 14], metadata={"help": "Cut points (days) of the los classes."}
    )
    label_fraction: float = field(
        default=1.0,
        metadata={
            "help": "Train on the labels of this fraction of the training patients (stratified, nested, seeded by "
            "split_seed; validation and test untouched): recipes/label_efficiency.py --modality notes."
        },
    )

    def __post_init__(self):
        self.tasks = [t.strip() for t in self.task.split(",") if t.strip()]
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"task must be one or more distinct of {TASKS}, got {self.task!r}")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction {self.label_fraction} must be in (0, 1]")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Encoder hub id or folder (Bio_ClinicalBERT, GatorTron, ModernBERT, a clinical_pretraining run, ...). Default: all-MiniLM-L6-v2 (offline)."
        },
    )
    max_length: int = field(default=128, metadata={"help": "Encoder window in tokens, special tokens included."})
    long_notes: Literal["head", "head_tail", "chunks"] = field(
        default="head",
        metadata={"help": "Notes longer than the window: head | head_tail (truncate) | chunks (pool chunk logits)."},
    )
    pooling: Literal["mean", "max"] = field(
        default="mean", metadata={"help": "How chunk logits pool per note: mean | max (long_notes=chunks)."}
    )
    stride: int = field(default=0, metadata={"help": "Tokens shared by consecutive chunks."})
    head_tokens: int | None = field(
        default=None, metadata={"help": "head_tail: tokens kept from the start (default a quarter of the window)."}
    )
    max_chunks: int | None = field(
        default=None, metadata={"help": "chunks: keep at most this many per note (default all)."}
    )
    class_balance: Literal["weighted_loss", "none"] = field(
        default="weighted_loss",
        metadata={"help": "weighted_loss (inverse frequency; its prior shift is undone in the saved head) | none."},
    )
    temperature_scaling: bool = field(
        default=True, metadata={"help": "Fit a temperature on validation and fold it into the saved head."}
    )
    baseline: bool = field(
        default=True, metadata={"help": "Also fit and report the TF-IDF + logistic regression baseline."}
    )
    allow_pretraining_overlap: bool = field(
        default=False,
        metadata={"help": "Run even if the encoder was pretrained on notes of this run's validation/test patients."},
    )


DEFAULTS = dict(
    output_dir="runs/clinical_outcomes",
    num_train_epochs=2,
    learning_rate=1e-4,
    weight_decay=0.01,
    warmup_steps=0.1,
    per_device_train_batch_size=8,
    per_device_eval_batch_size=64,
    train_sampling_strategy="group_by_length",  # with dynamic padding: batches of similar length pad little
    eval_strategy="epoch",
    save_strategy="epoch",
    save_total_limit=1,
    load_best_model_at_end=True,
    metric_for_best_model="auto",  # auroc (classification), mae (los_days), loss (several tasks)
    logging_steps=10,
    report_to="none",
    dataloader_num_workers=0,
)


class NoteTrainer(MedTrainer):
    """Evaluates in dataset order. transformers 5.24 samples EVALUATION batches by length too under
    group_by_length, so predictions no longer line up with the windows' notes (checked: pooled validation
    AUROC 0.50 for a model that scores 0.83). The windows are sorted by length beforehand instead."""

    def _get_eval_sampler(self, eval_dataset):
        return torch.utils.data.SequentialSampler(eval_dataset) if eval_dataset is not None else None


CONFIG_DATACLASSES = (DataArguments, ModelArguments, EvalArguments, RunArguments, TrainingArguments)


def main(args=None, callbacks=None):
    data_args, model_args, eval_args, run_args, training_args = parse_args(
        *CONFIG_DATACLASSES, args=args, defaults=DEFAULTS
    )
    resume, push = begin_run(training_args, run_args)

    # Data: admissions -> leak-free note text -> patient-level splits -> token windows
    with training_args.main_process_first(desc="data"):
        source = data_args.source()
        tasks = [
            load_task(
                data_args.split_spec(source, name, data_args.los_bins), data_args.skip_bad_rows, data_args.phi_policy
            )
            for name in data_args.tasks
        ]
        check_classes(tasks)
        if data_args.label_fraction < 1:
            for t in tasks:
                full = len(t.splits["train"])
                label = None if t.regression else "label"
                t.splits["train"] = label_subset(
                    t.splits["train"], data_args.label_fraction, "subject_id", label, data_args.split_seed
                )
                kept = t.splits["train"]["label"]
                t.report.notes["label_fraction"] = {
                    "fraction": data_args.label_fraction,
                    "train_admissions": len(kept),
                    "of": full,
                    "label_counts": None if t.regression else {c: kept.count(i) for i, c in enumerate(t.class_names)},
                }
        check_pretraining(model_args.model_name_or_path, tasks, model_args.allow_pretraining_overlap)
        models = {
            t.name: build_text_model(model_args.model_name_or_path, t.class_names, model_args.max_length)
            for t in tasks
        }
        tokenizer = next(iter(models.values()))[1]
        win = dict(
            strategy=model_args.long_notes,
            stride=model_args.stride,
            head_tokens=model_args.head_tokens,
            max_chunks=model_args.max_chunks,
        )
        for t in tasks:
            t.windows = {
                name: sorted_by_length(window_dataset(split, tokenizer, **win)) for name, split in t.splits.items()
            }

    # Model: one encoder, a head per task. Class imbalance: inverse-frequency weights in the loss; regression
    # targets standardised (both undone at save).
    loss_fns = {t.name: prepare_targets(t, model_args.class_balance) for t in tasks}
    multi = len(tasks) > 1
    if multi:  # one encoder, a head per task; checkpoints chosen on the validation loss
        model = MultiTaskTextModel({t.name: models[t.name][0] for t in tasks}, loss_fns)
        train, evaluation = multitask_split(tasks, "train"), multitask_split(tasks, "validation")
        training_args.prediction_loss_only = True
    else:
        (t,) = tasks
        model, train, evaluation = models[t.name][0], t.windows["train"], t.windows["validation"]
    if training_args.metric_for_best_model in ("auto", "eval_auto"):
        metric = "loss" if multi else "mae" if tasks[0].regression else "auroc"
        training_args.metric_for_best_model, training_args.greater_is_better = metric, metric == "auroc"

    def compute_metrics(eval_pred):  # pooled per note, so checkpoints are chosen on what the test reports
        t = tasks[0]
        logits = pool_chunk_logits(
            eval_pred.predictions,
            t.windows["validation"]["example_index"],
            model_args.pooling,
            len(t.splits["validation"]),
        )
        y = np.asarray(t.splits["validation"]["label"])
        if t.regression:
            return {"mae": float(np.mean(np.abs(logits[:, 0] * t.target[1] + t.target[0] - y)))}
        m = headline_metrics(y, softmax(logits), t.class_names, eval_args.__class__(n_bootstrap=0))
        return {"auroc": m["auroc"] if m["auroc"] is not None else 0.5}

    mean_tokens = float(np.mean(train["length"])) if "length" in train.column_names else None
    throughput = ThroughputCallback(tokens_per_sample=mean_tokens)
    trainer = NoteTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=DataCollatorWithPadding(tokenizer),  # dynamic padding: each batch to its own longest
        processing_class=tokenizer,
        compute_loss_func=None
        if multi
        else lambda out, y, num_items_in_batch=None: (
            loss_fns[tasks[0].name](out["logits"], y) / (num_items_in_batch or y.shape[0])
        ),
        compute_metrics=None if multi else compute_metrics,
        callbacks=[throughput, *(callbacks or [])],
    )

    if multi and trainer.is_sharded:
        # The shared encoder runs once per task present in a batch, so processes would make different numbers of
        # FSDP / ZeRO-3 gathers and hang. These encoders fit one GPU: DDP (multi_gpu.yaml) is the right tool.
        raise ConfigError(
            f"--tasks {' '.join(data_args.tasks)}: several tasks on a shared encoder cannot be trained "
            "with FSDP or DeepSpeed ZeRO-3. Launch with recipes/accelerate/multi_gpu.yaml (DDP) or "
            "deepspeed_zero2.yaml, or train one task per run."
        )

    # Train!
    train_result = trainer.train(resume_from_checkpoint=resume)
    model = trainer.whole_model()  # every process: under FSDP / ZeRO-3 this gathers the weights

    if trainer.is_world_process_zero():
        root = training_args.output_dir
        config = resolved_config(data_args, model_args, eval_args, run_args, training_args)
        if multi:  # the shared run's config; each task's folder gets its own below
            write_yaml(f"{root}/run_config.yaml", config)
        for t in tasks:
            out = f"{root}/{t.name}" if multi else root
            task_model = model.task_model(t.name) if multi else model
            log = trainer.state.log_history
            record = run_record(
                "clinical_outcomes",
                "text-classification",
                trainer=trainer,
                train_result=train_result,
                resumed_from=resume,
                throughput=throughput,
                model=task_model,
                training={
                    "best_checkpoint": trainer.state.best_model_checkpoint,
                    "best_metric": trainer.state.best_metric,
                    "kept_checkpoint": kept_checkpoint(trainer.state, training_args),
                    "shared_encoder_tasks": data_args.tasks if multi else None,
                    "eval_curve": [
                        (e["step"], e.get("eval_auroc", e.get("eval_mae", e.get("eval_loss"))))
                        for e in log
                        if "eval_loss" in e
                    ],
                },
                base_model=model_args.model_name_or_path or DEFAULT_ENCODER,
                data_report=t.report.to_dict(),
                **data_args.dataset_facts(source),
            )

            # Evaluate, calibrate, save and report: validation and test scored per note, TF-IDF baseline beside
            report_note_outcome(
                t,
                task_model,
                tokenizer,
                out,
                model_args,
                eval_args,
                training_args,
                data_args.subgroup_columns,
                extra={
                    **record.to_dict(),
                    "outcome": t.name,
                    "dataset_label": dataset_label(source, t),
                    "population": t.extra["population"],
                },
            )

            # Robustness: the test notes with sex words, ages, race and insurance swapped (or inserted), rescored
            if not t.regression and eval_args.robustness_audit:
                batch = training_args.per_device_eval_batch_size
                audit = note_outcome_sections(
                    out, task_model, tokenizer, t.splits["test"], eval_args.n_bootstrap, batch
                )
                write_robustness(out, audit)

            # Card (README.md + CHAI) and push if asked, per task folder
            hub_id = training_args.hub_model_id if not multi else f"{training_args.hub_model_id}-{t.name}"
            push_step = [pusher(hub_id, private=training_args.hub_private_repo is not False)] if push else []
            task_config = {**config, "task": t.name, "output_dir": out} if multi else config
            finish_run(out, task_config, [write_card, *push_step])

        # Summary: one block per task
        print_run_summary(root)
    trainer.accelerator.wait_for_everyone()
    return training_args.output_dir


if __name__ == "__main__":
    run_main(main)
