"""Synthetic EHR tables and discharge summaries in the exact MIMIC-III or MIMIC-IV layouts.

The offline sample data of the clinical-outcome recipes, read by the same loader as the real thing
(`hf_medai.data.clinical_notes.load_admissions`). Nothing here is real patient data.

How outcomes are tied to what the notes say, with noise, so every task is learnable but not trivial:
- Each patient has an age, chronic conditions (real ICD-9/ICD-10 codes that map to Charlson conditions) and a
  hidden frailty; each admission has a problem (sepsis, heart-failure exacerbation, elective surgery, ...)
  and a hidden severity.
- The admission-time sections show these through noisy proxies: vital signs, lactate, the words of the exam
  ("lethargic", "hypotensive", "intubated"), the past medical history (each condition listed with
  probability 0.85), the social history (frailty).
- Mortality, length of stay and 30-day readmission are drawn from age, comorbidity, severity and frailty;
  mortality also from goals of care (shown only by the code status in the history of present illness) and organ
  dysfunction (shown only by the lab and chart events, `ehr_events`), so no single source sees all of it. Only the post-admission sections state the outcome: "expired" in the
  hospital course and disposition, the length of the stay, the discharge diagnoses. A model that reads them
  is perfect; one restricted to admission sections is not.
- Charlson labels come from the coded diagnoses: chronic conditions are coded with probability 0.9, and an
  acute MI or stroke during the stay adds its own condition.
MIMIC-III notes carry `[** ... **]` placeholders where PHI was removed; MIMIC-IV notes carry `___`, as the
real MIMIC-IV-Note does. Dates are shifted into 2100-2200 as in MIMIC; MIMIC-III ages over 89 have a date of
birth 300 years before the first admission, MIMIC-IV's have anchor_age 91.

Here: the tables in either layout. The cohort (conditions, problems, patients, outcomes) is in `ehr_cohort`, the
discharge summaries in `ehr_notes`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from hf_medai.data.synthetic.ehr_cohort import BY_KEY, Cohort, Patient
from hf_medai.data.synthetic.ehr_events import measurement_tables
from hf_medai.data.synthetic.ehr_notes import discharge_summary
from hf_medai.io import atomic_path, write_text

FORMATS = ("mimic-iii", "mimic-iv")


def write_mimic(
    out_dir: str | Path, format: str = "mimic-iii", n_patients: int = 600, seed: int = 0, gzip: bool = False
) -> Path:
    """Write synthetic MIMIC-III or MIMIC-IV tables (and discharge summaries) under `out_dir`; returns it.

    MIMIC-III: ADMISSIONS, PATIENTS, NOTEEVENTS, DIAGNOSES_ICD, LABEVENTS, CHARTEVENTS, ICUSTAYS, D_LABITEMS and
    D_ITEMS in `out_dir`. MIMIC-IV: hosp/admissions, hosp/patients, hosp/diagnoses_icd, hosp/labevents,
    hosp/d_labitems, icu/chartevents, icu/icustays, icu/d_items and note/discharge. `.csv`, or `.csv.gz` with `gzip`.
    The lab and chart events are described in `ehr_events`.
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: choose one of {FORMATS}")
    if n_patients < 1:
        raise ValueError("n_patients must be at least 1")
    writer = Cohort(format, n_patients, seed)
    patients = writer.patients()
    _unique_hadm_ids(patients, writer.rng, format == "mimic-iv")
    tables = _tables_iv(patients, writer) if format == "mimic-iv" else _tables_iii(patients, writer)
    tables.update(measurement_tables(patients, format, seed))  # own generator: the tables above stay the same
    out = Path(out_dir)
    suffix = ".csv.gz" if gzip else ".csv"
    for stem, frame in tables.items():
        with atomic_path(out / f"{stem}{suffix}") as tmp:
            frame.to_csv(tmp, index=False, compression="gzip" if gzip else None)
    write_text(
        out / "SYNTHETIC_DATA.txt",
        f"Synthetic {format.upper()} sample written by hf_medai "
        f"(n_patients={n_patients}, seed={seed}). Not real patient data.\n",
    )
    return out


def _unique_hadm_ids(patients: list[Patient], rng: np.random.Generator, iv: bool) -> None:
    seen: set[int] = set()
    for p in patients:
        for a in p.admissions:
            while a["hadm_id"] in seen:
                a["hadm_id"] = int(rng.integers(20_000_000, 29_999_999) if iv else rng.integers(100_000, 199_999))
            seen.add(a["hadm_id"])


def _fmt(t: datetime | None) -> str:
    return "" if t is None else t.strftime("%Y-%m-%d %H:%M:%S")


def _codes(w: Cohort, adm: dict, version: int) -> list[str]:
    """Diagnosis codes of one stay: the problem first, then coded chronic conditions (each with p=0.9)."""
    problem = adm["problem"]
    codes = list(problem.icd10 if version == 10 else problem.icd9)
    for key in sorted(adm["conds"]):
        if w.chance(0.9):
            c = BY_KEY[key]
            codes += list(c.icd10 if version == 10 else c.icd9)
    if adm["died"] and w.chance(0.5):
        codes.append("R570" if version == 10 else "78551")  # cardiogenic shock, a common terminal code
    seen: set[str] = set()
    return [c for c in codes if not (c in seen or seen.add(c))]


def _tables_iii(patients: list[Patient], w: Cohort) -> dict[str, pd.DataFrame]:
    pats, adms, notes, dxs = [], [], [], []
    for p in patients:
        first = p.first_admit
        if p.age > 89:  # MIMIC-III: DOB 300 years before the first admission
            dob = first.replace(year=first.year - 300, month=1, day=1, hour=0, minute=0)
        else:
            dob = (first - timedelta(days=p.age * 365.25)).replace(hour=0, minute=0, second=0, microsecond=0)
        dod = p.dod.replace(hour=0, minute=0, second=0, microsecond=0) if p.dod else None
        died_in_hosp = any(a["died"] for a in p.admissions)
        pats.append(
            {
                "ROW_ID": len(pats) + 1,
                "SUBJECT_ID": p.subject_id,
                "GENDER": p.sex,
                "DOB": _fmt(dob),
                "DOD": _fmt(dod),
                "DOD_HOSP": _fmt(dod) if died_in_hosp else "",
                "DOD_SSN": _fmt(dod) if dod and w.chance(0.7) else "",
                "EXPIRE_FLAG": int(dod is not None),
            }
        )
        for a in p.admissions:
            pr, elective = a["problem"], a["problem"].elective
            adm_type = "ELECTIVE" if elective else w.pick(["EMERGENCY", "URGENT"], [0.88, 0.12])
            insurance = (
                "Medicare"
                if a["age"] >= 65 and w.chance(0.85)
                else w.pick(["Private", "Medicaid", "Government", "Self Pay"], [0.6, 0.28, 0.08, 0.04])
            )
            ed = not elective and adm_type == "EMERGENCY"
            adms.append(
                {
                    "ROW_ID": len(adms) + 1,
                    "SUBJECT_ID": p.subject_id,
                    "HADM_ID": a["hadm_id"],
                    "ADMITTIME": _fmt(a["admit"]),
                    "DISCHTIME": _fmt(a["disch"]),
                    "DEATHTIME": _fmt(a["disch"]) if a["died"] else "",
                    "ADMISSION_TYPE": adm_type,
                    "ADMISSION_LOCATION": (
                        "PHYS REFERRAL/NORMAL DELI"
                        if elective
                        else "EMERGENCY ROOM ADMIT"
                        if ed
                        else "TRANSFER FROM HOSP/EXTRAM"
                    ),
                    "DISCHARGE_LOCATION": {
                        "DIED": "DEAD/EXPIRED",
                        "HOME": "HOME",
                        "HOME_SERVICES": "HOME HEALTH CARE",
                        "SNF": "SNF",
                        "REHAB": "REHAB/DISTINCT PART HOSP",
                        "AMA": "LEFT AGAINST MEDICAL ADVI",
                    }[a["disposition"]],
                    "INSURANCE": insurance,
                    "LANGUAGE": p.language,
                    "RELIGION": p.religion,
                    "MARITAL_STATUS": p.marital,
                    "ETHNICITY": p.race,
                    "EDREGTIME": _fmt(a["admit"] - timedelta(hours=4)) if ed else "",
                    "EDOUTTIME": _fmt(a["admit"] + timedelta(minutes=20)) if ed else "",
                    "DIAGNOSIS": pr.diagnosis.upper().split(",")[0],
                    "HOSPITAL_EXPIRE_FLAG": int(a["died"]),
                    "HAS_CHARTEVENTS_DATA": 1,
                }
            )
            for seq, code in enumerate(_codes(w, a, 9), start=1):
                dxs.append(
                    {
                        "ROW_ID": len(dxs) + 1,
                        "SUBJECT_ID": p.subject_id,
                        "HADM_ID": a["hadm_id"],
                        "SEQ_NUM": seq,
                        "ICD9_CODE": code,
                    }
                )
            base = {"SUBJECT_ID": p.subject_id, "HADM_ID": a["hadm_id"], "CGID": "", "ISERROR": ""}
            notes.append(
                {
                    **base,
                    "CHARTDATE": a["disch"].strftime("%Y-%m-%d"),
                    "CHARTTIME": "",
                    "STORETIME": "",
                    "CATEGORY": "Discharge summary",
                    "DESCRIPTION": "Report",
                    "TEXT": discharge_summary(w, p, a, dob),
                }
            )
            if w.chance(0.3):  # other note types the loader must skip
                t = a["admit"] + timedelta(hours=3)
                notes.append(
                    {
                        **base,
                        "CHARTDATE": t.strftime("%Y-%m-%d"),
                        "CHARTTIME": _fmt(t),
                        "STORETIME": "",
                        "CATEGORY": "Radiology",
                        "DESCRIPTION": "CHEST (PORTABLE AP)",
                        "CGID": "",
                        "TEXT": f"[**{t:%Y-%m-%d}**] 3:12 AM\n CHEST (PORTABLE AP)\n FINAL REPORT\n"
                        " IMPRESSION: No acute cardiopulmonary process.\n",
                    }
                )
            if w.chance(0.05):  # addenda come after discharge and may know later events: never used
                notes.append(
                    {
                        **base,
                        "CHARTDATE": (a["disch"] + timedelta(days=3)).strftime("%Y-%m-%d"),
                        "CHARTTIME": "",
                        "STORETIME": "",
                        "CATEGORY": "Discharge summary",
                        "DESCRIPTION": "Addendum",
                        "TEXT": "Addendum:\nPatient was seen in clinic after discharge; expired medications "
                        "were renewed.\n",
                    }
                )
    for i, n in enumerate(notes, start=1):
        n["ROW_ID"] = i
    note_cols = (
        "ROW_ID SUBJECT_ID HADM_ID CHARTDATE CHARTTIME STORETIME CATEGORY DESCRIPTION CGID ISERROR TEXT".split()
    )
    return {
        "PATIENTS": pd.DataFrame(pats),
        "ADMISSIONS": pd.DataFrame(adms),
        "NOTEEVENTS": pd.DataFrame(notes)[note_cols],
        "DIAGNOSES_ICD": pd.DataFrame(dxs),
    }


def _tables_iv(patients: list[Patient], w: Cohort) -> dict[str, pd.DataFrame]:
    pats, adms, notes, dxs = [], [], [], []
    providers = [f"P{int(x):05X}" for x in w.rng.integers(0x10000, 0xFFFFF, size=60)]
    for p in patients:
        anchor_age = int(p.age - (p.first_admit.year - p.anchor_year))
        pats.append(
            {
                "subject_id": p.subject_id,
                "gender": p.sex,
                "anchor_age": 91 if anchor_age > 89 else anchor_age,
                "anchor_year": p.anchor_year,
                "anchor_year_group": p.anchor_year_group,
                "dod": p.dod.strftime("%Y-%m-%d") if p.dod else "",
            }
        )
        for seq, a in enumerate(p.admissions):
            pr, elective = a["problem"], a["problem"].elective
            adm_type = (
                w.pick(["ELECTIVE", "SURGICAL SAME DAY ADMISSION"], [0.4, 0.6])
                if elective
                else w.pick(
                    ["EW EMER.", "URGENT", "OBSERVATION ADMIT", "DIRECT EMER.", "EU OBSERVATION"],
                    [0.6, 0.15, 0.12, 0.06, 0.07],
                )
            )
            insurance = (
                "Medicare"
                if a["age"] >= 65 and w.chance(0.85)
                else w.pick(["Private", "Medicaid", "Other"], [0.55, 0.3, 0.15])
            )
            ed = adm_type in ("EW EMER.", "EU OBSERVATION", "OBSERVATION ADMIT")
            adms.append(
                {
                    "subject_id": p.subject_id,
                    "hadm_id": a["hadm_id"],
                    "admittime": _fmt(a["admit"]),
                    "dischtime": _fmt(a["disch"]),
                    "deathtime": _fmt(a["disch"]) if a["died"] else "",
                    "admission_type": adm_type,
                    "admit_provider_id": w.pick(providers),
                    "admission_location": (
                        "PHYSICIAN REFERRAL" if elective else "EMERGENCY ROOM" if ed else "TRANSFER FROM HOSPITAL"
                    ),
                    "discharge_location": {
                        "DIED": "DIED",
                        "HOME": "HOME",
                        "HOME_SERVICES": "HOME HEALTH CARE",
                        "SNF": "SKILLED NURSING FACILITY",
                        "REHAB": "REHAB",
                        "AMA": "AGAINST ADVICE",
                    }[a["disposition"]],
                    "insurance": insurance,
                    "language": p.language,
                    "marital_status": p.marital,
                    "race": p.race,
                    "edregtime": _fmt(a["admit"] - timedelta(hours=5)) if ed else "",
                    "edouttime": _fmt(a["admit"] + timedelta(minutes=15)) if ed else "",
                    "hospital_expire_flag": int(a["died"]),
                }
            )
            real_month = (a["admit"].year + p.real_offset, a["admit"].month)
            version = 10 if real_month >= (2015, 10) else 9  # the US switched to ICD-10-CM in October 2015
            for s, code in enumerate(_codes(w, a, version), start=1):
                dxs.append(
                    {
                        "subject_id": p.subject_id,
                        "hadm_id": a["hadm_id"],
                        "seq_num": s,
                        "icd_code": code,
                        "icd_version": version,
                    }
                )
            note_seq = 20 + 3 * seq
            notes.append(
                {
                    "note_id": f"{p.subject_id}-DS-{note_seq}",
                    "subject_id": p.subject_id,
                    "hadm_id": a["hadm_id"],
                    "note_type": "DS",
                    "note_seq": note_seq,
                    "charttime": a["disch"].strftime("%Y-%m-%d 00:00:00"),
                    "storetime": _fmt(a["disch"] + timedelta(days=float(w.rng.uniform(0.5, 3)))),
                    "text": discharge_summary(w, p, a, None),
                }
            )
    return {
        "hosp/patients": pd.DataFrame(pats),
        "hosp/admissions": pd.DataFrame(adms),
        "hosp/diagnoses_icd": pd.DataFrame(dxs),
        "note/discharge": pd.DataFrame(notes),
    }
