"""Model cards, written from the run folder alone: template in hf_medai/model_cards/ + metrics.json + run_config.yaml.

`write_card(run_dir)` is what recipes call at the end and what `hf-medai card RUN_DIR` runs again.
The card is a `huggingface_hub.ModelCard` whose YAML metadata carries the eval results (model-index).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from hf_medai.io import write_text
from hf_medai.run_folder import library_versions, load_run

TEMPLATES_DIR = Path(__file__).resolve().parent / "model_cards"  # package data: a wheel install has them

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
                 "sensitivity": "recall", "specificity": "specificity", "accuracy": "accuracy", "ece": "ece",
                 "mae": "mae", "rmse": "rmse", "perplexity": "perplexity"}
# Multiple-choice QA adapters (medqa_lora) report accuracy read two ways.
INDEX_METRICS.update({"accuracy_loglik": "accuracy", "accuracy_generate": "accuracy"})
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


METRIC_LABELS = {"auroc": "AUROC", "auprc": "AUPRC", "mae": "MAE", "rmse": "RMSE", "loss": "loss",
                 "balanced_accuracy": "balanced accuracy", "accuracy": "accuracy"}


def kept_weights(m: dict) -> str:
    """Which weights the run folder holds, in words: the checkpoint, its step and epoch, and the validation metric
    it was chosen on (metrics.json["training"]["kept_checkpoint"], written by `run_outputs.kept_checkpoint`)."""
    training = m.get("training") or {}
    kept = training.get("kept_checkpoint")
    if not kept:  # a run folder from before kept_checkpoint was recorded
        if training.get("best_checkpoint"):
            best = training.get("best_val_auroc", training.get("best_metric"))
            return f"`{Path(training['best_checkpoint']).name}`, the best on the validation metric ({fmt(best)})"
        return f"the weights of the last step ({training.get('global_step', '?')})"
    metric = METRIC_LABELS.get(kept["metric"], kept["metric"])
    epoch = "" if kept.get("epoch") is None else f", epoch {kept['epoch']:g}"
    if kept.get("checkpoint"):
        return (f"`{kept['checkpoint']}` (step {kept['step']} of {kept['final_step']}{epoch}), kept because it had the "
                f"{'highest' if kept.get('greater_is_better', True) else 'lowest'} validation {metric} "
                f"({fmt(kept['value'])}) of {kept['n_evaluations']} evaluations")
    there = "" if kept.get("value") is None else f"; validation {metric} there: {fmt(kept['value'])}"
    return f"the weights of the last step (step {kept['step']}{epoch}): no checkpoint selection{there}"


def short_architecture(name: str) -> str:
    """"ViTForImageClassification" -> "ViT", "BertForSequenceClassification" -> "Bert" (for titles)."""
    return re.sub(r"(For[A-Z]\w*|Model)$", "", name or "") or name or "?"


def _first_upper(text: str) -> str:
    text = str(text)
    return text[:1].upper() + text[1:]


def card_data(m: dict, config: dict):
    from huggingface_hub import EvalResult, ModelCardData

    task = m.get("task", "image-classification")
    dataset_name = m.get("dataset_label") or (
        "synthetic HAM10000-format sample" if m.get("synthetic_data") else str(m.get("dataset")))
    results = [
        EvalResult(task_type=task, dataset_type="custom", dataset_name=dataset_name, dataset_split="test",
                   metric_type=INDEX_METRICS[k], metric_name=k, metric_value=round(float(m[k]), 4))
        for k in INDEX_METRICS
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
        title_task=_first_upper(f"{m['positive_class']} vs rest") if binary else f"{len(m['class_names'])}-class",
    )


REGRESSION_METRICS = [("mae", "MAE (days)"), ("rmse", "RMSE (days)"), ("r2", "R²")]
OUTCOME_LABELS = {
    "mortality": ("in-hospital mortality", "binary classifier"),
    "readmission": ("30-day unplanned readmission", "binary classifier, predicted at discharge"),
    "los": ("length of stay", "classifier of length-of-stay bins"),
    "los_days": ("length of stay in days", "regression"),
    "comorbidity": ("the Charlson comorbidity group", "classifier of Charlson index bins"),
}
TEXT_SETTINGS = ["model_name_or_path", "max_length", "long_notes", "pooling", "stride", "head_tokens", "max_chunks",
                 "note_sections", "class_balance", "temperature_scaling", "learning_rate", "num_train_epochs",
                 "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "weight_decay",
                 "warmup_steps", "train_sampling_strategy", "metric_for_best_model", "seed", "bf16"]


def _counts(counts: dict | None) -> str:
    if not counts:
        return "n/a"
    total = sum(counts.values()) or 1
    return ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _text_classifier_context(m: dict, config: dict, run_dir: Path) -> dict:
    """Template variables of clinical-note classifiers and regressors (recipes/clinical_outcomes.py)."""
    model_config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    regression = m.get("class_names") is None
    binary = m.get("positive_class") is not None
    outcome = m.get("outcome", "")
    outcome_label, kind_label = OUTCOME_LABELS.get(outcome, (outcome, "classifier"))
    window = model_config.get("hf_medai_note_windows") or {"strategy": "head", "pooling": "mean"}
    max_length = window.get("max_length", config.get("max_length", "?"))
    window_text = {
        "head": f"the first {max_length} tokens of each note",
        "head_tail": f"the first {window.get('head_tokens') or 'quarter of the'} and last tokens of each note "
                     f"({max_length} in all)",
        "chunks": f"every {max_length}-token chunk of each note (stride {window.get('stride', 0)}), chunk logits "
                  f"pooled by {window.get('pooling')}",
    }.get(window.get("strategy"), "?")
    report = m.get("data_report", {})
    sections = (report.get("note_sections") or {}).get("used", "full")
    splits = report.get("splits", {})
    split_how = ("by patient (no patient in two splits), stratified by the label" if splits.get("how") == "patient"
                 else f"temporal: test years {splits.get('test_years')}, validation years {splits.get('validation_years')}")
    leakage = [
        f"Note text: {sections} sections ({(report.get('note_sections') or {}).get('why', '')}).",
        "Splits are by patient: no patient's admissions are in two splits.",
        "Addenda, written after the summary, are dropped.",
        "The decision threshold, the temperature and the baseline's regularisation are chosen on validation, never on test.",
    ]
    if outcome == "readmission":
        leakage.append("Admissions ending in in-hospital death are excluded (their summary states how the stay ended).")
    overlap = report.get("pretraining_overlap")
    if overlap:
        leakage.append("The encoder was pretrained by clinical_pretraining: " + (
            f"{overlap.get('overlap', 0)} validation/test patients' notes were in its pretraining data." if overlap.get("checked")
            else overlap.get("why", "")))
    label_limits = {
        "mortality": "In-hospital death only: deaths after discharge (e.g. to hospice) count as survival.",
        "readmission": "Readmissions to other hospitals are invisible in a single-centre database and count as "
                       "negatives; planned (elective) readmissions do not count.",
        "los": "Length of stay reflects discharge practice and bed availability as much as illness.",
        "los_days": "Length of stay reflects discharge practice and bed availability as much as illness; long stays are rare and poorly predicted.",
        "comorbidity": "Charlson groups come from billing codes, which under-code some conditions.",
    }.get(outcome, "")
    phi = report.get("phi") or {}
    phi_text = (f"The notes were screened for identifiers left in the text (policy `{phi.get('policy')}`): "
                f"{phi.get('texts_flagged', 0)} of {phi.get('texts_scanned', 0)} notes flagged"
                f"{' and redacted' if phi.get('redacted') else ''}. A language model can memorise rare strings of "
                "its training notes: do not share weights trained on real notes outside the data use agreement.")
    base = m.get("baseline_tfidf")
    verdict = ""
    if base and base.get("difference"):
        d = base["difference"]
        lo, hi = d.get("difference_ci_low"), d.get("difference_ci_high")
        better = d["difference"] < 0 if d["metric"] == "mae" else d["difference"] > 0
        if lo is not None and (lo > 0 or hi < 0):
            verdict = f"The {'transformer' if better else 'TF-IDF baseline'} is better: the interval excludes zero."
        else:
            verdict = ("The interval includes zero: on this test set the two cannot be told apart, and the simpler "
                       "baseline deserves consideration.")
    worst = ((m.get("subgroups") or {}).items())
    worst_auroc = "; ".join(f"{col}={sec['worst']['auroc']['group']} {fmt(sec['worst']['auroc']['value'])}"
                            for col, sec in worst if (sec.get("worst") or {}).get("auroc", {}).get("group"))
    return dict(
        architecture=(model_config.get("architectures") or ["?"])[0],
        outcome_label=outcome_label, kind_label=kind_label, regression=regression,
        metric_labels=REGRESSION_METRICS if regression else BINARY_METRICS if binary else MULTICLASS_METRICS,
        operating_points=[(k, k.replace("_", " ")) for k in m
                          if k.startswith(("specificity_at_", "sensitivity_at_")) and not k.endswith(("_ci_low", "_ci_high"))],
        window=window, window_text=window_text, max_length=max_length, sections_used=sections,
        pop=m.get("population") or {}, counts=_counts, split_how=split_how,
        baseline=base, baseline_verdict=verdict, worst_auroc=worst_auroc, leakage=leakage,
        label_limits=label_limits, phi_text=phi_text,
        settings=[(k, config[k]) for k in TEXT_SETTINGS if k in config],
        model_path=str(run_dir),
    )


MLM_SETTINGS = ["model_name_or_path", "max_length", "stride", "mlm_probability", "note_sections", "task",
                "learning_rate", "max_steps", "num_train_epochs", "per_device_train_batch_size",
                "gradient_accumulation_steps", "weight_decay", "warmup_steps", "train_sampling_strategy", "seed", "bf16"]


def _masked_lm_context(m: dict, config: dict, run_dir: Path) -> dict:
    """Template variables of continued-pretraining encoders (recipes/clinical_pretraining.py)."""
    model_config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    phi = (m.get("data_report") or {}).get("phi") or {}
    return dict(
        architecture=(model_config.get("architectures") or ["?"])[0],
        pop=m.get("population") or {},
        head_new=bool(m.get("mlm_head_newly_initialised")),
        phi_text=(f"The notes were screened for identifiers (policy `{phi.get('policy')}`): {phi.get('texts_flagged', 0)} "
                  f"of {phi.get('texts_scanned', 0)} flagged{' and redacted' if phi.get('redacted') else ''}. Do not share "
                  "weights pretrained on real notes outside the data use agreement."),
        settings=[(k, config[k]) for k in MLM_SETTINGS if k in config],
        min_group_size_int=int(config.get("min_group_size", 30)),
    )


# metrics.json "task" -> (template in hf_medai/model_cards/, function giving that template's own variables).
# A new kind of model adds one entry here and one template; the shared variables come from render_card.
TEMPLATES = {"image-classification": ("image_classifier.md", _image_classifier_context),
             "text-classification": ("text_classifier.md", _text_classifier_context),
             "fill-mask": ("masked_lm.md", _masked_lm_context)}


def _qa_adapter_context(m: dict, config: dict, run_dir: Path) -> dict:
    """Template variables of LoRA adapters for multiple-choice QA (recipes/medqa_lora.py)."""
    conversion = {}
    base_path = Path(m.get("base_model_path") or "")
    if (base_path / "hf_medai_conversion.json").is_file():
        conversion = json.loads((base_path / "hf_medai_conversion.json").read_text())
    try:
        peft_version = metadata.version("peft")
    except metadata.PackageNotFoundError:
        peft_version = "n/a"
    safety = m.get("safety") or {}
    base_pass = {p["id"]: p["passed"] for p in ((safety.get("base") or {}).get("probes") or [])}
    keys = ["lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "load_in_4bit", "batching", "target",
            "max_length", "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
            "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "weight_decay", "seed", "bf16"]
    return dict(
        conversion=conversion,
        peft_version=peft_version,
        letters=[k.rsplit("_", 1)[1] for k in m if k.startswith("position_bias_pred_fraction_")],
        safety_rows=[(p, base_pass.get(p["id"])) for p in ((safety.get("tuned") or {}).get("probes") or [])],
        qa_hyperparameters=[(k, config[k]) for k in keys if k in config],
        model_path=str(run_dir),
    )


TEMPLATES["text-generation"] = ("qa_adapter.md", _qa_adapter_context)

DIFFUSION_SETTINGS = ["resolution", "block_out_channels", "layers_per_block", "attention_levels", "learning_rate",
                      "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "lr_scheduler_type",
                      "warmup_steps", "ema_decay", "augment", "bf16", "seed"]


def _image_diffusion_context(m: dict, config: dict, run_dir: Path) -> dict:
    """Template variables of lesion-image diffusion pipelines (recipes/image_diffusion.py)."""
    return dict(memo=m["memorisation"], feat=m["memorisation"].get("feature"), settings=[(k, config[k]) for k in DIFFUSION_SETTINGS if k in config])


TEMPLATES["image-generation"] = ("image_diffusion.md", _image_diffusion_context)

MOLECULE_SETTINGS = ["max_heavy_atoms", "elements", "neutral_only", "hidden_size", "num_layers", "num_train_timesteps",
                     "beta_schedule", "condition_property", "learning_rate", "max_steps", "per_device_train_batch_size",
                     "lr_scheduler_type", "ema_decay", "bf16", "seed"]


def _molecule_diffusion_context(m: dict, config: dict, run_dir: Path) -> dict:
    """Template variables of 3D molecule diffusion pipelines (recipes/molecule_diffusion.py)."""
    return dict(settings=[(k, config[k]) for k in MOLECULE_SETTINGS if k in config],
                survival=(m.get("data_report") or {}).get("survival") or {})


TEMPLATES["molecule-generation"] = ("molecule_diffusion.md", _molecule_diffusion_context)


def render_card(run_dir: str | Path, run: tuple[dict, dict] | None = None, versions: dict[str, str] | None = None):
    """Return the `huggingface_hub.ModelCard` for a run folder.

    `run` (`load_run`'s (metrics, config)) and `versions` (`run_folder.library_versions()`), when given, are used
    instead of computing them again.
    """
    import jinja2
    from huggingface_hub import ModelCard

    from hf_medai import __version__
    from hf_medai.evaluation.subgroup_table import subgroup_table_markdown
    from hf_medai.tripod import tripod_rows

    run_dir = Path(run_dir)
    m, config = run if run is not None else load_run(run_dir)
    if m.get("task") not in TEMPLATES:
        raise ValueError(f"{run_dir}/metrics.json: no card template for task {m.get('task')!r}")
    template, task_context = TEMPLATES[m["task"]]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.globals.update(fmt=fmt, subgroup_markdown=subgroup_table_markdown, tripod_rows=tripod_rows,
                       kept_weights=kept_weights)
    env.filters["first_upper"] = _first_upper
    model_config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    body = env.get_template(template).render(
        m=m,
        config=config,
        # each template writes its title from the run's facts (task, classes, architecture); this is the folder
        model_name=Path(config.get("output_dir", str(run_dir))).name,
        architecture_short=short_architecture((model_config.get("architectures") or ["?"])[0]),
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
        **{"model_path": str(run_dir), **task_context(m, config, run_dir)},
    )
    content = f"---\n{card_data(m, config).to_yaml()}\n---\n{body.lstrip()}"
    return ModelCard(content)


def write_card(run_dir: str | Path) -> Path:
    """Write README.md (the Hub card) and, from it and the same run facts, model_card.chai.xml (CHAI)."""
    from hf_medai.chai import write_chai_card

    run, versions = load_run(run_dir), library_versions()
    text = str(render_card(run_dir, run=run, versions=versions))
    path = write_text(Path(run_dir) / "README.md", text)
    write_chai_card(run_dir, run=run, readme=text, versions=versions)
    return path
