"""Tables read as strings, and the one parser of their cells, for every loader (lesion metadata, MIMIC, plain tables).

Reading keeps every cell a string ("" when empty), so parsing and its error messages stay ours, not pandas'; the
cell parsers below then say what a missing value, a number or a label order is, the same way for every loader.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hf_medai.data.report import DataError

# Cells that mean "no value" in the metadata tables we read (compared lower-cased, after stripping).
MISSING_STRINGS = frozenset({"", "nan", "none", "null", "na", "n/a"})
_SURROGATE = re.compile("[\udc80-\udcff]")  # what undecodable bytes become under errors="surrogateescape"


# ----------------------------------------------------------------------------------------------- cells


def text_cell(value: Any, missing: Iterable[str] = MISSING_STRINGS) -> str | None:
    """The stripped text of a cell, or None when it is missing: None, NaN, or one of `missing` (any case)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return None if text.lower() in missing else text


def group_cell(value: Any) -> str:
    """A subgroup cell of a MIMIC-style table: its stripped text, "unknown" when empty (any other text is a group)."""
    return text_cell(value, missing=("",)) or "unknown"


def number_cell(value: Any) -> float | None:
    """The cell as a float, or None when it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def sorted_labels(labels: Iterable[str]) -> list[str]:
    """Numeric labels in numeric order ("2" before "10"), others alphabetically."""
    labels = list(labels)
    if all(number_cell(v) is not None for v in labels):
        return sorted(labels, key=float)
    return sorted(labels)


def norm_id(series: pd.Series) -> pd.Series:
    """IDs as clean strings: ' 123 ', '123.0' (a pandas float round trip) -> '123'."""
    return series.astype(str).str.strip().str.replace(r"\.0$", "", regex=True)


def has_bad_bytes(text: str) -> bool:
    """Whether text read with errors="surrogateescape" held bytes that are not UTF-8."""
    return not text.isascii() and bool(_SURROGATE.search(text))


def find_column(columns: Iterable[str], aliases: Sequence[str], exclude: Sequence[str] = ()) -> str | None:
    """The first of `aliases` (lower case) that names one of `columns`, compared case-insensitively."""
    by_lower = {c.lower(): c for c in columns if c not in exclude}
    return next((by_lower[a] for a in aliases if a in by_lower), None)


# ----------------------------------------------------------------------------------------------- files


def read_csv_strings(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """A whole (small) CSV, every cell a string ("" when empty); DataError on an unreadable file or missing column."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None
    except pd.errors.EmptyDataError:
        raise DataError(path, None, "the file is empty (no header row)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as err:
        raise DataError(path, None, f"cannot read as CSV: {err}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            path,
            None,
            f"missing required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)}; columns found: {list(frame.columns)}",
        )
    return frame


def find_table(root: Path, stem: str) -> Path:
    """`root/stem.csv` or `root/stem.csv.gz`; DataError naming both if neither exists."""
    for suffix in (".csv", ".csv.gz"):
        path = root / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise DataError(root / f"{stem}.csv", None, f"missing table: neither {stem}.csv nor {stem}.csv.gz is in {root}")


def _resolve_columns(path: Path, columns: Mapping[str, str | tuple[str, ...]], header: Sequence[str]) -> dict:
    resolved, missing = {}, []
    for ours, theirs in columns.items():
        options = (theirs,) if isinstance(theirs, str) else theirs
        hit = next((c for c in options if c in header), None)
        if hit is None:
            missing.append(" or ".join(options))
        else:
            resolved[hit] = ours
    if missing:
        raise DataError(path, None, f"missing column(s) {', '.join(missing)}; found {', '.join(header[:25])}")
    return resolved


def read_table(
    path: Path,
    columns: Mapping[str, str | tuple[str, ...]],
    keep_bad_bytes: bool = False,
    row_filter=None,
    chunksize: int = 200_000,
    optional: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Read the named columns of a csv/csv.gz as strings ("" when empty), renamed to ours, with `data_row` (1-based).
    `optional` columns ({ours: theirs}) are read when the table has them.

    Non-UTF-8 bytes are an error naming the row, unless `keep_bad_bytes` (note tables, where one bad note is a
    skippable row): they then survive as surrogate escapes for the caller to find. `row_filter(frame) -> mask`
    keeps only matching rows of each chunk, so a 4 GB NOTEEVENTS never sits in memory whole.
    """
    try:
        header = list(pd.read_csv(path, nrows=0, encoding_errors="surrogateescape").columns)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, EOFError) as e:
        raise DataError(path, None, f"not a readable CSV table ({e})") from e
    rename = _resolve_columns(path, columns, header)
    rename.update({theirs: ours for ours, theirs in (optional or {}).items() if theirs in header})
    kwargs = dict(usecols=list(rename), dtype=object, keep_default_na=False, na_values=[], chunksize=chunksize)
    try:
        frames = []
        chunks = pd.read_csv(path, encoding_errors="surrogateescape" if keep_bad_bytes else "strict", **kwargs)
        for chunk in chunks:
            chunk = chunk.rename(columns=rename)
            chunk["data_row"] = chunk.index + 1
            frames.append(chunk[row_filter(chunk)] if row_filter is not None else chunk)
    except UnicodeDecodeError:
        raise DataError(path, _first_bad_row(path, kwargs), "bytes that are not UTF-8; re-save the file as UTF-8")
    except (pd.errors.ParserError, OSError, EOFError) as e:
        raise DataError(path, None, f"not a readable CSV table ({e})") from e
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*rename.values(), "data_row"])
    return frame


def _first_bad_row(path: Path, kwargs: dict) -> int | None:
    for chunk in pd.read_csv(path, encoding_errors="surrogateescape", **kwargs):
        for col in chunk.columns:
            bad = chunk[col].map(lambda v: bool(_SURROGATE.search(v)) if isinstance(v, str) else False)
            if bad.any():
                return int(bad.idxmax()) + 1
    return None
