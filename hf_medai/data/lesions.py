"""Skin-lesion images (HAM10000, ISIC 2019, ISIC 2020, an image folder, any CSV) as one `datasets.Dataset`.

Every format gives the same columns, so recipes, splits and subgroup metrics never care where data came from:

    id           str, unique image id            image_path  str, absolute
    label        ClassLabel (class_names)        dx          str, the original diagnosis
    lesion_id    str (falls back to id)          patient_id  str (falls back to lesion_id)
    age          float | None                    sex         "male" | "female" | None
    site         str | None                      fitzpatrick int 1-6 | None
    source       the format name                 source_row  int | None, the example's data row in the metadata CSV
                                                             (1-based, header not counted); None for an image folder

`load_lesions` reads the table and checks that every image file exists; `with_images` decodes them (the slow
part, cached on disk when asked), naming a bad image's `source_row` so the row stays right after skips and splits.
Bad rows raise `DataError` naming file, row and problem, or with `skip_bad_rows=True` are dropped and counted in
the `DataReport` under one of these reasons:

    missing_id, duplicate_id, missing_label, unknown_label, ambiguous_label, missing_image   (load_lesions)
    missing_image, empty_image, truncated_image, unreadable_image                            (with_images)

A missing required column is always an error: no row can be read without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from hf_medai.data.report import DataError, DataReport
from hf_medai.io import save_dataset_cache

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
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})

HAM10000_CSV = "HAM10000_metadata.csv"
ISIC2019_CSV = "ISIC_2019_Training_GroundTruth.csv"
ISIC2019_METADATA_CSV = "ISIC_2019_Training_Metadata.csv"
# ISIC 2020 ground truth, most preferred first: the archive's corrected v2 (adds lesion_id), its first release,
# and Kaggle's SIIM-ISIC train.csv.
ISIC2020_CSVS = ("ISIC_2020_Training_GroundTruth_v2.csv", "ISIC_2020_Training_GroundTruth.csv", "train.csv")

# Reasons a row is skipped (keys of DataReport.skipped).
MISSING_ID = "missing_id"
DUPLICATE_ID = "duplicate_id"
MISSING_LABEL = "missing_label"
UNKNOWN_LABEL = "unknown_label"
AMBIGUOUS_LABEL = "ambiguous_label"
MISSING_IMAGE = "missing_image"
EMPTY_IMAGE = "empty_image"
TRUNCATED_IMAGE = "truncated_image"
UNREADABLE_IMAGE = "unreadable_image"

# Metadata columns recognised by name (case-insensitive), first match wins.
ID_ALIASES = ("id", "image_id", "image_name", "isic_id", "image", "md5hash")
DX_ALIASES = ("dx", "diagnosis")
AGE_ALIASES = ("age", "age_approx")
SEX_ALIASES = ("sex", "gender")
SITE_ALIASES = ("site", "localization", "anatom_site_general", "anatom_site_general_challenge", "anatom_site",
                "location")
FITZPATRICK_ALIASES = ("fitzpatrick", "fitzpatrick_scale", "fitzpatrick_type", "fitzpatrick_skin_type", "fst",
                       "skin_type")
PATIENT_ALIASES = ("patient_id", "patient")
LESION_ALIASES = ("lesion_id",)

_MISSING_STRINGS = frozenset({"", "nan", "none", "null", "na", "n/a"})
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6}
_CACHE_VERSION = "1"
_BAD_ROWS_JSON = "hf_medai_bad_rows.json"


def lesion_features(class_names: Sequence[str], with_image: bool = False) -> datasets.Features:
    """The schema every loader returns (plus `image` after `with_images`)."""
    spec = {
        "id": datasets.Value("string"),
        "image_path": datasets.Value("string"),
        "label": datasets.ClassLabel(names=list(class_names)),
        "dx": datasets.Value("string"),
        "lesion_id": datasets.Value("string"),
        "patient_id": datasets.Value("string"),
        "age": datasets.Value("float64"),
        "sex": datasets.Value("string"),
        "site": datasets.Value("string"),
        "fitzpatrick": datasets.Value("int64"),
        "source": datasets.Value("string"),
        "source_row": datasets.Value("int64"),
    }
    if with_image:
        spec["image"] = datasets.Image()
    return datasets.Features(spec)


# ----------------------------------------------------------------------------------------------- loading


def load_lesions(
    source: str | os.PathLike,
    format: str = "auto",
    task: str = "binary",
    skip_bad_rows: bool = False,
    report: DataReport | None = None,
    image_column: str = "image_path",
    label_column: str = "label",
) -> tuple[datasets.Dataset, list[str], DataReport]:
    """Read a lesion dataset into the common schema; returns (dataset, class_names, report).

    task: "binary" (melanoma vs the rest, `BINARY_CLASSES`) or "multiclass" (the format's own classes).
    image_column / label_column: only for format "csv" (the CSV's column names).
    report: add to this one (e.g. shared by train and test data); skip_bad_rows=True switches it to skipping.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if report is None:
        report = DataReport(skip_bad_rows=skip_bad_rows)
    elif skip_bad_rows:
        report.skip_bad_rows = True
    source = Path(source).expanduser().resolve()
    if not source.exists():
        raise DataError(source, None, "no such file or directory")
    fmt = detect_format(source) if format == "auto" else format

    if fmt == "imagefolder":
        rows, class_names = _read_imagefolder(source, task, report)
    elif fmt == "ham10000":
        rows, class_names = _read_ham10000(source, task, report)
    elif fmt == "isic2019":
        rows, class_names = _read_isic2019(source, task, report)
    elif fmt == "isic2020":
        rows, class_names = _read_isic2020(source, task, report)
    else:
        rows, class_names = _read_csv_format(source, task, report, image_column, label_column)

    if not rows:
        skipped = f" ({report.rows_skipped} skipped: {dict(report.skipped)})" if report.rows_skipped else ""
        raise DataError(source, None, f"no usable rows: {report.rows_read} read{skipped}")
    if task == "binary" and not any(r["label"] == "melanoma" for r in rows):
        warnings.warn(f"{source}: binary task but no row is a melanoma; check the labels or use task='multiclass'",
                      stacklevel=2)
    index = {name: i for i, name in enumerate(class_names)}
    columns = {name: [r[name] for r in rows] for name in lesion_features(class_names)}
    columns["label"] = [index[r["label"]] for r in rows]
    dataset = datasets.Dataset.from_dict(columns, features=lesion_features(class_names))
    return dataset, list(class_names), report


def load_lesion_images(data_dir: str | os.PathLike | None, data_format: str = "auto", task: str = "binary",
                       skip_bad_rows: bool = False, max_image_side: int | None = 512, synthetic_n: int = 4000):
    """What a lesion recipe loads: `data_dir`, or (None) the synthetic HAM10000-format sample, written once.

    Returns (dataset with decoded `image`s, cached under cache_root()/images; class_names; report; the source path).
    """
    from hf_medai.data.synthetic.lesions import write_ham10000
    from hf_medai.paths import cache_root

    source = data_dir
    if source is None:
        source = cache_root() / f"synthetic-ham10000-n{synthetic_n}-seed0"
        if not (source / HAM10000_CSV).exists():
            write_ham10000(source, n=synthetic_n, seed=0)
    dataset, class_names, report = load_lesions(source, data_format, task, skip_bad_rows)
    dataset = with_images(dataset, report, max_side=max_image_side, cache_dir=cache_root() / "images")
    return dataset, class_names, report, source


# No patient (or, where the data has no patient ids, no lesion: HAM10000) may straddle two splits.
LESION_GROUP = "patient_id"


def lesion_splits(dataset: datasets.Dataset, val_fraction: float, test_fraction: float, seed: int) -> datasets.DatasetDict:
    """The patient-grouped, label-stratified split every lesion recipe uses (test_fraction 0: no test split).

    One function, so the diffusion recipe's training patients are exactly the lesion recipe's, which the
    augmentation experiment relies on.
    """
    from hf_medai.data.splits import group_split

    return group_split(dataset, LESION_GROUP, fractions=(1 - val_fraction - test_fraction, val_fraction, test_fraction),
                       seed=seed)


def add_extra_training_images(train: datasets.Dataset, folder: str | os.PathLike, task: str, class_names: Sequence[str],
                              report: DataReport, skip_bad_rows: bool = False, max_side: int | None = None) -> datasets.Dataset:
    """Append an image folder (<class>/*.png, e.g. generated images) to a TRAINING split, never to a test split.

    Labels are matched to `class_names` by name. The rows get ids "extra/<path>", patient "extra", and
    source "extra:<folder name>"; `report.notes["extra_train_images"]` counts them per class.
    """
    from hf_medai.paths import cache_root

    extra, extra_classes, extra_report = load_lesions(folder, "imagefolder", task, skip_bad_rows)
    unknown = sorted(set(extra_classes) - set(class_names))
    if unknown:
        raise DataError(Path(folder), None, f"class folders {unknown} are not classes of the training data {list(class_names)}")
    extra = with_images(extra, extra_report, max_side=max_side, cache_dir=cache_root() / "images")
    index = [list(class_names).index(name) for name in extra_classes]
    tag = Path(folder).name
    extra = extra.map(lambda r: {"label": index[r["label"]], "id": f"extra/{r['id']}", "patient_id": "extra",
                                 "lesion_id": f"extra/{r['id']}", "source": f"extra:{tag}"},
                      features=lesion_features(class_names, with_image=True), desc="adding extra training images")
    counts = Counter(class_names[i] for i in extra["label"])
    report.notes["extra_train_images"] = {"folder": str(folder), "images": len(extra), "per_class": dict(counts),
                                          "report": extra_report.to_dict()}
    return datasets.concatenate_datasets([train, extra.cast(train.features)])


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
    if any(_images_under(d) for d in _class_dirs(source)):
        return "imagefolder"
    found = sorted(p.name for p in source.iterdir() if not p.name.startswith("."))[:20]
    raise DataError(
        source, None,
        f"cannot detect the format: expected {HAM10000_CSV}, {ISIC2019_CSV}, an ISIC 2020 ground truth "
        f"({' or '.join(ISIC2020_CSVS)}), "
        f"one CSV file, or class sub-folders of images; found {found}. Pass format= explicitly",
    )


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
    frame = _read_csv(csv_path, required=["image_id", "dx"])
    images = _image_index(csv_path.parent)

    def label(rec: dict, where: str) -> tuple[str, str] | None:
        dx = _vocabulary_label(rec["dx"], HAM10000_CLASSES, "dx", report, csv_path, where)
        return None if dx is None else (dx, _task_label(dx, task))

    rows = _table_rows(frame, csv_path, "ham10000", "image_id", label, _lookup_in(images, csv_path.parent),
                       report)
    return rows, (HAM10000_CLASSES if task == "multiclass" else BINARY_CLASSES)


def _read_isic2019(source: Path, task: str, report: DataReport) -> tuple[list[dict], list[str]]:
    csv_path = source if source.is_file() else source / ISIC2019_CSV
    frame = _read_csv(csv_path, required=["image", *ISIC2019_CLASSES[:-1]])
    classes = [c for c in ISIC2019_CLASSES if c in frame.columns]
    meta_path = csv_path.parent / ISIC2019_METADATA_CSV
    if meta_path.is_file():
        meta = _read_csv(meta_path, required=["image"])
        meta = meta.drop_duplicates("image").set_index("image", drop=False)
        # the ground truth's own columns win; the metadata adds age, sex, site, lesion_id
        frame = frame.join(meta.drop(columns=[c for c in meta.columns if c in frame.columns]), on="image")
        frame = frame.fillna("")
    else:
        report.notes["metadata_file"] = f"{ISIC2019_METADATA_CSV} not found: age, sex, site, lesion_id left empty"
    images = _image_index(csv_path.parent, prefer="ISIC_2019_Training_Input")

    def label(rec: dict, where: str) -> tuple[str, str] | None:
        marked = []
        for cls in classes:
            text = _clean(rec[cls])
            if text is None:
                report.bad(MISSING_LABEL, csv_path, where, f"missing label: empty one-hot column {cls!r}")
                return None
            value = _number(text)
            if value not in (0.0, 1.0):
                report.bad(UNKNOWN_LABEL, csv_path, where,
                           f"one-hot value {rec[cls]!r} in column {cls!r} is not 0 or 1")
                return None
            if value == 1.0:
                marked.append(cls)
        if not marked:
            report.bad(MISSING_LABEL, csv_path, where, f"no class marked: every one-hot column {classes} is 0")
            return None
        if len(marked) > 1:
            report.bad(AMBIGUOUS_LABEL, csv_path, where, f"{len(marked)} classes marked ({', '.join(marked)}); "
                       "exactly one one-hot column must be 1")
            return None
        dx = marked[0]
        return dx, _task_label(dx, task)

    rows = _table_rows(frame, csv_path, "isic2019", "image", label, _lookup_in(images, csv_path.parent), report)
    return rows, (ISIC2019_CLASSES if task == "multiclass" else BINARY_CLASSES)


def _read_isic2020(source: Path, task: str, report: DataReport) -> tuple[list[dict], list[str]]:
    tables = [source] if source.is_file() else _isic2020_tables(source)
    if not tables:
        raise DataError(source, None, f"no ISIC 2020 ground truth: expected {' or '.join(ISIC2020_CSVS)} with "
                                      "columns image_name and target (or diagnosis)")
    csv_path = tables[0]
    report.notes["ground_truth_file"] = csv_path.name
    if len(tables) > 1:
        report.notes["ground_truth_files_ignored"] = [t.name for t in tables[1:]]
    label_col = "target" if task == "binary" else "diagnosis"
    frame = _read_csv(csv_path, required=["image_name", label_col])
    images = _image_index(csv_path.parent, prefer="train")
    has_dx = "diagnosis" in frame.columns

    def label(rec: dict, where: str) -> tuple[str, str] | None:
        if task == "multiclass":
            dx = _vocabulary_label(rec["diagnosis"], ISIC2020_DIAGNOSES, "diagnosis", report, csv_path, where)
            return None if dx is None else (dx, dx)
        text = _clean(rec["target"])
        if text is None:
            report.bad(MISSING_LABEL, csv_path, where, "missing label: empty 'target'")
            return None
        value = _number(text)
        if value not in (0.0, 1.0):
            report.bad(UNKNOWN_LABEL, csv_path, where, f"unknown label {text!r} in 'target'; expected 0 or 1")
            return None
        name = BINARY_CLASSES[int(value)]
        return (_clean(rec["diagnosis"]) if has_dx else None) or name, name

    rows = _table_rows(frame, csv_path, "isic2020", "image_name", label, _lookup_in(images, csv_path.parent),
                       report)
    return rows, (ISIC2020_DIAGNOSES if task == "multiclass" else BINARY_CLASSES)


def _read_csv_format(source: Path, task: str, report: DataReport, image_column: str,
                     label_column: str) -> tuple[list[dict], list[str]]:
    if source.is_dir():
        csvs = sorted(source.glob("*.csv"))
        if len(csvs) != 1:
            raise DataError(source, None, f"format 'csv' needs one CSV file in the folder, found "
                            f"{[p.name for p in csvs]}; pass the CSV file itself")
        source = csvs[0]
    frame = _read_csv(source, required=[image_column, label_column])
    base = source.parent

    values = [v for v in (_clean(x) for x in frame[label_column]) if v is not None]
    if task == "multiclass":
        class_names = _sorted_labels(set(values))
    else:
        class_names = BINARY_CLASSES
    # 0/1 labels (Fitzpatrick17k-style exports, ISIC targets) mean melanoma = 1; text labels are diagnoses.
    numeric = bool(values) and all(_number(v) in (0.0, 1.0) or v.lower() in ("true", "false") for v in values)
    id_col = _find_column(frame.columns, ID_ALIASES, exclude=(label_column,))
    dx_col = _find_column(frame.columns, DX_ALIASES, exclude=(label_column, image_column))

    def label(rec: dict, where: str) -> tuple[str, str] | None:
        text = _clean(rec[label_column])
        if text is None:
            report.bad(MISSING_LABEL, source, where, f"missing label: empty {label_column!r}")
            return None
        if task == "multiclass":
            name = text
        elif numeric:
            name = BINARY_CLASSES[1 if text.lower() == "true" or _number(text) == 1.0 else 0]
        else:
            name = _task_label(text, task)
        dx = (_clean(rec[dx_col]) if dx_col else None) or text
        return dx, name

    def image(rec: dict, image_id: str) -> tuple[Path | None, str]:
        text = _clean(rec[image_column])
        if text is None:
            return None, f"empty {image_column!r}"
        path = Path(text).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file() and not path.suffix:  # ids without extension (e.g. Fitzpatrick17k's md5hash)
            path = next((path.with_suffix(s) for s in (".jpg", ".jpeg", ".png") if path.with_suffix(s).is_file()), path)
        return (path.resolve() if path.is_file() else None), f"image file not found: {path}"

    def image_id(rec: dict) -> str | None:
        return _clean(rec[id_col]) if id_col else _clean(rec[image_column])

    rows = _table_rows(frame, source, "csv", image_id, label, image, report)
    return rows, class_names


def _read_imagefolder(source: Path, task: str, report: DataReport) -> tuple[list[dict], list[str]]:
    if not source.is_dir():
        raise DataError(source, None, "format 'imagefolder' needs a folder of class sub-folders")
    class_dirs = _class_dirs(source)
    split_names = {"train", "training", "test", "val", "valid", "validation"}
    if class_dirs and {d.name.lower() for d in class_dirs} <= split_names and any(_class_dirs(d) for d in class_dirs):
        raise DataError(source, None, f"the sub-folders {[d.name for d in class_dirs]} look like splits, not "
                        "classes; point source at one split's folder (root/<class>/*.jpg)")
    found = [(d.name, path) for d in class_dirs for path in _images_under(d)]
    if not found:
        raise DataError(source, None, "no images found: expected root/<class>/*.jpg (or .png, ...)")
    folder_classes = _sorted_labels({name for name, _ in found})
    seen: set[str] = set()
    rows = []
    for folder, path in found:
        report.rows_read += 1
        image_id = path.relative_to(source).with_suffix("").as_posix()
        if image_id in seen:
            report.bad(DUPLICATE_ID, path, image_id, f"duplicate image id {image_id!r} (same name, other suffix)")
            continue
        seen.add(image_id)
        rows.append(_row(image_id, path, _task_label(folder, task), folder, {}, "imagefolder", None))
    return rows, (folder_classes if task == "multiclass" else BINARY_CLASSES)


# ----------------------------------------------------------------------------------------------- rows


def _table_rows(
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
        "age": _find_column(frame.columns, AGE_ALIASES),
        "sex": _find_column(frame.columns, SEX_ALIASES),
        "site": _find_column(frame.columns, SITE_ALIASES),
        "fitzpatrick": _find_column(frame.columns, FITZPATRICK_ALIASES),
        "patient_id": _find_column(frame.columns, PATIENT_ALIASES),
        "lesion_id": _find_column(frame.columns, LESION_ALIASES),
    }
    unparsed: Counter = Counter()
    seen: dict[str, int] = {}
    rows = []
    for number, rec in enumerate(frame.to_dict("records"), start=1):
        report.rows_read += 1
        image_id = id_column(rec) if callable(id_column) else _clean(rec[id_column])
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
        rows.append(_row(image_id, path, labelled[1], labelled[0], meta, fmt, number, unparsed))
    if unparsed:
        notes = report.notes.setdefault("unparsed_metadata", {})
        for key, count in unparsed.items():
            notes[key] = notes.get(key, 0) + count
    return rows


def _row(image_id: str, path: Path, label: str, dx: str, meta: dict, fmt: str, source_row: int | None,
         unparsed: Counter | None = None) -> dict:
    unparsed = unparsed if unparsed is not None else Counter()
    lesion_id = _clean(meta.get("lesion_id")) or image_id
    return {
        "id": image_id,
        "image_path": str(path),
        "label": label,
        "dx": dx,
        "lesion_id": lesion_id,
        "patient_id": _clean(meta.get("patient_id")) or lesion_id,
        "age": _parse_age(meta.get("age"), unparsed),
        "sex": _parse_sex(meta.get("sex"), unparsed),
        "site": _clean(meta.get("site")),
        "fitzpatrick": _parse_fitzpatrick(meta.get("fitzpatrick"), unparsed),
        "source": fmt,
        "source_row": source_row,
    }


def _vocabulary_label(raw: Any, vocabulary: Sequence[str], column: str, report: DataReport, file: Path,
                      where: str) -> str | None:
    text = _clean(raw)
    if text is None:
        report.bad(MISSING_LABEL, file, where, f"missing label: empty {column!r}")
        return None
    canonical = {v.lower(): v for v in vocabulary}.get(text.lower())
    if canonical is None:
        report.bad(UNKNOWN_LABEL, file, where,
                   f"unknown label {text!r} in {column!r}; expected one of {list(vocabulary)}")
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


def _lookup_in(images: dict[str, Path], root: Path) -> Callable[[dict, str], tuple[Path | None, str]]:
    def lookup(rec: dict, image_id: str) -> tuple[Path | None, str]:
        return images.get(image_id), f"image file not found: no {image_id}.jpg (or .png, ...) under {root}"

    return lookup


def _image_index(root: Path, prefer: str | None = None) -> dict[str, Path]:
    """Map image file stem -> path under `root` (one recursive walk); `prefer` sub-folder wins ties."""
    index: dict[str, Path] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        in_preferred = prefer is not None and prefer in Path(folder).relative_to(root).parts
        for name in sorted(files):
            path = Path(folder, name)
            if path.suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                if path.stem not in index or in_preferred:
                    index[path.stem] = path
    return index


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(folder: Path) -> list[Path]:
    found = []
    for sub, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(sub, f) for f in sorted(files)
                  if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith(".")]
    return found


# ----------------------------------------------------------------------------------------------- CSV cells


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """Every cell as a string ("" when empty), so parsing and its errors stay ours, not pandas'."""
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
        raise DataError(path, None, f"missing required column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(repr(c) for c in missing)}; columns found: {list(frame.columns)}")
    return frame


def _find_column(columns: Iterable[str], aliases: Sequence[str], exclude: Sequence[str] = ()) -> str | None:
    by_lower = {c.lower(): c for c in columns if c not in exclude}
    return next((by_lower[a] for a in aliases if a in by_lower), None)


def _clean(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return None if text.lower() in _MISSING_STRINGS else text


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _parse_age(value: Any, unparsed: Counter) -> float | None:
    text = _clean(value)
    if text is None or text.lower() == "unknown":
        return None
    age = _number(text)
    if age is None or not 0 <= age <= 130:
        unparsed["age"] += 1
        return None
    return age


def _parse_sex(value: Any, unparsed: Counter) -> str | None:
    text = _clean(value)
    if text is None or text.lower() in ("unknown", "u", "other"):
        return None
    sex = {"male": "male", "m": "male", "female": "female", "f": "female"}.get(text.lower())
    if sex is None:
        unparsed["sex"] += 1
    return sex


def _parse_fitzpatrick(value: Any, unparsed: Counter) -> int | None:
    text = _clean(value)
    if text is None:
        return None
    text = text.lower().removeprefix("type").strip()
    number = _ROMAN.get(text, _number(text))
    if number in (-1, 0):  # Fitzpatrick17k writes -1 for "not rated"
        return None
    if number is None or number != int(number) or not 1 <= number <= 6:
        unparsed["fitzpatrick"] += 1
        return None
    return int(number)


def _sorted_labels(labels: set[str]) -> list[str]:
    if all(_number(v) is not None for v in labels):
        return sorted(labels, key=lambda v: float(v))
    return sorted(labels)


# ----------------------------------------------------------------------------------------------- images


class ImageError(DataError):
    """An image that cannot be used; `reason` is the DataReport key it is counted under."""

    def __init__(self, path: Any, problem: str, reason: str):
        super().__init__(path, None, problem)
        self.reason = reason


def to_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image fully into 8-bit RGB, upright as viewers show it (EXIF orientation applied).

    CMYK, 16-bit (I;16, I), float, palette, 1-bit and grayscale are converted; transparency is composited on
    white. A missing, zero-byte, truncated or unreadable file raises `ImageError` (a `DataError`).
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError(path, "zero-byte image file", EMPTY_IMAGE)
    except FileNotFoundError:
        raise ImageError(path, "image file not found", MISSING_IMAGE) from None
    except OSError as err:
        raise ImageError(path, f"cannot read image file: {err}", UNREADABLE_IMAGE) from None
    try:
        with Image.open(path) as img:
            img.load()  # decode everything now: truncation shows up here, not in a training step
            return _convert_rgb(ImageOps.exif_transpose(img))
    except UnidentifiedImageError:
        raise ImageError(path, "not a readable image (unknown format or corrupt header)", UNREADABLE_IMAGE) from None
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as err:
        truncated = isinstance(err, EOFError) or "truncated" in str(err).lower()
        if truncated:
            raise ImageError(path, f"truncated image file ({err})", TRUNCATED_IMAGE) from None
        raise ImageError(path, f"cannot decode image: {err}", UNREADABLE_IMAGE) from None


def _convert_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode.startswith("I") or mode == "F":
        gray = _to_uint8(np.asarray(img), mode)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=2))
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info
    if has_alpha:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")  # CMYK (incl. Adobe-inverted JPEGs), L, 1, P, YCbCr, HSV


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale a high-bit-depth grayscale array to 0-255, by its bit depth where that is known."""
    arr = arr.astype(np.float64)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and hi <= 65535):
        scaled = arr / 257.0  # 16-bit full range -> 8-bit full range; keeps absolute intensities
    elif mode == "F" and lo >= 0 and hi <= 1:
        scaled = arr * 255.0
    else:
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _downsize(img: Image.Image, max_side: int | None) -> Image.Image:
    if max_side is None or max(img.size) <= max_side:
        return img  # never upsample
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _plain_file_bytes(path: str) -> bytes | None:
    """The file's own bytes when storing them loses nothing: an upright 8-bit RGB JPEG or PNG."""
    with Image.open(path) as img:
        upright = img.getexif().get(0x0112, 1) == 1
        if img.format in ("JPEG", "PNG") and img.mode == "RGB" and upright and "transparency" not in img.info:
            return Path(path).read_bytes()
    return None


def _encode(img: Image.Image, path: str, resized: bool) -> dict:
    if not resized:
        raw = _plain_file_bytes(path)
        if raw is not None:
            return {"bytes": raw, "path": None}
    buffer = BytesIO()
    img.save(buffer, format="PNG", compress_level=1)  # lossless; level 1 because this is a cache, not an archive
    return {"bytes": buffer.getvalue(), "path": None}


def with_images(
    dataset: datasets.Dataset,
    report: DataReport,
    max_side: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
) -> datasets.Dataset:
    """Decode every `image_path` with `to_rgb` into an `image` column (datasets.Image).

    max_side: downsize so the longer side is at most this (aspect kept, never upsampled).
    cache_dir: save the result under cache_dir/<key of the rows, their files and max_side> and reuse it;
    the bad rows found are stored with it and replayed into `report`, so counts (or the error) are the same.
    Bad images raise `DataError` naming the image file and its `source_row` (the dataset's own row when there is no
    such column), or with report.skip_bad_rows are dropped and counted.
    """
    if "image_path" not in dataset.column_names:
        raise ValueError(f"dataset has no 'image_path' column; columns: {dataset.column_names}")
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be a positive integer or None, got {max_side}")
    if "image" in dataset.column_names:
        dataset = dataset.remove_columns("image")
    key = _cache_key(dataset, max_side)
    target = Path(cache_dir) / key if cache_dir is not None else None
    if target is not None and (target / _BAD_ROWS_JSON).is_file():
        for entry in json.loads((target / _BAD_ROWS_JSON).read_text(encoding="utf-8")):
            report.bad(**entry)  # raises the original DataError again unless skipping
        return datasets.load_from_disk(str(target))

    bad_rows: list[dict] = []

    def decode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        keep, images = [], []
        ids = batch["id"] if "id" in batch else [None] * len(indices)
        rows = batch["source_row"] if "source_row" in batch else [i + 1 for i in indices]
        for j, (path, image_id, source_row) in enumerate(zip(batch["image_path"], ids, rows)):
            try:
                img = to_rgb(path)
                small = _downsize(img, max_side)
                images.append(_encode(small, path, resized=small is not img))
                keep.append(j)
            except ImageError as err:
                row = source_row  # None for an image folder, whose image file is the row
                if source_row is not None and image_id is not None:
                    row = f"{source_row} (id {image_id})"
                entry = {"reason": err.reason, "file": path, "row": row,
                         "problem": err.problem}
                report.bad(**entry)
                bad_rows.append(entry)
        out = {name: [values[j] for j in keep] for name, values in batch.items()}
        out["image"] = images
        return out

    result = dataset.map(
        decode,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        remove_columns=dataset.column_names,  # rows may be dropped, so every column is returned anew
        features=datasets.Features({**dataset.features, "image": datasets.Image()}),
        load_from_cache_file=False,  # the function must run so that bad rows are reported
        new_fingerprint=key,
        desc="Decoding images",
    )
    if len(result) == 0:
        reasons = dict(Counter(entry["reason"] for entry in bad_rows))
        raise DataError(Path(bad_rows[0]["file"]).parent, None,
                        f"no usable images: all {len(dataset)} rows were bad {reasons}")
    if target is not None:
        result = save_dataset_cache(result, target, _BAD_ROWS_JSON, bad_rows)  # memory-mapped: images need not stay in RAM
    return result


def _cache_key(dataset: datasets.Dataset, max_side: int | None) -> str:
    """Changes with the rows (fingerprint), with any image file's size or mtime, and with max_side."""
    digest = hashlib.sha256(f"{_CACHE_VERSION}|{dataset._fingerprint}|{max_side}".encode())
    for path in dataset.with_format(None)["image_path"]:
        try:
            stat = os.stat(path)
            digest.update(f"|{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        except OSError:
            digest.update(f"|{path}|missing".encode())
    return f"lesions-{digest.hexdigest()[:20]}-side{max_side or 'full'}"


SUBGROUP_SOURCE_COLUMNS = ("lesion_id", "age", "sex", "site", "fitzpatrick")


def subgroup_frame(dataset, columns: Sequence[str]) -> pd.DataFrame:
    """`lesion_id` + the requested subgroup columns (`age_band` derived from `age`) for predictions.csv."""
    from hf_medai.evaluation.fairness import age_band

    frame = pd.DataFrame({c: dataset[c] for c in SUBGROUP_SOURCE_COLUMNS if c in dataset.column_names})
    if "age" in frame:
        frame["age_band"] = age_band(frame["age"])
    return frame[[c for c in ["lesion_id", *columns] if c in frame]]
