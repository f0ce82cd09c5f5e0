"""Continue masked-language-model pre-training of a text encoder on clinical notes (NYUTron's first stage),
reporting held-out perplexity before and after. The run folder is a starting point for clinical_outcomes.py.

Offline default (synthetic MIMIC-III discharge summaries, pretrained all-MiniLM-L6-v2, CPU, a few minutes):
    accelerate launch recipes/clinical_pretraining.py --output_dir runs/notes_mlm
    accelerate launch recipes/clinical_outcomes.py --model_name_or_path runs/notes_mlm --output_dir runs/mortality_from_mlm
Real MIMIC with Bio_ClinicalBERT on a GPU: recipes/configs/clinical_pretraining/mimic3_bioclinicalbert.yaml.

Only the notes of the TRAINING patients of a patient-level split are read (the split of `--task`, with the same
arguments as clinical_outcomes.py); perplexity is measured on validation patients' notes. metrics.json records
the split, and clinical_outcomes.py re-derives it to check that no validation or test patient's notes were
pretrained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling, TrainingArguments

from hf_medai.clinical_tasks import DEFAULT_ENCODER, ClinicalDataArguments, dataset_label, load_task
from hf_medai.config import RunArguments, parse_args, resolved_config
from hf_medai.data.clinical_notes import TASKS
from hf_medai.errors import run_main
from hf_medai.hub import finish_run
from hf_medai.io import save_pretrained_atomic, write_json
from hf_medai.models.note_windows import window_dataset
from hf_medai.models.text import default_encoder_path, fixed_masks, masked_lm_nll, perplexity
from hf_medai.run_folder import begin_run, run_record
from hf_medai.throughput import ThroughputCallback
from hf_medai.trainer import MedTrainer


@dataclass
class DataArguments(ClinicalDataArguments):
    """The notes and split of clinical_outcomes.py (the same fields, so both recipes split patients alike)."""

    note_sections: Literal["auto", "admission", "full"] = field(
        default="full", metadata={"help": "Text to pretrain on: full (whole discharge summaries) | admission | auto."}
    )
    eval_windows: int = field(default=256, metadata={"help": "Held-out windows scored for perplexity (0: all)."})

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Encoder hub id or folder (Bio_ClinicalBERT, RoBERTa, ModernBERT, ...). Default: all-MiniLM-L6-v2 (offline)."
        },
    )
    max_length: int = field(
        default=128,
        metadata={"help": "Window in tokens (special tokens included); notes are cut into consecutive windows."},
    )
    stride: int = field(default=0, metadata={"help": "Tokens shared by consecutive windows."})
    mlm_probability: float = field(
        default=0.15, metadata={"help": "Fraction of tokens masked (80% [MASK], 10% random, 10% kept)."}
    )
    n_bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples (of notes) for the perplexity CIs."})


DEFAULTS = dict(
    output_dir="runs/clinical_pretraining",
    max_steps=60,
    learning_rate=1e-4,
    weight_decay=0.01,
    warmup_steps=0.1,
    per_device_train_batch_size=16,
    per_device_eval_batch_size=16,  # the masked-LM logits of a batch are batch x length x vocabulary floats
    train_sampling_strategy="group_by_length",
    eval_strategy="no",  # perplexity is measured before and after, on fixed masks
    save_strategy="steps",
    save_steps=30,
    save_total_limit=1,
    logging_steps=10,
    report_to="none",
    dataloader_num_workers=0,
)


CONFIG_DATACLASSES = (DataArguments, ModelArguments, RunArguments, TrainingArguments)


def main(args=None, callbacks=None):
    data_args, model_args, run_args, training_args = parse_args(*CONFIG_DATACLASSES, args=args, defaults=DEFAULTS)
    resume, push = begin_run(training_args, run_args)

    # Data: the training patients' notes -> token windows; validation patients' notes -> fixed masks
    with training_args.main_process_first(desc="data"):
        source = data_args.source()
        spec = data_args.split_spec(source, data_args.task)
        data = load_task(spec, data_args.skip_bad_rows, data_args.phi_policy)
        path = model_args.model_name_or_path or default_encoder_path()
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        tokenizer.model_max_length = model_args.max_length
        model, loading = AutoModelForMaskedLM.from_pretrained(
            path, use_safetensors=True, trust_remote_code=False, output_loading_info=True
        )
        train = window_dataset(data.splits["train"], tokenizer, "chunks", model_args.stride, label_column=None)
        heldout = window_dataset(data.splits["validation"], tokenizer, "chunks", model_args.stride, label_column=None)
        if data_args.eval_windows and len(heldout) > data_args.eval_windows:
            keep = np.sort(np.random.default_rng(0).choice(len(heldout), data_args.eval_windows, replace=False))
            heldout = heldout.select(keep)
        heldout = fixed_masks(heldout, tokenizer, model_args.mlm_probability, seed=0)

    note_of_window = np.asarray(heldout["example_index"])

    def heldout_perplexity(model):
        nll, count = masked_lm_nll(model, tokenizer, heldout, training_args.per_device_eval_batch_size)
        out = perplexity(nll, count, note_of_window, model_args.n_bootstrap, seed=0)
        out["subgroups"] = subgroup_perplexity(
            nll, count, note_of_window, data.splits["validation"], data_args.subgroup_columns
        )
        return out

    # Model: the encoder's perplexity before training, then the Trainer with dynamic masking
    before = heldout_perplexity(model) if training_args.process_index == 0 else None
    throughput = ThroughputCallback(tokens_per_sample=float(np.mean(train["length"])))
    trainer = MedTrainer(
        model=model,
        args=training_args,
        train_dataset=train.select_columns(["input_ids", "attention_mask"]),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=model_args.mlm_probability),
        processing_class=tokenizer,
        callbacks=[throughput, *(callbacks or [])],
    )

    # Train!
    train_result = trainer.train(resume_from_checkpoint=resume)
    model = trainer.whole_model()  # every process: under FSDP / ZeRO-3 this gathers the weights

    if trainer.is_world_process_zero():
        out = training_args.output_dir
        # Evaluate: held-out perplexity on the same fixed masks as before training
        after = heldout_perplexity(model)

        # Save: the encoder with its MLM head, and the tokenizer
        save_pretrained_atomic(model, out)
        save_pretrained_atomic(tokenizer, out)

        # Report: metrics.json (the run record + perplexities + the split clinical_outcomes checks against)
        record = run_record(
            "clinical_pretraining",
            "fill-mask",
            trainer=trainer,
            train_result=train_result,
            resumed_from=resume,
            throughput=throughput,
            model=model,
            training={"epochs": trainer.state.epoch},
            base_model=model_args.model_name_or_path or DEFAULT_ENCODER,
            data_report=data.report.to_dict(),
            **data_args.dataset_facts(source),
        )
        write_json(
            f"{out}/metrics.json",
            {
                **record.to_dict(),
                "dataset_label": dataset_label(source, data),
                "perplexity_before": before["perplexity"],
                "perplexity_before_ci_low": before["perplexity_ci_low"],
                "perplexity_before_ci_high": before["perplexity_ci_high"],
                "perplexity": after["perplexity"],
                "perplexity_ci_low": after["perplexity_ci_low"],
                "perplexity_ci_high": after["perplexity_ci_high"],
                "mlm_head_newly_initialised": bool(loading["missing_keys"]),  # e.g. a sentence-embedding checkpoint
                "subgroups": {"before": before["subgroups"], "after": after["subgroups"]},
                "heldout": {
                    "split": "validation",
                    "notes": after.get("notes"),
                    "windows": after["windows"],
                    "masked_tokens": after["masked_tokens"],
                    "mlm_probability": model_args.mlm_probability,
                    "masks": "fixed (seed 0): the same masked tokens before and after",
                    "n_bootstrap": model_args.n_bootstrap,
                },
                "pretraining_split": spec.to_dict(),
                "population": data.extra["population"],
                "pretraining_data": {
                    "notes": len(data.splits["train"]),
                    "windows": len(train),
                    "tokens": int(np.sum(train["length"])),
                    "patients": len(set(data.splits["train"]["subject_id"])),
                },
            },
        )

        # Card (README.md + CHAI), push if asked, summary
        finish_run(out, resolved_config(data_args, model_args, run_args, training_args), training_args, push)
    trainer.accelerator.wait_for_everyone()
    return training_args.output_dir


def subgroup_perplexity(nll, count, note_of_window, notes, columns) -> dict:
    """Held-out perplexity per subgroup (no interval): does the encoder model some patients' notes worse?"""
    out = {}
    for column in [c for c in columns if c in notes.column_names]:
        group_of_window = np.asarray([str(v) for v in notes.with_format(None)[column]])[note_of_window]
        out[column] = {
            g: {
                "perplexity": perplexity(nll[w], count[w], n_bootstrap=0)["perplexity"],
                "notes": int(len(set(note_of_window[w]))),
                "masked_tokens": int(count[w].sum()),
            }
            for g in sorted(set(group_of_window))
            if (w := group_of_window == g).any()
        }
    return out


if __name__ == "__main__":
    run_main(main)
