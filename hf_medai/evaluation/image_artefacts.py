"""The image artefact audit: each artefact of hf_medai.data.artefacts drawn on every test image, the model scored
with and without it, one `robustness.paired_shift` row per artefact, and a PNG grid of examples before and after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from hf_medai.data.artefacts import ARTEFACTS, LABELS, add_artefact
from hf_medai.evaluation.robustness import audit_section, paired_shift
from hf_medai.io import atomic_path

Scorer = Callable[[Sequence[np.ndarray]], np.ndarray]  # RGB uint8 images -> (n, K) class probabilities
GRID_FILE = "robustness_artefacts.png"


def artefact_audit(
    score: Scorer,
    images: Sequence[np.ndarray],
    y: Sequence[int],
    class_names: Sequence[str],
    positive_class: str | None = None,
    threshold: float | None = None,
    artefacts: Sequence[str] = tuple(ARTEFACTS),
    seed: int = 0,
    n_bootstrap: int = 1000,
    grid: str | None = GRID_FILE,
    known: str = "",
) -> dict[str, Any]:
    """The metrics.json "robustness" section of the artefact audit; `known`: what is known of such models' shortcuts
    (the card's words for the modality).

    `score` is called on the unchanged images once and on each artefact's images once (batched inside). Binary
    models (`positive_class`): the positive class's probability at `threshold`; otherwise the true class's
    probability and the predicted class."""
    images = [np.asarray(im) for im in images]
    y = np.asarray(y)
    positive_index = list(class_names).index(positive_class) if positive_class else None
    before = score(images)
    rows = {
        name: paired_shift(
            before, score(add_artefact(images, name, seed)), y, threshold, positive_index, n_bootstrap, [seed, k]
        )
        for k, name in enumerate(artefacts)
    }
    what = (
        f"Each artefact is drawn on all {len(images)} test images (hf_medai.data.artefacts, seed {seed}); the "
        "model sees the changed image through its own image processor. A model that reads what the image shows "
        "should barely move." + (f" {known}" if known else "")
    )
    score_name = f"{positive_class} probability" if positive_class else "the true class's probability"
    return audit_section(
        "Image artefacts",
        what,
        rows,
        {name: LABELS[name] for name in artefacts},
        score_name,
        signed=True,
        n=len(images),
        seed=seed,
        threshold=threshold if positive_class else None,
        positive_class=positive_class,
        **({"grid": grid} if grid else {}),
    )


def artefact_grid(
    images: Sequence[np.ndarray],
    path: str | Path,
    artefacts: Sequence[str] = tuple(ARTEFACTS),
    seed: int = 0,
    indices: Sequence[int] | None = None,
    tile: int = 112,
) -> Path:
    """A PNG: one row per example image (`indices`, default the first four), the unchanged image then each artefact
    as the audit drew it (same seeds); a header names the columns. Written atomically."""
    indices = list(range(min(4, len(images)))) if indices is None else list(indices)
    columns = ["none", *artefacts]
    header = 14
    canvas = Image.new("RGB", (tile * len(columns), header + tile * len(indices)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(columns):
        draw.text((c * tile + 3, 2), name, fill="black")
    for r, i in enumerate(indices):
        im = np.asarray(images[i])
        versions = [im] + [add_artefact([im], name, seed, ids=[i])[0] for name in artefacts]
        for c, v in enumerate(versions):
            pil = Image.fromarray(v)
            pil.thumbnail((tile, tile))
            canvas.paste(pil, (c * tile + (tile - pil.width) // 2, header + r * tile + (tile - pil.height) // 2))
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
