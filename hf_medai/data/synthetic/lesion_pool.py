"""An UNLABELLED pool of synthetic dermoscopy images: the offline default of recipes/image_pretraining.py.

The same renderer, class mix and image size as the labelled HAM10000-format sample (`lesions.write_ham10000`), so
an encoder pre-trained on the pool sees what the lesion classifier is later fine-tuned on, but drawn from a random
stream of its own (`np.random.default_rng([seed, POOL_STREAM])`, never the labelled sample's `default_rng(seed)`):
no lesion or image of the labelled sample, whose test split scores the fine-tuned classifier, is in the pool.

The pool is a plain folder of JPEGs (no table, no labels, no patients), plus SYNTHETIC_DATA.md, as any folder of
unlabelled images would be.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from hf_medai.data.synthetic.lesion_rendering import CLASSES, render
from hf_medai.data.synthetic.lesions import CHUNK, MIN_LESIONS_PER_CLASS, SYNTHETIC_MARKER, _plan_images, _plan_lesions
from hf_medai.io import write_text

POOL_STREAM = 7  # the pool's draws: np.random.default_rng([seed, POOL_STREAM]); the labelled sample's metadata uses 3
# Bumped whenever a seed's pool changes, so that a pool cached by an older generator is never reused.
POOL_VERSION = 1
COMPLETE = ".complete"  # written last: a folder without it was interrupted and is written again

POOL_CARD = """# Synthetic unlabelled lesion-image pool (hf-medai)

{n} generated dermoscopy-like images (seed {seed}, {width}x{height} px), written by `hf-medai data lesion_pool`.
No patient data, no labels. Drawn by the renderer of the synthetic HAM10000-format sample (same class mix and
appearance) from a random stream of its own, so none of these images is in that sample. For testing pipelines
only: an encoder pre-trained on it has learned synthetic images, not real skin.
"""


def write_unlabelled_pool(
    out_dir: str | os.PathLike, n: int = 20000, seed: int = 0, image_size: tuple[int, int] = (128, 96)
) -> Path:
    """Write n unlabelled synthetic lesion images as out_dir/lesion_<i>.jpg; returns out_dir.

    image_size is (width, height), as `write_ham10000` (4:3 like the real 600x450 images). Deterministic for a seed.
    """
    smallest = len(CLASSES) * MIN_LESIONS_PER_CLASS
    if n < smallest:
        raise ValueError(f"n must be at least {smallest} (the class mix needs 3 lesions per class), got {n}")
    width, height = image_size
    if width < 16 or height < 16:
        raise ValueError(f"image_size must be at least 16x16, got {image_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / COMPLETE).unlink(missing_ok=True)
    rng = np.random.default_rng([seed, POOL_STREAM])
    lesions = _plan_lesions(n, rng)
    images = _plan_images(lesions, rng)
    order = rng.permutation(n)  # file names in random order: neighbouring files are not views of one lesion
    for start in range(0, n, CHUNK):
        pixels = render(lesions, images, np.arange(start, min(start + CHUNK, n)), height, width, rng)
        for offset, array in enumerate(pixels):
            Image.fromarray(array).save(out_dir / f"lesion_{order[start + offset]:06d}.jpg", quality=92)
    write_text(out_dir / SYNTHETIC_MARKER, POOL_CARD.format(n=n, seed=seed, width=width, height=height))
    write_text(out_dir / COMPLETE, "")
    return out_dir


def is_complete(folder: str | os.PathLike) -> bool:
    return (Path(folder) / COMPLETE).is_file()
