"""Images of any modality as an image folder (<root>/<class>/*.png), and a small real sample to try it on offline.

`load_image_folder` reads the folder into a `datasets.Dataset` (decoded once, cached, like the lesion images);
`image_folder_splits` splits it by image, stratified by label (an image folder names no patients); and
`write_scikit_image_sample` writes the offline default of recipes/image_classification.py: tiles of two real
images that scikit-image ships inside its wheel (a retinal fundus photograph and an immunohistochemistry slide),
one class per source image. Only those image files are read; skimage is never imported.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from hf_medai.data.images import IMAGE_SUFFIXES, with_images
from hf_medai.data.report import DataError, DataReport
from hf_medai.errors import ConfigError
from hf_medai.paths import cache_root

# class name -> (file in skimage/data, how far to shrink it before tiling, the part of it to tile: left, top,
# right, bottom as fractions; the fundus photograph's dark corners are left out)
SCIKIT_IMAGE_SOURCES = {
    "fundus_photograph": ("retina.jpg", 4, (0.2, 0.2, 0.8, 0.8)),
    "ihc_slide": ("ihc.png", 1.5, (0.0, 0.0, 1.0, 1.0)),
}
SAMPLE_DESCRIPTION = (
    "tiles of two real images shipped with scikit-image, a retinal fundus photograph and an "
    "immunohistochemistry slide, one class per source image"
)
SAMPLE_MODALITY = "retinal fundus photographs and immunohistochemistry slides"
TOY_TASK = (
    "Every tile of a class comes from the same single image, and tiles of both images are in every split: "
    "telling the two apart is trivial, and the test numbers say nothing about patients."
)


def scikit_image_data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the offline sample needs scikit-image's bundled images: pip install 'hf-medai[images]' "
            "(or scikit-image), or pass --data_dir with an image folder of your own"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def write_scikit_image_sample(
    root: str | os.PathLike, tiles_per_class: int = 200, tile: int = 64, seed: int = 0
) -> Path:
    """Write `tiles_per_class` random tiles (tile x tile px PNGs) of each source image into root/<class>/."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    source_dir = scikit_image_data_dir()
    for name, (file, shrink, box) in SCIKIT_IMAGE_SOURCES.items():
        image = Image.open(source_dir / file).convert("RGB")
        image = image.resize((round(image.width / shrink), round(image.height / shrink)), Image.BICUBIC)
        left, top = int(box[0] * image.width), int(box[1] * image.height)
        right, bottom = int(box[2] * image.width) - tile, int(box[3] * image.height) - tile
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(tiles_per_class):
            x, y = int(rng.integers(left, right + 1)), int(rng.integers(top, bottom + 1))
            image.crop((x, y, x + tile, y + tile)).save(root / name / f"{name}_{i:04d}.png")
    return root


def scikit_image_sample(tiles_per_class: int = 200, tile: int = 64) -> Path:
    """The offline sample, written once under the cache root."""
    root = cache_root() / f"scikit-image-tiles-n{tiles_per_class}-px{tile}-seed0"
    if not (root / ".complete").is_file():
        write_scikit_image_sample(root, tiles_per_class, tile)
        (root / ".complete").write_text("")
    return root


def load_image_folder(folder: str | os.PathLike, skip_bad_rows: bool = False, max_side: int | None = 512):
    """<folder>/<class>/<image> -> (dataset with id, label, image_path and the decoded `image`, class names,
    DataReport). Classes are the sub-folder names, sorted; an image that does not decode is an error naming it, or
    (skip_bad_rows) a counted skip."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--data_dir {folder}: no such folder (expected <class>/<image> sub-folders)")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(folder, None, f"an image folder needs at least two class sub-folders, found {len(class_dirs)}")
    rows = {"id": [], "label": [], "image_path": []}
    for label, class_dir in enumerate(class_dirs):
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                rows["id"].append(path.relative_to(folder).as_posix())
                rows["label"].append(label)
                rows["image_path"].append(str(path))
    class_names = [p.name for p in class_dirs]
    report = DataReport(skip_bad_rows=skip_bad_rows, rows_read=len(rows["id"]))
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "label": datasets.ClassLabel(names=class_names),
            "image_path": datasets.Value("string"),
        }
    )
    dataset = datasets.Dataset.from_dict(rows, features=features)
    dataset = with_images(dataset, report, max_side=max_side, cache_dir=cache_root() / "images")
    return dataset, class_names, report


def image_folder_splits(
    dataset: datasets.Dataset, val_fraction: float, test_fraction: float, seed: int
) -> datasets.DatasetDict:
    """Train / validation / test by image, stratified by label."""
    from hf_medai.data.splits import group_split

    return group_split(
        dataset, "id", fractions=(1 - val_fraction - test_fraction, val_fraction, test_fraction), seed=seed
    )
