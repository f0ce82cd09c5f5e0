"""Structured EHR features of the first hours of each admission, read from MIMIC-III or MIMIC-IV lab and chart events.

`load_measurements(source, format, admissions)` returns one row per requested admission (index: hadm_id as a string,
like the "id" of `hf_medai.data.clinical_notes.load_admissions`), columns `<feature>_last/_min/_max/_mean/_count`.
The feature set, the itemids (CareVue and MetaVision), the °F->°C conversion and the plausible ranges are one table
in `hf_medai.data.ehr_features`.

No look-ahead: only measurements with admit_time <= charttime <= admit_time + window_hours enter (24 h by default);
the prediction time is the end of that window. Labs drawn in the ED before admit_time are left out, and so is
everything charted later (real deterioration before death shows there, and would leak the outcome).

Layouts (csv or csv.gz): MIMIC-III LABEVENTS and CHARTEVENTS in the folder of ADMISSIONS; MIMIC-IV hosp/labevents
and icu/chartevents. The big tables are read in chunks, only the needed columns, keeping only rows of the requested
admissions and items (real CHARTEVENTS has 330M rows). Rows without an hadm_id (outpatient labs) are not used.

Rows, as everywhere in hf_medai (`DataReport`): a malformed row (unreadable charttime, a VALUENUM that is not a
number, no VALUENUM and a VALUE text that is neither a number nor a known no-result text) raises `DataError` naming
the file and the 1-based data row, unless skip_bad_rows, then it is skipped and counted. Counted, never errors: rows
with no result ("ERROR", "UNABLE TO REPORT", ...), MIMIC-III rows marked ERROR=1, implausible values (dropped),
and rows outside the window. The counts are in `report.notes["measurements"]`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from hf_medai.data.ehr_features import BY_NAME, FEATURES, aggregate, itemids, to_feature_values, window_mask
from hf_medai.data.mimic import detect_format
from hf_medai.data.report import DataReport
from hf_medai.data.tables import find_table, norm_id, read_table

# Result texts that mean "no numeric result" when VALUENUM is empty (compared upper-cased, stripped).
NO_RESULT_TEXTS = frozenset(
    {
        "ERROR",
        "UNABLE TO REPORT",
        "UNABLE TO DETERMINE",
        "NOT DONE",
        "TEST NOT PERFORMED",
        "HEMOLYZED",
        "CLOTTED",
        "SPECIMEN CLOTTED",
        "QNS",
        "INSUFFICIENT SAMPLE",
        "CANCELLED",
        "DISREGARD PREVIOUS RESULT",
        "___",
    }
)
# Per format and table: (path without .csv/.csv.gz, {our column: theirs}, optional columns {ours: theirs}).
_TABLES = {
    "mimic-iii": {
        "labevents": (
            "LABEVENTS",
            {
                "hadm_id": "HADM_ID",
                "itemid": "ITEMID",
                "charttime": "CHARTTIME",
                "value": "VALUE",
                "valuenum": "VALUENUM",
            },
            {},
        ),
        "chartevents": (
            "CHARTEVENTS",
            {
                "hadm_id": "HADM_ID",
                "itemid": "ITEMID",
                "charttime": "CHARTTIME",
                "value": "VALUE",
                "valuenum": "VALUENUM",
            },
            {"error": "ERROR"},  # MetaVision rows flagged as charting errors
        ),
    },
    "mimic-iv": {
        "labevents": (
            "hosp/labevents",
            {
                "hadm_id": "hadm_id",
                "itemid": "itemid",
                "charttime": "charttime",
                "value": "value",
                "valuenum": "valuenum",
            },
            {},
        ),
        "chartevents": (
            "icu/chartevents",
            {
                "hadm_id": "hadm_id",
                "itemid": "itemid",
                "charttime": "charttime",
                "value": "value",
                "valuenum": "valuenum",
            },
            {},
        ),
    },
}


def load_measurements(
    source: str | os.PathLike,
    format: str = "auto",
    admissions=None,
    window_hours: float = 24.0,
    report: DataReport | None = None,
    skip_bad_rows: bool = False,
    features: Iterable[str] | None = None,
    chunksize: int = 500_000,
) -> pd.DataFrame:
    """One row of windowed features per admission of `admissions`, in their order (see the module docstring).

    `admissions`: a DataFrame (or anything `pd.DataFrame` takes, or a `datasets.Dataset`) with the admission id in
    `hadm_id` or `id` and the admission time in `admit_time`, e.g. the dataset of `load_admissions`. With a `report`,
    its skip_bad_rows decides; else `skip_bad_rows`. `features` restricts the feature set (names of `FEATURES`).
    """
    if window_hours <= 0:
        raise ValueError(f"window_hours={window_hours}: must be positive")
    fmt = detect_format(source) if format == "auto" else format
    if fmt not in _TABLES:
        raise ValueError(f"format={format!r}: choose 'auto', 'mimic-iii' or 'mimic-iv'")
    names = list(features) if features is not None else [f.name for f in FEATURES]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; known: {list(BY_NAME)}")
    report = report if report is not None else DataReport(skip_bad_rows=skip_bad_rows)
    admit = admission_times(admissions)
    root = Path(source)
    paths = {table: find_table(root, stem) for table, (stem, _, _) in _TABLES[fmt].items()}  # both, before reading
    frames, notes = [], {"window_hours": float(window_hours), "prediction_time": f"admit_time + {window_hours:g} h"}
    for table, (_, columns, optional) in _TABLES[fmt].items():
        items = {i: n for i, n in itemids(fmt, table).items() if n in names}
        if not items:
            continue
        long, counts = _read_events(paths[table], columns, optional, items, admit, window_hours, report, chunksize)
        frames.append(long)
        notes[table] = {"file": str(paths[table]), **counts}
    report.notes["measurements"] = notes
    long = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["hadm_id", "feature"])
    return aggregate(long, admit.index, names)


def admission_times(admissions) -> pd.Series:
    """hadm_id (string) -> admission time, from a DataFrame-like with `hadm_id` or `id`, and `admit_time`."""
    if admissions is None:
        raise ValueError("admissions is required: a table with hadm_id (or id) and admit_time")
    if hasattr(admissions, "to_pandas"):  # a datasets.Dataset
        admissions = admissions.select_columns(
            [c for c in ("id", "hadm_id", "admit_time") if c in admissions.column_names]
        )
        admissions = admissions.to_pandas()
    frame = pd.DataFrame(admissions)
    id_col = "hadm_id" if "hadm_id" in frame else "id"
    if id_col not in frame or "admit_time" not in frame:
        raise ValueError(f"admissions needs columns hadm_id (or id) and admit_time; it has {list(frame.columns)}")
    ids = norm_id(frame[id_col])
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise ValueError(f"admission {duplicated.iloc[0]} is listed more than once")
    times = pd.to_datetime(frame["admit_time"], errors="coerce", format="ISO8601")
    if times.isna().any():
        i = int(times.isna().to_numpy().argmax())
        raise ValueError(f"admission {ids.iloc[i]}: unreadable admit_time {frame['admit_time'].iloc[i]!r}")
    return pd.Series(times.to_numpy(), index=pd.Index(ids.to_numpy(), name="hadm_id"))


def _read_events(
    path: Path,
    columns: dict,
    optional: dict,
    items: dict[int, str],
    admit: pd.Series,
    window_hours: float,
    report: DataReport,
    chunksize: int,
) -> tuple[pd.DataFrame, dict]:
    """(long frame hadm_id, feature, itemid, charttime, value, order of the windowed plausible rows, counts)."""
    item_ids, hadm_ids = {str(i) for i in items}, set(admit.index)

    def keep(chunk: pd.DataFrame) -> pd.Series:
        return norm_id(chunk["itemid"]).isin(item_ids) & norm_id(chunk["hadm_id"]).isin(hadm_ids)

    ev = read_table(path, columns, row_filter=keep, chunksize=chunksize, optional=optional)
    report.rows_read += len(ev)
    counts: dict = {"rows_of_these_admissions_and_items": len(ev)}
    ev["hadm_id"] = norm_id(ev["hadm_id"])
    ev["itemid"] = norm_id(ev["itemid"]).astype(int)
    ev["feature"] = ev["itemid"].map(items)
    if "error" in ev:
        marked = pd.to_numeric(ev["error"].str.strip(), errors="coerce") == 1
        counts["marked_error_dropped"] = int(marked.sum())
        ev = ev[~marked].copy()
    ev["charttime_parsed"] = pd.to_datetime(ev["charttime"].str.strip(), errors="coerce", format="ISO8601")
    value, no_result, bad_value = _values(ev["valuenum"], ev["value"])
    ev["num"] = value
    bad_time = ev["charttime_parsed"].isna()
    bad = bad_time | bad_value
    for r in ev[bad].itertuples(index=False):  # in file order: the first bad row is the one reported
        if pd.isna(r.charttime_parsed):
            reason, problem = "bad_time", f"unreadable charttime {r.charttime!r}"
        else:
            reason, problem = "bad_value", f"valuenum {r.valuenum!r} / value {r.value!r} is not a number"
        report.bad(reason, path, int(r.data_row), f"admission {r.hadm_id}, itemid {r.itemid}: {problem}")
    counts["no_result"] = int((no_result & ~bad).sum())
    ev = ev[~bad & ~no_result].copy()
    ev["value"], plausible = to_feature_values(ev["feature"], ev["itemid"], ev["num"])
    implausible = Counter(ev.loc[~plausible, "feature"])
    counts["implausible_dropped"] = dict(sorted(implausible.items()))
    ev = ev[plausible].copy()
    start = ev["hadm_id"].map(admit)
    inside = window_mask(ev["charttime_parsed"], start, window_hours)
    counts["before_admission"] = int((ev["charttime_parsed"] < start).sum())
    counts["after_prediction_time"] = int((~inside).sum()) - counts["before_admission"]
    counts["in_window"] = int(inside.sum())
    ev = ev[inside]
    long = pd.DataFrame(
        {
            "hadm_id": ev["hadm_id"],
            "feature": ev["feature"],
            "itemid": ev["itemid"],
            "charttime": ev["charttime_parsed"],
            "value": ev["value"].astype(float),
            "order": ev["data_row"].astype(int),
        }
    )
    return long, counts


def _values(valuenum: pd.Series, value: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(numeric value, mask of rows with no result, mask of malformed rows) from VALUENUM and VALUE.

    VALUENUM when it is a number; an empty VALUENUM takes VALUE when that is a number. Without a number, a known
    no-result text in VALUE (or nothing at all) means no result; anything else (VALUENUM "abc", VALUE "pending")
    is malformed.
    """
    num_text, text = valuenum.astype(str).str.strip(), value.astype(str).str.strip()
    num = pd.to_numeric(num_text, errors="coerce")
    from_text = pd.to_numeric(text, errors="coerce")
    num = num.where(num.notna() | (num_text != ""), from_text)  # an empty VALUENUM with a number in VALUE
    no_result = num.isna() & (text.str.upper().isin(NO_RESULT_TEXTS) | ((text == "") & (num_text == "")))
    bad = num.isna() & ~no_result
    return num, no_result, bad
