"""Diffusion models of 3D small molecules (recipes/molecule_diffusion.py)."""

from __future__ import annotations

from pathlib import Path

from hf_medai.kinds.base import ChaiFacts, Kind

MOLECULE_SETTINGS = [
    "max_heavy_atoms",
    "elements",
    "neutral_only",
    "hidden_size",
    "num_layers",
    "num_train_timesteps",
    "beta_schedule",
    "condition_property",
    "learning_rate",
    "max_steps",
    "per_device_train_batch_size",
    "lr_scheduler_type",
    "ema_decay",
    "bf16",
    "seed",
]


def molecule_diffusion_context(m: dict, config: dict, run_dir: Path) -> dict:
    """Template variables of 3D molecule diffusion pipelines (recipes/molecule_diffusion.py)."""
    return dict(
        settings=[(k, config[k]) for k in MOLECULE_SETTINGS if k in config],
        survival=(m.get("data_report") or {}).get("survival") or {},
    )


KIND = Kind(
    name="molecule_generator",
    task="molecule-generation",
    template="molecule_diffusion.md",
    context=molecule_diffusion_context,
    chai=ChaiFacts(
        outputs="3D molecular structures (element types and coordinates), written as SDF.",
        io="Input: a number of molecules (and optional property target) and a seed. Output: atoms with 3D "
        "coordinates.",
        population="None: generates small molecules; no patients involved.",
        risk="Low for patients directly; dual use (toxic compounds) is discussed in the Hub card.",
        usefulness=(
            ("validity", "Validity"),
            ("atom_stability", "Atom stability"),
            ("molecule_stability", "Molecule stability"),
            ("uniqueness", "Uniqueness"),
            ("novelty", "Novelty"),
            ("validity_x_uniqueness", "Validity x uniqueness"),
        ),
        safety=(
            ("fraction_with_structural_alert", "Fraction with a PAINS/Brenk structural alert"),
            ("validity", "Validity"),
        ),
        no_fairness="not applicable: generated molecules have no patient subgroups",
        splits=None,
        bias_steps=("Generated molecules screened with PAINS and Brenk structural-alert catalogues.",),
        generative=True,
    ),
    demo=("hf_medai.demos.molecules", "MoleculeDemo"),
)
