"""Model cards, written from the run folder alone: template in model_cards/ + metrics.json + run_config.yaml.

`write_card(run_dir)` is what recipes call at the end and what `hf-medai card RUN_DIR` runs again.
The card is a `huggingface_hub.ModelCard` whose YAML metadata carries the eval results (model-index).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from hf_medai.io import write_text

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "model_cards"

BINARY_METRICS = [
    ("auroc", "AUROC"),
    ("auprc", "AUPRC"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("ppv", "PPV"),
    ("npv", "NPV"),
    ("accuracy", "Accuracy"),
    ("ece", "ECE"),
    ("brier", "Brier score"),
]
MULTICLASS_METRICS = [
    ("auroc", "AUROC (macro one-vs-rest)"),
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("ece", "ECE (top label)"),
]
# Hub model-index metric types for the main numbers.
INDEX_METRICS = {"auroc": "roc_auc", "auprc": "average_precision", "balanced_accuracy": "balanced_accuracy",
                 "sensitivity": "recall", "specificity": "specificity", "accuracy": "accuracy", "ece": "ece"}
HYPERPARAMETERS = ["learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                   "gradient_accumulation_steps", "weight_decay", "warmup_steps", "lr_scheduler_type", "seed",
                   "bf16", "class_balance", "augment", "metric_for_best_model"]


def fmt(value: Any, digits: int = 3) -> str:
    """How every number appears in a card (tests parse them back)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("transformers", "torch", "datasets", "accelerate", "evaluate", "fairlearn", "scikit-learn"):
        try:
            out[pkg.replace("-", "_")] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "n/a"
    return out


def load_run(run_dir: str | Path) -> tuple[dict, dict]:
    run_dir = Path(run_dir)
    metrics_path, config_path = run_dir / "metrics.json", run_dir / "run_config.yaml"
    for p in (metrics_path, config_path):
        if not p.is_file():
            raise FileNotFoundError(f"{run_dir} is not a complete run folder: {p.name} is missing")
    return json.loads(metrics_path.read_text()), yaml.safe_load(config_path.read_text()) or {}


def card_data(m: dict, config: dict):
    from huggingface_hub import EvalResult, ModelCardData

    task = m.get("task", "image-classification")
    dataset_name = "synthetic HAM10000-format sample" if m.get("synthetic_data") else str(m.get("dataset"))
    results = [
        EvalResult(task_type=task, dataset_type="custom", dataset_name=dataset_name, dataset_split="test",
                   metric_type=INDEX_METRICS[k], metric_name=k, metric_value=round(float(m[k]), 4))
        for k in INDEX_METRICS
        if isinstance(m.get(k), (int, float))
    ]
    base = m.get("base_model") if config.get("model_name_or_path") else None
    return ModelCardData(
        model_name=Path(config.get("output_dir", "model")).name,
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag=task,
        base_model=base,
        tags=["medical", "hf-medai", m.get("recipe", "")] + (["synthetic-data"] if m.get("synthetic_data") else []),
        metrics=sorted({INDEX_METRICS[k] for k in INDEX_METRICS if k in m}),
        eval_results=results or None,
    )


def _image_classifier_context(m: dict, config: dict, run_dir: Path) -> dict:
    """Template variables specific to image classifiers."""
    model_dir = Path(m.get("evaluated_model") or run_dir)
    model_config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    binary = m.get("positive_class") is not None
    return dict(
        architecture=(model_config.get("architectures") or ["?"])[0],
        image_size=model_config.get("image_size", "?"),
        metric_labels=BINARY_METRICS if binary else MULTICLASS_METRICS,
        operating_points=[(k, k.replace("_", " ")) for k in m
                          if k.startswith(("specificity_at_", "sensitivity_at_")) and not k.endswith(("_ci_low", "_ci_high"))],
        worst_fitzpatrick=(m.get("subgroups") or {}).get("fitzpatrick", {}).get("worst", {}).get("auroc"),
        model_path=str(model_dir),
        task_label=f"{m['positive_class']} vs rest" if binary else f"{len(m['class_names'])} classes",
    )


# metrics.json "task" -> (template in model_cards/, function giving that template's own variables).
# A new kind of model adds one entry here and one template; the shared variables come from render_card.
TEMPLATES = {"image-classification": ("image_classifier.md", _image_classifier_context)}


def render_card(run_dir: str | Path):
    """Return the `huggingface_hub.ModelCard` for a run folder."""
    import jinja2
    from huggingface_hub import ModelCard

    from hf_medai import __version__
    from hf_medai.evaluation.fairness import subgroup_table_markdown

    run_dir = Path(run_dir)
    m, config = load_run(run_dir)
    if m.get("task") not in TEMPLATES:
        raise ValueError(f"{run_dir}/metrics.json: no card template for task {m.get('task')!r}")
    template, task_context = TEMPLATES[m["task"]]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.globals.update(fmt=fmt, subgroup_markdown=subgroup_table_markdown)
    body = env.get_template(template).render(
        m=m,
        config=config,
        model_name=f"{m.get('recipe', 'model')}: {Path(config.get('output_dir', str(run_dir))).name}",
        synthetic=bool(m.get("synthetic_data")),
        hf_medai_version=__version__,
        versions=_versions(),
        date=_dt.date.today().isoformat(),
        license="apache-2.0",
        n_bootstrap=config.get("n_bootstrap", "?"),
        min_group_size=config.get("min_group_size", "?"),
        hyperparameters=[(k, config[k]) for k in HYPERPARAMETERS if k in config],
        device=m.get("throughput", {}).get("device", "CPU"),
        **{"model_path": str(run_dir), **task_context(m, config, run_dir)},
    )
    content = f"---\n{card_data(m, config).to_yaml()}\n---\n{body.lstrip()}"
    return ModelCard(content)


def write_card(run_dir: str | Path) -> Path:
    card = render_card(run_dir)
    return write_text(Path(run_dir) / "README.md", str(card))
