"""Outcome labels of an admission, as pure functions on tidy frames.

30-day readmission episodes, length of stay, bins of a number into classes, and the summary of a label column.
The definitions are in the `hf_medai.data.clinical_notes` docstring.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import numpy as np
import pandas as pd

PLANNED_ADMISSION_TYPES = frozenset({"ELECTIVE", "SURGICAL SAME DAY ADMISSION"})
LABEL_DEFINITIONS = {
    "mortality": "in-hospital death (hospital_expire_flag, else a deathtime)",
    "readmission": "unplanned admission within 30 days after discharge; same-day and overlapping stays merge into "
    "one episode; episodes ending in in-hospital death excluded; elective readmissions {elective}",
    "los": "length of stay (days), bins left-closed at {bins}",
    "los_days": "length of stay in days (regression)",
    "comorbidity": "Charlson index (Quan 2005 codes, Charlson 1987 weights), bins {bins}",
}


def readmission_labels(admissions: pd.DataFrame, window_days: float = 30, count_elective: bool = False) -> pd.Series:
    """30-day readmission per admission: True, False, or <NA> when the episode ended in an in-hospital death.

    `admissions` has columns subject_id, admit_time, disch_time (datetimes), died_in_hospital (bool/0-1) and,
    unless `count_elective`, admission_type. Definition in the `hf_medai.data.clinical_notes` docstring. Returns a
    pandas "boolean" Series aligned with `admissions.index`.
    """
    frame = admissions.reset_index(drop=True)
    order = frame.sort_values(["subject_id", "admit_time"], kind="stable").index.to_numpy()
    subject = frame["subject_id"].astype(str).to_numpy()[order]
    admit = frame["admit_time"].to_numpy(dtype="datetime64[us]")[order]
    disch = frame["disch_time"].to_numpy(dtype="datetime64[us]")[order]
    admit_day = admit.astype("datetime64[D]")
    died = frame["died_in_hospital"].fillna(0).astype(bool).to_numpy()[order]
    if count_elective:
        counts = np.ones(len(frame), dtype=bool)
    else:
        counts = ~frame["admission_type"].astype(str).str.strip().str.upper().isin(PLANNED_ADMISSION_TYPES)
        counts = counts.to_numpy()[order]
    window = np.timedelta64(int(round(window_days * 86400)), "s")

    label = np.full(len(frame), np.nan)
    i, n = 0, len(frame)
    while i < n:
        # Grow the episode: later stays of this patient that start before its end, or on its end's calendar day.
        j, end, episode_died = i, max(admit[i], disch[i]), died[i]
        while j + 1 < n and subject[j + 1] == subject[i] and admit_day[j + 1] <= end.astype("datetime64[D]"):
            j += 1
            end, episode_died = max(end, disch[j]), episode_died or died[j]
        if not episode_died:
            readmitted = 0.0
            k = j + 1
            while k < n and subject[k] == subject[i] and admit[k] - end <= window:
                if counts[k]:
                    readmitted = 1.0
                    break
                k += 1
            label[i : j + 1] = readmitted
        i = j + 1
    out = np.full(n, np.nan)
    out[order] = label
    return pd.Series(
        pd.array([pd.NA if np.isnan(v) else bool(v) for v in out], dtype="boolean"),
        index=admissions.index,
        name="readmission",
    )


def length_of_stay_days(admit_time: pd.Series, disch_time: pd.Series) -> pd.Series:
    """Length of stay in (fractional) days."""
    return (disch_time - admit_time).dt.total_seconds() / 86400.0


def bin_names(edges: Sequence[float], integer: bool = False) -> list[str]:
    """Class names for bins cut at `edges`, left-closed: (3, 7, 14) -> <3, 3-7, 7-14, >=14.

    With `integer`, names list whole numbers: (1, 3, 5) -> 0, 1-2, 3-4, 5+.
    """
    e = [int(x) if float(x).is_integer() else x for x in edges]
    if not integer:
        return [f"<{e[0]}"] + [f"{a}-{b}" for a, b in zip(e, e[1:])] + [f">={e[-1]}"]
    spans = [(0, e[0] - 1)] + [(a, b - 1) for a, b in zip(e, e[1:])]
    return [f"{a}" if a == b else f"{a}-{b}" for a, b in spans] + [f"{e[-1]}+"]


def bin_values(values: Sequence[float] | np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin index of each value, left-closed: with edges (3, 7), 2.9 -> 0, 3 -> 1, 7 -> 2."""
    return np.searchsorted(np.asarray(edges, dtype=float), np.asarray(values, dtype=float), side="right")


def label_summary(dataset: datasets.Dataset, label_column: str = "label") -> dict:
    """Counts and prevalence per class, or mean/median/range for a regression label."""
    labels = np.asarray(dataset[label_column]) if len(dataset) else np.asarray([])
    feature = dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        counts = (
            np.bincount(labels.astype(int), minlength=feature.num_classes)
            if len(labels)
            else np.zeros(feature.num_classes, dtype=int)
        )
        n = max(int(counts.sum()), 1)
        return {
            "examples": int(counts.sum()),
            "counts": {name: int(c) for name, c in zip(feature.names, counts)},
            "prevalence": {name: round(float(c) / n, 4) for name, c in zip(feature.names, counts)},
        }
    if not len(labels):
        return {"examples": 0}
    return {
        "examples": int(len(labels)),
        "mean": round(float(labels.mean()), 3),
        "median": round(float(np.median(labels)), 3),
        "min": round(float(labels.min()), 3),
        "max": round(float(labels.max()), 3),
    }
