"""Score a lesion-image generator: class fidelity, FID/KID, memorisation and diversity, in one report.

Every number comes with the reference that says how to read it: fidelity against the classifier's accuracy
on real held-out images, FID/KID against the distance between held-out and training images (what a
perfect generator would score with the same number of samples), memorisation against how close held-out
real images come to training images, diversity against the training images' own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_medai.errors import ConfigError
from hf_medai.evaluation.generative import ClassifierFeatures, class_fidelity, frechet_distance, kernel_distance
from hf_medai.evaluation.image_similarity import diversity, memorisation_report
from hf_medai.pipelines.sampling import SCHEDULERS, generate, save_grid, save_samples


@dataclass
class GenerationEvalArguments:
    classifier_dir: str | None = field(
        default=None,
        metadata={
            "help": "A lesion-recipe run folder: its classifier scores fidelity and gives the FID/KID/memorisation features. Without it, pixel-space checks only."
        },
    )
    eval_images_per_class: int = field(
        default=64, metadata={"help": "Images generated per class for the evaluation (saved in samples/)."}
    )
    eval_scheduler: str = field(
        default="dpmsolver++", metadata={"help": "Sampler for the evaluation: dpmsolver++ | ddim | ddpm."}
    )
    eval_inference_steps: int = field(default=20, metadata={"help": "Sampling steps of the evaluation sampler."})
    guidance_scale: float = field(default=2.0, metadata={"help": "Classifier-free guidance scale (1 = none)."})
    eval_batch_size: int = field(default=64, metadata={"help": "Images per sampling batch."})
    eval_seed: int = field(default=1234, metadata={"help": "Seed of the evaluation samples."})
    fid_curve: bool = field(
        default=True,
        metadata={
            "help": "At every sample_every step also score FID/KID and class fidelity of eval_images_per_class "
            "images per class with the evaluation sampler (needs classifier_dir): the FID-vs-steps table of the card."
        },
    )
    grid_images_per_class: int = field(default=8, metadata={"help": "Images per class in the sample grids."})
    memorisation_threshold: float = field(
        default=0.98,
        metadata={
            "help": "Flag a generated image whose nearest training image (any flip/turn) has pixel Pearson r above this."
        },
    )
    feature_memorisation_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Also flag on classifier-feature cosine above this (off by default: same-class features are close)."
        },
    )

    def __post_init__(self):
        if self.eval_scheduler not in SCHEDULERS:
            raise ValueError(f"eval_scheduler must be one of {SCHEDULERS}, got {self.eval_scheduler!r}")


def _hwc(pixels) -> np.ndarray:
    return np.ascontiguousarray(torch.as_tensor(pixels).permute(0, 2, 3, 1).numpy())


def subgroup_representation(nearest_training_index, train_subgroups) -> dict[str, Any]:
    """Per subgroup column, the share of training images in each group vs the share of generated images whose
    nearest training image (pixel space) is in it: a proxy for which skin types and sites the generator reproduces
    (it is not conditioned on them and no label says what a generated image shows)."""
    nearest = np.asarray(nearest_training_index)
    out = {}
    for column in train_subgroups.columns:
        values = train_subgroups[column].astype("string").fillna("unknown").to_numpy()
        if (values == "unknown").all():
            continue
        groups = sorted(set(values))
        out[column] = {
            "method": "nearest training image in pixel space",
            "groups": {
                g: {
                    "training_fraction": float((values == g).mean()),
                    "generated_fraction": float((values[nearest] == g).mean()),
                }
                for g in groups
            },
        }
    return out


def _evaluation_images(pipe, args: GenerationEvalArguments) -> tuple[np.ndarray, np.ndarray, float]:
    """(uint8 images, class index of each, images/s): `eval_images_per_class` per class with the evaluation's
    sampler, steps, guidance, batch size and seed (the final evaluation and every FID-curve point alike)."""
    labels = np.repeat(np.arange(len(pipe.config.class_names)), args.eval_images_per_class)
    images, per_second = generate(
        pipe,
        labels,
        args.eval_scheduler,
        args.eval_inference_steps,
        args.guidance_scale,
        args.eval_batch_size,
        args.eval_seed,
    )
    return images, labels, per_second


def evaluate_generator(
    pipe,
    args: GenerationEvalArguments,
    out_dir: str | Path,
    train: dict,
    heldout: dict,
    device="cpu",
    train_subgroups=None,
) -> dict[str, Any]:
    """Generate `args.eval_images_per_class` images per class and score them against the real images.

    train / heldout: {"pixels": uint8 [N,3,H,W], "labels": [N]} at the generator's resolution; heldout images
    (patients the generator never saw) are the real reference. Writes samples/ and memorisation pairs.
    train_subgroups: a frame of subgroup columns aligned with the training images (skin type, site).
    Returns {"headline": flat numbers, "generation", "fidelity", "distance", "memorisation", "diversity", "subgroups",
    "sampling_throughput"}.
    """
    out_dir = Path(out_dir)
    class_names = list(pipe.config.class_names)
    images, labels, images_per_second = _evaluation_images(pipe, args)
    save_samples(images, labels, class_names, out_dir / "samples")
    per = args.grid_images_per_class
    grid_idx = np.concatenate([np.flatnonzero(labels == c)[:per] for c in range(len(class_names))])
    save_grid(images[grid_idx], rows=len(class_names), path=out_dir / "samples" / "grid.png")
    train_images, heldout_images = _hwc(train["pixels"]), _hwc(heldout["pixels"])
    train_labels, heldout_labels = np.asarray(train["labels"]), np.asarray(heldout["labels"])

    classifier = ClassifierFeatures(args.classifier_dir, device=str(device)) if args.classifier_dir else None
    if classifier is not None and list(classifier.class_names) != class_names:
        raise ConfigError(
            f"classifier {args.classifier_dir} has classes {classifier.class_names}, the generator "
            f"{class_names}: train both on the same task (binary / multiclass)"
        )

    report: dict[str, Any] = {
        "generation": {
            "images": len(images),
            "per_class": args.eval_images_per_class,
            "scheduler": args.eval_scheduler,
            "inference_steps": args.eval_inference_steps,
            "guidance_scale": args.guidance_scale,
            "seed": args.eval_seed,
            "resolution": int(images.shape[1]),
            "grid": "samples/grid.png",
        },
        "sampling_throughput": {
            f"sampling_images_per_second_{args.eval_scheduler}_{args.eval_inference_steps}": round(
                images_per_second, 3
            )
        },
    }
    headline: dict[str, Any] = {}

    # The classifier reads each image set once; memorisation, fidelity, FID/KID and diversity share the result.
    features = {}
    if classifier is not None:
        (gen_feats, gen_probs), (train_feats, _), (held_feats, held_probs) = (
            classifier(images),
            classifier(train_images),
            classifier(heldout_images),
        )
        features = {"generated": gen_feats, "training": train_feats, "reference": held_feats}

    # Memorisation: pixel space always; feature space too when a classifier is given.
    report["memorisation"] = memorisation_report(
        images,
        train_images,
        out_dir=out_dir / "memorisation",
        pixel_threshold=args.memorisation_threshold,
        feature_threshold=args.feature_memorisation_threshold,
        reference=heldout_images,
        features=features,
    )
    nearest = report["memorisation"].pop("nearest_pixel_index")
    report["subgroups"] = subgroup_representation(nearest, train_subgroups) if train_subgroups is not None else None
    pixel = report["memorisation"]["pixel"]
    headline.update(
        memorised_images=pixel["n_flagged"],
        memorised_fraction=pixel["fraction_flagged"],
        nearest_training_similarity_max=pixel["nearest_similarity"]["max"],
        heldout_nearest_training_similarity_max=pixel["reference"]["max"],
    )

    # Diversity: generated vs the training images' own, per class.
    names = np.asarray(class_names)
    report["diversity"] = {
        "generated_pixel": diversity(images, names[labels]),
        "training_pixel": diversity(train_images, names[train_labels]),
    }
    headline["diversity_pixel"] = report["diversity"]["generated_pixel"]["overall"]
    headline["training_diversity_pixel"] = report["diversity"]["training_pixel"]["overall"]

    if classifier is None:
        report["fidelity"] = report["distance"] = None
        report["evaluation_note"] = (
            "No classifier_dir given: class fidelity, FID/KID and feature-space checks were "
            "not computed. Pass a lesion-recipe run folder."
        )
    else:
        report["fidelity"] = class_fidelity(gen_probs, labels, class_names, held_probs, heldout_labels)
        report["fidelity"]["classifier"] = str(args.classifier_dir)
        headline["class_fidelity"] = report["fidelity"]["fidelity"]
        headline["classifier_accuracy_on_heldout"] = report["fidelity"]["reference_accuracy"]
        for name, row in report["fidelity"]["per_class"].items():
            headline[f"class_fidelity_{name}"] = row["fidelity"]
        # A reference set of the same size as the generated one, so the finite-sample bias matches.
        rng = np.random.default_rng(args.eval_seed)
        ref = rng.choice(len(held_feats), size=min(len(held_feats), len(gen_feats)), replace=False)
        kid, kid_std = kernel_distance(gen_feats, train_feats)
        kid_ref, kid_ref_std = kernel_distance(held_feats[ref], train_feats)
        report["distance"] = {
            "features": f"penultimate layer of the lesion classifier {args.classifier_dir} "
            f"({gen_feats.shape[1]} dims; not Inception, so not comparable with published FIDs)",
            "fid": frechet_distance(gen_feats, train_feats),
            "fid_heldout_reference": frechet_distance(held_feats[ref], train_feats),
            "kid": kid,
            "kid_std": kid_std,
            "kid_heldout_reference": kid_ref,
            "kid_heldout_reference_std": kid_ref_std,
            "n_generated": len(gen_feats),
            "n_training": len(train_feats),
            "n_heldout_reference": len(ref),
            "fid_per_class": {
                name: frechet_distance(gen_feats[labels == c], train_feats[train_labels == c])
                for c, name in enumerate(class_names)
                if (labels == c).sum() > 1 and (train_labels == c).sum() > 1
            },
        }
        headline.update(
            fid=report["distance"]["fid"],
            fid_heldout_reference=report["distance"]["fid_heldout_reference"],
            kid=kid,
            kid_heldout_reference=kid_ref,
        )
        report["diversity"]["generated_feature"] = diversity(gen_feats, names[labels])
        report["diversity"]["training_feature"] = diversity(train_feats, names[train_labels])
    report["headline"] = headline
    return report


class FidCurve:
    """FID/KID and class fidelity of a generator during training: call it with (step, pipeline) at each sample
    point; `rows` is the curve. The same sampler, seed, guidance and number of images as the final evaluation, so
    the last point is that evaluation's FID; the training images' classifier features are computed once."""

    def __init__(self, args: GenerationEvalArguments, train_pixels, device="cpu"):
        self.args = args
        self.classifier = ClassifierFeatures(args.classifier_dir, device=str(device))
        self.train_feats = self.classifier(_hwc(train_pixels))[0]
        self.rows: list[dict[str, Any]] = []

    def __call__(self, step: int, pipe) -> dict[str, Any]:
        class_names = list(pipe.config.class_names)
        images, labels, _ = _evaluation_images(pipe, self.args)
        feats, probs = self.classifier(images)
        kid, kid_std = kernel_distance(feats, self.train_feats)
        row = {
            "step": int(step),
            "fid": frechet_distance(feats, self.train_feats),
            "kid": kid,
            "kid_std": kid_std,
            "class_fidelity": class_fidelity(probs, labels, class_names)["fidelity"],
            "images": len(images),
        }
        self.rows.append(row)
        return row
