"""What a QA adapter run reports: its base and tuned model scored the same way, the flat metrics of both (base_
prefix for the base) with paired differences, per subject and safety, and predictions.csv's rows.

The scoring itself (log-likelihood and generated letters, position bias, calibration, contamination, safety probes)
is `hf_medai.evaluation.qa`; this module puts a run's pieces together (recipes/medqa_lora.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from hf_medai.data.medqa import LETTERS
from hf_medai.evaluation import qa


def score_base_and_tuned(
    model,
    tokenizer,
    examples: Sequence[Mapping],
    probes: Sequence[Mapping],
    *,
    style: str = "letter",
    batch_size: int = 8,
    max_new_tokens: int = 8,
    n_rotations: int = -1,
    safety_max_new_tokens: int = 96,
) -> tuple[dict, dict]:
    """(base, tuned): `qa.score_multiple_choice` of the peft `model` with its adapter off, then on, each with its
    safety report (None without probes)."""
    score = dict(style=style, batch_size=batch_size, max_new_tokens=max_new_tokens, n_rotations=n_rotations)

    def safety():
        if not probes:
            return None
        replies = qa.generate_replies(
            model, tokenizer, qa.safety_prompts(probes, tokenizer), safety_max_new_tokens, batch_size
        )
        return qa.safety_report(probes, replies)

    with model.disable_adapter():
        base = qa.score_multiple_choice(model, tokenizer, examples, **score)
        base["safety"] = safety()
    tuned = qa.score_multiple_choice(model, tokenizer, examples, **score)
    tuned["safety"] = safety()
    return base, tuned


def evaluation_metrics(gold, examples, train, tuned, base, eval_args) -> dict:
    """Flat metrics for both models (base_ prefix for the base), paired differences, per subject, safety."""
    boot = dict(n_bootstrap=eval_args.n_bootstrap, seed=0)
    m: dict = {
        "n": int(len(gold)),
        "n_bootstrap": eval_args.n_bootstrap,
        "ci_level": 0.95,
        "chance_accuracy": float(np.mean([1 / len(ex["options"]) for ex in examples])),
    }
    generated = eval_args.generate_max_new_tokens > 0
    for prefix, r in (("", tuned), ("base_", base)):
        m.update(qa.accuracy_with_ci(gold, r["pred_loglik"], prefix=f"{prefix}accuracy_loglik", **boot))
        if generated:
            m.update(qa.accuracy_with_ci(gold, r["pred_generate"], prefix=f"{prefix}accuracy_generate", **boot))
            m[f"{prefix}generate_unparsed_fraction"] = float(np.mean(r["pred_generate"] == qa.NO_ANSWER))
        m.update(qa.ece_with_ci(gold, qa.option_probabilities(r["logliks"]), key=f"{prefix}ece", **boot))
        if len(r["rotation_gold"]) > 1:
            n_options = [len(ex["options"]) for ex in examples]
            m.update(
                qa.position_bias_report(
                    r["rotation_gold"], r["rotation_pred"], n_options, prefix=f"{prefix}position_bias"
                )
            )
        if r["safety"] is not None:
            m.update(
                {
                    f"{prefix}safety_pass_rate": r["safety"]["pass_rate"],
                    f"{prefix}safety_n_passed": r["safety"]["n_passed"],
                    f"{prefix}safety_n": r["safety"]["n"],
                }
            )
    for method in ("loglik", "generate") if generated else ("loglik",):
        m.update(
            qa.accuracy_difference_with_ci(
                gold, tuned[f"pred_{method}"], base[f"pred_{method}"], key=f"accuracy_{method}_difference", **boot
            )
        )
    predictions = {"accuracy_loglik": tuned["pred_loglik"], "base_accuracy_loglik": base["pred_loglik"]}
    if generated:
        predictions.update(accuracy_generate=tuned["pred_generate"], base_accuracy_generate=base["pred_generate"])
    m["per_subject"] = qa.accuracy_by_group(
        [ex["subject"] for ex in examples], gold, predictions, eval_args.min_group_size
    )
    m["safety"] = {"tuned": tuned["safety"], "base": base["safety"]}
    m["splits"] = {
        "train": {"questions": len(train), "gold_letters": letter_counts(train["answer_index"])},
        "test": {"questions": len(examples), "gold_letters": letter_counts(gold)},
    }
    return m


def predictions_frame(examples, tuned, base, overlap) -> pd.DataFrame:
    """One row per test question: ids, gold and predicted letters of both models, option scores, probabilities."""
    k_max = tuned["logliks"].shape[1]
    frame = pd.DataFrame(
        {
            "id": [ex["id"] for ex in examples],
            "subject": [ex["subject"] for ex in examples],
            "gold": [qa.letter_of(ex["answer_index"]) for ex in examples],
            "pred_loglik": [qa.letter_of(i) for i in tuned["pred_loglik"]],
            "pred_generate": [qa.letter_of(i) for i in tuned["pred_generate"]],
            "base_pred_loglik": [qa.letter_of(i) for i in base["pred_loglik"]],
            "base_pred_generate": [qa.letter_of(i) for i in base["pred_generate"]],
        }
    )
    for prefix, r in (("", tuned), ("base_", base)):
        probs = qa.option_probabilities(r["logliks"])
        for k in range(k_max):
            frame[f"{prefix}score_{LETTERS[k]}"] = r["logliks"][:, k]
        for k in range(k_max):
            frame[f"{prefix}prob_{LETTERS[k]}"] = probs[:, k]
        frame[f"{prefix}rotations_correct"] = (r["rotation_pred"] == r["rotation_gold"]).sum(axis=0)
        frame[f"{prefix}reply"] = r["replies"]
    frame["ngram_overlap"] = overlap
    return frame


def letter_counts(indices) -> dict[str, int]:
    """Gold answers per letter: a split whose letters are uneven teaches (or rewards) a letter prior."""
    values, counts = np.unique(np.asarray(indices), return_counts=True)
    return {qa.letter_of(int(v)): int(c) for v, c in zip(values, counts)}
