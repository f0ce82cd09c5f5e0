"""MoleculeDiffusionPipeline: save/load round trip, determinism, atom counts, scheduler swaps, and an overfit run
showing that training makes sampled molecules chemically stable (EDM's distance rules)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from hf_medai.models.egnn import EGNNDenoiser
from hf_medai.pipelines import MoleculeDiffusionPipeline
from hf_medai.pipelines.molecule_diffusion import collate_molecules, edm_loss

ELEMENTS = ["H", "C", "N", "O"]


def _pipe(elements=ELEMENTS, condition_stats=None, num_train_timesteps=50, hidden_size=16):
    torch.manual_seed(0)
    denoiser = EGNNDenoiser(
        num_atom_types=len(elements), hidden_size=hidden_size, num_layers=2, condition_dim=1 if condition_stats else 0
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2", clip_sample=False
    )
    pipe = MoleculeDiffusionPipeline(
        denoiser,
        scheduler,
        elements=elements,
        atom_count_distribution={5: 0.25, 3: 0.75},
        condition_stats=condition_stats,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample(pipe, seed=0, **kw):
    return pipe(generator=torch.Generator().manual_seed(seed), output_type="np", **{"num_molecules": 4, **kw})


def _same(a, b, rtol=0.0):
    return a.atom_types == b.atom_types and all(
        np.allclose(x, y, rtol=rtol, atol=rtol) for x, y in zip(a.positions, b.positions)
    )


@pytest.mark.parametrize("elements", [ELEMENTS, ["C", "H"]])  # a 2-element list looks like diffusers' [library, class]
def test_save_and_reload_keeps_config_and_outputs(tmp_path, elements):
    pipe = _pipe(elements)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["denoiser"] == ["hf_medai.models.egnn", "EGNNDenoiser"] and index["elements"] == elements
    again = MoleculeDiffusionPipeline.from_pretrained(tmp_path)
    again.set_progress_bar_config(disable=True)
    for key in ("elements", "atom_count_distribution", "feature_scale", "condition_stats"):
        assert again.config[key] == pipe.config[key], key
    assert again.config.atom_count_distribution == {"num_atoms": [3, 5], "probs": [0.75, 0.25]}
    # an untrained denoiser drives samples to large values: compare relatively
    assert _same(_sample(pipe), _sample(again), rtol=1e-4)


def test_conditioned_pipeline_round_trip_and_errors(tmp_path):
    stats = {"name": "qed", "mean": 0.5, "std": 0.1}
    pipe = _pipe(condition_stats=stats)
    with pytest.raises(ValueError, match="condition="):
        _sample(pipe)
    a, b = _sample(pipe, condition=0.4), _sample(pipe, condition=0.9)
    assert not _same(a, b)
    pipe.save_pretrained(tmp_path)
    again = MoleculeDiffusionPipeline.from_pretrained(tmp_path)
    assert again.config.condition_stats == stats
    with pytest.raises(ValueError, match="condition_stats"):
        MoleculeDiffusionPipeline(pipe.denoiser, pipe.scheduler, elements=ELEMENTS)


def test_fixed_generator_is_deterministic():
    pipe = _pipe()
    a, b, c = _sample(pipe, seed=0), _sample(pipe, seed=0), _sample(pipe, seed=1)
    assert _same(a, b)
    assert not _same(a, c)


def test_requested_atom_counts_are_respected():
    pipe = _pipe()
    out = _sample(pipe, num_atoms=[2, 7, 1, 4])
    assert (
        [len(s) for s in out.atom_types]
        == [2, 7, 1, 4]
        == [len(p) for p in out.positions]
        == [len(c) for c in out.charges]
    )
    assert all(set(s) <= set(ELEMENTS) for s in out.atom_types)
    assert [len(s) for s in _sample(pipe, num_atoms=6).atom_types] == [6] * 4
    sampled = _sample(pipe, num_molecules=40, num_inference_steps=2)
    assert {len(s) for s in sampled.atom_types} == {3, 5}
    for p in out.positions:
        assert np.abs(p.mean(0)).max() < 1e-3 * max(1.0, np.abs(p).max())  # zero centre of mass
    with pytest.raises(ValueError, match="num_atoms"):
        _sample(pipe, num_atoms=[3, 3])


@pytest.mark.parametrize("scheduler_class", [DDIMScheduler, DPMSolverMultistepScheduler])
def test_other_schedulers_via_from_config(scheduler_class, tmp_path):
    pipe = _pipe()
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    out = _sample(pipe, num_inference_steps=10, num_atoms=[3, 4, 5, 6])
    assert [len(p) for p in out.positions] == [3, 4, 5, 6]
    assert all(np.isfinite(p).all() for p in out.positions)
    assert _same(out, _sample(pipe, num_inference_steps=10, num_atoms=[3, 4, 5, 6]))
    pipe.save_pretrained(tmp_path)
    assert type(MoleculeDiffusionPipeline.from_pretrained(tmp_path).scheduler) is scheduler_class


def test_collate_and_loss():
    rows = [
        {"atom_types": [1, 0, 0], "charges": [0, 0, 1], "positions": [[0, 0, 0], [1, 0, 0], [0, 1, 0]], "qed": 0.7},
        {"atom_types": [3, 0], "charges": [0, 0], "positions": [[5, 5, 5], [6, 5, 5]], "qed": 0.3},
    ]
    batch = collate_molecules(rows, 4, condition_stats={"name": "qed", "mean": 0.5, "std": 0.2})
    assert batch["batch"].tolist() == [0, 0, 0, 1, 1] and batch["num_atoms"].tolist() == [3, 2]
    assert (
        batch["one_hot"].shape == (5, 4)
        and batch["one_hot"][3, 3] == 1
        and batch["charges"].tolist() == [0, 0, 1, 0, 0]
    )
    torch.testing.assert_close(batch["positions"][3:].mean(0), torch.zeros(3))  # re-centred
    torch.testing.assert_close(batch["condition"], torch.tensor([[1.0], [-1.0]]))
    with pytest.raises(ValueError, match="vocabulary"):
        collate_molecules(rows, 3)
    model = EGNNDenoiser(num_atom_types=4, hidden_size=8, num_layers=1, condition_dim=1)
    loss = edm_loss(model, batch, DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2"))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and 0.2 < loss.item() < 5  # ~1 for an untrained model


# --- overfit: training must make samples chemically sensible, not only run ------------------------------------


def _metrics(out):
    from hf_medai.evaluation.molecules import molecule_metrics  # EDM's distance rules and RDKit validity

    return molecule_metrics(list(zip(out.atom_types, out.positions)), None)


def _embedded(smiles):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    AllChem.MMFFOptimizeMolecule(mol)
    pos = mol.GetConformer().GetPositions()
    return {
        "atom_types": [ELEMENTS.index(a.GetSymbol()) for a in mol.GetAtoms()],
        "charges": [0] * mol.GetNumAtoms(),
        "positions": (pos - pos.mean(0)).tolist(),
    }


@pytest.mark.slow  # ~30 s of training
def test_overfit_on_three_molecules_makes_samples_stable(tmp_path):
    pytest.importorskip("rdkit")
    from transformers import TrainingArguments

    from hf_medai.training import train_loop

    rows = [_embedded(s) for s in ("CCO", "CC(=O)O", "CN")]  # ethanol, acetic acid, methylamine
    reference = _metrics(
        SimpleNamespace(
            atom_types=[[ELEMENTS[i] for i in r["atom_types"]] for r in rows],
            positions=[np.array(r["positions"]) for r in rows],
        )
    )
    assert reference["atom_stability"] == 1.0 and reference["validity"] == 1.0
    torch.manual_seed(0)
    denoiser = EGNNDenoiser(num_atom_types=4, hidden_size=64, num_layers=4)
    scheduler = DDPMScheduler(num_train_timesteps=500, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    pipe = MoleculeDiffusionPipeline(
        denoiser, scheduler, elements=ELEMENTS, atom_count_distribution={9: 1, 8: 1, 7: 1}
    )
    pipe.set_progress_bar_config(disable=True)
    before = _metrics(pipe(num_molecules=30, generator=torch.Generator().manual_seed(0), output_type="np"))

    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=OVERFIT_STEPS,
        per_device_train_batch_size=12,
        learning_rate=3e-3,
        lr_scheduler_type="cosine",
        warmup_steps=50,
        logging_steps=25,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
    )
    result = train_loop(
        denoiser,
        args,
        rows * 4,
        lambda b: collate_molecules(b, 4),
        lambda m, b: edm_loss(m, b, scheduler),
        ema_decay=0.99,
        samples_per_batch=lambda b: b["num_atoms"].numel(),
    )
    losses = [loss for _, loss in result.loss_curve]
    pipe.denoiser = result.model.eval()
    out = pipe(num_molecules=30, generator=torch.Generator().manual_seed(0))
    after = _metrics(out)
    print(
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
        + "; ".join(
            f"{k} {before[k]:.3f} -> {after[k]:.3f}" for k in ("atom_stability", "molecule_stability", "validity")
        )
    )
    assert np.mean(losses[-3:]) < 0.5 * losses[0]
    assert after["atom_stability"] >= before["atom_stability"] + 0.1
    # output_type="mols": RDKit molecules with the same atoms, written to SDF
    assert [m.GetNumAtoms() for m in out.molecules] == [len(s) for s in out.atom_types]
    out.write_sdf(tmp_path / "samples.sdf")
    assert (tmp_path / "samples.sdf").read_text().count("$$$$") == 30


OVERFIT_STEPS = 600
