"""Checks of generated lesion images: does the class come out right, and how close is the distribution to the
real one? Whether the model copies its training images, and how diverse its images are, is measured by
similarity between images: `hf_medai.evaluation.image_similarity`.

Images are uint8 arrays [N, H, W, 3] or lists of PIL images (see `as_image_array`). Distances between sets
(FID, KID) are computed on the penultimate features of one of our lesion classifiers (`ClassifierFeatures`):
no Inception weights exist offline, and a classifier trained on lesions sees what matters in a lesion. Its
numbers are therefore comparable between runs that use the same classifier, never with published FIDs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image


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

    a, b = as_feature_array(feats_a, "feats_a"), as_feature_array(feats_b, "feats_b")
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

    a, b = as_feature_array(feats_a, "feats_a"), as_feature_array(feats_b, "feats_b")
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


def as_feature_array(x, name: str) -> np.ndarray:
    """`x` as a float64 feature matrix [N, D]; `name` says which argument was wrong."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be [N, D], got shape {x.shape}")
    return x
