"""Training tokens/s and peak memory: the medqa_lora recipe's training path vs plain peft + `Trainer` padding every
example to the maximum length; and LoRA vs full fine-tuning peak memory. Same model, same questions, same settings.

Configurations (each runs in a fresh child process, so its peak memory is its own; rounds alternate them so
machine noise hits all):
    hf_medai          the recipe: LoRA on all linear layers, `--batching auto` (length-grouped dynamic padding, or
                      padding-free packing with flash attention), MedTrainer
    baseline          plain peft `get_peft_model` (same LoraConfig) + `Trainer`, every example padded to max_length
    hf_medai_packing  the recipe with `--batching packing` (padding-free; on CPU/sdpa the packed row's block mask is
                      dense, so it is informative, not the default there)
    full_finetune     the recipe's data path, every weight trained (AdamW): the memory LoRA saves

Tokens/s counts real (non-pad) tokens only, the work that matters; the first optimizer step (warm-up) is left out.

    python benchmarks/qa_lora_throughput.py                 # SmolLM2-135M-Instruct (offline default model)
    python benchmarks/qa_lora_throughput.py --model tiny    # a tiny random Llama: checks the script in seconds
Writes benchmarks/results/qa_lora_throughput.json and prints a table with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _recipes import load_recipe

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("hf_medai", "baseline", "hf_medai_packing", "full_finetune")


def _recipe():
    return load_recipe("medqa_lora")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(config: str, a: argparse.Namespace) -> dict:
    """Train `a.steps` optimizer steps in this process with one configuration; return its measurements."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    from hf_medai.data.medqa import load_qa, sample_path, tokenize_dataset
    from hf_medai.data.splits import question_split
    from hf_medai.models.causal_lm import tiny_llama
    from hf_medai.models.lora import add_lora, load_base_model, make_collator, resolve_batching
    from hf_medai.trainer import MedTrainer

    recipe = _recipe()
    torch.manual_seed(0)
    model_args = recipe.ModelArguments(batching="packing" if config == "hf_medai_packing" else "auto")
    if a.model == "tiny":
        model, tokenizer = tiny_llama(seed=0)
    else:
        from hf_medai.models.causal_lm import default_causal_lm_path

        model, tokenizer = load_base_model(a.model or default_causal_lm_path())
    dataset, report = load_qa(sample_path("medqa"))
    train, _ = question_split(dataset, 0.3, 0)
    rows = tokenize_dataset(train, tokenizer, a.max_length, "letter", report).remove_columns(["id"])
    model.config.use_cache = False
    batching = resolve_batching(model_args.batching, model)
    group_by_length = False
    if config == "baseline":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=model_args.lora_r,
                lora_alpha=model_args.lora_alpha,
                lora_dropout=model_args.lora_dropout,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            ),
        )
        pad = tokenizer.pad_token_id

        def to_max_length(ex):  # what the usual examples do: tokenizer(..., padding="max_length")
            n = a.max_length - len(ex["input_ids"])
            return {
                "input_ids": ex["input_ids"] + [pad] * n,
                "attention_mask": ex["attention_mask"] + [0] * n,
                "labels": ex["labels"] + [-100] * n,
            }

        rows = rows.map(to_max_length)
        collator, batching = DataCollatorWithPadding(tokenizer), "max_length"
    else:
        if config != "full_finetune":
            lora = (model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout, model_args.lora_target_modules)
            model = add_lora(model, *lora)
        collator = make_collator(batching, tokenizer, model)
        group_by_length = batching == "length_grouped"
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    real_tokens: list[int] = []

    def counting(features):  # real tokens of every batch, in step order (num_workers=0: called once per step)
        real_tokens.append(
            sum(int(sum(f["attention_mask"])) if "attention_mask" in f else len(f["input_ids"]) for f in features)
        )
        return collator(features)

    class Clock(TrainerCallback):
        stamps: list[float] = []

        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.stamps.append(time.perf_counter())

    clock = Clock()
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-qa-"),
        max_steps=a.steps,
        learning_rate=2e-4,
        per_device_train_batch_size=a.batch_size,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        seed=0,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        use_cpu=not torch.cuda.is_available(),
    )
    trainer_cls = Trainer if config == "baseline" else MedTrainer
    trainer = trainer_cls(model=model, args=args, train_dataset=rows, data_collator=counting, callbacks=[clock])
    rss_before = _rss_mb()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    seconds = clock.stamps[-1] - clock.stamps[0]  # steps 2..N: the first step warms up
    tokens = sum(real_tokens[1 : a.steps])
    padded = a.batch_size * a.max_length if config == "baseline" else None
    out = {
        "config": config,
        "batching": batching,
        "trainable_parameters": trainable,
        "tokens_per_second": tokens / seconds,
        "steps_timed": a.steps - 1,
        "real_tokens_timed": tokens,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_training_mb": rss_before,
        "pad_fraction": (1 - tokens / ((a.steps - 1) * padded)) if padded else None,
    }
    out["training_rss_increase_mb"] = out["peak_rss_mb"] - rss_before
    if torch.cuda.is_available():
        out["peak_accelerator_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="hub id or folder; default SmolLM2-135M-Instruct; 'tiny' for a check")
    p.add_argument(
        "--steps", type=int, default=5, help="optimizer steps per configuration and round (first = warm-up)"
    )
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=4, help="the recipe's per_device_train_batch_size")
    p.add_argument("--max_length", type=int, default=512, help="the recipe's max_length; the baseline pads to it")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "qa_lora_throughput.json"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:  # one configuration, in this fresh process
        print("RESULT " + json.dumps(run_one(a.child, a)), flush=True)
        return 0

    configs = a.configs.split(",")
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    forward = ["--steps", str(a.steps), "--batch_size", str(a.batch_size), "--max_length", str(a.max_length)]
    forward += ["--model", a.model] if a.model else []
    for _ in range(a.rounds):
        for config in configs:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", config, *forward], capture_output=True, text=True, cwd=ROOT
            )
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.stderr.write(proc.stderr[-4000:])
                raise SystemExit(f"configuration {config} failed (exit {proc.returncode})")
            runs[config].append(json.loads(lines[-1][len("RESULT ") :]))
            print(
                f"{config:17s} {runs[config][-1]['tokens_per_second']:9.1f} tokens/s  "
                f"peak RSS {runs[config][-1]['peak_rss_mb']:7.0f} MB",
                flush=True,
            )

    def median(config, key):
        values = [r[key] for r in runs.get(config, []) if r.get(key) is not None]
        return statistics.median(values) if values else None

    import torch

    med = {
        c: {
            k: median(c, k)
            for k in (
                "tokens_per_second",
                "peak_rss_mb",
                "training_rss_increase_mb",
                "peak_accelerator_memory_mb",
                "pad_fraction",
            )
        }
        for c in configs
    }
    memory_key = "peak_accelerator_memory_mb" if torch.cuda.is_available() else "training_rss_increase_mb"

    def ratio(x, y, key):
        return round(med[x][key] / med[y][key], 3) if x in med and y in med and med[x][key] and med[y][key] else None

    result = {
        "benchmark": "qa_lora_throughput",
        "what": "training tokens/s (real tokens, warm-up step excluded) and peak memory, LoRA r=16 on all linear "
        "layers, the bundled MedQA-format sample's training split, same model, seed and optimiser settings",
        "model": a.model or "SmolLM2-135M-Instruct (hf-medai offline default)",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}",
        "steps": a.steps,
        "rounds": a.rounds,
        "batch_size": a.batch_size,
        "max_length": a.max_length,
        "memory_measure": memory_key,
        "runs": runs,
        "median": med,
        "ratio_tokens_per_second_hf_medai_over_baseline": ratio("hf_medai", "baseline", "tokens_per_second"),
        "ratio_peak_memory_hf_medai_over_baseline": ratio("hf_medai", "baseline", memory_key),
        "ratio_tokens_per_second_packing_over_baseline": ratio("hf_medai_packing", "baseline", "tokens_per_second"),
        "ratio_peak_memory_full_finetune_over_lora": ratio("full_finetune", "hf_medai", memory_key),
        "note": "Memory on CPU is the peak RSS increase during training (the child's peak minus its RSS after "
        "loading model and data); on a GPU, torch's peak allocated memory during training.",
    }
    print(f"\ntokens/s hf_medai / baseline         = {result['ratio_tokens_per_second_hf_medai_over_baseline']}")
    print(
        f"peak memory hf_medai / baseline      = {result['ratio_peak_memory_hf_medai_over_baseline']}  ({memory_key})"
    )
    print(f"tokens/s packing / baseline          = {result['ratio_tokens_per_second_packing_over_baseline']}")
    print(
        f"peak memory full fine-tune / LoRA    = {result['ratio_peak_memory_full_finetune_over_lora']}  ({memory_key})"
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
