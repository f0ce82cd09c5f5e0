"""The artefact audit of image classifiers (lesion, generic) and lesion fusion models, from their saved folders.

The model is reloaded with the plain HF API from the run folder (what a user would deploy) and scored on the test
images, unchanged and with each artefact drawn on the decoded photograph before the model's own image processor
resizes it. A fusion model keeps each image's metadata fixed: only the image changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from hf_medai.evaluation.image_artefacts import GRID_FILE, artefact_audit, artefact_grid
from hf_medai.run_folder import load_run

BATCH = 64
KNOWN = {
    "lesion": "Dermoscopy classifiers are known to raise melanoma scores for surgical ink markings (Winkler et al., "
    "JAMA Dermatology 2019) and to shift with rulers, hair, dark vignettes and colour charts.",
    "image": "Overlays (pen marks, rulers, text markers) and acquisition changes (compression, focus, exposure) are "
    "common in clinical images; ink, hair strands and colour-chart patches stand for any overlay that has "
    "nothing to do with the finding.",
}


def _images(dataset) -> list[np.ndarray]:
    return [np.asarray(im.convert("RGB")) for im in dataset["image"]]


def image_scorer(model, processor, tabular=None, batch_size: int = BATCH):
    """images -> (n, K) probabilities of `model` through `processor` (a fusion processor also gets the rows of
    `tabular`, a DataFrame aligned with the images)."""

    @torch.no_grad()
    def score(images: Sequence[np.ndarray]) -> np.ndarray:
        model.eval()
        out = []
        for start in range(0, len(images), batch_size):
            pil = [Image.fromarray(im) for im in images[start : start + batch_size]]
            if tabular is None:
                batch = processor(images=pil, return_tensors="pt")
            else:
                batch = processor(images=pil, tabular=tabular.iloc[start : start + batch_size].to_dict("records"))
            batch = {k: v.to(model.device) for k, v in batch.items()}
            out.append(torch.softmax(model(**batch).logits.float(), -1).cpu().numpy())
        return np.concatenate(out)

    return score


def load_saved(model_dir: str | Path, fusion: bool):
    """The saved model and processor, as a user loads them (safetensors, no remote code)."""
    if fusion:
        from transformers import AutoModelForSequenceClassification

        import hf_medai.models.fusion  # noqa: F401  (registers the fusion model with the Auto classes)
        from hf_medai.models.fusion import FusionProcessor

        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, use_safetensors=True, trust_remote_code=False
        )
        return model, FusionProcessor.from_pretrained(model_dir)
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    import hf_medai.models.efficientnet  # noqa: F401  (registers EfficientNet-Lite with the Auto classes)

    model = AutoModelForImageClassification.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False)
    return model, AutoImageProcessor.from_pretrained(model_dir)


def audit_images(
    model_dir: str | Path,
    test,
    metrics: dict[str, Any],
    tabular=None,
    seed: int = 0,
    n_bootstrap: int = 1000,
    grid_dir: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """The "image_artefacts" section for the model in `model_dir` on `test` (a dataset with decoded `image`s and
    `label`s); `metrics`: the run's metrics.json (class names, positive class, frozen threshold). The example grid
    goes to `grid_dir` (default `model_dir`)."""
    model, processor = load_saved(model_dir, fusion=tabular is not None)
    images, y = _images(test), np.asarray(test["label"])
    class_names = metrics["class_names"]
    positive = metrics.get("positive_class")
    section = artefact_audit(
        image_scorer(model, processor, tabular),
        images,
        y,
        class_names,
        positive,
        metrics.get("threshold"),
        seed=seed,
        n_bootstrap=n_bootstrap,
        known=KNOWN["image" if metrics.get("kind") == "image_classifier" else "lesion"],
    )
    # two examples of each class (positive first), so the grid shows what each artefact looks like on both
    pos = class_names.index(positive) if positive else int(np.bincount(y).argmin())
    picks = [*np.flatnonzero(y == pos)[:2], *np.flatnonzero(y != pos)[:2]]
    artefact_grid(images, Path(grid_dir or model_dir) / GRID_FILE, seed=seed, indices=picks)
    return {"image_artefacts": section}


def _rebuild(dataclass_type, config: dict):
    """The recipe's data arguments as the run resolved them (run_config.yaml)."""
    return dataclass_type(**{f.name: config[f.name] for f in fields(dataclass_type) if f.name in config})


def run_test_split(run_dir: Path, metrics: dict, config: dict):
    """The run's own test split, made again by the recipe's code from its resolved config (decoded images)."""
    recipe = metrics.get("recipe")
    if recipe in ("lesion_classification", "lesion_fusion"):
        from hf_medai.lesion_split import LesionClassifierDataArguments, load_lesion_split

        args = _rebuild(LesionClassifierDataArguments, config)
        splits = load_lesion_split(args, args.test_data_dir, args.test_data_format)[0]
    elif recipe == "image_classification":
        from hf_medai.image_folder import image_folder_splits, load_image_folder, scikit_image_sample

        c = config
        folder = scikit_image_sample(c["sample_tiles_per_class"]) if c.get("data_dir") is None else c["data_dir"]
        dataset, _, _ = load_image_folder(folder, c["skip_bad_rows"], c["max_image_side"])
        splits = image_folder_splits(dataset, c["val_fraction"], c["test_fraction"], c["split_seed"])
    else:
        raise ValueError(f"{run_dir}: no artefact audit for runs of recipe {recipe!r}")
    test = splits["test"]
    expected = [str(i) for i in pd.read_csv(run_dir / "predictions.csv")["id"]]
    if [str(i) for i in test["id"]] != expected:
        raise ValueError(f"{run_dir}: the test split made again differs from predictions.csv (data changed?)")
    return test


def audit_image_run(
    model_dir, data=None, data_format: str = "auto", skip_bad_rows: bool = False, out_dir=None
) -> dict:
    """`Kind.audit` of image classifiers and lesion fusion models: the run's own test split (data None) or `data`
    (external; its example grid goes to `out_dir`, the external report's folder)."""
    model_dir = Path(model_dir)
    metrics, config = load_run(model_dir)
    if data is None:
        test = run_test_split(model_dir, metrics, config)
    else:
        from hf_medai.data.images import with_images
        from hf_medai.data.lesions import load_lesions
        from hf_medai.paths import cache_root

        task = "binary" if metrics.get("positive_class") else "multiclass"
        test, _, report = load_lesions(data, data_format, task, skip_bad_rows)
        test = with_images(test, report, max_side=config.get("max_image_side", 512), cache_dir=cache_root() / "images")
    tabular = None
    if metrics.get("kind") == "lesion_fusion":
        features = [*config["metadata_categorical"], *config["metadata_numeric"]]
        tabular = test.select_columns(features).to_pandas()
    return audit_images(
        model_dir,
        test,
        metrics,
        tabular,
        seed=config.get("seed", 0),
        n_bootstrap=config.get("n_bootstrap", 1000),
        grid_dir=out_dir,
    )
