"""What every molecule source shares: the dataset schema, the element checks and the processed-dataset cache
(`load_molecules` for files, `hf_medai.data.qm9` for the packaged QM9)."""

from __future__ import annotations

import json
import time
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


def rows_to_dataset(rows: list[dict], features: datasets.Features) -> tuple[datasets.Dataset, list[str]]:
    """(dataset, elements_vocab) of processed rows whose `symbols` become `atom_types` (indices into the vocabulary
    of the elements present, by atomic number)."""
    vocab = vocabulary(rows)
    index = {symbol: i for i, symbol in enumerate(vocab)}
    columns: dict[str, list] = {name: [] for name in features}
    for row in rows:
        row["atom_types"] = [index[s] for s in row.pop("symbols")]
        for name in columns:
            columns[name].append(row[name])
    return datasets.Dataset.from_dict(columns, features=features), vocab


def save_cache(
    dataset: datasets.Dataset, vocab: list[str], report: DataReport, target: Path, started: float
) -> tuple[datasets.Dataset, list[str], DataReport]:
    """Save the processed dataset under `target` and return it (memory-mapped) with its vocabulary and report, whose
    notes["cache"] records the miss and the seconds since `started` (time.perf_counter())."""
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
    dataset = save_dataset_cache(dataset, target, META_JSON, meta)
    report.notes["cache"] = {"hit": False, "path": str(target), "load_seconds": time.perf_counter() - started}
    return dataset, vocab, report


def load_cache(target: Path, started: float):
    """(dataset, elements_vocab, report) saved under `target`, notes["cache"] recording the hit; None if absent."""
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
    report.notes["cache"] = {"hit": True, "path": str(target), "load_seconds": time.perf_counter() - started}
    return dataset, list(meta["elements_vocab"]), report


def rdkit_version() -> str:
    import rdkit

    return rdkit.__version__
