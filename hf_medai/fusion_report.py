"""The fused model's report: the model and processor saved, predictions.csv, metrics.json with the modality ablation
(fused vs each single modality vs the gradient-boosting model of the tabular features, same split) and the
missing-modality scores, plots and subgroup tables through the shared classifier report."""

from __future__ import annotations

from typing import Any

import numpy as np

from hf_medai.data.tabular import TabularSchema
from hf_medai.evaluation.modality_ablation import missing_modality, modality_ablation, tabular_baseline
from hf_medai.fusion_runs import Stages
from hf_medai.io import save_pretrained_atomic
from hf_medai.models.heads import fold_into_head
from hf_medai.run_folder import run_record
from hf_medai.run_outputs import checkpoint_selection, write_classifier_report

FUSED = "fused"


def write_fusion_report(
    model,
    processor,
    stages: Stages,
    splits,
    frames,
    schema: TabularSchema,
    class_names,
    eval_args,
    subgroups,
    facts: dict[str, Any],
    resume=None,
    names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write the fused model's run folder (main process) from `fusion_runs.train_stages`' `stages`; with a
    single-modality model (baselines on), the gradient-boosting model of `frames` (the raw tabular features per
    split) joins the ablation. `names`: what the primary and tabular modalities are called ({"primary": "image",
    "tabular": "metadata"})."""
    names = names or {"primary": "primary", "tabular": "tabular"}
    fused, ablation, missing_scores = stages.fused, stages.ablation, stages.missing_scores
    trainer, args = fused.trainer, fused.trainer.args
    fold_into_head(model, shift=fused.shift)  # the class-weighted loss's prior shift: saved probabilities = reported
    save_pretrained_atomic(model, args.output_dir)
    save_pretrained_atomic(processor, args.output_dir)

    y = {name: np.asarray(splits[name]["label"]) for name in ("train", "validation", "test")}
    scores = {FUSED: fused.scores}
    modalities = {FUSED: [names["primary"], names["tabular"]]}
    for name, fitted in ablation.items():
        scores[name], modalities[name] = fitted.scores, [names["primary"]]
    if ablation:
        _, probs = tabular_baseline(
            frames["train"],
            y["train"],
            {"validation": frames["validation"], "test": frames["test"]},
            categorical=list(schema.categorical),
            numeric=list(schema.numeric),
            seed=0,  # the resamples of metrics.json's own intervals: the fused row's CI is the AUROC CI of the report
        )
        key = f"{names['tabular']}_only"
        scores[key], modalities[key] = probs, [names["tabular"]]
    absent = {f"fused, {names[k]} absent": [names[k]] for k in missing_scores}
    missing_scores = {f"fused, {names[k]} absent": v for k, v in missing_scores.items()}
    table = None
    if len(scores) > 1:
        table = modality_ablation(
            y["validation"],
            {k: v["validation"] for k, v in scores.items()},
            y["test"],
            {k: v["test"] for k, v in scores.items()},
            class_names,
            fused=FUSED,
            modalities=modalities,
            n_bootstrap=eval_args.n_bootstrap,
            seed=0,  # the resamples of metrics.json's own intervals: the fused row's CI is the AUROC CI of the report
        )
    missing = missing_modality(
        y["test"], fused.scores["test"], missing_scores, class_names, absent, eval_args.n_bootstrap, 0
    )
    state = trainer.state
    core = {
        k: facts.pop(k) for k in ("base_model", "dataset", "synthetic_data", "data_report", "splits") if k in facts
    }
    record = run_record(
        facts.pop("recipe"),
        facts.pop("task"),
        kind=facts.pop("kind"),
        trainer=trainer,
        train_result=fused.train_result,
        resumed_from=resume,
        throughput=fused.throughput,
        model=model,
        training={
            **checkpoint_selection(state, args),
            "fusion": model.config.fusion,
            "prior_correction": dict(zip(class_names, np.round(fused.shift, 4).tolist())),
            "modality_dropout": model.config.modality_dropout,
            "tabular_features": schema.names,
            "started_from": stages.started_from,
        },
        **core,
    )
    return write_classifier_report(
        args.output_dir,
        ids=splits["test"]["id"],
        y_true=y["test"],
        probs=fused.scores["test"],
        class_names=class_names,
        subgroups=subgroups,
        val_true=y["validation"],
        val_probs=fused.scores["validation"],
        eval_args=eval_args,
        extra={**facts, **record.to_dict(), "ablation": table, "missing_modality": missing},
    )
