"""Multiple-choice QA evaluation on hand-made cases: letter parsing, accuracy CIs, position bias, contamination,
safety scoring, and the batched model scoring against a plain one-sequence-at-a-time computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_medai.evaluation import qa, qa_scoring


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("C", 2),
        ("C.", 2),
        (" (B) Nitroglycerin", 1),
        ("**D**", 3),
        ("E) Urgent PCI", 4),
        ("B\nBecause...", 1),
        ("The answer is C.", 2),
        ("Answer: (D)", 3),
        ("I think the correct option is E", 4),
        ("answer: b", 1),
        ("A", 0),
        ("A. Saline", 0),
        ("A 62-year-old man has right ventricular infarction", qa.NO_ANSWER),  # the article, not option A
        ("Nitroglycerin worsens hypotension", qa.NO_ANSWER),
        ("", qa.NO_ANSWER),
        ("b", qa.NO_ANSWER),
        ("F", qa.NO_ANSWER),  # not an option of a 5-option question
    ],
)
def test_parse_letter(reply, expected):
    assert qa.parse_letter(reply, 5) == expected


def test_parse_letter_respects_the_number_of_options():
    assert qa.parse_letter("D", 4) == 3
    assert qa.parse_letter("E", 4) == qa.NO_ANSWER
    assert qa.parse_letter("C", 3) == 2
    assert qa.letter_of(qa.NO_ANSWER) == "" and qa.index_of("") == qa.NO_ANSWER and qa.index_of("C") == 2


def test_accuracy_with_ci_is_the_plain_fraction_and_unparsed_counts_as_wrong():
    gold = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    pred = np.array([0, 1, 2, qa.NO_ANSWER, 0, 0, 3, 2])
    out = qa.accuracy_with_ci(gold, pred, n_bootstrap=200, prefix="accuracy_loglik")
    assert out["accuracy_loglik"] == pytest.approx(5 / 8)
    assert 0 <= out["accuracy_loglik_ci_low"] <= 5 / 8 <= out["accuracy_loglik_ci_high"] <= 1
    no_ci = qa.accuracy_with_ci(gold, pred, n_bootstrap=0)
    assert no_ci["accuracy_ci_low"] is None and no_ci["accuracy"] == pytest.approx(5 / 8)


def test_paired_difference_is_zero_for_identical_models_and_signed_otherwise():
    gold = np.array([0, 1, 2, 3, 4] * 4)
    a = gold.copy()
    b = np.where(np.arange(20) % 2 == 0, gold, (gold + 1) % 5)  # right on half the questions
    same = qa.accuracy_difference_with_ci(gold, b, b, n_bootstrap=100)
    assert (
        same["accuracy_difference"] == 0
        and same["accuracy_difference_ci_low"] == 0 == same["accuracy_difference_ci_high"]
    )
    diff = qa.accuracy_difference_with_ci(gold, a, b, n_bootstrap=200)
    assert diff["accuracy_difference"] == pytest.approx(0.5)
    assert 0 < diff["accuracy_difference_ci_low"] <= 0.5 <= diff["accuracy_difference_ci_high"]


def test_ece_with_ci_equals_the_shared_ece():
    from hf_medai.evaluation import expected_calibration_error

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=40)
    gold = rng.integers(0, 5, size=40)
    out = qa.ece_with_ci(gold, probs, n_bootstrap=50)
    assert out["ece"] == pytest.approx(expected_calibration_error(gold, probs))
    assert out["ece_ci_low"] <= out["ece_ci_high"]


def test_option_probabilities_ignore_missing_options():
    probs = qa.option_probabilities(np.array([[0.0, 0.0, np.nan], [np.log(3), 0.0, 0.0]]))
    np.testing.assert_allclose(probs, [[0.5, 0.5, 0.0], [0.6, 0.2, 0.2]])


def test_rotations_move_the_answer_with_its_text():
    example = {"question": "q", "options": ["a", "b", "c", "d", "e"], "answer_index": 1}
    seen = set()
    for shift in [0, *qa.rotation_shifts(5)]:
        rotated = qa.rotate_options(example, shift)
        assert rotated["options"][rotated["answer_index"]] == "b"
        seen.add(rotated["answer_index"])
    assert seen == {0, 1, 2, 3, 4}  # the gold answer visits every position once
    assert example["options"] == ["a", "b", "c", "d", "e"]  # the original is untouched
    assert qa.rotation_shifts(5, 2) == [1, 2] and qa.rotation_shifts(4, 0) == []


def _orders(gold: np.ndarray, choose) -> tuple[np.ndarray, np.ndarray]:
    examples = [{"question": "q", "options": list("vwxyz"), "answer_index": int(g)} for g in gold]
    golds, preds = [], []
    for shift in [0, *qa.rotation_shifts(5)]:
        rotated = [qa.rotate_options(ex, shift) for ex in examples]
        golds.append([ex["answer_index"] for ex in rotated])
        preds.append([choose(i, ex) for i, ex in enumerate(rotated)])
    return np.array(golds), np.array(preds)


def test_position_bias_of_a_model_that_always_says_A():
    gold = np.array([0, 1, 2, 3, 4, 2])
    golds, preds = _orders(gold, lambda i, ex: 0)
    out = qa.position_bias_report(golds, preds, [5] * len(gold))
    assert out["position_bias_n_orders"] == 5
    assert out["position_bias_accuracy_mean"] == pytest.approx(0.2)  # right exactly when the gold sits at A
    assert out["position_bias_accuracy_gold_at_A"] == 1.0 and out["position_bias_accuracy_gold_at_C"] == 0.0
    assert out["position_bias_pred_fraction_A"] == 1.0 and out["position_bias_pred_fraction_B"] == 0.0
    assert out["position_bias_consistency"] == 0.0  # a different option text in every order
    assert out["position_bias_max_pred_fraction_gap"] == pytest.approx(0.8)


def test_position_bias_of_a_model_that_reads_the_options():
    gold = np.array([0, 1, 2, 3, 4, 2])

    # Knows the answer to the first four questions, and on the others always picks the text "v": order-invariant.
    def choose(i, ex):
        return ex["answer_index"] if i < 4 else ex["options"].index("v")

    golds, preds = _orders(gold, choose)
    out = qa.position_bias_report(golds, preds, [5] * len(gold))
    assert out["position_bias_consistency"] == 1.0
    assert out["position_bias_accuracy_min"] == out["position_bias_accuracy_max"] == pytest.approx(4 / 6)
    assert out["position_bias_max_pred_fraction_gap"] == pytest.approx(0.0, abs=1e-12)


def test_contamination_flags_copies_and_light_edits_not_new_questions():
    train = [
        "A 45-year-old woman has fatigue, pallor and koilonychia; ferritin is low. What is the most likely "
        "diagnosis? Iron deficiency anaemia"
    ]
    copied = train[0]
    edited = train[0].replace("45-year-old", "46-year-old")
    new = "A 6-year-old boy has a barking cough and inspiratory stridor that worsen at night. Croup"
    short = "Which drug?"
    summary, overlap = qa.contamination_report(train, [copied, edited, new, short], n=8, threshold=0.2)
    assert overlap[0] == 1.0 and 0.2 <= overlap[1] < 1.0 and overlap[2] == 0.0 and overlap[3] == 0.0
    assert summary["contamination_n_flagged"] == 2 and summary["contamination_n_test"] == 4
    assert summary["contamination_max_overlap"] == 1.0
    assert qa.ngrams("One, two; THREE four", 2) == {("one", "two"), ("two", "three"), ("three", "four")}


def test_safety_report_counts_by_category():
    from hf_medai.data.medqa import load_safety_probes

    probes = [p for p in load_safety_probes() if p["id"] in ("chest-pain-01", "misuse-01")]
    replies = ["Call 911 now: this could be a heart attack.", "Sure, take as many as you like."]
    report = qa.safety_report(probes, replies)
    assert report["n"] == 2 and report["n_passed"] == 1 and report["pass_rate"] == 0.5
    assert report["by_category"]["chest_pain_now"] == {"n": 1, "n_passed": 1}
    assert report["probes"][1]["missing"] == ["refusal"]
    with pytest.raises(ValueError, match="2 probes but 1 replies"):
        qa.safety_report(probes, replies[:1])


def test_accuracy_by_group():
    out = qa.accuracy_by_group(
        ["cardio", "cardio", "neuro", ""],
        [0, 1, 2, 3],
        {"tuned": [0, 0, 2, 3], "base": [1, 1, 1, 1]},
        min_group_size=2,
    )
    assert list(out) == ["cardio", "neuro", "unknown"]
    assert out["cardio"] == {"n": 2, "small": False, "tuned": 0.5, "base": 0.5}
    assert out["neuro"]["small"] and out["neuro"]["tuned"] == 1.0


# --- scoring with a model --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from hf_medai.data.medqa import load_qa, sample_path
    from hf_medai.models.causal_lm import tiny_llama

    model, tokenizer = tiny_llama(seed=1)
    examples = [dict(ex) for ex in load_qa(sample_path("medqa"))[0].select(range(5))]
    return model.eval(), tokenizer, examples


def _plain_logliks(model, tokenizer, examples, style):
    """One sequence per option, no padding: the definition the batched code must match."""
    out = np.full((len(examples), 5), np.nan)
    for i, ex in enumerate(examples):
        prompt, options = qa_scoring.continuation_token_ids(ex, tokenizer, style)
        for k, cont in enumerate(options):
            ids = torch.tensor([prompt + cont])
            with torch.no_grad():
                logprobs = torch.log_softmax(model(ids).logits[0].float(), -1)
            out[i, k] = sum(float(logprobs[len(prompt) - 1 + t, tok]) for t, tok in enumerate(cont))
    return out


@pytest.mark.parametrize("style", ["letter", "letter+text"])
def test_batched_option_scores_equal_one_sequence_at_a_time(tiny, style):
    model, tokenizer, examples = tiny
    expected = _plain_logliks(model, tokenizer, examples, style)
    for batch_size in (1, 3):
        np.testing.assert_allclose(
            qa.option_logliks(model, tokenizer, examples, style, batch_size), expected, atol=1e-4
        )


def test_letter_continuations_are_the_trained_answer_tokens(tiny):
    from hf_medai.data.medqa import tokenize_for_sft

    _, tokenizer, examples = tiny
    for ex in examples:
        prompt, options = qa_scoring.continuation_token_ids(ex, tokenizer, "letter")
        trained = tokenize_for_sft(ex, tokenizer, 4096)
        answer = [t for t in trained["labels"] if t != -100]
        assert all(len(o) == 1 for o in options)  # one forward pass scores all options
        assert answer[0] == options[ex["answer_index"]][0]
        assert trained["input_ids"][: len(prompt)] == prompt


def test_batched_generation_equals_one_prompt_at_a_time(tiny):
    model, tokenizer, examples = tiny
    prompts = qa.letter_prompts(examples, tokenizer)
    batched = qa.generate_replies(model, tokenizer, prompts, max_new_tokens=5, batch_size=5)
    single = [qa.generate_replies(model, tokenizer, [p], max_new_tokens=5, batch_size=1)[0] for p in prompts]
    assert batched == single


def test_score_multiple_choice_shapes(tiny):
    model, tokenizer, examples = tiny
    out = qa.score_multiple_choice(model, tokenizer, examples, max_new_tokens=3, n_rotations=2)
    assert out["logliks"].shape == (5, 5) and out["rotation_pred"].shape == (3, 5)
    np.testing.assert_array_equal(out["rotation_pred"][0], out["pred_loglik"])
    assert len(out["replies"]) == 5 and out["pred_generate"].shape == (5,)


@pytest.mark.parametrize("reply", ["The answer is a beta blocker.", "My answer is based on the ECG"])
def test_parse_letter_ignores_words_after_answer_is(reply):
    assert qa.parse_letter(reply, 5) == qa.NO_ANSWER
