"""Clinical notes, three data-path speedups side by side in one process, as ratios against the plain HF way.

1. Tokenisation (notes/s): one batched call of the fast (Rust) tokenizer vs a Python loop calling it per note.
   The batched call encodes notes in parallel on every core (and saves Python's per-call overhead, which
   dominates for short texts): on a machine whose other cores are busy, expect little gain on long notes.
2. Training (samples/s): the clinical_outcomes recipe's path (MedTrainer, dynamic padding with
   DataCollatorWithPadding, length-grouped batches) vs a plain `Trainer` on windows padded to the maximum
   length in random batches (transformers' run_glue default, pad_to_max_length=True). Same model and
   optimiser; each side trains on a random sample of the batches its own sampler makes over the whole
   training set, so the rate is that of a full epoch.
3. Inference (notes/s): `hf_medai.models.note_windows.window_logits` (length-sorted batches, each padded to its own
   longest) vs batches in input order padded to the maximum; the logits are checked to agree.
Each comparison alternates its two sides for `--rounds` rounds and reports medians and their ratio.

Windows are the recipe's `--long_notes chunks` windows of full discharge summaries (every note gives full
windows and one shorter tail window), with the recipe's encoder (all-MiniLM-L6-v2).

    OMP_NUM_THREADS=1 python benchmarks/clinical_throughput.py   # prints a table; writes results/clinical_throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from hf_medai.clinical_tasks import SplitSpec, load_task, synthetic_mimic
from hf_medai.models.note_windows import window_dataset, window_logits
from hf_medai.models.text import build_text_model
from hf_medai.trainer import MedTrainer


def tokenisation(tokenizer, notes, max_length, rounds):
    rates = {"per_note": [], "batched": []}
    for _ in range(rounds):
        start = time.perf_counter()
        looped = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in notes]
        rates["per_note"].append(len(notes) / (time.perf_counter() - start))
        start = time.perf_counter()
        batched = tokenizer(list(notes), truncation=True, max_length=max_length)["input_ids"]
        rates["batched"].append(len(notes) / (time.perf_counter() - start))
        assert looped == batched
    return rates


def train_rate(trainer_cls, model, dataset, collator, batch_size, sampling, workdir) -> float:
    """Samples/s of one pass over `dataset`."""
    args = TrainingArguments(
        output_dir=str(workdir),
        num_train_epochs=1,
        per_device_train_batch_size=batch_size,
        learning_rate=1e-4,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        dataloader_num_workers=0,
        train_sampling_strategy=sampling,
        use_cpu=not torch.cuda.is_available(),
        seed=0,
    )
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    return len(dataset) / (time.perf_counter() - start)


@torch.no_grad()
def padded_to_max_logits(model, tokenizer, input_ids, batch_size, max_length) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(input_ids), batch_size):
        batch = tokenizer.pad(
            {"input_ids": [list(x) for x in input_ids[start : start + batch_size]]},
            padding="max_length",
            max_length=max_length,
            return_tensors="pt",
        )
        out.append(model(**batch).logits.float().numpy())
    return np.concatenate(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=600, help="synthetic MIMIC-III patients")
    p.add_argument("--max_length", type=int, default=256, help="window in tokens")
    p.add_argument("--train_batches", type=int, default=10, help="batches trained on per round and side")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--inference_notes", type=int, default=60)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "clinical_throughput.json"))
    a = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-clinical-"))
    task = load_task(SplitSpec(str(synthetic_mimic(a.patients)), task="readmission"))  # full discharge summaries
    notes = list(task.splits["train"]["text"])
    model, tokenizer = build_text_model(None, task.class_names, a.max_length)

    # 1. Tokenisation
    tok = tokenisation(tokenizer, notes, a.max_length, a.rounds)

    # 2. Training
    windows = window_dataset(task.splits["train"], tokenizer, "chunks")
    # Both sides train on a sample of whole batches of one epoch: ours, batches as its length-grouped sampler
    # makes them over ALL windows (it sorts within mega-batches of 50 batches, so a small dataset or the first
    # few steps of an epoch would not be representative); the baseline, random windows padded to the maximum.
    rng = np.random.default_rng(0)
    probe = MedTrainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(work / "probe"),
            report_to="none",
            per_device_train_batch_size=a.batch_size,
            train_sampling_strategy="group_by_length",
            use_cpu=not torch.cuda.is_available(),
        ),
        train_dataset=windows,
    )
    order = list(probe._get_train_sampler(windows))
    batches = [order[i : i + a.batch_size] for i in range(0, len(order) - a.batch_size + 1, a.batch_size)]
    picked = sorted(rng.choice(len(batches), a.train_batches, replace=False))
    columns = ["input_ids", "attention_mask", "labels"]
    ours_ds = windows.select([i for b in picked for i in batches[b]]).select_columns(columns)
    base = windows.select(rng.choice(len(windows), a.train_batches * a.batch_size, replace=False))
    padded = tokenizer.pad({"input_ids": list(base["input_ids"])}, padding="max_length", max_length=a.max_length)
    base_ds = (
        base.select_columns(["labels"])
        .add_column("input_ids", padded["input_ids"])
        .add_column("attention_mask", padded["attention_mask"])
    )
    lengths = np.asarray(windows["length"])
    train = {"baseline": [], "hf_medai": []}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    train_rate(
        MedTrainer,
        model,
        ours_ds.select(range(2 * a.batch_size)),
        DataCollatorWithPadding(tokenizer),
        a.batch_size,
        "sequential",
        work / "warmup",
    )
    for _ in range(a.rounds):
        for name in train:
            model.load_state_dict(state)
            if name == "baseline":
                rate = train_rate(Trainer, model, base_ds, None, a.batch_size, "random", work / name)
            else:
                rate = train_rate(
                    MedTrainer,
                    model,
                    ours_ds,
                    DataCollatorWithPadding(tokenizer),
                    a.batch_size,
                    "sequential",
                    work / name,
                )  # the sampler's own batches, in its order
            train[name].append(rate)

    # 3. Inference, per note (all windows of each note)
    model.load_state_dict(state)
    subset = task.splits["validation"].select(range(min(a.inference_notes, len(task.splits["validation"]))))
    held = window_dataset(subset, tokenizer, "chunks", label_column=None)
    ids = list(held["input_ids"])
    infer = {"padded_to_max": [], "hf_medai": []}
    for _ in range(a.rounds):
        start = time.perf_counter()
        base_logits = padded_to_max_logits(model, tokenizer, ids, a.batch_size, a.max_length)
        infer["padded_to_max"].append(len(subset) / (time.perf_counter() - start))
        start = time.perf_counter()
        our_logits = window_logits(model, tokenizer, ids, a.batch_size)
        infer["hf_medai"].append(len(subset) / (time.perf_counter() - start))
        assert np.allclose(base_logits, our_logits, atol=1e-3), "padding changed the logits"

    med = lambda d: {k: round(statistics.median(v), 2) for k, v in d.items()}
    result = {
        "benchmark": "clinical_throughput",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}",
        "encoder": "all-MiniLM-L6-v2 (22.7M parameters)",
        "max_length": a.max_length,
        "batch_size": a.batch_size,
        "rounds": a.rounds,
        "training_batches_per_round": a.train_batches,
        "windows": {
            "train": len(windows),
            "mean_length": round(float(lengths.mean()), 1),
            "share_at_max_length": round(float((lengths == a.max_length).mean()), 3),
            "tokens_per_batch_sampled": {
                "baseline": a.batch_size * a.max_length,
                "hf_medai": round(
                    float(np.mean([max(lengths[b]) for b in np.asarray(batches)[picked]])) * a.batch_size
                ),
            },
        },
        "tokenisation_notes_per_second": {
            "rounds": tok,
            "median": med(tok),
            "ratio_batched_over_per_note": round(med(tok)["batched"] / med(tok)["per_note"], 2),
        },
        "training_samples_per_second": {
            "rounds": train,
            "median": med(train),
            "ratio_hf_medai_over_baseline": round(med(train)["hf_medai"] / med(train)["baseline"], 2),
        },
        "inference_notes_per_second": {
            "rounds": infer,
            "median": med(infer),
            "notes": len(subset),
            "windows": len(ids),
            "ratio_hf_medai_over_padded_to_max": round(med(infer)["hf_medai"] / med(infer)["padded_to_max"], 2),
        },
    }
    print(f"{'':36s} {'baseline':>10s} {'hf_medai':>10s} {'ratio':>7s}")
    for label, key, base, ours, ratio in [
        (
            "tokenisation notes/s (per note | batched)",
            "tokenisation_notes_per_second",
            "per_note",
            "batched",
            "ratio_batched_over_per_note",
        ),
        ("training samples/s", "training_samples_per_second", "baseline", "hf_medai", "ratio_hf_medai_over_baseline"),
        (
            "inference notes/s (pad to max | sorted)",
            "inference_notes_per_second",
            "padded_to_max",
            "hf_medai",
            "ratio_hf_medai_over_padded_to_max",
        ),
    ]:
        r = result[key]
        print(f"{label:36s} {r['median'][base]:10.1f} {r['median'][ours]:10.1f} {r[ratio]:7.2f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
