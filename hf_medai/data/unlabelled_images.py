"""Images without labels, for self-supervised pre-training: the images of any lesion format, or a plain folder.

    dataset, report, source, fmt = load_pretraining_images(data_dir)   # None: the synthetic unlabelled pool
    splits = heldout_split(dataset, val_fraction=0.05, seed=0)         # train / validation, by patient

Columns: `id`, `image_path`, `group` (the patient for the lesion formats, else the image itself: a patient's images
are never on both sides of the held-out split), `source`, and the decoded `image` (decoded once and cached, as the
lesion recipes do: hf_medai.data.images.with_images). Labels are never read from a plain folder; a lesion table's rows
are read by its own loader (`task="multiclass"`, so every labelled row counts), and its labels dropped.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import datasets
import numpy as np

from hf_medai.data.images import images_under, with_images
from hf_medai.data.lesion_formats import detect_format
from hf_medai.data.lesions import load_lesions
from hf_medai.data.report import DataError, DataReport
from hf_medai.paths import cache_root

FOLDER = "folder"  # every image under a folder, at any depth (class sub-folders, if any, are ignored)
UNLABELLED_FORMATS = ("auto", FOLDER, "imagefolder", "ham10000", "isic2019", "isic2020", "csv")
FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "image_path": datasets.Value("string"),
        "group": datasets.Value("string"),
        "source": datasets.Value("string"),
    }
)


def resolve_format(source: Path, data_format: str = "auto") -> str:
    """The format to read `source` in: a lesion table format when one is there, else a plain folder of images."""
    if data_format not in UNLABELLED_FORMATS:
        raise ValueError(f"data_format must be one of {UNLABELLED_FORMATS}, got {data_format!r}")
    if data_format == "imagefolder":
        return FOLDER  # the same images; its class sub-folders are labels, which pre-training ignores
    if data_format != "auto":
        return data_format
    try:
        fmt = detect_format(source)
    except DataError:
        if source.is_dir():
            return FOLDER  # no table and no class sub-folders: a plain folder of images
        raise
    return FOLDER if fmt == "imagefolder" else fmt


def load_unlabelled_images(
    source: str | os.PathLike, data_format: str = "auto", skip_bad_rows: bool = False, max_side: int | None = 512
) -> tuple[datasets.Dataset, DataReport, str]:
    """(dataset with decoded `image`s, report, the format read). Bad images and rows: `DataError`, or skipped and
    counted with `skip_bad_rows`."""
    source = Path(source).expanduser().resolve()
    if not source.exists():
        raise DataError(source, None, "no such file or directory")
    fmt = resolve_format(source, data_format)
    if fmt == FOLDER:
        if not source.is_dir():
            raise DataError(source, None, "data_format 'folder' needs a folder of images")
        paths = images_under(source)
        if not paths:
            raise DataError(source, None, "no images (.jpg, .png, ...) under this folder")
        ids = [p.relative_to(source).as_posix() for p in paths]
        rows = {"id": ids, "image_path": [str(p) for p in paths], "group": ids, "source": [FOLDER] * len(ids)}
        report = DataReport(skip_bad_rows=skip_bad_rows, rows_read=len(ids))
        dataset = datasets.Dataset.from_dict(rows, features=FEATURES)
    else:
        table, _, report = load_lesions(source, fmt, task="multiclass", skip_bad_rows=skip_bad_rows)
        table = table.rename_column("patient_id", "group")
        dataset = table.select_columns(["id", "image_path", "group", "source", "source_row"])
    report.notes["format"] = fmt
    dataset = with_images(dataset, report, max_side=max_side, cache_dir=cache_root() / "images")
    return dataset, report, fmt


def unlabelled_pool(n: int = 20000, seed: int = 0) -> Path:
    """The synthetic unlabelled lesion pool (`hf_medai.data.synthetic.lesion_pool`), written once under the cache."""
    from hf_medai.data.synthetic.lesion_pool import POOL_VERSION, is_complete, write_unlabelled_pool

    # the version in the name: a pool cached by an older generator is never reused
    root = cache_root() / f"synthetic-lesion-pool-v{POOL_VERSION}-n{n}-seed{seed}"
    if not is_complete(root):
        write_unlabelled_pool(root, n=n, seed=seed)
    return root


def load_pretraining_images(
    data_dir: str | os.PathLike | None,
    data_format: str = "auto",
    skip_bad_rows: bool = False,
    max_side: int | None = 512,
    synthetic_n: int = 20000,
):
    """What the pre-training recipe loads: `data_dir`, or (None) the synthetic unlabelled pool, written once.

    Returns (dataset with decoded images, report, the source path, the format read)."""
    source = Path(data_dir) if data_dir is not None else unlabelled_pool(synthetic_n)
    dataset, report, fmt = load_unlabelled_images(source, data_format, skip_bad_rows, max_side)
    return dataset, report, source, fmt


def heldout_split(dataset: datasets.Dataset, val_fraction: float, seed: int = 0) -> datasets.DatasetDict:
    """Train / validation, by `group` (a patient's images all on one side): `val_fraction` of the groups, drawn
    with `seed`, at least one."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    groups = np.asarray(dataset.with_format(None)["group"], dtype=object)
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise DataError("data", None, f"{len(unique)} patient(s)/image(s): too few to hold any out for validation")
    order = np.random.default_rng(seed).permutation(len(unique))
    held = {unique[i] for i in order[: max(1, math.ceil(val_fraction * len(unique)))]}
    is_val = np.array([g in held for g in groups])
    return datasets.DatasetDict(
        {"train": dataset.select(np.flatnonzero(~is_val)), "validation": dataset.select(np.flatnonzero(is_val))}
    )


def split_facts(splits: datasets.DatasetDict) -> dict:
    """Images and groups per split, and how many groups are in both (0 by construction)."""
    groups = {name: set(split.with_format(None)["group"]) for name, split in splits.items()}
    return {
        **{name: {"images": len(split), "groups": len(groups[name])} for name, split in splits.items()},
        "groups_in_both": len(groups["train"] & groups["validation"]),
    }
