"""What every molecule source shares: the dataset schema, the element checks and the processed-dataset cache
(`load_molecules` for files, `hf_medai.data.qm9` for the packaged QM9)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import datasets

from hf_medai.data.report import DataReport
from hf_medai.io import save_dataset_cache

META_JSON = "hf_medai_molecules.json"


def molecule_features() -> datasets.Features:
    """The schema `load_molecules` returns."""
    return datasets.Features(
        {
            "smiles": datasets.Value("string"),
            "atom_types": datasets.Sequence(datasets.Value("int32")),
            "charges": datasets.Sequence(datasets.Value("int32")),
            "positions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=3)),
            "num_atoms": datasets.Value("int32"),
            "num_heavy_atoms": datasets.Value("int32"),
            "qed": datasets.Value("float64"),
            "logp": datasets.Value("float64"),
            "mw": datasets.Value("float64"),
            "sa": datasets.Value("float64"),
        }
    )


def vocabulary(rows: list[dict]) -> list[str]:
    """Elements present in the kept rows, by atomic number (`_process` already dropped molecules outside `elements`)."""
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    present = {s for r in rows for s in r["symbols"]}
    return sorted(present, key=table.GetAtomicNumber)


def check_elements(elements: Sequence[str]) -> tuple[str, ...]:
    from rdkit import Chem

    if isinstance(elements, str):
        raise ValueError(f"elements must be a list of symbols such as ['H', 'C', 'N', 'O', 'F'], got {elements!r}")
    table = Chem.GetPeriodicTable()
    for symbol in elements:
        try:
            table.GetAtomicNumber(symbol)
        except RuntimeError:
            raise ValueError(f"elements: {symbol!r} is not an element symbol") from None
    if "H" not in elements:
        raise ValueError("elements must include 'H': every molecule is stored with explicit hydrogens")
    return tuple(sorted(set(elements), key=table.GetAtomicNumber))


def default_cache_dir() -> Path:
    from hf_medai.paths import cache_root

    return cache_root() / "molecules"


def save_cache(dataset: datasets.Dataset, vocab: list[str], report: DataReport, target: Path) -> datasets.Dataset:
    meta = {
        "elements_vocab": vocab,
        "report": {
            "skip_bad_rows": report.skip_bad_rows,
            "rows_read": report.rows_read,
            "skipped": dict(report.skipped),
            "examples": report.examples,
            "notes": report.notes,
        },
    }
    return save_dataset_cache(dataset, target, META_JSON, meta)


def load_cache(target: Path):
    meta_path = target / META_JSON
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        dataset = datasets.load_from_disk(str(target))
    except (OSError, ValueError):
        return None  # unreadable cache: rebuild it
    saved = meta["report"]
    report = DataReport(
        skip_bad_rows=saved["skip_bad_rows"],
        rows_read=saved["rows_read"],
        skipped=Counter(saved["skipped"]),
        examples=list(saved["examples"]),
        notes=dict(saved["notes"]),
    )
    return dataset, list(meta["elements_vocab"]), report


def rdkit_version() -> str:
    import rdkit

    return rdkit.__version__
