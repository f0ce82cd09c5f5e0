"""Similarity between images, for generated lesion images: is the model copying its training images
(`nearest_neighbours`, `memorisation_report`), and does it repeat itself (`diversity`)?

Pixel similarity is the Pearson r of the images resized to a small square, over the 8 flips/quarter turns that
training used (`DIHEDRAL`); feature similarity is the cosine of classifier features
(`hf_medai.evaluation.generative.ClassifierFeatures`) centred on the training features' mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from hf_medai.evaluation.generative import as_feature_array, as_image_array
from hf_medai.io import atomic_path

# The 8 symmetries of a square (dihedral group D4), as (flip left-right first?, quarter turns).
DIHEDRAL = [(flip, turns) for flip in (False, True) for turns in range(4)]
DIHEDRAL_NAMES = [
    "+".join((["flip"] if flip else []) + ([f"rot{90 * turns}"] if turns else [])) or "identity"
    for flip, turns in DIHEDRAL
]
_CHUNK_ELEMENTS = 1 << 24  # similarity matrix entries per chunk (64 MB in float32)


# ------------------------------------------------------------------------------ nearest neighbours


def pixel_vectors(images, pixel_size: int = 32) -> np.ndarray:
    """Images resized to pixel_size^2, each mean-centred and L2-normalised: dot products = Pearson r.

    A constant image has no correlation with anything and becomes the zero vector.
    """
    array = as_image_array(images)
    if array.shape[1:3] != (pixel_size, pixel_size):
        array = np.stack(
            [np.asarray(Image.fromarray(a).resize((pixel_size, pixel_size), Image.BILINEAR)) for a in array]
        )
    return _normalise(array.reshape(len(array), -1).astype(np.float32), centre=True)


def _normalise(x: np.ndarray, centre: bool) -> np.ndarray:
    x = x.astype(np.float32, copy=True)
    if centre:
        x -= x.mean(1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _dihedral_vectors(images, pixel_size: int) -> np.ndarray:
    """[8, N, P]: pixel vectors of the 8 flips/quarter turns of each image (training used them)."""
    square = pixel_vectors(images, pixel_size).reshape(-1, pixel_size, pixel_size, 3)
    out = []
    for flip, turns in DIHEDRAL:
        view = square[:, :, ::-1] if flip else square
        out.append(np.rot90(view, turns, axes=(1, 2)).reshape(len(square), -1))
    return np.ascontiguousarray(np.stack(out))


def _nearest(queries: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best key for each query by dot product. queries [V, N, P] (V views per query, best view wins), keys
    [M, P]. Returns (key index [N], similarity [N], view index [N]); computed in chunks of queries."""
    views, n = queries.shape[:2]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, views * len(keys)))
    index, similarity, view = (np.empty(n, np.int64), np.empty(n, np.float64), np.empty(n, np.int64))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        sims = queries[:, start:stop] @ keys.T  # [V, c, M]
        best_view = sims.max(2).argmax(0)  # [c]
        rows = sims[best_view, np.arange(stop - start)]  # [c, M]
        index[start:stop] = rows.argmax(1)
        similarity[start:stop] = rows.max(1)
        view[start:stop] = best_view
    return index, similarity, view


def _call_features(feature_fn: Callable, images) -> np.ndarray:
    out = feature_fn(images)
    features = out[0] if isinstance(out, tuple) else out  # ClassifierFeatures returns (features, probs)
    return as_feature_array(features, "feature_fn output")


class _TrainingIndex:
    """Training images prepared once (pixel vectors, features), queried by generated and reference sets."""

    def __init__(self, training, feature_fn: Callable | None, pixel_size: int, training_features=None):
        self.training = as_image_array(training)
        self.pixel_size, self.feature_fn = pixel_size, feature_fn
        self.pixels = pixel_vectors(self.training, pixel_size)
        self.features = self.feature_mean = None
        if feature_fn is not None or training_features is not None:
            # Cosine about the training mean: raw penultimate features share a large common component, which
            # puts every pair near 1 and hides which training image is really closest.
            raw = (
                _call_features(feature_fn, self.training)
                if training_features is None
                else as_feature_array(training_features, "training features")
            )
            self.feature_mean = raw.mean(0, keepdims=True)
            self.features = _normalise(raw - self.feature_mean, centre=False)

    def query(self, images, features=None) -> dict[str, np.ndarray]:
        """`features`: the images' features if already computed (else `feature_fn` computes them)."""
        images = as_image_array(images)
        index, similarity, view = _nearest(_dihedral_vectors(images, self.pixel_size), self.pixels)
        out = {"pixel_index": index, "pixel_similarity": similarity, "pixel_transform": view}
        if self.features is not None:
            raw = (
                _call_features(self.feature_fn, images) if features is None else as_feature_array(features, "features")
            )
            feats = _normalise(raw - self.feature_mean, centre=False)
            index, similarity, _ = _nearest(feats[None], self.features)
            out.update(feature_index=index, feature_similarity=similarity)
        return out


def nearest_neighbours(
    generated, training, feature_fn: Callable | None = None, pixel_size: int = 32
) -> dict[str, np.ndarray]:
    """For every generated image, its nearest training image in pixel space (and feature space if given).

    Pixel similarity: Pearson r of the images resized to pixel_size, the max over the 8 flips/quarter turns of
    the generated image (training used them, so a memorised image may come out turned); `pixel_transform`
    indexes DIHEDRAL_NAMES: the flip/turn of the generated image that matched best. Feature similarity: cosine
    of `feature_fn` features (e.g. a ClassifierFeatures) centred on the training features' mean.
    Returns arrays `pixel_index`, `pixel_similarity`, `pixel_transform` (+ `feature_index`,
    `feature_similarity`).
    """
    return _TrainingIndex(training, feature_fn, pixel_size).query(generated)


def memorisation_report(
    generated,
    training,
    out_dir: str | Path | None = None,
    pixel_threshold: float = 0.98,
    feature_threshold: float | None = None,
    top_k: int = 8,
    feature_fn: Callable | None = None,
    reference=None,
    pixel_size: int = 32,
    features: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Flag generated images whose nearest training image is too close, and say what "close" means.

    `reference`: real held-out images. Their nearest-training similarities are the same statistic for two
    DIFFERENT real lesions: a threshold below the reference's high end flags legitimate samples, and
    `reference.n_above_threshold` counts such false alarms. The default threshold 0.98: on our synthetic
    32 px lesions, fresh images reach r = 0.97-0.98 with the nearest of 300-3000 training images (dark
    vignette corners and a central blob are shared by all), exact or turned copies give 1.0.
    With `out_dir`, the top_k closest pairs are saved as PNGs (generated | nearest training). JSON-ready.
    `features`: {"generated", "training", "reference"} features already computed, instead of `feature_fn`.
    """
    features = features or {}
    index = _TrainingIndex(training, feature_fn, pixel_size, training_features=features.get("training"))
    generated = as_image_array(generated)
    found = index.query(generated, features.get("generated"))
    report: dict[str, Any] = {
        "n_generated": len(generated),
        "n_training": len(index.training),
        "pixel_size": pixel_size,
    }
    ref = index.query(reference, features.get("reference")) if reference is not None else None
    if reference is not None:
        report["n_reference"] = len(as_image_array(reference))
    spaces = [("pixel", pixel_threshold)] + ([("feature", feature_threshold)] if index.features is not None else [])
    for space, threshold in spaces:
        similarity = found[f"{space}_similarity"]
        section: dict[str, Any] = {"threshold": threshold, "nearest_similarity": _summary(similarity)}
        if threshold is not None:
            flagged = np.nonzero(similarity > threshold)[0]
            section.update(
                n_flagged=int(len(flagged)),
                fraction_flagged=float(len(flagged) / len(similarity)),
                flagged=[int(i) for i in flagged],
                flagged_training_index=[int(found[f"{space}_index"][i]) for i in flagged],
            )
        if ref is not None:
            ref_similarity = ref[f"{space}_similarity"]
            section["reference"] = _summary(ref_similarity)
            if threshold is not None:
                section["reference"]["n_above_threshold"] = int((ref_similarity > threshold).sum())
        report[space] = section
    if out_dir is not None:
        report["pairs"] = _save_pairs(generated, index.training, found, Path(out_dir), top_k)
    report["nearest_pixel_index"] = [int(i) for i in found["pixel_index"]]
    return report


def _summary(similarity: np.ndarray) -> dict[str, float]:
    return {
        "max": float(similarity.max()),
        "p99": float(np.percentile(similarity, 99)),
        "median": float(np.median(similarity)),
    }


def _save_pairs(
    generated: np.ndarray, training: np.ndarray, found: dict[str, np.ndarray], out_dir: Path, top_k: int
) -> list[dict[str, Any]]:
    """The top_k closest pairs by pixel similarity as PNGs: generated | nearest training, enlarged."""
    order = np.argsort(-found["pixel_similarity"], kind="stable")[:top_k]
    pairs = []
    for rank, g in enumerate(order):
        t = int(found["pixel_index"][g])
        name = f"pair_{rank:02d}_generated{int(g)}_training{t}.png"
        with atomic_path(out_dir / name) as tmp:
            _side_by_side(generated[g], training[t]).save(tmp, format="PNG")
        row = {
            "file": name,
            "generated_index": int(g),
            "training_index": t,
            "pixel_similarity": float(found["pixel_similarity"][g]),
            "transform": DIHEDRAL_NAMES[int(found["pixel_transform"][g])],
        }
        if "feature_similarity" in found:
            row["feature_similarity"] = float(found["feature_similarity"][g])
            row["feature_nearest_training_index"] = int(found["feature_index"][g])
        pairs.append(row)
    return pairs


def _side_by_side(left: np.ndarray, right: np.ndarray, min_height: int = 128, gap: int = 4) -> Image.Image:
    """Two images at one height, enlarged by nearest-neighbour (whole pixels stay visible), white gap between."""
    height = max(min_height, left.shape[0], right.shape[0])
    tiles = []
    for a in (left, right):
        width = max(1, round(a.shape[1] * height / a.shape[0]))
        tiles.append(Image.fromarray(a).resize((width, height), Image.NEAREST))
    canvas = Image.new("RGB", (tiles[0].width + gap + tiles[1].width, height), (255, 255, 255))
    canvas.paste(tiles[0], (0, 0))
    canvas.paste(tiles[1], (tiles[0].width + gap, 0))
    return canvas


# -------------------------------------------------------------------------------------------- diversity


def diversity(images_or_features, labels=None) -> dict[str, Any]:
    """Mean pairwise distance within each class and overall: low means the model repeats itself (mode collapse).

    Images (uint8 [N, H, W, 3] or PIL list): 1 - Pearson r of the 32 px images, no flips/turns. Features
    (float [N, D]): cosine distance. Uses sum_{i != j} v_i.v_j = |sum v|^2 - sum |v|^2: no N x N matrix.
    """
    is_features = (
        isinstance(images_or_features, np.ndarray)
        and images_or_features.ndim == 2
        and images_or_features.dtype != np.uint8
    )
    if is_features:
        vectors = _normalise(as_feature_array(images_or_features, "features"), centre=False).astype(np.float64)
    else:
        vectors = pixel_vectors(images_or_features).astype(np.float64)
    report: dict[str, Any] = {
        "space": "feature" if is_features else "pixel",
        "metric": "cosine distance" if is_features else "1 - Pearson r",
        "n": len(vectors),
        "overall": _mean_pairwise_distance(vectors),
    }
    if labels is not None:
        labels = np.asarray(list(labels))
        if len(labels) != len(vectors):
            raise ValueError(f"{len(labels)} labels for {len(vectors)} images")
        report["per_class"] = {
            str(c): {"n": int((labels == c).sum()), "mean_distance": _mean_pairwise_distance(vectors[labels == c])}
            for c in np.unique(labels)
        }
    return report


def _mean_pairwise_distance(unit: np.ndarray) -> float | None:
    n = len(unit)
    if n < 2:
        return None
    total = unit.sum(0)
    off_diagonal = total @ total - np.einsum("ij,ij->", unit, unit)
    return float(1.0 - off_diagonal / (n * (n - 1)))
