"""Multiple-choice medical QA: scoring a causal LM two ways, position bias, calibration, contamination, safety.

Two ways to read a model's answer, reported side by side because they disagree in instructive ways:

- **Log-likelihood** (as lm-evaluation-harness scores MedQA): after the chat prompt, the log-probability of each
  option's continuation ("A", "B", ...; or "A. <text>"); the answer is the most likely option. It needs no parsing
  and always answers, so it measures what the model knows more than whether it follows the format.
- **Generation**: greedy decoding of a few tokens, then `parse_letter`. This is what a user sees; a model that
  rambles or refuses scores lower here than by log-likelihood.

Everything numeric goes through the shared metric modules and bootstrap (`hf_medai.evaluation.classification`), so
an accuracy here and in any other report is the same function with the same kind of interval.

Scoring (`hf_medai.evaluation.qa_scoring`) is batched for CPUs: when every option's continuation is a single token
(the letter style, for every tokenizer we know), one forward pass of the prompt scores all options (the last
position's next-token distribution); prompts are left-padded with matching position ids and only the last position's logits are
computed. Multi-token continuations fall back to one sequence per option.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hf_medai.data.medqa import LETTERS, chat_token_ids, score_safety_reply
from hf_medai.evaluation.classification import _with_intervals
from hf_medai.evaluation.metrics import metric_function
from hf_medai.evaluation.qa_scoring import generate_replies, letter_prompts, option_logliks

NO_ANSWER = -1  # parse_letter's value for a reply that names no option

# ----------------------------------------------------------------------------------------------- accuracy


def accuracy_with_ci(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    prefix: str = "accuracy",
) -> dict[str, Any]:
    """Accuracy (our `accuracy` metric module) with a percentile bootstrap CI over questions.

    `y_pred` may hold NO_ANSWER (-1) for an unparsed reply: it counts as wrong. Returns {prefix, prefix_ci_low,
    prefix_ci_high}. Questions are resampled as they are (no strata): the test set is a sample of questions.
    """
    y, p = _labels(y_true, y_pred)

    def values(y_: np.ndarray, p_: np.ndarray) -> dict[str, Any]:
        return {prefix: metric_function("accuracy")(references=y_, predictions=p_)["accuracy"]}

    out = _with_intervals(values, (y, p), strata=None, n_bootstrap=n_bootstrap, seed=seed, ci=ci)
    out.pop("bootstrap_undefined", None)
    return out


def accuracy_difference_with_ci(
    y_true: Sequence[int],
    pred_a: Sequence[int],
    pred_b: Sequence[int],
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    key: str = "accuracy_difference",
) -> dict[str, Any]:
    """accuracy(a) - accuracy(b) on the same questions, with a PAIRED bootstrap CI (both models scored on each
    resample). Narrower and more honest than comparing two separate intervals: the questions are shared."""
    y, a = _labels(y_true, pred_a)
    _, b = _labels(y_true, pred_b)
    accuracy = metric_function("accuracy")

    def values(y_: np.ndarray, a_: np.ndarray, b_: np.ndarray) -> dict[str, Any]:
        return {
            key: np.asarray(accuracy(references=y_, predictions=a_)["accuracy"])
            - np.asarray(accuracy(references=y_, predictions=b_)["accuracy"])
        }

    out = _with_intervals(values, (y, a, b), strata=None, n_bootstrap=n_bootstrap, seed=seed, ci=ci)
    out.pop("bootstrap_undefined", None)
    return out


def ece_with_ci(
    y_true: Sequence[int],
    probs: np.ndarray,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    key: str = "ece",
    n_bins: int = 15,
) -> dict[str, Any]:
    """Top-label ECE of the option probabilities (our `ece` module, multiclass form) with a bootstrap CI.

    `probs`: (n, K) probabilities over the options; rows of questions with fewer options are padded with 0."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=0.0)
    ece = metric_function("ece")

    def values(y_: np.ndarray, p_: np.ndarray) -> dict[str, Any]:
        return {key: ece(references=y_, prediction_scores=p_, n_bins=n_bins)["ece"]}

    out = _with_intervals(values, (y, p), strata=None, n_bootstrap=n_bootstrap, seed=seed, ci=ci)
    out.pop("bootstrap_undefined", None)
    return out


def accuracy_by_group(
    groups: Sequence[str], y_true: Sequence[int], predictions: Mapping[str, Sequence[int]], min_group_size: int = 30
) -> dict[str, dict[str, Any]]:
    """{group: {"n", "small": n < min_group_size, <name>: accuracy for each named prediction}}, largest group
    first. Empty or missing group names are "unknown". For per-subject tables: every group is usually tiny."""
    g = np.asarray(["unknown" if not x else str(x) for x in groups], dtype=object)
    y = np.asarray(y_true, dtype=np.int64)
    accuracy = metric_function("accuracy")
    counts = Counter(g.tolist())
    out: dict[str, dict[str, Any]] = {}
    for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        rows = g == name
        entry: dict[str, Any] = {"n": int(n), "small": bool(n < min_group_size)}
        for key, pred in predictions.items():
            entry[key] = float(
                accuracy(references=y[rows], predictions=np.asarray(pred, dtype=np.int64)[rows])["accuracy"]
            )
        out[name] = entry
    return out


def _labels(y_true: Sequence[int], y_pred: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if y.ndim != 1 or y.size == 0 or p.shape != y.shape:
        raise ValueError(f"y_true and y_pred must be non-empty 1-D arrays of one length, got {y.shape}, {p.shape}")
    if (y < 0).any():
        raise ValueError("y_true must hold option indices >= 0 (free-text questions cannot be scored here)")
    return y, p


# ----------------------------------------------------------------------------------------------- letters


_ANSWER_IS = re.compile(
    r"\b(?:answer|option|choice)\s*(?:is|:|=)?\s*(?:option\s*)?[\(\[\*]*([A-Za-z])(?![A-Za-z0-9'-])(.*)", re.I | re.S
)
_ALONE_AFTER = re.compile(r"^[\s\)\]\.\*:,\"'`]*(?:$|\n)")  # nothing but punctuation to the end of the line
_LEADING = re.compile(r"^[\s\*\(\[\"'`]*([A-Z])(?:[\s\)\]\.\:,\*\"'`]|$)")
_ARTICLE_A = re.compile(r"^A\s+[a-z0-9]")  # "A 45-year-old..." / "A patient should..." is the article, not option A


def parse_letter(text: str, n_options: int) -> int:
    """The option a generated reply names, as an index (0 = A), or NO_ANSWER (-1).

    In order: "answer is C" / "Answer: (C)" / "option C" anywhere (a lower-case letter there only when nothing but
    punctuation follows it on its line: "answer: b", not "the answer is a beta blocker"); else a reply that starts
    with a capital letter standing alone ("C", "C.", "(C)", "**C**", "C) Lisinopril"), except the article "A"
    starting a sentence ("A patient...", "A 45-year-old..."). Only letters of existing options count. The rules see
    form, not meaning: "not B, the answer is C" gives C, but "B is wrong" gives B.
    """
    valid = LETTERS[:n_options]
    text = text or ""
    for match in _ANSWER_IS.finditer(text):
        letter, rest = match.group(1), match.group(2)
        if letter.islower() and not _ALONE_AFTER.match(rest):
            continue
        if letter.upper() in valid:
            return valid.index(letter.upper())
    stripped = text.strip()
    match = _LEADING.match(stripped)
    if match and match.group(1) in valid and not _ARTICLE_A.match(stripped):
        return valid.index(match.group(1))
    return NO_ANSWER


def letter_of(index: int) -> str:
    """ "A".."E" for an option index, "" for NO_ANSWER (an empty cell in predictions.csv)."""
    return LETTERS[index] if 0 <= index < len(LETTERS) else ""


def index_of(letter: Any) -> int:
    """Inverse of `letter_of`: "" / NaN -> NO_ANSWER."""
    return LETTERS.index(letter) if isinstance(letter, str) and len(letter) == 1 and letter in LETTERS else NO_ANSWER


# ----------------------------------------------------------------------------------------------- option scores


def option_probabilities(logliks: np.ndarray) -> np.ndarray:
    """Softmax of the option log-likelihoods over each question's own options (0 where it has none): the
    model's probability of each option given that it picks one of them. Used for calibration."""
    z = np.asarray(logliks, dtype=np.float64)
    finite = np.isfinite(z)
    z = np.where(finite, z, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.where(finite, np.exp(z), 0.0)
    return e / e.sum(axis=1, keepdims=True)


def predicted_options(logliks: np.ndarray) -> np.ndarray:
    """Index of the most likely option per question (ties: the first)."""
    return np.nanargmax(np.asarray(logliks, dtype=np.float64), axis=1)


# ----------------------------------------------------------------------------------------------- position bias


def rotate_options(example: Mapping, shift: int) -> dict:
    """A copy of a multiple-choice example with its options rotated by `shift` (option i moves to position
    (i + shift) mod K) and answer_index moved with them. Rotations put the gold answer at every position once."""
    options = list(example["options"])
    k = len(options)
    if k == 0:
        raise ValueError("rotate_options needs a multiple-choice example")
    rotated = [options[(j - shift) % k] for j in range(k)]
    out = dict(example)
    out["options"] = rotated
    out["answer_index"] = (int(example["answer_index"]) + shift) % k
    return out


def rotation_shifts(n_options: int, n_rotations: int = -1) -> list[int]:
    """The non-identity rotations to score: all K-1 for n_rotations=-1, else the first n_rotations of them."""
    shifts = list(range(1, n_options))
    return shifts if n_rotations < 0 else shifts[:n_rotations]


def position_bias_report(
    answer_index: np.ndarray, predictions: np.ndarray, n_options: Sequence[int], prefix: str = "position_bias"
) -> dict[str, Any]:
    """Position bias from the same questions scored with their options in several orders.

    `answer_index`, `predictions`: (R, n) gold and predicted option indices, row 0 the original order and rows
    1.. the rotations (as from `rotate_options`); `n_options`: options per question. Returns flat keys:
    <prefix>_accuracy_original, _accuracy_mean / _min / _max over the R orders, _consistency (fraction of
    questions whose chosen option TEXT is the same in every order), _accuracy_gold_at_<L> (accuracy when the gold
    answer sits at letter L, pooled over orders), _pred_fraction_<L> (how often letter L is chosen; an unbiased
    model chooses each as often as the gold answer sits there), _max_pred_fraction_gap, and _n_orders.
    """
    gold = np.asarray(answer_index, dtype=np.int64)
    pred = np.asarray(predictions, dtype=np.int64)
    if gold.shape != pred.shape or gold.ndim != 2:
        raise ValueError(
            f"answer_index and predictions must both be (orders, questions), got {gold.shape}, {pred.shape}"
        )
    accuracy = metric_function("accuracy")
    per_order = np.array([accuracy(references=gold[r], predictions=pred[r])["accuracy"] for r in range(len(gold))])
    # The option text chosen: its offset from the gold answer, which a rotation moves together with the text.
    k = np.asarray(n_options, dtype=np.int64)[None, :]
    chosen_text = np.where(pred >= 0, (pred - gold) % k, -1)
    consistent = (chosen_text == chosen_text[:1]).all(axis=0)
    out: dict[str, Any] = {
        f"{prefix}_n_orders": int(len(gold)),
        f"{prefix}_accuracy_original": float(per_order[0]),
        f"{prefix}_accuracy_mean": float(per_order.mean()),
        f"{prefix}_accuracy_min": float(per_order.min()),
        f"{prefix}_accuracy_max": float(per_order.max()),
        f"{prefix}_consistency": float(consistent.mean()),
    }
    gaps = []
    for j, letter in enumerate(LETTERS[: int(k.max())]):
        at = gold == j
        if at.any():
            out[f"{prefix}_accuracy_gold_at_{letter}"] = float(
                accuracy(references=gold[at], predictions=pred[at])["accuracy"]
            )
        chosen, expected = float((pred == j).mean()), float(at.mean())
        out[f"{prefix}_pred_fraction_{letter}"] = chosen
        gaps.append(abs(chosen - expected))
    out[f"{prefix}_max_pred_fraction_gap"] = float(max(gaps)) if gaps else 0.0
    return out


def score_multiple_choice(
    model,
    tokenizer,
    examples: Sequence[Mapping],
    style: str = "letter",
    batch_size: int = 8,
    max_new_tokens: int = 8,
    n_rotations: int = -1,
) -> dict[str, Any]:
    """Everything one model gives on a multiple-choice test set, as arrays (no metrics yet):

    logliks (n, K) and pred_loglik (n,) by option log-likelihood; replies (n,) greedy generations of at most
    `max_new_tokens` and pred_generate (n,) their parsed letters (NO_ANSWER when none); rotation_gold and
    rotation_pred (R, n): gold and log-likelihood predictions with the options in R orders (row 0 the original,
    then `rotation_shifts` of each question's options; R = 1 when n_rotations is 0); rotation_shifts (R,) and
    rotation_logliks (R, n, K) the shifts and option log-likelihoods behind them (in each order's own positions).
    """
    n_options = [len(ex["options"]) for ex in examples]
    logliks = option_logliks(model, tokenizer, examples, style, batch_size)
    pred = predicted_options(logliks)
    replies = (
        generate_replies(model, tokenizer, letter_prompts(examples, tokenizer), max_new_tokens, batch_size)
        if max_new_tokens > 0
        else [""] * len(examples)
    )
    gold_rows = [np.asarray([ex["answer_index"] for ex in examples])]
    pred_rows, loglik_rows, shifts = [pred], [logliks], [0]
    for shift in rotation_shifts(min(n_options), n_rotations):
        rotated = [rotate_options(ex, shift) for ex in examples]
        gold_rows.append(np.asarray([ex["answer_index"] for ex in rotated]))
        loglik_rows.append(option_logliks(model, tokenizer, rotated, style, batch_size))
        pred_rows.append(predicted_options(loglik_rows[-1]))
        shifts.append(shift)
    return {
        "logliks": logliks,
        "pred_loglik": pred,
        "replies": replies,
        "pred_generate": np.asarray([parse_letter(r, k) for r, k in zip(replies, n_options)], dtype=np.int64),
        "rotation_gold": np.stack(gold_rows),
        "rotation_pred": np.stack(pred_rows),
        "rotation_shifts": np.asarray(shifts),
        "rotation_logliks": np.stack(loglik_rows),
    }


# ----------------------------------------------------------------------------------------------- contamination


_WORD = re.compile(r"[a-z0-9]+")


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams of lower-cased text, punctuation dropped (GPT-3's contamination study used n=13)."""
    words = _WORD.findall((text or "").lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def qa_text(example: Mapping) -> str:
    """What the contamination check compares: context, question and options."""
    return " ".join([example.get("context") or "", example.get("question") or "", *(example.get("options") or [])])


def contamination_report(
    train_texts: Sequence[str], test_texts: Sequence[str], n: int = 13, threshold: float = 0.2
) -> tuple[dict[str, Any], np.ndarray]:
    """Word n-gram overlap of each test text with the training texts.

    Returns (summary, overlap): overlap[i] = fraction of test text i's n-grams found in any training text (0 for a
    text shorter than n words). Summary (flat): contamination_ngram_n, contamination_threshold,
    contamination_n_flagged (overlap >= threshold), contamination_fraction_flagged, contamination_max_overlap,
    contamination_mean_overlap, contamination_n_test. Exact n-grams catch copies and light edits, not paraphrase
    or translation; a clean result does not prove the base model never saw the test questions in pre-training.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    for text in train_texts:
        seen |= ngrams(text, n)
    overlap = np.zeros(len(test_texts))
    for i, text in enumerate(test_texts):
        grams = ngrams(text, n)
        overlap[i] = len(grams & seen) / len(grams) if grams else 0.0
    flagged = overlap >= threshold
    summary = {
        "contamination_ngram_n": int(n),
        "contamination_threshold": float(threshold),
        "contamination_n_test": int(len(test_texts)),
        "contamination_n_flagged": int(flagged.sum()),
        "contamination_fraction_flagged": float(flagged.mean()) if len(test_texts) else 0.0,
        "contamination_max_overlap": float(overlap.max()) if len(test_texts) else 0.0,
        "contamination_mean_overlap": float(overlap.mean()) if len(test_texts) else 0.0,
    }
    return summary, overlap


# ----------------------------------------------------------------------------------------------- safety probes


def safety_prompts(probes: Sequence[Mapping], tokenizer) -> list[list[int]]:
    """Each probe as a chat prompt: the probe's text as the user turn, no system prompt (as a patient would ask)."""
    return [
        chat_token_ids(tokenizer, [{"role": "user", "content": p["prompt"]}], add_generation_prompt=True)
        for p in probes
    ]


def safety_report(
    probes: Sequence[Mapping], replies: Sequence[str], score: Callable[[Mapping, str], dict] = score_safety_reply
) -> dict[str, Any]:
    """Score replies to the safety probes by their explicit rules.

    Returns {"n", "n_passed", "pass_rate", "by_category": {category: {"n", "n_passed"}}, "probes": [{"id",
    "category", "expected", "passed", "missing", "forbidden", "reply"}]}.
    """
    if len(probes) != len(replies):
        raise ValueError(f"{len(probes)} probes but {len(replies)} replies")
    rows, by_category = [], {}
    for probe, reply in zip(probes, replies):
        result = score(probe, reply)
        rows.append(
            {
                "id": probe["id"],
                "category": probe["category"],
                "expected": probe["expected"],
                "passed": bool(result["passed"]),
                "missing": result["missing"],
                "forbidden": result["forbidden"],
                "reply": reply,
            }
        )
        cat = by_category.setdefault(probe["category"], {"n": 0, "n_passed": 0})
        cat["n"] += 1
        cat["n_passed"] += int(result["passed"])
    n_passed = sum(r["passed"] for r in rows)
    return {
        "n": len(rows),
        "n_passed": n_passed,
        "pass_rate": n_passed / len(rows) if rows else None,
        "by_category": by_category,
        "probes": rows,
    }
