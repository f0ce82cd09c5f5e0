"""Charlson comorbidity index from ICD-9-CM and ICD-10 diagnosis codes.

Coding algorithms: Quan et al. 2005, "Coding algorithms for defining comorbidities in ICD-9-CM and ICD-10
administrative data" (Med Care 43:1130), the enhanced ICD-9-CM and the ICD-10 lists for the 17 Charlson
conditions. Codes are matched by prefix on undotted codes, the way MIMIC stores them ("4280", "I5023"). ICD-10-CM
codes (MIMIC-IV) are matched with Quan's ICD-10 prefixes, as is common practice; CM-only diabetes chapters
E08/E09 are not in Quan's list and are not counted.

Weights: `weights="charlson"` (the default) are Charlson et al. 1987's original weights (1, 2, 3 or 6 per
condition; at most 29 once the hierarchy below applies). Most MIMIC papers report these (MIT-LCP's mimic-code
`charlson` concept uses them, plus age points), so our numbers compare with theirs. `weights="quan2011"` are
Quan et al. 2011's re-estimated weights (Am J Epidemiol 173:676; at most 24), better calibrated to in-hospital
mortality in modern administrative data.

Hierarchy: a condition present in both its mild and its severe form counts once, as the severe one (liver
disease, diabetes, malignancy vs metastatic tumour), as in Quan's SAS code. No age points are added: age is
its own column in the data, and mixing it in would hide the comorbidity signal that the label is about.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Mapping

CONDITIONS: dict[str, str] = {
    "mi": "Myocardial infarction",
    "chf": "Congestive heart failure",
    "pvd": "Peripheral vascular disease",
    "cevd": "Cerebrovascular disease",
    "dementia": "Dementia",
    "cpd": "Chronic pulmonary disease",
    "rheum": "Rheumatic disease",
    "pud": "Peptic ulcer disease",
    "mild_liver": "Mild liver disease",
    "diabetes": "Diabetes without chronic complication",
    "diabetes_complicated": "Diabetes with chronic complication",
    "hemiplegia": "Hemiplegia or paraplegia",
    "renal": "Renal disease",
    "cancer": "Any malignancy, including lymphoma and leukaemia",
    "severe_liver": "Moderate or severe liver disease",
    "metastatic": "Metastatic solid tumour",
    "hiv": "AIDS/HIV",
}

WEIGHTS: dict[str, dict[str, int]] = {
    "charlson": {
        "mi": 1,
        "chf": 1,
        "pvd": 1,
        "cevd": 1,
        "dementia": 1,
        "cpd": 1,
        "rheum": 1,
        "pud": 1,
        "mild_liver": 1,
        "diabetes": 1,
        "diabetes_complicated": 2,
        "hemiplegia": 2,
        "renal": 2,
        "cancer": 2,
        "severe_liver": 3,
        "metastatic": 6,
        "hiv": 6,
    },
    "quan2011": {
        "mi": 0,
        "chf": 2,
        "pvd": 0,
        "cevd": 0,
        "dementia": 2,
        "cpd": 1,
        "rheum": 1,
        "pud": 0,
        "mild_liver": 2,
        "diabetes": 0,
        "diabetes_complicated": 1,
        "hemiplegia": 2,
        "renal": 1,
        "cancer": 2,
        "severe_liver": 4,
        "metastatic": 6,
        "hiv": 4,
    },
}

# (milder, more severe): when both are coded only the severe one scores.
HIERARCHY: tuple[tuple[str, str], ...] = (
    ("mild_liver", "severe_liver"),
    ("diabetes", "diabetes_complicated"),
    ("cancer", "metastatic"),
)


def _span(first: str, last: str) -> tuple[str, ...]:
    """Every code prefix from `first` to `last` inclusive, same width ("4254".."4259", "C00".."C26")."""
    letter = first[0] if first[0].isalpha() else ""
    lo, hi = int(first[len(letter) :]), int(last[len(letter) :])
    width = len(first) - len(letter)
    return tuple(f"{letter}{n:0{width}d}" for n in range(lo, hi + 1))


# Quan 2005, enhanced ICD-9-CM (undotted prefixes).
ICD9: dict[str, tuple[str, ...]] = {
    "mi": ("410", "412"),
    "chf": (
        "39891",
        "40201",
        "40211",
        "40291",
        "40401",
        "40403",
        "40411",
        "40413",
        "40491",
        "40493",
        *_span("4254", "4259"),
        "428",
    ),
    "pvd": ("0930", "4373", "440", "441", *_span("4431", "4439"), "4471", "5571", "5579", "V434"),
    "cevd": ("36234", *_span("430", "438")),
    "dementia": ("290", "2941", "3312"),
    "cpd": ("4168", "4169", *_span("490", "505"), "5064", "5081", "5088"),
    "rheum": ("4465", *_span("7100", "7104"), *_span("7140", "7142"), "7148", "725"),
    "pud": _span("531", "534"),
    "mild_liver": (
        "07022",
        "07023",
        "07032",
        "07033",
        "07044",
        "07054",
        "0706",
        "0709",
        "570",
        "571",
        "5733",
        "5734",
        "5738",
        "5739",
        "V427",
    ),
    "diabetes": (*_span("2500", "2503"), "2508", "2509"),
    "diabetes_complicated": _span("2504", "2507"),
    "hemiplegia": ("3341", "342", "343", *_span("3440", "3446"), "3449"),
    "renal": (
        "40301",
        "40311",
        "40391",
        "40402",
        "40403",
        "40412",
        "40413",
        "40492",
        "40493",
        "582",
        *_span("5830", "5837"),
        "585",
        "586",
        "5880",
        "V420",
        "V451",
        "V56",
    ),
    "cancer": (*_span("140", "172"), *_span("174", "195"), *_span("200", "208"), "2386"),
    "severe_liver": (*_span("4560", "4562"), *_span("5722", "5728")),
    "metastatic": _span("196", "199"),
    "hiv": ("042", "043", "044"),
}

# Quan 2005, ICD-10 (undotted prefixes).
ICD10: dict[str, tuple[str, ...]] = {
    "mi": ("I21", "I22", "I252"),
    "chf": ("I099", "I110", "I130", "I132", "I255", "I420", *_span("I425", "I429"), "I43", "I50", "P290"),
    "pvd": ("I70", "I71", "I731", "I738", "I739", "I771", "I790", "I792", "K551", "K558", "K559", "Z958", "Z959"),
    "cevd": ("G45", "G46", "H340", *_span("I60", "I69")),
    "dementia": (*_span("F00", "F03"), "F051", "G30", "G311"),
    "cpd": ("I278", "I279", *_span("J40", "J47"), *_span("J60", "J67"), "J684", "J701", "J703"),
    "rheum": ("M05", "M06", "M315", *_span("M32", "M34"), "M351", "M353", "M360"),
    "pud": _span("K25", "K28"),
    "mild_liver": (
        "B18",
        *_span("K700", "K703"),
        "K709",
        *_span("K713", "K715"),
        "K717",
        "K73",
        "K74",
        "K760",
        *_span("K762", "K764"),
        "K768",
        "K769",
        "Z944",
    ),
    "diabetes": tuple(f"E1{t}{d}" for t in "01234" for d in "01689"),
    "diabetes_complicated": tuple(f"E1{t}{d}" for t in "01234" for d in "23457"),
    "hemiplegia": ("G041", "G114", "G801", "G802", "G81", "G82", *_span("G830", "G834"), "G839"),
    "renal": (
        "I120",
        "I131",
        *_span("N032", "N037"),
        *_span("N052", "N057"),
        "N18",
        "N19",
        "N250",
        *_span("Z490", "Z492"),
        "Z940",
        "Z992",
    ),
    "cancer": (
        *_span("C00", "C26"),
        *_span("C30", "C34"),
        *_span("C37", "C41"),
        "C43",
        *_span("C45", "C58"),
        *_span("C60", "C76"),
        *_span("C81", "C85"),
        "C88",
        *_span("C90", "C97"),
    ),
    "severe_liver": ("I850", "I859", "I864", "I982", "K704", "K711", "K721", "K729", *_span("K765", "K767")),
    "metastatic": _span("C77", "C80"),
    "hiv": ("B20", "B21", "B22", "B24"),
}

# What a diagnosis code may look like once dots and spaces are gone. A code outside these shapes is a typo, a
# truncated value or a code from another system (a procedure code, a version mix-up), never a diagnosis.
_CODE_SHAPE = {9: re.compile(r"^(?:\d{3,5}|V\d{2,4}|E\d{3,4})$"), 10: re.compile(r"^[A-Z]\d[0-9A-Z]{1,5}$")}


def _prefix_table(lists: Mapping[str, tuple[str, ...]]) -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for condition, prefixes in lists.items():
        for prefix in prefixes:
            table.setdefault(prefix, set()).add(condition)
    return {k: frozenset(v) for k, v in table.items()}


_PREFIXES = {9: _prefix_table(ICD9), 10: _prefix_table(ICD10)}


def normalize_code(code: str) -> str:
    """'428.0 ' -> '4280'; codes are compared undotted and upper-case."""
    return str(code).replace(".", "").replace(" ", "").strip().upper()


def is_valid_code(code: str, version: int) -> bool:
    """Whether `code` (normalised) has the shape of an ICD-9-CM or ICD-10(-CM) diagnosis code."""
    shape = _CODE_SHAPE.get(int(version)) if str(version).strip().isdigit() else None
    return bool(shape and shape.match(normalize_code(code)))


@lru_cache(maxsize=200_000)
def code_conditions(code: str, version: int) -> frozenset[str]:
    """The Charlson conditions one code maps to (often none; ICD-9 404.x3 maps to two)."""
    version = int(version)
    if not is_valid_code(code, version):
        raise ValueError(f"not an ICD-{version} diagnosis code: {code!r}")
    code = normalize_code(code)
    table = _PREFIXES[version]
    found: set[str] = set()
    for n in range(3, len(code) + 1):
        found |= table.get(code[:n], frozenset())
    return frozenset(found)


def charlson_conditions(codes: Iterable[tuple[str, int]]) -> set[str]:
    """The set of Charlson conditions among `(icd_code, icd_version)` pairs."""
    found: set[str] = set()
    for code, version in codes:
        found |= code_conditions(normalize_code(code), int(version))
    return found


def charlson_score(conditions: Iterable[str], weights: str = "charlson") -> int:
    """Weighted sum over conditions after the mild/severe hierarchy."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r}: choose one of {sorted(WEIGHTS)}")
    present = set(conditions)
    unknown = present - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown Charlson conditions: {sorted(unknown)}")
    for mild, severe in HIERARCHY:
        if severe in present:
            present.discard(mild)
    return sum(WEIGHTS[weights][c] for c in present)


def charlson_index(codes: Iterable[tuple[str, int]], weights: str = "charlson") -> int:
    """Charlson comorbidity index of one admission from its `(icd_code, icd_version)` diagnosis codes.

    >>> charlson_index([("4280", 9), ("25040", 9), ("25000", 9)])  # CHF 1 + complicated diabetes 2
    3
    """
    return charlson_score(charlson_conditions(codes), weights)
