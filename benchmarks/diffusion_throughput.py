"""Lesion-image diffusion, side by side in one process: training steps/s and sampling images/s.

Training: the recipe's loop (`hf_medai.training.train_loop`: pixels cropped and resized once into a uint8
tensor, flips/turns on the batch, EMA, class dropout) vs the plain diffusers example loop (UNet2DModel +
DDPMScheduler + Accelerate, a `datasets` transform that crops, resizes, flips and normalises each decoded
image per batch, EMA too): same data, same UNet config, same batch size and optimiser, alternating rounds.

Sampling: a trained pipeline (default runs/image_diffusion) with DPM-Solver++ 20 steps and DDIM 50 steps vs
DDPM 1000 steps, same classes and seed, each with its class fidelity under a lesion classifier (default
runs/lesion_classification), printed as ratios to DDPM.

    python benchmarks/diffusion_throughput.py      # writes results/diffusion_throughput.json
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
import torch.nn.functional as F
from PIL import Image, ImageOps
from transformers import TrainingArguments

from hf_medai.data.image_batches import square_pixel_tensors
from hf_medai.data.images import with_images
from hf_medai.data.lesions import load_lesions
from hf_medai.data.synthetic.lesions import write_ham10000
from hf_medai.evaluation.generative import ClassifierFeatures, class_fidelity
from hf_medai.models.diffusion import build_lesion_unet, build_noise_scheduler, class_conditional_loss
from hf_medai.pipelines.lesion_diffusion import LesionDiffusionPipeline
from hf_medai.pipelines.sampling import generate
from hf_medai.training import train_loop

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def plain_diffusers_loop(dataset, n_classes, a, steps) -> float:
    """The diffusers example's shape: Accelerate, per-batch image transforms, EMA, noise -> MSE. Returns steps/s."""
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    accelerator = Accelerator(mixed_precision="bf16" if a.bf16 else "no")
    torch.manual_seed(0)
    unet = build_lesion_unet(n_classes, a.resolution, block_out_channels=a.channels)
    scheduler = build_noise_scheduler()
    opt = torch.optim.AdamW(unet.parameters(), lr=5e-4, weight_decay=0.0)
    mean = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)

    def transform(batch):
        out = []
        for im in batch["image"]:
            im = ImageOps.fit(im.convert("RGB"), (a.resolution, a.resolution), Image.Resampling.LANCZOS)
            if np.random.rand() < 0.5:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)
            out.append((x - mean) / 0.5)
        return {"pixel_values": out, "label": batch["label"]}

    ds = dataset.select_columns(["image", "label"])
    ds.set_transform(transform)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=a.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=0,
        collate_fn=lambda rows: {
            "x": torch.stack([r["pixel_values"] for r in rows]),
            "y": torch.tensor([r["label"] for r in rows]),
        },
    )
    unet, opt, loader = accelerator.prepare(unet, opt, loader)
    ema = EMAModel(unet.parameters(), decay=0.999, use_ema_warmup=True)  # after prepare: on the model's device
    done, start = 0, None
    while done < steps + 2:
        for batch in loader:
            if done == 2:  # two warm-up steps
                if DEVICE == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            x, y = batch["x"], batch["y"]
            noise = torch.randn_like(x)
            t = torch.randint(0, 1000, (len(x),), device=x.device)
            y = torch.where(torch.rand(len(y), device=y.device) < 0.1, torch.full_like(y, n_classes), y)
            with accelerator.autocast():
                loss = F.mse_loss(unet(scheduler.add_noise(x, noise, t), t, class_labels=y).sample.float(), noise)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            ema.step(unet.parameters())
            done += 1
            if done >= steps + 2:
                break
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def recipe_loop(pixels, labels, n_classes, a, steps, work) -> float:
    torch.manual_seed(0)
    unet = build_lesion_unet(n_classes, a.resolution, block_out_channels=a.channels)
    scheduler = build_noise_scheduler()
    args = TrainingArguments(
        output_dir=str(work / "ours"),
        max_steps=steps,
        per_device_train_batch_size=a.batch_size,
        learning_rate=5e-4,
        weight_decay=0.0,
        save_strategy="no",
        report_to="none",
        max_grad_norm=1.0,
        logging_steps=50,
        use_cpu=DEVICE == "cpu",
        bf16=a.bf16,
        dataloader_drop_last=True,
        dataloader_pin_memory=False,
    )

    def collate(rows):
        return {"x": torch.stack([r[0] for r in rows]), "y": torch.stack([r[1] for r in rows])}

    def loss_fn(model, batch):  # the recipe's loss: flips/turns, class dropout 0.1
        return class_conditional_loss(
            model, batch["x"].float() / 127.5 - 1, batch["y"], scheduler, n_classes, class_dropout=0.1, augment=True
        )

    result = train_loop(unet, args, torch.utils.data.TensorDataset(pixels, labels), collate, loss_fn, ema_decay=0.999)
    return result.throughput["train_steps_per_second"]


def sampling(a) -> dict:
    pipe = LesionDiffusionPipeline.from_pretrained(a.pipeline_dir).to(DEVICE)
    pipe.set_progress_bar_config(disable=True)
    classifier = ClassifierFeatures(a.classifier_dir, device=DEVICE) if a.classifier_dir else None
    class_names = list(pipe.config.class_names)
    labels = np.repeat(np.arange(len(class_names)), a.sample_per_class)
    out = {}
    for name, steps in (("ddpm", 1000), ("ddim", 50), ("dpmsolver++", 20)):
        images, rate = generate(pipe, labels, name, steps, a.guidance_scale, batch_size=len(labels), seed=0)
        row = {"steps": steps, "images_per_second": round(rate, 3)}
        if classifier is not None:
            row["class_fidelity"] = class_fidelity(classifier(images)[1], labels, class_names)["fidelity"]
        out[f"{name}_{steps}"] = row
        print(
            f"  sampling {name:12s} {steps:5d} steps: {rate:8.2f} images/s  fidelity {row.get('class_fidelity', 'n/a')}"
        )
    base = out["ddpm_1000"]["images_per_second"]
    for row in out.values():
        row["speedup_vs_ddpm_1000"] = round(row["images_per_second"] / base, 2)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="synthetic images")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64, 64])
    p.add_argument("--bf16", action="store_true", help="mixed precision (GPU only)")
    p.add_argument(
        "--pipeline_dir",
        default="runs/image_diffusion",
        help="a trained run folder for the sampling part ('' to skip)",
    )
    p.add_argument(
        "--classifier_dir", default="runs/lesion_classification", help="lesion classifier for fidelity ('' to skip)"
    )
    p.add_argument(
        "--sample_per_class",
        type=int,
        default=64 if DEVICE == "cuda" else 8,
        help="images per class per sampler (DDPM 1000 steps is slow on CPU)",
    )
    p.add_argument("--guidance_scale", type=float, default=2.0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "diffusion_throughput.json"))
    a = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-diffusion-"))
    write_ham10000(work / "ham", n=a.n, seed=0)
    ds, classes, report = load_lesions(work / "ham", "ham10000", "binary")
    ds = with_images(ds, report, max_side=512, cache_dir=work / "cache")
    pixels, labels = square_pixel_tensors(ds, a.resolution)

    rates = {"plain_diffusers": [], "hf_medai": []}
    for _ in range(a.rounds):
        rates["plain_diffusers"].append(plain_diffusers_loop(ds, len(classes), a, a.steps))
        rates["hf_medai"].append(recipe_loop(pixels, labels, len(classes), a, a.steps, work))
        print(
            f"  round: plain {rates['plain_diffusers'][-1]:.2f} steps/s, hf_medai {rates['hf_medai'][-1]:.2f} steps/s"
        )
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "benchmark": "diffusion_throughput",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}",
        "training": {
            "what": f"optimizer steps/s, class-conditional UNet2DModel {a.channels} at {a.resolution} px, batch "
            f"{a.batch_size}, synthetic HAM10000 sample ({a.n} images), EMA on both, bf16={a.bf16}",
            "steps_per_second": rates,
            "median": med,
            "ratio_hf_medai_over_plain": round(med["hf_medai"] / med["plain_diffusers"], 3),
        },
    }
    print(
        f"training steps/s (median): plain {med['plain_diffusers']:.2f}, hf_medai {med['hf_medai']:.2f}, "
        f"ratio {result['training']['ratio_hf_medai_over_plain']:.3f}"
    )
    if a.pipeline_dir:
        if not (Path(a.pipeline_dir) / "model_index.json").is_file():
            raise SystemExit(
                f"{a.pipeline_dir}: no trained pipeline; run recipes/image_diffusion.py first or pass --pipeline_dir ''"
            )
        a.classifier_dir = a.classifier_dir if a.classifier_dir and Path(a.classifier_dir).is_dir() else None
        result["sampling"] = {
            "pipeline": a.pipeline_dir,
            "classifier": a.classifier_dir,
            "images": a.sample_per_class * 2,
            "guidance_scale": a.guidance_scale,
            **sampling(a),
        }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
