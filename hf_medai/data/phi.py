"""PHI guard: find identifiers left in clinical text, count them per HIPAA Safe Harbor class, redact them.

A screen, not a certified de-identifier. It looks for the 16 Safe Harbor identifier classes that can be written in
text (`PHI_CLASSES`): person names; addresses (street, PO box, county, a city with its state or after "lives in")
and ZIP codes; dates other than a bare year (3/28, March 21, 14-Mar-91, 14.03.2089, June 2089, ...) and ages over 89;
phone and fax numbers; e-mail addresses; SSNs; medical record, health-plan, account, licence/certificate, vehicle
(VIN, plate) and device (serial, UDI) numbers; URLs; IP addresses; any other long identifying number. It cannot see
the other two classes (`NOT_SEEN`): biometric identifiers and full-face photographs, nor anything inside images or
binary files. Names are found by context (a title, a credential such as ", RN", a label such as "Attending:" or
"daughter", "Last, First") or as a first name followed by a surname from the US Census lists
(`hf_medai.data.phi_names`); a name found once is found again anywhere in the same text. Missed: a name with none
of these (a lone unusual surname, a first name alone), a month named alone ("in March"), a city without a state or
a "lives in"-like phrase, identifiers spelled out in words or broken across lines. Measured recall per class and
false flags on clean notes: `benchmarks/phi_scanner.py`.

It reports counts only, never the matched text, so the report itself can be published. Not counted, and kept by
redaction: MIMIC's placeholders for removed PHI (`[** ... **]` in MIMIC-III, `___` in MIMIC-IV) and public dataset
ids, which are not PHI: ISIC/HAM10000 ids (`ISIC_0024306`, `HAM_0000118`, `IP_7279968`), MIMIC-IV note ids
(`10000032-DS-21`), numbers labelled with a dataset column (`hadm_id 20001234`, `subject_id=10000032`, `stay_id`,
`note_id`, ...) and the row/admission numbers of our loaders' skipped-row reports (`row 1234567`, `admission
20001234:`). A bare 8-digit number is still flagged: in a note it may be a record number. Used by the data loaders
(`--phi_policy error|redact|warn`, `hf_medai.data.phi_policy`) and by the Hub push gate (`hf_medai.hub`).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter

from hf_medai.data.phi_names import (
    CAPS,
    LEAD,
    NAME,
    TOK,
    TOK_TAIL,
    anchored,
    find_names,
    repeated_names,
    tails,
    trim_name,
)

# fmt: off
PHI_CLASSES = ("name", "address", "zip", "date", "age_over_89", "phone", "fax", "email", "ssn", "mrn", "health_plan",
               "account", "licence", "vehicle", "device", "url", "ip", "other_id")
# fmt: on
NOT_SEEN = ("biometric identifiers (finger and voice prints)", "full-face photographs and comparable images")
# What the Hub push gate and the README say about this scanner.
SCOPE = (
    "The PHI scanner reads text only, for the 16 HIPAA Safe Harbor classes that text can hold (names, addresses "
    "and ZIP codes, dates other than the year and ages over 89, phone and fax numbers, e-mail, SSN, medical "
    "record, health-plan, account, licence, vehicle and device numbers, URLs, IP addresses, other long id "
    "numbers). It cannot see the other two classes, biometric identifiers and full-face photographs, nor "
    "anything inside images or binary files, and it misses names that have no title, credential or label and "
    "are not in its census name lists: passing it is a screen, not de-identification"
)

# Speed: MIMIC-IV's notes are gigabytes. Patterns start with a plain character class (a digit, a capital, a literal)
# and check what precedes it with a lookbehind placed after that first character, so the regex engine skips ahead
# to candidate characters instead of trying each position; label words are found in one pass over the lower-cased
# text, and only then is each label's own pattern tried at that spot.
_PLACEHOLDER = re.compile(r"\[\*\*[^\n]{0,200}?\*\*\]|_{3,}")  # bounded: a stray `[**` cannot swallow a note
_DATASET_ID = re.compile(
    r"[IH](?<![\w].)(?:SIC|AM|P)_\d{7}(?:_\w+)?\b|\d(?<![\w-]\d)\d{7}-[A-Z]{2}-\d+\b"
    r"|\b(?:subject|hadm|stay|icustay|note|row|transfer|caregiver|study|dicom|lesion|image)_id\b['\"]?"
    r"[ \t]*[:=]?[ \t]*['\"]?\w+|r(?<![\w].)ow \d+\b|a(?<![\w].)dmission \d+(?=:)"
)
_DATASET_HINTS = ("_id", "ISIC_", "HAM_", "IP_", "-DS-", "-RR-", "row ", "admission ")

# --- building blocks -----------------------------------------------------------------------------------------
# fmt: off
_MONTHS = ("Jan January Feb February Mar March Apr April May Jun June Jul July Aug August Sep Sept September Oct "
           "October Nov November Dec December").split()
_MON = "(?:" + "|".join(sorted({v for m in _MONTHS for v in (m, m.upper())}, key=len, reverse=True)) + r")\b\.?"
_MON_ANY = r"(?i:jan|feb|mar|apr|may|jun|jul|aug|sept?|oct|nov|dec)"
_DAY = r"(?:3[01]|[12]\d|0?[1-9])"
_STATES = ("Alabama Alaska Arizona Arkansas California Colorado Connecticut Delaware Florida Georgia Hawaii Idaho "
           "Illinois Indiana Iowa Kansas Kentucky Louisiana Maine Maryland Massachusetts Michigan Minnesota "
           "Mississippi Missouri Montana Nebraska Nevada Ohio Oklahoma Oregon Pennsylvania Tennessee Texas Utah "
           "Vermont Virginia Washington Wisconsin Wyoming New_Hampshire New_Jersey New_Mexico New_York "
           "North_Carolina North_Dakota Rhode_Island South_Carolina South_Dakota West_Virginia Puerto_Rico").split()
_STATE = "(?:" + "|".join(s.replace("_", "[ \t]+") for s in _STATES) + r")\b"
_ABBR = ("AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK "
         "OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC PR").split()
# Abbreviations that are also clinical words (MD, PA, MS, MI, CA, VA, OR, IN, ME, ...) count only before a ZIP.
_ABBR_ALONE = frozenset(
    "AK AZ AR CT FL IA KS KY MA MN MO MT NV NH NJ NM NY NC ND OH RI SD TN TX UT VT WA WV WI WY".split())
_STREET = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|"
           r"Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Plaza|Alley|Turnpike|Tpke|Pike|Row|Path)\b\.?")
# A labelled identifier's value: 4+ characters, at least three digits ("MA 8RT-221": a state before a plate).
_VALUE = r"(?P<v>(?:[A-Z]{2}[ \t])?(?=(?:[A-Za-z-]*\d){3})[A-Za-z0-9][A-Za-z0-9-]{2,40}[A-Za-z0-9])(?![\w-])"
_CONNECT = r"\.?[ \t]*(?:(?i:\#|no\b\.?|num(?:ber)?\b\.?|nbr\b|id\b|identifier\b|code\b)[ \t]*)*[:#]?[ \t]*"
# fmt: on

# --- label words: class -> (regex of the label, its first words as typed in lower case) --------------------------
# fmt: off
_LABELS = {  # order matters: "license plate" is a vehicle, "license" a licence
    "vehicle": r"(?i:vin|vehicle(?:[ \t]+(?:tag|identification))?|licen[cs]e[ \t]+plate|plate|tag|registration)",
    "health_plan": r"(?i:medicare|medicaid|mbi|hicn|member|subscriber|policy|insurance|health[ \t]+plan|plan|group"
                   r"|beneficiary|bcbs)",
    "account": r"(?i:acct|account|billing|financial[ \t]+number|encounter|visit|claim|invoice|card)|FIN",
    "licence": r"(?i:dea|npi|driver'?s?[ \t]+licen[cs]e|licen[cs]e|lic\.|certificate|cert\.|certification)|DL",
    "device": r"(?i:serial|s/n|device(?:[ \t]+serial)?|udi|implant)|SN",
    "mrn": r"(?i:mrn|mr|med(?:ical)?\.?[ \t]+rec(?:ord)?s?\.?|unit|hosp(?:ital)?\.?|empi|pt\.?[ \t]+id|patient[ \t]+id"
           r"|chart|record)",
    "other_id": r"(?i:badge|employee|emp|passport|accession|specimen|case|barcode|ref(?:erence)?|requisition"
                r"|(?:study[ \t]+)?subject|study)|ID",
}
_STRONG = (r"patient[ \t]+name|name|attending(?:[ \t]+physician)?|resident|fellow|intern|surgeon|anesthesiologist"
           r"|dictated[ \t]+by|transcribed[ \t]+by|(?:electronically[ \t]+)?signed(?:[ \t]+electronically)?"
           r"(?:[ \t]+by)?|attested[ \t]+by|completed[ \t]+by|interpreter|nurse[ \t]+practitioner"
           r"|emergency[ \t]+contact|next[ \t]+of[ \t]+kin|nok|hcp|health[ \t]+care[ \t]+proxy|proxy|guardian|husband"
           r"|wife|spouse|partner|son|daughter|mother|father|brother|sister|sibling|aunt|uncle|niece|nephew|grandson"
           r"|granddaughter|caregiver|friend")
_WEAK = (r"patient|pt|pcp|provider|physician|referring(?:[ \t]+(?:physician|provider))?|seen[ \t]+(?:by|with)"
         r"|reviewed[ \t]+(?:with|by)|discussed[ \t]+with|spoke[ \t]+(?:with|to)|called|consulted|cc|contact|per"
         r"|followed[ \t]+by|care[ \t]+of|c/o")
_CITY_CONTEXT = r"lives|living|resides|residing|moved|relocated|originally|transferred|born|raised|native|home"
# fmt: on


def _first_words(alternation: str) -> set[str]:
    """Lower-case first words of a label alternation, for the one-pass trigger."""
    body = re.sub(r"\(\?i:|\(\?:|\)|\?|\\|\[ \\t\]\+|\[cs\]|'", lambda m: " " if "t" in m.group() else "", alternation)
    return {w.split()[0].lower().rstrip(".") for w in body.split("|") if w.strip()} | {"licence", "license"}


_KEYED: list[tuple[set[str], str, re.Pattern[str]]] = [
    (_first_words(pattern), cls, re.compile(rf"(?:{pattern}){_CONNECT}{_VALUE}")) for cls, pattern in _LABELS.items()
]
# fmt: off
_KEYED += [
    ({"ssn", "ss", "social", "soc"}, "ssn", re.compile(
        r"(?i:ssn|ss[ \t]*\#|ss[ \t]*no\b\.?|social[ \t]+security|soc\.?[ \t]*sec\.?)(?:[ \t]*(?i:number|no\b\.?|\#))?"
        r"[ \t]*[:#]?[ \t]*(?P<v>\d{9}|\d{3}[ .-]?\d{2}[ .-]?\d{4})\b")),
    ({"phone", "tel", "cell", "mobile", "pager", "beeper", "call", "fax", "contact", "number"}, "phone", re.compile(
        r"(?i:phone|tel|cell|mobile|pager|beeper|call|fax|contact|number)\b"
        r"[^\d\n]{0,12}(?P<v>\d{3}[-.]\d{4})(?![\d-])")),
    ({"zip", "zipcode", "postal"}, "zip", re.compile(
        r"(?i:zip(?:[ \t]*code)?|zipcode|postal[ \t]+code)[ \t]*[:#]?[ \t]*(?P<v>\d{5}(?:-\d{4})?)\b")),
    ({"age", "aged"}, "age_over_89", re.compile(r"(?i:aged?\b)[ \t:]*(?P<v>9\d|1[01]\d)\b(?![.,]?\d|%)")),
    ({"ninety", "one"}, "age_over_89", re.compile(
        r"(?i:ninety|one[ \t]+hundred)(?:[ \t-]+(?i:one|two|three|four|five|six|seven|eight|nine))?"
        r"[ \t-]+(?i:years?)")),
    (set(_CITY_CONTEXT.split("|")), "city", re.compile(
        rf"(?i:{_CITY_CONTEXT})(?:[ \t]+(?i:alone|here|there|with[ \t]+\w+|from|to|in|of|at|back)){{0,3}}[ \t]+"
        rf"(?i:in|from|to|of)[ \t]+(?P<v>{TOK}(?:[ \t]+{TOK}){{0,2}})")),
    (_first_words(_STRONG) | _first_words(_WEAK), "name", re.compile(
        rf"(?i:(?P<strong>{_STRONG})|(?P<weak>{_WEAK}))\b(?P<colon>[ \t]*[:,])?[ \t]*(?:\([^)\n]{{0,20}}\)[ \t]*)?"
        rf"(?P<v>(?:{TOK}|{CAPS}),[ \t]*(?:{TOK}|{CAPS})(?:[ \t]+[A-Z]\b\.?)?|{CAPS}(?:[ \t]+{CAPS}){{1,2}}"
        rf"|{NAME})")),
]
# fmt: on
_TRIGGERS: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
for _words, _cls, _pattern in _KEYED:
    for _w in _words:
        _TRIGGERS.setdefault(_w, []).append((_cls, _pattern))
_TRIGGER = re.compile(anchored([w.replace(" ", "_") for w in _TRIGGERS], end=r"(?![a-z])"))

# --- identifiers found by their own shape: one pass for those that start with a digit, one for a capital -------
# Each entry is (class, rank, the pattern after its first character); ranks below the name rules ("late") lose to a
# name or a labelled value where they overlap. "month_day" and "zip5" are checked by `_shapes` before they count.
# fmt: off
_EXT = r"(?:[ \t]*(?i:ext\.?|x)[ \t]*\d{1,5})?(?![\d-]|\.\d)"
_VIN = r"(?<=[A-HJ-NPR-Z0-9])(?=[A-HJ-NPR-Z0-9]{16}\b)(?=(?:[A-Z]*\d){2})(?=(?:\d*[A-Z]){3})[A-HJ-NPR-Z0-9]{16}\b"
_LATE = 100
_DIGIT_FORMS = [
    ("ip", 0, r"(?<![\d.]\d)\d{0,2}(?:\.\d{1,3}){3}(?!\d|\.\d)"),
    ("ssn", 0, r"(?<![\d-]\d)\d{2}(?P<s>[- .])\d{2}(?P=s)\d{4}(?![\d-]|\.\d)"),
    ("account", _LATE, r"(?<![\d-]\d)\d{3}(?P<c>[ -])\d{4}(?P=c)\d{4}(?P=c)\d{1,4}(?![\d-])"),  # card number
    ("date", 0, r"(?<![\d/.-]\d)\d?[/-]\d{1,2}[/-](?:\d{4}|\d{2})(?![\d/-]|\.\d)"),  # 3/14/2021, 03-14-21
    ("date", 0, r"(?<![\d/.-]\d)\d{3}[/-]\d{1,2}[/-]\d{1,2}(?![\d/-]|\.\d)"),  # 2021-03-14, 2089/04/01 (not 2026.9.1)
    ("date", 0, r"(?<![\d.]\d)(?:(?<=[0-2])\d|(?<=3)[01])?\.(?:0?[1-9]|1[0-2])\.(?:\d{4}|\d{2})(?![\d.]|\.\d)"),
    ("date", 0, r"(?<![\d/.-]\d)(?:(?<=1)[0-2]|(?<=0)[1-9])?[/-](?:19|20|21)\d\d(?![\d/-])"),  # 11/2088
    ("phone", 0, r"(?<![\d+(-]\d)(?:(?<=1)[ \t.-]\(?\d{3}\)?[ \t.-]?|\d{2}[ \t.-])\d{3}[ \t.-]\d{4}" + _EXT),
    ("date", 0, rf"(?<![\w]\d)\d?(?:st|nd|rd|th)?(?:[-/ ]{_MON_ANY}\.?[-/ ]\d{{2,4}}\b|(?:[ \t]+of)?[ \t]+{_MON}"
                r"(?:,?[ \t]+\d{4}\b)?)"),  # 14-Mar-91, 14 Mar, 11th March, 12 December 2088
    ("age_over_89", 0, r"(?<![\w.]\d)(?:(?<=9)\d|(?<=1)[01]\d)(?=[ \t]*-?[ \t]*(?i:y/o|y\.[ \t]?o\b|yo\b|yrs?\b"
                       r"|years?\b))"),
    ("zip", 0, r"(?<![\d-]\d)\d{4}-\d{4}(?![\d-])"),
    ("address", 0, rf"(?<![\w.,/-]\d)\d{{0,5}}[A-Z]?(?:[ \t]+(?:[NSEW]\.?|North|South|East|West))?"
                   rf"(?:[ \t]+(?:{TOK}|\d+(?:st|nd|rd|th))){{1,3}}[ \t]+{_STREET}(?:[ \t]+(?:NW|NE|SW|SE|N|S|E|W)\b)?"
                   r"(?:,?[ \t]+(?:Apt|Apartment|Unit|Suite|Ste|Fl|Floor|Rm|#)\.?[ \t]*#?[ \t]*[A-Za-z0-9-]+)?"),
    ("address", 0, r"(?<![\w.,/-]\d)\d{0,5}[ \t]+(?:Route|Rte|Highway|Hwy|State[ \t]+Route|County[ \t]+Road)"
                   r"[ \t]+\d{1,4}\b"),
    ("health_plan", _LATE, r"(?<![\w-]\d)(?<=[1-9])[AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9]\d-?[AC-HJKMNP-RT-Y]"
                           r"[AC-HJKMNP-RT-Y0-9]\d-?[AC-HJKMNP-RT-Y]{2}\d{2}\b"),  # Medicare MBI
    ("vehicle", _LATE, r"(?<![\w-]\d)" + _VIN),
    ("other_id", _LATE, r"(?<![\w.,-]\d)\d{5,}[A-Z]{1,2}\b"),
    ("other_id", _LATE, r"(?<![\d.,]\d)\d{6,}(?!\d|[.,]\d)"),  # any long number: record, NPI, ...
    ("month_day", 0, r"(?<![\d/.]\d)(?:(?<=1)[0-2]?|(?<=0)[1-9]|(?<=[2-9]))/(?:3[01]|[12]\d|0?[1-9])(?![\d/]|\.\d)"),
    ("zip5", 0, r"(?<![\w-]\d)\d{4}\b(?!-\d)"),
]
_CAPITAL_FORMS = [
    # March 21, Sept 3, 2089, June 2089, MAR-14-89
    ("date", 0, tails({v for m in _MONTHS for v in (m, m.upper())}) + rf"\b\.?(?:[ \t]+(?:the[ \t]+)?{_DAY}"
                rf"(?:st|nd|rd|th)?\b(?:,?[ \t]+\d{{4}}\b)?(?![ \t]*(?:mg|mcg|g|units?|mL|%))"
                r"|,?[ \t]+(?:of[ \t]+)?\d{4}\b|[-/](?:\d{1,2}[-/])?\d{2,4}\b)"),
    ("address", 0, r"(?<=R)ural[ \t]+Route[ \t]+\d{1,4}\b|(?<=P)(?:\.?[ \t]?O\.?|ost[ \t]+Office)[ \t]*Box[ \t]+\d+"),
    ("state", 0, tails(_STATES + _ABBR) + r"\b"),
    ("licence", _LATE, r"[A-Z9]\d{7}\b"),  # DEA
    ("vehicle", _LATE, _VIN),
    ("other_id", _LATE, r"[A-Z]{0,3}-?\d{6,}[A-Z]{0,2}\b"),
]
# fmt: on


def _merge(forms, first: str) -> tuple[re.Pattern[str], dict[str, tuple[str, int]]]:
    groups = {f"g{i}": (cls, rank) for i, (cls, rank, _) in enumerate(forms)}
    body = "|".join(f"(?P<g{i}>{tail})" for i, (_, _, tail) in enumerate(forms))
    return re.compile(f"{first}(?:{body})"), groups


_DIGITS, _DIGIT_GROUPS = _merge(_DIGIT_FORMS, r"\d(?<!\d\d)")  # only where a run of digits starts
_CAPITALS, _CAPITAL_GROUPS = _merge(_CAPITAL_FORMS, r"[A-Z](?<![\w'-].)")
# fmt: off
_PAREN_PHONE = re.compile(r"[(+](?<![\w(+].)(?:(?<=\+)1[ \t.-]?\(?\d{3}\)?[ \t.-]?|(?<=\()\d{3}\)[ \t]?)"
                          r"\d{3}[ \t.-]\d{4}" + _EXT)
_COUNTY = re.compile(rf"[A-Z](?<![\w].){TOK_TAIL}[ \t]+County\b")
_UDI = re.compile(r"\(01\)\d{14}(?:\(\d{2}\)[A-Za-z0-9-]+)*")  # GS1 device identifier
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_URL = re.compile(r"[hHwW](?<![\w].)(?:(?<=[hH])(?i:ttps?://)|(?<=[wW])(?i:ww\.))[^\s<>\"')\]]*[^\s<>\"')\].,;:!?]"
                  r"|[A-Za-z0-9](?<![\w@.-].)[A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*\.(?:com|org|net|edu|gov|mil|us|info"
                  r"|health|COM|ORG|NET|EDU|GOV)\b(?:/[^\s<>\"')\]]*[^\s<>\"')\].,;:!?])?")
_URL_HINT = re.compile(r"://|(?i:www\.|\.(?:com|org|net|edu|gov|mil|us|info|health)\b)")
_IPV6 = re.compile(r"[0-9A-Fa-f](?<![\w:].)[0-9A-Fa-f]{0,3}(?::[0-9A-Fa-f]{1,4}){7}(?![\w:])"
                   r"|[0-9A-Fa-f](?<![\w:].)[0-9A-Fa-f]{0,3}(?::[0-9A-Fa-f]{1,4}){0,5}::(?:[0-9A-Fa-f]{1,4}:){0,5}"
                   r"[0-9A-Fa-f]{1,4}(?![\w:])")
_FAX_BEFORE = re.compile(r"(?i:fax)|\bF:[ \t]*\(?$")
# Month/day without a year: days up to 10 need a word that says a date follows (5/5 strength, 2/6 murmur).
_DATE_WORD = re.compile(r"(?i:\b(?:on|since|dated?|until|till|thru|through|starting|started|admitted|discharged|seen"
                        r"|dob|dos|lmp|as[ \t]+of|effective|last|next|before|after|from|by))[ \t:]*$")
# A count, not a date: "3/13 lymph nodes", "0/13 probes", "2/12 cores positive".
_COUNT_AFTER = re.compile(r"[ \t]*(?i:(?:lymph[ \t]+)?nodes?|cores?|samples?|specimens?|biopsies|slides?|patients?|"
                          r"questions?|probes?|items?|criteria|points?|positive|negative|were|are|of)\b")
_SCORE_WORD = re.compile(r"(?i:\b(?:gcs|mmse|moca|score|cores?|strength|grade|apgar|of))[ \t:]*$")
_STATE_BEFORE = re.compile(rf"(?:{_STATE}|\b(?:{'|'.join(_ABBR)})\b),?[ \t]+$")
_CITY_BEFORE = re.compile(rf"(?P<v>{TOK}(?:[ \t]+{TOK}){{0,2}})(?P<comma>,?)[ \t]+$")
# Where candidates overlap, the first class here wins ("skip": placeholders and dataset ids, never reported).
_PRIORITY = {c: i for i, c in enumerate(("skip", "email", "url", "ip", "ssn", "fax", "phone", "date", "age_over_89",
                                         "vehicle", "health_plan", "account", "licence", "device", "mrn", "other_id",
                                         "zip", "address", "name"))}
# fmt: on


class _Spans:
    """Candidate (start, end, class) spans of one text; `resolve` keeps the highest-priority one where they overlap."""

    def __init__(self):
        self.candidates: list[tuple[int, int, int, str]] = []

    def add(self, start: int, end: int, cls: str, rank: int | None = None) -> None:
        if end > start:
            self.candidates.append((_PRIORITY[cls] if rank is None else rank, start, end, cls))

    def resolve(self) -> list[tuple[int, int, str]]:
        starts: list[int] = []
        kept: list[tuple[int, int, str]] = []
        for _, start, end, cls in sorted(self.candidates):
            i = bisect_left(starts, start)
            if (i < len(kept) and kept[i][0] < end) or (i > 0 and kept[i - 1][1] > start):
                continue
            starts.insert(i, start)
            kept.insert(i, (start, end, cls))
        self.candidates = [(0, s, e, c) for s, e, c in kept]
        return kept


def _skips(text: str) -> list[tuple[int, int]]:
    """Spans never counted or redacted: MIMIC placeholders and dataset ids."""
    skips = [m.span() for m in _PLACEHOLDER.finditer(text)]
    if any(h in text for h in _DATASET_HINTS):
        skips += [m.span() for m in _DATASET_ID.finditer(text)]
    return skips


def _value_span(m: re.Match) -> tuple[int, int]:
    return m.span("v") if "v" in m.re.groupindex and m.group("v") is not None else m.span()


def _keyed(text: str, found: _Spans) -> None:
    """Label words (one pass over the lower-cased text), then each label's own pattern at that spot."""
    low = text.lower()
    if len(low) != len(text):  # a character whose lower case is longer: positions would not line up
        low = text.encode("ascii", "replace").decode().lower()
    for hit in _TRIGGER.finditer(low):
        for cls, pattern in _TRIGGERS[hit.group()]:
            m = pattern.match(text, hit.start())
            if not m:
                continue
            start, end = _value_span(m)
            if cls == "city":
                if text[start:end].split()[0].lower() not in LEAD:
                    found.add(start, end, "address")
            elif cls == "name":
                strong = bool(m.group("strong") or m.group("colon"))
                if m.group("v").replace(",", "").replace(" ", "").isupper() and not strong:
                    continue
                span = trim_name(text, start, end, strong)
                if span:
                    found.add(*span, "name")
            else:
                found.add(start, end, "fax" if cls == "phone" and "fax" in low[hit.start() : start] else cls)


def _city_before_state(text: str, m: re.Match, found: _Spans) -> None:
    """'Boston, MA' / 'Springfield, Illinois' / 'Cambridge MA 02139': the words before a state are a city."""
    state = m.group()
    city = _CITY_BEFORE.search(text, max(0, m.start() - 60), m.start())
    zip_follows = re.match(r",?[ \t]+\d{5}\b", text[m.end() : m.end() + 12])
    if city and (zip_follows or (city.group("comma") and (len(state) > 2 or state in _ABBR_ALONE))):
        span = trim_name(text, *city.span("v"), strong=True)
        if span:
            found.add(*span, "address")


def _shapes(text: str, found: _Spans) -> None:
    late = len(_PRIORITY) + 1
    for pattern, groups in ((_DIGITS, _DIGIT_GROUPS), (_CAPITALS, _CAPITAL_GROUPS)):
        for m in pattern.finditer(text):
            cls, rank = groups[m.lastgroup]
            start, end = m.span()
            if cls == "month_day":  # days up to 10 need a word that says a date follows (5/5 strength, 2/6 murmur)
                before = text[max(0, start - 20) : start]
                day = int(m.group().split("/")[1])
                if (
                    _SCORE_WORD.search(before)
                    or _COUNT_AFTER.match(text, end)
                    or not (day > 10 or _DATE_WORD.search(before))
                ):
                    continue
                cls = "date"
            elif cls == "zip5":
                if not _STATE_BEFORE.search(text, max(0, start - 30), start):
                    continue
                cls = "zip"
            elif cls == "state":
                _city_before_state(text, m, found)
                continue
            elif cls == "phone" and _FAX_BEFORE.search(text, max(0, start - 25), start):
                cls = "fax"
            found.add(start, end, cls, late if rank else None)
    for m in _PAREN_PHONE.finditer(text):
        start = m.start()
        found.add(*m.span(), "fax" if _FAX_BEFORE.search(text, max(0, start - 25), start) else "phone")
    if " County" in text:
        for m in _COUNTY.finditer(text):
            found.add(*m.span(), "address")
    if "(01)" in text:
        for m in _UDI.finditer(text):
            found.add(*m.span(), "device")


def _find(text: str) -> _Spans:
    found = _Spans()
    for start, end in _skips(text):
        found.add(start, end, "skip", rank=-1)  # wins every overlap, then dropped
    if "@" in text:
        for m in _EMAIL.finditer(text):
            found.add(*m.span(), "email")
    if _URL_HINT.search(text):
        for m in _URL.finditer(text):
            found.add(*m.span(), "url")
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6.finditer(text):
            found.add(*m.span(), "ip")
    _shapes(text, found)
    _keyed(text, found)
    for start, end in find_names(text):
        found.add(start, end, "name")
    for start, end in repeated_names(text, [(s, e) for s, e, c in found.resolve() if c == "name"]):
        found.add(start, end, "name", rank=len(_PRIORITY))
    return found


def find_phi(text: str) -> list[tuple[int, int, str]]:
    """(start, end, class) of every likely identifier in `text`, in order; classes from `PHI_CLASSES`."""
    return [span for span in _find(text).resolve() if span[2] != "skip"]


def scan_phi(text: str) -> Counter:
    """Counts of likely identifiers in `text`, per class of `PHI_CLASSES` (only classes that occur)."""
    return Counter(cls for _, _, cls in find_phi(text))


def redact_phi(text: str) -> str:
    """`text` with each likely identifier replaced by a MIMIC-style placeholder such as `[** date **]`.

    The placeholders are themselves skipped by `scan_phi`, so `scan_phi(redact_phi(t))` is empty.
    """
    out, pos = [], 0
    for start, end, cls in find_phi(text):
        out += [text[pos:start], f"[** {cls} **]"]
        pos = end
    return "".join(out) + text[pos:]
