"""Noise schedules of the molecule recipe at equal steps: diffusers' cosine vs EDM's polynomial_2.

Each schedule trains the offline default (`recipes/configs/molecule_diffusion/nci_offline.yaml`) for the same
optimizer steps, batch, model and seed, and is scored by the recipe's own evaluation (EDM's metrics, same sampler
and seed); the stability sampled every `--sample_every` steps during training is kept as the curve.

    python benchmarks/molecule_schedules.py --steps 4000                   # trains both (about 35 min on 2 cores)
    python benchmarks/molecule_schedules.py --runs RUN_A RUN_B             # summarise finished recipe runs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
SCHEDULES = ("squaredcos_cap_v2", "polynomial_2")
KEYS = ("atom_stability", "molecule_stability", "molecule_stability_ci", "validity", "uniqueness")


def train(schedule: str, a, work: Path) -> Path:
    recipe = load_recipe("molecule_diffusion")
    out = work / schedule
    recipe.main(
        [
            "--config",
            str(ROOT / "recipes/configs/molecule_diffusion/nci_offline.yaml"),
            "--output_dir",
            str(out),
            "--max_steps",
            str(a.steps),
            "--sample_every",
            str(a.sample_every),
            "--beta_schedule",
            schedule,
            "--save_strategy",
            "no",
            "--conditional_targets",
            "0",
        ]
    )
    return out


def summary(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    config = (run / "run_config.yaml").read_text()
    schedule = next(line.split(":", 1)[1].strip() for line in config.splitlines() if line.startswith("beta_schedule"))
    g = dict(m["generated_metrics"])
    if "molecule_stability_ci" not in g:  # a run from before the CI was recorded: the same Wilson interval
        from hf_medai.evaluation.calibration import wilson_interval

        g["n_stable_molecules"] = round(g["molecule_stability"] * g["n_generated"])
        g["molecule_stability_ci"] = [float(v) for v in wilson_interval(g["n_stable_molecules"], g["n_generated"])]
    return {
        "beta_schedule": schedule,
        "optimizer_steps": m["training"]["global_step"],
        "samples": g["n_generated"],
        "sampler": f"{m['generation']['scheduler']} {m['generation']['inference_steps']} steps, seed {m['generation']['seed']}",
        **{k: g.get(k) for k in KEYS},
        "n_stable_molecules": g.get("n_stable_molecules"),
        "sampled_during_training": m["training"].get("sampled_during_training"),
        "train_steps_per_second": m["throughput"]["train_steps_per_second"],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--sample_every", type=int, default=1000)
    p.add_argument("--runs", nargs="*", default=None, help="finished recipe run folders to summarise instead")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "molecule_schedules.json"))
    a = p.parse_args(argv)
    if a.runs:
        runs = [Path(r) for r in a.runs]
    else:
        work = Path(tempfile.mkdtemp(prefix="bench-molecule-schedules-"))
        runs = [train(s, a, work) for s in SCHEDULES]
    rows = [summary(r) for r in runs]
    for r in rows:
        print(
            f"{r['beta_schedule']:18s} {r['optimizer_steps']:6d} steps: atom {r['atom_stability']:.3f}  "
            f"mol {r['molecule_stability']:.3f}  valid {r['validity']:.3f}"
        )
    result = {
        "benchmark": "molecule_schedules",
        "what": "the molecule recipe's offline default trained with each noise schedule, everything else equal",
        "runs": rows,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
