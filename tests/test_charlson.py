"""Charlson index on hand-coded patients: Quan 2005 code lists (ICD-9-CM and ICD-10), both weight sets, hierarchy."""

import pytest

from hf_medai.data.charlson import (
    CONDITIONS,
    ICD9,
    ICD10,
    WEIGHTS,
    charlson_conditions,
    charlson_index,
    code_conditions,
    is_valid_code,
)

# (codes, conditions, Charlson 1987 score, Quan 2011 score), each worked out by hand from the published tables.
PATIENTS = {
    "no codes": ([], set(), 0, 0),
    "hypertension only (not a Charlson condition)": ([("4019", 9)], set(), 0, 0),
    "CHF + COPD + uncomplicated diabetes": ([("4280", 9), ("496", 9), ("25000", 9)], {"chf", "cpd", "diabetes"}, 3, 3),
    "diabetes with and without complications counts once": (
        [("25000", 9), ("25040", 9)],
        {"diabetes", "diabetes_complicated"},
        2,
        1,
    ),
    "lung cancer with liver metastases": ([("1629", 9), ("1977", 9)], {"cancer", "metastatic"}, 6, 6),
    "cirrhosis with portal hypertension": ([("5715", 9), ("5723", 9)], {"mild_liver", "severe_liver"}, 3, 4),
    "hypertensive heart and kidney disease 404.03 is CHF and renal": ([("40403", 9)], {"chf", "renal"}, 3, 3),
    "ESRD on dialysis V45.11": ([("5856", 9), ("V4511", 9)], {"renal"}, 2, 1),
    "old MI and PVD and stroke (weight 0 in Quan 2011)": (
        [("412", 9), ("4439", 9), ("43889", 9)],
        {"mi", "pvd", "cevd"},
        3,
        0,
    ),
    "dementia + hemiplegia + HIV": ([("2900", 9), ("3429", 9), ("042", 9)], {"dementia", "hemiplegia", "hiv"}, 9, 8),
    "ICD-10-CM: NSTEMI, HF, DM with CKD, CKD 3, lung cancer with liver mets": (
        [("I214", 10), ("I5023", 10), ("E1122", 10), ("N183", 10), ("C3490", 10), ("C787", 10)],
        {"mi", "chf", "diabetes_complicated", "renal", "cancer", "metastatic"},
        12,
        10,
    ),
    "ICD-10: rheumatoid arthritis, PUD, hepatitis C": (
        [("M069", 10), ("K279", 10), ("B182", 10)],
        {"rheum", "pud", "mild_liver"},
        3,
        3,
    ),
    "dotted and lower-case codes are normalised": (
        [("428.0", 9), ("e11.22", 10)],
        {"chf", "diabetes_complicated"},
        3,
        3,
    ),
    "the same code counted twice scores once": ([("4280", 9), ("4280", 9), ("I509", 10)], {"chf"}, 1, 2),
}


@pytest.mark.parametrize("name", list(PATIENTS))
def test_hand_coded_patients(name):
    codes, conditions, charlson, quan = PATIENTS[name]
    assert charlson_conditions(codes) == conditions
    assert charlson_index(codes) == charlson
    assert charlson_index(codes, weights="quan2011") == quan


def test_version_decides_the_meaning_of_a_code():
    # E11.9 is type 2 diabetes in ICD-10; "E119" in ICD-9 would be an external-cause code, not a condition.
    assert charlson_index([("E119", 10)]) == 1
    assert charlson_index([("E119", 9)]) == 0


@pytest.mark.parametrize(
    "code,version,expected",
    [
        ("4254", 9, {"chf"}),
        ("4253", 9, set()),  # 425.4-425.9 only
        ("1958", 9, {"cancer"}),
        ("196", 9, {"metastatic"}),
        ("2386", 9, {"cancer"}),
        ("173", 9, set()),  # skin, no
        ("V434", 9, {"pvd"}),
        ("07054", 9, {"mild_liver"}),
        ("07070", 9, set()),
        ("I252", 10, {"mi"}),
        ("I251", 10, set()),
        ("I2510", 10, set()),
        ("C80", 10, {"metastatic"}),
        ("C44", 10, set()),
        ("C97", 10, {"cancer"}),
        ("K7030", 10, {"mild_liver"}),
        ("K704", 10, {"severe_liver"}),
        ("Z992", 10, {"renal"}),
    ],
)
def test_code_boundaries(code, version, expected):
    assert code_conditions(code, version) == expected


def test_maximum_scores():
    one_code_each = [(ICD10[c][0], 10) for c in CONDITIONS]
    assert charlson_index(one_code_each) == 29  # 33 without the hierarchy's three pairs
    assert charlson_index(one_code_each, weights="quan2011") == 24  # Quan 2011's stated maximum


def test_every_condition_has_codes_and_weights():
    for name in CONDITIONS:
        assert ICD9[name] and ICD10[name], name
        assert all(name in w for w in WEIGHTS.values()), name


@pytest.mark.parametrize("code,version", [("XYZ", 9), ("42", 9), ("I5", 10), ("4280", 10), ("4280", 11), ("", 9)])
def test_malformed_codes_are_errors(code, version):
    assert not is_valid_code(code, version)
    with pytest.raises(ValueError):
        charlson_index([(code, version)])


def test_unknown_weights_is_an_error():
    with pytest.raises(ValueError, match="weights"):
        charlson_index([("4280", 9)], weights="elixhauser")
