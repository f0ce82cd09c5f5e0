"""Does adding generated images of the rarest class help a lesion classifier? Measure it, whatever the answer.

Generates N images of the rarest class with a trained `LesionDiffusionPipeline`, then trains the lesion
classifier twice with the same data, split, seed and number of optimizer steps: once as is (baseline), once
with the generated images added to the TRAINING split only. Both are tested on the same real held-out
patients, which the generator never saw (the data and split settings are taken from the diffusion run).

    accelerate launch recipes/augmentation_experiment.py \
        --config recipes/configs/augmentation_experiment/synthetic.yaml

Its own run folder, OUTPUT_DIR: README.md (the experiment's card), metrics.json and augmentation.json (the
comparison), augmentation.md, run_config.yaml, generated/, and the two lesion classifier run folders baseline/ and
augmented/, each with its own cards. The diffusion run's folder is only read.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import yaml
from sklearn.metrics import recall_score

from hf_medai.config import RunArguments, parse_args, resolved_config
from hf_medai.errors import ConfigError, run_main
from hf_medai.io import write_json, write_text, write_yaml
from hf_medai.lesion_runs import paired_runs, train_lesion_classifier
from hf_medai.lesion_split import SPLIT_KEYS
from hf_medai.pipelines.lesion_diffusion import LesionDiffusionPipeline
from hf_medai.pipelines.sampling import generate, save_samples
from hf_medai.run_folder import prepare_run_folder
from hf_medai.run_summary import print_run_summary, with_ci


@dataclass
class ExperimentArguments:
    diffusion_run: str = field(
        default="runs/image_diffusion", metadata={"help": "A run folder of recipes/image_diffusion.py."}
    )
    output_dir: str = field(
        default="runs/augmentation_experiment", metadata={"help": "Where both classifier runs and the table go."}
    )
    n_generated: int = field(
        default=200, metadata={"help": "Generated images of the rarest class added to the training split."}
    )
    target_class: str | None = field(
        default=None, metadata={"help": "Class to generate (default: the rarest in the generator's training split)."}
    )
    scheduler: Literal["dpmsolver++", "ddim", "ddpm"] = field(default="dpmsolver++", metadata={"help": "Sampler."})
    inference_steps: int = field(default=20, metadata={"help": "Sampling steps."})
    guidance_scale: float = field(default=2.0, metadata={"help": "Classifier-free guidance scale."})
    seed: int = field(default=0, metadata={"help": "Seed of generation and of BOTH classifier runs."})
    lesion_config: str | None = field(
        default=None,
        metadata={
            "help": "YAML of lesion classifier settings (as recipes/lesion_classification.py takes) for both runs."
        },
    )
    lesion_args: str = field(
        default="",
        metadata={
            "help": "Extra lesion classifier flags for both runs, one string: --lesion_args '--num_train_epochs 5'."
        },
    )
    n_bootstrap: int = field(default=1000, metadata={"help": "Paired bootstrap resamples of the AUROC difference."})


CONFIG_DATACLASSES = (ExperimentArguments, RunArguments)


def main(args=None):
    exp, run_args = parse_args(*CONFIG_DATACLASSES, args=args)
    out = prepare_run_folder(exp.output_dir, resume=False, overwrite=run_args.overwrite_output_dir)

    # 0. The generator's run folder, read only: its classes, its training split, its data and split settings
    diffusion_run = Path(exp.diffusion_run)
    diff_metrics = json.loads((diffusion_run / "metrics.json").read_text())
    diff_config = yaml.safe_load((diffusion_run / "run_config.yaml").read_text())
    train_counts = diff_metrics["splits"]["train"]["label_counts"]
    target = exp.target_class or min(train_counts, key=train_counts.get)
    if target not in diff_metrics["class_names"]:
        raise ConfigError(f"--target_class {target!r}: the generator knows {diff_metrics['class_names']}")

    # 1. Generate the rarest class's images (labelled synthetic in every file).
    pipe = LesionDiffusionPipeline.from_pretrained(diffusion_run)
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    pipe.set_progress_bar_config(disable=True)
    c = pipe.class_ids(target)[0]
    images, images_per_second = generate(
        pipe,
        np.full(exp.n_generated, c),
        exp.scheduler,
        exp.inference_steps,
        exp.guidance_scale,
        batch_size=64,
        seed=exp.seed,
    )
    save_samples(images, np.full(len(images), c), pipe.config.class_names, out / "generated")

    # 2. Two classifier runs: same data, split, seed and optimizer steps.
    common = []
    if exp.lesion_config:
        common += ["--config", exp.lesion_config]
    for key in SPLIT_KEYS:
        if diff_config.get(key) is not None:
            common += [f"--{key}", str(diff_config[key])]
    common += ["--seed", str(exp.seed), "--overwrite_output_dir", "true", *shlex.split(exp.lesion_args)]
    steps = train_lesion_classifier(common + ["--output_dir", str(out / "baseline")])["training"]["global_step"]
    train_lesion_classifier(
        common
        + [
            "--output_dir",
            str(out / "augmented"),
            "--extra_train_dir",
            str(out / "generated"),
            "--max_steps",
            str(steps),
        ]
    )

    # 3. One table, whatever the result, in this experiment's own run folder and card
    result = compare(out / "baseline", out / "augmented", target, exp.n_bootstrap)
    result.update(
        target_class=target,
        n_generated=len(images),
        optimizer_steps=steps,
        seed=exp.seed,
        generator=str(diffusion_run),
        sampler=f"{exp.scheduler}, {exp.inference_steps} steps, guidance {exp.guidance_scale}",
        generation_images_per_second=round(images_per_second, 3),
    )
    result["table"] = table_markdown(result)
    write_json(out / "augmentation.json", result)
    write_json(out / "metrics.json", {"recipe": "augmentation_experiment", **result})
    write_text(out / "augmentation.md", result["table"] + "\n")
    write_text(out / "README.md", experiment_card(result, diff_metrics))
    write_yaml(out / "run_config.yaml", resolved_config(exp, run_args))
    print(result["table"])
    d = result["auroc_difference"]
    print_run_summary(
        out,
        f"AUROC difference (augmented - baseline) "
        f"{with_ci(d['difference'], d['difference_ci_low'], d['difference_ci_high'])}, paired",
    )
    return out


def compare(baseline: Path, augmented: Path, target: str, n_bootstrap: int) -> dict:
    """Test-set numbers of both runs from their predictions.csv (scikit-learn), and a paired AUROC difference."""
    rows = {}
    frames = {
        name: pd.read_csv(path / "predictions.csv", keep_default_na=False)
        for name, path in (("baseline", baseline), ("augmented", augmented))
    }
    metrics = {
        name: json.loads((path / "metrics.json").read_text())
        for name, path in (("baseline", baseline), ("augmented", augmented))
    }
    for name, frame in frames.items():
        m = metrics[name]
        pred = frame["pred_at_threshold"] if "pred_at_threshold" in frame else frame["pred"]
        extra = (m["data_report"].get("extra_train_images") or {}).get("per_class", {})
        rows[name] = {
            "train_images_target_class": m["splits"]["train"]["label_counts"].get(target, 0) - extra.get(target, 0),
            "generated_images_added": extra.get(target, 0),
            "sensitivity_target_class": float(recall_score(frame["label"], pred, labels=[target], average="macro")),
            "auroc": m.get("auroc"),
            "auroc_ci_low": m.get("auroc_ci_low"),
            "auroc_ci_high": m.get("auroc_ci_high"),
            "balanced_accuracy": m.get("balanced_accuracy"),
            "test_images": len(frame),
            "test_images_target_class": int((frame["label"] == target).sum()),
        }
    a = frames["augmented"]
    diff = paired_runs(augmented, baseline, n_bootstrap)
    return {
        "runs": rows,
        "auroc_difference": diff,
        "decision_rule": "sensitivity at the validation-chosen threshold"
        if "pred_at_threshold" in a
        else "arg-max class",
    }


def experiment_card(r: dict, generator: dict) -> str:
    """README.md of the experiment's run folder: what was compared, the table, and what it can and cannot show."""
    caveat = (
        "Trained and tested on synthetic data: this shows the experiment works, not whether augmentation helps "
        "on real patients."
        if generator.get("synthetic_data")
        else "Check the generated images (generated/) before trusting either answer: memorised or implausible "
        "images change what the table means."
    )
    return f"""# Augmentation experiment: generated `{r["target_class"]}` images for a lesion classifier

> **Research use only.** An experiment, not a model: the two classifiers it trained have their own cards in
> `baseline/` and `augmented/`.

Does adding {r["n_generated"]} images of the rarest class, generated by the diffusion model in `{r["generator"]}`
({r["sampler"]}), to the training split of a lesion classifier change how well it finds that class on real held-out
patients? Both runs share data, split, seed and optimizer steps; only the training split differs.

## Result
{r["table"]}

## How to read it
- The generator saw only the classifier's training patients (same data and split settings), so the test images
  are new to both runs.
- One seed, one split: the paired interval covers test-set sampling, not training randomness. Repeat with other
  seeds before concluding.
- {caveat}

## Reproduce
`accelerate launch recipes/augmentation_experiment.py --config run_config.yaml` (this folder's settings).
"""


def table_markdown(r: dict) -> str:
    def f(x, d=3):
        return "n/a" if x is None else f"{x:.{d}f}"

    t = r["target_class"]
    lines = [
        f"Rarest class `{t}`: {r['n_generated']} generated images added to the training split; both runs "
        f"{r['optimizer_steps']} optimizer steps, seed {r['seed']}; tested on the same "
        f"{r['runs']['baseline']['test_images']} real held-out images ({r['runs']['baseline']['test_images_target_class']} `{t}`).",
        "",
        f"| Run | `{t}` training images (real + generated) | `{t}` sensitivity | AUROC (95% CI) | Balanced accuracy |",
        "|---|--:|--:|--:|--:|",
    ]
    for name, row in r["runs"].items():
        lines.append(
            f"| {name} | {row['train_images_target_class']} + {row['generated_images_added']} | "
            f"{f(row['sensitivity_target_class'])} | {f(row['auroc'])} ({f(row['auroc_ci_low'])}–{f(row['auroc_ci_high'])}) | "
            f"{f(row['balanced_accuracy'])} |"
        )
    d = r["auroc_difference"]
    lines += [
        "",
        f"AUROC difference (augmented − baseline, paired bootstrap on the same test images): "
        f"{f(d['difference'])} ({f(d['difference_ci_low'])} to {f(d['difference_ci_high'])}). Sensitivity: {r['decision_rule']}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    run_main(main)
