"""Synthetic lab and chart events (and ICU stays, item dictionaries) in the exact MIMIC-III / MIMIC-IV layouts.

Drawn after the cohort, with a generator of their own (`default_rng([seed, 7])`), so every other table and note of a
seed stays byte-identical. The itemids are the real ones (`hf_medai.data.ehr_features`); MIMIC-III stays are charted
in CareVue or MetaVision, so both sets of ids appear.

How the values carry the outcome:
- The first 24 h reflect the admission's hidden `severity` (roughly: noise of their own, sd 1.0, independent of
  what the note shows) and `unseen`, the part of the mortality risk that no note shows: organ dysfunction
  (creatinine, BUN, lactate, bicarbonate, ...). The note in turn shows `goals` (code status), which no
  measurement does (`ehr_cohort.Cohort.admission`). So each modality carries risk the other lacks: on 38k
  admissions a logistic model of the hidden parts each modality shows reaches AUROC 0.82 (note), 0.81 (labs and
  vitals) and 0.88 (both), the ceiling that fusion can approach.
- After 24 h patients who will die deteriorate (rising lactate, falling blood pressure) and the others recover, so
  a feature that looked past the prediction time would be visibly too good.
Missingness and mess: about three quarters of admissions have an ICU stay (vitals every 1-4 h there; the others have
no chart events), labs are drawn 1-3 times a day, lactate only for some (sicker ones more often), ED labs before
admittime, some results "ERROR" / "UNABLE TO REPORT" without VALUENUM, a few implausible heart rates (0, 999),
MetaVision rows marked ERROR=1. Everything stops at 72 h or the end of the stay.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from hf_medai.data.synthetic.ehr_cohort import UNSEEN_SD

# fmt: off
# (feature, itemid(s)) per charting system; blood pressure: (arterial line, non-invasive)
_CAREVUE = {"heart_rate": 211, "bp": ((51, 8368, 52), (455, 8441, 456)), "resp_rate": 618, "spo2": 646,
            "temp_c": 676, "temp_f": 678}
_METAVISION = {"heart_rate": 220045, "bp": ((220050, 220051, 220052), (220179, 220180, 220181)),
               "resp_rate": 220210, "spo2": 220277, "temp_c": 223762, "temp_f": 223761}
# itemid: (label, abbreviation, category, unit) of the chart items; D_ITEMS / icu/d_items
_CHART_ITEMS = {
    211: ("Heart Rate", "", "", "BPM"), 51: ("Arterial BP [Systolic]", "", "", "mmHg"),
    455: ("NBP [Systolic]", "", "", "mmHg"), 8368: ("Arterial BP [Diastolic]", "", "", "mmHg"),
    8441: ("NBP [Diastolic]", "", "", "mmHg"), 52: ("Arterial BP Mean", "", "", "mmHg"),
    456: ("NBP Mean", "", "", "mmHg"), 618: ("Respiratory Rate", "", "", "BPM"), 646: ("SpO2", "", "", "%"),
    676: ("Temperature C", "", "", "Deg. C"), 678: ("Temperature F", "", "", "Deg. F"),
    220045: ("Heart Rate", "HR", "Routine Vital Signs", "bpm"),
    220050: ("Arterial Blood Pressure systolic", "ABPs", "Routine Vital Signs", "mmHg"),
    220051: ("Arterial Blood Pressure diastolic", "ABPd", "Routine Vital Signs", "mmHg"),
    220052: ("Arterial Blood Pressure mean", "ABPm", "Routine Vital Signs", "mmHg"),
    220179: ("Non Invasive Blood Pressure systolic", "NBPs", "Routine Vital Signs", "mmHg"),
    220180: ("Non Invasive Blood Pressure diastolic", "NBPd", "Routine Vital Signs", "mmHg"),
    220181: ("Non Invasive Blood Pressure mean", "NBPm", "Routine Vital Signs", "mmHg"),
    220210: ("Respiratory Rate", "RR", "Respiratory", "insp/min"),
    220277: ("O2 saturation pulseoxymetry", "SpO2", "Respiratory", "%"),
    223761: ("Temperature Fahrenheit", "Temperature F", "Routine Vital Signs", "°F"),
    223762: ("Temperature Celsius", "Temperature C", "Routine Vital Signs", "°C"),
}
# itemid: (label, fluid, category, LOINC, unit, normal low, normal high) of the lab items; D_LABITEMS / hosp/d_labitems
_LAB_ITEMS = {
    50912: ("Creatinine", "Blood", "Chemistry", "2160-0", "mg/dL", 0.5, 1.2),
    50813: ("Lactate", "Blood", "Blood Gas", "32693-4", "mmol/L", 0.5, 2.0),
    51301: ("White Blood Cells", "Blood", "Hematology", "804-5", "K/uL", 4.0, 11.0),
    51300: ("WBC Count", "Blood", "Hematology", "26464-8", "K/uL", 4.0, 11.0),
    51222: ("Hemoglobin", "Blood", "Hematology", "718-7", "g/dL", 12.0, 16.0),
    51265: ("Platelet Count", "Blood", "Hematology", "777-3", "K/uL", 150, 440),
    50983: ("Sodium", "Blood", "Chemistry", "2951-2", "mEq/L", 133, 145),
    50971: ("Potassium", "Blood", "Chemistry", "2823-3", "mEq/L", 3.3, 5.1),
    50882: ("Bicarbonate", "Blood", "Chemistry", "1963-8", "mEq/L", 22, 32),
    51006: ("Urea Nitrogen", "Blood", "Chemistry", "3094-0", "mg/dL", 6, 20),
    50931: ("Glucose", "Blood", "Chemistry", "2345-7", "mg/dL", 70, 100),
}
_CARE_UNITS = {"mimic-iii": ["MICU", "SICU", "CCU", "CSRU", "TSICU"],
               "mimic-iv": ["Medical Intensive Care Unit (MICU)", "Surgical Intensive Care Unit (SICU)",
                            "Coronary Care Unit (CCU)", "Cardiac Vascular Intensive Care Unit (CVICU)",
                            "Trauma SICU (TSICU)"]}
# fmt: on
_MAX_HOURS = 72.0  # measurements stop at 72 h or the end of the stay, whichever is first


def _fmt(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class _Events:
    """Collects the rows of one format; `tables()` returns them in the exact layouts."""

    def __init__(self, fmt: str, seed: int):
        self.fmt, self.iv = fmt, fmt == "mimic-iv"
        self.rng = np.random.default_rng([seed, 7])
        self.labs: list[tuple] = []
        self.charts: list[tuple] = []
        self.stays: list[tuple] = []

    def admission(self, subject_id: int, a: dict) -> None:
        rng, admit = self.rng, a["admit"]
        end_h = min((a["disch"] - admit).total_seconds() / 3600, _MAX_HOURS)
        x0 = a["severity"] + rng.normal(0, 1.0)  # acuity as the first day's monitors and labs see it, roughly
        o0 = a["unseen"] / UNSEEN_SD + rng.normal(0, 0.3)  # organ dysfunction that no note shows
        died, renal = a["died"], bool({"ckd", "esrd", "diabetes_complicated"} & a["conds"])

        def state(hours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            late = np.clip((hours - 24.0) / 24.0, 0, None)  # nothing depends on the outcome before 24 h
            drift = late * (1.6 if died else -0.4)
            return x0 + drift, o0 + drift

        if rng.random() < _sigmoid(1.0 + 0.9 * x0):
            self._icu_stay(subject_id, a, end_h, state)
        self._labs(subject_id, a, end_h, state, renal)

    def _icu_stay(self, subject_id: int, a: dict, end_h: float, state) -> None:
        rng, admit = self.rng, a["admit"]
        stay_h = (a["disch"] - admit).total_seconds() / 3600
        in_h = min(float(rng.uniform(0.3, 6)), 0.3 * stay_h)
        out_h = min(stay_h, in_h + float(rng.uniform(20, 140)))
        stay_id = int(rng.integers(30_000_000, 39_999_999) if self.iv else rng.integers(200_000, 299_999))
        carevue = not self.iv and rng.random() < 0.5
        unit = str(rng.choice(_CARE_UNITS[self.fmt]))
        intime, outtime = admit + timedelta(hours=in_h), admit + timedelta(hours=out_h)
        self.stays.append(
            (subject_id, a["hadm_id"], stay_id, "carevue" if carevue else "metavision", unit, _fmt(intime),
             _fmt(outtime), round((out_h - in_h) / 24, 4))
        )  # fmt: skip
        ids = _CAREVUE if carevue else _METAVISION
        arterial = rng.random() < _sigmoid(a["severity"])
        bp_ids = ids["bp"][0 if arterial else 1]
        hours = in_h + float(rng.uniform(0, 1)) + np.cumsum(rng.uniform(1, 4, size=80))
        hours = hours[hours <= min(out_h, end_h)]
        if not len(hours):
            return
        x, o = state(hours)
        n = len(hours)
        hr = 82 + 12 * x + 5 * o + rng.normal(0, 7, n)
        sbp = 124 - 13 * x - 7 * o + rng.normal(0, 11, n)
        dbp = 0.55 * sbp + 4 + rng.normal(0, 5, n)
        mbp = (sbp + 2 * dbp) / 3 + rng.normal(0, 2, n)
        rr = 17 + 3 * x + 1.5 * o + rng.normal(0, 2.5, n)
        spo2 = np.minimum(100, 97.5 - 1.5 * np.maximum(x, 0) - 0.8 * np.maximum(o, 0) + rng.normal(0, 1.3, n))
        temp = (
            36.9 + (0.6 if a["problem"].key in ("sepsis", "uti") else 0.3) * np.maximum(x, 0) + rng.normal(0, 0.35, n)
        )
        fahrenheit = rng.random() < 0.7
        hr = np.where(rng.random(n) < 0.005, rng.choice([0, 999], n), hr)  # monitor artefacts: implausible
        cgid = int(rng.integers(14_000, 21_000) if not self.iv else rng.integers(1, 99_999))
        for i, h in enumerate(hours):
            t = admit + timedelta(hours=float(h))
            t = t.replace(second=0, microsecond=0)
            store = t + timedelta(minutes=float(rng.uniform(1, 60)))
            rows = [(ids["heart_rate"], round(hr[i])), (bp_ids[0], round(sbp[i])), (bp_ids[1], round(dbp[i])),
                    (bp_ids[2], round(mbp[i])), (ids["resp_rate"], round(rr[i])), (ids["spo2"], round(spo2[i]))]  # fmt: skip
            if i % 2 == 0 or rng.random() < 0.3:
                f = round(float(temp[i]) * 9 / 5 + 32, 1)
                rows.append((ids["temp_f"], f) if fahrenheit else (ids["temp_c"], round(float(temp[i]), 1)))
            for itemid, value in rows:
                error = 0 if carevue else int(rng.random() < 0.003)
                self.charts.append((subject_id, a["hadm_id"], stay_id, cgid, t, store, itemid, value, carevue, error))

    def _labs(self, subject_id: int, a: dict, end_h: float, state, renal: bool) -> None:
        rng = self.rng
        times = []
        if not a["problem"].elective and rng.random() < 0.6:
            times.append(-float(rng.uniform(0.5, 4)))  # drawn in the ED, before admittime
        times.append(float(rng.uniform(0, min(3, end_h))))
        for day in range(math.ceil(end_h / 24)):
            k = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25])) - (1 if day == 0 else 0)
            times += [t for t in day * 24 + rng.uniform(0, 24, size=k) if t <= end_h]
        hours = np.sort(np.array(times))
        x, o = state(np.maximum(hours, 0))
        base_cr, base_bun = rng.normal(0, 0.2) + (0.6 if renal else 0), rng.normal(0, 0.25)
        lactate_p = _sigmoid(-1.3 + 1.0 * float(x[0]) + 0.6 * float(o[0]))  # sicker: measured more often
        for j, h in enumerate(hours):
            xe, oe = float(x[j]), float(o[j])
            values = {}
            if rng.random() < 0.95:
                values[50912] = round(
                    max(0.2, 0.9 * math.exp(0.45 * oe + 0.08 * xe + base_cr + rng.normal(0, 0.06))), 1
                )
                values[50983] = round(139 - 0.8 * oe + rng.normal(0, 3.5))
                values[50971] = round(4.2 + 0.25 * oe + rng.normal(0, 0.4), 1)
                values[50882] = round(24 - 2.8 * oe - 0.8 * xe + rng.normal(0, 2))
                values[51006] = round(16 * math.exp(0.45 * oe + base_bun + rng.normal(0, 0.1)))
                values[50931] = round(max(30.0, 125 + 12 * xe + rng.normal(0, 35)))
            if rng.random() < 0.9:
                values[51300 if rng.random() < 0.1 else 51301] = round(
                    max(0.3, 8.5 + 2.5 * xe + 0.8 * oe + rng.normal(0, 2.5)), 1
                )
                values[51222] = round(12 - 0.4 * oe + rng.normal(0, 1.4), 1)
                values[51265] = round(max(8.0, 230 - 25 * oe + rng.normal(0, 60)))
            if rng.random() < lactate_p + 0.25 * (j > 0 and 50813 in values):
                values[50813] = round(max(0.3, 1.2 * math.exp(0.4 * oe + 0.25 * max(xe, 0) + rng.normal(0, 0.2))), 1)
            t = (a["admit"] + timedelta(hours=float(h))).replace(second=0, microsecond=0)
            specimen = int(rng.integers(1, 99_999_999))
            for itemid, value in values.items():
                if rng.random() < 0.01:  # a result the lab could not give
                    value = str(rng.choice(["ERROR", "UNABLE TO REPORT"]))
                self.labs.append((subject_id, a["hadm_id"], specimen, itemid, t, value))

    def tables(self) -> dict[str, pd.DataFrame]:
        return _tables_iv(self) if self.iv else _tables_iii(self)


def _lab_frame(ev: _Events) -> pd.DataFrame:
    labs = pd.DataFrame(ev.labs, columns=["subject_id", "hadm_id", "specimen_id", "itemid", "t", "raw"])
    numeric = labs["raw"].map(lambda v: not isinstance(v, str))
    labs["value"] = labs["raw"].astype(str)
    labs["valuenum"] = labs["raw"].where(numeric, None)
    info = labs["itemid"].map(_LAB_ITEMS)
    labs["valueuom"] = np.where(numeric, info.str[4], "")
    low, high = info.str[5].astype(float), info.str[6].astype(float)
    num = pd.to_numeric(labs["valuenum"], errors="coerce")
    labs["flag"] = np.where((num < low) | (num > high), "abnormal", "")
    labs["ref_range_lower"], labs["ref_range_upper"] = low, high
    labs["charttime"] = labs["t"].map(_fmt)
    return labs


def _chart_frame(ev: _Events, uom: dict[int, str]) -> pd.DataFrame:
    cols = ["subject_id", "hadm_id", "stay_id", "cgid", "t", "store", "itemid", "valuenum", "carevue", "error"]
    charts = pd.DataFrame(ev.charts, columns=cols)
    charts["value"] = charts["valuenum"].astype(str)
    charts["valueuom"] = charts["itemid"].map(uom)
    charts["charttime"], charts["storetime"] = charts["t"].map(_fmt), charts["store"].map(_fmt)
    bad = charts["error"] == 1
    charts.loc[bad, "valuenum"] = charts.loc[bad, "valuenum"] * 10  # what a charting error looks like
    charts["value"] = charts["valuenum"].astype(str)
    return charts


def _tables_iii(ev: _Events) -> dict[str, pd.DataFrame]:
    labs = _lab_frame(ev)
    lab_out = pd.DataFrame(
        {"ROW_ID": range(1, len(labs) + 1), "SUBJECT_ID": labs["subject_id"], "HADM_ID": labs["hadm_id"],
         "ITEMID": labs["itemid"], "CHARTTIME": labs["charttime"], "VALUE": labs["value"],
         "VALUENUM": labs["valuenum"], "VALUEUOM": labs["valueuom"], "FLAG": labs["flag"]}
    )  # fmt: skip
    uom = {i: v[3] for i, v in _CHART_ITEMS.items()}
    uom.update({223761: "?F", 223762: "?C"})  # MIMIC-III MetaVision units lost their degree sign
    ch = _chart_frame(ev, uom)
    cv = ch["carevue"]
    chart_out = pd.DataFrame(
        {"ROW_ID": range(1, len(ch) + 1), "SUBJECT_ID": ch["subject_id"], "HADM_ID": ch["hadm_id"],
         "ICUSTAY_ID": ch["stay_id"], "ITEMID": ch["itemid"], "CHARTTIME": ch["charttime"],
         "STORETIME": ch["storetime"], "CGID": ch["cgid"], "VALUE": ch["value"], "VALUENUM": ch["valuenum"],
         "VALUEUOM": ch["valueuom"], "WARNING": np.where(cv, "", "0"), "ERROR": np.where(cv, "", ch["error"].astype(str)),
         "RESULTSTATUS": np.where(cv, "Manual", ""), "STOPPED": np.where(cv, "NotStopd", "")}
    )  # fmt: skip
    stays = pd.DataFrame(ev.stays, columns=["SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "DBSOURCE", "FIRST_CAREUNIT",
                                            "INTIME", "OUTTIME", "LOS"])  # fmt: skip
    stays.insert(0, "ROW_ID", range(1, len(stays) + 1))
    stays.insert(6, "LAST_CAREUNIT", stays["FIRST_CAREUNIT"])
    stays.insert(7, "FIRST_WARDID", [int(w) for w in ev.rng.integers(1, 60, len(stays))])
    stays.insert(8, "LAST_WARDID", stays["FIRST_WARDID"])
    d_lab = pd.DataFrame(
        [(i + 1, k, v[0], v[1], v[2], v[3]) for i, (k, v) in enumerate(sorted(_LAB_ITEMS.items()))],
        columns=["ROW_ID", "ITEMID", "LABEL", "FLUID", "CATEGORY", "LOINC_CODE"],
    )
    d_items = pd.DataFrame(
        [(i + 1, k, v[0], v[1], "carevue" if k < 200_000 else "metavision", "chartevents", v[2], v[3] if k >= 200_000
          else "", "Numeric" if k >= 200_000 else "", "") for i, (k, v) in enumerate(sorted(_CHART_ITEMS.items()))],
        columns=["ROW_ID", "ITEMID", "LABEL", "ABBREVIATION", "DBSOURCE", "LINKSTO", "CATEGORY", "UNITNAME",
                 "PARAM_TYPE", "CONCEPTID"],
    )  # fmt: skip
    return {"LABEVENTS": lab_out, "CHARTEVENTS": chart_out, "ICUSTAYS": stays, "D_LABITEMS": d_lab, "D_ITEMS": d_items}


def _tables_iv(ev: _Events) -> dict[str, pd.DataFrame]:
    labs = _lab_frame(ev)
    store = [_fmt(t + timedelta(minutes=int(m))) for t, m in zip(labs["t"], ev.rng.integers(20, 180, len(labs)))]
    lab_out = pd.DataFrame(
        {"labevent_id": range(1, len(labs) + 1), "subject_id": labs["subject_id"], "hadm_id": labs["hadm_id"],
         "specimen_id": labs["specimen_id"], "itemid": labs["itemid"], "order_provider_id": "",
         "charttime": labs["charttime"], "storetime": store, "value": labs["value"], "valuenum": labs["valuenum"],
         "valueuom": labs["valueuom"], "ref_range_lower": labs["ref_range_lower"],
         "ref_range_upper": labs["ref_range_upper"], "flag": labs["flag"],
         "priority": np.where(ev.rng.random(len(labs)) < 0.6, "STAT", "ROUTINE"),
         "comments": np.where(labs["valuenum"].isna(), "___", "")}
    )  # fmt: skip
    ch = _chart_frame(ev, {i: v[3] for i, v in _CHART_ITEMS.items()})
    ch = ch[ch["error"] == 0]  # MIMIC-IV has no ERROR column: such rows are not in it
    chart_out = pd.DataFrame(
        {"subject_id": ch["subject_id"], "hadm_id": ch["hadm_id"], "stay_id": ch["stay_id"],
         "caregiver_id": ch["cgid"], "charttime": ch["charttime"], "storetime": ch["storetime"],
         "itemid": ch["itemid"], "value": ch["value"], "valuenum": ch["valuenum"], "valueuom": ch["valueuom"],
         "warning": (ev.rng.random(len(ch)) < 0.01).astype(int)}
    )  # fmt: skip
    stays = pd.DataFrame(ev.stays, columns=["subject_id", "hadm_id", "stay_id", "_db", "first_careunit", "intime",
                                            "outtime", "los"]).drop(columns="_db")  # fmt: skip
    stays.insert(4, "last_careunit", stays["first_careunit"])
    d_lab = pd.DataFrame(
        [(k, v[0], v[1], v[2]) for k, v in sorted(_LAB_ITEMS.items())],
        columns=["itemid", "label", "fluid", "category"],
    )
    d_items = pd.DataFrame(
        [(k, v[0], v[1], "chartevents", v[2], v[3], "Numeric", "", "") for k, v in sorted(_CHART_ITEMS.items())
         if k >= 200_000],
        columns=["itemid", "label", "abbreviation", "linksto", "category", "unitname", "param_type", "lownormalvalue",
                 "highnormalvalue"],
    )  # fmt: skip
    return {"hosp/labevents": lab_out, "icu/chartevents": chart_out, "icu/icustays": stays,
            "hosp/d_labitems": d_lab, "icu/d_items": d_items}  # fmt: skip


def measurement_tables(patients, fmt: str, seed: int) -> dict[str, pd.DataFrame]:
    """The event tables of a drawn cohort (hadm_ids already unique), keyed like `write_mimic`'s tables."""
    ev = _Events(fmt, seed)
    for p in patients:
        for a in p.admissions:
            ev.admission(p.subject_id, a)
    return ev.tables()
