"""Fewer-step samplers for a trained molecule diffusion pipeline, against DDPM at every training step (T).

One trained run folder, the same molecules count and seed for every sampler; each scored by the card's metric
code (EDM's atom / molecule stability, validity, uniqueness) and timed (molecules/s, one graph batch per call).
Reports each sampler's quality difference to DDPM-T in points and its speed-up.

    python benchmarks/molecule_samplers.py runs/molecule_diffusion      # writes results/molecule_samplers.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from hf_medai.evaluation.molecules import molecule_metrics
from hf_medai.pipelines import MoleculeDiffusionPipeline
from hf_medai.pipelines.sampling import make_scheduler

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = {
    "ddpm": None,
    "ddpm_500": ("ddpm", 500),
    "ddpm_250": ("ddpm", 250),
    "dpmsolver++_100": ("dpmsolver++", 100),
    "dpmsolver++_50": ("dpmsolver++", 50),
    "ddim_100": ("ddim", 100),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, default=200, help="molecules per sampler")
    p.add_argument("--batch_size", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "molecule_samplers.json"))
    a = p.parse_args(argv)

    pipe = MoleculeDiffusionPipeline.from_pretrained(a.run_dir)
    pipe.set_progress_bar_config(disable=True)
    training = pipe.scheduler.config
    T = training.num_train_timesteps
    rows = {}
    for name in a.samplers:
        kind, steps = SAMPLERS[name] or ("ddpm", T)
        pipe.scheduler = make_scheduler(kind, training)
        generator = torch.Generator().manual_seed(a.seed)
        atoms, positions = [], []
        start = time.perf_counter()
        for i in range(0, a.n, a.batch_size):
            out = pipe(min(a.batch_size, a.n - i), num_inference_steps=steps, generator=generator, output_type="np")
            atoms += out.atom_types
            positions += out.positions
        seconds = time.perf_counter() - start
        m = molecule_metrics(zip(atoms, positions), None)
        rows[f"{kind}_{steps}"] = {
            "sampler": kind,
            "steps": steps,
            "molecules_per_second": round(a.n / seconds, 3),
            **{k: m[k] for k in ("atom_stability", "molecule_stability", "molecule_stability_ci", "validity")},
            "uniqueness": m["uniqueness"],
        }
        r = rows[f"{kind}_{steps}"]
        print(
            f"{kind:12s} {steps:5d} steps: {r['molecules_per_second']:7.2f} mol/s  atom {r['atom_stability']:.3f}"
            f"  mol {r['molecule_stability']:.3f}  valid {r['validity']:.3f}"
        )
    base = rows.get(f"ddpm_{T}")
    if base:
        for r in rows.values():
            r["speedup_vs_ddpm_T"] = round(r["molecules_per_second"] / base["molecules_per_second"], 2)
            for k in ("atom_stability", "molecule_stability", "validity"):
                r[f"{k}_points_vs_ddpm_T"] = round(100 * (r[k] - base[k]), 1)
    result = {
        "benchmark": "molecule_samplers",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}",
        "run": str(a.run_dir),
        "training_schedule": training.get("beta_schedule") if not training.get("trained_betas") else "trained_betas",
        "molecules_per_sampler": a.n,
        "seed": a.seed,
        "samplers": rows,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
