"""Answer stability of a QA adapter (recipes/medqa_lora.py): under paraphrase of the question stem and under a change
of option order, scored the way the recipe scores (option log-likelihoods -> `option_probabilities`).

One audit section, "qa_stability": per paraphrase rule (hf_medai.evaluation.qa_paraphrase) a `paired_shift` over the
test questions it applies to, and per rotation of the options (the recipe's own position-bias orders) one over all
of them. The score is the gold answer's probability among the options; a flip is a change of the chosen option's
TEXT (rotated probabilities are mapped back to the original order first); the metric is accuracy before and after.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hf_medai.data.medqa import load_qa, sample_path
from hf_medai.errors import ConfigError
from hf_medai.evaluation.qa import option_probabilities, score_multiple_choice
from hf_medai.evaluation.qa_paraphrase import PARAPHRASES, changed_span, paraphrase_examples
from hf_medai.evaluation.qa_scoring import option_logliks
from hf_medai.evaluation.robustness import audit_section, paired_shift

SECTION = "qa_stability"
SCORE = "the gold answer's probability"
N_EXAMPLES = 5


def unrotate(probs: np.ndarray, shift: int, n_options: Sequence[int]) -> np.ndarray:
    """Probabilities of questions whose options were rotated by `shift` (`qa.rotate_options`), back in the original
    option order: original option i sat at position (i + shift) mod K of its question."""
    probs = np.asarray(probs, dtype=np.float64)
    out = np.zeros_like(probs)
    for q, k in enumerate(n_options):
        out[q, :k] = probs[q, (np.arange(k) + shift) % k]
    return out


def _probabilities(logliks: np.ndarray, width: int) -> np.ndarray:
    """option_probabilities, padded to `width` option columns (a subset of questions may have fewer options)."""
    z = np.full((len(logliks), width), np.nan)
    z[:, : logliks.shape[1]] = logliks
    return option_probabilities(z)


def stability_section(
    model,
    tokenizer,
    examples: Sequence[Mapping],
    *,
    style: str = "letter",
    batch_size: int = 8,
    n_rotations: int = -1,
    n_bootstrap: int = 1000,
    scored: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """{"qa_stability": audit_section} for `model` on `examples`.

    `scored`: what `qa.score_multiple_choice` already returned for this model on these examples (the recipe's
    tuned scores): its logliks and rotations are reused; None scores them here (no generation)."""
    if scored is None:
        scored = score_multiple_choice(
            model, tokenizer, examples, style, batch_size, max_new_tokens=0, n_rotations=n_rotations
        )
    gold = np.asarray([ex["answer_index"] for ex in examples], dtype=np.int64)
    n_options = [len(ex["options"]) for ex in examples]
    before = option_probabilities(scored["logliks"])
    width = before.shape[1]
    rows: dict[str, dict[str, Any]] = {}
    labels: dict[str, str] = {}
    applied: dict[str, int] = {}
    not_applicable: dict[str, str] = {}
    candidates = []
    for rule, (_, label) in PARAPHRASES.items():
        idx, changed = paraphrase_examples(examples, rule)
        applied[rule] = len(idx)
        if not idx:
            not_applicable[rule] = f"applies to none of the {len(examples)} test questions"
            continue
        after = _probabilities(option_logliks(model, tokenizer, changed, style, batch_size), width)
        rows[rule] = paired_shift(before[idx], after, gold[idx], n_bootstrap=n_bootstrap, seed=seed)
        labels[rule] = label
        for j, i in enumerate(idx):
            s0, s1 = float(before[i, gold[i]]), float(after[j, gold[i]])
            candidates.append((abs(s1 - s0), label, examples[i], changed[j]["question"], s0, s1))
    for r in range(1, len(scored["rotation_logliks"])):
        shift = int(scored["rotation_shifts"][r])
        after = unrotate(option_probabilities(scored["rotation_logliks"][r]), shift, n_options)
        key = f"rotation_{shift}"
        rows[key] = paired_shift(before, after, gold, n_bootstrap=n_bootstrap, seed=seed)
        labels[key] = f"Rotating the options by {shift}"
    candidates.sort(key=lambda c: -c[0])
    examples_out = []
    for _, label, ex, text, s0, s1 in candidates[:N_EXAMPLES]:
        old, new = changed_span(ex["question"], text)
        examples_out.append(
            {"label": label, "id": ex["id"], "before": old, "after": new, "score_before": s0, "score_after": s1}
        )
    section = audit_section(
        "Answer stability: paraphrased questions and reordered options",
        "The test questions scored as written and with their stem reworded by one rule-based paraphrase (applied "
        "only where the rule fits; options unchanged), and with their options rotated (each option moved down by "
        "the same number of places). The answer is the option of highest log-likelihood; a flip is a change of "
        "the chosen answer.",
        rows,
        labels,
        SCORE,
        signed=False,
        n_questions=len(examples),
        paraphrases_applied=applied,
        n_rotations=len(scored["rotation_logliks"]) - 1,
        loglik_style=style,
        not_applicable=not_applicable,
        examples=examples_out,
    )
    return {SECTION: section}


# ----------------------------------------------------------------------------------------------- run folders


def run_test_examples(model_dir: str | Path, config: Mapping[str, Any]) -> list[dict]:
    """The run's test questions, in predictions.csv's order, read again from the data the run read (its ids)."""
    import pandas as pd

    model_dir = Path(model_dir)
    ids = pd.read_csv(model_dir / "predictions.csv", keep_default_na=False, dtype={"id": str})["id"].tolist()
    if config.get("test_data_dir"):
        source, fmt = config["test_data_dir"], config.get("test_data_format", "auto")
    else:
        source, fmt = config.get("data_dir") or sample_path("medqa"), config.get("data_format", "auto")
    dataset, _ = load_qa(
        source, fmt, bool(config.get("skip_bad_rows", False)), medmcqa_cop_base=config.get("medmcqa_cop_base")
    )
    by_id = {ex["id"]: dict(ex) for ex in dataset}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ConfigError(
            f"{model_dir}: the run's data ({source}) no longer holds {len(missing)} of its test questions "
            f"(e.g. {missing[0]!r}); audit with the data the run was trained on"
        )
    return [by_id[i] for i in ids]


def load_adapter(model_dir: str | Path):
    """(model, tokenizer): the base model + the run's LoRA adapter, as the card's "How to use" loads them."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    from hf_medai.models.causal_lm import default_dtype, ensure_pad_token

    model_dir = Path(model_dir)
    try:
        model = AutoPeftModelForCausalLM.from_pretrained(model_dir, dtype=default_dtype(), use_safetensors=True)
    except OSError as e:
        base = json.loads((model_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
        raise FileNotFoundError(
            f"cannot load the adapter's base model {base!r} ({e}): make the base model available to audit this run"
        ) from None
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ensure_pad_token(model, tokenizer)
    return model.eval(), tokenizer


def audit_qa_adapter(
    model_dir: str | Path, data: str | None = None, data_format: str = "auto", skip_bad_rows: bool = False
) -> dict[str, dict[str, Any]]:
    """Kind.audit of qa_adapter run folders: the stability section on the run's own test split (data None, with
    the run's scoring settings from run_config.yaml), or on every question of `data`."""
    from hf_medai.run_folder import load_run

    _, config = load_run(model_dir)
    if data is None:
        examples = run_test_examples(model_dir, config)
    else:
        examples = [dict(ex) for ex in load_qa(data, data_format, skip_bad_rows)[0]]
    model, tokenizer = load_adapter(model_dir)
    return stability_section(
        model,
        tokenizer,
        examples,
        style=config.get("loglik_style", "letter"),
        batch_size=int(config.get("per_device_eval_batch_size", 8)),
        n_rotations=int(config.get("position_bias_rotations", -1)),
        n_bootstrap=int(config.get("n_bootstrap", 1000)),
    )
