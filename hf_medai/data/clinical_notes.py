"""Per-admission clinical outcome examples from discharge summaries: MIMIC-III, MIMIC-IV, or a plain table.

`load_admissions(source, task=...)` returns one row per hospital admission:

    id               str, the admission (HADM_ID)       subject_id     str, the patient (for patient-level splits)
    text             the note text the task may see     label          ClassLabel, or float32 for los_days
    admit_time       ISO string (MIMIC's shifted dates)  admit_year     int (see "Years" below)
    sex, age_band, race, insurance, admission_type   subgroup columns carried to predictions; age is a float too
    died_in_hospital, los_days, charlson             the raw outcomes, for the card

Layouts (csv or csv.gz, found by `format="auto"`):
    MIMIC-III  NOTEEVENTS, ADMISSIONS, PATIENTS, DIAGNOSES_ICD in one folder, upper-case columns, ICD-9 only.
    MIMIC-IV   hosp/admissions, hosp/patients, hosp/diagnoses_icd, note/discharge (MIMIC-IV-Note; pass
               `note_root` when it is downloaded apart), lower-case columns, ICD-9 and ICD-10.
    table      one csv/csv.gz/jsonl/parquet file with `text` and `label` (and, optionally, id, subject_id and the
               subgroup columns) for any other source.

Note text per task (`note_sections="auto"`; the default must never show the model its own label):
    mortality, los, los_days   admission sections only (chief complaint, history of present illness, past
                               medical history, medications on admission, allergies, physical exam, family and
                               social history; van Aken et al. 2021). The rest of a discharge summary is written
                               after the outcome: the hospital course says "expired", the disposition says where
                               the patient went, the header dates give the length of stay.
    readmission, comorbidity   the full discharge summary (main report only; addenda are written later and are
                               dropped). Readmission is predicted at discharge and happens after it, so nothing
                               in the summary can record it; in-hospital deaths, whose summary does say how the
                               stay ended, are excluded from this task. Comorbidity codes are assigned from the
                               completed record at discharge: it is a discharge-time coding task, and the full
                               summary is exactly its intended input.
`note_sections="admission"` or `"full"` overrides; `report.notes["note_sections"]` records the choice and why.

Labels:
    mortality     died in hospital (HOSPITAL_EXPIRE_FLAG, else a DEATHTIME).
    readmission   an unplanned admission of the same patient starting within 30 days (<= 30 x 24 h) after
                  discharge. A stay that starts before the discharge or on the calendar day of discharge is a
                  transfer or a continuation, not a readmission: such stays merge into one episode, every
                  admission in it gets the episode's label, counted from the episode's last discharge. Episodes
                  ending in an in-hospital death are excluded (not counted as skipped rows; see
                  `report.notes["excluded"]`). Planned readmissions (admission type ELECTIVE, or MIMIC-IV's
                  SURGICAL SAME DAY ADMISSION) do not count, since they are scheduled, not a failure of the
                  discharge (`count_elective_readmissions=True` counts them). Deaths after discharge without a
                  readmission are negatives, as is the last admission of the data (no follow-up is visible).
    los           length of stay in days, binned left-closed by `los_bins` (default <3, [3,7), [7,14), >=14).
    los_days      the same as a float, for regression.
    comorbidity   Charlson index from the admission's ICD codes (`hf_medai.data.charlson`: Quan 2005 coding,
                  Charlson 1987 weights), binned by `charlson_bins` (default 0, 1-2, 3-4, 5+, Charlson's groups).

Years: MIMIC shifts each patient's dates into 2100-2200 by a random offset, so a shifted year says nothing
across patients. MIMIC-IV's `anchor_year_group` gives the real 3-year window of each patient's `anchor_year`;
`admit_year` is then the real year estimated to +-1 year (the window's middle year plus the years since
anchor_year), which is what a temporal split needs. MIMIC-III has no such key: its `admit_year` is the shifted
year and a temporal split of MIMIC-III is not meaningful (the report says so).

Ages: MIMIC masks ages above 89 (MIMIC-III dates of birth 300 years back, MIMIC-IV anchor_age 91); they are
reported as 90.

Bad input raises `DataError` naming file, row (1-based data row, header not counted) and problem, or with
`skip_bad_rows=True` is dropped and counted under one of these reasons:
    duplicate_admission, bad_time, discharge_before_admission, no_patient, no_note, non_utf8_note, empty_note,
    note_too_long (> max_note_chars), no_admission_sections, no_diagnoses (comorbidity only), no_label (table).
A missing table or column, non-UTF-8 bytes in a structured table, or a MIMIC-III ISERROR other than 1, 0 or empty
(notes flagged 1 or 1.0 are dropped and counted) is always an error. Diagnosis codes that are not ICD-9/ICD-10
shaped (or of another version) are left out of the Charlson count and counted in `report.notes["diagnoses"]`,
apart from the admission counts; for comorbidity, whose label they make, they are errors unless skipping.

Several main discharge reports of one admission are joined in chart order: MIMIC-IV note_seq (then charttime),
MIMIC-III CHARTDATE then CHARTTIME; ties, unreadable values and tables without those columns keep file order, and
`report.notes["discharge_notes"]` says which order was used and for how many admissions file order decided.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd

from hf_medai.data.charlson import charlson_score, code_conditions, is_valid_code, normalize_code
from hf_medai.data.phi import PHI_POLICIES, apply_phi_policy
from hf_medai.data.report import DataError, DataReport
from hf_medai.data.splits import group_split, split_report

TASKS = ("mortality", "readmission", "los", "los_days", "comorbidity")
FORMATS = ("auto", "mimic-iii", "mimic-iv", "table")
NOTE_SECTIONS = ("auto", "admission", "full")
SUBGROUP_COLUMNS = ("sex", "age_band", "race", "insurance", "admission_type")
AGE_BANDS = ((0, "0-17"), (18, "18-44"), (45, "45-64"), (65, "65-79"), (80, "80+"))
MASKED_AGE = 90.0  # MIMIC reports every age above 89 as one masked value
PLANNED_ADMISSION_TYPES = frozenset({"ELECTIVE", "SURGICAL SAME DAY ADMISSION"})

AUTO_SECTIONS = {"mortality": "admission", "los": "admission", "los_days": "admission",
                 "readmission": "full", "comorbidity": "full"}
_SECTIONS_WHY = {
    "admission": "admission-time sections only (van Aken et al. 2021): the rest of a discharge summary is written "
                 "after the outcome (hospital course, disposition, discharge dates) and would leak the label",
    "full": "full discharge summary: the label is fixed at or after discharge from information the summary "
            "cannot contain (readmission happens later; in-hospital deaths are excluded) or is the coding of this "
            "very record (comorbidity)",
}
_LABEL_DEFINITIONS = {
    "mortality": "in-hospital death (hospital_expire_flag, else a deathtime)",
    "readmission": "unplanned admission within 30 days after discharge; same-day and overlapping stays merge into "
                   "one episode; episodes ending in in-hospital death excluded; elective readmissions {elective}",
    "los": "length of stay (days), bins left-closed at {bins}",
    "los_days": "length of stay in days (regression)",
    "comorbidity": "Charlson index (Quan 2005 codes, Charlson 1987 weights), bins {bins}",
}

# ---------------------------------------------------------------------------------------------------------------
# Admission-time sections of a discharge summary
# ---------------------------------------------------------------------------------------------------------------

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
            kept.append(_section(current[0], note[current[1]:m.start()]))
        current = (m.group(1).strip(), m.end()) if kind == "admission" else None
    if current is not None:
        kept.append(_section(current[0], note[current[1]:]))
    return "\n\n".join(s for s in kept if s)


def _section(header: str, body: str) -> str:
    body = body.strip()
    return f"{header}:\n{body}" if body else ""


# ---------------------------------------------------------------------------------------------------------------
# Labels: pure functions on tidy frames
# ---------------------------------------------------------------------------------------------------------------


def readmission_labels(
    admissions: pd.DataFrame, window_days: float = 30, count_elective: bool = False
) -> pd.Series:
    """30-day readmission per admission: True, False, or <NA> when the episode ended in an in-hospital death.

    `admissions` has columns subject_id, admit_time, disch_time (datetimes), died_in_hospital (bool/0-1) and,
    unless `count_elective`, admission_type. Definition in the module docstring. Returns a pandas "boolean"
    Series aligned with `admissions.index`.
    """
    frame = admissions.reset_index(drop=True)
    order = frame.sort_values(["subject_id", "admit_time"], kind="stable").index.to_numpy()
    subject = frame["subject_id"].astype(str).to_numpy()[order]
    admit = frame["admit_time"].to_numpy(dtype="datetime64[us]")[order]
    disch = frame["disch_time"].to_numpy(dtype="datetime64[us]")[order]
    admit_day = admit.astype("datetime64[D]")
    died = frame["died_in_hospital"].fillna(0).astype(bool).to_numpy()[order]
    if count_elective:
        counts = np.ones(len(frame), dtype=bool)
    else:
        counts = ~frame["admission_type"].astype(str).str.strip().str.upper().isin(PLANNED_ADMISSION_TYPES)
        counts = counts.to_numpy()[order]
    window = np.timedelta64(int(round(window_days * 86400)), "s")

    label = np.full(len(frame), np.nan)
    i, n = 0, len(frame)
    while i < n:
        # Grow the episode: later stays of this patient that start before its end, or on its end's calendar day.
        j, end, episode_died = i, max(admit[i], disch[i]), died[i]
        while j + 1 < n and subject[j + 1] == subject[i] and admit_day[j + 1] <= end.astype("datetime64[D]"):
            j += 1
            end, episode_died = max(end, disch[j]), episode_died or died[j]
        if not episode_died:
            readmitted = 0.0
            k = j + 1
            while k < n and subject[k] == subject[i] and admit[k] - end <= window:
                if counts[k]:
                    readmitted = 1.0
                    break
                k += 1
            label[i:j + 1] = readmitted
        i = j + 1
    out = np.full(n, np.nan)
    out[order] = label
    return pd.Series(pd.array([pd.NA if np.isnan(v) else bool(v) for v in out], dtype="boolean"),
                     index=admissions.index, name="readmission")


def length_of_stay_days(admit_time: pd.Series, disch_time: pd.Series) -> pd.Series:
    """Length of stay in (fractional) days."""
    return (disch_time - admit_time).dt.total_seconds() / 86400.0


def bin_names(edges: Sequence[float], integer: bool = False) -> list[str]:
    """Class names for bins cut at `edges`, left-closed: (3, 7, 14) -> <3, 3-7, 7-14, >=14.

    With `integer`, names list whole numbers: (1, 3, 5) -> 0, 1-2, 3-4, 5+.
    """
    e = [int(x) if float(x).is_integer() else x for x in edges]
    if not integer:
        return [f"<{e[0]}"] + [f"{a}-{b}" for a, b in zip(e, e[1:])] + [f">={e[-1]}"]
    spans = [(0, e[0] - 1)] + [(a, b - 1) for a, b in zip(e, e[1:])]
    return [f"{a}" if a == b else f"{a}-{b}" for a, b in spans] + [f"{e[-1]}+"]


def bin_values(values: Sequence[float] | np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin index of each value, left-closed: with edges (3, 7), 2.9 -> 0, 3 -> 1, 7 -> 2."""
    return np.searchsorted(np.asarray(edges, dtype=float), np.asarray(values, dtype=float), side="right")


def age_band(age: float | None) -> str:
    if age is None or not np.isfinite(age):
        return "unknown"
    return [name for lo, name in AGE_BANDS if age >= lo][-1]


def race_group(raw: str) -> str:
    """MIMIC's ~40 race/ethnicity strings -> White, Black, Hispanic/Latino, Asian, Other, Unknown.

    Coarse on purpose: subgroup metrics need groups large enough to measure; the small groups (American Indian /
    Alaska Native, Native Hawaiian / Pacific Islander, multiracial) go to Other.
    """
    s = " ".join(str(raw).upper().split())
    if not s or s.startswith(("UNKNOWN", "UNABLE", "PATIENT DECLINED", "DECLINED")) or s in {"?", "NAN"}:
        return "Unknown"
    if s.startswith("WHITE") or s in {"PORTUGUESE", "MIDDLE EASTERN"}:
        return "White"
    if s.startswith("BLACK") or s.startswith("AFRICAN"):
        return "Black"
    if s.startswith("HISPANIC") or "LATINO" in s or s == "SOUTH AMERICAN":
        return "Hispanic/Latino"
    if s.startswith("ASIAN"):
        return "Asian"
    return "Other"


# ---------------------------------------------------------------------------------------------------------------
# Reading tables
# ---------------------------------------------------------------------------------------------------------------

# Per format: logical table -> (path without .csv/.csv.gz, {our column: its column or alternatives}).
_LAYOUTS: dict[str, dict[str, tuple[str, dict[str, str | tuple[str, ...]]]]] = {
    "mimic-iii": {
        "admissions": ("ADMISSIONS", {
            "subject_id": "SUBJECT_ID", "hadm_id": "HADM_ID", "admittime": "ADMITTIME", "dischtime": "DISCHTIME",
            "deathtime": "DEATHTIME", "admission_type": "ADMISSION_TYPE", "insurance": "INSURANCE",
            "race": "ETHNICITY", "hospital_expire_flag": "HOSPITAL_EXPIRE_FLAG"}),
        "patients": ("PATIENTS", {"subject_id": "SUBJECT_ID", "gender": "GENDER", "dob": "DOB"}),
        "notes": ("NOTEEVENTS", {"hadm_id": "HADM_ID", "category": "CATEGORY", "kind": "DESCRIPTION",
                                 "iserror": "ISERROR", "text": "TEXT"}),
        "diagnoses": ("DIAGNOSES_ICD", {"hadm_id": "HADM_ID", "icd_code": "ICD9_CODE"}),
    },
    "mimic-iv": {
        "admissions": ("hosp/admissions", {
            "subject_id": "subject_id", "hadm_id": "hadm_id", "admittime": "admittime", "dischtime": "dischtime",
            "deathtime": "deathtime", "admission_type": "admission_type", "insurance": "insurance",
            "race": ("race", "ethnicity"),  # MIMIC-IV <= 2.0 called it ethnicity
            "hospital_expire_flag": "hospital_expire_flag"}),
        "patients": ("hosp/patients", {"subject_id": "subject_id", "gender": "gender", "anchor_age": "anchor_age",
                                       "anchor_year": "anchor_year", "anchor_year_group": "anchor_year_group"}),
        "notes": ("note/discharge", {"hadm_id": "hadm_id", "kind": "note_type", "text": "text"}),
        "diagnoses": ("hosp/diagnoses_icd", {"hadm_id": "hadm_id", "icd_code": "icd_code",
                                             "icd_version": "icd_version"}),
    },
}
_MAIN_NOTE_KIND = {"mimic-iii": "REPORT", "mimic-iv": "DS"}  # addenda: "Addendum" / "AD"
# The order of several reports of one admission, read when the columns are there: {our column: theirs}.
_NOTE_ORDER = {"mimic-iii": {"chartdate": "CHARTDATE", "charttime": "CHARTTIME"},
               "mimic-iv": {"note_seq": "note_seq", "charttime": "charttime"}}
CODE_TASKS = frozenset({"comorbidity"})  # tasks whose label is computed from the diagnosis codes
_SURROGATE = re.compile("[\udc80-\udcff]")  # what undecodable bytes become under errors="surrogateescape"


def detect_format(source: str | os.PathLike) -> str:
    source = Path(source)
    if source.is_file():
        return "table"
    if source.is_dir():
        if any((source / f"ADMISSIONS{s}").is_file() for s in (".csv", ".csv.gz")):
            return "mimic-iii"
        if any((source / f"hosp/admissions{s}").is_file() for s in (".csv", ".csv.gz")):
            return "mimic-iv"
        raise DataError(source, None, "no MIMIC layout found: expected ADMISSIONS.csv[.gz] (MIMIC-III) or "
                                      "hosp/admissions.csv[.gz] (MIMIC-IV), or pass a table file")
    raise DataError(source, None, "no such file or folder")


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def load_admissions(
    source: str | os.PathLike,
    format: str = "auto",
    task: str = "mortality",
    note_sections: str = "auto",
    skip_bad_rows: bool = False,
    phi_policy: str = "warn",
    los_bins: Sequence[float] = (3, 7, 14),
    charlson_bins: Sequence[int] = (1, 3, 5),
    max_note_chars: int = 200_000,
    count_elective_readmissions: bool = False,
    note_root: str | os.PathLike | None = None,
    report: DataReport | None = None,
) -> tuple[datasets.Dataset, list[str] | None, DataReport]:
    """One example per admission for `task`; returns (dataset, class names or None for los_days, report).

    `report`: add to an existing DataReport (its own skip_bad_rows then applies). See the module docstring for
    layouts, sections, labels and bad-input reasons.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r}: choose one of {TASKS}")
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: choose one of {FORMATS}")
    if note_sections not in NOTE_SECTIONS:
        raise ValueError(f"note_sections={note_sections!r}: choose one of {NOTE_SECTIONS}")
    if phi_policy not in PHI_POLICIES:
        raise ValueError(f"phi_policy={phi_policy!r}: choose one of {PHI_POLICIES}")
    for name, edges in (("los_bins", los_bins), ("charlson_bins", charlson_bins)):
        if not edges or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] <= 0:
            raise ValueError(f"{name}={tuple(edges)}: give increasing positive cut points")
    report = report if report is not None else DataReport(skip_bad_rows=skip_bad_rows)
    source = Path(source)
    fmt = detect_format(source) if format == "auto" else format
    report.notes.update({"source": str(source), "format": fmt, "task": task})

    if fmt == "table":
        rows = _table_rows(source, task, report, max_note_chars)
        sections = "full" if note_sections == "auto" else note_sections
    else:
        rows = _mimic_rows(source, Path(note_root) if note_root else source, fmt, task, report, max_note_chars,
                           count_elective_readmissions)
        sections = AUTO_SECTIONS[task] if note_sections == "auto" else note_sections
    report.notes["note_sections"] = {"used": sections, "why": _SECTIONS_WHY[sections]}

    if sections == "admission":
        kept = []
        for row in rows:
            row["text"] = extract_admission_sections(row["text"])
            if row["text"]:
                kept.append(row)
            else:
                report.bad("no_admission_sections", row["_file"], row["_row"],
                           f"admission {row['id']}: no admission-time section header (Chief Complaint:, History of "
                           "Present Illness:, ...) found; use note_sections='full' for notes without such headers")
        rows = kept

    texts, report.notes["phi"] = apply_phi_policy([r["text"] for r in rows], phi_policy,
                                                  source=str(rows[0]["_file"] if rows else source),
                                                  rows=[r["_row"] for r in rows])
    for row, text in zip(rows, texts):
        row["text"] = text

    dataset, class_names = _to_dataset(rows, task, los_bins, charlson_bins)
    report.notes["label_definition"] = _LABEL_DEFINITIONS[task].format(
        bins=list(charlson_bins if task == "comorbidity" else los_bins),
        elective="counted" if count_elective_readmissions else "not counted")
    report.notes["label_summary"] = label_summary(dataset)
    if not len(dataset):
        raise DataError(source, None, f"no usable admissions for task {task!r} ({report.rows_skipped} skipped: "
                                      f"{dict(report.skipped)})")
    return dataset, class_names, report


def _mimic_rows(root: Path, note_root: Path, fmt: str, task: str, report: DataReport, max_note_chars: int,
                count_elective: bool) -> list[dict]:
    layout = _LAYOUTS[fmt]
    paths = {name: find_table(note_root if name == "notes" else root, stem) for name, (stem, _) in layout.items()}
    adm = read_table(paths["admissions"], layout["admissions"][1])
    pat = read_table(paths["patients"], layout["patients"][1])
    notes = _read_notes(paths["notes"], layout["notes"][1], fmt, report)
    charlson = _charlson_by_admission(paths["diagnoses"], layout["diagnoses"][1], report, task in CODE_TASKS)
    report.rows_read += len(adm)

    adm["hadm_id"], adm["subject_id"] = _norm_id(adm["hadm_id"]), _norm_id(adm["subject_id"])
    pat["subject_id"] = _norm_id(pat["subject_id"])
    adm["admit_time"] = pd.to_datetime(adm["admittime"], errors="coerce", format="ISO8601")
    adm["disch_time"] = pd.to_datetime(adm["dischtime"], errors="coerce", format="ISO8601")
    flag = adm["hospital_expire_flag"].astype(str).str.strip()
    has_deathtime = adm["deathtime"].astype(str).str.strip() != ""
    adm["died_in_hospital"] = np.where(flag != "", flag.isin(["1", "1.0"]), has_deathtime)
    adm["los_days"] = length_of_stay_days(adm["admit_time"], adm["disch_time"])
    timed = adm["admit_time"].notna() & adm["disch_time"].notna()
    adm["readmission"] = pd.array([pd.NA] * len(adm), dtype="boolean")
    if task == "readmission" and timed.any():
        # On every timed admission, with or without a note: a readmission needs no discharge summary to count.
        adm.loc[timed, "readmission"] = readmission_labels(adm[timed], count_elective=count_elective)
    patients = _patient_info(pat, fmt)

    rows: list[dict] = []
    seen: set[str] = set()
    excluded: Counter = Counter()
    adm_file, note_file = paths["admissions"], paths["notes"]

    def bad(r: Any, reason: str, problem: str, in_note: bool = False) -> None:
        """Problems with the note point at its row in the note table, the others at the admission's row."""
        file, row = (note_file, notes[r.hadm_id][1]) if in_note else (adm_file, r.data_row)
        report.bad(reason, file, row, f"admission {r.hadm_id}: {problem}")

    for r in adm.itertuples(index=False):
        note = notes.get(r.hadm_id)
        if r.hadm_id in seen:
            bad(r, "duplicate_admission", "HADM_ID appears more than once")
            continue
        seen.add(r.hadm_id)
        if pd.isna(r.admit_time) or pd.isna(r.disch_time):
            bad(r, "bad_time", f"unreadable admit/discharge time ({r.admittime!r}, {r.dischtime!r})")
        elif r.disch_time < r.admit_time:
            bad(r, "discharge_before_admission", f"discharged {r.dischtime} before admitted {r.admittime}")
        elif r.subject_id not in patients:
            bad(r, "no_patient", f"subject {r.subject_id} is not in {paths['patients'].name}")
        elif note is None:
            bad(r, "no_note", f"no discharge summary in {note_file.name}")
        elif _has_bad_bytes(note[0]):
            bad(r, "non_utf8_note", "discharge summary has bytes that are not UTF-8", in_note=True)
        elif not note[0].strip():
            bad(r, "empty_note", "discharge summary is empty", in_note=True)
        elif len(note[0]) > max_note_chars:
            bad(r, "note_too_long", f"discharge summary has {len(note[0]):,} characters (max_note_chars="
                                    f"{max_note_chars:,}); a real one is under ~60,000", in_note=True)
        elif task == "readmission" and pd.isna(r.readmission):
            excluded["in_hospital_death"] += 1
        elif task == "comorbidity" and r.hadm_id not in charlson:
            bad(r, "no_diagnoses", f"no diagnosis codes in {paths['diagnoses'].name} to score")
        else:
            sex, age, admit_year = _demographics(patients[r.subject_id], r.admit_time, fmt)
            rows.append({
                "id": r.hadm_id, "subject_id": r.subject_id, "text": note[0],
                "admit_time": r.admit_time.isoformat(), "admit_year": admit_year,
                "sex": sex, "age": age, "age_band": age_band(age), "race": race_group(r.race),
                "insurance": _clean(r.insurance), "admission_type": _clean(r.admission_type).upper(),
                "died_in_hospital": int(r.died_in_hospital), "los_days": float(r.los_days),
                "charlson": charlson.get(r.hadm_id), "readmission": r.readmission,
                "_file": note_file, "_row": note[1],
            })
    if excluded:
        report.notes["excluded"] = dict(excluded)
    report.notes["admit_year"] = (
        "real year estimated from anchor_year_group (+-1 year)" if fmt == "mimic-iv" else
        "MIMIC-III shifted year (random per patient): not meaningful for a temporal split")
    return rows


def _read_notes(path: Path, columns: Mapping, fmt: str, report: DataReport) -> dict[str, tuple[str, int]]:
    """hadm_id -> (main discharge summary text, data row of its first part).

    Notes flagged as errors (MIMIC-III ISERROR) are dropped and counted. Several reports of one admission are
    joined in chart order (`_NOTE_ORDER`), ties and missing order columns falling back to file order;
    `report.notes["discharge_notes"]` says which order was used and how often file order decided.
    """
    counts = {"marked_error_dropped": 0}

    def keep(c: pd.DataFrame) -> pd.Series:
        summary = c["category"].str.strip().str.lower() == "discharge summary"
        error = pd.Series(False, index=c.index)
        error[summary] = _error_flags(c[summary], path)
        counts["marked_error_dropped"] += int(error.sum())
        return summary & ~error

    order = _NOTE_ORDER[fmt]
    frame = read_table(path, columns, keep_bad_bytes=True, row_filter=keep if fmt == "mimic-iii" else None,
                       optional=order)
    frame = frame[frame["kind"].str.strip().str.upper() == _MAIN_NOTE_KIND[fmt]]
    frame = frame.assign(hadm_id=_norm_id(frame["hadm_id"]))
    frame = frame[frame["hadm_id"] != ""]
    keys = [k for k in order if k in frame]
    # Unreadable values become NaN/NaT, sort last and tie: file order decides among them.
    frame = frame.assign(**{f"_{k}": pd.to_numeric(frame[k], errors="coerce") if k == "note_seq" else
                            pd.to_datetime(frame[k], errors="coerce", format="ISO8601") for k in keys})
    by = ["hadm_id", *(f"_{k}" for k in keys)]
    frame = frame.sort_values([*by, "data_row"], kind="stable", na_position="last")
    several = frame[frame["hadm_id"].duplicated(keep=False)]
    missing = [theirs for ours, theirs in order.items() if ours not in keys]
    report.notes["discharge_notes"] = {
        "order": keys or "file order",
        **({"why": f"no {', '.join(missing)} column in {path.name}"} if missing else {}),
        "admissions_with_several_reports": int(several["hadm_id"].nunique()),
        "admissions_ordered_by_file_position": int(several.loc[several.duplicated(by, keep=False), "hadm_id"]
                                                   .nunique()),
        **(counts if fmt == "mimic-iii" else {}),
    }
    out: dict[str, tuple[str, int]] = {}
    for hadm, text, row in zip(frame["hadm_id"], frame["text"], frame["data_row"]):
        out[hadm] = (out[hadm][0] + "\n\n" + text, out[hadm][1]) if hadm in out else (text, int(row))
    return out


def _error_flags(notes: pd.DataFrame, path: Path) -> pd.Series:
    """MIMIC-III ISERROR read as a number: 1 marks an erroneous note (written "1.0" once pandas re-saved the table);
    empty or 0 does not. Anything else is an error: guessing could train on a note its authors withdrew."""
    text = notes["iserror"].str.strip()
    value = pd.to_numeric(text.mask(text == "", "0"), errors="coerce")
    unknown = ~value.isin([0, 1])
    if unknown.any():
        i = unknown.idxmax()
        raise DataError(path, int(notes.at[i, "data_row"]), f"ISERROR {notes.at[i, 'iserror']!r} is not 1 (an "
                                                             "erroneous note), 0 or empty")
    return value == 1


def _charlson_by_admission(path: Path, columns: Mapping, report: DataReport, label_uses_codes: bool
                           ) -> dict[str, int]:
    """hadm_id -> Charlson index. Malformed codes go through their own DataReport (codes, not admissions); they are
    errors only when the task's label is made of codes (else they only leave the descriptive charlson column)."""
    dx = read_table(path, columns)
    dx["hadm_id"] = _norm_id(dx["hadm_id"])
    dx["icd_code"] = dx["icd_code"].map({c: normalize_code(c) for c in dx["icd_code"].unique()})
    dx["icd_version"] = dx["icd_version"].str.strip() if "icd_version" in dx else "9"
    codes = DataReport(skip_bad_rows=report.skip_bad_rows or not label_uses_codes)
    codes.rows_read = len(dx)
    # Work per distinct (version, code): millions of rows, tens of thousands of codes.
    key = dx["icd_version"] + ":" + dx["icd_code"]
    mapped = {}
    for k in key.unique():
        version, code = k.split(":", 1)
        if version in ("9", "10") and is_valid_code(code, int(version)):
            mapped[k] = code_conditions(code, int(version))
    ok = key.isin(list(mapped))
    for r in dx[~ok].itertuples(index=False):
        reason = "unknown_icd_version" if r.icd_version not in ("9", "10") else "unknown_icd_code"
        what = (f"ICD version {r.icd_version!r} (expected 9 or 10)" if reason == "unknown_icd_version" else
                f"{r.icd_code!r} is not an ICD-{r.icd_version} diagnosis code")
        codes.bad(reason, path, r.data_row, f"admission {r.hadm_id}: {what}")
    report.notes["diagnoses"] = {**{k: v for k, v in codes.to_dict().items() if k != "rows_kept"},
                                 "label_uses_codes": label_uses_codes}
    conditions: dict[str, set[str]] = {h: set() for h in dx.loc[ok, "hadm_id"].unique()}
    scoring = key.isin([k for k, found in mapped.items() if found])
    for hadm, k in zip(dx.loc[scoring, "hadm_id"], key[scoring]):
        conditions[hadm] |= mapped[k]
    return {h: charlson_score(c) for h, c in conditions.items()}


def _patient_info(pat: pd.DataFrame, fmt: str) -> dict[str, dict]:
    pat = pat.drop_duplicates("subject_id")
    if fmt == "mimic-iii":
        pat = pat.assign(dob=pd.to_datetime(pat["dob"], errors="coerce", format="ISO8601"))
    return {row["subject_id"]: row for row in pat.to_dict("records")}


def _demographics(patient: Mapping, admit_time: pd.Timestamp, fmt: str) -> tuple[str, float | None, int]:
    """(sex, age at admission with ages over 89 as 90, admit_year as described in the module docstring)."""
    sex = {"M": "M", "F": "F"}.get(_clean(patient["gender"]).upper(), "unknown")
    age: float | None = None
    year = admit_time.year
    if fmt == "mimic-iii":
        dob = patient["dob"]
        if not pd.isna(dob):  # year arithmetic, not timedeltas: masked DOBs lie 300 years back
            age = (admit_time.year - dob.year) + (admit_time.dayofyear - dob.dayofyear) / 365.25
    else:
        anchor_age, anchor_year = _number(patient["anchor_age"]), _number(patient["anchor_year"])
        if anchor_age is not None and anchor_year is not None:
            age = anchor_age + (admit_time.year - anchor_year)
            window = re.findall(r"\d{4}", str(patient["anchor_year_group"]))
            if len(window) == 2:
                year = round((int(window[0]) + int(window[1])) / 2 + admit_time.year - anchor_year)
    if age is not None:
        age = float(min(max(age, 0.0), MASKED_AGE))
    return sex, age, int(year)


def _clean(value: Any) -> str:
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
    return text or "unknown"


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _table_rows(path: Path, task: str, report: DataReport, max_note_chars: int) -> list[dict]:
    """Rows of a plain table: `text`, `label`, and whatever optional columns it has."""
    suffixes = "".join(path.suffixes[-2:]).lower()
    if suffixes.endswith((".csv", ".csv.gz")):
        header = list(pd.read_csv(path, nrows=0, encoding_errors="surrogateescape").columns)
        optional = ["id", "subject_id", "admit_time", "admit_year", "age", *SUBGROUP_COLUMNS]
        columns = {"text": "text", "label": "label", **{c: c for c in optional if c in header}}
        frame = read_table(path, columns, keep_bad_bytes=True)
    elif suffixes.endswith((".jsonl", ".parquet")):
        frame = pd.read_json(path, lines=True, dtype=False) if suffixes.endswith(".jsonl") else pd.read_parquet(path)
        missing = [c for c in ("text", "label") if c not in frame.columns]
        if missing:
            raise DataError(path, None, f"missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}")
        frame = frame.astype(object).where(frame.notna(), "")
        frame["data_row"] = np.arange(1, len(frame) + 1)
    else:
        raise DataError(path, None, "unknown table type: use .csv, .csv.gz, .jsonl or .parquet")
    report.rows_read += len(frame)
    report.notes["subject_id"] = ("from the table" if "subject_id" in frame else
                                  "no subject_id column: each row counts as its own patient in splits")
    rows, seen = [], set()
    for rec in frame.to_dict("records"):
        row_no, text, label = rec["data_row"], str(rec["text"]), str(rec["label"]).strip()
        rid = _clean(rec.get("id", "")) if "id" in frame else str(row_no)
        if rid in seen:
            report.bad("duplicate_admission", path, row_no, f"id {rid!r} appears more than once")
            continue
        seen.add(rid)
        if _has_bad_bytes(text):
            report.bad("non_utf8_note", path, row_no, "text has bytes that are not UTF-8")
        elif not text.strip():
            report.bad("empty_note", path, row_no, "text is empty")
        elif len(text) > max_note_chars:
            report.bad("note_too_long", path, row_no, f"text has {len(text):,} characters "
                                                      f"(max_note_chars={max_note_chars:,})")
        elif not label or (task == "los_days" and _number(label) is None):
            report.bad("no_label", path, row_no, f"label {label!r} is empty" +
                       (" or not a number" if task == "los_days" else ""))
        else:
            age = _number(rec.get("age"))
            rows.append({
                "id": rid, "subject_id": _clean(rec.get("subject_id", "")) if "subject_id" in frame else rid,
                "text": text, "table_label": label,
                "admit_time": str(rec.get("admit_time", "")).strip(),
                "admit_year": int(_number(rec.get("admit_year")) or 0) or None,
                "sex": _clean(rec.get("sex")), "age": age,
                "age_band": age_band(age) if age is not None else _clean(rec.get("age_band")),
                **{c: _clean(rec.get(c)) for c in ("race", "insurance", "admission_type")},
                "died_in_hospital": None, "los_days": None, "charlson": None,
                "_file": path, "_row": row_no,
            })
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------------------


def features(class_names: Sequence[str] | None) -> datasets.Features:
    """The columns of every `load_admissions` dataset; `class_names=None` gives a float32 (regression) label."""
    return datasets.Features({
        "id": datasets.Value("string"), "subject_id": datasets.Value("string"), "text": datasets.Value("string"),
        "label": datasets.ClassLabel(names=list(class_names)) if class_names else datasets.Value("float32"),
        "admit_time": datasets.Value("string"), "admit_year": datasets.Value("int32"),
        "sex": datasets.Value("string"), "age": datasets.Value("float32"), "age_band": datasets.Value("string"),
        "race": datasets.Value("string"), "insurance": datasets.Value("string"),
        "admission_type": datasets.Value("string"), "died_in_hospital": datasets.Value("int8"),
        "los_days": datasets.Value("float32"), "charlson": datasets.Value("int32"),
    })


def _to_dataset(rows: list[dict], task: str, los_bins: Sequence[float], charlson_bins: Sequence[int]
                ) -> tuple[datasets.Dataset, list[str] | None]:
    if rows and "table_label" in rows[0]:
        raw = [r["table_label"] for r in rows]
        if task == "los_days":
            class_names, labels = None, [float(v) for v in raw]
        else:
            class_names = _sorted_labels(set(raw))
            index = {name: i for i, name in enumerate(class_names)}
            labels = [index[v] for v in raw]
    elif task == "mortality":
        class_names, labels = ["survived", "died"], [r["died_in_hospital"] for r in rows]
    elif task == "readmission":
        class_names, labels = ["not_readmitted", "readmitted"], [int(bool(r["readmission"])) for r in rows]
    elif task == "los":
        class_names = bin_names(los_bins)
        labels = bin_values([r["los_days"] for r in rows], los_bins).tolist()
    elif task == "los_days":
        class_names, labels = None, [r["los_days"] for r in rows]
    else:
        class_names = bin_names(charlson_bins, integer=True)
        labels = bin_values([r["charlson"] for r in rows], charlson_bins).tolist()
    feats = features(class_names)
    columns = {name: [r[name] for r in rows] for name in feats if name != "label"}
    columns["label"] = labels
    return datasets.Dataset.from_dict({k: columns[k] for k in feats}, features=feats), class_names


def _sorted_labels(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order ("2" before "10"), others alphabetically."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def label_summary(dataset: datasets.Dataset, label_column: str = "label") -> dict:
    """Counts and prevalence per class, or mean/median/range for a regression label."""
    labels = np.asarray(dataset[label_column]) if len(dataset) else np.asarray([])
    feature = dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        counts = np.bincount(labels.astype(int), minlength=feature.num_classes) if len(labels) else \
            np.zeros(feature.num_classes, dtype=int)
        n = max(int(counts.sum()), 1)
        return {"examples": int(counts.sum()),
                "counts": {name: int(c) for name, c in zip(feature.names, counts)},
                "prevalence": {name: round(float(c) / n, 4) for name, c in zip(feature.names, counts)}}
    if not len(labels):
        return {"examples": 0}
    return {"examples": int(len(labels)), "mean": round(float(labels.mean()), 3),
            "median": round(float(np.median(labels)), 3), "min": round(float(labels.min()), 3),
            "max": round(float(labels.max()), 3)}


# ---------------------------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------------------------


def temporal_split(
    dataset: datasets.Dataset,
    year_column: str = "admit_year",
    test_years: Iterable[int] | None = None,
    validation_years: Iterable[int] | None = None,
    group_column: str = "subject_id",
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    report: DataReport | None = None,
) -> datasets.DatasetDict:
    """Train on earlier years, validate and test on later ones, with no patient in two splits.

    Test holds every admission of `test_years` (default: the latest years that make up `test_fraction` of the
    data); validation those of `validation_years` (default: the latest remaining years making up
    `validation_fraction`); train the rest. A patient seen in a later split loses their admissions in the
    earlier ones (test wins over validation over train), so the test period stays complete. Counts and label
    prevalence per split go to `report.notes["splits"]`.
    """
    years = np.asarray(dataset[year_column], dtype=float)
    if np.isnan(years).any():
        raise ValueError(f"{year_column} has missing years; a temporal split needs every row's year")
    test = set(test_years) if test_years is not None else _latest_years(years, set(), test_fraction)
    val = (set(validation_years) if validation_years is not None
           else _latest_years(years, test, validation_fraction))
    if test & val:
        raise ValueError(f"test_years and validation_years overlap: {sorted(test & val)}")
    if not set(years.astype(int).tolist()) - test - val:
        raise ValueError(f"no year left for training (test {sorted(test)}, validation {sorted(val)})")
    groups = np.asarray(dataset[group_column]).astype(str)
    year_int = years.astype(int)
    in_test, in_val = np.isin(year_int, list(test)), np.isin(year_int, list(val))
    test_groups = set(groups[in_test])
    in_val &= ~np.isin(groups, list(test_groups))
    val_groups = set(groups[in_val])
    in_train = ~in_test & ~np.isin(year_int, list(val)) & ~np.isin(groups, list(test_groups | val_groups))
    splits = datasets.DatasetDict({
        "train": dataset.select(np.flatnonzero(in_train)),
        "validation": dataset.select(np.flatnonzero(in_val)),
        "test": dataset.select(np.flatnonzero(in_test)),
    })
    if report is not None:
        report.notes["splits"] = {
            "how": "temporal", "test_years": sorted(test), "validation_years": sorted(val),
            "rows_dropped_for_patient_overlap": int(len(dataset) - in_train.sum() - in_val.sum() - in_test.sum()),
            **split_summary(splits, group_column=group_column),
        }
    return splits


def _latest_years(years: np.ndarray, taken: set[int], fraction: float) -> set[int]:
    """The latest years (not in `taken`) whose admissions reach `fraction` of all rows."""
    chosen: set[int] = set()
    count, target = 0, fraction * len(years)
    for year in sorted(set(years.astype(int).tolist()) - taken, reverse=True):
        if count >= target:
            break
        chosen.add(year)
        count += int((years.astype(int) == year).sum())
    return chosen


def split_summary(splits: Mapping[str, datasets.Dataset], label_column: str = "label",
                  group_column: str = "subject_id") -> dict:
    """`hf_medai.data.splits.split_report` with the label prevalence per split (or mean/median for los_days)
    and, as a check, the number of patients found in more than one split (0 by construction)."""
    out: dict[str, Any] = split_report(datasets.DatasetDict(splits), label_column, group_column)
    owners: Counter = Counter()
    for name, split in splits.items():
        out[name].pop("label_counts", None)
        out[name].update({k: v for k, v in label_summary(split, label_column).items() if k != "examples"})
        owners.update(set(split[group_column]))
    out["patients_in_more_than_one_split"] = sum(1 for c in owners.values() if c > 1)
    return out


def split_admissions(
    dataset: datasets.Dataset,
    how: str = "patient",
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    test_years: Iterable[int] | None = None,
    validation_years: Iterable[int] | None = None,
    los_bins: Sequence[float] = (3, 7, 14),
    report: DataReport | None = None,
) -> datasets.DatasetDict:
    """Train/validation/test with no patient in two splits; counts and prevalence to `report.notes["splits"]`.

    how="patient": `group_split` by subject_id, stratified by the label (by its `los_bins` bin for los_days).
    how="temporal": `temporal_split` on admit_year, validation and test sizes from `fractions` unless the years
    are given. Only meaningful on MIMIC-IV (see "Years" in the module docstring).
    """
    if how == "temporal":
        return temporal_split(dataset, test_years=test_years, validation_years=validation_years,
                              test_fraction=fractions[2], validation_fraction=fractions[1], report=report)
    if how != "patient":
        raise ValueError(f"how={how!r}: choose 'patient' or 'temporal'")
    stratify = "label"
    if not isinstance(dataset.features["label"], datasets.ClassLabel):  # regression: stratify by LOS bin
        stratify = "_stratum"
        dataset = dataset.add_column(stratify, bin_values(dataset["label"], los_bins).tolist())
    splits = group_split(dataset, group_column="subject_id", label_column=stratify, fractions=fractions, seed=seed)
    if stratify != "label":
        splits = datasets.DatasetDict({k: v.remove_columns(stratify) for k, v in splits.items()})
    if report is not None:
        report.notes["splits"] = {"how": "patient", "seed": seed, **split_summary(splits)}
    return splits


# ---------------------------------------------------------------------------------------------------------------
# Notes longer than the encoder's window
# ---------------------------------------------------------------------------------------------------------------

WINDOW_STRATEGIES = ("head", "head_tail", "chunks")
POOLINGS = ("mean", "max")


def note_windows(
    input_ids: Sequence[int],
    max_length: int,
    strategy: str = "head",
    stride: int = 0,
    head_tokens: int | None = None,
    max_chunks: int | None = None,
) -> list[list[int]]:
    """Token windows of one note, each at most `max_length` ids (special tokens not included).

    head: the first `max_length` ids. head_tail: the first `head_tokens` (default a quarter, after Sun et al.
    2019's 128 + 382 of 510) and the last ids, joined. chunks: consecutive windows overlapping by `stride` ids,
    the first `max_chunks` of them if given. A note that fits gives one window; an empty note one empty window,
    so every example keeps a prediction.
    """
    if strategy not in WINDOW_STRATEGIES:
        raise ValueError(f"strategy={strategy!r}: choose one of {WINDOW_STRATEGIES}")
    if max_length < 1 or not 0 <= stride < max_length:
        raise ValueError(f"need max_length >= 1 and 0 <= stride < max_length (got {max_length}, {stride})")
    ids = list(input_ids)
    if len(ids) <= max_length:
        return [ids]
    if strategy == "head":
        return [ids[:max_length]]
    if strategy == "head_tail":
        head = max_length // 4 if head_tokens is None else head_tokens
        if not 0 <= head <= max_length:
            raise ValueError(f"head_tokens={head_tokens} must lie in [0, max_length={max_length}]")
        tail = max_length - head
        return [ids[:head] + (ids[-tail:] if tail else [])]
    step = max_length - stride
    starts = range(0, len(ids) - stride, step)
    windows = [ids[s:s + max_length] for s in starts]
    return windows[:max_chunks] if max_chunks else windows


def encode_note_windows(
    batch: Mapping[str, list],
    indices: Sequence[int],
    tokenizer: Any,
    max_length: int | None = None,
    strategy: str = "head",
    stride: int = 0,
    head_tokens: int | None = None,
    max_chunks: int | None = None,
    text_column: str = "text",
) -> dict[str, list]:
    """One row per token window of each note in a batch; use it as

        dataset.map(encode_note_windows, batched=True, with_indices=True, remove_columns=dataset.column_names,
                    fn_kwargs={"tokenizer": tokenizer, "strategy": "chunks", "stride": 64})

    Each row has input_ids and attention_mask (special tokens added, at most `max_length`, default the
    tokenizer's), `example_index` (the note's row in the dataset, for `pool_chunk_logits`) and every other
    column of the batch repeated, so labels and subgroups follow their windows.
    """
    max_length = max_length or tokenizer.model_max_length
    prefix, suffix = special_token_affixes(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    encoded = tokenizer(list(batch[text_column]), add_special_tokens=False, truncation=False, verbose=False)
    others = [k for k in batch if k != text_column]
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "example_index": [], **{k: [] for k in others}}
    for i, ids in enumerate(encoded["input_ids"]):
        for window in note_windows(ids, budget, strategy, stride, head_tokens, max_chunks):
            full = prefix + window + suffix
            out["input_ids"].append(full)
            out["attention_mask"].append([1] * len(full))
            out["example_index"].append(int(indices[i]))
            for k in others:
                out[k].append(batch[k][i])
    return out


def special_token_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after one sequence ([CLS] / [SEP] for BERT, <s> / </s>, BOS only).

    Read off the tokenizer's own output, since transformers 5 tokenizers no longer expose
    `build_inputs_with_special_tokens`: tokenise one word with and without special tokens and see what was added.
    """
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    raise ValueError(f"cannot tell which special tokens {type(tokenizer).__name__} adds")


def pool_chunk_logits(logits: Any, chunk_to_example: Sequence[int], how: str = "mean",
                      num_examples: int | None = None) -> np.ndarray:
    """Per-example logits from per-window logits: mean or max over each example's windows.

    `chunk_to_example[i]` is the example index (0..num_examples-1) of window i; row e of the result belongs to
    example e. Works for (windows, classes) and (windows,) regression outputs.
    """
    if how not in POOLINGS:
        raise ValueError(f"how={how!r}: choose one of {POOLINGS}")
    values = np.asarray(logits, dtype=np.float64)
    owner = np.asarray(chunk_to_example, dtype=np.int64)
    if len(owner) != len(values):
        raise ValueError(f"{len(values)} logits but {len(owner)} chunk_to_example entries")
    n = int(num_examples if num_examples is not None else (owner.max() + 1 if len(owner) else 0))
    counts = np.bincount(owner, minlength=n)
    if len(counts) > n or (counts == 0).any():
        raise ValueError("every example needs at least one window and no index may reach num_examples")
    if how == "mean":
        pooled = np.zeros((n, *values.shape[1:]))
        np.add.at(pooled, owner, values)
        return pooled / counts.reshape(-1, *([1] * (values.ndim - 1)))
    pooled = np.full((n, *values.shape[1:]), -np.inf)
    np.maximum.at(pooled, owner, values)
    return pooled
