"""Counterfactual note audits of the note models: the clinical-note outcome classifiers (recipes/clinical_outcomes.py,
kind note_outcome) and the note + EHR fusion models (recipes/clinical_fusion.py, kind note_fusion).

Each test note is scored as written and with each rule of hf_medai.evaluation.note_counterfactuals applied (sex
words, age within its band, race and insurance terms swapped; race and insurance inserted where the notes name
none), the SAME way the run scored its test split: token windows pooled as the saved config says (note_outcome),
or the truncated note beside the admission's own structured features, held fixed (note_fusion). Only notes a rule
changed enter its row. The recipes call `note_outcome_sections` / `note_fusion_sections` on the test split they hold;
`hf-medai audit RUN_DIR` (hf_medai.audits.audit_run) calls `audit_note_outcome` / `audit_note_fusion`, which reload
that split from run_config.yaml exactly as the run made it and check its ids against predictions.csv.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hf_medai.errors import ConfigError
from hf_medai.evaluation.note_counterfactuals import COUNTERFACTUALS, changed_words
from hf_medai.evaluation.robustness import audit_section, paired_shift
from hf_medai.run_folder import load_run

RECIPES = Path(__file__).resolve().parents[2] / "recipes"  # a source checkout's recipes
SECTION = "counterfactual_notes"
EXAMPLES_PER_ROW = 2
Scorer = Callable[[Sequence[int], Sequence[str]], np.ndarray]  # (test rows, note texts) -> (n, K) probabilities


def counterfactual_section(
    score: Scorer,
    texts: Sequence[str],
    y: Sequence[int],
    class_names: Sequence[str],
    threshold: float | None,
    n_bootstrap: int = 1000,
    model_inputs: str = "the rest of the note",
) -> dict[str, Any]:
    """The metrics.json "robustness" section of the counterfactual notes. All versions of all notes are scored in
    one call of `score` (each distinct (row, text) once). Binary: the positive class's probability at `threshold`;
    multi-class: the true class's probability and the predicted class (paired_shift)."""
    texts, y = list(texts), np.asarray(y)
    pairs = {cf.key: [(i, *p) for i, t in enumerate(texts) if (p := cf.pair(t)) is not None] for cf in COUNTERFACTUALS}
    queries = list(dict.fromkeys((i, v) for found in pairs.values() for i, a, b, _ in found for v in (a, b)))
    probs = score([i for i, _ in queries], [t for _, t in queries]) if queries else np.zeros((0, len(class_names)))
    scored = dict(zip(queries, np.asarray(probs, dtype=np.float64)))
    binary = len(class_names) == 2
    rows, labels, not_applicable, examples = {}, {}, {}, []
    for cf in COUNTERFACTUALS:
        found = pairs[cf.key]
        if not found:
            not_applicable[cf.key] = f"0 of {len(texts)} test notes {cf.absent}"
            continue
        idx = np.array([i for i, *_ in found])
        before = np.stack([scored[(i, a)] for i, a, _, _ in found])
        after = np.stack([scored[(i, b)] for i, _, b, _ in found])
        if binary:
            row = paired_shift(before[:, 1], after[:, 1], y[idx], threshold, n_bootstrap=n_bootstrap, seed=0)
            s0, s1 = before[:, 1], after[:, 1]
        else:
            row = paired_shift(before, after, y[idx], n_bootstrap=n_bootstrap, seed=0)
            s0, s1 = before[np.arange(len(idx)), y[idx]], after[np.arange(len(idx)), y[idx]]
        rows[cf.key] = {**row, "how": cf.how, "replacements": int(sum(n for *_, n in found))}
        labels[cf.key] = cf.label
        for j in np.argsort(-np.abs(s1 - s0), kind="stable")[:EXAMPLES_PER_ROW]:
            i, a, b, _ = found[j]
            snip_a, snip_b = changed_words(a, b)
            examples.append(
                dict(label=cf.key, before=snip_a, after=snip_b, score_before=float(s0[j]), score_after=float(s1[j]))
            )
    examples.sort(key=lambda e: -abs(e["score_after"] - e["score_before"]))
    score_name = f"P({class_names[1]})" if binary else "the true class's probability"
    what = (
        f"Each test note is scored as written and with words that should not matter changed ({model_inputs} "
        "unchanged). Swapped rows compare the note as written with the note after the swap (sex words; ages "
        "shifted within their band; race and insurance terms where notes name them). Inserted rows are not swaps: "
        "the notes name no race or insurance, so two versions with a phrase INSERTED are compared with each other "
        "(“67 year old white man” vs “67 year old Black man”; “Insurance: Medicare.” vs “Insurance: Medicaid.” "
        "after the one-liner). A row holds only the notes its rule changed (n). The largest changes show only the "
        "changed words (∅: inserted), never the note around them or its id. "
        + (
            f"Decisions flip at the run's threshold ({threshold:.3f})."
            if binary and threshold is not None
            else "A flip is a change of the predicted class."
        )
    )
    return audit_section(
        "Counterfactual notes",
        what,
        rows,
        labels,
        score_name,
        signed=False,
        threshold=threshold if binary else None,
        n_notes=len(texts),
        not_applicable=not_applicable,
        examples=examples[: 2 * EXAMPLES_PER_ROW + 2],
    )


def _run_facts(run_dir: str | Path) -> tuple[dict, dict]:
    metrics, config = load_run(run_dir)
    if not metrics.get("class_names"):
        raise ConfigError(f"{run_dir}: the counterfactual note audit is for classifiers (a regressor has no decision)")
    return metrics, config


# --- note_outcome: an AutoModelForSequenceClassification over token windows ---------------------------------------


def note_outcome_sections(
    run_dir, model, tokenizer, test, n_bootstrap: int = 1000, batch_size: int = 32
) -> dict[str, dict]:
    """The "robustness" sections of a note classifier saved in `run_dir` (its metrics.json read for the classes and
    the threshold), scored on `test` (a split with text, id, label) with `model` as the recipe scored it."""
    from hf_medai.models.text import predict_notes, softmax

    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())

    def score(rows: Sequence[int], texts: Sequence[str]) -> np.ndarray:
        return softmax(predict_notes(model, tokenizer, texts, batch_size))

    plain = test.with_format(None)
    section = counterfactual_section(
        score, plain["text"], plain["label"], metrics["class_names"], metrics.get("threshold"), n_bootstrap
    )
    return {SECTION: section}


def note_test_split(config: dict[str, Any]):
    """The test split of a clinical_outcomes run, reloaded from its resolved config as the recipe loaded it."""
    from hf_medai.clinical_tasks import ClinicalDataArguments, load_task

    names = {f.name for f in dataclasses.fields(ClinicalDataArguments)}
    data_args = ClinicalDataArguments(**{k: v for k, v in config.items() if k in names})
    spec = data_args.split_spec(data_args.source(), config["task"], config.get("los_bins") or (3, 7, 14))
    return load_task(spec, data_args.skip_bad_rows, data_args.phi_policy).splits["test"]


def _same_ids(run_dir: str | Path, ids: Sequence[Any]) -> None:
    import pandas as pd

    saved = pd.read_csv(Path(run_dir) / "predictions.csv", dtype={"id": str}, usecols=["id"])["id"].tolist()
    if saved != [str(i) for i in ids]:
        raise ConfigError(
            f"{run_dir}: the test split reloaded from run_config.yaml is not the one in predictions.csv "
            f"({len(ids)} vs {len(saved)} rows); was the data changed since the run?"
        )


def audit_note_outcome(model_dir, data=None, data_format="auto", skip_bad_rows=False) -> dict[str, dict]:
    """Kind.audit of note_outcome: the run's own test split, reloaded (external data is refused)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if data is not None:
        raise ConfigError("note models are audited on their own test split: leave out --data")
    _, config = _run_facts(model_dir)
    test = note_test_split(config)
    _same_ids(model_dir, test["id"])
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, use_safetensors=True, trust_remote_code=False
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = int(config.get("per_device_eval_batch_size") or 32)
    return note_outcome_sections(model_dir, model, tokenizer, test, int(config.get("n_bootstrap", 1000)), batch)


# --- note_fusion: the truncated note beside the admission's structured features (held fixed) ---------------------


def note_fusion_sections(
    run_dir, model, processor, test, n_bootstrap: int = 1000, batch_size: int = 32
) -> dict[str, dict]:
    """The "robustness" sections of a note + EHR fusion model: each version of a note scored beside its own
    admission's tabular arrays (the KEYS columns of `test`), which never change."""
    import torch

    from hf_medai.data.tabular import KEYS
    from hf_medai.models.text import softmax

    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    plain = test.with_format(None)
    dtypes = {"categorical_ids": torch.long, "numeric_values": torch.float32, "numeric_missing": torch.bool}
    arrays = {k: torch.as_tensor(np.asarray(plain[k]), dtype=dtypes[k]) for k in KEYS}
    device = next(model.parameters()).device
    model.eval()

    @torch.no_grad()
    def score(rows: Sequence[int], texts: Sequence[str]) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths batched: little padding
        logits = np.zeros((len(texts), model.config.num_labels))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = dict(
                processor.inner([texts[j] for j in chunk], truncation=True, padding=True, return_tensors="pt")
            )
            batch.update({k: v[torch.as_tensor([rows[j] for j in chunk])] for k, v in arrays.items()})
            out = model(**{k: v.to(device) for k, v in batch.items()}).logits
            logits[chunk] = out.float().cpu().numpy()
        return softmax(logits)

    section = counterfactual_section(
        score,
        plain["text"],
        plain["label"],
        metrics["class_names"],
        metrics.get("threshold"),
        n_bootstrap,
        model_inputs="the rest of the note and the admission's structured EHR features",
    )
    return {SECTION: section}


def fusion_test_split(config: dict[str, Any], schema):
    """The test split of a clinical_fusion run (cohort at the prediction time, features of the window, the saved
    schema's arrays), reloaded with the recipe's own functions from its resolved config."""
    from hf_medai.clinical_tasks import load_task
    from hf_medai.data.tabular import with_tabular
    from hf_medai.run_folder import load_recipe_module

    recipe_file = RECIPES / "clinical_fusion.py"
    if not recipe_file.is_file():
        raise ConfigError(
            f"re-auditing a clinical_fusion folder reloads its data with {recipe_file} (a source checkout)"
        )
    recipe = load_recipe_module(recipe_file)
    names = {f.name for f in dataclasses.fields(recipe.DataArguments)}
    data_args = recipe.DataArguments(**{k: v for k, v in config.items() if k in names})
    source = data_args.source()
    task = load_task(
        data_args.split_spec(source, data_args.task, data_args.los_bins), data_args.skip_bad_rows, data_args.phi_policy
    )
    splits = recipe.before_prediction_time(dict(task.splits), data_args.window_hours, task.report)
    frames = recipe.structured_frames(splits, source, data_args, task.report)
    return with_tabular(splits["test"], schema, frames["test"])


def audit_note_fusion(model_dir, data=None, data_format="auto", skip_bad_rows=False) -> dict[str, dict]:
    """Kind.audit of note_fusion: the run's own test split, reloaded (external data is refused)."""
    from hf_medai.models.fusion import FusionModel, FusionProcessor

    if data is not None:
        raise ConfigError("note models are audited on their own test split: leave out --data")
    _, config = _run_facts(model_dir)
    processor = FusionProcessor.from_pretrained(model_dir)
    test = fusion_test_split(config, processor.schema)
    _same_ids(model_dir, test["id"])
    model = FusionModel.from_pretrained(model_dir, use_safetensors=True).eval()
    batch = int(config.get("per_device_eval_batch_size") or 32)
    return note_fusion_sections(model_dir, model, processor, test, int(config.get("n_bootstrap", 1000)), batch)
