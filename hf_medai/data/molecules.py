"""Small molecules with 3D conformers (SMILES, CSV, SDF, QM9-style XYZ) as one `datasets.Dataset`.

Every format gives the same columns, so the molecule-diffusion recipe never cares where data came from:

    smiles           str, canonical SMILES of the heavy-atom molecule as parsed (stereo kept; hydrogens, [2H] and
                     [3H] included, are left out)
    atom_types       list[int], index into `elements_vocab`, one per atom, hydrogens explicit (heavy atoms first;
                     hydrogen isotopes are hydrogens: typed "H", counted and ordered with them)
    charges          list[int], formal charge per atom
    positions        list[[x, y, z]] in Angstrom, centred at the centre of mass
    num_atoms        int, hydrogens included          num_heavy_atoms  int
    qed, logp, mw, sa  float: RDKit QED, Crippen logP, molecular weight, synthetic accessibility (Ertl & Schuffenhauer)

Conformers: SMILES and CSV rows (and SDF blocks without 3D coordinates) are embedded with RDKit ETKDGv3
(`randomSeed=seed`) and then relaxed with MMFF94; when MMFF lacks parameters UFF is used, and when UFF lacks them
too the ETKDG geometry is kept (the report counts each). SDF blocks with 3D coordinates and XYZ files keep the file's
coordinates (hydrogens missing from a 3D SDF block are added at computed positions). Embedding the default
~430 molecules takes about 3 s on one core, so it runs in-process: worker processes would cost more to start.

What is filtered and what is an error:
- Filters (counted in the report, never errors): more than `max_heavy_atoms` heavy atoms; an element outside
  `elements`; a charged atom when `neutral_only=True`.
- Bad input (a `DataError` naming file, line and problem; with `skip_bad_rows=True` a counted skip with examples):
  `invalid_smiles`, `invalid_molecule` (an SDF/XYZ molecule RDKit rejects), `several_fragments` (salts, mixtures;
  pass `largest_fragment=True` to keep the largest fragment instead), `unsupported_element` (a symbol that is no
  element, or - with `elements=None`, i.e. no element filter - one that RDKit's force fields cannot place),
  `embedding_failed`, `malformed_sdf`, `malformed_xyz`, `bond_perception_failed` (XYZ without a valid bond graph).
- Always an error: a missing file, an empty file, a CSV without a SMILES column, no molecule left at the end.

`source=None` reads the real NCI compounds shipped in RDKit's wheel (`RDConfig.RDDataDir/NCI/first_5K.smi`). That
file is known to hold unparsable SMILES and salts, so for it bad rows are always counted, never raised. With the
default filter (<= 9 heavy atoms of H, C, N, O, F: QM9's limits) about 430 of the 5,000 survive.

The report (`DataReport`) counts filtered molecules under `filtered_<why>` in `skipped`, so `rows_kept` equals the
dataset length, and `notes["survival"]` lists how many molecules are left after each step in order:
read, parsed, single_fragment, elements, heavy_atoms, (neutral,) conformer. With `largest_fragment=True`,
`notes["fragments_removed"]` counts the molecules that were reduced to their largest (sanitised) fragment.

The processed dataset is cached with `save_to_disk` under `cache_dir` (default `cache_root()/"molecules"`), keyed by
a hash of the source's contents, the filter settings and the seed; the next identical call reloads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from hf_medai.data.molecule_chemistry import PROPERTY_COLUMNS, heavy_atoms, molecule_properties
from hf_medai.data.molecule_files import (
    EMBEDDING_FAILED,
    FILTERED_CHARGED,
    FILTERED_ELEMENTS,
    FILTERED_HEAVY_ATOMS,
    FORMATS,
    READERS,
    SEVERAL_FRAGMENTS,
    UNSUPPORTED_ELEMENT,
    detect_format,
)
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

DEFAULT_ELEMENTS = ("H", "C", "N", "O", "F")

_CACHE_VERSION = "2"  # 2: hydrogen isotopes counted and ordered as hydrogens


def default_source() -> Path:
    """The NCI compounds shipped in RDKit's wheel (5,000 SMILES with an id)."""
    from rdkit import RDConfig

    return Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


# ----------------------------------------------------------------------------------------------- loading


def load_molecules(
    source: str | os.PathLike | None = None,
    format: str = "auto",
    *,
    max_heavy_atoms: int | None = 9,
    elements: Sequence[str] | None = DEFAULT_ELEMENTS,
    skip_bad_rows: bool = False,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    neutral_only: bool = False,
    largest_fragment: bool = False,
    split: str = "train",
) -> tuple[datasets.Dataset, list[str], DataReport]:
    """Read molecules, filter them, give each a 3D conformer; returns (dataset, elements_vocab, report).

    source: a .smi file (SMILES, then an optional name), a .csv/.tsv with a SMILES column (MOSES `SMILES`, ZINC
        `smiles`,`zinc_id`), "qm9" (real QM9 from the qm9pack wheel, see `hf_medai.data.qm9`), an .sdf file, an .xyz file (one or several molecules, QM9's `*^` exponents and trailing
        frequency/SMILES/InChI lines accepted) or a folder of .xyz files. None: RDKit's NCI first_5K.smi.
    format: "auto" (from the suffix) or one of "smiles", "csv", "sdf", "xyz".
    max_heavy_atoms: keep molecules with at most this many heavy atoms (None: no limit).
    elements: keep molecules made only of these elements (must include "H"); None: no element filter, and an
        element the force fields cannot handle is then an error (`unsupported_element`).
    skip_bad_rows: count bad rows instead of raising (always on for the bundled NCI file).
    seed: ETKDG's random seed; the same seed gives the same conformers.
    cache_dir: where processed datasets are cached (default `hf_medai.paths.cache_root()/"molecules"`).
    limit: stop once this many molecules are kept (the cheap filters still see every row, so their counts are
        complete; later rows are not embedded).
    neutral_only: also drop molecules with a formal charge on any atom (EDM's stability rule has no charges).
    largest_fragment: keep the largest fragment of a salt or mixture instead of treating it as bad input.
    split: for "qm9" only: EDM's train | valid | test (or train_a | train_b, the halves of train; or all).

    elements_vocab: the elements present in the kept molecules, sorted by atomic number.
    """
    if source is not None and str(source) == "qm9":
        from hf_medai.data.qm9 import load_qm9

        kw = dict(max_heavy_atoms=max_heavy_atoms, elements=elements, neutral_only=neutral_only, cache_dir=cache_dir)
        return load_qm9(split, limit=limit, **kw)  # packaged data: bad rows are always counted, never raised
    start = time.perf_counter()
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if elements is not None:
        elements = check_elements(elements)
    if max_heavy_atoms is not None and max_heavy_atoms < 1:
        raise ValueError(f"max_heavy_atoms must be >= 1 or None, got {max_heavy_atoms}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    bundled = source is None
    source = default_source() if bundled else Path(source).expanduser().resolve()
    if not source.exists():
        raise DataError(source, None, "no such file or directory")
    fmt = detect_format(source) if format == "auto" else format
    skip_bad_rows = skip_bad_rows or bundled

    settings = {
        "version": _CACHE_VERSION,
        "format": fmt,
        "max_heavy_atoms": max_heavy_atoms,
        "elements": list(elements) if elements is not None else None,
        "skip_bad_rows": skip_bad_rows,
        "seed": seed,
        "limit": limit,
        "neutral_only": neutral_only,
        "largest_fragment": largest_fragment,
        "rdkit": rdkit_version(),
    }
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = target / f"molecules-{_cache_key(source, settings)}"
    cached = load_cache(target, start)
    if cached is not None:
        return cached

    report = DataReport(skip_bad_rows=skip_bad_rows)
    rows = _process(source, fmt, report, settings, elements)
    if not rows:
        reasons = dict(sorted(report.skipped.items()))
        raise DataError(source, None, f"no molecule left: {report.rows_read} read, removed by reason {reasons}")
    dataset, vocab = rows_to_dataset(rows, molecule_features())
    report.notes.update({"source": str(source), "format": fmt, "settings": settings, "elements_vocab": vocab})
    return save_cache(dataset, vocab, report, target, start)


def atom_count_distribution(dataset: datasets.Dataset) -> dict[int, float]:
    """Fraction of molecules per atom count (hydrogens included), ascending; the sampler draws sizes from it."""
    counts = Counter(int(n) for n in dataset["num_atoms"])
    total = sum(counts.values())
    return {n: counts[n] / total for n in sorted(counts)}


def property_table(dataset: datasets.Dataset) -> pd.DataFrame:
    """One row per molecule: smiles, sizes and the properties (qed, logp, mw, sa)."""
    names = ["smiles", "num_atoms", "num_heavy_atoms", *PROPERTY_COLUMNS]
    return pd.DataFrame({name: dataset[name] for name in names})


# ----------------------------------------------------------------------------------------------- processing


def _process(source: Path, fmt: str, report: DataReport, settings: dict, elements) -> list[dict]:
    """Parse, filter (cheap steps on every row), then give conformers in file order up to `limit`."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # RDKit's own messages would repeat ours on stderr
    try:
        reader = READERS[fmt]
        survival = Counter()
        candidates = []
        fragments_removed = 0
        allowed = set(elements) if elements is not None else None
        for line_no, mol, coords in reader(source, report):
            survival["read"] += 1
            if mol is None:
                continue
            survival["parsed"] += 1
            fragments = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=True)  # sanitised: ring info, valences
            if len(fragments) > 1:
                if not settings["largest_fragment"]:
                    report.bad(
                        SEVERAL_FRAGMENTS,
                        source,
                        line_no,
                        f"{len(fragments)} fragments (a salt or mixture: {Chem.MolToSmiles(mol)}); pass "
                        "largest_fragment=True to keep the largest",
                    )
                    continue
                mol = max(fragments, key=lambda m: (m.GetNumHeavyAtoms(), m.GetNumAtoms()))
                coords = mol.GetConformer().GetPositions() if coords is not None else None
                fragments_removed += 1
            survival["single_fragment"] += 1
            present = {a.GetSymbol() for a in mol.GetAtoms()} | {"H"}
            if allowed is not None and not present <= allowed:
                _filtered(report, FILTERED_ELEMENTS)
                continue
            if allowed is None and (bad := [s for s in present if not _force_field_element(s)]):
                report.bad(
                    UNSUPPORTED_ELEMENT,
                    source,
                    line_no,
                    f"unsupported element(s) {sorted(bad)}: no force-field parameters",
                )
                continue
            survival["elements"] += 1
            if settings["max_heavy_atoms"] is not None and mol.GetNumHeavyAtoms() > settings["max_heavy_atoms"]:
                _filtered(report, FILTERED_HEAVY_ATOMS)
                continue
            survival["heavy_atoms"] += 1
            if settings["neutral_only"]:
                if any(a.GetFormalCharge() for a in mol.GetAtoms()):
                    _filtered(report, FILTERED_CHARGED)
                    continue
                survival["neutral"] += 1
            candidates.append((line_no, mol, coords))

        rows, methods = [], Counter()
        for line_no, mol, coords in candidates:
            if settings["limit"] is not None and len(rows) >= settings["limit"]:
                report.notes["not_embedded_after_limit"] = len(candidates) - len(rows)
                break
            if coords is None:
                embedded, method = _embed(mol, settings["seed"])
                if embedded is None:
                    report.bad(
                        EMBEDDING_FAILED,
                        source,
                        line_no,
                        f"ETKDG could not embed {Chem.MolToSmiles(mol)!r} in 3D (seed {settings['seed']})",
                    )
                    continue
                mol = embedded
            else:
                method = "from_file"
            methods[method] += 1
            survival["conformer"] += 1
            rows.append(_row(mol))
        report.notes["survival"] = {step: survival[step] for step in _steps(settings)}
        report.notes["conformers"] = dict(sorted(methods.items()))
        report.notes["charged_molecules"] = sum(any(r["charges"]) for r in rows)
        if settings["largest_fragment"]:
            report.notes["fragments_removed"] = fragments_removed  # molecules reduced to their largest fragment
        return rows
    finally:
        RDLogger.EnableLog("rdApp.*")


def _steps(settings: dict) -> list[str]:
    steps = ["read", "parsed", "single_fragment", "elements", "heavy_atoms"]
    return steps + (["neutral"] if settings["neutral_only"] else []) + ["conformer"]


def _filtered(report: DataReport, reason: str) -> None:
    report.skipped[reason] += 1  # not `bad()`: a filter is the user's choice, never an error


def _embed(mol, seed: int):
    """ETKDGv3 (seeded) with explicit H, then MMFF94, else UFF, else the ETKDG geometry. Returns (mol, method)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True  # the usual rescue for cages and strained rings
        if AllChem.EmbedMolecule(mol, params) != 0:
            return None, None
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
        return mol, "mmff"
    if AllChem.UFFHasAllMoleculeParams(mol):
        AllChem.UFFOptimizeMolecule(mol, maxIters=2000)
        return mol, "uff"
    return mol, "etkdg_only"


def _row(mol) -> dict:
    from rdkit import Chem

    # Heavy atoms first, then every hydrogen: a hydrogen is atomic number 1, so [2H] and [3H] are hydrogens too, and
    # so are hydrogens that a file lists before (or between) the heavy atoms. Stable, so each group keeps its order.
    order = sorted(range(mol.GetNumAtoms()), key=lambda i: mol.GetAtomWithIdx(i).GetAtomicNum() == 1)
    mol = Chem.RenumberAtoms(mol, order)
    positions = mol.GetConformer().GetPositions()
    masses = np.array([a.GetMass() for a in mol.GetAtoms()])
    positions = positions - (masses[:, None] * positions).sum(0) / masses.sum()
    heavy = heavy_atoms(mol)
    return {
        "smiles": Chem.MolToSmiles(heavy),
        "symbols": [a.GetSymbol() for a in mol.GetAtoms()],
        "charges": [a.GetFormalCharge() for a in mol.GetAtoms()],
        "positions": positions.astype(np.float32).tolist(),
        "num_atoms": mol.GetNumAtoms(),
        "num_heavy_atoms": heavy.GetNumAtoms(),
        **molecule_properties(heavy),
    }


def _force_field_element(symbol: str) -> bool:
    # Elements MMFF94 or UFF place sensibly in organic molecules; beyond these an embedding is not trustworthy.
    return symbol in {"H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Se", "Br", "I"}


# ----------------------------------------------------------------------------------------------- caching


def _cache_key(source: Path, settings: dict) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    files = sorted(p for p in source.glob("*.xyz")) if source.is_dir() else [source]
    for path in files:
        digest.update(f"|{path.name}|".encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:24]


# ----------------------------------------------------------------------------------------------- helpers
