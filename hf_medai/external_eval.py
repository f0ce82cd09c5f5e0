"""Score a saved lesion classifier on other data (an external test set) and write the same report.

The decision threshold is frozen from the training run (chosen on its validation set): choosing it
again on the test data would flatter the result.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from hf_medai.cards import write_card
from hf_medai.errors import ConfigError
from hf_medai.io import write_yaml
from hf_medai.run_folder import load_run, prepare_run_folder


@torch.no_grad()
def predict_probs(model, dataset, collator, batch_size: int = 128) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        examples = [{"pixels": p} for p in rows["pixels"]]
        batch = collator(examples)
        logits = model(pixel_values=batch["pixel_values"].to(model.device)).logits
        out.append(torch.softmax(logits.float(), -1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels))


def evaluate_image_classifier(
    run_dir, data, out_dir, data_format="auto", skip_bad_rows=False, batch_size=128, overwrite=False
) -> dict:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hf_medai.data.image_batches import ImageCollator, add_pixel_values
    from hf_medai.data.images import with_images
    from hf_medai.data.lesions import load_lesions, subgroup_frame
    from hf_medai.data.synthetic.lesions import is_synthetic
    from hf_medai.models import efficientnet  # noqa: F401  (registers EfficientNet-Lite with the Auto classes)
    from hf_medai.paths import cache_root
    from hf_medai.run_outputs import write_classifier_report

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    trained, config = load_run(run_dir)
    prepare_run_folder(out_dir, resume=False, overwrite=overwrite)
    model = AutoModelForImageClassification.from_pretrained(run_dir, use_safetensors=True, trust_remote_code=False)
    processor = AutoImageProcessor.from_pretrained(run_dir)
    class_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    task = "binary" if trained.get("positive_class") else "multiclass"
    dataset, data_classes, report = load_lesions(data, data_format, task, skip_bad_rows)
    if data_classes != class_names:
        raise ConfigError(f"{data}: classes {data_classes} differ from the model's {class_names}")
    dataset = with_images(
        dataset, report, max_side=config.get("max_image_side", 512), cache_dir=cache_root() / "images"
    )
    dataset = add_pixel_values(dataset, processor)
    probs = predict_probs(model, dataset, ImageCollator(processor), batch_size)

    columns = config.get("subgroup_columns", ["sex", "age_band", "fitzpatrick", "site"])
    eval_args = SimpleNamespace(
        n_bootstrap=config.get("n_bootstrap", 1000),
        min_group_size=config.get("min_group_size", 30),
        min_group_class_count=config.get("min_group_class_count", 10),
        threshold_method="fixed",
        threshold=trained.get("threshold") or 0.5,
    )
    metrics = write_classifier_report(
        out_dir,
        ids=dataset["id"],
        y_true=np.asarray(dataset["label"]),
        probs=probs,
        class_names=class_names,
        subgroups=subgroup_frame(dataset, columns),
        eval_args=eval_args,
        threshold=trained.get("threshold"),
        extra={
            **{
                k: trained[k]
                for k in ("recipe", "kind", "task", "base_model", "training", "throughput", "splits")
                if k in trained
            },
            "evaluated_model": str(run_dir.resolve()),
            "dataset": str(data),
            "synthetic_data": is_synthetic(data),
            "data_report": report.to_dict(),
        },
    )
    # The card needs the model's config; the weights stay in the model's own folder.
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(run_dir / name, out_dir / name)
    write_yaml(
        out_dir / "run_config.yaml",
        {**config, "output_dir": str(out_dir), "evaluated_model": str(run_dir), "data_dir": str(data)},
    )
    write_card(out_dir)
    return metrics
