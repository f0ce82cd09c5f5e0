"""Person-name lists for the PHI scanner: US Census 1990 first and last names, less words that are not names in notes.

The lists are the files shipped in the MIT-licensed `names` package (5,163 first names, 88,799 surnames); we read
its files and never import its code. Every surname list also holds ordinary words (Care, Blood, Pain, Will, May):
`NOT_NAMES` lists the capitalised words of clinical text that are census names, so that a pair such as "Will Start"
is not taken for a person; `EPONYM_NOUNS` are the words after an eponym ("Austin Flint murmur", "Marcus Gunn pupil")
that show the names before them are not a person in the note. `find_names` finds names by a title ("Mr. Tobias Wren":
every word after it), a credential ("Keisha Donnelly, RN"), "Last, First" with a census first name ("Delacroix,
Simone"), or a census first name followed by a census surname ("Brian Whitfield"); `repeated_names` finds their words
again elsewhere in the text. Names after a label ("Attending:", "daughter") are found by `hf_medai.data.phi`.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

NOT_NAMES = frozenset(
    """
about across after again against age alert all also an and any apgar april arrow art as at august autumn
babinski back bad bed best bill blood border both brain bridge call can cane card care case chance chase check
cheyne chief child clear close coma code common coombs course cross cullen dawn day dear december deep devick
do doctor dose drop dry early east edge end english epley faith fall fine finkelstein first floor foley free
gallery ganz gene general glasgow gold good grace gram guy hand hands hartmann head heart heimlich hodgkin
holter home homans honda hope horner ill iris janeway joy june july kerley kidney kussmaul labs last left level
light like little long love low lyme major march mark may meals middle needs new nissen north nurse osler page
pain pap parkinson patience patient peace pick plate point post prior pugh quick rain ranson read record rich
right ring ringer rocky rose roux sage salt sample say scale service short sister small south spring spurling
stable stage start stay steel sterling strength street strong summer sunday swan tinel trendelenburg true vail
valsalva vital wall warm water well west whipple will winter
""".split()
)

EPONYM_NOUNS = frozenset(
    """
sign signs murmur pupil syndrome disease protein node nodes nodule test tests maneuver procedure surgery triad
pentad score scale criteria catheter drain tube line lines fracture palsy lymphoma reflex position phenomenon
respirations breathing stain classification class grade lens blade bag monitor equation formula lesions
spots tear ulcer bodies cells disorder diet pattern operation fundoplication
""".split()
)


def tails(words) -> str:
    """Words with their first letter already consumed, grouped by that letter: `(?:(?<=J)(?:anuary|an)|...)`."""
    by_first: dict[str, list[str]] = {}
    for w in sorted(set(words), key=len, reverse=True):
        by_first.setdefault(w[0], []).append(re.escape(w[1:]).replace("_", r"[ \t]+"))
    return "(?:" + "|".join(f"(?<={re.escape(c)})(?:{'|'.join(rest)})" for c, rest in sorted(by_first.items())) + ")"


def anchored(words, end: str = r"\b") -> str:
    """An alternation of words that starts with a character class, so the regex engine jumps from one candidate first
    letter to the next instead of trying every branch at every position; '_' in a word is a space."""
    return f"[{''.join(sorted({re.escape(w[0]) for w in words}))}](?<![\\w].){tails(words)}{end}"


TOK_TAIL = r"'?[A-Z]?[a-z]+(?:[A-Z][a-z]+)?(?:-[A-Z][a-z]+)*"  # Wren, O'Brien, McAllister, Anne-Marie
TOK = rf"(?:[A-Z]{TOK_TAIL})"
CAPS = r"(?:[A-Z]{2,}(?:['-][A-Z]{2,})?)"  # WREN (after a label, or as "WREN, TOBIAS")
NAME = rf"(?:[A-Z]\.[ \t]*)?{TOK}(?:[ \t]+(?:[A-Z]\.?[ \t]+)?{TOK}){{0,2}}"
WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
# Words that begin a sentence or a label rather than a name or place ("Per Caroline Whitmore, RN").
LEAD = frozenset(
    """per seen spoke discussed consulted signed electronically patient pt called contacted reviewed
case plan husband wife son daughter mother father sister brother attending resident fellow intern surgeon dictated
cc with by and the a an dear hi note addendum family nurse practitioner physician provider pcp team interpreter
contact emergency referring followed thanks thank to from of for on in at is was has had this that his her their
name patient's mr mrs ms dr prof rn md np pa rehab hospital clinic cardiology neurology surgery medicine oncology
nephrology icu micu sicu ccu er ed home outside osh nursing facility shelter skilled floor ward unit service""".split()
)
_TITLE_NAME = re.compile(
    rf"[DMP](?<![A-Za-z].)(?:(?<=D)r|(?<=M)(?:rs?|s|iss|x)|(?<=P)rof)\b\.?[ \t]*"
    rf"(?P<v>{NAME})"
)
_WEAK_CREDENTIALS = frozenset("DO PA PT OT RT RD DPT".split())
_CREDENTIAL = re.compile(
    anchored(
        "MD M.D. RN NP PA-C PhD DDS DMD CNM CRNA LPN LCSW LICSW MSW PharmD DPM FNP APRN "
        "ANP ACNP MBBS FACC FACS FACP BSN MSN CCRN DNP".split()
        + list(_WEAK_CREDENTIALS),
        r"(?![\w-])",
    )
)  # the weak ones ("Smith, DO") need a comma
_NAME_BEFORE = re.compile(rf"(?P<v>{NAME})(?P<comma>,?)[ \t]+$")
_LAST_FIRST = re.compile(rf",(?<=[a-z],)[ \t]*(?P<first>{TOK})(?:[ \t]+[A-Z]\b\.?)?")
_WORD_BEFORE = re.compile(rf"{TOK}$")
_CAP_RUN = re.compile(rf"[A-Z](?<![\w'].){TOK_TAIL}(?:[ \t]+(?:[A-Z]\.?[ \t]+)?{TOK})+")


def _names_dir() -> Path:
    spec = importlib.util.find_spec("names")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the PHI scanner's name lists come from the `names` package: pip install names")
    return Path(next(iter(spec.submodule_search_locations)))


def _read(*files: str) -> frozenset[str]:
    folder = _names_dir()
    return frozenset(
        line.split(None, 1)[0].lower() for f in files for line in (folder / f).read_text().splitlines() if line.strip()
    )


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """Lower-case census first names, less `NOT_NAMES`."""
    return _read("dist.male.first", "dist.female.first") - NOT_NAMES


@lru_cache(maxsize=1)
def last_names() -> frozenset[str]:
    """Lower-case census surnames, less `NOT_NAMES`."""
    return _read("dist.all.last") - NOT_NAMES


def is_name_word(word: str, first: bool) -> bool:
    low = word.lower()
    names = first_names() if first else last_names()
    return low not in NOT_NAMES and low not in LEAD and any(p in names for p in re.split(r"[-']", low) if p)


def trim_name(text: str, start: int, end: int, strong: bool) -> tuple[int, int] | None:
    """The name in text[start:end] without leading/trailing non-name words; None if nothing is left."""
    words = [(m.start(), m.end(), m.group().lower()) for m in WORD.finditer(text, start, end)]
    while words and (words[0][2] in LEAD or words[0][2] in NOT_NAMES):
        words.pop(0)
    while words and (words[-1][2] in LEAD or words[-1][2] in NOT_NAMES):
        words.pop()
    if not words or not (strong or any(is_name_word(w, True) or is_name_word(w, False) for _, _, w in words)):
        return None
    if _eponym_follows(text, words[-1][1]):
        return None
    return words[0][0], words[-1][1]


def _eponym_follows(text: str, end: int) -> bool:
    m = re.match(r"(?:'s)?[ \t]+([A-Za-z]+)", text[end : end + 40])
    return bool(m) and m.group(1).lower() in EPONYM_NOUNS


def find_names(text: str) -> list[tuple[int, int]]:
    """Spans of person names found by a title, a credential, "Last, First" or a first name + census surname."""
    spans = []
    for m in _TITLE_NAME.finditer(text):
        span = trim_name(text, *m.span("v"), strong=True)
        if span:
            spans.append(span)
    for m in _CREDENTIAL.finditer(text):
        before = _NAME_BEFORE.search(text, max(0, m.start() - 80), m.start())
        if before and (before.group("comma") or m.group() not in _WEAK_CREDENTIALS):
            span = trim_name(text, *before.span("v"), strong=True)
            if span:
                spans.append(span)
    for m in _LAST_FIRST.finditer(text):  # "Delacroix, Simone"; in capitals ("WREN, TOBIAS") only after a label
        last = _WORD_BEFORE.search(text, max(0, m.start() - 30), m.start())
        first = m.group("first")
        if (
            last
            and is_name_word(first, True)
            and last.group().lower() not in LEAD
            and last.group().lower() not in NOT_NAMES
        ):
            spans.append((last.start(), m.end()))
    for m in _CAP_RUN.finditer(text):
        words = [(w.start() + m.start(), w.end() + m.start(), w.group()) for w in WORD.finditer(m.group())]
        i = 0
        while i < len(words) - 1:
            j = i + 1 + (len(words[i + 1][2]) == 1)  # over a middle initial
            if j < len(words) and is_name_word(words[i][2], True) and is_name_word(words[j][2], False):
                while j + 1 < len(words) and is_name_word(words[j + 1][2], False):
                    j += 1
                if not _eponym_follows(text, words[j][1]):
                    spans.append((words[i][0], words[j][1]))
                i = j + 1
            else:
                i += 1
    return spans


def repeated_names(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Every other place the words of the names at `spans` occur: a name found once is a name everywhere in the text
    ("Mr. Tobias Wren ... Wren said")."""
    words = {
        w.group()
        for s, e in spans
        for w in WORD.finditer(text, s, e)
        if len(w.group()) > 2 and w.group().lower() not in NOT_NAMES and w.group().lower() not in LEAD
    }
    if not words:
        return []
    again = re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, words), key=len, reverse=True)) + r")\b")
    return [m.span() for m in again.finditer(text)]
