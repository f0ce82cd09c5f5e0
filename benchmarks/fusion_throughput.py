"""Training samples/s: the fusion recipes' models vs their single-modality recipes, on the same data.

Two comparisons, each side by side in one process, alternating A/B rounds so machine noise hits both, with the same
examples in the same order, the same batch size and the same optimiser settings (plain `Trainer`):
1. Lesion: A = what recipes/lesion_classification.py trains (the small ViT as `ViTForImageClassification`, cached
   uint8 pixels, `ImageCollator` with `DermoscopyAugment`); B = what recipes/lesion_fusion.py trains (`FusionModel`
   around the same ViT config, late fusion, with the same pixels plus the age/sex/site arrays of a `TabularSchema`
   through `TabularCollator`).
2. Note: A = what recipes/clinical_outcomes.py trains (all-MiniLM-L6-v2 as `AutoModelForSequenceClassification`,
   `DataCollatorWithPadding`); B = what recipes/clinical_fusion.py trains (`FusionModel` around the same encoder
   with the recipe's structured features: labs/vitals of the first 24 hours and demographics, built by the recipe's
   own `before_prediction_time` and `structured_frames`). Same tokenised admission notes (max_length 128).
The ratio is fusion / single modality; the issue asks that fusion cost under 10% throughput (ratio > 0.9).

    OMP_NUM_THREADS=2 python benchmarks/fusion_throughput.py   # prints a table; writes results/fusion_throughput.json
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

import torch
from _recipes import load_recipe
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, ViTConfig

from hf_medai.clinical_tasks import load_task
from hf_medai.data.image_batches import DermoscopyAugment, ImageCollator, add_pixel_values
from hf_medai.data.images import with_images
from hf_medai.data.lesions import load_lesions
from hf_medai.data.synthetic.lesions import write_ham10000
from hf_medai.data.tabular import KEYS, TabularCollator, TabularSchema, with_tabular
from hf_medai.models.fusion import FusionModel
from hf_medai.models.text import build_text_model, default_encoder_path
from hf_medai.models.vision import TINY_VIT, build_image_classifier

ROOT = Path(__file__).resolve().parents[1]


def train_rate(model, dataset, collator, args_kw, steps) -> float:
    args = TrainingArguments(
        max_steps=steps,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        **args_kw,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    return steps * args.per_device_train_batch_size / (time.perf_counter() - start)


def side_by_side(arms, args_kw, steps, rounds, warmup_steps) -> dict[str, list[float]]:
    """arms: name -> (build_model, dataset, collator). Each round trains every arm once from the same seed."""
    for build, d, c in arms.values():  # warm-up: first-call costs (allocator, kernels, datasets' caches)
        torch.manual_seed(0)
        train_rate(build(), d, c, args_kw, warmup_steps)
    rates = {name: [] for name in arms}
    for _ in range(rounds):
        for name, (build, d, c) in arms.items():
            torch.manual_seed(0)
            rates[name].append(train_rate(build(), d, c, args_kw, steps))
    return rates


def lesion_arms(a, work):
    write_ham10000(work / "ham", n=a.n, seed=0)
    ds, classes, report = load_lesions(work / "ham", "ham10000", "binary")
    ds = with_images(ds, report, max_side=512, cache_dir=work / "cache")
    _, processor = build_image_classifier(None, classes, a.image_size)
    pixels = add_pixel_values(ds, processor)
    # recipes/lesion_fusion.py: schema on the (training) rows' metadata, arrays as columns beside the pixels
    categorical, numeric = ["sex", "site"], ["age"]
    frame = ds.select_columns([*categorical, *numeric]).to_pandas()
    schema = TabularSchema.fit(frame, categorical, numeric)
    fused_ds = with_tabular(pixels, schema, frame).select_columns(["pixels", "label", *KEYS])
    image_ds = pixels.select_columns(["pixels", "label"])
    backbone = ViTConfig(image_size=a.image_size, **TINY_VIT)
    arms = {
        "image_only": (
            lambda: build_image_classifier(None, classes, a.image_size)[0],
            image_ds,
            ImageCollator(processor, DermoscopyAugment()),
        ),
        "fused": (
            lambda: FusionModel.from_backbone(backbone, schema, classes, "image"),
            fused_ds,
            TabularCollator(ImageCollator(processor, DermoscopyAugment())),
        ),
    }
    facts = {"images": len(ds), "features": schema.names, "n_categorical": 2, "n_numeric": 1}
    return arms, facts


def note_arms(a, work):
    clinical = load_recipe("clinical_fusion")
    data_args = clinical.DataArguments(synthetic_patients=a.patients)
    source = data_args.source()
    task = load_task(data_args.split_spec(source, data_args.task, data_args.los_bins))
    splits = clinical.before_prediction_time(dict(task.splits), data_args.window_hours, task.report)
    frames = clinical.structured_frames(splits, source, data_args, task.report)
    categorical = data_args.demographics_categorical
    schema = TabularSchema.fit(frames["train"], categorical, [c for c in frames["train"] if c not in categorical])
    encoder = default_encoder_path()
    _, tokenizer = build_text_model(encoder, task.class_names, a.max_length)

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=a.max_length)

    train = splits["train"].map(tokenize, batched=True, desc="tokenizing")
    columns = ["input_ids", "attention_mask", "label"]
    note_ds = train.select_columns(columns)
    fused_ds = with_tabular(train, schema, frames["train"]).select_columns([*columns, *KEYS])
    arms = {
        "note_only": (
            lambda: build_text_model(encoder, task.class_names, a.max_length)[0],
            note_ds,
            DataCollatorWithPadding(tokenizer),
        ),
        "fused": (
            lambda: FusionModel.from_backbone(encoder, schema, task.class_names, "text"),
            fused_ds,
            TabularCollator(DataCollatorWithPadding(tokenizer)),
        ),
    }
    lengths = [len(x) for x in train["input_ids"]]
    facts = {
        "notes": len(train),
        "mean_tokens": round(statistics.mean(lengths), 1),
        "n_categorical": len(schema.categorical),
        "n_numeric": len(schema.numeric),
    }
    return arms, facts


def summary(rates: dict[str, list[float]], single: str) -> dict:
    med = {k: round(statistics.median(v), 2) for k, v in rates.items()}
    return {
        "rounds": {k: [round(r, 2) for r in v] for k, v in rates.items()},
        "median": med,
        "ratio_fused_over_single": round(med["fused"] / med[single], 3),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="synthetic lesion images")
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--image_batch_size", type=int, default=64)
    p.add_argument("--image_steps", type=int, default=30, help="optimizer steps per round, lesion part")
    p.add_argument("--patients", type=int, default=200, help="synthetic MIMIC-III patients")
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--text_batch_size", type=int, default=16)
    p.add_argument("--text_steps", type=int, default=6, help="optimizer steps per round, note part")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--part", choices=["both", "lesion", "note"], default="both")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "fusion_throughput.json"))
    a = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-fusion-"))
    result = {
        "benchmark": "fusion_throughput",
        "what": "training samples/s, fused model (primary + tabular, late fusion) vs the single-modality recipe's "
        "model, plain Trainer, same examples, order, batch size and optimiser settings",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}",
        "rounds": a.rounds,
    }
    if a.part in ("both", "lesion"):
        arms, facts = lesion_arms(a, work)
        kw = dict(output_dir=str(work / "lesion"), per_device_train_batch_size=a.image_batch_size)
        rates = side_by_side(arms, dict(kw, learning_rate=1e-3, seed=0), a.image_steps, a.rounds, 3)
        result["lesion"] = {
            "single": "ViTForImageClassification (recipes/lesion_classification.py)",
            "fused": "FusionModel image + age/sex/site (recipes/lesion_fusion.py)",
            "batch_size": a.image_batch_size,
            "image_size": a.image_size,
            "steps_per_round": a.image_steps,
            **facts,
            "samples_per_second": summary(rates, "image_only"),
        }
    if a.part in ("both", "note"):
        arms, facts = note_arms(a, work)
        kw = dict(output_dir=str(work / "note"), per_device_train_batch_size=a.text_batch_size)
        rates = side_by_side(arms, dict(kw, learning_rate=1e-4, seed=0), a.text_steps, a.rounds, 2)
        result["note"] = {
            "single": "all-MiniLM-L6-v2 AutoModelForSequenceClassification (recipes/clinical_outcomes.py)",
            "fused": "FusionModel note + structured EHR (recipes/clinical_fusion.py)",
            "batch_size": a.text_batch_size,
            "max_length": a.max_length,
            "steps_per_round": a.text_steps,
            **facts,
            "samples_per_second": summary(rates, "note_only"),
        }
    print(f"{'':8s} {'single':>8s} {'fused':>8s} {'ratio':>7s}  rounds (single | fused)")
    for part, single in (("lesion", "image_only"), ("note", "note_only")):
        if part in result:
            s = result[part]["samples_per_second"]
            rounds = lambda k: ", ".join(f"{r:.1f}" for r in s["rounds"][k])  # noqa: E731
            print(
                f"{part:8s} {s['median'][single]:8.1f} {s['median']['fused']:8.1f} "
                f"{s['ratio_fused_over_single']:7.3f}  {rounds(single)} | {rounds('fused')}"
            )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
