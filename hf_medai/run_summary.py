"""The few lines every recipe prints when it ends: where the run is, its headline number with its CI, what was kept.

Read from the run folder's metrics.json, so it says what the folder holds, not what the process remembers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hf_medai.reporting_text import kept_weights

# The first key present in metrics.json is the run's headline: (key, what it is, decimals).
HEADLINES = (
    ("auroc", "test AUROC", 3),
    ("mae", "test MAE", 3),
    ("accuracy_loglik", "test accuracy (option log-likelihood)", 3),
    ("accuracy", "test accuracy", 3),  # multiclass, when a class absent from the test set leaves no macro AUROC
    ("perplexity", "held-out perplexity", 1),
    ("reconstruction_loss", "held-out reconstruction loss (fixed masks)", 4),
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
        lines.append(f"  kept:     {kept_weights(metrics).replace('`', '')}")
    if (output_dir / "README.md").is_file():
        lines.append(f"  card:     {output_dir / 'README.md'}")
    return "\n".join(lines)


def print_run_summary(output_dir: str | Path, headline_text: str | None = None) -> None:
    print("\n" + run_summary(output_dir, headline_text), flush=True)
