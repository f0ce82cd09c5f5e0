"""Rule-based paraphrases of a multiple-choice question's STEM (never its options), for the answer-stability audit.

Each rule is a deterministic function text -> text, or None where it does not apply; a rule that applies changes
wording or order only, not the clinical facts, so a model that understood the question should give the same answer.
The rules were chosen so that each applies to a useful share of the questions we ship or read:

    which_to_what        "Which of the following is the most likely diagnosis?" -> "What is the most likely diagnosis?"
    most_appropriate     "the most appropriate next step in management" -> "the best next step in management"
    age_after_noun       "A 45-year-old man has ..." -> "A man, aged 45, has ..."
    presents_comes       "presents with" -> "comes to the physician with"; "comes to the X" <-> "presents to the X"
    question_first       the vignette's final question moved before the vignette
    colon_to_question    MedMCQA fragments: "Koplik spots are characteristically seen in:" -> "... in which of the
                         following?"
    according_to_study   PubMedQA yes/no questions: "Does X reduce Y?" -> "According to the study, does X reduce Y?"

The audit (hf_medai.audits.qa) scores each rule on the questions it applies to and reports that number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

_WHICH = re.compile(r"\bWhich of the following (?=(?:is|are|best|most|should|would)\b)")
_MOST_APPROPRIATE = re.compile(r"\bmost appropriate\b")
_PEOPLE = "man|woman|boy|girl|patient|child|infant|farmer|climber|student|primigravida"
_AGE = re.compile(rf"^(An?) (\d+)-(year|month|week|day)-old ({_PEOPLE})\b")
_PRESENTS_WITH = re.compile(r"\bpresents with\b")
_PRESENTS_TO = re.compile(r"\bpresents to the\b")
_COMES_TO = re.compile(r"\bcomes to the (?!physician\b)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_COLON_END = re.compile(r"^(.*\b(?:is|are|of|in|by|to|for|with|EXCEPT|except))\s*:\s*$", re.S)
_YES_NO = re.compile(r"^(Does|Do|Did|Is|Are|Was|Were|Can|Could|Should|Has|Have)\s")


def which_to_what(stem: str) -> str | None:
    """ "Which of the following is/are/best/most/should/would ..." -> "What ..."."""
    out = _WHICH.sub("What ", stem)
    return out if out != stem else None


def most_appropriate(stem: str) -> str | None:
    """ "most appropriate" -> "best" ("the most appropriate next step" -> "the best next step")."""
    out = _MOST_APPROPRIATE.sub("best", stem)
    return out if out != stem else None


def age_after_noun(stem: str) -> str | None:
    """ "A 45-year-old man ..." -> "A man, aged 45, ..."; "A 9-month-old boy ..." -> "A boy, aged 9 months, ..."."""
    match = _AGE.match(stem)
    if match is None:
        return None
    age, unit, person = match.group(2), match.group(3), match.group(4)
    aged = age if unit == "year" else f"{age} {unit}{'' if age == '1' else 's'}"
    rest = stem[match.end() :]
    comma = "" if rest.startswith(",") else ","
    return f"A {person}, aged {aged}{comma}{rest}"


def presents_comes(stem: str) -> str | None:
    """ "presents with" -> "comes to the physician with"; "presents to the" -> "comes to the"; else "comes to the X"
    -> "presents to the X" (the two ways vignettes open, swapped)."""
    for pattern, repl in ((_PRESENTS_WITH, "comes to the physician with"), (_PRESENTS_TO, "comes to the")):
        out = pattern.sub(repl, stem)
        if out != stem:
            return out
    out = _COMES_TO.sub("presents to the ", stem)
    return out if out != stem else None


def question_first(stem: str) -> str | None:
    """The final sentence, when it is a question after at least one other sentence, moved to the front."""
    sentences = _SENTENCE_END.split(stem.strip())
    if len(sentences) < 2 or not sentences[-1].endswith("?"):
        return None
    return " ".join([sentences[-1], *sentences[:-1]])


def colon_to_question(stem: str) -> str | None:
    """A fragment ending in "is:", "of:", "EXCEPT:" ... (MedMCQA) -> "... which of the following?"."""
    match = _COLON_END.match(stem)
    return f"{match.group(1)} which of the following?" if match else None


def according_to_study(stem: str) -> str | None:
    """A yes/no question (PubMedQA: "Does ...?", "Is ...?") -> "According to the study, does ...?"."""
    stem = stem.strip()
    if not (_YES_NO.match(stem) and stem.endswith("?")):
        return None
    return "According to the study, " + stem[0].lower() + stem[1:]


# rule -> (function, the card's label: a plural noun phrase, as the verdict reads "<label> move <score> by ...")
PARAPHRASES: dict[str, tuple[Callable[[str], str | None], str]] = {
    "which_to_what": (which_to_what, 'Rewording "Which of the following is" → "What is"'),
    "most_appropriate": (most_appropriate, 'Rewording "most appropriate" → "best"'),
    "age_after_noun": (age_after_noun, 'Rewording "A 45-year-old man" → "A man, aged 45,"'),
    "presents_comes": (presents_comes, 'Rewording "presents with / to" ↔ "comes to"'),
    "question_first": (question_first, "Asking the final question first"),
    "colon_to_question": (colon_to_question, 'Rewording "… is:" → "… is which of the following?"'),
    "according_to_study": (according_to_study, 'Rewording "Does …?" → "According to the study, does …?"'),
}


def paraphrase_examples(examples: Sequence[Mapping], rule: str) -> tuple[list[int], list[dict]]:
    """(indices, paraphrased copies) of the examples `rule` applies to; only "question" changes."""
    fn = PARAPHRASES[rule][0]
    indices, changed = [], []
    for i, ex in enumerate(examples):
        text = fn(ex["question"])
        if text is not None and text != ex["question"]:
            indices.append(i)
            changed.append({**ex, "question": text})
    return indices, changed


def changed_span(before: str, after: str, context: int = 30, width: int = 110) -> tuple[str, str]:
    """The part of two texts that differs, with `context` characters either side ("…" where cut), each at most
    `width` characters, on one line and without "|" (for a Markdown table cell)."""
    start = 0
    while start < min(len(before), len(after)) and before[start] == after[start]:
        start += 1
    end = 0
    while end < min(len(before), len(after)) - start and before[-1 - end] == after[-1 - end]:
        end += 1

    def cut(text: str) -> str:
        lo, hi = max(0, start - context), min(len(text), len(text) - end + context)
        piece = text[lo:hi]
        if len(piece) > width:
            piece = piece[: width - 1] + "…"
        out = ("…" if lo > 0 else "") + piece + ("…" if hi < len(text) and not piece.endswith("…") else "")
        return " ".join(out.replace("|", "/").split())

    return cut(before), cut(after)
