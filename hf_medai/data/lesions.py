"""Skin-lesion images (HAM10000, ISIC 2019, ISIC 2020, an image folder, any CSV) as one `datasets.Dataset`.

Every format gives the same columns, so recipes, splits and subgroup metrics never care where data came from:

    id           str, unique image id            image_path  str, absolute
    label        ClassLabel (class_names)        dx          str, the original diagnosis
    lesion_id    str (falls back to id)          patient_id  str (falls back to lesion_id)
    age          float | None                    sex         "male" | "female" | None
    site         str | None                      fitzpatrick int 1-6 | None
    source       the format name                 source_row  int | None, the example's data row in the metadata CSV
                                                             (1-based, header not counted); None for an image folder

`load_lesions` reads the table and checks that every image file exists; `hf_medai.data.images.with_images`
decodes them (the slow part, cached on disk when asked), naming a bad image's `source_row` so the row stays right
after skips and splits. Bad rows raise `DataError` naming file, row and problem, or with `skip_bad_rows=True` are
dropped and counted in the `DataReport` under one of these reasons:

    missing_id, duplicate_id, missing_label, unknown_label, ambiguous_label, missing_image   (load_lesions)
    missing_image, empty_image, truncated_image, unreadable_image                            (with_images)

A missing required column is always an error: no row can be read without it.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import datasets
import pandas as pd

from hf_medai.data.images import with_images
from hf_medai.data.lesion_formats import FORMATS, HAM10000_CSV, TASKS, detect_format, read_rows
from hf_medai.data.report import DataError, DataReport
from hf_medai.data.subgroups import age_band


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

    rows, class_names = read_rows(source, fmt, task, report, image_column, label_column)

    if not rows:
        skipped = f" ({report.rows_skipped} skipped: {dict(report.skipped)})" if report.rows_skipped else ""
        raise DataError(source, None, f"no usable rows: {report.rows_read} read{skipped}")
    if task == "binary" and not any(r["label"] == "melanoma" for r in rows):
        warnings.warn(
            f"{source}: binary task but no row is a melanoma; check the labels or use task='multiclass'", stacklevel=2
        )
    index = {name: i for i, name in enumerate(class_names)}
    columns = {name: [r[name] for r in rows] for name in lesion_features(class_names)}
    columns["label"] = [index[r["label"]] for r in rows]
    dataset = datasets.Dataset.from_dict(columns, features=lesion_features(class_names))
    return dataset, list(class_names), report


def load_lesion_images(
    data_dir: str | os.PathLike | None,
    data_format: str = "auto",
    task: str = "binary",
    skip_bad_rows: bool = False,
    max_image_side: int | None = 512,
    synthetic_n: int = 4000,
):
    """What a lesion recipe loads: `data_dir`, or (None) the synthetic HAM10000-format sample, written once.

    Returns (dataset with decoded `image`s, cached under cache_root()/images; class_names; report; the source path).
    """
    from hf_medai.data.synthetic.lesions import SAMPLE_VERSION, write_ham10000
    from hf_medai.paths import cache_root

    source = data_dir
    if source is None:
        # the version in the name: a sample cached by an older generator (other metadata) is never reused
        source = cache_root() / f"synthetic-ham10000-v{SAMPLE_VERSION}-n{synthetic_n}-seed0"
        if not (source / HAM10000_CSV).exists():
            write_ham10000(source, n=synthetic_n, seed=0)
    dataset, class_names, report = load_lesions(source, data_format, task, skip_bad_rows)
    dataset = with_images(dataset, report, max_side=max_image_side, cache_dir=cache_root() / "images")
    return dataset, class_names, report, source


# No patient (or, where the data has no patient ids, no lesion: HAM10000) may straddle two splits.
LESION_GROUP = "patient_id"


def lesion_splits(
    dataset: datasets.Dataset, val_fraction: float, test_fraction: float, seed: int
) -> datasets.DatasetDict:
    """The patient-grouped, label-stratified split every lesion recipe uses (test_fraction 0: no test split).

    One function, so the diffusion recipe's training patients are exactly the lesion recipe's, which the
    augmentation experiment relies on.
    """
    from hf_medai.data.splits import group_split

    return group_split(
        dataset, LESION_GROUP, fractions=(1 - val_fraction - test_fraction, val_fraction, test_fraction), seed=seed
    )


def add_extra_training_images(
    train: datasets.Dataset,
    folder: str | os.PathLike,
    task: str,
    class_names: Sequence[str],
    report: DataReport,
    skip_bad_rows: bool = False,
    max_side: int | None = None,
) -> datasets.Dataset:
    """Append an image folder (<class>/*.png, e.g. generated images) to a TRAINING split, never to a test split.

    Labels are matched to `class_names` by name. The rows get ids "extra/<path>", patient "extra", and
    source "extra:<folder name>"; `report.notes["extra_train_images"]` counts them per class.
    """
    from hf_medai.paths import cache_root

    extra, extra_classes, extra_report = load_lesions(folder, "imagefolder", task, skip_bad_rows)
    unknown = sorted(set(extra_classes) - set(class_names))
    if unknown:
        raise DataError(
            Path(folder), None, f"class folders {unknown} are not classes of the training data {list(class_names)}"
        )
    extra = with_images(extra, extra_report, max_side=max_side, cache_dir=cache_root() / "images")
    index = [list(class_names).index(name) for name in extra_classes]
    tag = Path(folder).name
    extra = extra.map(
        lambda r: {
            "label": index[r["label"]],
            "id": f"extra/{r['id']}",
            "patient_id": "extra",
            "lesion_id": f"extra/{r['id']}",
            "source": f"extra:{tag}",
        },
        features=lesion_features(class_names, with_image=True),
        desc="adding extra training images",
    )
    counts = Counter(class_names[i] for i in extra["label"])
    report.notes["extra_train_images"] = {
        "folder": str(folder),
        "images": len(extra),
        "per_class": dict(counts),
        "report": extra_report.to_dict(),
    }
    return datasets.concatenate_datasets([train, extra.cast(train.features)])


SUBGROUP_SOURCE_COLUMNS = ("lesion_id", "age", "sex", "site", "fitzpatrick")


def subgroup_frame(dataset, columns: Sequence[str]) -> pd.DataFrame:
    """`lesion_id` + the requested subgroup columns (`age_band` derived from `age`) for predictions.csv."""
    frame = pd.DataFrame({c: dataset[c] for c in SUBGROUP_SOURCE_COLUMNS if c in dataset.column_names})
    if "age" in frame:
        frame["age_band"] = age_band(frame["age"])
    return frame[[c for c in ["lesion_id", *columns] if c in frame]]
