"""Molecule diffusion: hf-medai's EDM re-implementation vs EDM's reference code, same data, size, steps and batch.

What is compared. EDM (Hoogeboom et al. 2022, github.com/ehoogeboom/e3_diffusion_for_molecules) trained by its own
`main_qm9.py`, and our recipe's model (`recipes/molecule_diffusion.py`: EGNNDenoiser + diffusers DDPMScheduler +
`hf_medai.training.train_loop`), on the same molecules: the recipe's offline data (`load_molecules` with the
`nci_offline.yaml` settings: RDKit's NCI compounds, <= 9 heavy atoms, H/C/N/O/F, neutral; 419 molecules).

Equal-compute protocol. Same EGNN size (layers x hidden, one GCL per layer), same batch (64 molecules), same number of
optimizer steps (EDM has no max-steps flag, so it runs ceil(M/64) steps per epoch for n_epochs; ours runs exactly
that many steps), T = 1000 diffusion steps for training and for sampling (no step skipping), `n_samples` molecules
from each, both scored by OUR metric code (`hf_medai.evaluation.molecules.molecule_metrics`: EDM's atom / molecule
stability, validity, uniqueness, novelty against the same training SMILES). Each side keeps its own optimiser
settings, recorded in the JSON: EDM as its README trains QM9 (lr 1e-4 constant, AdamW amsgrad, adaptive clipping,
EMA 0.9999 without warmup, polynomial_2 schedule, l2 loss, normalize_factors [1,4,10], atomic number as the integer
feature); ours as the recipe's offline default (lr 1e-3 cosine with 50 warmup steps, clip 1.0, EMA 0.999 with warmup,
cosine schedule). EDM's EMA starts from the initial weights, so after a short run its EMA model is still mostly the
random initialisation: by default both EDM's EMA weights (what its eval_analyze.py scores) and its raw weights are
sampled and scored. Training time excludes data loading and start-up (EDM: the sum of its per-epoch times).

How EDM runs (nothing of EDM is copied into this repository, nothing is downloaded). `--edm_dir` is a local
checkout/export of EDM. It is copied to a temporary folder, the data is written there in EDM's QM9 .npz format
(`qm9/temp/qm9/{train,valid,test}.npz`: atomic numbers in `charges`, positions in Angstrom; all molecules in train,
valid/test are small subsets of train that each contain an F molecule, used by nothing here), and this script patches
the copy by text replacement: a no-op `wandb` module, the atom-count histogram and max_n_nodes of our data in
`configs/datasets_config.py`, no in-training test/sample/plot epochs and a save of the final weights in
`main_qm9.py`, no plotting in `train_test.py`. Sampling runs a small driver of ours in the copy that imports EDM's
`qm9.models.get_model` and `qm9.sampling.sample` (as eval_analyze.py does, one batch of n_samples).

    python benchmarks/molecules_vs_edm.py --edm_dir /tmp/edm_src --steps 1000
    # writes benchmarks/results/molecules_vs_edm.json and prints a table with the ratios ours / EDM
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _recipes import load_recipe

ROOT = Path(__file__).resolve().parent.parent
Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
METRICS = ("atom_stability", "molecule_stability", "validity", "uniqueness", "validity_x_uniqueness", "novelty")

WANDB_STUB = '''"""No-op stand-in for wandb (written by hf-medai's benchmark; runs offline)."""


class Settings:
    def __init__(self, *a, **k):
        pass


class Image:
    def __init__(self, *a, **k):
        pass


Video = Image


def init(*a, **k):
    return None


def log(*a, **k):
    return None


def save(*a, **k):
    return None
'''

SAMPLER = '''"""Sample from an EDM run with EDM's own modules (hf-medai benchmark driver); writes samples_<weights>.npz."""
import json, pickle, sys, time
import numpy as np
import torch
from configs.datasets_config import get_dataset_info
from qm9.models import get_model
from qm9.sampling import sample

run_dir, n_samples, seed, which = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
with open(f"{run_dir}/args.pickle", "rb") as f:
    args = pickle.load(f)
device = torch.device("cpu")
info = get_dataset_info(args.dataset, args.remove_h)
timings = {}
for weights in which:
    torch.manual_seed(seed)
    model, nodes_dist, prop_dist = get_model(args, device, info, None)
    fn = "generative_model_ema.npy" if weights == "ema" else "generative_model.npy"
    model.load_state_dict(torch.load(f"{run_dir}/{fn}", map_location=device))
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        nodesxsample = nodes_dist.sample(n_samples)
        one_hot, charges, x, node_mask = sample(args, device, model, info, prop_dist=prop_dist, nodesxsample=nodesxsample)
    timings[weights] = time.perf_counter() - start
    np.savez(f"{run_dir}/samples_{weights}.npz", one_hot=one_hot.argmax(-1).numpy(), x=x.numpy(),
             node_mask=node_mask[..., 0].numpy(), atom_decoder=np.array(info["atom_decoder"]))
with open(f"{run_dir}/sampling_seconds.json", "w") as f:
    json.dump(timings, f)
'''


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"EDM patch failed: expected exactly one {old!r} in {path} (found {text.count(old)})")
    path.write_text(text.replace(old, new))


def prepare_edm(edm_dir: Path, work: Path, histogram: dict[int, int]) -> Path:
    """Copy EDM to `work/edm` and apply the offline/CPU patches there (never in this repository)."""
    if not (edm_dir / "main_qm9.py").is_file():
        raise SystemExit(f"--edm_dir {edm_dir} is not an EDM checkout (no main_qm9.py)")
    dst = work / "edm"
    shutil.copytree(
        edm_dir, dst, ignore=shutil.ignore_patterns(".git", "outputs", "generated_samples", "*.npy", "*.zip")
    )
    (dst / "wandb.py").write_text(WANDB_STUB)
    (dst / "hf_medai_sample.py").write_text(SAMPLER)
    with open(dst / "configs" / "datasets_config.py", "a") as f:
        f.write(
            "\n\n# hf-medai benchmark: the atom-count prior and size limit of the benchmark data\n"
            f"qm9_with_h['n_nodes'] = {dict(sorted(histogram.items()))!r}\n"
            f"qm9_with_h['max_n_nodes'] = {max(histogram)}\n"
        )
    main = dst / "main_qm9.py"
    _replace(main, "        if epoch % args.test_epochs == 0:\n", "        if False:  # hf-medai: no test epochs\n")
    _replace(
        main,
        '        print(f"Epoch took {time.time() - start_epoch:.1f} seconds.")\n',
        '        print(f"Epoch took {time.time() - start_epoch:.1f} seconds.")\n'
        "        if epoch == args.n_epochs - 1:  # hf-medai: save the final weights\n"
        "            args.current_epoch = epoch + 1\n"
        "            utils.save_model(model, 'outputs/%s/generative_model.npy' % args.exp_name)\n"
        "            if args.ema_decay > 0:\n"
        "                utils.save_model(model_ema, 'outputs/%s/generative_model_ema.npy' % args.exp_name)\n"
        "            with open('outputs/%s/args.pickle' % args.exp_name, 'wb') as f:\n"
        "                pickle.dump(args, f)\n",
    )
    _replace(dst / "train_test.py", "and not (epoch == 0 and i == 0):", "and False:  # hf-medai: no plots")
    return dst


def write_edm_data(edm: Path, mols: list[tuple[list[str], np.ndarray]], subset_size: int = 32) -> None:
    """EDM's QM9 npz splits: all molecules in train; valid/test = subsets of train, each with every element."""
    folder = edm / "qm9" / "temp" / "qm9"
    folder.mkdir(parents=True, exist_ok=True)
    (edm / "qm9" / "temp" / "qm9_smiles.pickle").unlink(missing_ok=True)

    def npz(path, idx):
        nmax = max(len(mols[i][0]) for i in idx)
        charges = np.zeros((len(idx), nmax), dtype=np.int64)
        pos = np.zeros((len(idx), nmax, 3), dtype=np.float32)
        for row, i in enumerate(idx):
            sym, p = mols[i]
            charges[row, : len(sym)] = [Z[s] for s in sym]
            pos[row, : len(sym)] = p
        num = np.array([len(mols[i][0]) for i in idx], dtype=np.int64)
        np.savez(path, num_atoms=num, charges=charges, positions=pos)

    with_f = [i for i, (s, _) in enumerate(mols) if "F" in s]
    others = [i for i in range(len(mols)) if i not in with_f]
    npz(folder / "train.npz", list(range(len(mols))))
    for k, split in enumerate(("valid", "test")):
        idx = [with_f[k % len(with_f)]] + others[k * subset_size : (k + 1) * subset_size - 1]
        assert {s for i in idx for s in mols[i][0]} == {s for m in mols for s in m[0]}, split
        npz(folder / f"{split}.npz", idx)


def edm_molecules(path: Path) -> list[tuple[list[str], np.ndarray]]:
    d = np.load(path)
    decoder = [str(s) for s in d["atom_decoder"]]
    out = []
    for types, x, mask in zip(d["one_hot"], d["x"], d["node_mask"]):
        keep = mask > 0.5
        out.append(([decoder[t] for t in types[keep]], x[keep].astype(np.float64)))
    return out


def run_edm(a, work: Path, mols, histogram, n_epochs: int, env: dict) -> dict:
    edm = prepare_edm(Path(a.edm_dir).resolve(), work, histogram)
    write_edm_data(edm, mols)
    flags = [
        "--no-cuda", "--no_wandb", "--exp_name", "bench", "--dataset", "qm9", "--datadir", "qm9/temp",
        "--n_epochs", str(n_epochs), "--test_epochs", str(n_epochs + 1), "--n_stability_samples", "100",
        "--batch_size", str(a.batch_size), "--nf", str(a.hidden), "--n_layers", str(a.layers), "--inv_sublayers", "1",
        "--lr", str(a.edm_lr), "--diffusion_steps", "1000", "--diffusion_noise_schedule", "polynomial_2",
        "--diffusion_noise_precision", "1e-5", "--diffusion_loss_type", "l2", "--normalize_factors", "[1,4,10]",
        "--include_charges", "True", "--ema_decay", str(a.edm_ema_decay), "--n_report_steps", "1000000",
    ]  # fmt: skip
    log = work / "edm_train.log"
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(
            [sys.executable, "main_qm9.py", *flags], cwd=edm, env=env, stdout=f, stderr=subprocess.STDOUT
        )
    wall = time.perf_counter() - start
    text = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"EDM training failed (exit {proc.returncode}); last lines of {log}:\n{text[-3000:]}")
    epoch_secs = [float(s) for s in re.findall(r"Epoch took ([0-9.]+) seconds", text)]
    steps = n_epochs * math.ceil(len(mols) / a.batch_size)
    which = ["ema", "raw"] if a.edm_weights == "both" else [a.edm_weights]
    if a.edm_ema_decay <= 0:
        which = ["raw"]
    run_dir = edm / "outputs" / "bench"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "hf_medai_sample.py", str(run_dir), str(a.n_samples), str(a.seed), ",".join(which)],
        cwd=edm, env=env, capture_output=True, text=True,
    )  # fmt: skip
    sample_wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"EDM sampling failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    secs = json.loads((run_dir / "sampling_seconds.json").read_text())
    return {
        "settings": {
            "command": "python main_qm9.py " + " ".join(flags),
            "lr": a.edm_lr,
            "optimizer": "AdamW(amsgrad=True, weight_decay=1e-12), constant lr",
            "grad_clip": "adaptive: 1.5 * mean + 2 * std of recent grad norms",
            "ema_decay": a.edm_ema_decay,
            "ema": "constant decay from the initial weights (no warmup)",
            "noise_schedule": "polynomial_2, precision 1e-5, T=1000",
            "loss": "l2",
            "integer_feature": "atomic number / 10",
            "n_epochs": n_epochs,
            "sampling": f"qm9.sampling.sample, one batch of {a.n_samples}, padded to max_n_nodes={max(histogram)}",
        },
        "optimizer_steps": steps,
        "train_seconds": round(sum(epoch_secs), 2),
        "train_steps_per_second": round(steps / sum(epoch_secs), 3),
        "train_wall_seconds_incl_startup": round(wall, 2),
        "sampling_wall_seconds_incl_startup": round(sample_wall, 2),
        "weights": {w: {"sampling_seconds": round(secs[w], 2)} for w in which},
        "samples": {w: edm_molecules(run_dir / f"samples_{w}.npz") for w in which},
    }


def run_ours(a, steps: int, work: Path) -> dict:
    recipe = load_recipe("molecule_diffusion")
    from functools import partial

    from hf_medai.config import parse_args
    from hf_medai.pipelines.molecule_diffusion import (
        EDM_FEATURE_SCALE,
        MoleculeDiffusionPipeline,
        collate_molecules,
        edm_loss,
        make_training_scheduler,
    )
    from hf_medai.training import train_loop

    config = ROOT / "recipes" / "configs" / "molecule_diffusion" / "nci_offline.yaml"
    data_args, model_args, _, _, targs = parse_args(
        *recipe.CONFIG_DATACLASSES,
        args=[
            "--config", str(config), "--output_dir", str(work / "ours"), "--max_steps", str(steps),
            "--per_device_train_batch_size", str(a.batch_size), "--hidden_size", str(a.hidden),
            "--num_layers", str(a.layers), "--save_strategy", "no", "--seed", str(a.seed), "--logging_steps", "50",
            *shlex.split(a.ours_args),
        ],
        defaults=recipe.DEFAULTS,
    )  # fmt: skip
    dataset, elements, _ = load_data()
    rows = dataset.select_columns(["atom_types", "charges", "positions"]).to_list()
    scheduler = make_training_scheduler(model_args.num_train_timesteps, model_args.beta_schedule)
    torch.manual_seed(a.seed)
    denoiser = recipe.EGNNDenoiser(
        num_atom_types=len(elements),
        hidden_size=model_args.hidden_size,
        num_layers=model_args.num_layers,
        include_charges=not data_args.neutral_only,
    )
    result = train_loop(
        denoiser,
        targs,
        rows,
        partial(collate_molecules, num_atom_types=len(elements)),
        lambda model, batch: edm_loss(model, batch, scheduler, EDM_FEATURE_SCALE),
        ema_decay=model_args.ema_decay or None,
        samples_per_batch=lambda batch: batch["num_atoms"].numel(),
    )
    pipe = MoleculeDiffusionPipeline(
        result.model,
        scheduler,
        elements=elements,
        atom_count_distribution=recipe.atom_count_distribution(dataset),
        feature_scale=EDM_FEATURE_SCALE,
    )
    pipe.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    out = pipe(
        a.n_samples, num_inference_steps=1000, generator=torch.Generator().manual_seed(a.seed), output_type="np"
    )
    sample_secs = time.perf_counter() - start
    return {
        "settings": {
            "config": str(config.relative_to(ROOT)),
            "extra_args": a.ours_args,
            "lr": targs.learning_rate,
            "lr_schedule": f"{targs.lr_scheduler_type.value}, {targs.warmup_steps} warmup steps",
            "optimizer": f"AdamW(weight_decay={targs.weight_decay})",
            "grad_clip": f"max_grad_norm {targs.max_grad_norm}",
            "ema_decay": model_args.ema_decay,
            "ema": "diffusers EMAModel with warmup",
            "noise_schedule": f"DDPM {model_args.beta_schedule}, T={model_args.num_train_timesteps}",
            "loss": "epsilon MSE per atom (edm_loss)",
            "integer_feature": "none (neutral data)",
            "sampling": f"MoleculeDiffusionPipeline, one graph batch of {a.n_samples}, 1000 DDPM steps",
            "num_parameters": sum(p.numel() for p in result.model.parameters()),
        },
        "optimizer_steps": result.global_step,
        "train_seconds": result.throughput["train_seconds"],
        "train_steps_per_second": result.throughput["train_steps_per_second"],
        "weights": {"ema": {"sampling_seconds": round(sample_secs, 2)}},
        "samples": {
            "ema": [(list(s), np.asarray(p, dtype=np.float64)) for s, p in zip(out.atom_types, out.positions)]
        },
    }


def load_data():
    from hf_medai.data.molecules import load_molecules

    return load_molecules(None, max_heavy_atoms=9, elements=["H", "C", "N", "O", "F"], neutral_only=True, seed=0)


def score(side: dict, training_smiles: set[str], n_samples: int) -> None:
    from hf_medai.evaluation.molecules import molecule_metrics

    for w, mols in side.pop("samples").items():
        m = molecule_metrics(mols, training_smiles)
        side["weights"][w]["metrics"] = {k: m.get(k) for k in METRICS}
        side["weights"][w]["sampled_molecules_per_second"] = round(
            n_samples / side["weights"][w]["sampling_seconds"], 3
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edm_dir", default=None, help="local checkout/export of EDM (never downloaded)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps for each side (rounded to EDM epochs)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--n_samples", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--edm_lr", type=float, default=1e-4, help="EDM's README QM9 setting")
    p.add_argument("--edm_ema_decay", type=float, default=0.9999, help="EDM's README QM9 setting (0 = off)")
    p.add_argument("--edm_weights", choices=["ema", "raw", "both"], default="both", help="EDM weights to sample")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "molecules_vs_edm.json"))
    p.add_argument(
        "--ours_args",
        default="",
        help='extra recipe flags for our side, one quoted string, e.g. "--beta_schedule polynomial_2"',
    )
    p.add_argument(
        "--edm_from",
        default=None,
        help="reuse the EDM side of an earlier results JSON of the same protocol instead of rerunning EDM "
        "(recorded in the output); --edm_dir is then not needed",
    )
    a = p.parse_args(argv)
    if not a.edm_from and not a.edm_dir:
        p.error("--edm_dir is required unless --edm_from reuses an earlier EDM run")

    from hf_medai.evaluation.molecules import dataset_molecules, molecule_metrics, training_smiles_for_novelty

    dataset, elements, _ = load_data()
    mols = dataset_molecules(dataset, elements)
    sizes = np.bincount([len(s) for s, _ in mols])
    histogram = {n: int(c) for n, c in enumerate(sizes) if c}
    per_epoch = math.ceil(len(mols) / a.batch_size)
    n_epochs = max(1, round(a.steps / per_epoch))
    steps = n_epochs * per_epoch
    training_smiles = training_smiles_for_novelty(dataset, elements)
    env = {**os.environ, "PYTHONPATH": "", "WANDB_MODE": "disabled"}
    with tempfile.TemporaryDirectory(prefix="edm_bench_") as tmp:
        work = Path(tmp)
        if a.edm_from:
            earlier = json.loads(Path(a.edm_from).read_text())
            if earlier["protocol"]["optimizer_steps"] != steps or earlier["protocol"]["layers"] != a.layers:
                raise SystemExit(f"{a.edm_from}: a different protocol (steps, layers); rerun EDM with --edm_dir")
            edm = {**earlier["edm"], "reused_from": Path(a.edm_from).name}
        else:
            edm = run_edm(a, work, mols, histogram, n_epochs, env)
        ours = run_ours(a, steps, work)
    for side in (ours,) if a.edm_from else (edm, ours):
        score(side, training_smiles, a.n_samples)
    data_ref = molecule_metrics(mols, training_smiles)

    def rate(side, key):
        return side["weights"][key]["sampled_molecules_per_second"]

    edm_w = "ema" if "ema" in edm["weights"] else "raw"
    ratios = {
        "train_steps_per_second": round(ours["train_steps_per_second"] / edm["train_steps_per_second"], 3),
        "sampled_molecules_per_second": round(rate(ours, "ema") / rate(edm, edm_w), 3),
    }
    for w in edm["weights"]:
        for k in ("atom_stability", "validity"):
            e, o = edm["weights"][w]["metrics"][k], ours["weights"]["ema"]["metrics"][k]
            ratios[f"{k}_vs_edm_{w}"] = round(o / e, 3) if e else None
    result = {
        "benchmark": "molecules_vs_edm",
        "what": "hf-medai molecule diffusion vs EDM reference code: equal model size, optimizer steps, batch, data, T",
        "data": {
            "source": "RDKit NCI first_5K.smi via hf_medai.data.molecules.load_molecules (nci_offline settings)",
            "molecules": len(mols),
            "elements": elements,
            "atom_count_histogram": histogram,
            "data_reference_metrics": {k: data_ref.get(k) for k in METRICS},
        },
        "protocol": {
            "layers": a.layers,
            "hidden": a.hidden,
            "batch_size": a.batch_size,
            "optimizer_steps": steps,
            "steps_requested": a.steps,
            "diffusion_steps_train_and_sample": 1000,
            "n_samples": a.n_samples,
            "seed": a.seed,
            "metric_code": "hf_medai.evaluation.molecules.molecule_metrics (both sides)",
        },
        "edm": edm,
        "ours": ours,
        "ratios_ours_over_edm": ratios,
        "environment": {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads, CPU",
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "edm_commit": _edm_commit(Path(a.edm_dir)) if a.edm_dir else earlier["environment"]["edm_commit"],
        },
    }
    _print_table(result)
    from hf_medai.io import write_json

    write_json(a.out, result)
    return result


def _edm_commit(edm_dir: Path) -> str | None:
    proc = subprocess.run(["git", "-C", str(edm_dir), "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or None


def _print_table(r: dict) -> None:
    edm, ours = r["edm"], r["ours"]
    cols = [("ours (EMA)", ours, "ema")] + [(f"EDM ({w})", edm, w) for w in edm["weights"]]
    print(f"{'':28s}" + "".join(f"{c[0]:>14s}" for c in cols))
    print(f"{'train steps/s':28s}" + "".join(f"{c[1]['train_steps_per_second']:14.3f}" for c in cols))
    print(
        f"{'sampled molecules/s (T=1000)':28s}"
        + "".join(f"{c[1]['weights'][c[2]]['sampled_molecules_per_second']:14.3f}" for c in cols)
    )
    for k in METRICS:
        vals = [c[1]["weights"][c[2]]["metrics"][k] for c in cols]
        print(f"{k:28s}" + "".join(f"{v:14.3f}" if v is not None else f"{'-':>14s}" for v in vals))
    print("ratios ours / EDM:", json.dumps(r["ratios_ours_over_edm"]))


if __name__ == "__main__":
    main()
