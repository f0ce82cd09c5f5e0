"""Image artefacts of dermoscopy, drawn in a controlled, seeded way: the changes the robustness audit adds to test
images, and the spurious marker the synthetic generator can plant (`hf-medai data lesions --shortcut ink`).

Each artefact is a function (image, rng) -> image on an (H, W, 3) uint8 array; the image is never changed in place.
The same image and seed give the same artefact. Sizes scale with the image, so a 64 px and a 600 px image get the
same artefact, relative to the lesion (which the datasets centre). The known shortcuts of dermoscopy classifiers:

- ink: purple surgical skin marking beside the lesion (Winkler et al., JAMA Dermatology 2019: raised melanoma scores)
- ruler: a scale bar with tick marks along one edge
- hair: dark hair strands across the image
- vignette: the dark circular border of a dermoscope's field of view
- colour_chart: a calibration patch of colour squares in a corner
- jpeg: strong JPEG re-compression (quality 15)
- blur: Gaussian blur (out of focus)
- brightness: a brighter exposure (x1.3)
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Artefact = Callable[[np.ndarray, np.random.Generator], np.ndarray]

INK = (118, 52, 160)  # gentian-violet surgical marker


def _canvas(image: np.ndarray) -> tuple[Image.Image, int, int]:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"artefacts take (H, W, 3) uint8 images, got {image.shape} {image.dtype}")
    pil = Image.fromarray(image)
    return pil, pil.width, pil.height


def ink(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A purple surgical marking: an arc of thick marker strokes around the lesion, on one side, plus a dot or two."""
    pil, w, h = _canvas(image)
    draw = ImageDraw.Draw(pil)
    side = min(w, h)
    width = max(2, round(side * rng.uniform(0.04, 0.06)))
    r = side * rng.uniform(0.38, 0.44)
    start = rng.uniform(0, 360)
    box = [w / 2 - r * w / side, h / 2 - r, w / 2 + r * w / side, h / 2 + r]
    draw.arc(box, start, start + rng.uniform(70, 120), fill=INK, width=width)
    for _ in range(int(rng.integers(1, 3))):
        angle = np.deg2rad(start + rng.uniform(150, 300))
        cx, cy = w / 2 + 1.05 * r * np.cos(angle) * w / side, h / 2 + 1.05 * r * np.sin(angle)
        d = width * rng.uniform(0.6, 1.0)
        draw.ellipse([cx - d, cy - d, cx + d, cy + d], fill=INK)
    return np.asarray(pil)


def ruler(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pale scale bar along the bottom or top edge with dark millimetre ticks (every fifth one longer)."""
    pil, w, h = _canvas(image)
    draw = ImageDraw.Draw(pil)
    bar = max(4, round(h * rng.uniform(0.10, 0.13)))
    top = h - bar if rng.random() < 0.5 else 0
    draw.rectangle([0, top, w, top + bar], fill=(232, 228, 214))
    step = max(2, round(w * rng.uniform(0.035, 0.045)))
    offset = int(rng.integers(0, step))
    edge = top if top == 0 else top + bar
    for i, x in enumerate(range(offset, w, step)):
        length = bar * (0.8 if i % 5 == 0 else 0.45)
        y0, y1 = (edge, edge + length) if top == 0 else (edge - length, edge)
        draw.line([x, y0, x, y1], fill=(30, 30, 30), width=max(1, w // 120))
    return np.asarray(pil)


def hair(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Five to nine dark, gently curved hair strands crossing the image."""
    pil, w, h = _canvas(image)
    draw = ImageDraw.Draw(pil)
    t = np.linspace(0, 1, 24)[:, None]
    for _ in range(int(rng.integers(5, 10))):
        p0, p2 = rng.uniform(0, 1, 2) * (w, h), rng.uniform(0, 1, 2) * (w, h)
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.15, 2) * (w, h)
        points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # a quadratic Bezier curve
        shade = int(rng.integers(15, 55))
        draw.line([tuple(p) for p in points], fill=(shade, shade - 10 if shade > 10 else 0, 5), width=max(1, w // 90))
    return np.asarray(pil)


def vignette(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The dark circular border of a dermoscope: black outside an ellipse reaching 0.68-0.76 of the way to the
    corners, with a soft edge."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2)) / np.sqrt(2)  # 1 at the corners
    radius = rng.uniform(0.68, 0.76)
    mask = np.clip((radius + 0.06 - dist) / 0.06, 0, 1)[..., None]
    return (image.astype(np.float32) * mask).round().astype(np.uint8)


CHART = [(200, 40, 40), (40, 160, 60), (40, 60, 190), (230, 210, 40), (240, 240, 240), (30, 30, 30)]


def colour_chart(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A calibration patch (2 x 3 coloured squares) in one corner."""
    pil, w, h = _canvas(image)
    draw = ImageDraw.Draw(pil)
    cell = max(2, round(min(w, h) * rng.uniform(0.07, 0.09)))
    left = 1 if rng.random() < 0.5 else w - 3 * cell - 1
    top = 1 if rng.random() < 0.5 else h - 2 * cell - 1
    for k, colour in enumerate(CHART):
        x, y = left + (k % 3) * cell, top + (k // 3) * cell
        draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)
    return np.asarray(pil)


def jpeg(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Re-compression at JPEG quality 15 (heavy blocking and colour bleeding)."""
    pil, _, _ = _canvas(image)
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=15)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with a radius of 1.5% of the image's short side (out of focus)."""
    pil, w, h = _canvas(image)
    return np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=max(0.5, 0.015 * min(w, h)))))


def brightness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 30% brighter exposure (clipped at white)."""
    _canvas(image)
    return np.clip(image.astype(np.float32) * 1.3, 0, 255).round().astype(np.uint8)


ARTEFACTS: dict[str, Artefact] = {
    "ink": ink,
    "ruler": ruler,
    "hair": hair,
    "vignette": vignette,
    "colour_chart": colour_chart,
    "jpeg": jpeg,
    "blur": blur,
    "brightness": brightness,
}
LABELS = {  # the subject of the card's verdict sentence ("... raises melanoma probability by ...")
    "ink": "Adding purple ink markings",
    "ruler": "Adding a ruler",
    "hair": "Adding hair strands",
    "vignette": "Adding a dark circular vignette",
    "colour_chart": "Adding a colour-chart patch",
    "jpeg": "JPEG re-compression (quality 15)",
    "blur": "Blurring",
    "brightness": "A 30% brighter exposure",
}


def artefact_rng(seed: int, artefact: str, index: int) -> np.random.Generator:
    """The random stream of one artefact on one image: the same image gets the same drawing in every run."""
    return np.random.default_rng([seed, list(ARTEFACTS).index(artefact), index])


def add_artefact(images: Sequence[np.ndarray], artefact: str, seed: int = 0, ids: Sequence[int] | None = None):
    """`artefact` drawn on each image (seeded per image: `ids`, default its position); new arrays."""
    if artefact not in ARTEFACTS:
        raise ValueError(f"unknown artefact {artefact!r}; known: {', '.join(ARTEFACTS)}")
    fn = ARTEFACTS[artefact]
    return [
        fn(np.asarray(im), artefact_rng(seed, artefact, i if ids is None else ids[i])) for i, im in enumerate(images)
    ]
