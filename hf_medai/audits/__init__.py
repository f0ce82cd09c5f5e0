"""Robustness audits of saved run folders: `hf-medai audit RUN_DIR` and the recipes' own last step.

Each kind of predictive model names its auditor (`Kind.audit`): a function of (model_dir, data, data_format,
skip_bad_rows) that scores the run's own test split (data None: reloaded as the run made it) or external data, with
and without each controlled change, and returns metrics.json "robustness" sections
(hf_medai.evaluation.robustness.audit_section). Recipes call the same auditors on the test split they hold.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from hf_medai.cards import write_card
from hf_medai.errors import ConfigError
from hf_medai.io import write_json
from hf_medai.kinds import kind_of


def write_robustness(run_dir: str | Path, sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Merge `sections` into run_dir/metrics.json["robustness"] (atomically; other sections are kept)."""
    path = Path(run_dir) / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["robustness"] = {**(metrics.get("robustness") or {}), **sections}
    write_json(path, metrics)
    return metrics


def audit_run(
    run_dir: str | Path,
    data: str | None = None,
    data_format: str = "auto",
    out: str | Path | None = None,
    skip_bad_rows: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Audit the model saved in `run_dir` and write the robustness block and the card.

    Without `data`: on the run's own test split, into `run_dir` itself. With `data` (external data, in a format the
    run's loader reads): `out` is a new folder that gets the full external report (`hf-medai evaluate`) plus the
    audit; the decision threshold stays the training run's."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.json, so not a finished run folder")
    kind = kind_of(json.loads(metrics_path.read_text()))
    if kind.audit is None:
        raise ConfigError(f"{run_dir}: a {kind.name} has no robustness audit (only predictive models do)")
    auditor = getattr(importlib.import_module(kind.audit[0]), kind.audit[1])
    if data is None:
        target = run_dir
    else:
        if out is None:
            raise ConfigError("an audit on external data (--data) writes a new report folder: pass --out")
        if kind.name not in ("lesion_classifier", "image_classifier"):
            raise ConfigError(
                f"external data: {kind.name} folders are audited on their own test split (leave out --data); "
                "external audits, like `hf-medai evaluate`, are for image classifiers"
            )
        from hf_medai.external_eval import evaluate_image_classifier

        evaluate_image_classifier(run_dir, data, out, data_format, skip_bad_rows, overwrite=overwrite)
        target = Path(out)
    external = {} if data is None else {"out_dir": target}  # files an auditor writes go beside the report
    metrics = write_robustness(target, auditor(run_dir, data, data_format, skip_bad_rows, **external))
    write_card(target)
    return metrics
