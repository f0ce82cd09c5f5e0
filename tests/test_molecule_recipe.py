"""Molecule diffusion end to end: the run folder, metrics that re-compute from the SDF, card, resume, conditioning."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from helpers import load_recipe
from hf_medai.data.molecule_files import read_sdf
from hf_medai.evaluation.molecules import molecule_metrics
from hf_medai.pipelines import MoleculeDiffusionPipeline

recipe = load_recipe("molecule_diffusion")

TINY = [
    "--limit",
    "48",
    "--hidden_size",
    "16",
    "--num_layers",
    "2",
    "--max_steps",
    "6",
    "--save_steps",
    "3",
    "--per_device_train_batch_size",
    "16",
    "--num_eval_molecules",
    "12",
    "--eval_batch_size",
    "8",
    "--eval_inference_steps",
    "20",
    "--logging_steps",
    "1",
    "--warmup_steps",
    "0",
    "--num_train_timesteps",
    "100",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "molecules"
    recipe.main(["--output_dir", str(out), *TINY])
    return out


def test_run_folder_follows_the_contract(run):
    for name in [
        "model_index.json",
        "denoiser/config.json",
        "denoiser/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
        "README.md",
        "metrics.json",
        "run_config.yaml",
        "samples/generated.sdf",
        "checkpoint-6/model.safetensors",
        "checkpoint-6/ema_model.safetensors",
    ]:
        assert (run / name).is_file(), name
    assert not [p for p in run.rglob("*.bin") if "checkpoint-" not in str(p)]
    m = json.loads((run / "metrics.json").read_text())
    assert m["training_molecules"] == 48 and m["data_report"]["survival"]["read"] == 4999
    assert m["subgroups"] is None  # molecules have no patient subgroups
    assert m["training"]["global_step"] == 6 and m["throughput"]["train_molecules_per_second"] > 0
    assert m["throughput"]["sampling_molecules_per_second"] > 0 and m["throughput"]["peak_rss_mb"] > 0
    # The training molecules under EDM's rule: real molecules, so mostly stable and valid.
    assert m["training_atom_stability"] > 0.8 and m["training_validity"] > 0.8


def test_metrics_recompute_from_the_written_sdf(run):
    m = json.loads((run / "metrics.json").read_text())
    mols = read_sdf(run / "samples" / "generated.sdf")
    assert len(mols) == 12
    as_pairs = [([a.GetSymbol() for a in mol.GetAtoms()], mol.GetConformer().GetPositions()) for mol in mols]
    again = molecule_metrics(as_pairs, None)
    for key in ["atom_stability", "molecule_stability", "validity", "uniqueness"]:
        assert again[key] == pytest.approx(m[key]), key
    assert m["structural_alerts"]["generated"]["n_checked"] == m["generated_metrics"]["n_valid"]


def test_folder_loads_with_from_pretrained_and_writes_sdf(run, tmp_path):
    pipe = MoleculeDiffusionPipeline.from_pretrained(run)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.elements == ["H", "C", "N", "O", "F"]
    out = pipe(num_molecules=3, num_atoms=[5, 9, 12], num_inference_steps=10, generator=torch.manual_seed(0))
    assert [len(a) for a in out.atom_types] == [5, 9, 12]
    assert all(abs(np.asarray(p).mean(0)).max() < 1e-4 for p in out.positions)  # zero centre of mass
    again = pipe(num_molecules=3, num_atoms=[5, 9, 12], num_inference_steps=10, generator=torch.manual_seed(0))
    assert all(np.array_equal(a, b) for a, b in zip(out.positions, again.positions))
    out.write_sdf(tmp_path / "x.sdf")
    assert [m.GetNumAtoms() for m in read_sdf(tmp_path / "x.sdf")] == [5, 9, 12]


def test_card_reports_metrics_alerts_and_dual_use(run):
    card = ModelCard.load(run / "README.md")
    m = json.loads((run / "metrics.json").read_text())
    for phrase in [
        "In-silico research only",
        "Dual use",
        "Structural alerts",
        "Atom stability",
        "EDM on QM9",
        f"{m['atom_stability']:.3f}",
        f"{m['training_validity']:.3f}",
        "| heavy_atoms |",
    ]:
        assert phrase in card.text, phrase


def test_conditional_generation_rows_in_metrics_and_card(run):
    m = json.loads((run / "metrics.json").read_text())
    cg = m["conditional_generation"]
    assert len(cg["composition"]) == 3 and cg["per_target"] == 20
    for row in cg["composition"]:
        assert row["exact_formula"]["rate"] == 1.0  # the formula is imposed: every sample has it exactly
        assert row["hit"]["k"] == row["validity"]["k"] and row["exact_formula"]["k"] == 20
    assert cg["scaffolds"], "the NCI sample has ring scaffolds"
    for row in cg["scaffolds"]:
        assert row["max_fixed_atom_displacement"] < 1e-4 and row["fixed_elements_kept"]
        assert row["retention"]["k"] <= row["validity"]["k"]
    lo, hi = m["molecule_stability_ci"]
    assert lo <= m["molecule_stability"] <= hi
    card = (run / "README.md").read_text()
    assert "Conditional generation" in card and f"formula {cg['composition'][0]['formula']}" in card
    assert f"scaffold `{cg['scaffolds'][0]['scaffold']}`" in card and "95% CI" in card


def test_resume_from_last_checkpoint(run, tmp_path):
    copy = tmp_path / "molecules"
    shutil.copytree(run, copy)
    recipe.main(["--output_dir", str(copy), "--resume_from_checkpoint", "last", *TINY, "--max_steps", "8"])
    m = json.loads((copy / "metrics.json").read_text())
    assert m["training"]["global_step"] == 8 and m["training"]["resumed_from"].endswith("checkpoint-6")
    assert m["throughput"]["optimizer_steps"] == 2


def test_property_conditioned_run_reports_target_error(tmp_path):
    out = tmp_path / "qed"
    recipe.main(["--output_dir", str(out), *TINY, "--condition_property", "qed", "--save_strategy", "no"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["conditioning"]["property"] == "qed" and m["model"]["condition_stats"]["name"] == "qed"
    pipe = MoleculeDiffusionPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe(num_molecules=2, num_atoms=6, condition=0.5, num_inference_steps=5, output_type="np").positions[
        0
    ].shape == (6, 3)
    assert "Conditioning on qed" in (out / "README.md").read_text()


def test_bad_input_file_is_a_clear_error(tmp_path):
    from hf_medai.data.report import DataError

    bad = tmp_path / "bad.smi"
    bad.write_text("CCO ethanol\nC1CC( broken\n")
    with pytest.raises(DataError, match=r"bad\.smi.*(row|line) 2"):
        recipe.main(["--output_dir", str(tmp_path / "o"), "--data_path", str(bad), *TINY])
