"""Molecule loading: every format in its real layout, bad input (errors and counted skips), conformers, cache."""

import numpy as np
import pytest

pytest.importorskip("rdkit")

from rdkit import Chem  # noqa: E402
from rdkit.Chem import AllChem  # noqa: E402

from hf_medai.data import molecules as molecules_module  # noqa: E402
from hf_medai.data.molecules import atom_count_distribution, load_molecules, property_table  # noqa: E402
from hf_medai.data.report import DataError  # noqa: E402

COLUMNS = {"smiles", "atom_types", "charges", "positions", "num_atoms", "num_heavy_atoms", "qed", "logp", "mw", "sa"}


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def centre_of_mass(row, vocab):
    table = Chem.GetPeriodicTable()
    masses = np.array([table.GetAtomicWeight(vocab[t]) for t in row["atom_types"]])
    positions = np.asarray(row["positions"])
    return (masses[:, None] * positions).sum(0) / masses.sum()


def bond_lengths(row, vocab, a="C", b="C"):
    """Lengths of the a-b pairs closer than 1.7 A (in these small organic molecules: exactly the a-b bonds)."""
    symbols = [vocab[t] for t in row["atom_types"]]
    positions = np.asarray(row["positions"])
    out = []
    for i in range(len(symbols)):
        for j in range(i + 1, len(symbols)):
            if sorted((symbols[i], symbols[j])) == sorted((a, b)):
                d = float(np.linalg.norm(positions[i] - positions[j]))
                if d < 1.7:
                    out.append(d)
    return out


# ----------------------------------------------------------------------------------------------- formats


def test_smiles_file(tmp_path, cache):
    path = write(tmp_path / "mols.smi", "CCO ethanol\nc1ccccc1\tbenzene\n\nCC(=O)N acetamide\n")
    ds, vocab, report = load_molecules(path, cache_dir=cache)
    assert set(ds.column_names) == COLUMNS
    assert vocab == ["H", "C", "N", "O"]
    assert ds["smiles"] == ["CCO", "c1ccccc1", "CC(N)=O"]
    assert ds["num_atoms"] == [9, 12, 9] and ds["num_heavy_atoms"] == [3, 6, 4]
    assert report.rows_read == 3 and report.rows_kept == 3
    assert report.notes["survival"]["conformer"] == 3 and report.notes["conformers"] == {"mmff": 3}
    for row in ds:
        assert len(row["atom_types"]) == len(row["positions"]) == len(row["charges"]) == row["num_atoms"]
        np.testing.assert_allclose(centre_of_mass(row, vocab), 0, atol=1e-4)
        assert all(1.3 < d < 1.6 for d in bond_lengths(row, vocab))
        assert 0 < row["qed"] < 1 and 1 <= row["sa"] <= 10 and row["mw"] > 0
    benzene = ds[1]
    cc = bond_lengths(benzene, vocab)
    assert len(cc) == 6 and all(1.37 < d < 1.42 for d in cc)
    assert property_table(ds).shape == (3, 7)
    assert atom_count_distribution(ds) == {9: 2 / 3, 12: 1 / 3}


def test_conformers_are_seeded(tmp_path, cache):
    path = write(tmp_path / "mols.smi", "CCCCO\n")
    a, _, _ = load_molecules(path, cache_dir=tmp_path / "c1", seed=3)
    b, _, _ = load_molecules(path, cache_dir=tmp_path / "c2", seed=3)
    assert a["positions"] == b["positions"]


def test_moses_csv(tmp_path, cache):
    path = write(tmp_path / "dataset_v1.csv", "SMILES,SPLIT\nCCO,train\nCC(C)=O,train\nOC1CCCC1,test\n")
    ds, vocab, _ = load_molecules(path, cache_dir=cache)
    assert ds["smiles"] == ["CCO", "CC(C)=O", "OC1CCCC1"] and vocab == ["H", "C", "O"]


def test_zinc_csv(tmp_path, cache):
    path = write(tmp_path / "zinc.csv", "smiles,zinc_id\nCC(=O)NC,ZINC000001\nFC(F)(F)CO,ZINC000002\n")
    ds, vocab, _ = load_molecules(path, cache_dir=cache)
    assert ds["smiles"] == ["CNC(C)=O", "OCC(F)(F)F"] and vocab == ["H", "C", "N", "O", "F"]


def test_sdf_keeps_file_coordinates_and_embeds_2d(tmp_path, cache):
    mol3d = Chem.AddHs(Chem.MolFromSmiles("CC(=O)O"))
    AllChem.EmbedMolecule(mol3d, randomSeed=1)
    mol2d = Chem.MolFromSmiles("CCN")
    AllChem.Compute2DCoords(mol2d)
    path = tmp_path / "mols.sdf"
    writer = Chem.SDWriter(str(path))
    writer.write(mol3d)
    writer.write(mol2d)
    writer.close()
    ds, vocab, report = load_molecules(path, cache_dir=cache)
    assert ds["smiles"] == ["CC(=O)O", "CCN"]
    assert report.notes["conformers"] == {"from_file": 1, "mmff": 1}
    original = mol3d.GetConformer().GetPositions()
    got = np.asarray(ds[0]["positions"])

    def distances(x):
        return np.linalg.norm(x[:, None] - x[None], axis=-1)

    np.testing.assert_allclose(distances(got), distances(original), atol=1e-4)  # same geometry, only centred
    assert ds[1]["num_atoms"] == 10 and np.ptp(np.asarray(ds[1]["positions"])[:, 2]) > 0.1  # really 3D now


QM9_METHANE = """5
gdb 1\t157.7118\t157.70997\t157.70699\t0.\t13.21\t-0.3877\t0.1171\t0.5048\t35.3641\t0.044749\t-40.47893\t-40.476062\t-40.475117\t-40.498597\t6.469\t
C\t-0.0126981359\t 1.0858041578\t 0.0080009958\t-0.535689
H\t 0.002150416\t-6.0313176*^-3\t 0.0019761204\t 0.133921
H\t 1.0117308433\t 1.4637511618\t 2.765748*^-4\t 0.133922
H\t-0.540815069\t 1.4475266138\t-0.8766437152\t 0.133923
H\t-0.5238136345\t 1.4379326443\t 0.9063972942\t 0.133923
1341.307\t1341.3284\t1341.365\t1562.6731\t1562.7453\t3038.3205\t3151.6034\t3151.6788\t3151.7078
C\tC
InChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4
"""

QM9_WATER = """3
gdb 3\t799.58812\t437.90386\t282.94545\t1.8511\t6.31\t-0.2928\t0.0687\t0.3615\t19.0002\t0.021375\t-76.404702\t-76.401867\t-76.400922\t-76.422349\t6.002\t
O\t-0.0343604951\t 0.9775395708\t 0.0076015923\t-0.589706
H\t 0.0647664923\t 0.0205721989\t 1.5346341*^-3\t 0.294853
H\t 0.8717903737\t 1.3007924048\t 6.931336*^-4\t 0.294853
1591.4805\t3889.7012\t3994.6731
O\tO
InChI=1S/H2O/h1H2\tInChI=1S/H2O/h1H2
"""


def test_qm9_xyz_file_and_folder(tmp_path, cache):
    folder = tmp_path / "qm9"
    folder.mkdir()
    write(folder / "dsgdb9nsd_000001.xyz", QM9_METHANE)
    write(folder / "dsgdb9nsd_000003.xyz", QM9_WATER)
    ds, vocab, report = load_molecules(folder, cache_dir=cache)
    assert ds["smiles"] == ["C", "O"] and vocab == ["H", "C", "O"]
    assert report.notes["conformers"] == {"from_file": 2}
    h = np.asarray(ds[0]["positions"])
    assert np.allclose(np.linalg.norm(h[1:] - h[0], axis=1), 1.0919, atol=2e-3)  # the file's C-H, *^ parsed
    single, _, _ = load_molecules(folder / "dsgdb9nsd_000003.xyz", cache_dir=cache)
    assert single["smiles"] == ["O"] and single["charges"] == [[0, 0, 0]]
    multi = write(tmp_path / "two.xyz", QM9_WATER.split("1591")[0] + QM9_METHANE.split("1341")[0])
    both, _, _ = load_molecules(multi, cache_dir=cache)
    assert both["smiles"] == ["O", "C"]


# ----------------------------------------------------------------------------------------------- filters


def test_filters_are_counted_not_errors(tmp_path, cache):
    path = write(tmp_path / "mols.smi", "CCO\nCCCl\nCCCCCCCCCCCC\nC[N+](C)(C)C\nCS\n")
    ds, vocab, report = load_molecules(path, cache_dir=cache, max_heavy_atoms=9, neutral_only=True)
    assert ds["smiles"] == ["CCO"]
    assert report.skipped == {"filtered_elements": 2, "filtered_heavy_atoms": 1, "filtered_charged": 1}
    assert report.examples == []  # filters are the user's choice, not bad rows
    assert report.notes["survival"] == {
        "read": 5,
        "parsed": 5,
        "single_fragment": 5,
        "elements": 3,
        "heavy_atoms": 2,
        "neutral": 1,
        "conformer": 1,
    }
    assert report.rows_kept == len(ds) == 1
    wider, vocab, _ = load_molecules(path, cache_dir=cache, elements=None, max_heavy_atoms=None)
    assert len(wider) == 5 and vocab == ["H", "C", "N", "O", "S", "Cl"]


def test_limit_stops_embedding(tmp_path, cache):
    path = write(tmp_path / "mols.smi", "CCO\nCCN\nCCC\nCCCO\n")
    ds, _, report = load_molecules(path, cache_dir=cache, limit=2)
    assert ds["smiles"] == ["CCO", "CCN"] and report.notes["survival"]["heavy_atoms"] == 4


def test_bad_arguments():
    with pytest.raises(ValueError, match="include 'H'"):
        load_molecules(elements=("C", "N", "O"))
    with pytest.raises(ValueError, match="not an element"):
        load_molecules(elements=("H", "C", "Qq"))
    with pytest.raises(ValueError, match="format"):
        load_molecules(format="pdb")


# ----------------------------------------------------------------------------------------------- bad input


BAD_CASES = {
    # name: (file name, content, reason, line of the bad record, message fragment, extra load kwargs)
    "invalid_smiles": ("m.smi", "CCO\nC1CC\nCCN\n", "invalid_smiles", 2, "invalid SMILES 'C1CC'", {}),
    "valence": ("m.smi", "CCO\nCCN\nC(C)(C)(C)(C)C\n", "invalid_smiles", 3, "valence", {}),
    "salt": ("m.csv", "smiles\nCCO\nCC(=O)[O-].[Na+]\nCCN\n", "several_fragments", 3, "2 fragments", {}),
    "unsupported_element": ("m.smi", "CCO\n[Fe]\nCCN\n", "unsupported_element", 2, "'Fe'", {"elements": None}),
    "malformed_sdf": ("m.sdf", None, "malformed_sdf", None, "malformed SDF block", {}),
    "malformed_xyz_coordinate": (
        "m.xyz",
        QM9_WATER.split("1591")[0] + "2\n\nH 0 0 0\nH 0 0 abc\n" + QM9_WATER.split("1591")[0],
        "malformed_xyz",
        9,
        "atom line 2 of 2",
        {},
    ),
    "malformed_xyz_count": (
        "m.xyz",
        QM9_WATER.split("1591")[0] + "2\n\nH 0 0 0\n",
        "malformed_xyz",
        9,
        "the end of the file",
        {},
    ),
    "unknown_xyz_element": (
        "m.xyz",
        "1\n\nXx 0 0 0\n" + QM9_WATER + QM9_METHANE,
        "unsupported_element",
        1,
        "'Xx'",
        {},
    ),
}


def _sdf_with_bad_block(path):
    good = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(good, randomSeed=0)
    block = Chem.MolToMolBlock(good)
    bad = "broken\n  RDKit\n\nthis is not a counts line\nM  END\n"
    path.write_text(block + "$$$$\n" + bad + "$$$$\n" + block + "$$$$\n")
    return block.count("\n") + 2  # the bad block starts on the line after the first "$$$$"


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_errors_or_is_counted(tmp_path, cache, case):
    name, content, reason, line, fragment, kwargs = BAD_CASES[case]
    path = tmp_path / name
    if content is None:
        line = _sdf_with_bad_block(path)
    else:
        write(path, content)
    with pytest.raises(DataError) as err:
        load_molecules(path, cache_dir=cache, **kwargs)
    message = str(err.value)
    assert str(path) in message and f"row {line}:" in message and fragment in message
    if reason == "malformed_xyz":
        # a malformed XYZ record cannot be resynchronised: the rest of that file is dropped
        ds, _, report = load_molecules(path, cache_dir=cache, skip_bad_rows=True, **kwargs)
        assert len(ds) == 1
    else:
        ds, _, report = load_molecules(path, cache_dir=cache, skip_bad_rows=True, **kwargs)
        assert len(ds) == 2
    assert report.skipped[reason] == 1 and report.rows_skipped == 1
    assert report.examples and reason in report.examples[0] and fragment in report.examples[0]


def test_largest_fragment_of_salts_and_hydrates(tmp_path, cache):
    # Unsanitised fragments crashed inside RDKit ("RingInfo not initialized") once they reached the force field.
    path = write(tmp_path / "salts.smi", "CCN.Cl\nCCO.O\n[Na+].CC(=O)[O-]\nCCO\n")
    ds, vocab, report = load_molecules(path, cache_dir=cache, largest_fragment=True)
    assert ds["smiles"] == ["CCN", "CCO", "CC(=O)[O-]", "CCO"] and vocab == ["H", "C", "N", "O"]
    assert ds["num_heavy_atoms"] == [3, 3, 4, 3] and ds["charges"][2].count(-1) == 1
    assert report.notes["conformers"] == {"mmff": 4} and report.notes["fragments_removed"] == 3
    assert all(row["qed"] > 0 for row in ds)


def test_largest_fragment_keeps_file_coordinates(tmp_path, cache):
    salt = Chem.AddHs(Chem.MolFromSmiles("CCN.Cl"))
    AllChem.EmbedMolecule(salt, randomSeed=2)
    path = tmp_path / "salt.sdf"
    with Chem.SDWriter(str(path)) as writer:
        writer.write(salt)
    ds, _, report = load_molecules(path, cache_dir=cache, largest_fragment=True)
    assert ds["smiles"] == ["CCN"] and ds["num_atoms"] == [10] and report.notes["conformers"] == {"from_file": 1}
    amine = np.asarray(
        [
            salt.GetConformer().GetAtomPosition(i)
            for i in range(salt.GetNumAtoms())
            if salt.GetAtomWithIdx(i).GetAtomicNum() != 17
            and not any(n.GetAtomicNum() == 17 for n in salt.GetAtomWithIdx(i).GetNeighbors())
        ]
    )
    got = np.asarray(ds[0]["positions"])
    np.testing.assert_allclose(
        np.sort(np.linalg.norm(got - got.mean(0), axis=1)),
        np.sort(np.linalg.norm(amine - amine.mean(0), axis=1)),
        atol=1e-3,
    )


@pytest.mark.parametrize(
    "smiles, heavy", [("[2H]C([2H])([2H])O", 2), ("[3H]OC(=O)C", 4), ("[H]OC", 2), ("[2H]c1c([2H])cccc1", 6)]
)
def test_hydrogen_isotopes_are_hydrogens(tmp_path, cache, smiles, heavy):
    ds, vocab, _ = load_molecules(write(tmp_path / "d.smi", smiles + "\n"), cache_dir=cache)
    row = ds[0]
    symbols = [vocab[t] for t in row["atom_types"]]
    assert row["num_heavy_atoms"] == heavy == sum(s != "H" for s in symbols)
    assert "H" not in symbols[:heavy] and set(symbols[heavy:]) == {"H"}  # heavy atoms first, then every hydrogen
    assert "H" in vocab and not {"D", "T"} & set(vocab)
    assert "[2H]" not in row["smiles"] and "[3H]" not in row["smiles"] and "[H]" not in row["smiles"]
    assert all(1.3 < d < 1.6 for d in bond_lengths(row, vocab))  # the reordering kept the geometry


def test_hydrogens_listed_first_in_a_file_are_moved_after_the_heavy_atoms(tmp_path, cache):
    xyz = "3\nwater, hydrogens first\nH 0.7572 0.5865 0.0\nH -0.7572 0.5865 0.0\nO 0.0 0.0 0.0\n"
    ds, vocab, _ = load_molecules(write(tmp_path / "w.xyz", xyz), cache_dir=cache)
    assert [vocab[t] for t in ds[0]["atom_types"]] == ["O", "H", "H"] and ds["num_heavy_atoms"] == [1]
    oh = np.linalg.norm(np.asarray(ds[0]["positions"])[1:] - np.asarray(ds[0]["positions"])[0], axis=1)
    np.testing.assert_allclose(oh, 0.9572, atol=1e-3)


def test_embedding_failure(tmp_path, cache, monkeypatch):
    real = molecules_module._embed
    monkeypatch.setattr(
        molecules_module, "_embed", lambda mol, seed: (None, None) if mol.GetNumAtoms() == 4 else real(mol, seed)
    )
    path = write(tmp_path / "m.smi", "CCO\nCCCC\nCCN\n")
    with pytest.raises(DataError, match=r"row 2: ETKDG could not embed 'CCCC'"):
        load_molecules(path, cache_dir=cache)
    ds, _, report = load_molecules(path, cache_dir=cache, skip_bad_rows=True)
    assert ds["smiles"] == ["CCO", "CCN"] and report.skipped == {"embedding_failed": 1}
    assert report.notes["survival"]["heavy_atoms"] == 3 and report.notes["survival"]["conformer"] == 2


@pytest.mark.parametrize("name", ["empty.smi", "empty.csv", "empty.sdf", "empty.xyz"])
def test_empty_file_is_an_error(tmp_path, cache, name):
    path = write(tmp_path / name, "\n" if name.endswith(".xyz") or name.endswith(".sdf") else "")
    with pytest.raises(DataError, match="empty file|no molecule left"):
        load_molecules(path, cache_dir=cache, skip_bad_rows=True)


def test_csv_without_smiles_column(tmp_path, cache):
    path = write(tmp_path / "m.csv", "structure,id\nCCO,1\n")
    with pytest.raises(DataError, match="no SMILES column"):
        load_molecules(path, cache_dir=cache)


def test_everything_filtered_is_an_error(tmp_path, cache):
    path = write(tmp_path / "m.smi", "CCCCCCCCCCCC\n")
    with pytest.raises(DataError, match="no molecule left.*filtered_heavy_atoms"):
        load_molecules(path, cache_dir=cache)


# ----------------------------------------------------------------------------------------------- cache


def test_second_load_hits_the_cache(tmp_path, cache):
    path = write(tmp_path / "m.smi", "CCO\nCC(=O)N\nc1ccncc1\n")
    first, vocab, report = load_molecules(path, cache_dir=cache)
    assert report.notes["cache"]["hit"] is False
    second, vocab2, report2 = load_molecules(path, cache_dir=cache)
    assert report2.notes["cache"]["hit"] is True and report2.notes["cache"]["path"] == report.notes["cache"]["path"]
    assert vocab2 == vocab and second.to_dict() == first.to_dict()
    assert report2.notes["survival"] == report.notes["survival"]
    other_seed, _, report3 = load_molecules(path, cache_dir=cache, seed=1)
    assert report3.notes["cache"]["hit"] is False
    write(path, "CCO\nCC(=O)N\n")  # new contents, new key
    changed, _, report4 = load_molecules(path, cache_dir=cache)
    assert report4.notes["cache"]["hit"] is False and len(changed) == 2


def test_default_nci_source(tmp_path):
    """RDKit's NCI first_5K.smi (4,999 lines): counts measured with rdkit 2026.09; bad rows are counted, never raised."""
    ds, vocab, report = load_molecules(cache_dir=tmp_path)
    assert vocab == ["H", "C", "N", "O", "F"]
    assert report.notes["survival"] == {
        "read": 4999,
        "parsed": 4991,
        "single_fragment": 4854,
        "elements": 3040,
        "heavy_atoms": 431,
        "conformer": 431,
    }
    assert report.skipped == {
        "invalid_smiles": 8,
        "several_fragments": 137,
        "filtered_elements": 1814,
        "filtered_heavy_atoms": 2609,
    }
    assert len(ds) == 431 and max(ds["num_heavy_atoms"]) == 9
