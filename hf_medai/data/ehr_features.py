"""The structured features of the first hours of an admission: which MIMIC items make each one, and how they are
aggregated. The one table below is the documented feature set; `hf_medai.data.ehr_measurements` reads the MIMIC
tables into it, and `features_from_rows` computes the same features from a few rows (a demo, a processor).

| feature          | unit    | MIMIC-III CHARTEVENTS (CareVue; MetaVision) | MIMIC-IV icu/chartevents | plausible  |
|------------------|---------|---------------------------------------------|--------------------------|------------|
| heart_rate       | bpm     | 211; 220045                                 | 220045                   | 10-300     |
| sbp              | mmHg    | 51, 455; 220050, 220179                     | 220050, 220179           | 20-300     |
| dbp              | mmHg    | 8368, 8441; 220051, 220180                  | 220051, 220180           | 5-200      |
| mbp              | mmHg    | 52, 456; 220052, 220181                     | 220052, 220181           | 10-250     |
| resp_rate        | /min    | 618; 220210                                 | 220210                   | 2-80       |
| spo2             | %       | 646; 220277                                 | 220277                   | 10-100     |
| temperature      | °C      | 676 (°C), 678 (°F); 223762 (°C), 223761 (°F)| 223762 (°C), 223761 (°F) | 25-45 °C   |

| feature          | unit    | LABEVENTS itemid (the same in MIMIC-III and MIMIC-IV hosp/labevents)  | plausible  |
|------------------|---------|-----------------------------------------------------------------------|------------|
| creatinine       | mg/dL   | 50912                                                                 | 0.05-30    |
| lactate          | mmol/L  | 50813                                                                 | 0.1-40     |
| wbc              | K/uL    | 51301, 51300                                                          | 0.01-500   |
| hemoglobin       | g/dL    | 51222                                                                 | 1-25       |
| platelets        | K/uL    | 51265                                                                 | 1-2000     |
| sodium           | mEq/L   | 50983                                                                 | 90-200     |
| potassium        | mEq/L   | 50971                                                                 | 1-12       |
| bicarbonate      | mEq/L   | 50882                                                                 | 2-60       |
| bun              | mg/dL   | 51006                                                                 | 1-300      |
| glucose          | mg/dL   | 50931                                                                 | 10-2000    |

°F items are converted to °C before the range check. Values outside the plausible range (a heart rate of 0 or 999,
a temperature charted in the wrong unit) are dropped and counted, never clipped.

The window: a measurement enters when admit_time <= charttime <= admit_time + window_hours; the prediction time is
admit_time + window_hours, so nothing charted after it (nor before the admission, such as ED labs) is used.
Per feature: `<name>_last` (latest charttime; ties broken by file order), `_min`, `_max`, `_mean` and `_count`
(0 when none). NaN where not measured: nothing is imputed here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

AGGREGATIONS = ("last", "min", "max", "mean", "count")


@dataclass(frozen=True)
class Feature:
    name: str
    unit: str
    table: str  # "chartevents" or "labevents"
    mimic_iii: tuple[int, ...]  # itemids read in MIMIC-III (CareVue and MetaVision for chartevents)
    mimic_iv: tuple[int, ...]
    low: float  # plausible range, after unit conversion
    high: float
    fahrenheit: tuple[int, ...] = ()  # itemids charted in °F, converted to °C


# fmt: off
FEATURES: tuple[Feature, ...] = (
    Feature("heart_rate", "bpm", "chartevents", (211, 220045), (220045,), 10, 300),
    Feature("sbp", "mmHg", "chartevents", (51, 455, 220050, 220179), (220050, 220179), 20, 300),
    Feature("dbp", "mmHg", "chartevents", (8368, 8441, 220051, 220180), (220051, 220180), 5, 200),
    Feature("mbp", "mmHg", "chartevents", (52, 456, 220052, 220181), (220052, 220181), 10, 250),
    Feature("resp_rate", "insp/min", "chartevents", (618, 220210), (220210,), 2, 80),
    Feature("spo2", "%", "chartevents", (646, 220277), (220277,), 10, 100),
    Feature("temperature", "°C", "chartevents", (676, 678, 223762, 223761), (223762, 223761), 25, 45,
            fahrenheit=(678, 223761)),
    Feature("creatinine", "mg/dL", "labevents", (50912,), (50912,), 0.05, 30),
    Feature("lactate", "mmol/L", "labevents", (50813,), (50813,), 0.1, 40),
    Feature("wbc", "K/uL", "labevents", (51301, 51300), (51301, 51300), 0.01, 500),
    Feature("hemoglobin", "g/dL", "labevents", (51222,), (51222,), 1, 25),
    Feature("platelets", "K/uL", "labevents", (51265,), (51265,), 1, 2000),
    Feature("sodium", "mEq/L", "labevents", (50983,), (50983,), 90, 200),
    Feature("potassium", "mEq/L", "labevents", (50971,), (50971,), 1, 12),
    Feature("bicarbonate", "mEq/L", "labevents", (50882,), (50882,), 2, 60),
    Feature("bun", "mg/dL", "labevents", (51006,), (51006,), 1, 300),
    Feature("glucose", "mg/dL", "labevents", (50931,), (50931,), 10, 2000),
)
# fmt: on
BY_NAME = {f.name: f for f in FEATURES}
# The itemids of MIMIC-III and MIMIC-IV do not collide for these items, so one map serves both.
ITEM_TO_FEATURE: dict[int, str] = {i: f.name for f in FEATURES for i in (*f.mimic_iii, *f.mimic_iv)}
FAHRENHEIT_ITEMS = frozenset(i for f in FEATURES for i in f.fahrenheit)


def feature_columns(features: Iterable[str] | None = None) -> list[str]:
    """The output columns, feature by feature: `<name>_last`, `_min`, `_max`, `_mean`, `_count`."""
    names = list(features) if features is not None else [f.name for f in FEATURES]
    return [f"{n}_{agg}" for n in names for agg in AGGREGATIONS]


def itemids(fmt: str, table: str) -> dict[int, str]:
    """itemid -> feature name of one table ("chartevents" / "labevents") in one format."""
    iv = fmt == "mimic-iv"
    return {i: f.name for f in FEATURES if f.table == table for i in (f.mimic_iv if iv else f.mimic_iii)}


def to_feature_values(feature: pd.Series, itemid: pd.Series, value: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(values converted to the feature's unit, mask of plausible values)."""
    value = value.astype(float).where(~itemid.isin(FAHRENHEIT_ITEMS), (value.astype(float) - 32) * 5 / 9)
    low = feature.map({f.name: f.low for f in FEATURES}).astype(float)
    high = feature.map({f.name: f.high for f in FEATURES}).astype(float)
    return value, (value >= low) & (value <= high)


def window_mask(charttime: pd.Series, admit_time: pd.Series, window_hours: float) -> pd.Series:
    """admit_time <= charttime <= admit_time + window_hours: what is known at the prediction time."""
    end = admit_time + pd.Timedelta(hours=float(window_hours))
    return (charttime >= admit_time) & (charttime <= end)


def aggregate(long: pd.DataFrame, ids: Iterable[str], features: Iterable[str] | None = None) -> pd.DataFrame:
    """Windowed, plausible measurements (columns hadm_id, feature, charttime, value, order) -> one row per id.

    `order` breaks ties of charttime for `last` (the row's position in its file). Ids without measurements get
    NaN for last/min/max/mean and 0 for count.
    """
    names = list(features) if features is not None else [f.name for f in FEATURES]
    index = pd.Index([str(i) for i in ids], name="hadm_id")
    out = pd.DataFrame(np.nan, index=index, columns=feature_columns(names))
    counts = [f"{n}_count" for n in names]
    out[counts] = 0
    long = long[long["feature"].isin(names) & long["hadm_id"].isin(index)]
    if len(long):
        long = long.sort_values(["hadm_id", "feature", "charttime", "order"], kind="stable")
        grouped = long.groupby(["hadm_id", "feature"], sort=False)["value"]
        stats = grouped.agg(["last", "min", "max", "mean", "count"])
        wide = stats.unstack("feature")  # columns: (agg, feature)
        wide.columns = [f"{feat}_{agg}" for agg, feat in wide.columns]
        wide = wide.reindex(index=index)
        for col in wide.columns:
            out[col] = wide[col].fillna(0) if col.endswith("_count") else wide[col]
    out[counts] = out[counts].astype(int)
    return out


def features_from_rows(
    rows: Iterable[Mapping], admit_time, window_hours: float = 24.0, features: Iterable[str] | None = None
) -> dict[str, float]:
    """The features of one admission from a few rows, each {"item": itemid or feature name, "charttime", "value"}.

    The same conversion, range check, window and aggregation as `load_measurements`; implausible values and rows
    outside the window are left out. Values are numbers in the item's unit (°F for a °F itemid).
    """
    records = []
    for order, r in enumerate(rows):
        item = r["item"]
        itemid = int(item) if str(item).isdigit() else -1
        name = ITEM_TO_FEATURE.get(itemid) if itemid >= 0 else str(item)
        if name not in BY_NAME:
            raise ValueError(f"unknown item {item!r}: give an itemid of the feature table or one of {list(BY_NAME)}")
        records.append((name, itemid, pd.Timestamp(r["charttime"]), float(r["value"]), order))
    long = pd.DataFrame(records, columns=["feature", "itemid", "charttime", "value", "order"])
    long["hadm_id"] = "0"
    long["charttime"] = pd.to_datetime(long["charttime"])
    long["value"], plausible = to_feature_values(long["feature"], long["itemid"], long["value"])
    long = long[
        plausible & window_mask(long["charttime"], pd.Series(pd.Timestamp(admit_time), long.index), window_hours)
    ]
    row = aggregate(long, ["0"], features).iloc[0]
    return {k: (int(v) if k.endswith("_count") else float(v)) for k, v in row.items()}
