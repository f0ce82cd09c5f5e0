"""The counterfactual note audit: the swap rules (exact outputs, tricky words), the section built from any scorer, and,
on the note recipes' run folders (tests/test_clinical_recipes.py, tests/test_fusion_recipes.py), the robustness
block checked against a direct recomputation with the plain HF API."""

from __future__ import annotations

import numpy as np
import pytest

from hf_medai.evaluation.note_counterfactuals import (
    COUNTERFACTUALS,
    changed_words,
    insert_insurance,
    insert_race,
    shifted_age,
    swap_age,
    swap_insurance,
    swap_race,
    swap_sex,
)

ONE_LINER = (
    "Ms. [**Known lastname 2910**] is a 69 year old woman with HLD, full code, who presents with chest pain. "
    "In the ED, She was fine."
)


@pytest.mark.parametrize(
    "text, expected, n",
    [
        (ONE_LINER, ONE_LINER.replace("Ms.", "Mr.").replace("woman", "man").replace("She", "He"), 3),
        ("He said his wife gave her the pills.", "She said her wife gave him the pills.", 3),
        ("She took her medication. Gave it to her.", "He took his medication. Gave it to him.", 3),
        ("The book is his. Mrs. Lee, a lady", "The book is hers. Mr. Lee, a gentleman", 3),
        ("A MALE patient; female, Men and WOMEN", "A FEMALE patient; male, Women and MEN", 4),
        # never inside words, never abbreviations: MS (sclerosis), MR (regurgitation), HE (encephalopathy), "ms."
        ("the chemotherapy there for Hermann; other theme", "the chemotherapy there for Hermann; other theme", 0),
        ("MS and MR noted, HE improving; ms. Jones", "MS and MR noted, HE improving; ms. Jones", 0),
        ("Lives with wife. Mother with diabetes.", "Lives with wife. Mother with diabetes.", 0),
    ],
)
def test_swap_sex(text, expected, n):
    assert swap_sex(text) == (expected, n)


@pytest.mark.parametrize(
    "text, expected, n",
    [
        (ONE_LINER, ONE_LINER.replace("a 69", "a 72"), 1),
        ("a 77 year old man", "a 74 year old man", 1),  # 80 would leave the 65-79 band: down instead
        ("An 81-year-old woman, Age: 44.", "An 84-year-old woman, Age: 41.", 2),
        ("a 79 yo man", "a 76 yo man", 1),
        ("an 18 y/o girl", "a 21 y/o girl", 1),  # the article follows the number
        ("a 62 year old man", "a 59 year old man", 1),  # 65 would leave 45-64
        ("an 88 year old", "an 85 year old", 1),  # never past 89 (MIMIC masks older ages)
        ("[**Age over 90 **] year old; 30 pack-years; 20 years ago; at 60", None, 0),
    ],
)
def test_swap_age(text, expected, n):
    assert swap_age(text) == (expected or text, n)


def test_shifted_age_stays_in_the_clinical_band():
    from hf_medai.data.subgroups import CLINICAL_AGE_BANDS, CLINICAL_AGE_EDGES, age_band

    for age in range(0, 90):
        new = shifted_age(age)
        band = age_band(age, CLINICAL_AGE_BANDS, CLINICAL_AGE_EDGES)
        assert new is not None and abs(new - age) == 3 and new <= 89, age
        assert age_band(new, CLINICAL_AGE_BANDS, CLINICAL_AGE_EDGES) == band, age


def test_race_and_insurance_swaps_and_insertions():
    assert swap_race("A 62 yo African American female. White male. white count 12, black stools") == (
        "A 62 yo Caucasian female. Black male. white count 12, black stools",
        2,
    )
    assert swap_race("Hispanic woman, asian man") == ("White woman, white man", 2)  # case kept
    assert swap_insurance("Insured by MEDICARE and medicaid.") == ("Insured by MEDICAID and medicare.", 2)
    assert insert_race(ONE_LINER, "Black") == (ONE_LINER.replace("old woman", "old Black woman"), 1)
    assert insert_race("A 62 yo African American female", "Black") == ("A 62 yo African American female", 0)
    assert insert_race("No one-liner here.", "Black") == ("No one-liner here.", 0)
    chest = "chest pain. "
    assert insert_insurance(ONE_LINER, "Medicaid") == (
        ONE_LINER.replace(chest, chest[:-1] + " Insurance: Medicaid. "),
        1,
    )
    assert insert_insurance(ONE_LINER + " On Medicare.", "Medicaid")[1] == 0  # the swap row covers it


def test_pairs_and_snippets():
    cf = {c.key: c for c in COUNTERFACTUALS}
    assert cf["sex"].pair(ONE_LINER)[0] == ONE_LINER  # a swap compares against the note as written
    a, b, n = cf["race_inserted"].pair(ONE_LINER)  # an insertion compares two inserted versions
    assert "old white woman" in a and "old Black woman" in b and n == 1
    assert cf["race"].pair(ONE_LINER) is None and cf["insurance"].pair(ONE_LINER) is None
    # Only the changed words leave the note: no name, date or id from around them (the card is pushed).
    note = "Mr. Hansen, 67 year old, seen 2131-04-02. He | said\nhe felt well; his wife (MRN 123) agrees."
    before, after = changed_words(note, cf["sex"].pair(note)[1])
    assert (before, after) == ("Mr … He … he … his", "Ms … She … she … her")
    assert changed_words("67 year old man", "67 year old white man") == ("∅", "white")
    assert changed_words("a " * 10 + "he", "b " * 10 + "she", width=12) == ("a a a a a a…", "b b b b b b…")


def test_section_from_a_scorer_counts_only_changed_notes():
    from hf_medai.audits.notes import counterfactual_section

    texts = [ONE_LINER, ONE_LINER.replace("Ms.", "Mr.").replace("woman", "man").replace("She", "He"), "No words."]

    def score(rows, notes):  # risk 0.8 for a woman, 0.2 otherwise; "Black" adds 0.1
        p = np.array([(0.8 if "woman" in t else 0.2) + (0.1 if "Black" in t else 0.0) for t in notes])
        return np.stack([1 - p, p], 1)

    sec = counterfactual_section(score, texts, [1, 0, 0], ["survived", "died"], 0.5, 0)
    sex = sec["rows"]["sex"]
    assert sex["n"] == 2 and sex["mean_abs_change"] == pytest.approx(0.6) and sex["n_flipped"] == 2
    assert sex["mean_change"] == pytest.approx(0.0) and sex["replacements"] == 6 and sex["how"] == "swapped"
    race = sec["rows"]["race_inserted"]
    assert race["n"] == 2 and race["mean_change"] == pytest.approx(0.1) and race["how"] == "inserted"
    assert set(sec["not_applicable"]) == {"race", "insurance"}
    assert sec["not_applicable"]["race"].startswith("0 of 3 test notes")
    assert sec["threshold"] == 0.5 and sec["n_notes"] == 3 and sec["signed"] is False
    assert "sex" in sec["material"] and sec["verdicts"]["sex"].startswith(
        "Swapping sex words (he/she, Mr./Ms., man/woman, ...) moves P(died) by 0.600 on average"
    )
    top = sec["examples"][0]
    assert top["label"] == "sex" and abs(top["score_after"] - top["score_before"]) == pytest.approx(0.6)
    assert "|" not in top["before"] and "\n" not in top["after"]
