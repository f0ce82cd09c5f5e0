"""Real QM9 (Ramakrishnan et al., Sci. Data 2014): 130,831 small molecules with DFT (B3LYP/6-31G(2df,p)) geometries
and properties, read from the CSVs inside the `qm9pack` wheel (`pip install qm9pack`; MIT code, QM9 data CC0 on
figshare). `load_molecules("qm9", split="train")` calls `load_qm9`; nothing downloads.

The wheel holds the 130,831 molecules left after removing the 3,054 that failed QM9's consistency check
("uncharacterized.txt"): exactly the molecules EDM (Hoogeboom et al. 2022) trains on. The split is rebuilt as EDM's
`gen_splits_gdb9` builds it: the molecules sorted by their GDB index, `np.random.seed(0); np.random.permutation(130831)`,
then the first 100,000 are `train`, the next 17,748 `valid`, the last 13,083 (10%) `test`. `train_a` and `train_b` are
the first and second 50,000 of `train` in that order: EDM's conditional experiments train the property predictor on
one half and the generator on the other (its `qm9_second_half`), so the predictor never saw the generator's molecules.

Rows have `load_molecules`' columns (coordinates in Angstrom from the file, heavy atoms first; no conformer
generation; the SMILES, formal charges and RDKit properties come from QM9's own SMILES, whose heavy atoms are in the
XYZ file's order: a row where they are not is bad input) plus `qm9_index` (the GDB number, dsgdb9nsd_<index>.xyz) and
the QM9 properties in EDM's units: alpha (Bohr^3), gap, homo, lumo (meV), mu (Debye), Cv (cal/mol K).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import time
from collections import Counter
from pathlib import Path

import datasets
import numpy as np

from hf_medai.data.molecule_store import (
    check_elements,
    default_cache_dir,
    load_cache,
    molecule_features,
    rdkit_version,
    rows_to_dataset,
    save_cache,
)
from hf_medai.data.report import DataError, DataReport

QM9_MOLECULES = 130_831
EDM_SPLIT_SIZES = {"train": 100_000, "valid": 17_748, "test": 13_083}
SPLITS = ("train", "valid", "test", "train_a", "train_b", "all")
HARTREE_TO_MEV = 27_211.386245988  # CODATA 2018, as EDM's 27.2114 eV/Hartree x 1000
# our column: (qm9pack column, factor to EDM's unit, unit)
PROPERTIES = {
    "alpha": ("Polarizability_bohr3", 1.0, "Bohr^3"),
    "gap": ("HOMO_LUMO_gap_au", HARTREE_TO_MEV, "meV"),
    "homo": ("HOMO_au", HARTREE_TO_MEV, "meV"),
    "lumo": ("LUMO_au", HARTREE_TO_MEV, "meV"),
    "mu": ("Dipole_debye", 1.0, "D"),
    "Cv": ("Heatcapacity_Cv_cal_mol_K", 1.0, "cal/(mol K)"),
}
PROVENANCE = (
    "QM9 (Ramakrishnan, Dral, Rupp & von Lilienfeld, Sci. Data 1, 140022, 2014; data CC0 via figshare), "
    "as packaged in the PyPI wheel qm9pack {version} (MIT)"
)
_COLUMNS = ["Index", "SMILES", "Elements", "XYZ_Ang", *(c for c, _, _ in PROPERTIES.values())]
SMILES_XYZ_MISMATCH = "smiles_xyz_mismatch"


def qm9_data_dir() -> Path:
    """The folder of qm9pack's CSVs (found without importing qm9pack, whose import needs pkg_resources)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "qm9", None, "the QM9 source needs the qm9pack wheel: pip install 'hf-medai[chem]' (or qm9pack)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    missing = [f"qm9_part{i}.csv" for i in (1, 2, 3) if not (folder / f"qm9_part{i}.csv").is_file()]
    if missing:
        raise DataError(folder, None, f"qm9pack is installed but {missing} are missing: reinstall qm9pack")
    return folder


def qm9_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qm9pack")
    except PackageNotFoundError:
        return "unknown"


def edm_split(n: int = QM9_MOLECULES) -> dict[str, np.ndarray]:
    """Row positions (into the molecules sorted by GDB index) of EDM's train / valid / test split and its halves."""
    if n != QM9_MOLECULES:
        raise DataError("qm9", None, f"expected {QM9_MOLECULES} molecules (EDM's QM9) in qm9pack's CSVs, found {n}")
    np.random.seed(0)  # EDM's own call; the legacy global generator gives the same permutation on every platform
    perm = np.random.permutation(n)
    train, valid, test = np.split(
        perm, [EDM_SPLIT_SIZES["train"], EDM_SPLIT_SIZES["train"] + EDM_SPLIT_SIZES["valid"]]
    )
    half = len(train) // 2
    return {
        "train": train,
        "valid": valid,
        "test": test,
        "train_a": train[:half],
        "train_b": train[half:],
        "all": np.arange(n),
    }


def read_qm9_table(data_dir: Path | None = None):
    """The three CSVs as one pandas frame sorted by GDB index (only the columns we use; ~20 s for all rows)."""
    import pandas as pd

    folder = Path(data_dir) if data_dir is not None else qm9_data_dir()
    frames = []
    for i in (1, 2, 3):
        path = folder / f"qm9_part{i}.csv"
        try:
            frames.append(pd.read_csv(path, usecols=_COLUMNS))
        except ValueError as err:  # pandas names the missing columns
            raise DataError(path, None, f"not a qm9pack CSV: {err}") from None
    table = pd.concat(frames, ignore_index=True).sort_values("Index", kind="stable").reset_index(drop=True)
    if not table["Index"].is_unique:
        raise DataError(folder, None, "duplicate GDB indices across qm9_part*.csv")
    return table


def qm9_features() -> datasets.Features:
    features = dict(molecule_features())
    features["qm9_index"] = datasets.Value("int32")
    features.update({name: datasets.Value("float64") for name in PROPERTIES})
    return datasets.Features(features)


def load_qm9(
    split: str = "train",
    *,
    limit: int | None = None,
    max_heavy_atoms: int | None = 9,
    elements=("H", "C", "N", "O", "F"),
    neutral_only: bool = False,
    cache_dir=None,
    data_dir=None,
) -> tuple[datasets.Dataset, list[str], DataReport]:
    """QM9's `split` (see the module docstring) as (dataset, elements_vocab, report), cached like `load_molecules`.

    limit: the first `limit` molecules of the split in EDM's permutation order (a random subset, the same every time).
    Filters as in `load_molecules` (QM9 has only H, C, N, O, F and <= 9 heavy atoms, so by default none applies;
    `neutral_only` drops the zwitterions that QM9's SMILES write with formal charges). Rows whose SMILES disagree
    with their XYZ are counted and skipped (the report's `skipped_by_reason`), never silently: this is packaged data
    the user cannot fix, so bad rows are always counted, never raised, as for the bundled NCI file.
    """
    start = time.perf_counter()
    if split not in SPLITS:
        raise ValueError(f"qm9 split must be one of {SPLITS}, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    folder = Path(data_dir) if data_dir is not None else qm9_data_dir()
    elements = check_elements(elements) if elements is not None else None
    settings = {
        "version": "qm9-2",
        "qm9pack": qm9_version(),
        "split": split,
        "limit": limit,
        "max_heavy_atoms": max_heavy_atoms,
        "elements": list(elements) if elements is not None else None,
        "neutral_only": neutral_only,
        "rdkit": rdkit_version(),
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
    target = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / f"qm9-{key}"
    cached = load_cache(target, start)
    if cached is not None:
        return cached

    table = read_qm9_table(folder)
    positions = edm_split(len(table))[split]
    report = DataReport(skip_bad_rows=True)  # packaged data the user cannot fix: bad rows are counted, as for NCI
    rows, survival = _rows(table, positions, limit, report, settings, folder)
    if not rows:
        raise DataError(
            folder, None, f"no QM9 molecule left: removed by reason {dict(sorted(report.skipped.items()))}"
        )
    dataset, vocab = rows_to_dataset(rows, qm9_features())
    report.notes.update(
        {
            "source": "qm9",
            "format": "qm9",
            "provenance": PROVENANCE.format(version=settings["qm9pack"]),
            "split": {"name": split, "rule": "EDM gen_splits_gdb9 (seed 0)", **EDM_SPLIT_SIZES},
            "settings": settings,
            "elements_vocab": vocab,
            "survival": survival,
            "conformers": {"from_file": len(rows)},
            "charged_molecules": sum(any(r["charges"]) for r in rows),
            "property_units": {name: unit for name, (_, _, unit) in PROPERTIES.items()},
        }
    )
    return save_cache(dataset, vocab, report, target, start)


def _rows(table, positions, limit, report: DataReport, settings: dict, folder: Path):
    from rdkit import Chem, RDLogger

    from hf_medai.data.molecule_chemistry import heavy_atoms, molecule_properties

    RDLogger.DisableLog("rdApp.*")
    allowed = set(settings["elements"]) if settings["elements"] is not None else None
    survival, rows, reordered = Counter(), [], 0
    table_masses = Chem.GetPeriodicTable()
    try:
        for pos in positions:
            if limit is not None and len(rows) >= limit:
                break
            record = table.iloc[int(pos)]
            where = f"dsgdb9nsd_{int(record['Index']):06d}.xyz (qm9pack CSV row of GDB index {int(record['Index'])})"
            report.rows_read += 1
            survival["read"] += 1
            try:
                symbols = list(ast.literal_eval(record["Elements"]))
                coords = np.asarray(_numbers(record["XYZ_Ang"]), dtype=np.float64)
            except (ValueError, SyntaxError) as err:
                report.bad("malformed_qm9_row", folder, where, f"unreadable Elements/XYZ_Ang: {err}")
                continue
            if coords.shape != (len(symbols), 3):
                report.bad(
                    "malformed_qm9_row", folder, where, f"{len(symbols)} elements but coordinates {coords.shape}"
                )
                continue
            mol = Chem.MolFromSmiles(str(record["SMILES"]))
            if mol is None:
                report.bad("invalid_smiles", folder, where, f"invalid SMILES {record['SMILES']!r}")
                continue
            heavy_xyz = [s for s in symbols if s != "H"]
            heavy_smiles = [a.GetSymbol() for a in mol.GetAtoms()]
            charges = [a.GetFormalCharge() for a in mol.GetAtoms()]
            n_h = sum(a.GetTotalNumHs() for a in mol.GetAtoms())
            if sorted(heavy_smiles) != sorted(heavy_xyz) or n_h != len(symbols) - len(heavy_xyz):
                report.bad(
                    SMILES_XYZ_MISMATCH, folder, where, f"SMILES {record['SMILES']!r} has other atoms than the XYZ"
                )
                continue
            if heavy_smiles != heavy_xyz:  # same atoms, another order: fine unless a charge must be placed
                if any(charges):
                    report.bad(
                        SMILES_XYZ_MISMATCH,
                        folder,
                        where,
                        f"charged SMILES {record['SMILES']!r} lists the heavy atoms in another order than the XYZ "
                        f"{heavy_xyz}, so its formal charges cannot be placed",
                    )
                    continue
                reordered += 1
            survival["parsed"] += 1
            if allowed is not None and not set(symbols) <= allowed:
                report.skipped["filtered_elements"] += 1
                continue
            if settings["max_heavy_atoms"] is not None and len(heavy_xyz) > settings["max_heavy_atoms"]:
                report.skipped["filtered_heavy_atoms"] += 1
                continue
            if settings["neutral_only"] and any(charges):
                report.skipped["filtered_charged"] += 1
                continue
            survival["kept"] += 1
            order = sorted(range(len(symbols)), key=lambda i: symbols[i] == "H")  # heavy atoms first, stable
            symbols = [symbols[i] for i in order]
            coords = coords[order]
            masses = np.array([table_masses.GetAtomicWeight(s) for s in symbols])
            coords = coords - (masses[:, None] * coords).sum(0) / masses.sum()
            heavy = heavy_atoms(mol)
            rows.append(
                {
                    "smiles": Chem.MolToSmiles(heavy),
                    "symbols": symbols,
                    "charges": charges + [0] * (len(symbols) - len(charges)),
                    "positions": coords.astype(np.float32).tolist(),
                    "num_atoms": len(symbols),
                    "num_heavy_atoms": len(heavy_xyz),
                    **molecule_properties(heavy),
                    "qm9_index": int(record["Index"]),
                    **{name: float(record[col]) * factor for name, (col, factor, _) in PROPERTIES.items()},
                }
            )
        report.notes["smiles_in_other_atom_order"] = reordered  # neutral, so nothing depended on the order
        return rows, dict(survival)
    finally:
        RDLogger.EnableLog("rdApp.*")


def _numbers(text: str):
    """A JSON list of lists; qm9pack writes some floats as Python does ("0.", "1."), which JSON rejects."""
    try:
        return json.loads(text)
    except ValueError:
        return ast.literal_eval(text)
