"""The QA answer-stability audit's parts: the stem paraphrases (exact outputs), the span shown in the card, the
mapping of rotated probabilities back to the original order, and the auditor on a tiny model. The recipe's run
folder (robustness block, card, a row recomputed from the reloaded adapter, `hf-medai audit`) is checked in
tests/test_medqa_recipe.py on its run."""

from __future__ import annotations

import numpy as np
import pytest

from hf_medai.evaluation.qa import option_probabilities, rotate_options, score_multiple_choice
from hf_medai.evaluation.qa_paraphrase import (
    PARAPHRASES,
    according_to_study,
    age_after_noun,
    changed_span,
    colon_to_question,
    most_appropriate,
    paraphrase_examples,
    presents_comes,
    question_first,
    which_to_what,
)

VIGNETTE = (
    "A 45-year-old man presents with chest pain. His pulse is 54/min. "
    "Which of the following is the most appropriate next step in management?"
)


def test_which_to_what():
    assert (
        which_to_what("Which of the following is the most likely diagnosis?") == "What is the most likely diagnosis?"
    )
    assert (
        which_to_what("Which of the following best explains these findings?") == "What best explains these findings?"
    )
    # a noun after "the following" would need its number changed: left alone
    assert which_to_what("Which of the following drugs should be avoided in this patient?") is None


def test_most_appropriate():
    assert (
        most_appropriate("What is the most appropriate next step in management?")
        == "What is the best next step in management?"
    )
    assert most_appropriate("Which of the following prophylactic regimens is most appropriate?") == (
        "Which of the following prophylactic regimens is best?"
    )
    assert most_appropriate("What is the most likely diagnosis?") is None


def test_age_after_noun():
    assert age_after_noun("A 45-year-old man presents with chest pain.") == "A man, aged 45, presents with chest pain."
    assert age_after_noun("An 8-year-old boy has dark urine.") == "A boy, aged 8, has dark urine."
    assert (
        age_after_noun("A 9-month-old boy has episodes of crying.") == "A boy, aged 9 months, has episodes of crying."
    )
    assert age_after_noun("A 1-week-old girl is seen.") == "A girl, aged 1 week, is seen."
    assert age_after_noun("A 28-year-old primigravida, at 35 weeks, has a headache.") == (
        "A primigravida, aged 28, at 35 weeks, has a headache."
    )
    assert age_after_noun("A 4-week-old first-born boy has vomiting.") is None  # an adjective before the noun
    assert age_after_noun("A home pregnancy test detects a hormone.") is None


def test_presents_comes():
    assert presents_comes("A 45-year-old man presents with chest pain.") == (
        "A 45-year-old man comes to the physician with chest pain."
    )
    assert presents_comes("A woman presents to the emergency department with pain.") == (
        "A woman comes to the emergency department with pain."
    )
    assert presents_comes("A man comes to the emergency department with pain.") == (
        "A man presents to the emergency department with pain."
    )
    assert presents_comes("A man comes to the physician because of a cough.") is None
    assert presents_comes("A woman has fatigue.") is None


def test_question_first():
    assert question_first(VIGNETTE) == (
        "Which of the following is the most appropriate next step in management? "
        "A 45-year-old man presents with chest pain. His pulse is 54/min."
    )
    # decimals and units do not split sentences; a single sentence or no final question is left alone
    assert (
        question_first("Her temperature is 39.0 C. What is the cause?")
        == "What is the cause? Her temperature is 39.0 C."
    )
    assert question_first("Which of the following cells produces this hormone?") is None
    assert question_first("Koplik spots are seen in:") is None


def test_colon_to_question_and_according_to_study():
    assert colon_to_question("Koplik spots are characteristically seen in:") == (
        "Koplik spots are characteristically seen in which of the following?"
    )
    assert colon_to_question("Antidote for an overdose of unfractionated heparin is:") == (
        "Antidote for an overdose of unfractionated heparin is which of the following?"
    )
    assert colon_to_question("Apgar score includes all of the following EXCEPT:") == (
        "Apgar score includes all of the following EXCEPT which of the following?"
    )
    assert colon_to_question("What is the cause?") is None
    assert according_to_study("Does early mobilisation reduce delirium?") == (
        "According to the study, does early mobilisation reduce delirium?"
    )
    assert according_to_study("Is a checklist associated with fewer errors?") == (
        "According to the study, is a checklist associated with fewer errors?"
    )
    assert according_to_study(VIGNETTE) is None


def test_rules_apply_to_a_useful_share_of_the_bundled_samples():
    from hf_medai.data.medqa import load_qa, sample_path

    counts = {}
    for name in ("medqa", "medmcqa", "pubmedqa"):
        examples = [dict(ex) for ex in load_qa(sample_path(name))[0]]
        counts[name] = {rule: len(paraphrase_examples(examples, rule)[0]) for rule in PARAPHRASES}
    assert counts["medqa"] == {
        "which_to_what": 45,
        "most_appropriate": 37,
        "age_after_noun": 66,
        "presents_comes": 1,
        "question_first": 74,
        "colon_to_question": 0,
        "according_to_study": 0,
    }
    assert counts["medmcqa"]["colon_to_question"] == 6 and counts["pubmedqa"]["according_to_study"] == 6


def test_paraphrase_changes_only_the_stem():
    ex = {"id": "q1", "question": VIGNETTE, "options": ["a", "b"], "answer_index": 1, "context": ""}
    idx, changed = paraphrase_examples([ex, {**ex, "id": "q2", "question": "Short."}], "most_appropriate")
    assert idx == [0]
    assert changed[0] == {**ex, "question": VIGNETTE.replace("most appropriate", "best")}
    assert ex["question"] == VIGNETTE  # the input is not modified


def test_changed_span_is_one_table_cell():
    before, after = changed_span(VIGNETTE, VIGNETTE.replace("most appropriate", "best"))
    assert before == "…Which of the following is the most appropriate next step in management?"
    assert after == "…Which of the following is the best next step in management?"
    long = "x | y\n" * 100
    a, b = changed_span(long, "Q? " + long)
    assert "|" not in a + b and "\n" not in a + b and len(a) <= 112 and len(b) <= 112


def test_unrotate_puts_rotated_probabilities_back_in_the_original_order():
    from hf_medai.audits.qa import unrotate

    probs = np.array([[0.1, 0.2, 0.3, 0.4, 0.0], [0.5, 0.1, 0.1, 0.2, 0.1]])  # 4 and 5 options
    for shift in (1, 2, 3):
        rotated = np.zeros_like(probs)
        for q, k in enumerate((4, 5)):
            ex = rotate_options({"options": [str(i) for i in range(k)], "answer_index": 0}, shift)
            for pos, text in enumerate(ex["options"]):
                rotated[q, pos] = probs[q, int(text)]
        np.testing.assert_allclose(unrotate(rotated, shift, [4, 5]), probs)


@pytest.fixture(scope="module")
def tiny_model_and_questions():
    from hf_medai.data.medqa import load_qa, sample_path
    from hf_medai.models.causal_lm import tiny_llama

    model, tokenizer = tiny_llama(seed=0)
    examples = [dict(ex) for ex in load_qa(sample_path("medqa"))[0]][:6]
    return model, tokenizer, examples


def test_auditor_scores_alone_what_it_reuses_from_the_recipe(tiny_model_and_questions):
    from hf_medai.audits.qa import SECTION, stability_section

    model, tokenizer, examples = tiny_model_and_questions
    scored = score_multiple_choice(model, tokenizer, examples, batch_size=4, max_new_tokens=0, n_rotations=2)
    reused = stability_section(model, tokenizer, examples, batch_size=4, n_rotations=2, n_bootstrap=30, scored=scored)
    alone = stability_section(model, tokenizer, examples, batch_size=4, n_rotations=2, n_bootstrap=30)
    assert reused == alone
    sec = reused[SECTION]
    paraphrased = ["which_to_what", "most_appropriate", "age_after_noun", "presents_comes", "question_first"]
    assert list(sec["rows"]) == paraphrased + ["rotation_1", "rotation_2"]
    assert sec["paraphrases_applied"]["question_first"] == 6 == sec["rows"]["question_first"]["n"]
    assert set(sec["not_applicable"]) == {"colon_to_question", "according_to_study"}
    # rotation rows: accuracy after = the recipe's rotation accuracy; before = the original order's
    for r in (1, 2):
        row = sec["rows"][f"rotation_{r}"]
        assert row["metric_after"] == pytest.approx(np.mean(scored["rotation_pred"][r] == scored["rotation_gold"][r]))
        assert row["metric_before"] == pytest.approx(np.mean(scored["pred_loglik"] == scored["rotation_gold"][0]))
    # the largest example really is the largest gold-probability change of any paraphrased question
    probs = option_probabilities(scored["logliks"])
    top = sec["examples"][0]
    i = [ex["id"] for ex in examples].index(top["id"])
    assert top["score_before"] == pytest.approx(probs[i, examples[i]["answer_index"]])
    assert abs(top["score_after"] - top["score_before"]) == pytest.approx(
        max(abs(e["score_after"] - e["score_before"]) for e in sec["examples"])
    )
