"""What a clinical-note outcome model's run folder reports (recipes/clinical_outcomes.py): predictions per note
from its token windows, calibration folded into the saved head, the TF-IDF baseline beside it, and the predictive
report of hf_medai.run_outputs. Reporting layer: it reads the data, models and evaluation below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hf_medai.clinical_tasks import TaskData, subgroup_frame
from hf_medai.evaluation.calibration import calibrate_into_head
from hf_medai.io import save_pretrained_atomic
from hf_medai.models.heads import fold_into_head
from hf_medai.models.note_windows import WINDOW_CONFIG_KEY, pool_chunk_logits, window_logits
from hf_medai.models.text import softmax, tfidf_baseline
from hf_medai.run_outputs import (
    calibration_report,
    headline_metrics,
    paired_difference,
    write_classifier_report,
    write_regression_report,
)


def report_note_outcome(
    t: TaskData,
    model,
    tokenizer,
    out,
    model_args,
    eval_args,
    training_args,
    subgroup_columns: Sequence[str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Score validation and test per note (chunk logits pooled), calibrate on validation and fold it into the head,
    fit the TF-IDF baseline, save the model and tokenizer, and write predictions.csv, metrics.json (`extra` added)
    and the plots.

    `model_args`: recipes/clinical_outcomes.py's ModelArguments (long_notes, pooling, stride, head_tokens,
    max_chunks, temperature_scaling, baseline); `eval_args`: hf_medai.config.EvalArguments."""
    logits = {}
    for split in ("validation", "test"):
        w = t.windows[split]
        per_window = window_logits(model, tokenizer, w["input_ids"], training_args.per_device_eval_batch_size)
        logits[split] = pool_chunk_logits(per_window, w["example_index"], model_args.pooling, len(t.splits[split]))
    y = {split: np.asarray(t.splits[split]["label"]) for split in logits}
    texts = {split: list(t.splits[split]["text"]) for split in ("train", "validation", "test")}
    model.config.update(
        {
            WINDOW_CONFIG_KEY: dict(
                strategy=model_args.long_notes,
                pooling=model_args.pooling,
                stride=model_args.stride,
                head_tokens=model_args.head_tokens,
                max_chunks=model_args.max_chunks,
                max_length=tokenizer.model_max_length,
            )
        }
    )
    subgroups = subgroup_frame(t.splits["test"], subgroup_columns)
    if t.regression:
        mean, std = t.target
        fold_into_head(model, scale=std, shift=mean)  # the saved model outputs days
        scores, val_scores = (logits[s][:, 0] * std + mean for s in ("test", "validation"))
    else:
        shift, temperature = calibrate_into_head(
            model, logits["validation"], y["validation"], t.class_weights, model_args.temperature_scaling
        )
        probs = {split: softmax((z + shift) / temperature) for split, z in logits.items()}
        scores, val_scores = probs["test"], probs["validation"]
        extra["calibration"] = calibration_report(
            out,
            y,
            {split: softmax(z) for split, z in logits.items()},
            probs,
            temperature,
            shift,
            "class-prior correction of the weighted loss, then temperature scaling fitted on validation (Guo et al. "
            "2017), both folded into the saved classifier head",
        )
    if model_args.baseline:
        base = tfidf_baseline(
            texts["train"],
            t.splits["train"]["label"],
            texts["validation"],
            y["validation"],
            {"validation": texts["validation"], "test": texts["test"]},
            n_classes=None if t.regression else len(t.class_names),
            seed=training_args.seed,
        )
        extra["baseline_tfidf"] = {
            "model": base["model"],
            **{k: base[k] for k in ("C", "alpha") if k in base},
            **headline_metrics(y["test"], base["test"], t.class_names, eval_args, y["validation"], base["validation"]),
        }
        extra["baseline_tfidf"]["difference"] = paired_difference(
            y["test"], scores, base["test"], t.class_names, n_bootstrap=eval_args.n_bootstrap
        )
    save_pretrained_atomic(model, out)
    save_pretrained_atomic(tokenizer, out)
    ids = t.splits["test"]["id"]
    settings = dict(subgroup_columns=subgroup_columns, extra=extra)
    if t.regression:
        return write_regression_report(
            out, ids, y["test"], scores, subgroups, eval_args, y["validation"], val_scores, **settings
        )
    return write_classifier_report(
        out, ids, y["test"], scores, t.class_names, subgroups, eval_args, y["validation"], val_scores, **settings
    )
