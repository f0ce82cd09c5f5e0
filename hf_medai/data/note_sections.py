"""Which part of a discharge summary a task may see: the admission-time sections, or the full summary.

The default (`note_sections="auto"`) must never show the model its own label; why each choice is safe is in
`SECTIONS_WHY` and, per task, in the docstring of `hf_medai.data.clinical_notes`.
"""

from __future__ import annotations

import re

NOTE_SECTIONS = ("auto", "admission", "full")
AUTO_SECTIONS = {
    "mortality": "admission",
    "los": "admission",
    "los_days": "admission",
    "readmission": "full",
    "comorbidity": "full",
}
SECTIONS_WHY = {
    "admission": "admission-time sections only (van Aken et al. 2021): the rest of a discharge summary is written "
    "after the outcome (hospital course, disposition, discharge dates) and would leak the label",
    "full": "full discharge summary: the label is fixed at or after discharge from information the summary "
    "cannot contain (readmission happens later; in-hospital deaths are excluded) or is the coding of this "
    "very record (comorbidity)",
}

ADMISSION_SECTIONS: dict[str, str] = {
    "chief_complaint": r"(?:chief|presenting|primary) complaints?|cc|reason for admission",
    "present_illness": r"(?:history of (?:the )?)?present(?:ing)? illness|hpi",
    "medical_history": r"(?:past )?medical history|pmhx?|past (?:medical (?:and|&) )?surgical history|psh"
    r"|past history|pmh/psh",
    "admission_medications": r"(?:medications?|meds) (?:on|at|prior to) admission"
    r"|(?:admission|admitting|home|outpatient|pre-?admission) (?:medications?|meds)"
    r"|medications? at home|current (?:home )?medications?",
    "allergies": r"allerg(?:y|ies)(?: to medications)?|drug allergies|allergies/adverse (?:drug )?reactions",
    "physical_exam": r"(?:(?:admission|admitting|initial) )?(?:physical )?exam(?:ination)?"
    r"(?: (?:on|at|upon) admission)?|pe",
    "family_history": r"family (?:medical )?history|fhx?|fam hx",
    "social_history": r"social history|shx?|soc hx",
}
_ADMISSION_HEADER = re.compile("|".join(f"(?:{p})" for p in ADMISSION_SECTIONS.values()))
# A header that is not an admission section and has any of these words starts text written (or holding results)
# after admission, so "Physical exam on discharge" or "Discharge exam" ends the admission exam. Bare
# "Medications:" is among them: it cannot be told apart from the discharge list.
_LATER_HEADER = re.compile(
    r"\b(?:discharg\w*|course|dispo\w*|follow[- ]?ups?|followup|results?|labs?|laborator\w*|procedures?|studies"
    r"|imaging|radiology|micro\w*|transfer\w*|expired|death|deceased|autopsy|impression|assessment|plan"
    r"|instructions?|condition|diagnos[ie]s|summary|addendum|date|service|attending|sex|name|unit no"
    r"|completed by|dictated by|review of systems|ros|medications|meds)\b"
)
# A section header: at a line start, a short phrase, a colon. Only phrases that name a known section (or carry
# a word of _LATER_HEADER) split sections, so sub-headings like "HEENT:" or "Vitals:" stay inside the exam.
_HEADER_LINE = re.compile(r"^[ \t]*([A-Za-z][A-Za-z0-9 /&,'()#-]{0,60}?)[ \t]*:", re.M)


def _header_kind(phrase: str) -> str | None:
    """'admission', 'later' or None (not a section boundary) for a candidate header phrase."""
    name = " ".join(phrase.lower().split())
    if len(name.split()) > 6:
        return None
    if _ADMISSION_HEADER.fullmatch(name):
        return "admission"
    if _LATER_HEADER.search(name):
        return "later"
    return None


def extract_admission_sections(note: str) -> str:
    """The admission-time sections of a discharge summary, in note order, headers kept; "" if none found.

    Text before the first recognised header (the dates/sex/service preamble) and every section not named in
    `ADMISSION_SECTIONS` are dropped. Unrecognised headers inside a kept section stay part of it.
    """
    kept: list[str] = []
    current: tuple[str, int] | None = None  # (header as written, start of its content)
    for m in _HEADER_LINE.finditer(note):
        kind = _header_kind(m.group(1))
        if kind is None:
            continue
        if current is not None:
            kept.append(_section(current[0], note[current[1] : m.start()]))
        current = (m.group(1).strip(), m.end()) if kind == "admission" else None
    if current is not None:
        kept.append(_section(current[0], note[current[1] :]))
    return "\n\n".join(s for s in kept if s)


def _section(header: str, body: str) -> str:
    body = body.strip()
    return f"{header}:\n{body}" if body else ""
