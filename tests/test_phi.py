"""PHI guard: each Safe Harbor class is found (recall on a planted set), MIMIC placeholders, dataset ids and clinical
text are not, redaction removes whole identifiers, and the report holds counts only."""

import json
import re
import warnings
from collections import Counter
from pathlib import Path

import pytest

from hf_medai.data.phi import PHI_CLASSES, find_phi, redact_phi, scan_phi
from hf_medai.data.phi_policy import apply_phi_policy, phi_report
from hf_medai.data.report import DataError

DATA = Path(__file__).parent / "data"
PLANTED = [json.loads(line) for line in (DATA / "phi_planted.jsonl").read_text().splitlines() if line.strip()]
CLEAN_SENTENCES = [
    line for line in (DATA / "phi_clean.txt").read_text().splitlines() if line.strip() and not line.startswith("#")
]

FOUND = {
    "date": ["seen on 3/14/2021.", "on 03-14-21 at noon", "born 2021-03-14", "March 14, 2021", "14 Mar 2021"],
    "phone": ["call (617) 555-1234", "617-555-1234", "617.555.1234", "+1 617 555 1234", "1-617-555-1234"],
    "email": ["mail jane.doe@example.org today"],
    "ssn": ["SSN 123-45-6789"],
    "mrn": ["MRN: 1234567", "Medical Record Number 00123456"],
    "account": ["Acct# 98765"],
    "other_id": ["id 12345678 on file"],
    "url": ["see https://example.org/path?q=1", "www.example.com."],
    "name": ["seen by Dr. Smith", "Mrs Jones-Smith called", "Prof. Xavier"],
}
CLEAN = [
    "BP 120/80, HR 88, SpO2 95% on 2L, T 38.4",
    "SOB 2/2 CHF exacerbation, 1-2 days of cough, dose 1/2 tab",
    "WBC-12.1 Hgb-9.8 Plt-230 Creat-1.8 INR 1.2 at 10:30",
    "ICD 428.0, EF 25-30%, 3-4 bowel movements daily, version 1.2.3",
    "Dr. [**Last Name (STitle) 1234**] saw Mr. [**Known lastname 99**] on [**2150-3-4**], "
    "tel [**Telephone/Fax (1) 123**]",
    "Name:  ___   Unit No:   ___   Admission Date:  ___   Dear Ms. ___,",
    "Dr. and Mr. are titles; drs, Man 12, 2020 are not dates",
]


@pytest.mark.parametrize("kind,text", [(k, t) for k, texts in FOUND.items() for t in texts])
def test_each_pattern_is_found(kind, text):
    assert scan_phi(text) == {kind: 1}


@pytest.mark.parametrize("text", CLEAN)
def test_placeholders_and_clinical_numbers_are_not_phi(text):
    assert scan_phi(text) == {}


@pytest.mark.parametrize(
    "text",
    [
        "Passed: **tuned 0/13**, base 0/13.",
        "Pathology: 3/13 lymph nodes positive.",
        "2/12 cores positive for carcinoma",
        "12/13 of the probes",
    ],
)
def test_counts_written_as_fractions_are_not_dates(text):
    assert scan_phi(text) == {}


@pytest.mark.parametrize("text", ["seen on 3/13 in clinic", "follow up 3/28", "seen 10/13", "LMP 1/5"])
def test_month_and_day_without_a_year_are_dates(text):
    assert scan_phi(text) == {"date": 1}


def test_redaction_replaces_identifiers_and_keeps_placeholders():
    text = "Dr. Smith (617) 555-1234 on 3/14/2021; prior [**2150-3-4**] and ___ kept."
    redacted = redact_phi(text)
    assert "Smith" not in redacted and "555" not in redacted and "3/14/2021" not in redacted
    assert redacted.startswith("Dr. [** name **]")  # the title stays, the name goes
    assert "[**2150-3-4**]" in redacted and "___" in redacted
    assert scan_phi(redacted) == {}  # idempotent: redacted text passes the scan


def test_report_counts_without_echoing_the_identifiers():
    texts = ["clean note", "Dr. Smith called 617-555-1234", "twice: 1/2/2020 and 3/4/2021"]
    report = phi_report(texts)
    assert report["texts_scanned"] == 3 and report["texts_flagged"] == 2
    assert report["counts"] == {**{k: 0 for k in PHI_CLASSES}, "name": 1, "phone": 1, "date": 2}
    assert report["flagged_positions"] == [1, 2]
    assert "Smith" not in str(report) and "555" not in str(report)


def test_policies():
    texts = ["fine", "call 617-555-1234"]
    with pytest.raises(DataError, match=r"notes\.csv, row 8: likely identifiers.*phone=1"):
        apply_phi_policy(texts, "error", source="notes.csv", rows=[7, 8])
    redacted, report = apply_phi_policy(texts, "redact")
    assert redacted == ["fine", "call [** phone **]"] and report["counts"]["phone"] == 1 and report["redacted"]
    with pytest.warns(UserWarning, match="phone=1"):
        kept, _ = apply_phi_policy(texts, "warn")
    assert kept == texts
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert apply_phi_policy(["fine"], "warn")[0] == ["fine"]  # nothing found, nothing said
    with pytest.raises(ValueError, match="phi_policy"):
        apply_phi_policy(texts, "ignore")


def test_a_megabyte_note_scans_quickly_enough_to_finish():
    # No timing assertion (shared machines); this only guards against catastrophic backtracking.
    text = ("Patient 123 with BP 120/80 was seen. " * 30_000)[:1_000_000]
    assert scan_phi(text) == {}


# --- issue 13, item 10: every Safe Harbor class that text can hold ------------------------------------------------


def _covered(text: str) -> list[bool]:
    covered = [False] * len(text)
    for start, end, _ in find_phi(text):
        covered[start:end] = [True] * (end - start)
    return covered


def _recall(split: str) -> dict[str, float]:
    found, total = Counter(), Counter()
    for note in (n for n in PLANTED if n["split"] == split):
        covered = _covered(note["text"])
        for span in note["spans"]:
            total[span["class"]] += 1
            found[span["class"]] += all(
                covered[i] for i in range(span["start"], span["end"]) if note["text"][i].isalnum()
            )
    return {c: found[c] / total[c] for c in total}


def test_planted_set_is_what_it_claims():
    spans = [s for n in PLANTED for s in n["spans"]]
    assert {s["class"] for s in spans} == set(PHI_CLASSES)  # the 16 text classes, 18 with address/zip, date/age split
    assert len(spans) >= 150 and {n["split"] for n in PLANTED} == {"dev", "heldout"}
    for note in PLANTED:
        for span in note["spans"]:
            assert note["text"][span["start"] : span["end"]] == span["text"]


# The rules were written against "dev"; "heldout" (other values and phrasings) was scored once at the end and not
# tuned on. Measured there: every class 1.0 except names 15/16 ("Okonkwo, Adaeze": neither word in the census lists
# and no title, credential or label), so its floor is lower.
@pytest.mark.parametrize("split,floor", [("dev", 0.95), ("heldout", 0.9)])
def test_recall_per_class_on_planted_identifiers(split, floor):
    low = {c: round(r, 3) for c, r in _recall(split).items() if r < floor}
    assert not low, f"classes under {floor} recall on the {split} set: {low}"


def test_no_planted_note_passes_the_scan():
    passing = [n["id"] for n in PLANTED if not scan_phi(n["text"])]
    assert not passing


def test_redaction_removes_every_planted_identifier_completely():  # on dev: the held-out set has its one known miss
    for note in (n for n in PLANTED if n["split"] == "dev"):
        redacted = redact_phi(note["text"])
        for span in note["spans"]:
            for word in re.findall(r"[A-Za-z0-9]{3,}", span["text"]):
                assert not re.search(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", redacted), (
                    note["id"],
                    word,
                )
        assert scan_phi(redacted) == {}


@pytest.mark.parametrize(
    "text,gone,kept",
    [
        ("Mr. Tobias Wren is a pleasant man. Wren walked 200 feet.", ["Tobias", "Wren"], ["Mr.", "pleasant"]),
        ("Seen with Keisha Donnelly, RN, today.", ["Keisha", "Donnelly"], [", RN"]),
        ("Patient: Delacroix, Simone", ["Delacroix", "Simone"], ["Patient:"]),
        ("Last seen 3/28 and on March 21; cough since Mar 14.", ["3/28", "March 21", "Mar 14"], ["Last seen"]),
        (
            "Colonoscopy 14-Mar-91, echo 14.03.2089, onset June 2089.",
            ["14-Mar-91", "14.03.2089", "June 2089"],
            ["echo"],
        ),
        (
            "A 92-year-old at 12 Oak Street, Quincy, MA 02169 (IP 10.0.12.7).",
            ["92", "Oak", "Quincy", "02169", "10.0.12"],
            ["MA", "year-old"],
        ),
        (
            "SSN 123 45 6789, VIN 1HGCM82633A004352, pacemaker serial number PJN123456H.",
            ["6789", "1HGCM", "PJN123456H"],
            ["pacemaker"],
        ),
    ],
)
def test_issue_examples_are_redacted_whole(text, gone, kept):
    redacted = redact_phi(text)
    for part in gone:
        assert part not in redacted, (part, redacted)
    for part in kept:
        assert part in redacted, (part, redacted)


# Stated rates: the clean sets flag nothing today; a regression past these fails.
MAX_CLEAN_SENTENCES_FLAGGED = 0.02
MAX_SYNTHETIC_NOTES_FLAGGED = 0.02


def test_clean_clinical_text_is_rarely_flagged():
    import pandas as pd

    from hf_medai.data.synthetic.ehr import write_mimic

    flagged = [t for t in CLEAN_SENTENCES if scan_phi(t)]
    assert len(flagged) <= MAX_CLEAN_SENTENCES_FLAGGED * len(CLEAN_SENTENCES), flagged
    notes = []
    for fmt, table, column in (("mimic-iii", "NOTEEVENTS.csv", "TEXT"), ("mimic-iv", "note/discharge.csv", "text")):
        out = write_mimic(Path(pytest.importorskip("tempfile").mkdtemp()) / fmt, fmt, n_patients=40, seed=3)
        notes += pd.read_csv(out / table)[column].astype(str).tolist()
    flagged_notes = [n for n in notes if scan_phi(n)]
    assert len(flagged_notes) <= MAX_SYNTHETIC_NOTES_FLAGGED * len(notes), [scan_phi(n) for n in flagged_notes[:3]]


# --- issue 13, item 11: public dataset ids are not PHI ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "ISIC_0024306",
        "images/ISIC_0024306.jpg",
        "HAM_0000118",
        "patient IP_7279968",
        "[duplicate_image_id] HAM10000_metadata.csv, row 5 (id ISIC_0024306): duplicate image id 'ISIC_0024306'",
        "[no_label] NOTEEVENTS.csv, row 1234567: admission 20001234: no discharge summary",
        "row 12 (hadm_id 20001234): note too long",
        "subject_id=10000032, stay_id: 30001234, note_id 10000032-DS-21",
        "10000032-DS-21",
    ],
)
def test_dataset_ids_are_not_phi(text):
    assert scan_phi(text) == {}
    assert redact_phi(text) == text


def test_a_bare_or_record_labelled_8_digit_number_is_still_flagged():
    assert scan_phi("seen 20001234 today") == {"other_id": 1}
    assert scan_phi("MRN 20001234") == {"mrn": 1}
    assert scan_phi("hadm_id 20001234, MRN 20001234") == {"mrn": 1}
