"""Model cards, written from the run folder alone: template in hf_medai/model_cards/ + metrics.json + run_config.yaml.

`write_card(run_dir)` is what recipes call at the end and what `hf-medai card RUN_DIR` runs again.
The card is a `huggingface_hub.ModelCard` whose YAML metadata carries the eval results (model-index).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from hf_medai.io import write_text
from hf_medai.kinds import Kind, kind_of
from hf_medai.reporting_text import TRAINING_SETTINGS, first_upper, fmt, kept_weights, model_config, short_architecture
from hf_medai.run_folder import card_sections, library_versions, load_run
from hf_medai.tripod import tripod_rows

__all__ = ["card_data", "fmt", "kept_weights", "render_card", "write_card"]

TEMPLATES_DIR = Path(__file__).resolve().parent / "model_cards"  # package data: a wheel install has them

# Hub model-index metric types for the main numbers.
INDEX_METRICS = {
    "auroc": "roc_auc",
    "auprc": "average_precision",
    "balanced_accuracy": "balanced_accuracy",
    "sensitivity": "recall",
    "specificity": "specificity",
    "accuracy": "accuracy",
    "ece": "ece",
    "mae": "mae",
    "rmse": "rmse",
    "perplexity": "perplexity",
}
# Multiple-choice QA adapters (medqa_lora) report accuracy read two ways.
INDEX_METRICS.update({"accuracy_loglik": "accuracy", "accuracy_generate": "accuracy"})
HYPERPARAMETERS = [
    *TRAINING_SETTINGS,
    "lr_scheduler_type",
    "seed",
    "bf16",
    "class_balance",
    "augment",
    "metric_for_best_model",
]


def card_data(m: dict, config: dict, kind: Kind | None = None):
    """The card's YAML metadata: the Hub model-index with the kind's headline metrics on the test split."""
    from huggingface_hub import EvalResult, ModelCardData

    kind = kind or kind_of(m)
    task = m.get("task", kind.task)
    dataset_name = m.get("dataset_label") or str(m.get("dataset"))
    keys = [k for k in kind.metric_keys if k in INDEX_METRICS]
    results = [
        EvalResult(
            task_type=task,
            dataset_type="custom",
            dataset_name=dataset_name,
            dataset_split="test",
            metric_type=INDEX_METRICS[k],
            metric_name=k,
            metric_value=round(float(m[k]), 4),
        )
        for k in keys
        if isinstance(m.get(k), (int, float))
    ]
    base = m.get("base_model") if config.get("model_name_or_path") else None
    if "hub_base_model" in m:  # the recipe knows its base's hub id (None for a local folder)
        base = m["hub_base_model"]
    return ModelCardData(
        model_name=Path(config.get("output_dir", "model")).name,
        license="apache-2.0",
        library_name=m.get("library_name", "transformers"),
        pipeline_tag=m.get("pipeline_tag", task),
        base_model=base,
        tags=["medical", "hf-medai", m.get("recipe", "")] + (["synthetic-data"] if m.get("synthetic_data") else []),
        metrics=sorted({INDEX_METRICS[k] for k in keys if k in m}),
        eval_results=results or None,
    )


def _template_environment(kind: Kind):
    """Jinja environment for `kind`'s template: the package's templates (and macros), plus the kind's own text."""
    import jinja2

    from hf_medai.evaluation.subgroup_table import subgroup_table_markdown

    loaders = [jinja2.FileSystemLoader(TEMPLATES_DIR)]
    if kind.template_text is not None:
        loaders.insert(0, jinja2.DictLoader({kind.template: kind.template_text}))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    env.globals.update(
        fmt=fmt, subgroup_markdown=subgroup_table_markdown, tripod_rows=tripod_rows, kept_weights=kept_weights
    )
    env.filters["first_upper"] = first_upper
    return env


def render_card(run_dir: str | Path, run: tuple[dict, dict] | None = None, versions: dict[str, str] | None = None):
    """Return the `huggingface_hub.ModelCard` for a run folder: its kind's template (metrics.json "kind").

    `run` (`load_run`'s (metrics, config)) and `versions` (`run_folder.library_versions()`), when given, are used
    instead of computing them again.
    """
    from huggingface_hub import ModelCard

    from hf_medai import __version__

    run_dir = Path(run_dir)
    m, config = run if run is not None else load_run(run_dir)
    kind = kind_of(m)
    body = (
        _template_environment(kind)
        .get_template(kind.template)
        .render(
            m=m,
            config=config,
            kind=kind,
            # each template writes its title from the run's facts (task, classes, architecture); this is the folder
            model_name=Path(config.get("output_dir", str(run_dir))).name,
            architecture_short=short_architecture((model_config(run_dir).get("architectures") or ["?"])[0]),
            synthetic=bool(m.get("synthetic_data")),
            hf_medai_version=__version__,
            versions=versions if versions is not None else library_versions(),
            date=_dt.date.today().isoformat(),
            license="apache-2.0",
            n_bootstrap=config.get("n_bootstrap", "?"),
            min_group_size=config.get("min_group_size", "?"),
            min_group_class_count=config.get("min_group_class_count", "?"),
            hyperparameters=[(k, config[k]) for k in HYPERPARAMETERS if k in config],
            device=m.get("throughput", {}).get("device", "CPU"),
            **{"model_path": str(run_dir), **kind.context(m, config, run_dir)},
        )
    )
    content = f"---\n{card_data(m, config, kind).to_yaml()}\n---\n{body.lstrip()}"
    return ModelCard(content)


def write_card(run_dir: str | Path) -> Path:
    """Write README.md (the Hub card) and, from its sections and the same run facts, model_card.chai.xml (CHAI).

    The one place that writes both: `chai` renders from the facts handed to it and imports nothing of this module.
    """
    from hf_medai.chai import write_chai_card

    run, versions = load_run(run_dir), library_versions()
    text = str(render_card(run_dir, run=run, versions=versions))
    path = write_text(Path(run_dir) / "README.md", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # as read back from the file (universal newlines)
    body = text.split("\n---\n", 1)[1] if text.startswith("---\n") and "\n---\n" in text else text
    write_chai_card(run_dir, run=run, body=body, sections=card_sections(body), versions=versions)
    return path
