"""Does pre-training pay off when labels are scarce? Measure it, whatever the answer.

Trains a classifier from a baseline encoder and from a pre-trained one with 1%, 10% and 100% of the training
patients' labels: the same split, validation and test examples, seed and number of optimizer steps for every run,
the final weights of each (no checkpoint chosen on validation, so the validation set, which a 1%-label project would
not have whole, only sets the operating threshold). One table: each run's test AUROC with its 95% CI, and per
fraction the paired bootstrap difference pre-trained - baseline.
- `--modality lesion` (default): recipes/lesion_classification.py runs; the tiny ViT from random weights vs the same
  ViT pre-trained by MAE on the synthetic unlabelled pool (recipes/image_pretraining.py's default, made once, cached).
- `--modality notes`: recipes/clinical_outcomes.py runs (in-hospital mortality unless --classifier_args says
  otherwise); MiniLM as is vs MiniLM after MLM on the training patients' notes (recipes/clinical_pretraining.py's
  default, made once, cached): NYUTron's two stages, measured.

Offline defaults (synthetic data, CPU):
    accelerate launch recipes/label_efficiency.py --output_dir runs/label_efficiency
    accelerate launch recipes/label_efficiency.py --modality notes --output_dir runs/label_efficiency_notes
Your encoders: --pretrained <run folder or hub id>, --scratch <another> to compare two encoders; e.g. ImageNet
pre-training: --pretrained efficientnet-lite0-imagenet --scratch efficientnet-lite0 (the same EfficientNet-Lite0 from
random weights), recipes/configs/label_efficiency/efficientnet_imagenet.yaml.

Its own run folder: README.md (the experiment's card), metrics.json and label_efficiency.md (the table),
label_efficiency.png (AUROC against the fraction of labels), run_config.yaml, and one classifier run folder per
(encoder, fraction), e.g. pretrained_10pct/, each with its own card. `--resume true` reuses finished runs and
continues an interrupted one from its last checkpoint.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hf_medai.config import RunArguments, parse_args, resolved_config
from hf_medai.errors import ConfigError, run_main
from hf_medai.io import atomic_path, write_json, write_text, write_yaml
from hf_medai.lesion_runs import DEFAULT_ENCODER, paired_runs, train_lesion_classifier
from hf_medai.run_folder import cached_default_run, load_recipe_module, prepare_run_folder
from hf_medai.run_summary import print_run_summary, with_ci


@dataclass
class ExperimentArguments:
    output_dir: str = field(default="runs/label_efficiency", metadata={"help": "The experiment's run folder."})
    modality: Literal["lesion", "notes"] = field(
        default="lesion",
        metadata={"help": "lesion: recipes/lesion_classification.py runs; notes: recipes/clinical_outcomes.py runs."},
    )
    pretrained: str | None = field(
        default=None,
        metadata={
            "help": "The pre-trained encoder (a run folder of image_pretraining.py / clinical_pretraining.py, or a "
            "hub id). Default: that recipe's offline default run (MAE on the synthetic unlabelled pool; MiniLM + "
            "MLM on the synthetic training patients' notes), made once and cached."
        },
    )
    scratch: str | None = field(
        default=None,
        metadata={
            "help": "What to compare it with. Default: lesion, the same ViT with random weights; notes, MiniLM as is."
        },
    )
    fractions: list[float] = field(
        default_factory=lambda: [0.01, 0.1, 1.0], metadata={"help": "Fractions of the training patients' labels."}
    )
    max_steps: int = field(default=300, metadata={"help": "Optimizer steps of every run, whatever its fraction."})
    seed: int = field(default=0, metadata={"help": "Seed of every run (and of which patients' labels are kept)."})
    classifier_config: str | None = field(
        default=None, metadata={"help": "YAML of the classifier recipe's settings, for every run."}
    )
    classifier_args: str = field(
        default="", metadata={"help": "Extra flags of the classifier recipe for every run, one string."}
    )
    n_bootstrap: int = field(default=1000, metadata={"help": "Paired bootstrap resamples of each AUROC difference."})
    resume: bool = field(default=False, metadata={"help": "Continue an interrupted experiment in output_dir."})

    def __post_init__(self):
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ConfigError(f"--fractions {self.fractions}: each must be in (0, 1]")
        if self.max_steps < 1:
            raise ConfigError("--max_steps must be at least 1")


CONFIG_DATACLASSES = (ExperimentArguments, RunArguments)
ENCODERS = ("scratch", "pretrained")
NOUN = {"lesion": "images", "notes": "admissions"}


PRETRAINING = {  # modality: (pre-training recipe, cache folder of its offline default run)
    "lesion": ("image_pretraining", DEFAULT_ENCODER),
    "notes": ("clinical_pretraining", "minilm-mlm-synthetic-mimic-iii-v3"),
}


def default_pretrained_encoder(modality: str = "lesion") -> Path:
    """The offline default's encoder: the pre-training recipe's own default run (lesion: the tiny ViT pre-trained by
    MAE on the synthetic unlabelled pool, as the lesion recipe's default; notes: MiniLM after MLM on the synthetic
    training patients' notes), made once and cached; an interrupted pre-training resumes."""
    recipe, name = PRETRAINING[modality]
    return cached_default_run(Path(__file__).with_name(f"{recipe}.py"), name)


def run_name(encoder: str, fraction: float) -> str:
    return f"{encoder}_{fraction * 100:g}pct"


def main(args=None):
    exp, run_args = parse_args(*CONFIG_DATACLASSES, args=args)
    out = prepare_run_folder(exp.output_dir, resume=exp.resume, overwrite=run_args.overwrite_output_dir)
    if exp.pretrained is None:
        exp.pretrained = str(default_pretrained_encoder(exp.modality))
    sources = {"scratch": exp.scratch, "pretrained": exp.pretrained}
    train = (
        train_lesion_classifier
        if exp.modality == "lesion"
        else load_recipe_module(Path(__file__).with_name("clinical_outcomes.py")).main
    )

    # Train! Every (encoder, fraction): same split, seed and optimizer steps; the final weights are kept.
    common = ["--config", exp.classifier_config] if exp.classifier_config else []
    common += ["--seed", str(exp.seed), *shlex.split(exp.classifier_args)]
    common += ["--max_steps", str(exp.max_steps), "--eval_strategy", "no", "--load_best_model_at_end", "false"]
    common += ["--save_strategy", "steps", "--save_steps", str(max(1, exp.max_steps // 3)), "--save_total_limit", "1"]
    runs = {}
    for fraction in sorted(exp.fractions):
        for encoder in ENCODERS:
            folder = out / run_name(encoder, fraction)
            runs[(encoder, fraction)] = folder
            if (folder / "metrics.json").exists():
                continue  # finished before an interruption
            again = ["--resume_from_checkpoint", "last"] if any(folder.glob("checkpoint-*")) else []
            model = ["--model_name_or_path", sources[encoder]] if sources[encoder] else []
            if not model and exp.modality == "lesion":
                model = ["--from_scratch", "true"]  # the lesion recipe's own default is the pre-trained encoder
            train(
                [*common, *model, *again, "--label_fraction", str(fraction), "--output_dir", str(folder)]
                + ([] if again else ["--overwrite_output_dir", "true"])
            )

    # One table, whatever the result
    result = summarise(runs, sources, exp)
    write_json(out / "metrics.json", {"recipe": "label_efficiency", **result})
    write_text(out / "label_efficiency.md", result["table"] + "\n")
    plot(result, out / "label_efficiency.png")
    write_text(out / "README.md", experiment_card(result))
    write_yaml(out / "run_config.yaml", resolved_config(exp, run_args))
    print(result["table"])
    low = result["rows"][0]
    print_run_summary(
        out,
        f"pre-trained - scratch at {low['fraction']:.0%} of the labels: AUROC "
        f"{with_ci(low['difference'], low['difference_ci_low'], low['difference_ci_high'])}, paired",
    )
    return out


def summarise(runs: dict, sources: dict, exp: ExperimentArguments) -> dict:
    """Per fraction: both runs' test AUROC (95% CI), training images, and the paired difference pre-trained - scratch."""
    rows, synthetic = [], False
    for fraction in sorted({f for _, f in runs}):
        m = {e: json.loads((runs[(e, fraction)] / "metrics.json").read_text()) for e in ENCODERS}
        diff = paired_runs(runs[("pretrained", fraction)], runs[("scratch", fraction)], exp.n_bootstrap)
        synthetic = synthetic or bool(m["scratch"].get("synthetic_data"))
        rows_, counts = training_labels(m["scratch"])
        row = {"fraction": fraction, "train_examples": rows_, "train_label_counts": counts}
        for e in ENCODERS:
            row.update({f"{e}_auroc": m[e]["auroc"], f"{e}_auroc_ci_low": m[e]["auroc_ci_low"]})
            row[f"{e}_auroc_ci_high"] = m[e]["auroc_ci_high"]
        row.update({k: diff[k] for k in ("difference", "difference_ci_low", "difference_ci_high")})
        rows.append(row)
    test = m["scratch"]
    result = {
        "rows": rows,
        "pretrained": sources["pretrained"],
        "scratch": sources["scratch"]
        or {"lesion": "the same ViT from random weights", "notes": "the base encoder as is"}[exp.modality],
        "optimizer_steps": exp.max_steps,
        "seed": exp.seed,
        "modality": exp.modality,
        "outcome": test.get("outcome") or test.get("positive_class"),
        "test_examples": test["n"],
        "test_positives": test.get("n_positive"),
        "positive_class": test.get("positive_class"),
        "synthetic_data": synthetic,
        "pretrained_weights": m["pretrained"].get("pretrained_weights"),  # packaged weights: what, licence, origin
        "n_bootstrap": exp.n_bootstrap,
    }
    result["table"] = table_markdown(result)
    return result


def training_labels(m: dict) -> tuple[int, dict | None]:
    """(labelled training examples, their label counts) of a classifier run's metrics.json."""
    if "splits" in m:  # lesion classifier: the split report of the (subset) training split
        return m["splits"]["train"]["rows"], m["splits"]["train"]["label_counts"]
    report = m["data_report"]
    subset = report.get("label_fraction") or {}
    if subset:
        return subset["train_admissions"], subset.get("label_counts")
    return report["splits"]["train"]["rows"], report["splits"]["train"].get("counts")


def table_markdown(r: dict) -> str:
    def ci(v, lo, hi):
        return "n/a" if v is None else f"{v:.3f} ({lo:.3f}–{hi:.3f})" if lo is not None else f"{v:.3f}"

    lines = [
        f"Every run: {r['optimizer_steps']} optimizer steps, seed {r['seed']}, final weights; tested on the same "
        f"{r['test_examples']} held-out {NOUN[r['modality']]} ({r['test_positives']} `{r['positive_class']}`).",
        "",
        f"| Labels used | Training {NOUN[r['modality']]} | Scratch AUROC (95% CI) | Pre-trained AUROC (95% CI) "
        "| Pre-trained − scratch (paired 95% CI) |",
        "|---|--:|--:|--:|--:|",
    ]
    for row in r["rows"]:
        d = row["difference"]
        lo, hi = row["difference_ci_low"], row["difference_ci_high"]
        diff = f"{d:+.3f}" + (f" ({lo:+.3f} to {hi:+.3f})" if lo is not None else "")
        lines.append(
            f"| {row['fraction']:.0%} | {row['train_examples']} | "
            f"{ci(row['scratch_auroc'], row['scratch_auroc_ci_low'], row['scratch_auroc_ci_high'])} | "
            f"{ci(row['pretrained_auroc'], row['pretrained_auroc_ci_low'], row['pretrained_auroc_ci_high'])} | {diff} |"
        )
    return "\n".join(lines)


def plot(r: dict, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = [row["fraction"] * 100 for row in r["rows"]]
    for e, label in (("scratch", "from scratch"), ("pretrained", "pre-trained")):
        y = [row[f"{e}_auroc"] for row in r["rows"]]
        low = [v - (row[f"{e}_auroc_ci_low"] or v) for v, row in zip(y, r["rows"])]
        high = [(row[f"{e}_auroc_ci_high"] or v) - v for v, row in zip(y, r["rows"])]
        ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=label)
    ax.set(xscale="log", xlabel="training labels used (%)", ylabel="test AUROC (95% CI)", title="Label efficiency")
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.legend(loc="lower right")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def experiment_card(r: dict) -> str:
    noun = NOUN[r["modality"]]
    model = {"lesion": "a lesion classifier", "notes": f"a note classifier of `{r['outcome']}`"}[r["modality"]]
    pw = r.get("pretrained_weights")  # packaged weights pre-trained on real data (ImageNet), not on the synthetic pool
    if r["synthetic_data"] and pw:
        caveat = (
            f"Fine-tuned and tested on synthetic images, from {pw['weights']} ({pw['package']} "
            f"{pw['package_version']}, {pw['license']}): this shows what those features give on synthetic lesions, "
            "not how much they help on real patients."
        )
    elif r["synthetic_data"]:
        caveat = (
            f"Pre-trained, trained and tested on synthetic {'images' if r['modality'] == 'lesion' else 'notes'}: "
            "this shows the experiment works, not how much pre-training helps on real patients."
        )
    else:
        caveat = "One split and one seed: repeat with other seeds before concluding."
    fractions = ", ".join(f"{row['fraction']:.0%}" for row in r["rows"])
    return f"""# Label efficiency: a pre-trained encoder vs {r["scratch"]}

> **Research use only.** An experiment, not a model: each classifier it trained has its own card in its folder.

How much does starting from `{r["pretrained"]}` rather than from {r["scratch"]} help {model} when only
{fractions} of the training patients' labels are available? Every run shares the split, validation and test
{noun}, seed and number of optimizer steps; the labelled patients are drawn per class, nested (the smaller
fractions' patients are among the larger ones').

## Result
{r["table"]}

![AUROC against the fraction of labels](label_efficiency.png)

## How to read it
- The paired interval resamples the test {noun} (both runs scored on each resample); it does not cover training
  randomness. One seed, one split.
- Each run keeps its final weights; validation only sets the operating threshold, so checkpoint selection does
  not borrow labels a small project would not have.
- At the smallest fraction the training set holds a handful of positives, and the intervals are wide.
- {caveat}

## Reproduce
`accelerate launch recipes/label_efficiency.py --config run_config.yaml` (this folder's settings).
"""


if __name__ == "__main__":
    run_main(main)
