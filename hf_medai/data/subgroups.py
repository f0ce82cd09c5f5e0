"""Subgroup columns derived from raw demographics, shared by every loader and by the subgroup reports.

One `age_band` for all: the band scheme is a parameter, because a cohort's useful bands differ (skin-lesion data
span all adult ages; MIMIC cohorts need a paediatric band and an oldest band that holds the masked ages over 89).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

# Default bands (lesion data, and any cohort without its own): lower edge included.
AGE_BANDS: tuple[str, ...] = ("<30", "30-44", "45-59", "60-74", "75+")
AGE_EDGES: tuple[float, ...] = (30.0, 45.0, 60.0, 75.0)
# MIMIC admissions: children, then the bands of adult in-hospital outcome studies; 80+ holds the masked ages (90).
CLINICAL_AGE_BANDS: tuple[str, ...] = ("0-17", "18-44", "45-64", "65-79", "80+")
CLINICAL_AGE_EDGES: tuple[float, ...] = (18.0, 45.0, 65.0, 80.0)
UNKNOWN = "unknown"  # the group of rows whose subgroup value is missing


def age_band(age: Any, bands: Sequence[str] = AGE_BANDS, edges: Sequence[float] = AGE_EDGES) -> str | None | pd.Series:
    """Age in years -> its band (`bands[i]` holds ages from `edges[i-1]`, lower edge included); missing -> None.

    A pandas Series (or array, list) gives an ordered categorical Series (same index and name), so reports list
    the bands in age order. A negative age or a value that is not a number raises ValueError.
    """
    if len(bands) != len(edges) + 1:
        raise ValueError(f"{len(bands)} bands need {len(bands) - 1} edges, got {len(edges)}")
    cut = np.asarray(edges, dtype=np.float64)
    if isinstance(age, (pd.Series, pd.Index, np.ndarray, list, tuple)):
        series = age if isinstance(age, pd.Series) else pd.Series(np.asarray(age, dtype=object))
        try:
            years = pd.to_numeric(series, errors="raise").astype("float64")
        except (ValueError, TypeError) as err:
            raise ValueError(f"age must be numbers of years (or missing): {err}") from None
        if (years < 0).any():
            raise ValueError(f"age must be >= 0, got {years[years < 0].iloc[0]}")
        codes = np.where(years.isna(), -1, np.searchsorted(cut, years.fillna(0), side="right"))
        return pd.Series(
            pd.Categorical.from_codes(codes, categories=list(bands), ordered=True),
            index=series.index,
            name=series.name,
        )
    if is_missing(age):
        return None
    try:
        years = float(age)
    except (TypeError, ValueError):
        raise ValueError(f"age must be a number of years (or missing), got {age!r}") from None
    if years < 0:
        raise ValueError(f"age must be >= 0, got {years}")
    return bands[int(np.searchsorted(cut, years, side="right"))]


def is_missing(value: Any) -> bool:
    """None, pandas' NA / NaT, or a float NaN."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)
