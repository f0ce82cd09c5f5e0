"""3D molecule generation with an E(3)-equivariant diffusion model (EDM, Hoogeboom et al. 2022) as a diffusers pipeline.

A molecule is atom positions [n, 3] (Angstrom, zero centre of mass) plus per-atom features: a one-hot element
block scaled by `feature_scale["one_hot"]` and, if the denoiser includes charges, one integer charge column
scaled by `feature_scale["charges"]` (EDM: 0.25 and 0.1). Positions are noised in the zero-CoM subspace,
features with plain Gaussian noise; one scheduler (any diffusers scheduler with `add_noise` / `step`) drives
both, on the concatenated [N, 3 + F] tensor of all molecules of a batch (one graph, no padding).

    pipe = MoleculeDiffusionPipeline(denoiser, scheduler, elements=["H", "C", "N", "O", "F"],
                                     atom_count_distribution=atom_count_distribution(ds))
    out = pipe(num_molecules=16, generator=torch.Generator().manual_seed(0))
    out.molecules, out.atom_types, out.positions; out.write_sdf("samples.sdf")
    pipe.save_pretrained("run/"); MoleculeDiffusionPipeline.from_pretrained("run/")

Training pieces used by the recipe and the tests: `collate_molecules` (dataset rows -> flat batch tensors) and
`edm_loss` (noise-prediction MSE, normalised per atom and feature).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from hf_medai.models.egnn import EGNNDenoiser, molecule_graph, remove_mean
from hf_medai.pipelines.fixed_atoms import FixedAtoms

EDM_FEATURE_SCALE = {"one_hot": 0.25, "charges": 0.1}


def polynomial_betas(num_train_timesteps: int, power: float = 2.0, precision: float = 1e-5) -> list[float]:
    """EDM's "polynomial_2" noise schedule as diffusers betas (`DDPMScheduler(trained_betas=...)`).

    alpha_bar(s) = (1 - s**power)**2 on s = k / T (k = 0..T, as EDM computes it), each step's ratio clipped to >= 0.001, squeezed into
    [precision, 1 - precision]; beta_k = 1 - alpha_bar(k + 1) / alpha_bar(k). It keeps more signal than the cosine
    schedule until late and ends at alpha_bar ~ precision (pure noise).
    """
    steps = num_train_timesteps + 1
    s = np.linspace(0, steps, steps) / steps
    alpha_bar = (1 - s**power) ** 2
    ratio = np.clip(alpha_bar[1:] / alpha_bar[:-1], 0.001, 1.0)
    alpha_bar = np.concatenate([[1.0], np.cumprod(ratio)])
    alpha_bar = (1 - 2 * precision) * alpha_bar + precision
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).tolist()


def make_training_scheduler(num_train_timesteps: int, beta_schedule: str):
    """DDPM scheduler without sample clipping (positions are in Angstrom); `beta_schedule` is a diffusers name or
    "polynomial_2" (EDM's)."""
    from diffusers import DDPMScheduler

    if beta_schedule == "polynomial_2":
        return DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            trained_betas=polynomial_betas(num_train_timesteps),
            clip_sample=False,
        )
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, clip_sample=False)


def molecule_features(
    one_hot: torch.Tensor, charges: torch.Tensor | None, feature_scale: dict, include_charges: bool
) -> torch.Tensor:
    """[N, K] one-hot and [N] / [N, 1] charges -> the scaled feature block [N, K (+1)] the denoiser sees."""
    parts = [one_hot * feature_scale["one_hot"]]
    if include_charges:
        if charges is None:
            raise ValueError("the denoiser includes charges but the batch has none")
        parts.append(charges.reshape(-1, 1).to(one_hot.dtype) * feature_scale["charges"])
    return torch.cat(parts, dim=-1)


def collate_molecules(rows: Sequence[dict], num_atom_types: int, condition_stats: dict | None = None) -> dict:
    """Rows of the molecules dataset (`atom_types`, `charges`, `positions`, optional property columns) -> flat tensors.

    Returns positions [N, 3] (re-centred per molecule), one_hot [N, K], charges [N] (float), batch [N],
    num_atoms [B] and, when `condition_stats = {"name", "mean", "std"}` is given, condition [B, 1]
    (the property column `name`, standardised).
    """
    if not rows:
        raise ValueError("collate_molecules got an empty list of rows")
    num_atoms = torch.tensor([len(r["atom_types"]) for r in rows], dtype=torch.long)
    types = torch.tensor([a for r in rows for a in r["atom_types"]], dtype=torch.long)
    if types.numel() and (types.min() < 0 or types.max() >= num_atom_types):
        raise ValueError(
            f"atom_types must index a vocabulary of {num_atom_types} elements, got values in "
            f"[{int(types.min())}, {int(types.max())}]"
        )
    positions = torch.tensor([p for r in rows for p in r["positions"]], dtype=torch.float32).reshape(-1, 3)
    if positions.shape[0] != types.numel():
        raise ValueError("each row needs one [x, y, z] position per atom type")
    charges = [c for r in rows for c in (r.get("charges") or [0] * len(r["atom_types"]))]
    batch = torch.repeat_interleave(torch.arange(len(rows)), num_atoms)
    out = {
        "positions": remove_mean(positions, batch, len(rows)),
        "one_hot": torch.nn.functional.one_hot(types, num_atom_types).float(),
        "charges": torch.tensor(charges, dtype=torch.float32),
        "batch": batch,
        "num_atoms": num_atoms,
    }
    if condition_stats is not None:
        values = torch.tensor([float(r[condition_stats["name"]]) for r in rows], dtype=torch.float32)
        out["condition"] = ((values - condition_stats["mean"]) / condition_stats["std"]).unsqueeze(1)
    return out


def edm_loss(model: EGNNDenoiser, batch: dict, scheduler, feature_scale: dict | None = None) -> torch.Tensor:
    """EDM's simple noise-prediction loss on a `collate_molecules` batch.

    One timestep per molecule (uniform over the scheduler's training steps); position noise projected to the
    zero-CoM subspace, feature noise plain Gaussian; squared error summed over an atom's 3 + F values, divided
    by (n_atoms * (3 + F)) per molecule, averaged over molecules. Randomness: torch's global generator.
    """
    feature_scale = feature_scale or EDM_FEATURE_SCALE
    # The config sits on the inner model; the forward must go through the DDP wrapper (it all-reduces the gradients).
    include_charges = getattr(model, "module", model).config.include_charges
    positions, mol = batch["positions"], batch["batch"]
    num_molecules = batch["num_atoms"].numel()
    features = molecule_features(batch["one_hot"], batch.get("charges"), feature_scale, include_charges)
    x0 = torch.cat([positions, features], dim=-1)
    noise = torch.randn_like(x0)
    noise = torch.cat([remove_mean(noise[:, :3], mol, num_molecules), noise[:, 3:]], dim=-1)
    num_train = scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, num_train, (num_molecules,), device=x0.device)
    noisy = scheduler.add_noise(x0, noise, timesteps[mol])
    t = timesteps.to(x0.dtype) / num_train
    out = model(noisy[:, :3], noisy[:, 3:], t, mol, batch.get("condition"))
    eps = torch.cat([out.eps_positions, out.eps_features], dim=-1)
    per_atom = ((eps - noise) ** 2).sum(-1)
    per_molecule = torch.zeros(num_molecules, dtype=x0.dtype, device=x0.device).index_add_(0, mol, per_atom)
    return (per_molecule / (batch["num_atoms"].to(x0.dtype) * x0.shape[1])).mean()


@dataclass
class MoleculeDiffusionOutput(BaseOutput):
    """Per generated molecule: element symbols, positions [n, 3] (Angstrom), integer charges [n], RDKit mol (or None)."""

    atom_types: list
    positions: list
    charges: list
    molecules: list | None = None

    def write_sdf(self, path) -> None:
        """Write the molecules (built with EDM's distance rules if not built yet) to an SDF file."""
        from hf_medai.data.molecule_chemistry import build_molecule
        from hf_medai.data.molecule_files import write_sdf

        mols = self.molecules
        if mols is None:
            mols = [build_molecule(s, p, c) for s, p, c in zip(self.atom_types, self.positions, self.charges)]
        write_sdf(mols, path)


def _normalise_count_distribution(dist: Any) -> dict | None:
    """{n_atoms: prob} or {"num_atoms": [...], "probs": [...]} -> the JSON-friendly two-list form."""
    if dist is None:
        return None
    if isinstance(dist, dict) and set(dist) == {"num_atoms", "probs"}:
        n, p = list(dist["num_atoms"]), list(dist["probs"])
    elif isinstance(dist, dict):
        n, p = [int(k) for k in dist], [float(v) for v in dist.values()]
    else:
        raise ValueError("atom_count_distribution must be {n_atoms: prob} or {'num_atoms': [...], 'probs': [...]}")
    if len(n) != len(p) or not n or min(n) < 1 or min(p) < 0 or sum(p) <= 0:
        raise ValueError("atom_count_distribution needs matching non-empty lists, counts >= 1, probabilities >= 0")
    order = np.argsort(n)
    total = float(sum(p))
    return {"num_atoms": [int(n[i]) for i in order], "probs": [float(p[i]) / total for i in order]}


class MoleculeDiffusionPipeline(DiffusionPipeline):
    """Samples 3D molecules with an `EGNNDenoiser` and a diffusers scheduler.

    Args:
        denoiser: the EGNNDenoiser (noise prediction).
        scheduler: e.g. `DDPMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False)`; any scheduler with
            `set_timesteps` / `step` and `prediction_type="epsilon"` (DDIM, DPM-Solver++, ...).
        elements: element symbol of each one-hot index, e.g. ["H", "C", "N", "O", "F"].
        atom_count_distribution: {n_atoms: prob} of the training set (stored as {"num_atoms": [...], "probs": [...]}).
        feature_scale: {"one_hot": 0.25, "charges": 0.1} (EDM's).
        condition_stats: {"name": property, "mean": m, "std": s} of a property-conditioned denoiser, else None.
    """

    model_cpu_offload_seq = "denoiser"

    def __init__(
        self,
        denoiser: EGNNDenoiser,
        scheduler,
        elements: list | None = None,
        atom_count_distribution: dict | None = None,
        feature_scale: dict | None = None,
        condition_stats: dict | None = None,
    ):
        super().__init__()
        self.register_modules(denoiser=denoiser, scheduler=scheduler)
        if elements is not None and len(elements) != denoiser.config.num_atom_types:
            raise ValueError(
                f"{len(elements)} elements for a denoiser with {denoiser.config.num_atom_types} atom types"
            )
        if condition_stats is not None and not {"name", "mean", "std"} <= set(condition_stats):
            raise ValueError("condition_stats needs keys 'name', 'mean', 'std'")
        if bool(condition_stats) != bool(denoiser.config.condition_dim):
            raise ValueError("condition_stats must be given exactly when the denoiser has condition_dim > 0")
        # Plain JSON values in model_index.json. Optional __init__ kwargs are passed back verbatim by
        # from_pretrained (a 2-element list such as ["C", "H"] is NOT mistaken for a [library, class] pair:
        # tests/test_molecule_pipeline.py pins that).
        self.register_to_config(
            elements=list(elements) if elements is not None else None,
            atom_count_distribution=_normalise_count_distribution(atom_count_distribution),
            feature_scale=dict(feature_scale or EDM_FEATURE_SCALE),
            condition_stats=dict(condition_stats) if condition_stats is not None else None,
        )

    def _atom_counts(self, num_molecules: int, num_atoms, generator, minimum: int = 1) -> list[int]:
        if num_atoms is None:
            dist = self.config.atom_count_distribution
            if dist is None:
                raise ValueError("no atom_count_distribution stored in this pipeline: pass num_atoms")
            # fixed atoms: the training distribution of sizes restricted to molecules that can hold them
            probs = torch.tensor(
                [p if n >= minimum else 0.0 for n, p in zip(dist["num_atoms"], dist["probs"])],
                dtype=torch.float64,
                device=generator.device if isinstance(generator, torch.Generator) else "cpu",
            )
            if probs.sum() <= 0:
                raise ValueError(f"no training molecule has {minimum} or more atoms (the fixed atoms): pass num_atoms")
            idx = torch.multinomial(probs, num_molecules, replacement=True, generator=generator)
            return [dist["num_atoms"][i] for i in idx.tolist()]
        if isinstance(num_atoms, int):
            counts = [num_atoms] * num_molecules
        else:
            counts = [int(n) for n in num_atoms]
            if len(counts) != num_molecules:
                raise ValueError(f"num_atoms has {len(counts)} entries for num_molecules={num_molecules}")
        if min(counts) < minimum:
            raise ValueError(
                f"every molecule needs at least {minimum} atom(s){' (the fixed atoms)' if minimum > 1 else ''}, "
                f"got num_atoms={counts}"
            )
        return counts

    def _known(self, fixed: FixedAtoms, counts: list[int], device, dtype):
        """(x0 [N, 3 + F], mask [N, 3 + F], template centroid [3]) of the fixed atoms, the first k of each molecule."""
        elements = self.config.elements or [str(i) for i in range(self.denoiser.config.num_atom_types)]
        unknown = sorted(set(fixed.atom_types) - set(elements))
        if unknown:
            raise ValueError(f"fixed atoms use element(s) {unknown} outside this model's vocabulary {elements}")
        k = len(fixed.atom_types)
        types = torch.tensor([elements.index(e) for e in fixed.atom_types], device=device)
        one_hot = torch.nn.functional.one_hot(types, len(elements)).to(dtype)
        charges = torch.tensor(fixed.charges or [0] * k, device=device, dtype=dtype)
        feats = molecule_features(one_hot, charges, self.config.feature_scale, self.denoiser.config.include_charges)
        centre = torch.zeros(3, device=device, dtype=torch.float64)
        pos = torch.zeros(k, 3, device=device, dtype=dtype)
        if fixed.positions is not None:
            p = torch.as_tensor(fixed.positions, dtype=torch.float64, device=device)
            centre = p.mean(0)
            pos = (p - centre).to(dtype)
        block = torch.cat([pos, feats], dim=-1)
        block_mask = torch.zeros_like(block, dtype=torch.bool)
        block_mask[:, 3:] = True
        block_mask[:, :3] = fixed.positions is not None
        x0 = torch.zeros(sum(counts), block.shape[1], device=device, dtype=dtype)
        mask = torch.zeros_like(x0, dtype=torch.bool)
        starts = np.cumsum([0] + counts[:-1])
        rows = torch.as_tensor((starts[:, None] + np.arange(k)[None, :]).reshape(-1), device=device)
        x0[rows] = block.repeat(len(counts), 1)
        mask[rows] = block_mask.repeat(len(counts), 1)
        return x0, mask, centre

    @staticmethod
    def _fixed_centroids(x: torch.Tensor, mask_rows: torch.Tensor, mol: torch.Tensor, num_molecules: int):
        """[B, 3] centroid of each molecule's fixed atoms (positions x [N, 3], mask_rows [N] bool)."""
        w = mask_rows.to(x.dtype).unsqueeze(1)
        sums = torch.zeros(num_molecules, 3, dtype=x.dtype, device=x.device).index_add_(0, mol, x * w)
        n = torch.zeros(num_molecules, dtype=x.dtype, device=x.device).index_add_(0, mol, w[:, 0])
        return sums / n.clamp(min=1).unsqueeze(1)

    def _impose(self, sample, known, t_next, generator, mol, num_molecules):
        """Replace the fixed entries of `sample` (at noise level t_next, None = clean) with the fixed atoms noised
        to that level; fixed positions are moved as a block so their centroid matches the sampled one (the frame
        of the generated atoms is free: the model only sees relative positions)."""
        x0, mask, _ = known
        if t_next is None:
            target = x0.clone()
        else:
            noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            steps = torch.full((x0.shape[0],), int(t_next), device=x0.device, dtype=torch.long)
            target = self.scheduler.add_noise(x0, noise, steps)
        pos_rows = mask[:, 0]
        if pos_rows.any():
            shift = self._fixed_centroids(sample[:, :3], pos_rows, mol, num_molecules) - self._fixed_centroids(
                target[:, :3], pos_rows, mol, num_molecules
            )
            target = torch.cat([target[:, :3] + shift[mol], target[:, 3:]], dim=-1)
        return torch.where(mask, target, sample)

    def _condition(self, condition, num_molecules: int, device, dtype):
        stats = self.config.condition_stats
        if stats is None:
            if condition is not None:
                raise ValueError("condition given but this pipeline's denoiser is not conditioned")
            return None
        if condition is None:
            raise ValueError(f"this pipeline is conditioned on {stats['name']!r}: pass condition=<target value>")
        values = torch.as_tensor(condition, dtype=torch.float64).reshape(-1)
        if values.numel() == 1:
            values = values.expand(num_molecules)
        if values.numel() != num_molecules:
            raise ValueError(f"condition must be one value or {num_molecules} values")
        return ((values - stats["mean"]) / stats["std"]).to(device=device, dtype=dtype).unsqueeze(1)

    @torch.no_grad()
    def __call__(
        self,
        num_molecules: int = 16,
        num_atoms: int | Sequence[int] | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        condition: float | Sequence[float] | None = None,
        fixed_atoms: FixedAtoms | None = None,
        output_type: str = "mols",
        return_dict: bool = True,
    ):
        """Generate `num_molecules` molecules, all in one graph batch per denoising step.

        num_atoms: None (drawn from the stored training distribution with `generator`), an int, or one int
        per molecule. num_inference_steps: None = all training steps. condition: target property value(s)
        (raw units) for a conditioned pipeline. fixed_atoms: a `FixedAtoms` that the first atoms of every molecule
        keep exactly (elements, and positions when given: composition conditioning and scaffold inpainting, by
        replacement of the fixed entries at every step); with positions, the output is in the template's frame.
        output_type: "mols" (also builds RDKit molecules with EDM's
        distance rules, needs rdkit) or "np".
        """
        if output_type not in ("mols", "np"):
            raise ValueError(f"output_type must be 'mols' or 'np', got {output_type!r}")
        if isinstance(generator, list):
            raise ValueError("pass one torch.Generator: all molecules are sampled in one batch")
        denoiser = self.denoiser
        device, dtype = self._execution_device, denoiser.dtype
        if fixed_atoms is not None and not isinstance(fixed_atoms, FixedAtoms):
            raise ValueError("fixed_atoms must be a FixedAtoms (elements, optional positions)")
        minimum = len(fixed_atoms.atom_types) if fixed_atoms is not None else 1
        if fixed_atoms is not None and fixed_atoms.positions is None and num_atoms is None:
            num_atoms = minimum  # a composition: exactly these atoms
        counts = self._atom_counts(num_molecules, num_atoms, generator, minimum)
        mol = torch.repeat_interleave(torch.arange(num_molecules, device=device), torch.tensor(counts, device=device))
        n_total, n_types = mol.numel(), denoiser.config.num_atom_types
        cond = self._condition(condition, num_molecules, device, dtype)
        edges = molecule_graph(mol)  # the same graph at every denoising step: built (and checked) once

        sample = randn_tensor((n_total, 3 + denoiser.num_features), generator=generator, device=device, dtype=dtype)
        sample = torch.cat([remove_mean(sample[:, :3], mol, num_molecules), sample[:, 3:]], dim=-1)
        sample = sample * self.scheduler.init_noise_sigma
        num_train = self.scheduler.config.num_train_timesteps
        self.scheduler.set_timesteps(num_inference_steps or num_train, device=device)
        timesteps = self.scheduler.timesteps
        known = self._known(fixed_atoms, counts, device, dtype) if fixed_atoms is not None else None
        if known is not None:
            sample = self._impose(sample, known, timesteps[0], generator, mol, num_molecules)

        for i, t in enumerate(self.progress_bar(timesteps)):
            model_input = self.scheduler.scale_model_input(sample, t)
            time = torch.full((num_molecules,), float(t) / num_train, device=device, dtype=dtype)
            out = denoiser(model_input[:, :3], model_input[:, 3:], time, mol, cond, edges=edges)
            eps = torch.cat([out.eps_positions, out.eps_features], dim=-1)
            sample = self.scheduler.step(eps, t, sample, generator=generator).prev_sample
            if known is not None:
                sample = self._impose(
                    sample, known, timesteps[i + 1] if i + 1 < len(timesteps) else None, generator, mol, num_molecules
                )
            # the step's fresh noise is isotropic: project positions back to the zero-CoM subspace
            sample = torch.cat([remove_mean(sample[:, :3], mol, num_molecules), sample[:, 3:]], dim=-1)

        if known is not None and fixed_atoms.positions is not None:
            # back into the template's frame: the fixed atoms land exactly where they were given
            x0, mask, centre = known
            shift = centre.to(dtype) - self._fixed_centroids(sample[:, :3], mask[:, 0], mol, num_molecules)
            sample = torch.cat([sample[:, :3] + shift[mol], sample[:, 3:]], dim=-1)
        positions = sample[:, :3].float().cpu().numpy()
        types = sample[:, 3 : 3 + n_types].argmax(-1).cpu().numpy()
        if denoiser.config.include_charges:
            charges = torch.round(sample[:, 3 + n_types] / self.config.feature_scale["charges"]).long().cpu().numpy()
        else:
            charges = np.zeros(n_total, dtype=np.int64)
        elements = self.config.elements or [str(i) for i in range(n_types)]
        splits = np.cumsum(counts)[:-1]
        atom_types = [[elements[i] for i in part] for part in np.split(types, splits)]
        positions, charges = np.split(positions, splits), np.split(charges, splits)
        molecules = None
        if output_type == "mols":
            from hf_medai.data.molecule_chemistry import build_molecule  # needs rdkit; imported only when asked

            molecules = [build_molecule(s, p, c) for s, p, c in zip(atom_types, positions, charges)]
        self.maybe_free_model_hooks()
        if not return_dict:
            return (atom_types, positions, charges, molecules)
        return MoleculeDiffusionOutput(
            atom_types=atom_types, positions=positions, charges=charges, molecules=molecules
        )
