"""Score a 3D molecule generator: EDM's stability / validity / uniqueness / novelty exactly as the papers define
them, the same numbers for the training molecules as the reference, property distances, structural alerts and, for
a property-conditioned model, how close the generated molecules come to their targets. One report, in metrics.json.
Mirrors `hf_medai.evaluation.image_generation` for lesion images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from hf_medai.data.molecule_files import write_sdf
from hf_medai.data.qm9 import PROPERTIES as QM9_PROPERTIES
from hf_medai.evaluation.molecule_conditioning import evaluate_conditioning
from hf_medai.evaluation.molecules import (
    dataset_molecules,
    molecule_metrics,
    property_distances,
    property_error,
    structural_alerts,
    training_smiles_for_novelty,
)
from hf_medai.evaluation.qm9_conditioning import evaluate_qm9_conditioning
from hf_medai.pipelines.sampling import make_scheduler

HEADLINE = ("atom_stability", "molecule_stability", "validity", "uniqueness", "novelty", "validity_x_uniqueness")


@dataclass
class MoleculeEvalArguments:
    num_eval_molecules: int = field(
        default=200, metadata={"help": "Molecules generated for the evaluation (samples/generated.sdf)."}
    )
    eval_scheduler: Literal["ddpm", "ddim", "dpmsolver++"] = field(
        default="ddpm", metadata={"help": "ddpm | ddim | dpmsolver++."}
    )
    eval_inference_steps: int | None = field(
        default=None, metadata={"help": "Sampling steps (default: every training step, as EDM)."}
    )
    eval_batch_size: int = field(default=200, metadata={"help": "Molecules per sampling batch (one graph batch)."})
    eval_seed: int = field(default=1234, metadata={"help": "Seed of the evaluation samples."})
    conditional_targets: int = field(
        default=3,
        metadata={
            "help": "Composition and scaffold conditioning: this many formulas and scaffolds (the training data's "
            "most common), scored in the card (0 = skip)."
        },
    )
    conditional_molecules: int = field(default=20, metadata={"help": "Molecules generated per formula / scaffold."})
    composition_formulas: list[str] = field(
        default_factory=list,
        metadata={"help": "Formulas to condition on, e.g. C7H8N2O2 (default: the most common training formulas)."},
    )
    predictor_molecules: int = field(
        default=20000,
        metadata={"help": "QM9-property conditioning: molecules of QM9's train_a the property predictor learns from."},
    )
    predictor_held_out: int = field(
        default=2000, metadata={"help": "QM9-property conditioning: test-split molecules for the predictor's own MAE."}
    )
    sample_every: int = field(
        default=0,
        metadata={"help": "Every N optimizer steps, sample 32 molecules and log their stability (0 = never)."},
    )


def generate_molecules(pipe, args: MoleculeEvalArguments, targets=None) -> tuple[list, list, list, float]:
    """(atom types, positions, RDKit molecules, molecules per second) of `args.num_eval_molecules` samples."""
    if args.eval_scheduler != "ddpm":
        pipe.scheduler = make_scheduler(args.eval_scheduler, pipe.scheduler.config)
    generator = torch.Generator().manual_seed(args.eval_seed)
    atoms, positions, mols = [], [], []
    start = time.perf_counter()
    for i in range(0, args.num_eval_molecules, args.eval_batch_size):
        n = min(args.eval_batch_size, args.num_eval_molecules - i)
        o = pipe(
            n,
            num_inference_steps=args.eval_inference_steps,
            generator=generator,
            output_type="mols",
            condition=targets[i : i + n].tolist() if targets is not None else None,
        )
        atoms += o.atom_types
        positions += o.positions
        mols += o.molecules
    return atoms, positions, mols, len(atoms) / (time.perf_counter() - start)


def evaluate_molecule_generator(
    pipe, dataset, elements, args: MoleculeEvalArguments, prop: str | None, out: Path, qm9_split: str | None = None
) -> dict:
    """Generate, write samples/generated.sdf, and score with EDM's metrics; the same metrics for the training
    molecules as the reference. Returns the report with its `headline` (flat metrics) and `sampling_throughput`."""
    rng = np.random.default_rng(args.eval_seed)
    targets = rng.choice(np.asarray(dataset[prop], dtype=np.float64), size=args.num_eval_molecules) if prop else None
    atoms, positions, mols, per_second = generate_molecules(pipe, args, targets)
    write_sdf(mols, out / "samples" / "generated.sdf")

    train_smiles = training_smiles_for_novelty(dataset, elements)
    generated = molecule_metrics(zip(atoms, positions), train_smiles)
    reference = molecule_metrics(dataset_molecules(dataset, elements), None)  # real molecules, same rule
    distances = property_distances(mols, dataset)
    alerts = {"generated": structural_alerts(mols)}
    headline = {k: generated[k] for k in HEADLINE}
    headline["molecule_stability_ci"] = generated["molecule_stability_ci"]
    headline.update({f"training_{k}": reference[k] for k in ("atom_stability", "molecule_stability", "validity")})
    headline.update({f"{p}_wasserstein": d["wasserstein"] for p, d in distances.items()})
    headline["fraction_with_structural_alert"] = alerts["generated"]["fraction_with_alert"]
    report = {
        "headline": headline,
        "generation": {
            "molecules": len(atoms),
            "scheduler": args.eval_scheduler,
            "inference_steps": args.eval_inference_steps or pipe.scheduler.config.num_train_timesteps,
            "seed": args.eval_seed,
            "sdf": "samples/generated.sdf",
        },
        "generated_metrics": generated,
        "training_reference_metrics": reference,
        "property_distances": distances,
        "structural_alerts": alerts,
        "sampling_throughput": {"sampling_molecules_per_second": round(per_second, 3)},
    }
    if prop in QM9_PROPERTIES:  # no RDKit descriptor: a predictor learnt on QM9 itself scores them (EDM's protocol)
        report["conditioning"] = evaluate_qm9_conditioning(
            prop,
            list(zip(atoms, positions)),
            targets,
            qm9_split,
            args.predictor_molecules,
            args.predictor_held_out,
            args.eval_seed,
        )
        headline[f"{prop}_mae_to_target"] = report["conditioning"]["mae"]
    elif prop:
        report["conditioning"] = {
            "property": prop,
            "targets": "drawn from the training values",
            "mae": property_error(mols, prop, targets),
            "mae_shuffled_targets": property_error(mols, prop, rng.permutation(targets)),
        }
        headline[f"{prop}_mae_to_target"] = report["conditioning"]["mae"]
    if args.conditional_targets > 0 and args.conditional_molecules > 0 and not prop:
        report["conditional_generation"] = evaluate_conditioning(
            pipe,
            dataset,
            elements,
            atoms,
            targets=args.conditional_targets,
            per_target=args.conditional_molecules,
            steps=args.eval_inference_steps,
            seed=args.eval_seed,
            formulas=args.composition_formulas,
        )
    return report
