"""Checks of generated images: FID/KID and class fidelity (hf_medai.evaluation.generative), memorisation and
diversity (hf_medai.evaluation.image_similarity)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_medai.evaluation import image_similarity
from hf_medai.evaluation.generative import (
    ClassifierFeatures,
    as_image_array,
    class_fidelity,
    frechet_distance,
    kernel_distance,
)
from hf_medai.evaluation.image_similarity import diversity, memorisation_report, nearest_neighbours

CLASSES = ["benign", "melanoma"]


def _synthetic_lesions(root: Path, seed: int, n: int) -> np.ndarray:
    """n synthetic 32x32 lesion images (our HAM10000-format sample writer), decoded to uint8 [n, 32, 32, 3]."""
    from hf_medai.data.synthetic.lesions import write_ham10000

    folder = write_ham10000(root / f"seed{seed}", n=n, seed=seed, image_size=(32, 32))
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*/*.jpg"))])


@pytest.fixture(scope="module")
def lesions(tmp_path_factory):
    """Training images, and fresh and reference images: other lesions from the same distribution."""
    root = tmp_path_factory.mktemp("lesions")
    return {
        "training": _synthetic_lesions(root, 0, 300),
        "fresh": _synthetic_lesions(root, 1, 100),
        "reference": _synthetic_lesions(root, 2, 100),
    }


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    import torch

    from hf_medai.models.vision import build_image_classifier

    torch.manual_seed(0)
    model, processor = build_image_classifier(None, CLASSES, image_size=32)
    run = tmp_path_factory.mktemp("classifier")
    model.save_pretrained(run)
    processor.save_pretrained(run)
    return run


def _planted(training: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Copies of training images as a memorising model might return them: as is, flipped, turned, noisy."""
    rng = np.random.default_rng(0)
    noisy = np.clip(training[60].astype(np.float64) + rng.normal(0, 2.0, training[60].shape), 0, 255)
    copies = [
        training[5],
        training[17][:, ::-1],
        np.rot90(training[42], 1),
        np.rot90(training[99][:, ::-1], 3),
        np.rint(noisy).astype(np.uint8),
    ]
    return np.stack(copies), [5, 17, 42, 99, 60]


# ------------------------------------------------------------------------------------------ memorisation


def test_memorisation_flags_planted_copies_and_not_fresh_lesions(lesions, tmp_path):
    training, fresh = lesions["training"], lesions["fresh"]
    copies, sources = _planted(training)
    generated = np.concatenate([fresh, copies])
    report = memorisation_report(generated, training, out_dir=tmp_path, top_k=5, reference=lesions["reference"])
    json.dumps(report, allow_nan=False)  # goes into metrics.json as it is

    pixel = report["pixel"]
    planted = list(range(len(fresh), len(generated)))
    assert pixel["flagged"] == planted  # every copy, and none of the 100 fresh lesions
    assert pixel["flagged_training_index"] == sources
    assert pixel["reference"]["n_above_threshold"] == 0  # nor any held-out real one
    assert pixel["reference"]["max"] < pixel["threshold"] < pixel["nearest_similarity"]["max"]

    assert {p["generated_index"] for p in report["pairs"][:4]} == set(planted[:4])  # exact copies rank first
    by_index = {p["generated_index"]: p for p in report["pairs"]}
    assert by_index[planted[0]]["transform"] == "identity"
    assert by_index[planted[1]]["transform"] == "flip"
    assert by_index[planted[0]]["pixel_similarity"] == pytest.approx(1.0, abs=1e-5)
    for p in report["pairs"]:
        png = Image.open(tmp_path / p["file"])
        assert png.size == (128 + 4 + 128, 128)  # 32 px, enlarged 4x, side by side
        left = np.asarray(png.convert("RGB"))[:, :128]
        assert np.array_equal(left[::4, ::4], generated[p["generated_index"]])  # nearest-neighbour enlargement
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_nearest_neighbours_in_pixel_and_feature_space(lesions, classifier_run, monkeypatch):
    training = lesions["training"][:120]
    copies, sources = _planted(training)
    features = ClassifierFeatures(classifier_run)
    found = nearest_neighbours(copies, training, feature_fn=features)
    assert found["pixel_index"].tolist() == sources
    assert found["feature_index"][0] == sources[0]
    assert found["feature_similarity"][0] == pytest.approx(1.0, abs=1e-5)  # the exact copy has its features
    assert np.all(found["feature_similarity"] <= 1 + 1e-6)

    # chunked matrix products give the same answer as one product
    monkeypatch.setattr(image_similarity, "_CHUNK_ELEMENTS", 8 * len(training) * 2)
    chunked = nearest_neighbours(np.concatenate([lesions["fresh"][:7], copies]), training)
    monkeypatch.undo()
    whole = nearest_neighbours(np.concatenate([lesions["fresh"][:7], copies]), training)
    assert np.array_equal(chunked["pixel_index"], whole["pixel_index"])
    np.testing.assert_allclose(chunked["pixel_similarity"], whole["pixel_similarity"], rtol=1e-6)

    report = memorisation_report(copies, training, feature_fn=features, feature_threshold=0.999)
    assert 0 in report["feature"]["flagged"]
    assert report["feature"]["nearest_similarity"]["max"] == pytest.approx(1.0, abs=1e-5)


def test_images_as_arrays_or_pil():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(as_image_array([Image.fromarray(a) for a in array]), array)
    with pytest.raises(ValueError, match="uint8"):
        as_image_array(array / 255.0)
    with pytest.raises(ValueError, match="one size"):
        as_image_array([Image.fromarray(array[0]), Image.new("RGB", (4, 4))])


# ----------------------------------------------------------------------------------------- FID and KID


def _with_moments(z: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Samples whose SAMPLE mean and covariance are exactly `mean` and `cov`, so FID has a closed form."""
    z = z - z.mean(0)
    white = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return white @ np.linalg.cholesky(cov).T + mean


def test_frechet_distance_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16))
    scale = np.trace(np.cov(feats, rowvar=False))
    assert abs(frechet_distance(feats, feats)) < 1e-6 * scale


def test_frechet_distance_equals_the_analytic_value():
    rng = np.random.default_rng(1)
    d = 6
    # diagonal covariances: sum (sqrt(s_a) - sqrt(s_b))^2 + |mu_a - mu_b|^2
    var_a, var_b = rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    a = _with_moments(rng.normal(size=(300, d)), mu_a, np.diag(var_a))
    b = _with_moments(rng.normal(size=(400, d)), mu_b, np.diag(var_b))
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    # full covariances, S_b = k^2 S_a: the trace term is tr(S_a) (1 - k)^2
    m = rng.normal(size=(d, d))
    cov_a, k = m @ m.T + np.eye(d), 1.7
    a = _with_moments(rng.normal(size=(300, d)), mu_a, cov_a)
    b = _with_moments(rng.normal(size=(300, d)), mu_b, k * k * cov_a)
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) * (1 - k) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_survives_singular_covariances():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 32)), rng.normal(size=(10, 32)) + 1.0  # fewer samples than dimensions
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value > 0


def test_kernel_distance_is_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    self_mean, _ = kernel_distance(a, a, n_subsets=50, subset_size=200)
    same_mean, same_std = kernel_distance(a, b, n_subsets=50, subset_size=200)
    shifted_mean, _ = kernel_distance(a, b + 0.5, n_subsets=50)  # subset_size capped at 400
    assert abs(same_mean) < 3 * same_std  # unbiased: zero in expectation for one distribution
    # a set against itself: overlapping subsets put k(x, x) into the cross term, slightly negative
    assert -0.1 * shifted_mean < self_mean <= 0
    assert shifted_mean > 0.1
    assert kernel_distance(a, b + 1.0, n_subsets=20)[0] > shifted_mean


# ------------------------------------------------------------------------------------- class fidelity


def test_class_fidelity_equals_a_hand_count():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    requested = ["benign", "benign", "benign", "melanoma", "melanoma"]  # argmax: 0 1 0 1 1
    reference_probs = np.array([[0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
    report = class_fidelity(probs, requested, CLASSES, reference_probs=reference_probs, reference_labels=[0, 0, 1, 1])
    json.dumps(report, allow_nan=False)
    assert report["fidelity"] == pytest.approx(4 / 5)
    benign, melanoma = report["per_class"]["benign"], report["per_class"]["melanoma"]
    assert (benign["n"], benign["n_agree"], benign["fidelity"]) == (3, 2, pytest.approx(2 / 3))
    assert benign["predicted_counts"] == {"benign": 2, "melanoma": 1}
    assert (melanoma["n"], melanoma["n_agree"], melanoma["fidelity"]) == (2, 2, 1.0)
    assert report["reference_accuracy"] == pytest.approx(2 / 4)
    assert benign["reference_accuracy"] == pytest.approx(0.5)
    assert benign["relative_fidelity"] == pytest.approx((2 / 3) / 0.5)
    assert class_fidelity(probs, [0, 0, 0, 1, 1], CLASSES)["per_class"] == report["per_class"] | {
        name: {k: v for k, v in row.items() if k not in ("reference_accuracy", "relative_fidelity")}
        for name, row in report["per_class"].items()
    }
    with pytest.raises(ValueError, match="not among"):
        class_fidelity(probs, ["benign"] * 4 + ["nevus"], CLASSES)


def test_classifier_features_match_the_plain_pipeline(classifier_run, lesions):
    import torch
    from transformers import pipeline

    from hf_medai.models.heads import output_layer

    images = lesions["fresh"][:7]
    features = ClassifierFeatures(classifier_run, batch_size=3)
    assert features.class_names == CLASSES
    feats, probs = features([Image.fromarray(a) for a in images])  # PIL list, in 3 batches
    assert feats.shape == (7, 128) and feats.dtype == np.float64
    assert probs.shape == (7, 2)

    clf = pipeline("image-classification", model=str(classifier_run))
    for image, row in zip(images, probs):
        scores = {d["label"]: d["score"] for d in clf(Image.fromarray(image), top_k=None)}
        np.testing.assert_allclose([scores[c] for c in CLASSES], row, atol=1e-5)
    # the features are what the output layer sees: through it they give the same probabilities
    layer = output_layer(features.model)
    with torch.no_grad():
        logits = layer(torch.as_tensor(feats, dtype=torch.float32))
    np.testing.assert_allclose(logits.softmax(-1).numpy(), probs, atol=1e-5)


# ------------------------------------------------------------------------------------------- diversity


def test_diversity_is_zero_for_repeats_and_positive_for_distinct_images(lesions):
    fresh = lesions["fresh"][:20]
    labels = ["benign"] * 10 + ["melanoma"] * 10
    repeated = np.repeat(fresh[:2], 10, axis=0)  # one image per class, repeated
    same = diversity(repeated, labels)
    assert same["overall"] > 0.0  # two different images across the classes
    assert same["per_class"]["benign"]["mean_distance"] == pytest.approx(0.0, abs=1e-6)
    assert same["per_class"]["melanoma"]["mean_distance"] == pytest.approx(0.0, abs=1e-6)
    assert diversity(np.repeat(fresh[:1], 5, axis=0))["overall"] == pytest.approx(0.0, abs=1e-6)

    distinct = diversity(fresh, labels)
    assert distinct["space"] == "pixel"
    assert distinct["per_class"]["benign"]["mean_distance"] > 0.01
    # matches the plain mean over pairs
    v = image_similarity.pixel_vectors(fresh).astype(np.float64)
    sims = v @ v.T
    expected = 1 - (sims.sum() - np.trace(sims)) / (20 * 19)
    assert distinct["overall"] == pytest.approx(expected, rel=1e-6)

    feats = np.eye(4)  # orthogonal features: cosine distance 1
    assert diversity(feats, [0, 0, 1, 1]) == {
        "space": "feature",
        "metric": "cosine distance",
        "n": 4,
        "overall": pytest.approx(1.0),
        "per_class": {
            "0": {"n": 2, "mean_distance": pytest.approx(1.0)},
            "1": {"n": 2, "mean_distance": pytest.approx(1.0)},
        },
    }
    assert diversity(np.ones((3, 4)))["overall"] == pytest.approx(0.0, abs=1e-12)
