"""What both fusion kinds share (lesion_fusion: image + patient metadata; note_fusion: note + structured EHR): the
template variables that say what is fused and how, and the missing-modality rows read from metrics.json.

The ablation table itself is rendered by the shared `ablation_section` macro (model_cards/_macros.md.j2) from
metrics["ablation"]; these variables describe the model around it.
"""

from __future__ import annotations

import json
from pathlib import Path

from hf_medai.reporting_text import BINARY_METRICS, MULTICLASS_METRICS, fmt, model_config, operating_points

PROCESSOR_FILE = "fusion_processor.json"  # hf_medai.models.fusion.PROCESSOR_FILE (not imported: no torch for a card)
HEAD = "the head (a linear layer plus an MLP whose output layer starts at zero)"
FUSION_TEXT = {
    "late": "late fusion: the pooled {primary} features and the {tabular} summary are concatenated and read by "
    + HEAD,
    "film": "FiLM: the {tabular} summary scales and shifts the pooled {primary} features (feature-wise linear "
    "modulation, Perez et al. 2018), read by " + HEAD,
    "cross_attention": "cross-attention: the pooled {primary} feature attends over itself and the {tabular} tokens; "
    "the attended vector and the {primary} feature are concatenated and read by " + HEAD,
}


def missing_modality_rows(m: dict) -> list[tuple[str, str, str]]:
    """(input, test AUROC with its CI, full fused - this with its paired CI) per row of metrics.json's
    "missing_modality" (hf_medai.evaluation.modality_ablation.missing_modality)."""
    out = []
    for row in m.get("missing_modality") or []:
        auroc, lo, hi = row.get("test_auroc"), row.get("test_auroc_ci_low"), row.get("test_auroc_ci_high")
        d, dlo, dhi = (
            row.get("fused_minus_model"),
            row.get("fused_minus_model_ci_low"),
            row.get("fused_minus_model_ci_high"),
        )
        out.append(
            (
                str(row["model"]),
                fmt(auroc) + ("" if lo is None else f" ({fmt(lo)}–{fmt(hi)})"),
                "n/a" if d is None else f"{d:+.3f}" + ("" if dlo is None else f" ({dlo:+.3f} to {dhi:+.3f})"),
            )
        )
    return out


def example_fields(run_dir: Path, limit: int = 3) -> str:
    """A Python dict of a few of the run's features with plausible values (each number its training mean), for the
    card's How to use; read from the saved processor's schema (fusion_processor.json), no model loaded."""
    path = Path(run_dir) / PROCESSOR_FILE
    schema = json.loads(path.read_text()).get("schema", {}) if path.is_file() else {}
    fields = {k: v[0] for k, v in (schema.get("categorical") or {}).items() if v}
    fields.update({k: round(float(v[0]), 1) for k, v in (schema.get("numeric") or {}).items()})
    return repr(dict(list(fields.items())[:limit]))


def fusion_context(m: dict, config: dict, run_dir: Path, primary: str, tabular: str) -> dict:
    """Template variables of a fusion card: the backbone, the fusion, the tabular features and their handling.
    `primary` / `tabular`: what the card calls the two modalities ("image", "metadata")."""
    model = model_config(run_dir)
    training = m.get("training") or {}
    backbone = model.get("backbone_config") or {}
    fusion = training.get("fusion") or model.get("fusion") or "late"
    categorical = list(model.get("categorical_features") or [])
    numeric = list(model.get("numeric_features") or [])
    features = list(training.get("tabular_features") or [*categorical, *numeric])
    binary = m.get("positive_class") is not None
    return dict(
        architecture=f"FusionModel: {backbone.get('model_type', '?')} backbone + tabular encoder",
        backbone_type=backbone.get("model_type", "?"),
        image_size=backbone.get("image_size", "?"),
        primary_name=primary,
        tabular_name=tabular,
        fusion=fusion,
        fusion_text=FUSION_TEXT.get(fusion, fusion).format(primary=primary, tabular=tabular),
        fusion_dim=model.get("fusion_dim", config.get("fusion_dim", "?")),
        modality_dropout=training.get(
            "modality_dropout", model.get("modality_dropout", config.get("modality_dropout"))
        ),
        tabular_features=features,
        categorical_features=[f for f in features if f in categorical] or categorical,
        numeric_features=[f for f in features if f in numeric] or numeric,
        missing_rows=missing_modality_rows(m),
        fusion_settings=[
            (k, config[k]) for k in ("fusion", "fusion_dim", "modality_dropout", "baselines") if k in config
        ],
        metric_labels=BINARY_METRICS if binary else MULTICLASS_METRICS,
        operating_points=operating_points(m),
        example_fields=example_fields(run_dir),
        model_path=str(Path(m.get("evaluated_model") or run_dir)),
    )
