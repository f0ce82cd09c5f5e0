"""Training images/s: the MAE pre-training recipe's path vs a plain `ViTMAEForPreTraining` + `Trainer`.

Same model (the recipe's tiny MAE, same initial weights), same unlabelled images, same batch size and optimiser
settings, side by side in one process, alternating rounds so machine noise hits both. Baseline: the usual HF example
data path (transformers' run_mae.py minus torchvision: `set_transform` running the image processor on decoded
images per batch, no augmentation). Ours: `hf_medai.image_pretraining.masked_image_trainer` as the recipe builds it
(pixels resized once and cached as uint8, augmentation on whole batches in the collator, MaskedImageTrainer with the
throughput callback).

    OMP_NUM_THREADS=2 python benchmarks/mae_throughput.py     # prints a table and the ratio; writes results/mae_throughput.json
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

from hf_medai.data.image_batches import add_pixel_values
from hf_medai.data.synthetic.lesion_pool import write_unlabelled_pool
from hf_medai.data.unlabelled_images import load_unlabelled_images
from hf_medai.image_pretraining import masked_image_trainer, with_fixed_noise
from hf_medai.models.mae import build_mae


def training_args(work: Path, batch_size: int, steps: int) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(work / "out"),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=1.5e-3,
        weight_decay=0.05,
        adam_beta2=0.95,
        seed=0,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )


def timed(trainer) -> float:
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    return trainer.args.max_steps * trainer.args.per_device_train_batch_size / elapsed


def fresh_mae(image_size: int):
    torch.manual_seed(0)
    return build_mae(None, image_size)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="synthetic unlabelled images")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "mae_throughput.json"))
    a = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-mae-"))
    write_unlabelled_pool(work / "pool", n=a.n, seed=0)
    images, _, _ = load_unlabelled_images(work / "pool")
    model, processor = fresh_mae(a.image_size)
    num_patches = model.vit.embeddings.patch_embeddings.num_patches

    # Baseline: transformers' run_mae.py data path, the image processor standing in for torchvision's transforms.
    def hf_transform(batch):
        return {
            "pixel_values": processor([im.convert("RGB") for im in batch["image"]], return_tensors="pt")[
                "pixel_values"
            ]
        }

    baseline_ds = images.select_columns(["image"])
    baseline_ds.set_transform(hf_transform)

    def baseline_collate(rows):
        return {"pixel_values": torch.stack([r["pixel_values"] for r in rows])}

    ours_ds = add_pixel_values(images, processor)  # once; the recipe's cached uint8 pixels
    heldout = with_fixed_noise(ours_ds.select(range(16)), num_patches)  # unused: no evaluation here

    def run(name: str, steps: int) -> float:
        model, _ = fresh_mae(a.image_size)
        args = training_args(work, a.batch_size, steps)
        if name == "baseline":
            trainer = Trainer(model=model, args=args, train_dataset=baseline_ds, data_collator=baseline_collate)
        else:
            trainer = masked_image_trainer(model, processor, ours_ds, heldout, args, augment=True)
        return timed(trainer)

    run("hf_medai", 3)  # warm-up
    rates = {"baseline": [], "hf_medai": []}
    for _ in range(a.rounds):
        for name in rates:
            rates[name].append(run(name, a.steps))
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "benchmark": "mae_throughput",
        "what": "MAE pre-training images/s, tiny MAE (TINY_VIT encoder, 2-layer decoder), mask 0.75, synthetic "
        "unlabelled lesion pool, Trainer, same model, data and settings",
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
