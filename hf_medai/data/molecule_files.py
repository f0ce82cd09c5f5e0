"""The molecule file formats: SMILES, CSV, SDF and QM9-style XYZ read into RDKit molecules (for `load_molecules`),
and SDF files of generated molecules written and read back.

Each reader yields (line, mol or None, coordinates or None); line is the 1-based line where the record starts. A
reader reports unparsable records itself (it knows why) and yields None for them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hf_medai.data.report import DataError, DataReport

FORMATS = ("auto", "smiles", "csv", "sdf", "xyz")
SMILES_SUFFIXES = frozenset({".smi", ".smiles", ".ism", ".can", ".txt"})
CSV_SUFFIXES = frozenset({".csv", ".tsv"})
SDF_SUFFIXES = frozenset({".sdf", ".sd", ".mol"})
SMILES_ALIASES = ("smiles", "canonical_smiles", "smi", "isomeric_smiles")
NAME_ALIASES = ("zinc_id", "name", "id", "mol_id", "chembl_id")

# Reasons a molecule is skipped (keys of DataReport.skipped), by the readers here or by `load_molecules`'s checks;
# filters are prefixed "filtered_".
INVALID_SMILES = "invalid_smiles"
INVALID_MOLECULE = "invalid_molecule"
SEVERAL_FRAGMENTS = "several_fragments"
UNSUPPORTED_ELEMENT = "unsupported_element"
EMBEDDING_FAILED = "embedding_failed"
MALFORMED_SDF = "malformed_sdf"
MALFORMED_XYZ = "malformed_xyz"
BOND_PERCEPTION_FAILED = "bond_perception_failed"
FILTERED_ELEMENTS = "filtered_elements"
FILTERED_HEAVY_ATOMS = "filtered_heavy_atoms"
FILTERED_CHARGED = "filtered_charged"

_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:(?:[eE]|\*\^)[-+]?\d+)?"


def detect_format(source: str | os.PathLike) -> str:
    """Name the format of `source` from its suffix (a folder means a folder of .xyz files)."""
    source = Path(source)
    if source.is_dir():
        return "xyz"
    suffixes = [s.lower() for s in source.suffixes if s.lower() != ".gz"]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in SMILES_SUFFIXES:
        return "smiles"
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in SDF_SUFFIXES:
        return "sdf"
    if suffix == ".xyz":
        return "xyz"
    raise DataError(
        source,
        None,
        "cannot detect the format from the suffix: expected .smi, .csv, .tsv, .sdf, .xyz "
        "or a folder of .xyz files (or pass format=...)",
    )


# ----------------------------------------------------------------------------------------------- readers


def _read_smiles_file(path: Path, report: DataReport) -> Iterator[tuple[int, Any, Any]]:
    text = _read_text(path)
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#") or (line_no == 1 and fields[0].lower() in SMILES_ALIASES):
            continue  # blank, comment, or a header line
        report.rows_read += 1
        yield line_no, _parse_smiles(fields[0], path, line_no, report), None


def _read_csv(path: Path, report: DataReport) -> Iterator[tuple[int, Any, Any]]:
    if not _read_text(path).strip():
        raise DataError(path, None, "empty file: no molecules")
    sep = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
    frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    lower = {c.strip().lower(): c for c in frame.columns}
    column = next((lower[a] for a in SMILES_ALIASES if a in lower), None)
    if column is None:
        raise DataError(
            path,
            None,
            f"no SMILES column (looked for {list(SMILES_ALIASES)}, any case); columns are {list(frame.columns)}",
        )
    for i, smiles in enumerate(frame[column]):
        line_no = i + 2  # line 1 is the header
        report.rows_read += 1
        yield line_no, _parse_smiles(smiles.strip(), path, line_no, report), None


def _read_sdf(path: Path, report: DataReport) -> Iterator[tuple[int, Any, Any]]:
    from rdkit import Chem

    text = _read_text(path)
    if not text.strip():
        raise DataError(path, None, "empty file: no molecules")
    lines = text.splitlines()
    start = 0
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() == "$$$$":
            blocks.append((start, lines[start:i]))
            start = i + 1
    if any(line.strip() for line in lines[start:]):
        blocks.append((start, lines[start:]))  # a last block without its "$$$$"
    for start, block in blocks:
        line_no = start + 1
        report.rows_read += 1
        if not any("M  END" in line for line in block):
            report.bad(MALFORMED_SDF, path, line_no, "malformed SDF block: no 'M  END' line")
            yield line_no, None, None
            continue
        raw = Chem.MolFromMolBlock("\n".join(block), sanitize=False, removeHs=False)
        if raw is None:
            report.bad(
                MALFORMED_SDF, path, line_no, "malformed SDF block: RDKit cannot read the counts/atom/bond lines"
            )
            yield line_no, None, None
            continue
        try:
            Chem.SanitizeMol(raw)
        except Exception as err:  # RDKit raises several exception types for chemistry problems
            report.bad(INVALID_MOLECULE, path, line_no, f"invalid molecule: {_first_line(err)}")
            yield line_no, None, None
            continue
        conf = raw.GetConformer() if raw.GetNumConformers() else None
        has_3d = conf is not None and conf.Is3D() and np.abs(conf.GetPositions()[:, 2]).max() > 1e-4
        if has_3d and any(a.GetTotalNumHs() for a in raw.GetAtoms()):
            raw = Chem.AddHs(raw, addCoords=True)
        yield line_no, raw, raw.GetConformer().GetPositions() if has_3d else None


def _read_xyz(source: Path, report: DataReport) -> Iterator[tuple[int, Any, Any]]:
    files = sorted(source.glob("*.xyz")) if source.is_dir() else [source]
    if not files:
        raise DataError(source, None, "no .xyz files in this folder")
    for path in files:
        text = _read_text(path)
        if not text.strip():
            raise DataError(path, None, "empty file: no molecules")
        for line_no, record in _xyz_records(path, text.splitlines(), report):
            if record is None:
                yield line_no, None, None
                continue
            symbols, coords = record
            yield line_no, _mol_from_xyz(symbols, coords, path, line_no, report), coords


def _xyz_records(path: Path, lines: list[str], report: DataReport):
    """Split an XYZ file into (line, (symbols, coords) | None); stops at the first malformed record."""
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        line_no = i + 1
        report.rows_read += 1
        fields = lines[i].split()
        if len(fields) != 1 or not fields[0].isdigit() or int(fields[0]) < 1:
            report.bad(MALFORMED_XYZ, path, line_no, f"malformed XYZ: expected the atom count, got {lines[i]!r}")
            yield line_no, None
            return  # without a count the rest of the file cannot be split into molecules
        n = int(fields[0])
        symbols, coords = [], []
        for j in range(i + 2, i + 2 + n):
            atom = _parse_xyz_atom(lines[j]) if j < len(lines) else None
            if atom is None:
                got = repr(lines[j]) if j < len(lines) else "the end of the file"
                report.bad(
                    MALFORMED_XYZ,
                    path,
                    j + 1,
                    f"malformed XYZ: atom line {j - i - 1} of {n} (molecule at line {line_no}) should be "
                    f"'Element x y z [charge]', got {got}",
                )
                yield line_no, None
                return
            symbols.append(atom[0])
            coords.append(atom[1])
        i += 2 + n
        # QM9 appends harmonic frequencies, SMILES and InChI; skip anything up to the next atom count line.
        while i < len(lines) and not re.fullmatch(r"\s*\d+\s*", lines[i]):
            if _parse_xyz_atom(lines[i]) is not None:
                report.bad(
                    MALFORMED_XYZ,
                    path,
                    i + 1,
                    f"malformed XYZ: more atom lines than the count {n} given on line {line_no}",
                )
                yield line_no, None
                return
            i += 1
        yield line_no, (symbols, np.asarray(coords, dtype=np.float64))


def _parse_xyz_atom(line: str):
    fields = line.split()
    if len(fields) not in (4, 5) or not re.fullmatch(r"[A-Za-z]{1,3}", fields[0]):
        return None
    if not all(re.fullmatch(_FLOAT, f) for f in fields[1:]):
        return None
    # The 5th column (QM9: Mulliken partial charge) is not a formal charge and is ignored.
    return fields[0].capitalize(), [float(f.replace("*^", "e")) for f in fields[1:4]]


def _mol_from_xyz(symbols, coords, path, line_no, report):
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    table = Chem.GetPeriodicTable()
    rw = Chem.RWMol()
    for symbol in symbols:
        try:
            number = table.GetAtomicNumber(symbol)
        except RuntimeError:
            number = -1
        if number < 1:
            report.bad(UNSUPPORTED_ELEMENT, path, line_no, f"unsupported element {symbol!r}: not an element symbol")
            return None
        rw.AddAtom(Chem.Atom(number))
    conf = Chem.Conformer(len(symbols))
    for k, xyz in enumerate(coords):
        conf.SetAtomPosition(k, xyz.tolist())
    rw.AddConformer(conf, assignId=True)
    mol = rw.GetMol()
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=0)
        Chem.SanitizeMol(mol)
    except Exception as err:
        report.bad(
            BOND_PERCEPTION_FAILED,
            path,
            line_no,
            f"no valid bond graph for this neutral molecule from its coordinates: {_first_line(err)}",
        )
        return None
    return mol


def _parse_smiles(smiles: str, path, line_no, report):
    from rdkit import Chem

    if not smiles:
        report.bad(INVALID_SMILES, path, line_no, "invalid SMILES: empty")
        return None
    mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        report.bad(INVALID_SMILES, path, line_no, f"invalid SMILES {smiles!r}: cannot be parsed")
        return None
    try:
        Chem.SanitizeMol(mol)
    except Exception as err:
        report.bad(INVALID_SMILES, path, line_no, f"invalid SMILES {smiles!r}: {_first_line(err)}")
        return None
    return mol


READERS = {"smiles": _read_smiles_file, "csv": _read_csv, "sdf": _read_sdf, "xyz": _read_xyz}


def _read_text(path: Path) -> str:
    if path.suffix.lower() == ".gz":
        import gzip

        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    return path.read_text(encoding="utf-8", errors="replace")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ----------------------------------------------------------------------------------------------- SDF


def write_sdf(
    mols: Sequence, path: str | os.PathLike, properties: Sequence[dict] | dict[str, Sequence] | None = None
) -> Path:
    """Write molecules (valid or not, with their 3D conformers) to an SDF file in one atomic rename.

    properties: one dict per molecule, or a dict of per-molecule lists; written as SD data fields.
    """
    from rdkit import Chem

    from hf_medai.io import atomic_path

    mols = list(mols)
    if isinstance(properties, dict):
        for key, values in properties.items():
            if len(values) != len(mols):
                raise ValueError(f"properties[{key!r}] has {len(values)} values for {len(mols)} molecules")
        properties = [{k: v[i] for k, v in properties.items()} for i in range(len(mols))]
    elif properties is not None and len(properties) != len(mols):
        raise ValueError(f"{len(properties)} property dicts for {len(mols)} molecules")
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = Chem.SDWriter(str(tmp))
        writer.SetKekulize(False)  # generated molecules may not kekulise; write the bonds as they are
        try:
            for i, mol in enumerate(mols):
                copy = Chem.Mol(mol)
                copy.UpdatePropertyCache(strict=False)
                for key, value in (properties[i] if properties is not None else {}).items():
                    if value is None:
                        continue
                    if isinstance(value, (bool, np.bool_)):
                        copy.SetProp(key, str(bool(value)))
                    elif isinstance(value, (int, np.integer)):
                        copy.SetIntProp(key, int(value))
                    elif isinstance(value, (float, np.floating)):
                        copy.SetDoubleProp(key, float(value))
                    else:
                        copy.SetProp(key, str(value))
                writer.write(copy)
        finally:
            writer.close()
    return path


def read_sdf(path: str | os.PathLike, sanitize: bool = False) -> list:
    """Molecules of an SDF file, hydrogens kept, unsanitised by default (so invalid samples read back as written).

    SD data fields are on each molecule (`mol.GetPropsAsDict()`). A block RDKit cannot read raises `DataError`.
    """
    from rdkit import Chem

    supplier = Chem.SDMolSupplier(str(path), sanitize=sanitize, removeHs=False)
    mols = []
    for i in range(len(supplier)):
        mol = supplier[i]
        if mol is None:
            raise DataError(path, None, f"molecule {i + 1}: RDKit cannot read this SDF block")
        mols.append(mol)
    return mols
