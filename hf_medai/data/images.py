"""Images from files as a `datasets.Image` column: decoding to 8-bit RGB, downsizing, and an on-disk cache.

Generic: any loader whose dataset has an `image_path` column (and, optionally, `id` and `source_row` to name a bad
row) gets its images with `with_images`; `image_index` / `class_dirs` / `images_under` walk image folders. What a
particular dataset's rows mean (labels, metadata) stays with its loader (e.g. `hf_medai.data.lesions`).

Bad images raise `ImageError` (a `DataError`), or with `report.skip_bad_rows` are dropped and counted in the
`DataReport` under one of: missing_image, empty_image, truncated_image, unreadable_image.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from io import BytesIO
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hf_medai.data.report import DataError, DataReport
from hf_medai.io import save_dataset_cache

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})

# Reasons an image row is skipped (keys of DataReport.skipped).
MISSING_IMAGE = "missing_image"
EMPTY_IMAGE = "empty_image"
TRUNCATED_IMAGE = "truncated_image"
UNREADABLE_IMAGE = "unreadable_image"

_CACHE_VERSION = "1"
_BAD_ROWS_JSON = "hf_medai_bad_rows.json"


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
                entry = {"reason": err.reason, "file": path, "row": row, "problem": err.problem}
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
        raise DataError(
            Path(bad_rows[0]["file"]).parent, None, f"no usable images: all {len(dataset)} rows were bad {reasons}"
        )
    if target is not None:
        result = save_dataset_cache(
            result, target, _BAD_ROWS_JSON, bad_rows
        )  # memory-mapped: images need not stay in RAM
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
    return f"images-{digest.hexdigest()[:20]}-side{max_side or 'full'}"


# ----------------------------------------------------------------------------------------------- folders


def image_index(root: Path, prefer: str | None = None) -> dict[str, Path]:
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


def class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def images_under(folder: Path) -> list[Path]:
    found = []
    for sub, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            Path(sub, f) for f in sorted(files) if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith(".")
        ]
    return found
