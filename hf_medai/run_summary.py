"""The few lines every recipe prints when it ends: where the run is, its headline number with its CI, what was kept.

Read from the run folder (metrics.json, the kept checkpoint's trainer_state.json), so it says what the folder holds,
not what the process remembers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

# The first key present in metrics.json is the run's headline: (key, what it is, decimals).
HEADLINES = (
    ("auroc", "test AUROC", 3),
    ("mae", "test MAE", 3),
    ("accuracy_loglik", "test accuracy (option log-likelihood)", 3),
    ("accuracy", "test accuracy", 3),  # multiclass, when a class absent from the test set leaves no macro AUROC
    ("perplexity", "held-out perplexity", 1),
    ("class_fidelity", "class fidelity of generated images", 3),
    ("fid", "FID to training images (classifier features)", 2),
    ("validity_x_uniqueness", "valid x unique molecules", 3),
)


def with_ci(value: float, low: float | None, high: float | None, digits: int = 3) -> str:
    ci = f" (95% CI {low:.{digits}f} to {high:.{digits}f})" if low is not None and high is not None else ""
    return f"{value:.{digits}f}{ci}"


def headline(metrics: dict[str, Any]) -> str | None:
    for key, label, digits in HEADLINES:
        value = metrics.get(key)
        if isinstance(value, (int, float)):
            n = f", n={metrics['n']}" if isinstance(metrics.get("n"), int) else ""
            return f"{label} {with_ci(value, metrics.get(f'{key}_ci_low'), metrics.get(f'{key}_ci_high'), digits)}{n}"
    return None


def kept_weights(training: dict[str, Any], metric_name: str | None = None) -> str:
    """Which weights the folder holds: the checkpoint chosen on validation (step, epoch, score) or the last step."""
    best = training.get("best_checkpoint")
    score = training.get("best_val_auroc", training.get("best_metric"))
    if not best:
        step = training.get("global_step")
        return f"the weights after the last step{f' ({step})' if step is not None else ''}; no checkpoint selection"
    state_file = Path(best) / "trainer_state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    where = [f"step {state['global_step']}" if "global_step" in state else None,
             f"epoch {state['epoch']:.2f}" if isinstance(state.get("epoch"), (int, float)) else None,
             f"validation {metric_name or 'metric'} {score:.4f}" if isinstance(score, (int, float))
             else None]
    return f"{Path(best).name} ({', '.join(w for w in where if w)}), chosen on validation"


def run_summary(output_dir: str | Path, headline_text: str | None = None) -> str:
    """The summary block of a run folder (several blocks for a folder of per-task runs)."""
    output_dir = Path(output_dir)
    metrics_file = output_dir / "metrics.json"
    if not metrics_file.is_file():
        parts = [run_summary(sub) for sub in sorted(output_dir.iterdir()) if (sub / "metrics.json").is_file()]
        if parts:
            return "\n".join(parts)
        lines = [f"hf-medai: run finished: {output_dir}"]
        if headline_text:
            lines.append(f"  headline: {headline_text}")
        return "\n".join(lines)
    metrics = json.loads(metrics_file.read_text())
    name = metrics.get("recipe", "run") + (f" ({metrics['outcome']})" if metrics.get("outcome") else "")
    lines = [f"hf-medai: {name} finished: {output_dir}"]
    text = headline_text or headline(metrics)
    if text:
        lines.append(f"  headline: {text}")
    if isinstance(metrics.get("training"), dict):
        config_file = output_dir / "run_config.yaml"
        config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
        lines.append(f"  kept:     {kept_weights(metrics['training'], (config or {}).get('metric_for_best_model'))}")
    if (output_dir / "README.md").is_file():
        lines.append(f"  card:     {output_dir / 'README.md'}")
    return "\n".join(lines)


def print_run_summary(output_dir: str | Path, headline_text: str | None = None) -> None:
    print("\n" + run_summary(output_dir, headline_text), flush=True)
