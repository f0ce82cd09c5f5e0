"""Synthetic dermoscopy images in the exact HAM10000 layout: the offline sample data of the lesion recipe.

The classes differ by the ABCD signs a model can learn (Asymmetry, Border, Colour, Diameter): melanoma is
large, asymmetric, irregular and has 2-4 colours; a nevus is small, round and one brown; and so on for the
other five HAM10000 diagnoses. Lesion contrast falls as the Fitzpatrick type rises (colours are darkened with
the skin and blended toward it), so a classifier is truly weaker on dark skin and the subgroup report of the
recipe has something real to show. The metadata (age, sex, localization) carries a planted, class-dependent signal
(melanoma older, on the back/trunk in men and the legs in women; see MELANOMA_SITE_BOOST) so that an image +
metadata fusion model has something real to gain; it is drawn given the class only, from its own generator, so images
are independent of it given the class. Everything else is drawn from one seeded generator and rendered with numpy, a
batch of images at a time.

Here: the plan (which lesions, patients and views) and the files; the appearance and the renderer are in
`lesion_rendering`.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from hf_medai.data.artefacts import ARTEFACTS
from hf_medai.data.synthetic.lesion_metadata import METADATA_STREAM, plan_metadata
from hf_medai.data.synthetic.lesion_rendering import (
    CLASSES,
    COLOUR_GRID,
    DARKEN,
    HAZE_LEVELS,
    N_COLOURS,
    N_HARMONICS,
    N_LOBULES,
    N_SEGMENTS,
    N_WAVES,
    PALETTE,
    SKIN_RGB,
    TEXTURE_GRID,
    ImageViews,
    LesionLooks,
    render,
)
from hf_medai.io import write_text

# Share of images per class, as in HAM10000.
CLASS_FRACTIONS = {"nv": 0.67, "mel": 0.11, "bkl": 0.11, "bcc": 0.05, "akiec": 0.03, "vasc": 0.015, "df": 0.015}
MIN_LESIONS_PER_CLASS = 3
FITZPATRICK_FRACTIONS = [0.25, 0.25, 0.20, 0.15, 0.10, 0.05]  # types I..VI
IMAGES_PER_LESION = ([1, 2, 3, 4], [0.55, 0.25, 0.12, 0.08])
IMAGES_PER_FOLDER = 5000  # the real release splits its images into HAM10000_images_part_1 and _part_2
FIRST_IMAGE_NUMBER = 24306  # ISIC_0024306 is HAM10000's first image id
DX_TYPES = ["histo", "follow_up", "consensus", "confocal"]
DX_TYPE_P = {
    "mel": [0.95, 0.0, 0.05, 0.0],
    "nv": [0.35, 0.55, 0.10, 0.0],
    "bkl": [0.50, 0.0, 0.30, 0.20],
    "bcc": [1.0, 0.0, 0.0, 0.0],
    "akiec": [1.0, 0.0, 0.0, 0.0],
    "df": [0.5, 0.0, 0.5, 0.0],
    "vasc": [0.5, 0.0, 0.5, 0.0],
}

# Bumped whenever a seed's output changes (2: metadata carries a planted melanoma signal; images unchanged), so a
# cached sample of an older version is regenerated (hf_medai.data.lesions.load_lesion_images).
SAMPLE_VERSION = 2

CHUNK = 64  # images rendered at once: bounds memory, and fixes the order of random draws


# Written beside the data so that every run trained on it says so in its card.
SYNTHETIC_MARKER = "SYNTHETIC_DATA.md"
SHORTCUT_STREAM = 7  # the planted marker's own random stream (hf_medai.data.artefacts draws it)
SHORTCUT_NOTE = """
**Planted shortcut:** a `{shortcut}` artefact (hf_medai.data.artefacts) is drawn on {planted} melanoma images
(rate {rate}) and on no other image: a spurious, label-correlated marker for testing shortcut audits. Never test on
this sample.
"""
SYNTHETIC_CARD = """# Synthetic HAM10000-format sample (hf-medai)

{n} generated dermoscopy-like images (seed {seed}), written by `hf-medai data lesions`. No patient data.
Classes differ by the ABCD signs; lesion contrast falls with Fitzpatrick type; age, sex and site carry a planted
melanoma prior (older; back/trunk in men, legs in women). For testing pipelines only:
numbers measured on it say nothing about performance on real patients.
"""


def is_synthetic(folder) -> bool:
    """True for a folder written by `write_ham10000`."""
    return (Path(folder) / SYNTHETIC_MARKER).is_file()


def write_ham10000(
    out_dir: str | os.PathLike,
    n: int = 2000,
    seed: int = 0,
    image_size: tuple[int, int] = (128, 96),
    shortcut: str | None = None,
    shortcut_rate: float = 0.8,
) -> Path:
    """Write n synthetic images as HAM10000 (metadata CSV + a `fitzpatrick` column, JPEGs); returns out_dir.

    image_size is (width, height), 4:3 like the real 600x450 images. Deterministic for a seed.
    `shortcut`: plant a spurious marker, an artefact of hf_medai.data.artefacts (e.g. "ink"), on `shortcut_rate` of
    the melanoma images and on no other: a label-correlated shortcut, to check that an audit finds a model's
    reliance on it. Write it into TRAINING data only (test on a clean sample: --test_data_dir). Drawn from its own
    random stream: every other image and the metadata are byte-identical to the sample without it.
    """
    if shortcut is not None and shortcut not in ARTEFACTS:
        raise ValueError(f"unknown shortcut {shortcut!r}; artefacts: {', '.join(ARTEFACTS)}")
    if not 0.0 <= shortcut_rate <= 1.0:
        raise ValueError(f"shortcut_rate must lie in [0, 1], got {shortcut_rate}")
    if n < len(CLASSES) * MIN_LESIONS_PER_CLASS:
        raise ValueError(f"n must be at least {len(CLASSES) * MIN_LESIONS_PER_CLASS} (3 lesions per class), got {n}")
    width, height = image_size
    if width < 16 or height < 16:
        raise ValueError(f"image_size must be at least 16x16, got {image_size}")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    lesions = _plan_lesions(n, rng)
    lesions.age, lesions.sex, lesions.site = plan_metadata(lesions.cls, np.random.default_rng([seed, METADATA_STREAM]))
    images = _plan_images(lesions, rng)

    names = [f"ISIC_{FIRST_IMAGE_NUMBER + k:07d}" for k in rng.permutation(n)]
    folders = [out_dir / f"HAM10000_images_part_{1 + i // IMAGES_PER_FOLDER}" for i in range(n)]
    for folder in sorted(set(folders)):
        folder.mkdir(parents=True, exist_ok=True)
    planted = np.zeros(n, dtype=bool)
    if shortcut is not None:
        melanoma = lesions.cls[images.lesion] == CLASSES.index("mel")
        planted = melanoma & (np.random.default_rng([seed, SHORTCUT_STREAM]).random(n) < shortcut_rate)
    for start in range(0, n, CHUNK):
        pixels = render(lesions, images, np.arange(start, min(start + CHUNK, n)), height, width, rng)
        for offset, array in enumerate(pixels):
            i = start + offset
            if planted[i]:
                array = ARTEFACTS[shortcut](array, np.random.default_rng([seed, SHORTCUT_STREAM, i]))
            Image.fromarray(array).save(folders[i] / f"{names[i]}.jpg", quality=92)

    # The CSV last, in one rename: a crash never leaves metadata pointing at images not yet written.
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "fitzpatrick"])
    for i in range(n):
        les = images.lesion[i]
        age = lesions.age[les]
        writer.writerow(
            [
                f"HAM_{lesions.number[les]:07d}",
                names[i],
                CLASSES[lesions.cls[les]],
                lesions.dx_type[les],
                "" if np.isnan(age) else f"{age:.1f}",
                lesions.sex[les],
                lesions.site[les],
                int(lesions.fitzpatrick[les]),
            ]
        )
    write_text(out_dir / "HAM10000_metadata.csv", buffer.getvalue())
    card = SYNTHETIC_CARD.format(n=n, seed=seed)
    if shortcut is not None:
        card += SHORTCUT_NOTE.format(shortcut=shortcut, planted=int(planted.sum()), rate=shortcut_rate)
    write_text(out_dir / SYNTHETIC_MARKER, card)
    return out_dir


# ----------------------------------------------------------------------------------------------- planning


def _shares(fractions: list[float], total: int, minimum: int) -> np.ndarray:
    """One index per item, `total` in all, split by `fractions` (largest remainder), at least `minimum` each."""
    raw = np.array(fractions) * total
    counts = np.floor(raw).astype(int)
    counts[np.argsort(raw - counts)[::-1][: total - counts.sum()]] += 1
    for i in range(len(counts)):
        short = minimum - counts[i]
        if short > 0:
            counts[i] += short
            counts[np.argmax(counts)] -= short
    return np.repeat(np.arange(len(counts)), counts)


def _class_counts(n: int) -> np.ndarray:
    """Images per class: HAM10000's mix, at least 3 per class (taken from nv, the largest)."""
    shares = _shares([CLASS_FRACTIONS[c] for c in CLASSES], n, minimum=MIN_LESIONS_PER_CLASS)
    return np.bincount(shares, minlength=len(CLASSES))


def _plan_lesions(n: int, rng: np.random.Generator) -> LesionLooks:
    sizes_of, cls_of = [], []
    values, probs = IMAGES_PER_LESION
    for c, count in enumerate(_class_counts(n)):
        draws = rng.choice(values, size=count, p=probs)
        total = np.cumsum(draws)
        k = int(np.searchsorted(total, count)) + 1
        sizes = draws[:k].copy()
        sizes[-1] -= total[k - 1] - count  # the last lesion takes what is left
        sizes = list(sizes)
        while len(sizes) < MIN_LESIONS_PER_CLASS:  # split the largest lesion until there are three
            big = int(np.argmax(sizes))
            sizes[big] -= 1
            sizes.append(1)
        sizes_of += sizes
        cls_of += [c] * len(sizes)
    order = rng.permutation(len(sizes_of))
    cls = np.array(cls_of)[order]
    n_images = np.array(sizes_of)[order]
    L = len(cls)
    names = [CLASSES[c] for c in cls]

    fitz = rng.permutation(_shares(FITZPATRICK_FRACTIONS, L, minimum=1)) + 1  # every type present
    # The draws that made age, sex and site before they moved to their own stream (lesion_metadata.plan_metadata,
    # which write_ham10000 calls), kept so that every later draw, and so every image of a seed, stays what it was.
    rng.normal(0, 14, L), rng.random(L), rng.random(L), rng.random(L)
    age, sex, site = np.full(L, np.nan), ["unknown"] * L, ["unknown"] * L
    dx_type = [DX_TYPES[rng.choice(4, p=DX_TYPE_P[c])] for c in names]

    skin = SKIN_RGB[fitz - 1] * rng.uniform(0.95, 1.05, (L, 3)).astype(np.float32)
    is_ = {c: np.array([x == c for x in names]) for c in CLASSES}
    mel, nv = is_["mel"], is_["nv"]
    dysplastic = nv & (rng.random(L) < 0.15)  # atypical nevi: the overlap that keeps the task honest
    featureless = mel & (rng.random(L) < 0.15)  # early melanoma that looks like a nevus

    def by_class(spec: dict[str, tuple[float, float]]) -> np.ndarray:
        lo = np.array([spec[c][0] for c in names])
        hi = np.array([spec[c][1] for c in names])
        return rng.uniform(lo, hi).astype(np.float32)

    radius = by_class(
        {
            "nv": (0.22, 0.55),
            "mel": (0.42, 0.80),
            "bkl": (0.35, 0.65),
            "bcc": (0.30, 0.60),
            "akiec": (0.30, 0.60),
            "df": (0.20, 0.36),
            "vasc": (0.22, 0.45),
        }
    )
    radius[dysplastic] = rng.uniform(0.35, 0.62, dysplastic.sum())
    radius[featureless] = rng.uniform(0.28, 0.50, featureless.sum())
    asym = by_class(
        {
            "nv": (0.0, 0.04),
            "mel": (0.06, 0.18),
            "bkl": (0.02, 0.08),
            "bcc": (0.02, 0.10),
            "akiec": (0.04, 0.12),
            "df": (0.0, 0.04),
            "vasc": (0.0, 0.05),
        }
    )
    ragged = by_class(
        {
            "nv": (0.02, 0.15),
            "mel": (0.5, 1.0),
            "bkl": (0.1, 0.3),
            "bcc": (0.1, 0.4),
            "akiec": (0.3, 0.6),
            "df": (0.05, 0.2),
            "vasc": (0.05, 0.2),
        }
    )
    asym[dysplastic] = rng.uniform(0.03, 0.09, dysplastic.sum())
    ragged[dysplastic] = rng.uniform(0.2, 0.5, dysplastic.sum())
    asym[featureless] = rng.uniform(0.02, 0.07, featureless.sum())
    ragged[featureless] = rng.uniform(0.1, 0.4, featureless.sum())
    k = np.arange(1, N_HARMONICS + 1, dtype=np.float32)
    harm_amp = np.where(k <= 3, asym[:, None], ragged[:, None] * 0.10 / (k / 4) ** 1.2)
    harm_amp = harm_amp * rng.uniform(0.4, 1.0, (L, N_HARMONICS))
    harm_amp[:, 1] += by_class({c: (0.0, 0.12) for c in CLASSES})  # k=2: an oval is still symmetric
    harm_phase = rng.uniform(0, 2 * np.pi, (L, N_HARMONICS))

    softness = by_class(
        {
            "nv": (0.06, 0.12),
            "mel": (0.03, 0.10),
            "bkl": (0.01, 0.025),
            "bcc": (0.10, 0.18),
            "akiec": (0.10, 0.18),
            "df": (0.12, 0.2),
            "vasc": (0.03, 0.06),
        }
    )
    opacity = by_class(
        {
            "nv": (0.8, 0.95),
            "mel": (0.85, 0.97),
            "bkl": (0.7, 0.85),
            "bcc": (0.45, 0.65),
            "akiec": (0.55, 0.75),
            "df": (0.75, 0.9),
            "vasc": (0.85, 0.97),
        }
    )
    centre_shade = by_class(
        {
            "nv": (0.05, 0.2),
            "mel": (-0.1, 0.25),
            "bkl": (-0.05, 0.05),
            "bcc": (0.0, 0.1),
            "akiec": (0.0, 0.1),
            "df": (0.0, 0.0),
            "vasc": (0.0, 0.0),
        }
    )
    texture = by_class(
        {
            "nv": (0.03, 0.08),
            "mel": (0.08, 0.18),
            "bkl": (0.10, 0.18),
            "bcc": (0.02, 0.05),
            "akiec": (0.12, 0.2),
            "df": (0.03, 0.06),
            "vasc": (0.02, 0.04),
        }
    )

    colours, n_colours = _lesion_colours(names, dysplastic, featureless, rng)
    colours *= DARKEN[fitz - 1][:, None, None]
    colours[np.array([x == "df" for x in names]), 1] = PALETTE["white"]  # the df scar stays pale

    colour_field = rng.standard_normal((L, N_COLOURS, COLOUR_GRID, COLOUR_GRID), dtype=np.float32)
    texture_field = rng.standard_normal((L, TEXTURE_GRID, TEXTURE_GRID), dtype=np.float32)

    # bcc: a few thin arborising vessels from near the centre outward
    start = rng.uniform(-0.4, 0.4, (L, N_SEGMENTS, 2))
    direction = rng.uniform(0, 2 * np.pi, (L, N_SEGMENTS))
    length = rng.uniform(0.3, 0.7, (L, N_SEGMENTS))
    end = start + length[..., None] * np.stack([np.cos(direction), np.sin(direction)], -1)
    segments = np.concatenate([start, end], -1).astype(np.float32)
    n_segments = np.where(is_["bcc"], rng.integers(2, N_SEGMENTS + 1, L), 0)

    # vasc: a cluster of round red/purple lobules
    lob_r = rng.uniform(0.25, 0.5, (L, N_LOBULES))
    lob_at = rng.uniform(-0.55, 0.55, (L, N_LOBULES, 2))
    lobules = np.concatenate([lob_at, lob_r[..., None]], -1).astype(np.float32)
    lobule_purple = rng.random((L, N_LOBULES)) < 0.4
    n_lobules = np.where(is_["vasc"], rng.integers(3, N_LOBULES + 1, L), 0)

    return LesionLooks(
        cls=cls,
        n_images=n_images,
        number=rng.permutation(L),
        fitzpatrick=fitz,
        age=age,
        sex=sex,
        site=site,
        dx_type=dx_type,
        skin=skin,
        radius=radius,
        harm_amp=harm_amp.astype(np.float32),
        harm_phase=harm_phase.astype(np.float32),
        softness=softness,
        opacity=opacity,
        colours=colours,
        n_colours=n_colours,
        centre_shade=centre_shade,
        texture=texture,
        colour_field=colour_field,
        texture_field=texture_field,
        segments=segments,
        n_segments=n_segments,
        lobules=lobules,
        lobule_purple=lobule_purple,
        n_lobules=n_lobules,
        rotation=rng.uniform(0, 2 * np.pi, L).astype(np.float32),
    )


def _lesion_colours(
    names: list[str], dysplastic: np.ndarray, featureless: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Up to N_COLOURS colours per lesion (slot 0 dominant) and how many are used."""
    L = len(names)
    p = {k: np.array(v, np.float32) for k, v in PALETTE.items()}
    browns = ["dark_brown", "mid_brown", "light_brown"]
    mel_extra = ["dark_brown", "black", "blue_grey", "red", "light_brown"]
    colours = np.zeros((L, N_COLOURS, 3), np.float32)
    n_colours = np.ones(L, int)
    for i, c in enumerate(names):
        if c == "mel":
            n_colours[i] = 2 if featureless[i] else rng.integers(2, 5)
            chosen = [browns[rng.integers(3)]]
            chosen += [x for x in rng.permutation(mel_extra) if x != chosen[0]][: n_colours[i] - 1]
        elif c == "nv":
            first = browns[rng.choice(3, p=[0.3, 0.5, 0.2])]
            chosen = [first, "light_brown" if first != "light_brown" else "mid_brown"]
            n_colours[i] = 2 if dysplastic[i] else 1
        elif c == "bkl":
            chosen = ["waxy" if rng.random() < 0.75 else "mid_brown", "light_brown"]
        elif c == "bcc":
            chosen = ["pink", "white"]
        elif c == "akiec":
            chosen = ["scaly_red", "white"]
        elif c == "df":
            chosen = ["df_ring", "white"]  # slot 1 is the central patch, drawn separately
        else:  # vasc
            chosen = ["vasc_red", "vasc_purple"]
        for j, name in enumerate(chosen[:N_COLOURS]):
            colours[i, j] = p[name]
    colours *= rng.uniform(0.9, 1.1, (L, N_COLOURS, 1)).astype(np.float32)
    colours += rng.normal(0, 6, (L, N_COLOURS, 3)).astype(np.float32)
    return colours, n_colours


def _plan_images(lesions: LesionLooks, rng: np.random.Generator) -> ImageViews:
    lesion = np.repeat(np.arange(len(lesions.cls)), lesions.n_images)
    N = len(lesion)
    n_hairs = np.where(rng.random(N) < 0.3, rng.integers(1, N_SEGMENTS + 1, N), 0)
    hair_start = rng.uniform(-1.4, 1.4, (N, N_SEGMENTS, 2))
    hair_dir = rng.uniform(0, 2 * np.pi, (N, N_SEGMENTS))
    hair_len = rng.uniform(0.6, 2.0, (N, N_SEGMENTS))
    hair_end = hair_start + hair_len[..., None] * np.stack([np.cos(hair_dir), np.sin(hair_dir)], -1)
    freq = rng.uniform(2.0, 10.0, (N, N_WAVES))
    angle = rng.uniform(0, 2 * np.pi, (N, N_WAVES))
    haze_freq = rng.uniform(1.0, 4.0, (N, N_WAVES))
    haze_angle = rng.uniform(0, 2 * np.pi, (N, N_WAVES))
    return ImageViews(
        lesion=lesion,
        rotation=(lesions.rotation[lesion] + rng.normal(0, 0.3, N)).astype(np.float32),
        shift=np.clip(rng.normal(0, 0.07, (N, 2)), -0.2, 0.2).astype(np.float32),
        light=(rng.uniform(0.88, 1.08, (N, 1)) * rng.uniform(0.96, 1.04, (N, 3))).astype(np.float32),
        gradient=rng.normal(0, 0.05, (N, 2)).astype(np.float32),
        vignette=np.stack([rng.uniform(1.2, 1.45, N), rng.uniform(0.85, 0.97, N)], 1).astype(np.float32),
        hairs=np.concatenate([hair_start, hair_end], -1).astype(np.float32),
        n_hairs=n_hairs,
        hair_width=rng.uniform(0.35, 0.8, N).astype(np.float32),
        bg_k=(np.stack([np.cos(angle), np.sin(angle)], -1) * freq[..., None]).astype(np.float32),
        bg_phase=rng.uniform(0, 2 * np.pi, (N, N_WAVES)).astype(np.float32),
        haze_k=(np.stack([np.cos(haze_angle), np.sin(haze_angle)], -1) * haze_freq[..., None]).astype(np.float32),
        haze_phase=rng.uniform(0, 2 * np.pi, (N, N_WAVES)).astype(np.float32),
        haze=rng.uniform(*HAZE_LEVELS, N).astype(np.float32),
    )
