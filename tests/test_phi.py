"""PHI guard: each identifier pattern is found, MIMIC placeholders and clinical numbers are not, counts only."""

import warnings

import pytest

from hf_medai.data.phi import PATTERNS, apply_phi_policy, phi_report, redact_phi, scan_phi
from hf_medai.data.report import DataError

FOUND = {
    "date": ["seen on 3/14/2021.", "on 03-14-21 at noon", "born 2021-03-14", "March 14, 2021", "14 Mar 2021"],
    "phone": ["call (617) 555-1234", "617-555-1234", "617.555.1234", "+1 617 555 1234", "1-617-555-1234"],
    "email": ["mail jane.doe@example.org today"],
    "ssn": ["SSN 123-45-6789"],
    "mrn": ["MRN: 1234567", "Medical Record Number 00123456", "Acct# 98765", "id 12345678 on file"],
    "url": ["see https://example.org/path?q=1", "www.example.com."],
    "name_after_title": ["seen by Dr. Smith", "Mrs Jones-Smith called", "Prof. Xavier"],
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


def test_redaction_replaces_identifiers_and_keeps_placeholders():
    text = "Dr. Smith (617) 555-1234 on 3/14/2021; prior [**2150-3-4**] and ___ kept."
    redacted = redact_phi(text)
    assert "Smith" not in redacted and "555" not in redacted and "3/14/2021" not in redacted
    assert "[**2150-3-4**]" in redacted and "___" in redacted
    assert scan_phi(redacted) == {}  # idempotent: redacted text passes the scan


def test_report_counts_without_echoing_the_identifiers():
    texts = ["clean note", "Dr. Smith called 617-555-1234", "twice: 1/2/2020 and 3/4/2021"]
    report = phi_report(texts)
    assert report["texts_scanned"] == 3 and report["texts_flagged"] == 2
    assert report["counts"] == {**{k: 0 for k in PATTERNS}, "name_after_title": 1, "phone": 1, "date": 2}
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
