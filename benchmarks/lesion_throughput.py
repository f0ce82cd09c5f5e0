"""Training images/s: the lesion recipe's data path vs a plain `Trainer` + `AutoModelForImageClassification`.

Same model (the recipe's small ViT), same images, same optimiser settings, side by side in one process,
alternating A/B rounds so machine noise hits both. Baseline: the usual HF example data path
(`set_transform` running the image processor on decoded images per batch, no augmentation). Ours: pixels
resized once and cached, dermoscopy augmentation on whole uint8 batches in the collator.

    python benchmarks/lesion_throughput.py            # prints a table and the ratio; writes results/lesion_throughput.json
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
from transformers import Trainer, TrainingArguments

from hf_medai.data.image_batches import DermoscopyAugment, ImageCollator, add_pixel_values
from hf_medai.data.images import with_images
from hf_medai.data.lesions import load_lesions
from hf_medai.data.synthetic.lesions import write_ham10000
from hf_medai.models.vision import build_image_classifier


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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="synthetic images")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "lesion_throughput.json"))
    a = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-lesions-"))
    write_ham10000(work / "ham", n=a.n, seed=0)
    ds, classes, report = load_lesions(work / "ham", "ham10000", "binary")
    ds = with_images(ds, report, max_side=512, cache_dir=work / "cache")
    _, processor = build_image_classifier(None, classes, a.image_size)

    # Baseline: what transformers' image-classification example does, minus torchvision.
    def hf_transform(batch):
        out = processor([im.convert("RGB") for im in batch["image"]], return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "labels": batch["label"]}

    baseline_ds = ds.select_columns(["image", "label"])
    baseline_ds.set_transform(hf_transform)

    def baseline_collate(rows):
        return {
            "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
            "labels": torch.tensor([r["labels"] for r in rows]),
        }

    ours_ds = add_pixel_values(ds, processor)  # once; a re-run reads the cache
    ours_collate = ImageCollator(processor, DermoscopyAugment())
    kw = dict(output_dir=str(work / "out"), per_device_train_batch_size=a.batch_size, learning_rate=1e-3, seed=0)

    rates = {"baseline": [], "hf_medai": []}
    train_rate(build_image_classifier(None, classes, a.image_size)[0], ours_ds, ours_collate, kw, 3)  # warm-up
    for _ in range(a.rounds):
        for name, (d, c) in {"baseline": (baseline_ds, baseline_collate), "hf_medai": (ours_ds, ours_collate)}.items():
            torch.manual_seed(0)
            model = build_image_classifier(None, classes, a.image_size)[0]
            rates[name].append(train_rate(model, d, c, kw, a.steps))
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "benchmark": "lesion_throughput",
        "what": "training images/s, small ViT, synthetic HAM10000 sample, Trainer, same model and settings",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}",
        "steps_per_round": a.steps,
        "batch_size": a.batch_size,
        "image_size": a.image_size,
        "images_per_second": rates,
        "median": med,
        "ratio_hf_medai_over_baseline": round(med["hf_medai"] / med["baseline"], 3),
        "note": "hf_medai includes augmentation (random resized crop, flips, rot90, colour jitter); the baseline does none",
    }
    print(f"{'':10s} {'median img/s':>12s}  rounds")
    for k in rates:
        print(f"{k:10s} {med[k]:12.1f}  {', '.join(f'{r:.1f}' for r in rates[k])}")
    print(f"ratio hf_medai / baseline = {result['ratio_hf_medai_over_baseline']:.3f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
