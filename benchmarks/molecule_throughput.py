"""Molecule diffusion: batched graphs (all molecules in one graph, no padding) vs one molecule per forward pass.

Same EGNN weights, same molecules (RDKit's NCI sample, <= 9 heavy atoms, with hydrogens), same number of molecules
per optimizer step and per sampling call, side by side in one process, alternating A/B rounds. Baseline: a loop
over the molecules, one forward/backward each with the loss divided by the batch size (gradients accumulated),
then one optimizer step; for sampling, one pipeline call per molecule. Ours: one `collate_molecules` batch per
step, one pipeline call for all molecules.

    python benchmarks/molecule_throughput.py            # prints a table and the ratios; writes results/molecule_throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from hf_medai.data.molecules import atom_count_distribution, load_molecules
from hf_medai.models.egnn import EGNNDenoiser
from hf_medai.pipelines.molecule_diffusion import MoleculeDiffusionPipeline, collate_molecules, edm_loss


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _to(batch, device):
    return {k: v.to(device) for k, v in batch.items()}


def train_rate(model, scheduler, rows, vocab_size, batch_size, steps, per_molecule, device) -> float:
    """Optimizer steps per second."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = [rows[(i * batch_size) % len(rows) :][:batch_size] for i in range(steps)]
    start = time.perf_counter()
    for chunk in batches:
        if per_molecule:
            for row in chunk:
                loss = edm_loss(model, _to(collate_molecules([row], vocab_size), device), scheduler) / len(chunk)
                loss.backward()
        else:
            edm_loss(model, _to(collate_molecules(chunk, vocab_size), device), scheduler).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return steps / (time.perf_counter() - start)


def sample_rate(pipe, counts, steps, per_molecule, device) -> float:
    """Molecules per second."""
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    if per_molecule:
        for n in counts:
            pipe(num_molecules=1, num_atoms=[n], num_inference_steps=steps, generator=g, output_type="np")
    else:
        pipe(num_molecules=len(counts), num_atoms=counts, num_inference_steps=steps, generator=g, output_type="np")
    _sync(device)
    return len(counts) / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--molecules", type=int, default=32, help="molecules per optimizer step and per sampling call")
    p.add_argument("--train_steps", type=int, default=5, help="optimizer steps per round")
    p.add_argument("--sample_steps", type=int, default=20, help="denoising steps per sampling call")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--hidden_size", type=int, default=128)
    p.add_argument("--num_layers", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "molecule_throughput.json"))
    a = p.parse_args(argv)
    device = torch.device(a.device)

    ds, vocab, _ = load_molecules(None, limit=None)
    rows = [ds[i] for i in range(min(len(ds), 4 * a.molecules))]
    counts = [len(r["atom_types"]) for r in rows[: a.molecules]]
    torch.manual_seed(0)
    model = EGNNDenoiser(num_atom_types=len(vocab), hidden_size=a.hidden_size, num_layers=a.num_layers).to(device)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    pipe = MoleculeDiffusionPipeline(
        model, scheduler, elements=vocab, atom_count_distribution=atom_count_distribution(ds)
    )
    pipe.set_progress_bar_config(disable=True)

    rates = {
        "train_steps_per_second": {"per_molecule": [], "batched": []},
        "sampled_molecules_per_second": {"per_molecule": [], "batched": []},
    }
    train_rate(model, scheduler, rows, len(vocab), a.molecules, 1, False, device)  # warm-up
    sample_rate(pipe, counts[:2], 2, False, device)
    for _ in range(a.rounds):
        for name in ("per_molecule", "batched"):
            torch.manual_seed(0)
            rates["train_steps_per_second"][name].append(
                train_rate(
                    model, scheduler, rows, len(vocab), a.molecules, a.train_steps, name == "per_molecule", device
                )
            )
            model.eval()
            rates["sampled_molecules_per_second"][name].append(
                sample_rate(pipe, counts, a.sample_steps, name == "per_molecule", device)
            )
            model.train()
    med = {k: {n: statistics.median(v) for n, v in r.items()} for k, r in rates.items()}
    ratios = {k: round(m["batched"] / m["per_molecule"], 2) for k, m in med.items()}
    result = {
        "benchmark": "molecule_throughput",
        "what": "EGNN denoiser, batched graph (no padding) vs one molecule per forward pass, same weights and molecules",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}",
        "molecules_per_step": a.molecules,
        "mean_atoms": round(sum(counts) / len(counts), 1),
        "hidden_size": a.hidden_size,
        "num_layers": a.num_layers,
        "train_steps_per_round": a.train_steps,
        "denoising_steps_per_sample": a.sample_steps,
        "rates": rates,
        "median": med,
        "ratio_batched_over_per_molecule": ratios,
    }
    print(f"{'':30s} {'per_molecule':>13s} {'batched':>10s} {'ratio':>7s}")
    for k, m in med.items():
        print(f"{k:30s} {m['per_molecule']:13.2f} {m['batched']:10.2f} {ratios[k]:7.2f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
