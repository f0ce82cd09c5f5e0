"""Per-admission clinical outcome examples from discharge summaries: MIMIC-III, MIMIC-IV, or a plain table.

Where the parts live: `hf_medai.data.mimic` (MIMIC tables), `hf_medai.data.note_sections` (which sections a task
sees), `hf_medai.data.outcome_labels` (labels), `hf_medai.data.splits` (patient-level and temporal splits).

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
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from hf_medai.data.mimic import detect_format, mimic_rows
from hf_medai.data.note_sections import AUTO_SECTIONS, NOTE_SECTIONS, SECTIONS_WHY, extract_admission_sections
from hf_medai.data.outcome_labels import LABEL_DEFINITIONS, bin_names, bin_values, label_summary
from hf_medai.data.phi_policy import PHI_POLICIES, apply_phi_policy
from hf_medai.data.report import DataError, DataReport
from hf_medai.data.subgroups import CLINICAL_AGE_BANDS, CLINICAL_AGE_EDGES, UNKNOWN, age_band
from hf_medai.data.tables import group_cell, has_bad_bytes, number_cell, read_table, sorted_labels

TASKS = ("mortality", "readmission", "los", "los_days", "comorbidity")
FORMATS = ("auto", "mimic-iii", "mimic-iv", "table")
SUBGROUP_COLUMNS = ("sex", "age_band", "race", "insurance", "admission_type")


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
        rows = mimic_rows(
            source,
            Path(note_root) if note_root else source,
            fmt,
            task,
            report,
            max_note_chars,
            count_elective_readmissions,
        )
        sections = AUTO_SECTIONS[task] if note_sections == "auto" else note_sections
    report.notes["note_sections"] = {"used": sections, "why": SECTIONS_WHY[sections]}

    if sections == "admission":
        kept = []
        for row in rows:
            row["text"] = extract_admission_sections(row["text"])
            if row["text"]:
                kept.append(row)
            else:
                report.bad(
                    "no_admission_sections",
                    row["_file"],
                    row["_row"],
                    f"admission {row['id']}: no admission-time section header (Chief Complaint:, History of "
                    "Present Illness:, ...) found; use note_sections='full' for notes without such headers",
                )
        rows = kept

    texts, report.notes["phi"] = apply_phi_policy(
        [r["text"] for r in rows],
        phi_policy,
        source=str(rows[0]["_file"] if rows else source),
        rows=[r["_row"] for r in rows],
    )
    for row, text in zip(rows, texts):
        row["text"] = text

    dataset, class_names = _to_dataset(rows, task, los_bins, charlson_bins)
    report.notes["label_definition"] = LABEL_DEFINITIONS[task].format(
        bins=list(charlson_bins if task == "comorbidity" else los_bins),
        elective="counted" if count_elective_readmissions else "not counted",
    )
    report.notes["label_summary"] = label_summary(dataset)
    if not len(dataset):
        raise DataError(
            source,
            None,
            f"no usable admissions for task {task!r} ({report.rows_skipped} skipped: {dict(report.skipped)})",
        )
    return dataset, class_names, report


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
    report.notes["subject_id"] = (
        "from the table"
        if "subject_id" in frame
        else "no subject_id column: each row counts as its own patient in splits"
    )
    rows, seen = [], set()
    for rec in frame.to_dict("records"):
        row_no, text, label = rec["data_row"], str(rec["text"]), str(rec["label"]).strip()
        rid = group_cell(rec.get("id", "")) if "id" in frame else str(row_no)
        if rid in seen:
            report.bad("duplicate_admission", path, row_no, f"id {rid!r} appears more than once")
            continue
        seen.add(rid)
        if has_bad_bytes(text):
            report.bad("non_utf8_note", path, row_no, "text has bytes that are not UTF-8")
        elif not text.strip():
            report.bad("empty_note", path, row_no, "text is empty")
        elif len(text) > max_note_chars:
            report.bad(
                "note_too_long", path, row_no, f"text has {len(text):,} characters (max_note_chars={max_note_chars:,})"
            )
        elif not label or (task == "los_days" and number_cell(label) is None):
            report.bad(
                "no_label",
                path,
                row_no,
                f"label {label!r} is empty" + (" or not a number" if task == "los_days" else ""),
            )
        else:
            age = number_cell(rec.get("age"))
            rows.append(
                {
                    "id": rid,
                    "subject_id": group_cell(rec.get("subject_id", "")) if "subject_id" in frame else rid,
                    "text": text,
                    "table_label": label,
                    "admit_time": str(rec.get("admit_time", "")).strip(),
                    "admit_year": int(number_cell(rec.get("admit_year")) or 0) or None,
                    "sex": group_cell(rec.get("sex")),
                    "age": age,
                    "age_band": (age_band(age, CLINICAL_AGE_BANDS, CLINICAL_AGE_EDGES) or UNKNOWN)
                    if age is not None
                    else group_cell(rec.get("age_band")),
                    **{c: group_cell(rec.get(c)) for c in ("race", "insurance", "admission_type")},
                    "died_in_hospital": None,
                    "los_days": None,
                    "charlson": None,
                    "_file": path,
                    "_row": row_no,
                }
            )
    return rows


def features(class_names: Sequence[str] | None) -> datasets.Features:
    """The columns of every `load_admissions` dataset; `class_names=None` gives a float32 (regression) label."""
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "subject_id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(class_names)) if class_names else datasets.Value("float32"),
            "admit_time": datasets.Value("string"),
            "admit_year": datasets.Value("int32"),
            "sex": datasets.Value("string"),
            "age": datasets.Value("float32"),
            "age_band": datasets.Value("string"),
            "race": datasets.Value("string"),
            "insurance": datasets.Value("string"),
            "admission_type": datasets.Value("string"),
            "died_in_hospital": datasets.Value("int8"),
            "los_days": datasets.Value("float32"),
            "charlson": datasets.Value("int32"),
        }
    )


def _to_dataset(
    rows: list[dict], task: str, los_bins: Sequence[float], charlson_bins: Sequence[int]
) -> tuple[datasets.Dataset, list[str] | None]:
    if rows and "table_label" in rows[0]:
        raw = [r["table_label"] for r in rows]
        if task == "los_days":
            class_names, labels = None, [float(v) for v in raw]
        else:
            class_names = sorted_labels(set(raw))
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
