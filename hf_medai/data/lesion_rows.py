"""One row of the common lesion schema (`hf_medai.data.lesions`) from a row of any lesion table: each row checked in
order (id, duplicate, label, image file), its metadata columns found by name and their cells parsed. The per-format
readers that supply the label and the image lookup are in `hf_medai.data.lesion_formats`.

Column names are matched case-insensitively against the aliases below (first match wins); bad rows go to the
`DataReport` (reasons below).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from hf_medai.data.images import MISSING_IMAGE
from hf_medai.data.report import DataReport
from hf_medai.data.tables import find_column, number_cell, text_cell

# Reasons a row is skipped (keys of DataReport.skipped).
MISSING_ID = "missing_id"
DUPLICATE_ID = "duplicate_id"
MISSING_LABEL = "missing_label"
UNKNOWN_LABEL = "unknown_label"
AMBIGUOUS_LABEL = "ambiguous_label"
# missing_image, empty_image, truncated_image, unreadable_image: hf_medai.data.images

# Metadata columns recognised by name (case-insensitive), first match wins.
ID_ALIASES = ("id", "image_id", "image_name", "isic_id", "image", "md5hash")
DX_ALIASES = ("dx", "diagnosis")
AGE_ALIASES = ("age", "age_approx")
SEX_ALIASES = ("sex", "gender")
SITE_ALIASES = (
    "site",
    "localization",
    "anatom_site_general",
    "anatom_site_general_challenge",
    "anatom_site",
    "location",
)
FITZPATRICK_ALIASES = (
    "fitzpatrick",
    "fitzpatrick_scale",
    "fitzpatrick_type",
    "fitzpatrick_skin_type",
    "fst",
    "skin_type",
)
PATIENT_ALIASES = ("patient_id", "patient")
LESION_ALIASES = ("lesion_id",)

_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6}


def table_rows(
    frame: pd.DataFrame,
    file: Path,
    fmt: str,
    id_column: str | Callable[[dict], str | None],
    label: Callable[[dict, str], tuple[str, str] | None],
    image: Callable[[dict, str], tuple[Path | None, str]],
    report: DataReport,
) -> list[dict]:
    """Check each CSV row in order (id, duplicate, label, image file) and map its metadata."""
    meta_columns = {
        "age": find_column(frame.columns, AGE_ALIASES),
        "sex": find_column(frame.columns, SEX_ALIASES),
        "site": find_column(frame.columns, SITE_ALIASES),
        "fitzpatrick": find_column(frame.columns, FITZPATRICK_ALIASES),
        "patient_id": find_column(frame.columns, PATIENT_ALIASES),
        "lesion_id": find_column(frame.columns, LESION_ALIASES),
    }
    unparsed: Counter = Counter()
    seen: dict[str, int] = {}
    rows = []
    for number, rec in enumerate(frame.to_dict("records"), start=1):
        report.rows_read += 1
        image_id = id_column(rec) if callable(id_column) else text_cell(rec[id_column])
        if image_id is None:
            report.bad(MISSING_ID, file, number, "empty image id")
            continue
        where = f"{number} (id {image_id})"
        if image_id in seen:
            report.bad(DUPLICATE_ID, file, where, f"duplicate image id {image_id!r}, first at row {seen[image_id]}")
            continue
        seen[image_id] = number
        labelled = label(rec, where)
        if labelled is None:
            continue
        path, problem = image(rec, image_id)
        if path is None:
            report.bad(MISSING_IMAGE, file, where, problem)
            continue
        meta = {key: (rec[col] if col else None) for key, col in meta_columns.items()}
        rows.append(lesion_row(image_id, path, labelled[1], labelled[0], meta, fmt, number, unparsed))
    if unparsed:
        notes = report.notes.setdefault("unparsed_metadata", {})
        for key, count in unparsed.items():
            notes[key] = notes.get(key, 0) + count
    return rows


def lesion_row(
    image_id: str,
    path: Path,
    label: str,
    dx: str,
    meta: dict,
    fmt: str,
    source_row: int | None,
    unparsed: Counter | None = None,
) -> dict:
    unparsed = unparsed if unparsed is not None else Counter()
    lesion_id = text_cell(meta.get("lesion_id")) or image_id
    return {
        "id": image_id,
        "image_path": str(path),
        "label": label,
        "dx": dx,
        "lesion_id": lesion_id,
        "patient_id": text_cell(meta.get("patient_id")) or lesion_id,
        "age": _parse_age(meta.get("age"), unparsed),
        "sex": _parse_sex(meta.get("sex"), unparsed),
        "site": text_cell(meta.get("site")),
        "fitzpatrick": _parse_fitzpatrick(meta.get("fitzpatrick"), unparsed),
        "source": fmt,
        "source_row": source_row,
    }


def lookup_in(images: dict[str, Path], root: Path) -> Callable[[dict, str], tuple[Path | None, str]]:
    def lookup(rec: dict, image_id: str) -> tuple[Path | None, str]:
        return images.get(image_id), f"image file not found: no {image_id}.jpg (or .png, ...) under {root}"

    return lookup


# ----------------------------------------------------------------------------------------------- metadata cells


def _parse_age(value: Any, unparsed: Counter) -> float | None:
    text = text_cell(value)
    if text is None or text.lower() == "unknown":
        return None
    age = number_cell(text)
    if age is None or not 0 <= age <= 130:
        unparsed["age"] += 1
        return None
    return age


def _parse_sex(value: Any, unparsed: Counter) -> str | None:
    text = text_cell(value)
    if text is None or text.lower() in ("unknown", "u", "other"):
        return None
    sex = {"male": "male", "m": "male", "female": "female", "f": "female"}.get(text.lower())
    if sex is None:
        unparsed["sex"] += 1
    return sex


def _parse_fitzpatrick(value: Any, unparsed: Counter) -> int | None:
    text = text_cell(value)
    if text is None:
        return None
    text = text.lower().removeprefix("type").strip()
    number = _ROMAN.get(text, number_cell(text))
    if number in (-1, 0):  # Fitzpatrick17k writes -1 for "not rated"
        return None
    if number is None or number != int(number) or not 1 <= number <= 6:
        unparsed["fitzpatrick"] += 1
        return None
    return int(number)
