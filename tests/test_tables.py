"""The one table-cell parser and the one age_band that every loader shares."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hf_medai.data.subgroups import AGE_BANDS, CLINICAL_AGE_BANDS, CLINICAL_AGE_EDGES, age_band
from hf_medai.data.tables import group_cell, number_cell, sorted_labels, text_cell


def test_text_cell_missing_values():
    assert [text_cell(v) for v in (None, float("nan"), "", "  ", "NaN", "n/a", "NULL", "none")] == [None] * 8
    assert text_cell("  back ") == "back" and text_cell(3) == "3"
    # Free text and MIMIC columns treat only an empty cell as missing: "NA" or "none" may be a real value there.
    assert text_cell("NA", missing=("",)) == "NA" and text_cell(" ", missing=("",)) is None


def test_group_cell_and_number_cell():
    assert [group_cell(v) for v in ("", None, float("nan"), " Medicare ", "NA")] == [
        "unknown",
        "unknown",
        "unknown",
        "Medicare",
        "NA",
    ]
    assert [number_cell(v) for v in ("3.5", " 7 ", 2, "", None, "abc")] == [3.5, 7.0, 2.0, None, None, None]


def test_sorted_labels_numeric_order_else_alphabetical():
    assert sorted_labels({"10", "2", "1"}) == ["1", "2", "10"]
    assert sorted_labels({"nv", "mel", "10"}) == ["10", "mel", "nv"]


def test_age_band_takes_the_cohort_bands():
    cases = {0: "0-17", 17.9: "0-17", 18: "18-44", 64.9: "45-64", 65: "65-79", 80: "80+", 90: "80+"}
    assert {a: age_band(a, CLINICAL_AGE_BANDS, CLINICAL_AGE_EDGES) for a in cases} == cases
    assert age_band(None, CLINICAL_AGE_BANDS, CLINICAL_AGE_EDGES) is None
    bands = age_band(pd.Series([5.0, np.nan, 70.0]), CLINICAL_AGE_BANDS, CLINICAL_AGE_EDGES)
    assert list(bands.cat.categories) == list(CLINICAL_AGE_BANDS) and bands.tolist()[::2] == ["0-17", "65-79"]
    assert age_band(50) in AGE_BANDS
    with pytest.raises(ValueError, match="edges"):
        age_band(50, CLINICAL_AGE_BANDS, (18.0, 45.0))
