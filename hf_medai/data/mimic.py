"""MIMIC-III and MIMIC-IV read into one row per admission: tables, discharge notes, demographics, diagnosis codes.

Layouts (csv or csv.gz): MIMIC-III has NOTEEVENTS, ADMISSIONS, PATIENTS, DIAGNOSES_ICD in one folder, upper-case
columns, ICD-9 only; MIMIC-IV has hosp/admissions, hosp/patients, hosp/diagnoses_icd and note/discharge
(MIMIC-IV-Note, maybe in its own folder), lower-case columns, ICD-9 and ICD-10. Years, masked ages, the order of
several discharge reports and the bad-row reasons are described in `hf_medai.data.clinical_notes`.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hf_medai.data.charlson import charlson_score, code_conditions, is_valid_code, normalize_code
from hf_medai.data.outcome_labels import length_of_stay_days, readmission_labels
from hf_medai.data.report import DataError, DataReport
from hf_medai.data.subgroups import CLINICAL_AGE_BANDS, CLINICAL_AGE_EDGES, UNKNOWN, age_band
from hf_medai.data.tables import find_table, group_cell, has_bad_bytes, norm_id, number_cell, read_table

MASKED_AGE = 90.0  # MIMIC reports every age above 89 as one masked value

# Per format: logical table -> (path without .csv/.csv.gz, {our column: its column or alternatives}).
_LAYOUTS: dict[str, dict[str, tuple[str, dict[str, str | tuple[str, ...]]]]] = {
    "mimic-iii": {
        "admissions": (
            "ADMISSIONS",
            {
                "subject_id": "SUBJECT_ID",
                "hadm_id": "HADM_ID",
                "admittime": "ADMITTIME",
                "dischtime": "DISCHTIME",
                "deathtime": "DEATHTIME",
                "admission_type": "ADMISSION_TYPE",
                "insurance": "INSURANCE",
                "race": "ETHNICITY",
                "hospital_expire_flag": "HOSPITAL_EXPIRE_FLAG",
            },
        ),
        "patients": ("PATIENTS", {"subject_id": "SUBJECT_ID", "gender": "GENDER", "dob": "DOB"}),
        "notes": (
            "NOTEEVENTS",
            {
                "hadm_id": "HADM_ID",
                "category": "CATEGORY",
                "kind": "DESCRIPTION",
                "iserror": "ISERROR",
                "text": "TEXT",
            },
        ),
        "diagnoses": ("DIAGNOSES_ICD", {"hadm_id": "HADM_ID", "icd_code": "ICD9_CODE"}),
    },
    "mimic-iv": {
        "admissions": (
            "hosp/admissions",
            {
                "subject_id": "subject_id",
                "hadm_id": "hadm_id",
                "admittime": "admittime",
                "dischtime": "dischtime",
                "deathtime": "deathtime",
                "admission_type": "admission_type",
                "insurance": "insurance",
                "race": ("race", "ethnicity"),  # MIMIC-IV <= 2.0 called it ethnicity
                "hospital_expire_flag": "hospital_expire_flag",
            },
        ),
        "patients": (
            "hosp/patients",
            {
                "subject_id": "subject_id",
                "gender": "gender",
                "anchor_age": "anchor_age",
                "anchor_year": "anchor_year",
                "anchor_year_group": "anchor_year_group",
            },
        ),
        "notes": ("note/discharge", {"hadm_id": "hadm_id", "kind": "note_type", "text": "text"}),
        "diagnoses": (
            "hosp/diagnoses_icd",
            {"hadm_id": "hadm_id", "icd_code": "icd_code", "icd_version": "icd_version"},
        ),
    },
}
_MAIN_NOTE_KIND = {"mimic-iii": "REPORT", "mimic-iv": "DS"}  # addenda: "Addendum" / "AD"
# The order of several reports of one admission, read when the columns are there: {our column: theirs}.
_NOTE_ORDER = {
    "mimic-iii": {"chartdate": "CHARTDATE", "charttime": "CHARTTIME"},
    "mimic-iv": {"note_seq": "note_seq", "charttime": "charttime"},
}
CODE_TASKS = frozenset({"comorbidity"})  # tasks whose label is computed from the diagnosis codes


def detect_format(source: str | os.PathLike) -> str:
    source = Path(source)
    if source.is_file():
        return "table"
    if source.is_dir():
        if any((source / f"ADMISSIONS{s}").is_file() for s in (".csv", ".csv.gz")):
            return "mimic-iii"
        if any((source / f"hosp/admissions{s}").is_file() for s in (".csv", ".csv.gz")):
            return "mimic-iv"
        raise DataError(
            source,
            None,
            "no MIMIC layout found: expected ADMISSIONS.csv[.gz] (MIMIC-III) or "
            "hosp/admissions.csv[.gz] (MIMIC-IV), or pass a table file",
        )
    raise DataError(source, None, "no such file or folder")


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


def mimic_rows(
    root: Path, note_root: Path, fmt: str, task: str, report: DataReport, max_note_chars: int, count_elective: bool
) -> list[dict]:
    layout = _LAYOUTS[fmt]
    paths = {name: find_table(note_root if name == "notes" else root, stem) for name, (stem, _) in layout.items()}
    adm = read_table(paths["admissions"], layout["admissions"][1])
    pat = read_table(paths["patients"], layout["patients"][1])
    notes = _read_notes(paths["notes"], layout["notes"][1], fmt, report)
    charlson = _charlson_by_admission(paths["diagnoses"], layout["diagnoses"][1], report, task in CODE_TASKS)
    report.rows_read += len(adm)

    adm["hadm_id"], adm["subject_id"] = norm_id(adm["hadm_id"]), norm_id(adm["subject_id"])
    pat["subject_id"] = norm_id(pat["subject_id"])
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
        elif has_bad_bytes(note[0]):
            bad(r, "non_utf8_note", "discharge summary has bytes that are not UTF-8", in_note=True)
        elif not note[0].strip():
            bad(r, "empty_note", "discharge summary is empty", in_note=True)
        elif len(note[0]) > max_note_chars:
            bad(
                r,
                "note_too_long",
                f"discharge summary has {len(note[0]):,} characters (max_note_chars="
                f"{max_note_chars:,}); a real one is under ~60,000",
                in_note=True,
            )
        elif task == "readmission" and pd.isna(r.readmission):
            excluded["in_hospital_death"] += 1
        elif task == "comorbidity" and r.hadm_id not in charlson:
            bad(r, "no_diagnoses", f"no diagnosis codes in {paths['diagnoses'].name} to score")
        else:
            sex, age, admit_year = _demographics(patients[r.subject_id], r.admit_time, fmt)
            rows.append(
                {
                    "id": r.hadm_id,
                    "subject_id": r.subject_id,
                    "text": note[0],
                    "admit_time": r.admit_time.isoformat(),
                    "admit_year": admit_year,
                    "sex": sex,
                    "age": age,
                    "age_band": age_band(age, CLINICAL_AGE_BANDS, CLINICAL_AGE_EDGES) or UNKNOWN,
                    "race": race_group(r.race),
                    "insurance": group_cell(r.insurance),
                    "admission_type": group_cell(r.admission_type).upper(),
                    "died_in_hospital": int(r.died_in_hospital),
                    "los_days": float(r.los_days),
                    "charlson": charlson.get(r.hadm_id),
                    "readmission": r.readmission,
                    "_file": note_file,
                    "_row": note[1],
                }
            )
    if excluded:
        report.notes["excluded"] = dict(excluded)
    report.notes["admit_year"] = (
        "real year estimated from anchor_year_group (+-1 year)"
        if fmt == "mimic-iv"
        else "MIMIC-III shifted year (random per patient): not meaningful for a temporal split"
    )
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
    frame = read_table(
        path, columns, keep_bad_bytes=True, row_filter=keep if fmt == "mimic-iii" else None, optional=order
    )
    frame = frame[frame["kind"].str.strip().str.upper() == _MAIN_NOTE_KIND[fmt]]
    frame = frame.assign(hadm_id=norm_id(frame["hadm_id"]))
    frame = frame[frame["hadm_id"] != ""]
    keys = [k for k in order if k in frame]
    # Unreadable values become NaN/NaT, sort last and tie: file order decides among them.
    frame = frame.assign(
        **{
            f"_{k}": pd.to_numeric(frame[k], errors="coerce")
            if k == "note_seq"
            else pd.to_datetime(frame[k], errors="coerce", format="ISO8601")
            for k in keys
        }
    )
    by = ["hadm_id", *(f"_{k}" for k in keys)]
    frame = frame.sort_values([*by, "data_row"], kind="stable", na_position="last")
    several = frame[frame["hadm_id"].duplicated(keep=False)]
    missing = [theirs for ours, theirs in order.items() if ours not in keys]
    report.notes["discharge_notes"] = {
        "order": keys or "file order",
        **({"why": f"no {', '.join(missing)} column in {path.name}"} if missing else {}),
        "admissions_with_several_reports": int(several["hadm_id"].nunique()),
        "admissions_ordered_by_file_position": int(
            several.loc[several.duplicated(by, keep=False), "hadm_id"].nunique()
        ),
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
        raise DataError(
            path,
            int(notes.at[i, "data_row"]),
            f"ISERROR {notes.at[i, 'iserror']!r} is not 1 (an erroneous note), 0 or empty",
        )
    return value == 1


def _charlson_by_admission(path: Path, columns: Mapping, report: DataReport, label_uses_codes: bool) -> dict[str, int]:
    """hadm_id -> Charlson index. Malformed codes go through their own DataReport (codes, not admissions); they are
    errors only when the task's label is made of codes (else they only leave the descriptive charlson column)."""
    dx = read_table(path, columns)
    dx["hadm_id"] = norm_id(dx["hadm_id"])
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
        what = (
            f"ICD version {r.icd_version!r} (expected 9 or 10)"
            if reason == "unknown_icd_version"
            else f"{r.icd_code!r} is not an ICD-{r.icd_version} diagnosis code"
        )
        codes.bad(reason, path, r.data_row, f"admission {r.hadm_id}: {what}")
    report.notes["diagnoses"] = {
        **{k: v for k, v in codes.to_dict().items() if k != "rows_kept"},
        "label_uses_codes": label_uses_codes,
    }
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
    sex = {"M": "M", "F": "F"}.get(group_cell(patient["gender"]).upper(), "unknown")
    age: float | None = None
    year = admit_time.year
    if fmt == "mimic-iii":
        dob = patient["dob"]
        if not pd.isna(dob):  # year arithmetic, not timedeltas: masked DOBs lie 300 years back
            age = (admit_time.year - dob.year) + (admit_time.dayofyear - dob.dayofyear) / 365.25
    else:
        anchor_age, anchor_year = number_cell(patient["anchor_age"]), number_cell(patient["anchor_year"])
        if anchor_age is not None and anchor_year is not None:
            age = anchor_age + (admit_time.year - anchor_year)
            window = re.findall(r"\d{4}", str(patient["anchor_year_group"]))
            if len(window) == 2:
                year = round((int(window[0]) + int(window[1])) / 2 + admit_time.year - anchor_year)
    if age is not None:
        age = float(min(max(age, 0.0), MASKED_AGE))
    return sex, age, int(year)
