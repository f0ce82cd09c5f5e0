"""The lesion formats: HAM10000, ISIC 2019, ISIC 2020, an image folder, or any CSV, each read into rows of the
common schema of `hf_medai.data.lesions` (which turns them into a dataset), with the metadata cells parsed.

Each reader finds its table, its images and its label; a diagnosis is mapped to the task's label (`is_melanoma` for
the binary task). The checks every table row goes through, the metadata columns recognised by name and the reasons a
row is skipped are in `hf_medai.data.lesion_rows`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hf_medai.data.images import class_dirs, image_index, images_under
from hf_medai.data.lesion_rows import (
    AMBIGUOUS_LABEL,
    DUPLICATE_ID,
    DX_ALIASES,
    ID_ALIASES,
    MISSING_LABEL,
    UNKNOWN_LABEL,
    lesion_row,
    lookup_in,
    table_rows,
)
from hf_medai.data.report import DataError, DataReport
from hf_medai.data.tables import find_column, number_cell, read_csv_strings, sorted_labels, text_cell

HAM10000_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
# Column order of ISIC_2019_Training_GroundTruth.csv; UNK has no training image in the real release but
# keeps its index so label ids match models trained on the full scheme.
ISIC2019_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
# Every `diagnosis` value of the ISIC 2020 training set.
ISIC2020_DIAGNOSES = [
    "atypical melanocytic proliferation",
    "cafe-au-lait macule",
    "lentigo NOS",
    "lichenoid keratosis",
    "melanoma",
    "nevus",
    "seborrheic keratosis",
    "solar lentigo",
    "unknown",
]
BINARY_CLASSES = ["not_melanoma", "melanoma"]
FORMATS = ("auto", "imagefolder", "ham10000", "isic2019", "isic2020", "csv")
TASKS = ("binary", "multiclass")

HAM10000_CSV = "HAM10000_metadata.csv"
ISIC2019_CSV = "ISIC_2019_Training_GroundTruth.csv"
ISIC2019_METADATA_CSV = "ISIC_2019_Training_Metadata.csv"
# ISIC 2020 ground truth, most preferred first: the archive's corrected v2 (adds lesion_id), its first release,
# and Kaggle's SIIM-ISIC train.csv.
ISIC2020_CSVS = ("ISIC_2020_Training_GroundTruth_v2.csv", "ISIC_2020_Training_GroundTruth.csv", "train.csv")


def detect_format(source: str | os.PathLike) -> str:
    """Name the format of `source` (a folder or a CSV file) from the files present."""
    source = Path(source)
    if source.is_file():
        if source.name == HAM10000_CSV:
            return "ham10000"
        if source.name == ISIC2019_CSV:
            return "isic2019"
        if source.suffix.lower() != ".csv":
            raise DataError(source, None, "cannot detect the format: expected a folder or a .csv file")
        return "isic2020" if _looks_like_isic2020(source) else "csv"
    if not source.is_dir():
        raise DataError(source, None, "no such file or directory")
    if (source / HAM10000_CSV).is_file():
        return "ham10000"
    if (source / ISIC2019_CSV).is_file():
        return "isic2019"
    if _isic2020_tables(source):
        return "isic2020"
    csvs = sorted(p.name for p in source.glob("*.csv"))
    if len(csvs) == 1:
        return "csv"
    if any(images_under(d) for d in class_dirs(source)):
        return "imagefolder"
    found = sorted(p.name for p in source.iterdir() if not p.name.startswith("."))[:20]
    raise DataError(
        source,
        None,
        f"cannot detect the format: expected {HAM10000_CSV}, {ISIC2019_CSV}, an ISIC 2020 ground truth "
        f"({' or '.join(ISIC2020_CSVS)}), "
        f"one CSV file, or class sub-folders of images; found {found}. Pass format= explicitly",
    )


def read_rows(
    source: Path,
    fmt: str,
    task: str,
    report: DataReport,
    image_column: str = "image_path",
    label_column: str = "label",
) -> tuple[list[dict], list[str]]:
    """One dict per usable row of `source` in format `fmt` (not "auto"), and the class names of `task`."""
    if fmt == "imagefolder":
        return _read_imagefolder(source, task, report)
    if fmt == "ham10000":
        return _read_ham10000(source, task, report)
    if fmt == "isic2019":
        return _read_isic2019(source, task, report)
    if fmt == "isic2020":
        return _read_isic2020(source, task, report)
    return _read_csv_format(source, task, report, image_column, label_column)


def _isic2020_tables(folder: Path) -> list[Path]:
    """The ISIC 2020 ground-truth tables in `folder` (names in `ISIC2020_CSVS`, ISIC 2020 columns), preferred first."""
    tables = [folder / name for name in ISIC2020_CSVS]
    return [path for path in tables if path.is_file() and _looks_like_isic2020(path)]


def _looks_like_isic2020(csv_path: Path) -> bool:
    try:
        header = pd.read_csv(csv_path, nrows=0, encoding="utf-8-sig").columns
    except Exception:  # unreadable files are reported properly by the reader itself
        return False
    names = {str(c).strip() for c in header}
    return "image_name" in names and bool(names & {"target", "diagnosis"})


def _read_ham10000(source: Path, task: str, report: DataReport) -> tuple[list[dict], list[str]]:
    csv_path = source if source.is_file() else source / HAM10000_CSV
    frame = read_csv_strings(csv_path, required=["image_id", "dx"])
    images = image_index(csv_path.parent)

    def label(rec: dict, where: str) -> tuple[str, str] | None:
        dx = _vocabulary_label(rec["dx"], HAM10000_CLASSES, "dx", report, csv_path, where)
        return None if dx is None else (dx, _task_label(dx, task))

    rows = table_rows(frame, csv_path, "ham10000", "image_id", label, lookup_in(images, csv_path.parent), report)
    return rows, (HAM10000_CLASSES if task == "multiclass" else BINARY_CLASSES)


def _read_isic2019(source: Path, task: str, report: DataReport) -> tuple[list[dict], list[str]]:
    csv_path = source if source.is_file() else source / ISIC2019_CSV
    frame = read_csv_strings(csv_path, required=["image", *ISIC2019_CLASSES[:-1]])
    classes = [c for c in ISIC2019_CLASSES if c in frame.columns]
    meta_path = csv_path.parent / ISIC2019_METADATA_CSV
    if meta_path.is_file():
        meta = read_csv_strings(meta_path, required=["image"])
        meta = meta.drop_duplicates("image").set_index("image", drop=False)
        # the ground truth's own columns win; the metadata adds age, sex, site, lesion_id
        frame = frame.join(meta.drop(columns=[c for c in meta.columns if c in frame.columns]), on="image")
        frame = frame.fillna("")
    else:
        report.notes["metadata_file"] = f"{ISIC2019_METADATA_CSV} not found: age, sex, site, lesion_id left empty"
    images = image_index(csv_path.parent, prefer="ISIC_2019_Training_Input")

    def label(rec: dict, where: str) -> tuple[str, str] | None:
        marked = []
        for cls in classes:
            text = text_cell(rec[cls])
            if text is None:
                report.bad(MISSING_LABEL, csv_path, where, f"missing label: empty one-hot column {cls!r}")
                return None
            value = number_cell(text)
            if value not in (0.0, 1.0):
                report.bad(
                    UNKNOWN_LABEL, csv_path, where, f"one-hot value {rec[cls]!r} in column {cls!r} is not 0 or 1"
                )
                return None
            if value == 1.0:
                marked.append(cls)
        if not marked:
            report.bad(MISSING_LABEL, csv_path, where, f"no class marked: every one-hot column {classes} is 0")
            return None
        if len(marked) > 1:
            report.bad(
                AMBIGUOUS_LABEL,
                csv_path,
                where,
                f"{len(marked)} classes marked ({', '.join(marked)}); exactly one one-hot column must be 1",
            )
            return None
        dx = marked[0]
        return dx, _task_label(dx, task)

    rows = table_rows(frame, csv_path, "isic2019", "image", label, lookup_in(images, csv_path.parent), report)
    return rows, (ISIC2019_CLASSES if task == "multiclass" else BINARY_CLASSES)


def _read_isic2020(source: Path, task: str, report: DataReport) -> tuple[list[dict], list[str]]:
    tables = [source] if source.is_file() else _isic2020_tables(source)
    if not tables:
        raise DataError(
            source,
            None,
            f"no ISIC 2020 ground truth: expected {' or '.join(ISIC2020_CSVS)} with "
            "columns image_name and target (or diagnosis)",
        )
    csv_path = tables[0]
    report.notes["ground_truth_file"] = csv_path.name
    if len(tables) > 1:
        report.notes["ground_truth_files_ignored"] = [t.name for t in tables[1:]]
    label_col = "target" if task == "binary" else "diagnosis"
    frame = read_csv_strings(csv_path, required=["image_name", label_col])
    images = image_index(csv_path.parent, prefer="train")
    has_dx = "diagnosis" in frame.columns

    def label(rec: dict, where: str) -> tuple[str, str] | None:
        if task == "multiclass":
            dx = _vocabulary_label(rec["diagnosis"], ISIC2020_DIAGNOSES, "diagnosis", report, csv_path, where)
            return None if dx is None else (dx, dx)
        text = text_cell(rec["target"])
        if text is None:
            report.bad(MISSING_LABEL, csv_path, where, "missing label: empty 'target'")
            return None
        value = number_cell(text)
        if value not in (0.0, 1.0):
            report.bad(UNKNOWN_LABEL, csv_path, where, f"unknown label {text!r} in 'target'; expected 0 or 1")
            return None
        name = BINARY_CLASSES[int(value)]
        return (text_cell(rec["diagnosis"]) if has_dx else None) or name, name

    rows = table_rows(frame, csv_path, "isic2020", "image_name", label, lookup_in(images, csv_path.parent), report)
    return rows, (ISIC2020_DIAGNOSES if task == "multiclass" else BINARY_CLASSES)


def _read_csv_format(
    source: Path, task: str, report: DataReport, image_column: str, label_column: str
) -> tuple[list[dict], list[str]]:
    if source.is_dir():
        csvs = sorted(source.glob("*.csv"))
        if len(csvs) != 1:
            raise DataError(
                source,
                None,
                f"format 'csv' needs one CSV file in the folder, found "
                f"{[p.name for p in csvs]}; pass the CSV file itself",
            )
        source = csvs[0]
    frame = read_csv_strings(source, required=[image_column, label_column])
    base = source.parent

    values = [v for v in (text_cell(x) for x in frame[label_column]) if v is not None]
    if task == "multiclass":
        class_names = sorted_labels(set(values))
    else:
        class_names = BINARY_CLASSES
    # 0/1 labels (Fitzpatrick17k-style exports, ISIC targets) mean melanoma = 1; text labels are diagnoses.
    numeric = bool(values) and all(number_cell(v) in (0.0, 1.0) or v.lower() in ("true", "false") for v in values)
    id_col = find_column(frame.columns, ID_ALIASES, exclude=(label_column,))
    dx_col = find_column(frame.columns, DX_ALIASES, exclude=(label_column, image_column))

    def label(rec: dict, where: str) -> tuple[str, str] | None:
        text = text_cell(rec[label_column])
        if text is None:
            report.bad(MISSING_LABEL, source, where, f"missing label: empty {label_column!r}")
            return None
        if task == "multiclass":
            name = text
        elif numeric:
            name = BINARY_CLASSES[1 if text.lower() == "true" or number_cell(text) == 1.0 else 0]
        else:
            name = _task_label(text, task)
        dx = (text_cell(rec[dx_col]) if dx_col else None) or text
        return dx, name

    def image(rec: dict, image_id: str) -> tuple[Path | None, str]:
        text = text_cell(rec[image_column])
        if text is None:
            return None, f"empty {image_column!r}"
        path = Path(text).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file() and not path.suffix:  # ids without extension (e.g. Fitzpatrick17k's md5hash)
            path = next(
                (path.with_suffix(s) for s in (".jpg", ".jpeg", ".png") if path.with_suffix(s).is_file()), path
            )
        return (path.resolve() if path.is_file() else None), f"image file not found: {path}"

    def image_id(rec: dict) -> str | None:
        return text_cell(rec[id_col]) if id_col else text_cell(rec[image_column])

    rows = table_rows(frame, source, "csv", image_id, label, image, report)
    return rows, class_names


def _read_imagefolder(source: Path, task: str, report: DataReport) -> tuple[list[dict], list[str]]:
    if not source.is_dir():
        raise DataError(source, None, "format 'imagefolder' needs a folder of class sub-folders")
    folders = class_dirs(source)
    split_names = {"train", "training", "test", "val", "valid", "validation"}
    if folders and {d.name.lower() for d in folders} <= split_names and any(class_dirs(d) for d in folders):
        raise DataError(
            source,
            None,
            f"the sub-folders {[d.name for d in folders]} look like splits, not "
            "classes; point source at one split's folder (root/<class>/*.jpg)",
        )
    found = [(d.name, path) for d in folders for path in images_under(d)]
    if not found:
        raise DataError(source, None, "no images found: expected root/<class>/*.jpg (or .png, ...)")
    folder_classes = sorted_labels({name for name, _ in found})
    seen: set[str] = set()
    rows = []
    for folder, path in found:
        report.rows_read += 1
        image_id = path.relative_to(source).with_suffix("").as_posix()
        if image_id in seen:
            report.bad(DUPLICATE_ID, path, image_id, f"duplicate image id {image_id!r} (same name, other suffix)")
            continue
        seen.add(image_id)
        rows.append(lesion_row(image_id, path, _task_label(folder, task), folder, {}, "imagefolder", None))
    return rows, (folder_classes if task == "multiclass" else BINARY_CLASSES)


def _vocabulary_label(
    raw: Any, vocabulary: Sequence[str], column: str, report: DataReport, file: Path, where: str
) -> str | None:
    text = text_cell(raw)
    if text is None:
        report.bad(MISSING_LABEL, file, where, f"missing label: empty {column!r}")
        return None
    canonical = {v.lower(): v for v in vocabulary}.get(text.lower())
    if canonical is None:
        report.bad(
            UNKNOWN_LABEL, file, where, f"unknown label {text!r} in {column!r}; expected one of {list(vocabulary)}"
        )
    return canonical


def _task_label(dx: str, task: str) -> str:
    if task == "multiclass":
        return dx
    return BINARY_CLASSES[int(is_melanoma(dx))]


def is_melanoma(name: str) -> bool:
    """Whether a diagnosis name means melanoma ("mel", "MEL", "melanoma", "malignant melanoma", ...)."""
    text = re.sub(r"[\s_\-]+", " ", str(name).strip().lower())
    if text in ("mel", "melanoma") or text == BINARY_CLASSES[1]:
        return True
    if text.startswith(("not ", "non ", "no ")):
        return False
    return "melanoma" in text.split(" ")
