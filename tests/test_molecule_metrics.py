"""EDM molecule metrics on hand-made cases (shared/standards/edm-molecule-metrics.md)."""

import numpy as np
import pytest

pytest.importorskip("rdkit")

import datasets  # noqa: E402
from rdkit import Chem  # noqa: E402
from rdkit.Chem import AllChem  # noqa: E402

from hf_medai.data.molecule_chemistry import bond_matrix, bond_order, build_molecule  # noqa: E402
from hf_medai.data.molecule_files import read_sdf, write_sdf  # noqa: E402
from hf_medai.evaluation.molecules import (  # noqa: E402
    canonical_smiles,
    is_valid,
    molecule_metrics,
    property_distances,
    property_error,
    stability,
    structural_alerts,
    training_smiles_for_novelty,
)


def embedded(smiles: str, seed: int = 0):
    """(symbols, positions) of an ETKDG + MMFF conformer with explicit hydrogens: real geometry."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    assert AllChem.EmbedMolecule(mol, params) == 0
    AllChem.MMFFOptimizeMolecule(mol)
    return [a.GetSymbol() for a in mol.GetAtoms()], mol.GetConformer().GetPositions()


# ----------------------------------------------------------------------------------------------- bond orders


@pytest.mark.parametrize(
    "a, b, pm, expected",
    [
        ("C", "C", 164, 0),  # single 154 + 10: strict, so exactly 164 is no bond
        ("C", "C", 163.999, 1),
        ("C", "C", 139, 1),  # double 134 + 5: an aromatic 139 pm bond counts as single
        ("C", "C", 138.999, 2),
        ("C", "C", 123, 2),  # triple 120 + 3
        ("C", "C", 122.999, 3),
        ("H", "H", 84, 0),
        ("H", "H", 83.999, 1),
        ("C", "N", 119, 2),  # triple 116 + 3
        ("N", "C", 118.999, 3),  # symmetric
        ("O", "O", 126, 1),  # double 121 + 5
        ("O", "O", 125.999, 2),
        ("C", "F", 100, 1),  # no double or triple length for C-F: single however short
        ("N", "O", 110, 2),  # N-O has a double but no triple length
        ("C", "Cl", 170, 0),  # outside the H/C/N/O/F tables: never bonded
    ],
)
def test_bond_order_thresholds_are_strict(a, b, pm, expected):
    assert bond_order(a, b, pm / 100) == expected


def test_bond_matrix_matches_pairwise_bond_order():
    symbols, positions = embedded("OC(=O)C#CC=CCN")
    matrix = bond_matrix(symbols, positions)
    assert matrix.shape == (len(symbols),) * 2 and np.array_equal(matrix, matrix.T)
    assert (np.diag(matrix) == 0).all()
    for i in range(len(symbols)):
        for j in range(len(symbols)):
            if i != j:
                d = float(np.linalg.norm(positions[i] - positions[j]))
                assert matrix[i, j] == bond_order(symbols[i], symbols[j], d)


@pytest.mark.parametrize("smiles, order", [("C=C", 2), ("C#C", 3), ("C#N", 3)])
def test_multiple_bonds_from_real_geometry(smiles, order):
    symbols, positions = embedded(smiles)
    matrix = bond_matrix(symbols, positions)
    assert matrix[0, 1] == order
    assert stability(symbols, positions) == (len(symbols), len(symbols), True)


# ----------------------------------------------------------------------------------------------- stability, validity


@pytest.mark.parametrize("smiles", ["C", "CCO", "CC(=O)N", "FC(F)F"])
def test_real_molecules_are_stable_and_valid(smiles):
    symbols, positions = embedded(smiles)
    n_stable, n_atoms, mol_stable = stability(symbols, positions)
    assert (n_stable, n_atoms, mol_stable) == (len(symbols), len(symbols), True)
    mol = build_molecule(symbols, positions)
    assert mol.GetNumAtoms() == len(symbols)
    assert mol.GetNumConformers() == 1
    np.testing.assert_allclose(mol.GetConformer().GetPositions(), positions)
    assert is_valid(mol)
    expected = Chem.MolToSmiles(Chem.AddHs(Chem.MolFromSmiles(smiles)))
    assert canonical_smiles(mol) == expected


def test_radical_is_not_stable_but_valid():
    """CH3: the carbon has valence 3, so it is unstable; RDKit gives it an implicit H, so it is valid."""
    symbols, positions = embedded("C")
    symbols, positions = symbols[:4], positions[:4]
    assert stability(symbols, positions) == (3, 4, False)
    mol = build_molecule(symbols, positions)
    assert is_valid(mol)
    methane = canonical_smiles(build_molecule(*embedded("C")))
    assert canonical_smiles(mol) != methane  # the explicit-H SMILES tells the radical from methane


def test_over_valent_carbon_is_invalid():
    directions = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], dtype=float)
    positions = np.vstack([[0, 0, 0], 1.09 * directions])
    symbols = ["C"] + ["H"] * 5
    # each H bonds only to C (H-H distances are >= 1.54 A), so the H atoms are stable; only C is not
    assert stability(symbols, positions) == (5, 6, False)
    assert bond_matrix(symbols, positions).sum(1).tolist() == [5, 1, 1, 1, 1, 1]
    assert not is_valid(build_molecule(symbols, positions))


def test_element_outside_the_tables_is_not_stable():
    symbols, positions = embedded("CCl")
    n_stable, n_atoms, mol_stable = stability(symbols, positions)
    assert not mol_stable and n_stable < n_atoms


def test_disconnected_pair_keeps_the_largest_fragment():
    ethanol = embedded("CCO")
    methane = embedded("C")
    symbols = ethanol[0] + methane[0]
    positions = np.vstack([ethanol[1], methane[1] + 10.0])
    mol = build_molecule(symbols, positions)
    assert is_valid(mol)
    assert canonical_smiles(mol) == canonical_smiles(build_molecule(*ethanol))
    assert "." in canonical_smiles(mol, largest_fragment=False)
    assert stability(symbols, positions)[2]  # both fragments are stable molecules


# ----------------------------------------------------------------------------------------------- the metrics


def test_molecule_metrics_uniqueness_and_novelty():
    ethanol, methane = embedded("CCO"), embedded("C")
    radical = (methane[0][:4], methane[1][:4])
    over_valent = (
        ["C"] + ["H"] * 5,
        np.vstack([[0, 0, 0], 1.09 * np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1.0]])]),
    )
    training = {canonical_smiles(build_molecule(*methane), largest_fragment=False)}
    m = molecule_metrics([ethanol, ethanol, methane, radical, over_valent], training)
    assert m["n_generated"] == 5 and m["n_valid"] == 4
    assert m["validity"] == pytest.approx(4 / 5)
    assert m["molecule_stability"] == pytest.approx(3 / 5)
    n_atoms = 9 + 9 + 5 + 4 + 6
    assert m["atom_stability"] == pytest.approx((n_atoms - 1 - 1) / n_atoms)  # the radical's C, the over-valent C
    assert m["n_unique"] == 3 and m["uniqueness"] == pytest.approx(3 / 4)
    assert m["validity_x_uniqueness"] == pytest.approx(3 / 5)
    assert m["novelty"] == pytest.approx(2 / 3)  # ethanol and the radical are new; methane is in training


def test_duplicates_give_half_uniqueness():
    ethanol = embedded("CCO")
    m = molecule_metrics([ethanol, ethanol], training_smiles=None)
    assert m["uniqueness"] == 0.5 and m["novelty"] is None


def test_no_valid_molecule_gives_none_not_nan():
    m = molecule_metrics([(["C"] + ["H"] * 5, np.vstack([[0, 0, 0], 1.09 * np.eye(3), -1.09 * np.eye(3)[:2]]))], set())
    assert m["validity"] == 0 and m["uniqueness"] is None and m["novelty"] is None


def _dataset(smiles_list):
    vocab = ["H", "C", "N", "O", "F"]
    rows = {"atom_types": [], "positions": [], "qed": [], "logp": [], "mw": [], "sa": []}
    from hf_medai.data.molecule_chemistry import molecule_properties

    for s in smiles_list:
        symbols, positions = embedded(s)
        rows["atom_types"].append([vocab.index(x) for x in symbols])
        rows["positions"].append(positions.tolist())
        for k, v in molecule_properties(Chem.MolFromSmiles(s)).items():
            rows[k].append(v)
    return datasets.Dataset.from_dict(rows), vocab


def test_training_smiles_are_built_the_same_way():
    dataset, vocab = _dataset(["CCO", "C", "CC(=O)N"])
    training = training_smiles_for_novelty(dataset, vocab)
    assert len(training) == 3
    m = molecule_metrics([embedded("CCO", seed=7), embedded("CCN")], training)
    assert m["n_novel"] == 1 and m["novelty"] == 0.5  # ethanol (another conformer) is not novel; ethylamine is


def test_property_distances_and_error():
    smiles = ["CCO", "C", "CC(=O)N", "c1ccccc1O"]
    dataset, _ = _dataset(smiles)
    mols = [build_molecule(*embedded(s)) for s in smiles] + [None]
    out = property_distances(mols, dataset)
    assert set(out) == {"qed", "logp", "mw"}
    # phenol's ring bonds (~139-140 pm) are single by EDM's rule: still valid (implicit H), another molecule
    assert out["mw"]["n_generated"] == 4 and out["mw"]["n_training"] == 4
    assert out["mw"]["wasserstein"] >= 0 and 0 <= out["mw"]["ks"] <= 1
    same = property_distances([Chem.AddHs(Chem.MolFromSmiles(s)) for s in smiles], dataset)
    assert same["qed"]["wasserstein"] == pytest.approx(0, abs=1e-9)
    assert same["logp"]["ks"] == pytest.approx(0, abs=1e-9)
    methane = build_molecule(*embedded("C"))
    assert property_error([methane], "mw", 16.043) == pytest.approx(0, abs=1e-2)
    assert property_error([methane, None], "mw", [10.0, 0.0]) == pytest.approx(6.043, abs=1e-2)
    assert property_error([None], "mw", 1.0) is None
    with pytest.raises(ValueError, match="unknown property"):
        property_error([methane], "boiling_point", 1.0)


# ----------------------------------------------------------------------------------------------- alerts, SDF


def test_structural_alerts():
    alerting = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in ["S=C1SC(=Cc2ccccc2)C(=O)N1", "Oc1ccccc1O"]]
    out = structural_alerts(alerting)
    assert out["PAINS_molecules"] == 2 and out["Brenk_molecules"] == 2 and out["n_with_alert"] == 2
    descriptions = {d for _, d, _ in out["top_alerts"]}
    assert any(d.startswith("ene_rhod") for d in descriptions)
    assert any(d.startswith("catechol") for d in descriptions)
    clean = structural_alerts([build_molecule(*embedded(s)) for s in ["c1ccccc1", "CCO"]])
    assert clean["n_with_alert"] == 0 and clean["PAINS_alerts"] == 0 and clean["Brenk_alerts"] == 0
    assert clean["n_checked"] == 2 and clean["fraction_with_alert"] == 0


def test_sdf_round_trip(tmp_path):
    ethanol, methane = embedded("CCO"), embedded("C")
    over_valent = (["C"] + ["H"] * 5, np.vstack([[0, 0, 0], 1.09 * np.eye(3), -1.09 * np.eye(3)[:2]]))
    mols = [build_molecule(*m) for m in (ethanol, methane, over_valent)]
    path = tmp_path / "samples" / "generated.sdf"
    write_sdf(
        mols,
        path,
        properties={"qed": [0.4, 0.3, None], "valid": [True, True, False], "n": [9, 5, 6], "smiles": ["CCO", "C", ""]},
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["generated.sdf"]  # no temporary file left
    back = read_sdf(path)
    assert len(back) == 3
    for original, (symbols, positions), mol in zip(mols, (ethanol, methane, over_valent), back):
        assert [a.GetSymbol() for a in mol.GetAtoms()] == symbols
        np.testing.assert_allclose(mol.GetConformer().GetPositions(), positions, atol=1e-4)
        assert (
            bond_matrix(symbols, mol.GetConformer().GetPositions()).tolist()
            == bond_matrix(symbols, positions).tolist()
        )
        assert mol.GetNumBonds() == original.GetNumBonds()
    props = back[0].GetPropsAsDict()
    assert props["qed"] == pytest.approx(0.4) and props["n"] == 9 and props["valid"] == "True"
    assert not back[2].HasProp("qed")
    assert not is_valid(back[2]) and is_valid(back[0])
    with pytest.raises(ValueError, match="values for 3 molecules"):
        write_sdf(mols, path, properties={"qed": [1.0]})
