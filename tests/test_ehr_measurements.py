"""Structured EHR features (hf_medai.data.ehr_features / ehr_measurements): the itemid table, exact aggregation, the
prediction-time window (no look-ahead), bad rows, missing tables; on hand-written tables in the exact MIMIC-III and
MIMIC-IV layouts (csv and csv.gz) and on the synthetic writer's tables."""

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hf_medai.data.clinical_notes import load_admissions
from hf_medai.data.ehr_features import FEATURES, ITEM_TO_FEATURE, feature_columns, features_from_rows, itemids
from hf_medai.data.ehr_measurements import load_measurements
from hf_medai.data.report import DataError, DataReport
from hf_medai.data.synthetic.ehr import write_mimic

LAB_COLUMNS = {
    "mimic-iii": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ITEMID", "CHARTTIME", "VALUE", "VALUENUM", "VALUEUOM", "FLAG"],
    "mimic-iv": [
        "labevent_id",
        "subject_id",
        "hadm_id",
        "specimen_id",
        "itemid",
        "order_provider_id",
        "charttime",
        "storetime",
        "value",
        "valuenum",
        "valueuom",
        "ref_range_lower",
        "ref_range_upper",
        "flag",
        "priority",
        "comments",
    ],
}
CHART_COLUMNS = {
    "mimic-iii": [
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "ITEMID",
        "CHARTTIME",
        "STORETIME",
        "CGID",
        "VALUE",
        "VALUENUM",
        "VALUEUOM",
        "WARNING",
        "ERROR",
        "RESULTSTATUS",
        "STOPPED",
    ],
    "mimic-iv": [
        "subject_id",
        "hadm_id",
        "stay_id",
        "caregiver_id",
        "charttime",
        "storetime",
        "itemid",
        "value",
        "valuenum",
        "valueuom",
        "warning",
    ],
}
STEMS = {"mimic-iii": ("LABEVENTS", "CHARTEVENTS"), "mimic-iv": ("hosp/labevents", "icu/chartevents")}
ADMIT = pd.Timestamp("2150-03-01 10:00:00")


def write_events(root: Path, fmt: str, labs: list[tuple], charts: list[tuple], gz: bool = False) -> Path:
    """Tables in the exact layout from rows (hadm_id, itemid, hours after ADMIT or a time string, value[, valuenum])."""
    for stem, cols, rows in zip(STEMS[fmt], (LAB_COLUMNS[fmt], CHART_COLUMNS[fmt]), (labs, charts)):
        records = []
        for i, (hadm, item, when, value, *num) in enumerate(rows):
            t = when if isinstance(when, str) else str(ADMIT + pd.Timedelta(hours=when))
            rec = dict.fromkeys(cols, "")
            upper = fmt == "mimic-iii"
            rec.update({k.upper() if upper else k: v for k, v in
                        {"subject_id": 7, "hadm_id": hadm, "itemid": item, "charttime": t, "value": value,
                         "valuenum": num[0] if num else value}.items()})  # fmt: skip
            rec[cols[0]] = i + 1
            records.append(rec)
        path = root / f"{stem}.csv{'.gz' if gz else ''}"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(records, columns=cols).to_csv(path, index=False)
    return root


def adm(*ids, at=ADMIT):
    return pd.DataFrame({"hadm_id": list(ids), "admit_time": [str(at)] * len(ids)})


# --- The feature table ------------------------------------------------------------------------------------------


def test_itemids_carevue_metavision_and_mimic_iv():
    assert ITEM_TO_FEATURE[211] == ITEM_TO_FEATURE[220045] == "heart_rate"
    assert {ITEM_TO_FEATURE[i] for i in (51, 455, 220050, 220179)} == {"sbp"}
    assert {ITEM_TO_FEATURE[i] for i in (8368, 8441, 220051, 220180)} == {"dbp"}
    assert {ITEM_TO_FEATURE[i] for i in (52, 456, 220052, 220181)} == {"mbp"}
    assert {ITEM_TO_FEATURE[i] for i in (676, 678, 223762, 223761)} == {"temperature"}
    assert ITEM_TO_FEATURE[618] == ITEM_TO_FEATURE[220210] == "resp_rate"
    assert ITEM_TO_FEATURE[646] == ITEM_TO_FEATURE[220277] == "spo2"
    labs = {50912: "creatinine", 50813: "lactate", 51301: "wbc", 51300: "wbc", 51222: "hemoglobin",
            51265: "platelets", 50983: "sodium", 50971: "potassium", 50882: "bicarbonate", 51006: "bun",
            50931: "glucose"}  # fmt: skip
    for fmt in ("mimic-iii", "mimic-iv"):
        assert itemids(fmt, "labevents") == labs
    assert 211 not in itemids("mimic-iv", "chartevents") and 211 in itemids("mimic-iii", "chartevents")
    assert len(FEATURES) == 17 and len(feature_columns()) == 17 * 5


@pytest.mark.parametrize(
    "fmt,gz", [("mimic-iii", False), ("mimic-iii", True), ("mimic-iv", False), ("mimic-iv", True)]
)
def test_aggregation_exact_on_a_tiny_table(tmp_path, fmt, gz):
    hr, temp_f, temp_c = (211, 678, 676) if fmt == "mimic-iii" else (220045, 223761, 223762)
    charts = [("101", hr, 1, 80), ("101", hr, 3, 90), ("101", hr, 2, 100), ("101", temp_f, 1, 98.6),
              ("101", temp_c, 2, 37.5), ("102", hr, 5, 70)]  # fmt: skip
    labs = [("101", 50912, 4, 1.2), ("101", 50912, 20, 2.0), ("101", 51300, 4, 10.0), ("101", 51301, 5, 12.0)]
    root = write_events(tmp_path, fmt, labs, charts, gz)
    x = load_measurements(root, fmt, adm("101", "102", "103"))
    assert list(x.index) == ["101", "102", "103"] and list(x.columns) == feature_columns()
    r = x.loc["101"]
    assert (r.heart_rate_last, r.heart_rate_min, r.heart_rate_max, r.heart_rate_mean, r.heart_rate_count) == (
        90, 80, 100, 90, 3)  # fmt: skip
    assert r.temperature_min == pytest.approx(37.0) and r.temperature_last == 37.5  # 98.6 °F -> 37.0 °C
    assert (r.creatinine_last, r.creatinine_mean, r.wbc_count, r.wbc_last) == (2.0, 1.6, 2, 12.0)
    assert x.loc["102", "heart_rate_last"] == 70 and x.loc["102", "creatinine_count"] == 0
    assert (
        x.loc["103"].filter(like="_count").sum() == 0
        and x.loc["103"].drop(x.filter(like="_count").columns).isna().all()
    )
    # The pure function takes the same path: itemids or feature names, °F converted.
    rows = [{"item": i, "charttime": ADMIT + pd.Timedelta(hours=h), "value": v} for _, i, h, v in charts[:5] + labs]
    pure = features_from_rows(rows, ADMIT)
    assert pure == pytest.approx(r.to_dict(), nan_ok=True)
    assert features_from_rows([{"item": "lactate", "charttime": ADMIT, "value": 3}], ADMIT)["lactate_last"] == 3


# --- No look-ahead ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mimic-iii", "mimic-iv"])
def test_nothing_after_the_prediction_time_or_before_admission_enters(tmp_path, fmt):
    hr = 211 if fmt == "mimic-iii" else 220045
    base_c, base_l = [("1", hr, 2, 80), ("1", hr, 10, 90)], [("1", 50813, 3, 1.5)]
    ref = load_measurements(write_events(tmp_path / "a", fmt, base_l, base_c), fmt, adm("1"))
    extreme_c = [("1", hr, 24 + 1 / 60, 250), ("1", hr, -1, 250), ("1", hr, 200, 250)]
    extreme_l = [("1", 50813, 24 + 1 / 60, 30), ("1", 50813, -2, 30)]
    late = load_measurements(write_events(tmp_path / "b", fmt, base_l + extreme_l, base_c + extreme_c), fmt, adm("1"))
    pd.testing.assert_frame_equal(ref, late)
    inside = [("1", hr, 23 + 59 / 60, 250)]
    x = load_measurements(
        write_events(tmp_path / "c", fmt, base_l + [("1", 50813, 23.98, 30)], base_c + inside), fmt, adm("1")
    )
    assert x.loc["1", "heart_rate_max"] == 250 and x.loc["1", "lactate_last"] == 30
    # The window is configurable: 12 h leaves the 23:59 row out, 48 h takes the 24:01 one.
    assert load_measurements(tmp_path / "c", fmt, adm("1"), window_hours=12).loc["1", "heart_rate_max"] == 90
    assert load_measurements(tmp_path / "b", fmt, adm("1"), window_hours=48).loc["1", "heart_rate_max"] == 250


# --- Bad input --------------------------------------------------------------------------------------------------


def test_bad_rows_name_file_and_row_or_are_counted(tmp_path):
    charts = [("1", 220045, 1, 80), ("1", 220045, "not a time", 90), ("1", 220045, 2, 0), ("1", 220045, 3, 999)]
    labs = [("1", 50912, 1, "ERROR", ""), ("1", 50912, 2, "1.0", "abc"), ("1", 50912, 3, "UNABLE TO REPORT", "")]
    root = write_events(tmp_path, "mimic-iii", labs, charts)
    with pytest.raises(DataError, match=r"LABEVENTS\.csv, row 2: admission 1, itemid 50912: valuenum 'abc'"):
        load_measurements(root, "mimic-iii", adm("1"))
    write_events(root, "mimic-iii", [labs[0], labs[2]], charts)
    with pytest.raises(DataError, match=r"CHARTEVENTS\.csv, row 2: .*unreadable charttime 'not a time'"):
        load_measurements(root, "mimic-iii", adm("1"))
    write_events(root, "mimic-iii", labs, charts)
    report = DataReport(skip_bad_rows=True)
    x = load_measurements(root, "mimic-iii", adm("1"), report=report)
    assert report.skipped == {"bad_time": 1, "bad_value": 1}
    notes = report.notes["measurements"]
    assert notes["labevents"]["no_result"] == 2  # ERROR / UNABLE TO REPORT: no result, not a bad row
    assert notes["chartevents"]["implausible_dropped"] == {"heart_rate": 2}  # HR 0 and 999
    assert (x.loc["1", "heart_rate_count"], x.loc["1", "creatinine_count"]) == (1, 0)


def test_metavision_error_rows_are_dropped(tmp_path):
    root = write_events(tmp_path, "mimic-iii", [], [("1", 220045, 1, 80), ("1", 220045, 2, 800 / 10)])
    frame = pd.read_csv(root / "CHARTEVENTS.csv", dtype=str, keep_default_na=False)
    frame.loc[1, ["VALUE", "VALUENUM", "ERROR"]] = ["120", "120", "1"]
    frame.to_csv(root / "CHARTEVENTS.csv", index=False)
    report = DataReport()
    assert load_measurements(root, "mimic-iii", adm("1"), report=report).loc["1", "heart_rate_max"] == 80
    assert report.notes["measurements"]["chartevents"]["marked_error_dropped"] == 1


@pytest.mark.parametrize("fmt", ["mimic-iii", "mimic-iv"])
def test_missing_table_names_the_expected_paths(tmp_path, fmt):
    root = write_events(tmp_path, fmt, [], [])
    _, chart = STEMS[fmt]
    (root / f"{chart}.csv").unlink()
    with pytest.raises(DataError, match=rf"missing table: neither {chart}\.csv nor {chart}\.csv\.gz is in {root}"):
        load_measurements(root, fmt, adm("1"))


# --- The synthetic tables ---------------------------------------------------------------------------------------

# sha256[:16] of the cohort's tables for n_patients=60, seed=5: the lab and chart events (a generator of their own)
# must leave them as they are.
UNCHANGED = {  # the cohort's tables and notes; change these only with the cohort (v3: mortality in three parts)
    "mimic-iii": {"ADMISSIONS": "8980385f8c1d736e", "DIAGNOSES_ICD": "41bc5ee92c00988b",
                  "NOTEEVENTS": "a2cb20cdfddc97a2", "PATIENTS": "d8214b8c81815da1"},
    "mimic-iv": {"hosp/admissions": "631ea0dff6d839ff", "hosp/diagnoses_icd": "1c3181d7c3b3f3a7",
                 "hosp/patients": "21cce34e272b4a28", "note/discharge": "e1a537b331bc3508"},
}  # fmt: skip


@pytest.mark.parametrize("fmt", ["mimic-iii", "mimic-iv"])
def test_synthetic_notes_and_tables_unchanged_and_event_layouts_exact(tmp_path, fmt):
    root = write_mimic(tmp_path, fmt, n_patients=60, seed=5)
    for stem, digest in UNCHANGED[fmt].items():
        assert hashlib.sha256((root / f"{stem}.csv").read_bytes()).hexdigest()[:16] == digest, stem
    for stem, cols in zip(STEMS[fmt], (LAB_COLUMNS[fmt], CHART_COLUMNS[fmt])):
        assert list(pd.read_csv(root / f"{stem}.csv", nrows=0).columns) == cols
    icu = "ICUSTAYS" if fmt == "mimic-iii" else "icu/icustays"
    assert len(pd.read_csv(root / f"{icu}.csv")) > 0
    charted = set(pd.read_csv(root / f"{STEMS[fmt][1]}.csv")[CHART_COLUMNS[fmt][4 if fmt == "mimic-iii" else 6]])
    if fmt == "mimic-iii":  # CareVue and MetaVision both charted
        assert {211, 220045} <= charted and {678, 223761} & charted
    else:
        assert charted <= set(itemids("mimic-iv", "chartevents"))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = write_mimic(tmp_path_factory.mktemp("ehr"), "mimic-iv", n_patients=400, seed=11, gzip=True)
    ds, _, _ = load_admissions(root, task="mortality")
    return root, ds


def test_synthetic_features_ignore_any_change_after_the_prediction_time(synthetic, tmp_path):
    root, ds = synthetic
    ref = load_measurements(root, "mimic-iv", ds)
    admit = dict(zip(ds["id"], pd.to_datetime(ds["admit_time"])))
    for stem in STEMS["mimic-iv"]:  # copy both tables with every row after admit + 24 h pushed far off
        frame = pd.read_csv(root / f"{stem}.csv.gz", dtype=str, keep_default_na=False)
        t = pd.to_datetime(frame["charttime"])
        start = frame["hadm_id"].map(admit)
        late = (t > start + pd.Timedelta(hours=24)) & (frame["valuenum"] != "")
        assert late.sum() > 100
        frame.loc[late, "valuenum"] = (frame.loc[late, "valuenum"].astype(float) * 1.5 + 1).astype(str)
        frame.loc[late, "value"] = frame.loc[late, "valuenum"]
        (tmp_path / stem).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(tmp_path / f"{stem}.csv", index=False)
    pd.testing.assert_frame_equal(ref, load_measurements(tmp_path, "mimic-iv", ds))


def _note_numbers(text: str) -> list[float]:
    """What the note says at admission: ED vitals and lactate (NaN when the note has none, e.g. elective)."""
    m = re.search(r"T ([\d.]+) HR (\d+) BP (\d+)/(\d+) RR (\d+) O2 sat (\d+)%.*?Lactate was (\d+(?:\.\d+)?)", text)
    return [float(v) for v in m.groups()] if m else [np.nan] * 7


def _code_status(text: str) -> float:
    """The code status in the history of present illness: 0 full code, 1 DNR okay to intubate, 2 DNR/DNI."""
    return 2.0 if "DNR/DNI" in text else 1.0 if "DNR, okay to intubate" in text else 0.0 if "full code" in text else -1


def test_synthetic_24h_features_predict_mortality_and_add_to_the_note(synthetic):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    root, ds = synthetic
    report = DataReport()
    x = load_measurements(root, "mimic-iv", ds, report=report)
    y = np.array(ds["label"])

    def auroc(features):
        model = HistGradientBoostingClassifier(max_iter=60, learning_rate=0.08, max_depth=3, random_state=0)
        cv = StratifiedKFold(5, shuffle=True, random_state=0)
        return cross_val_score(model, features, y, cv=cv, scoring="roc_auc").mean()

    note = np.array([_note_numbers(t) + [a, _code_status(t)] for t, a in zip(ds["text"], ds["age"])])
    assert set(note[:, -1]) == {0.0, 1.0, 2.0}  # every note states one
    death_rate = [y[note[:, -1] == level].mean() for level in (0, 1, 2)]
    assert death_rate[0] < death_rate[1] < death_rate[2]  # goals of care: in the note, not in any measurement
    structured, note_only = auroc(x.to_numpy()), auroc(note)
    both = auroc(np.hstack([note, x.to_numpy()]))
    print(f"AUROC 24h features {structured:.3f}, note numbers + age + code status {note_only:.3f}, both {both:.3f}")
    # Measured (400 patients, seed 11): 24 h features 0.816, note 0.708, both 0.866.
    assert structured > 0.75 and note_only > 0.65
    assert both > max(structured, note_only) + 0.03  # each source carries risk the other lacks
    # Missingness: admissions without an ICU stay have no chart events; lactate is not drawn for everyone.
    assert 0.15 < (x["heart_rate_count"] == 0).mean() < 0.4
    assert 0.3 < (x["lactate_count"] == 0).mean() < 0.8
    assert report.notes["measurements"]["labevents"]["before_admission"] > 0
    assert report.notes["measurements"]["labevents"]["no_result"] > 0
