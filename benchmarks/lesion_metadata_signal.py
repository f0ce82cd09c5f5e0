"""How much can fusing image and metadata gain on the synthetic HAM10000 sample? (the planted metadata signal)

Reads a finished image-only lesion run (recipes/lesion_classification.py on the default synthetic sample) and the
sample itself; fits the metadata-only baseline (HistGradientBoosting on age, sex, localization; training split),
scores the validation split with the saved image model, fits a logistic stacking of (image logit, metadata logit)
on VALIDATION and scores it on test. Prints and writes the ablation (hf_medai.evaluation.modality_ablation).

    accelerate launch recipes/lesion_classification.py --output_dir /tmp/lm_img
    python benchmarks/lesion_metadata_signal.py /tmp/lm_img [--out benchmarks/results/lesion_metadata_signal.json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--out", default=None)
    parser.add_argument("--n_bootstrap", type=int, default=1000)
    args = parser.parse_args()

    import yaml
    from sklearn.linear_model import LogisticRegression
    from transformers import pipeline

    from hf_medai.data.lesions import lesion_splits, load_lesion_images
    from hf_medai.evaluation.modality_ablation import modality_ablation, tabular_baseline

    config = yaml.safe_load(open(f"{args.run_dir}/run_config.yaml"))
    dataset, class_names, _, source = load_lesion_images(
        config.get("data_dir"),
        config.get("data_format", "auto"),
        "binary",
        False,
        config.get("max_image_side", 512),
        config.get("synthetic_n", 4000),
    )
    splits = lesion_splits(dataset, config["val_fraction"], config["test_fraction"], config["split_seed"])
    frames = {k: splits[k].remove_columns("image").to_pandas() for k in ("train", "validation", "test")}
    predictions = pd.read_csv(f"{args.run_dir}/predictions.csv").set_index("id")
    if set(predictions.index) != set(frames["test"]["id"]):
        raise SystemExit("the run's test ids are not this split's: was it trained on another sample or split?")
    positive = class_names[1]

    # Image model: the run's own test scores; validation scored here with the saved model (plain HF pipeline).
    classifier = pipeline("image-classification", model=args.run_dir, device="cpu")
    val_out = classifier(list(splits["validation"]["image"]), top_k=None, batch_size=64)
    image = {
        "validation": np.array([next(d["score"] for d in out if d["label"] == positive) for out in val_out]),
        "test": predictions.loc[frames["test"]["id"], f"score_{positive}"].to_numpy(),
    }
    check = classifier(list(splits["test"]["image"][:32]), top_k=None)
    drift = np.abs(
        np.array([next(d["score"] for d in o if d["label"] == positive) for o in check]) - image["test"][:32]
    )
    print(f"pipeline vs predictions.csv on 32 test images: max |score difference| {drift.max():.2e}")

    # Metadata model: trained on the training split only.
    y = {k: np.asarray(splits[k]["label"]) for k in frames}
    _, meta = tabular_baseline(
        frames["train"],
        y["train"],
        {k: frames[k] for k in ("validation", "test")},
        categorical=["sex", "site"],
        numeric=["age"],
        seed=0,
    )

    # Stacking: logistic regression on the two logits, fitted on validation only.
    def logits(k):
        clip = lambda p: np.clip(p, 1e-6, 1 - 1e-6)  # noqa: E731
        return np.column_stack([np.log(clip(s) / (1 - clip(s))) for s in (image[k], meta[k][:, 1])])

    stack = LogisticRegression(C=1.0).fit(logits("validation"), y["validation"])
    fused = {k: stack.predict_proba(logits(k)) for k in ("validation", "test")}
    scores = {
        k: {"image": image[k], "metadata": meta[k][:, 1], "stacked": fused[k][:, 1]} for k in ("validation", "test")
    }
    ablation = modality_ablation(
        y["validation"],
        scores["validation"],
        y["test"],
        scores["test"],
        class_names,
        fused="stacked",
        n_bootstrap=args.n_bootstrap,
    )
    ablation["stacking_coefficients"] = {
        "image_logit": float(stack.coef_[0, 0]),
        "metadata_logit": float(stack.coef_[0, 1]),
    }
    ablation["sample"] = str(source)
    for r in ablation["rows"]:
        diff = (
            ""
            if r["fused_minus_model"] is None
            else (
                f"  stacked - it {r['fused_minus_model']:+.3f} ({r['fused_minus_model_ci_low']:+.3f} to {r['fused_minus_model_ci_high']:+.3f})"
            )
        )
        print(
            f"{r['model']:9s} val {r['val_auroc']:.3f}  test {r['test_auroc']:.3f} "
            f"({r['test_auroc_ci_low']:.3f}-{r['test_auroc_ci_high']:.3f}){diff}"
        )
    print(f"best single on validation: {ablation['best_single']}; fused gain: {ablation['fused_gain']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(ablation, f, indent=2)


if __name__ == "__main__":
    main()
