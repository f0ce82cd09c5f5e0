"""Lesion-image generation quality: the recipe vs a plain diffusers UNet2DModel + DDPMScheduler loop, at equal steps.

Same data (the recipe's offline synthetic HAM10000 sample and patient split, 32 px), same UNet (the recipe's
class-conditional UNet2DModel, [32, 64, 64]), same batch, optimizer steps, learning rate, warm-up and cosine decay,
gradient clipping and class dropout (0.1, for guidance). The arms differ only in what each side chooses:

- plain: the diffusers `train_unconditional.py` recipe made class-conditional: `DDPMScheduler()` defaults (linear
  betas, epsilon prediction), random horizontal flips, `EMAModel(decay=0.9999, use_ema_warmup=True, inv_gamma=1,
  power=3/4)` (that script's defaults), plain MSE.
- hf_medai: `recipes/image_diffusion.py` itself (cosine schedule, v-prediction, the 8 flips/turns, EMA 0.999
  with warm-up), run through its `main` with `--sample_every`.
- hf_medai + min-SNR: the same with `--snr_gamma 5`.

Every arm is scored by the same code at the same points (`hf_medai.evaluation.image_generation.FidCurve`): FID and
KID on the lesion classifier's features (generated vs training images) and class fidelity, for the same number of
images from the same sampler (DPM-Solver++ 20 steps, guidance 2, one seed). The real held-out images' FID against
the training images is the floor. Needs the lesion classifier of the README's first command.

    python benchmarks/lesion_diffusion_vs_diffusers.py --classifier_dir runs/lesion_classification
    # writes benchmarks/results/lesion_diffusion_vs_diffusers.json and prints the FID-vs-steps table
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _recipes import load_recipe

from hf_medai.data.image_batches import square_pixel_tensors
from hf_medai.evaluation.generative import frechet_distance, kernel_distance
from hf_medai.evaluation.image_generation import FidCurve, GenerationEvalArguments
from hf_medai.lesion_split import LesionSplitArguments, load_lesion_split
from hf_medai.models.diffusion import build_lesion_unet
from hf_medai.pipelines.lesion_diffusion import LesionDiffusionPipeline

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def plain_diffusers(train_pixels, train_labels, class_names, a, curve: FidCurve) -> dict:
    """The diffusers example loop (class-conditional), scored by `curve` every `a.every` steps (EMA weights)."""
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    accelerator = Accelerator(mixed_precision="bf16" if a.bf16 else "no", cpu=DEVICE == "cpu")
    torch.manual_seed(a.seed)
    unet = build_lesion_unet(len(class_names), a.resolution, block_out_channels=a.channels)
    scheduler = DDPMScheduler(num_train_timesteps=1000)  # the example's: linear betas, epsilon
    opt = torch.optim.AdamW(unet.parameters(), lr=a.learning_rate, weight_decay=0.0)
    lr = get_cosine_schedule_with_warmup(opt, a.warmup_steps, a.steps)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(train_pixels, train_labels),
        batch_size=a.batch_size,
        shuffle=True,
        drop_last=True,
    )
    unet, opt, loader, lr = accelerator.prepare(unet, opt, loader, lr)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75)
    null_class, step, seconds = len(class_names), 0, 0.0
    while step < a.steps:
        for x, y in loader:
            start = time.perf_counter()
            x = x.float() / 127.5 - 1
            flip = torch.rand(len(x), device=x.device) < 0.5  # RandomHorizontalFlip
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            noise = torch.randn_like(x)
            t = torch.randint(0, 1000, (len(x),), device=x.device)
            y = torch.where(torch.rand(len(y), device=y.device) < 0.1, torch.full_like(y, null_class), y)
            with accelerator.autocast():
                loss = F.mse_loss(unet(scheduler.add_noise(x, noise, t), t, class_labels=y).sample.float(), noise)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            lr.step()
            opt.zero_grad()
            ema.step(unet.parameters())
            step += 1
            seconds += time.perf_counter() - start
            if step % a.every == 0 or step == a.steps:
                copy = build_lesion_unet(len(class_names), a.resolution, block_out_channels=a.channels).to(DEVICE)
                ema.copy_to(copy.parameters())
                pipe = LesionDiffusionPipeline(copy.eval(), scheduler, class_names=class_names)
                pipe.set_progress_bar_config(disable=True)
                row = curve(step, pipe)
                print(
                    f"  plain    step {step:5d}: FID {row['fid']:.2f}  KID {row['kid']:.4f}  "
                    f"fidelity {row['class_fidelity']:.3f}"
                )
            if step >= a.steps:
                break
    return {"train_steps_per_second": round(a.steps / seconds, 3), "curve": list(curve.rows)}


def recipe_arm(a, work: Path, name: str, extra: list[str]) -> dict:
    recipe = load_recipe("image_diffusion")
    out = work / name
    recipe.main(
        [
            "--output_dir",
            str(out),
            "--synthetic_n",
            str(a.n),
            "--resolution",
            str(a.resolution),
            "--block_out_channels",
            *map(str, a.channels),
            "--max_steps",
            str(a.steps),
            "--per_device_train_batch_size",
            str(a.batch_size),
            "--learning_rate",
            str(a.learning_rate),
            "--warmup_steps",
            str(a.warmup_steps),
            "--sample_every",
            str(a.every),
            "--save_strategy",
            "no",
            "--classifier_dir",
            a.classifier_dir,
            "--eval_images_per_class",
            str(a.images_per_class),
            "--eval_seed",
            str(a.seed),
            "--seed",
            str(a.seed),
            "--use_cpu",
            str(DEVICE == "cpu").lower(),
            *(["--bf16", "true"] if a.bf16 else []),
            *extra,
        ]
    )
    m = json.loads((out / "metrics.json").read_text())
    for row in m["fid_curve"]:
        print(
            f"  {name:8s} step {row['step']:5d}: FID {row['fid']:.2f}  KID {row['kid']:.4f}  "
            f"fidelity {row['class_fidelity']:.3f}"
        )
    return {"train_steps_per_second": m["throughput"]["train_steps_per_second"], "curve": m["fid_curve"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classifier_dir", default="runs/lesion_classification")
    p.add_argument("--n", type=int, default=4000, help="synthetic images (the recipe's offline default)")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--every", type=int, default=200, help="score every N steps")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--learning_rate", type=float, default=5e-4)
    p.add_argument("--warmup_steps", type=int, default=100)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64, 64])
    p.add_argument("--images_per_class", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--arms", nargs="+", default=["plain", "hf_medai", "hf_medai_min_snr"])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lesion_diffusion_vs_diffusers.json"))
    a = p.parse_args(argv)
    if not (Path(a.classifier_dir) / "config.json").is_file():
        raise SystemExit(f"{a.classifier_dir}: no lesion classifier; run the README's first command first")

    split_args = LesionSplitArguments(synthetic_n=a.n, task="binary")
    splits, class_names, _, _ = load_lesion_split(split_args)
    train_pixels, train_labels = square_pixel_tensors(splits["train"], a.resolution)
    held = torch.cat([square_pixel_tensors(splits[s], a.resolution)[0] for s in ("validation", "test")])
    gen_args = GenerationEvalArguments(
        classifier_dir=a.classifier_dir, eval_images_per_class=a.images_per_class, eval_seed=a.seed
    )
    curve = FidCurve(gen_args, train_pixels, DEVICE)
    # The floor: as many real held-out images as generated ones, against the same training features.
    rng = np.random.default_rng(a.seed)
    n_gen = a.images_per_class * len(class_names)
    pick = rng.choice(len(held), size=min(len(held), n_gen), replace=False)
    held_feats = curve.classifier(held[pick].permute(0, 2, 3, 1).numpy())[0]
    floor = {
        "fid": frechet_distance(held_feats, curve.train_feats),
        "kid": kernel_distance(held_feats, curve.train_feats)[0],
        "images": len(pick),
    }

    work = Path(tempfile.mkdtemp(prefix="bench-lesion-diffusion-"))
    arms = {}
    for name in a.arms:
        start = time.perf_counter()
        if name == "plain":
            arms[name] = plain_diffusers(train_pixels, train_labels, class_names, a, curve)
        elif name == "hf_medai":
            arms[name] = recipe_arm(a, work, name, [])
        elif name == "hf_medai_min_snr":
            arms[name] = recipe_arm(a, work, name, ["--snr_gamma", "5"])
        else:
            raise SystemExit(f"unknown arm {name!r}")
        arms[name]["wall_seconds"] = round(time.perf_counter() - start, 1)

    final = {k: v["curve"][-1] for k, v in arms.items()}
    result = {
        "benchmark": "lesion_diffusion_vs_diffusers",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}",
        "protocol": {
            "data": f"synthetic HAM10000-format sample ({a.n} images), the recipe's patient split, "
            f"{len(train_labels)} training images, {a.resolution} px",
            "unet": f"class-conditional UNet2DModel {a.channels}",
            "steps": a.steps,
            "batch_size": a.batch_size,
            "learning_rate": a.learning_rate,
            "warmup_steps": a.warmup_steps,
            "scored_every": a.every,
            "sampler": "DPM-Solver++ 20 steps, guidance 2.0, one seed, the same for every arm",
            "images_per_point": n_gen,
            "features": f"penultimate layer of {a.classifier_dir}",
            "bf16": a.bf16,
        },
        "heldout_floor": floor,
        "arms": arms,
        "final_ratios_vs_plain": {
            k: {
                "fid": round(final[k]["fid"] / final["plain"]["fid"], 3),
                "train_steps_per_second": round(
                    arms[k]["train_steps_per_second"] / arms["plain"]["train_steps_per_second"], 3
                ),
            }
            for k in arms
            if "plain" in final
        },
    }
    print(f"held-out floor: FID {floor['fid']:.2f}  KID {floor['kid']:.4f}")
    print(json.dumps(result["final_ratios_vs_plain"]))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
