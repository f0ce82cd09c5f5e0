"""Checks of generated lesion images: does the class come out right, how close is the distribution to the
real one, and is the model copying its training images?

Images are uint8 arrays [N, H, W, 3] or lists of PIL images (see `as_image_array`). Distances between sets
(FID, KID) are computed on the penultimate features of one of our lesion classifiers (`ClassifierFeatures`):
no Inception weights exist offline, and a classifier trained on lesions sees what matters in a lesion. Its
numbers are therefore comparable between runs that use the same classifier, never with published FIDs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from hf_medai.io import atomic_path

# The 8 symmetries of a square (dihedral group D4), as (flip left-right first?, quarter turns).
DIHEDRAL = [(flip, turns) for flip in (False, True) for turns in range(4)]
DIHEDRAL_NAMES = [
    "+".join((["flip"] if flip else []) + ([f"rot{90 * turns}"] if turns else [])) or "identity"
    for flip, turns in DIHEDRAL
]
_CHUNK_ELEMENTS = 1 << 24  # similarity matrix entries per chunk (64 MB in float32)


def as_image_array(images) -> np.ndarray:
    """Images as one uint8 array [N, H, W, 3]; accepts such an array or a list of PIL images / uint8 arrays.

    Refuses float arrays instead of guessing whether they are in [0, 1] or [0, 255].
    """
    if isinstance(images, np.ndarray):
        array = images
    else:
        images = list(images)
        if not images:
            raise ValueError("no images given")
        arrays = [np.asarray(im.convert("RGB")) if isinstance(im, Image.Image) else np.asarray(im) for im in images]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"images must all have one size, got shapes {sorted(shapes)}")
        array = np.stack(arrays)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0-255), got dtype {array.dtype}")
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3], got shape {array.shape}")
    if len(array) == 0:
        raise ValueError("no images given")
    return array


# ----------------------------------------------------------------------------------------- classifier


class ClassifierFeatures:
    """A lesion-classifier run folder as a feature extractor: penultimate features and class probabilities.

    Features are the input of the final linear layer (`hf_medai.models.heads.output_layer`), captured by a
    forward pre-hook, so any HF image classifier works without knowing where its pooling happens.
    """

    def __init__(self, run_dir: str | Path, device: str = "cpu", batch_size: int = 64):
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        from hf_medai.models.heads import output_layer

        self.model = (
            AutoModelForImageClassification.from_pretrained(run_dir, use_safetensors=True, trust_remote_code=False)
            .to(device)
            .eval()
        )
        self.processor = AutoImageProcessor.from_pretrained(run_dir, trust_remote_code=False)
        self.device, self.batch_size = device, batch_size
        id2label = self.model.config.id2label
        self.class_names = [id2label[i] for i in range(len(id2label))]
        self._layer = output_layer(self.model)

    def __call__(self, images) -> tuple[np.ndarray, np.ndarray]:
        """(features [N, D] float64, probs [N, C]) in batches; the processor resizes to the model's size."""
        import torch

        array = as_image_array(images)
        captured: list = []
        handle = self._layer.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
        multi_label = getattr(self.model.config, "problem_type", None) == "multi_label_classification"
        features, probs = [], []
        try:
            with torch.inference_mode():
                for start in range(0, len(array), self.batch_size):
                    # PIL images, as `pipeline("image-classification")` gives the processor: identical inputs.
                    batch = [Image.fromarray(a) for a in array[start : start + self.batch_size]]
                    pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
                    captured.clear()
                    logits = self.model(pixel_values=pixels.to(self.device, self.model.dtype)).logits.float()
                    if len(captured) != 1:
                        raise RuntimeError(f"the output layer ran {len(captured)} times in one forward pass")
                    features.append(captured[0].float().reshape(len(batch), -1).cpu().numpy())
                    probs.append((torch.sigmoid(logits) if multi_label else logits.softmax(-1)).cpu().numpy())
        finally:
            handle.remove()
        return np.concatenate(features).astype(np.float64), np.concatenate(probs)


def class_fidelity(
    probs, requested_labels, class_names: Sequence[str], reference_probs=None, reference_labels=None
) -> dict[str, Any]:
    """How often the classifier assigns a generated image to the class it was generated for (argmax).

    With `reference_probs`/`reference_labels` (the same classifier on real held-out images) the same agreement
    is reported on real images: a classifier with 70% sensitivity cannot show 100% fidelity, so the real-image
    number is the ceiling to read fidelity against. Labels may be indices or class names.
    """
    report: dict[str, Any] = {"class_names": list(class_names)}
    report.update(_agreement(probs, requested_labels, class_names, "fidelity"))
    if (reference_probs is None) != (reference_labels is None):
        raise ValueError("pass reference_probs and reference_labels together")
    if reference_probs is not None:
        reference = _agreement(reference_probs, reference_labels, class_names, "accuracy")
        report["reference"] = reference
        for name, row in report["per_class"].items():
            ceiling = reference["per_class"][name]["accuracy"]
            row["reference_accuracy"] = ceiling
            row["relative_fidelity"] = row["fidelity"] / ceiling if row["fidelity"] is not None and ceiling else None
        report["reference_accuracy"] = reference["accuracy"]
    return report


def _agreement(probs, labels, class_names: Sequence[str], key: str) -> dict[str, Any]:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(class_names):
        raise ValueError(f"probs must be [N, {len(class_names)}], got shape {probs.shape}")
    labels = _label_indices(labels, class_names)
    if len(labels) != len(probs):
        raise ValueError(f"{len(labels)} labels for {len(probs)} rows of probs")
    predicted = probs.argmax(1)
    per_class = {}
    for c, name in enumerate(class_names):
        mine = labels == c
        n = int(mine.sum())
        per_class[name] = {
            "n": n,
            "n_agree": int((predicted[mine] == c).sum()),
            key: float((predicted[mine] == c).mean()) if n else None,
            # a row of the confusion matrix: where the images asked to be `name` went
            "predicted_counts": {other: int((predicted[mine] == k).sum()) for k, other in enumerate(class_names)},
        }
    return {key: float((predicted == labels).mean()), "n": int(len(labels)), "per_class": per_class}


def _label_indices(labels, class_names: Sequence[str]) -> np.ndarray:
    labels = list(labels)
    if labels and isinstance(labels[0], str):
        unknown = sorted(set(labels) - set(class_names))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the class names {list(class_names)}")
        index = {name: i for i, name in enumerate(class_names)}
        return np.array([index[name] for name in labels], dtype=np.int64)
    out = np.asarray(labels, dtype=np.int64)
    if out.size and (out.min() < 0 or out.max() >= len(class_names)):
        raise ValueError(f"label indices must be in [0, {len(class_names)}), got {out.min()}..{out.max()}")
    return out


# ------------------------------------------------------------------------------------ set distances


def frechet_distance(feats_a, feats_b, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula):
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    Biased upward for small sets: compare only numbers computed with the same set sizes and features.
    """
    from scipy.linalg import sqrtm

    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each set needs at least 2 rows to estimate a covariance")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on singular products; the retry below handles them
        covmean = sqrtm(cov_a @ cov_b)
        if not np.all(np.isfinite(covmean)):
            # singular product (fewer samples than dimensions, dead features): regularise and retry
            offset = eps * np.eye(len(cov_a))
            covmean = sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)
    if not np.all(np.isfinite(covmean)):
        raise FloatingPointError("matrix square root is not finite even after regularisation")
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))


def kernel_distance(
    feats_a, feats_b, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the kernel (x.y/d + 1)^3, mean and std over random subsets.

    Unlike FID it is unbiased, so small sets can be compared; it can come out slightly negative (a set
    against itself does: overlapping subsets put k(x, x) into the cross term).
    """
    from sklearn.metrics.pairwise import polynomial_kernel

    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("each set needs at least 2 rows")
    rng = np.random.default_rng(seed)
    kernel = dict(degree=3, gamma=1.0 / a.shape[1], coef0=1.0)
    values = np.empty(n_subsets)
    for i in range(n_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        k_xx, k_yy = polynomial_kernel(x, **kernel), polynomial_kernel(y, **kernel)
        k_xy = polynomial_kernel(x, y, **kernel)
        values[i] = (
            (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
            + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
            - 2.0 * k_xy.mean()
        )
    return float(values.mean()), float(values.std())


def _features(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be [N, D], got shape {x.shape}")
    return x


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
    return _features(features, "feature_fn output")


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
                else _features(training_features, "training features")
            )
            self.feature_mean = raw.mean(0, keepdims=True)
            self.features = _normalise(raw - self.feature_mean, centre=False)

    def query(self, images, features=None) -> dict[str, np.ndarray]:
        """`features`: the images' features if already computed (else `feature_fn` computes them)."""
        images = as_image_array(images)
        index, similarity, view = _nearest(_dihedral_vectors(images, self.pixel_size), self.pixels)
        out = {"pixel_index": index, "pixel_similarity": similarity, "pixel_transform": view}
        if self.features is not None:
            raw = _call_features(self.feature_fn, images) if features is None else _features(features, "features")
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
    indexes DIHEDRAL_NAMES: the flip/turn of the generated image that matched best. Feature similarity: cosine of `feature_fn` features (e.g. a ClassifierFeatures) centred on
    the training features' mean.
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
        vectors = _normalise(_features(images_or_features, "features"), centre=False).astype(np.float64)
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
