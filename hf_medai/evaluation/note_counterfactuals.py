"""Counterfactual notes: the same clinical note with words that should not change an outcome model's prediction
swapped (sex words, race terms, insurance, the age within its band) or, where the notes never name them, inserted.

Each change is a rule, one function of the text returning (changed text, number of replacements), case-preserving
and bound to whole words, so "the", "there", "Hermann" and "chemotherapy" are never touched:

- `swap_sex`: he <-> she, him/his <-> her, himself <-> herself, Mr./Ms./Mrs., man <-> woman, male <-> female,
  gentleman <-> lady, boy <-> girl (and plurals). "her" becomes "him" when a function word, punctuation or the end
  follows it, else "his"; "his" before punctuation becomes "hers". Words of other people (wife, husband, mother)
  stay: they describe the family, not the patient. All-capital words of up to three letters stay too (MS is
  multiple sclerosis, MR mitral regurgitation, HE hepatic encephalopathy), and so do lower-case "mr" / "ms".
- `swap_age`: every age mention ("67 year old", "67-year-old", "67 yo", "67 y/o", "Age: 67") shifts by `AGE_SHIFT`
  years, up if the age stays in its band of hf_medai.data.subgroups.CLINICAL_AGE_BANDS (and at most 89, the oldest
  age MIMIC leaves unmasked), else down; "a"/"an" before it follows the new number.
- `swap_race`: a race or ethnicity term right before a person word ("African American woman", "white male"):
  white <-> Black, Caucasian <-> African American, Hispanic/Latino/Latina/Asian -> white.
- `swap_insurance`: Medicare <-> Medicaid.
- `insert_race(text, term)`: the term put into the one-liner ("67 year old man" -> "67 year old Black man") of a
  note that names no race there; `insert_insurance(text, plan)`: the sentence "Insurance: <plan>." put after the
  one-liner's sentence, in a note that names no plan. An inserted audit scores two inserted versions against each
  other (white vs Black, Medicare vs Medicaid), never against the note as written.

`COUNTERFACTUALS` lists every audit row: its key, label, whether it is swapped or inserted, and `pair(text)` ->
(version before, version after) or None when the rule does not change that note.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from difflib import SequenceMatcher

from hf_medai.data.subgroups import CLINICAL_AGE_EDGES

AGE_SHIFT = 3  # years; every clinical age band is wider than twice this, so one of +-3 always stays inside
MAX_AGE = 89  # MIMIC masks older ages ("[**Age over 90 **]"): a shifted age never crosses it

# --- sex ---------------------------------------------------------------------------------------------------------
SEX_WORDS = {
    "he": "she",
    "she": "he",
    "him": "her",
    "hers": "his",
    "himself": "herself",
    "herself": "himself",
    "mr": "ms",
    "ms": "mr",
    "mrs": "mr",
    "man": "woman",
    "woman": "man",
    "men": "women",
    "women": "men",
    "male": "female",
    "female": "male",
    "males": "females",
    "females": "males",
    "gentleman": "lady",
    "lady": "gentleman",
    "gentlemen": "ladies",
    "ladies": "gentlemen",
    "boy": "girl",
    "girl": "boy",
    "boys": "girls",
    "girls": "boys",
}
TITLES = {"mr", "ms", "mrs"}  # swapped only as titles (Mr, Mr.), never "mr"/"MS" (mitral regurgitation, sclerosis)
# After "her", these words (or punctuation, or the end) make it the object "him"; any other word the possessive "his".
OBJECT_FOLLOWERS = frozenset(
    "the a an to with for and or in on at from that this as by about into of over through after before since "
    "because while until when if so but up down out back off again today yesterday tomorrow now well".split()
)
_SEX = re.compile(r"\b(" + "|".join(sorted([*SEX_WORDS, "his", "her"], key=len, reverse=True)) + r")\b", re.I)
_NEXT_WORD = re.compile(r"\s*([A-Za-z]+)?")


def match_case(word: str, replacement: str) -> str:
    """`replacement` written in `word`'s case: lower, Title or UPPER."""
    if word.isupper() and len(word) > 1:
        return replacement.upper()
    if word[0].isupper():
        return replacement[0].upper() + replacement[1:]
    return replacement


def swap_sex(text: str) -> tuple[str, int]:
    """Every sex word swapped for its counterpart (see the module docstring for the rules)."""
    count = 0

    def one(m: re.Match) -> str:
        nonlocal count
        word, low = m.group(0), m.group(0).lower()
        if word.isupper() and len(word) <= 3 or (low in TITLES and not word.istitle()):
            return word
        if low in ("her", "his"):
            nxt = _NEXT_WORD.match(text, m.end())
            follower = (nxt.group(1) or "").lower()
            ends = not nxt.group(1)  # punctuation or the end of the text follows
            if low == "her":
                new = "him" if ends or follower in OBJECT_FOLLOWERS else "his"
            else:
                new = "hers" if ends else "her"
        else:
            new = SEX_WORDS[low]
        count += 1
        return match_case(word, new)

    return _SEX.sub(one, text), count


# --- age ---------------------------------------------------------------------------------------------------------
_AGE = re.compile(
    r"\b(?:(?P<article>an?)\s+)?(?P<age>\d{1,3})(?P<unit>\s*-?\s*(?:years?|yrs?)\s*-?\s*old\b|\s*(?:yo|y/o|y\.o\.)"
    r"(?![A-Za-z]))|\b(?P<label>age\s*:\s*)(?P<age2>\d{1,3})\b",
    re.I,
)


def shifted_age(age: int, edges=CLINICAL_AGE_EDGES, shift: int = AGE_SHIFT, max_age: int = MAX_AGE) -> int | None:
    """`age` moved by `shift` years up if that stays in its band (and <= max_age), else down; None if neither."""
    band = sum(age >= e for e in edges)
    for new in (age + shift, age - shift):
        if 0 <= new <= max_age and sum(new >= e for e in edges) == band:
            return new
    return None


def article_for(number: int) -> str:
    """ "an" before a number said with a vowel sound (8, 11, 18, 80-89), else "a"."""
    return "an" if number in (8, 11, 18) or 80 <= number <= 89 else "a"


def swap_age(text: str) -> tuple[str, int]:
    """Every age mention shifted within its band (ages over `MAX_AGE` and masked ages stay)."""
    count = 0

    def one(m: re.Match) -> str:
        nonlocal count
        if m.group("label") is not None:
            new = shifted_age(int(m.group("age2"))) if int(m.group("age2")) <= MAX_AGE else None
            if new is None:
                return m.group(0)
            count += 1
            return f"{m.group('label')}{new}"
        age = int(m.group("age"))
        new = shifted_age(age) if age <= MAX_AGE else None
        if new is None:
            return m.group(0)
        count += 1
        article = m.group("article")
        prefix = f"{match_case(article, article_for(new))} " if article else ""
        return f"{prefix}{new}{m.group('unit')}"

    return _AGE.sub(one, text), count


# --- race and ethnicity ------------------------------------------------------------------------------------------
PERSON = r"(?:man|woman|male|female|gentleman|lady|patient|pt|person|individual|boy|girl)\b"
RACE_SWAPS = {
    "white": "Black",
    "black": "white",
    "caucasian": "African American",
    "african american": "Caucasian",
    "african-american": "Caucasian",
    "hispanic": "white",
    "latino": "white",
    "latina": "white",
    "asian": "white",
}
_RACE = re.compile(
    r"\b(white|black|caucasian|african[- ]american|hispanic|latin[oa]|asian)(?=\s+" + PERSON + ")", re.I
)
# The one-liner's slot: "<age> year old [race] man". Group 1 ends where a race term goes.
_ONE_LINER = re.compile(r"\b(\d{1,3}\s*-?\s*(?:years?|yrs?)\s*-?\s*old|\d{1,3}\s*(?:yo|y/o))(\s+)" + PERSON, re.I)


def swap_race(text: str) -> tuple[str, int]:
    """A race or ethnicity term before a person word swapped (white <-> Black, Caucasian <-> African American, ...)."""
    count = 0

    def one(m: re.Match) -> str:
        nonlocal count
        count += 1
        new = RACE_SWAPS[m.group(0).lower()]
        return new if new[0].isupper() else match_case(m.group(0), new)

    return _RACE.sub(one, text), count


def insert_race(text: str, term: str) -> tuple[str, int]:
    """`term` put into the note's one-liner ("67 year old man" -> "67 year old <term> man"); unchanged (0) when
    there is no one-liner or it already names a race there."""
    m = _ONE_LINER.search(text)
    if m is None or _RACE.search(text):
        return text, 0
    return f"{text[: m.end(1)]} {term}{text[m.end(1) :]}", 1


# --- insurance ---------------------------------------------------------------------------------------------------
_INSURANCE = re.compile(r"\b(medicare|medicaid)\b", re.I)
INSURANCE_SWAPS = {"medicare": "medicaid", "medicaid": "medicare"}
_SENTENCE_END = re.compile(r"\.(?=\s|$)")


def swap_insurance(text: str) -> tuple[str, int]:
    """Medicare <-> Medicaid, wherever the note names one."""
    count = 0

    def one(m: re.Match) -> str:
        nonlocal count
        count += 1
        return match_case(m.group(0), INSURANCE_SWAPS[m.group(0).lower()])

    return _INSURANCE.sub(one, text), count


def insert_insurance(text: str, plan: str) -> tuple[str, int]:
    """ "Insurance: <plan>." after the sentence of the note's one-liner (inside the token window the model reads);
    unchanged (0) without a one-liner or when the note already names Medicare or Medicaid."""
    m = _ONE_LINER.search(text)
    end = _SENTENCE_END.search(text, m.end()) if m else None
    if end is None or _INSURANCE.search(text):
        return text, 0
    return f"{text[: end.end()]} Insurance: {plan}.{text[end.end() :]}", 1


_TOKEN = re.compile(r"\w+|[^\w\s]")


# --- the audit rows ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Counterfactual:
    key: str
    label: str  # the verdict's subject, singular: "<label> moves P(died) by ..."
    how: str  # "swapped" (the note as written vs changed) | "inserted" (two inserted versions)
    absent: str  # what a note lacks when the rule leaves it unchanged ("0 of 31 test notes <absent>")
    before: Callable[[str], tuple[str, int]]
    after: Callable[[str], tuple[str, int]]

    def pair(self, text: str) -> tuple[str, str, int] | None:
        """(version before, version after, replacements), or None when the rule leaves this note unchanged."""
        a, _ = self.before(text)
        b, n = self.after(text)
        return None if a == b or not n else (a, b, n)


def _as_is(text: str) -> tuple[str, int]:
    return text, 0


COUNTERFACTUALS = (
    Counterfactual(
        "sex", "Swapping sex words (he/she, Mr./Ms., man/woman, ...)", "swapped", "use a sex word", _as_is, swap_sex
    ),
    Counterfactual(
        "age",
        f"Shifting the age by {AGE_SHIFT} years within its band",
        "swapped",
        "state an age below 90 (“67 year old”, “Age: 67”)",
        _as_is,
        swap_age,
    ),
    Counterfactual(
        "race",
        "Swapping race terms (white/Black, Caucasian/African American)",
        "swapped",
        "mention a race or ethnicity before a person word (“African American woman”)",
        _as_is,
        swap_race,
    ),
    Counterfactual(
        "insurance",
        "Swapping the insurance (Medicare/Medicaid)",
        "swapped",
        "mention Medicare or Medicaid",
        _as_is,
        swap_insurance,
    ),
    Counterfactual(
        "race_inserted",
        "Changing an inserted race word (“white” → “Black” in the one-liner)",
        "inserted",
        "have a one-liner without a race (“67 year old man”) to insert into",
        lambda t: insert_race(t, "white"),
        lambda t: insert_race(t, "Black"),
    ),
    Counterfactual(
        "insurance_inserted",
        "Changing an inserted insurance (“Insurance: Medicare.” → “Medicaid.” after the one-liner)",
        "inserted",
        "have a one-liner sentence and no Medicare or Medicaid to insert after",
        lambda t: insert_insurance(t, "Medicare"),
        lambda t: insert_insurance(t, "Medicaid"),
    ),
)


def changed_words(before: str, after: str, width: int = 60) -> tuple[str, str]:
    """The words two versions of a note differ in, and nothing around them: (words before, words after), the
    changed spans joined by " … " in note order, each side cut to `width` characters. Only the swapped vocabulary
    leaves the note, so the card shows what changed without quoting the note (names, dates, ids stay out)."""
    a, b = _TOKEN.findall(before), _TOKEN.findall(after)
    spans = [
        (" ".join(a[i1:i2]) or "∅", " ".join(b[j1:j2]) or "∅")
        for op, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
        if op != "equal"
    ]

    def join(parts: list[str]) -> str:
        text = " … ".join(parts).replace("|", "/")
        return text if len(text) <= width else text[: width - 1] + "…"

    return join([x for x, _ in spans]), join([y for _, y in spans])
