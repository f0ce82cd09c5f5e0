"""Tabular inputs of the fusion models: a schema fitted on the training rows, and the arrays a model reads.

    schema = TabularSchema.fit(train_frame, categorical=["sex", "site"], numeric=["age"])
    arrays = schema.encode(frame)   # categorical_ids (n, C) int64, numeric_values (n, N) float32, numeric_missing (n, N)

Missing values are never imputed: a missing category is id 0 and a missing number sets its `numeric_missing` flag
(its value reads 0), so the model learns a token of its own for "not recorded" (`hf_medai.models.fusion`). A
category never seen in training is id 1 ("unseen"). Numbers are standardised with the training rows' mean and
standard deviation and clipped to +-10 standard deviations.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

MISSING, UNSEEN = 0, 1  # reserved categorical ids; a vocabulary's own values start at 2
RESERVED = 2
MISSING_TEXT = frozenset({"", "unknown", "nan", "none", "na", "n/a", "null"})
CLIP = 10.0
KEYS = ("categorical_ids", "numeric_values", "numeric_missing")  # the arrays a fusion model reads


def is_missing(value: Any) -> bool:
    """None, NaN, an empty or "unknown"-like string."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_TEXT


def _number(value: Any) -> float:
    if is_missing(value):
        return math.nan
    try:
        x = float(value)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


@dataclass
class TabularSchema:
    """Feature names, the categories seen in training (most frequent first) and the numbers' training statistics."""

    categorical: dict[str, list[str]] = field(default_factory=dict)
    numeric: dict[str, list[float]] = field(default_factory=dict)  # name -> [mean, std]
    edges: dict[str, list[float]] = field(default_factory=dict)  # name -> quantile bin edges, standardised units

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        min_count: int = 1,
        bins: int = 8,
    ) -> TabularSchema:
        """Vocabularies and statistics from the TRAINING rows only; a category seen fewer than `min_count`
        times reads as unseen. `bins`: quantile bins per number for its piecewise-linear encoding in the model
        (Gorishniy et al. 2022), edges in standardised units."""
        absent = [c for c in (*categorical, *numeric) if c not in frame.columns]
        if absent:
            raise ValueError(f"tabular features {absent} are not columns of the data ({list(frame.columns)})")
        cats = {}
        for name in categorical:
            counts = Counter(str(v).strip() for v in frame[name] if not is_missing(v))
            cats[name] = [v for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
        nums, edges = {}, {}
        for name in numeric:
            x = np.array([_number(v) for v in frame[name]], dtype=np.float64)
            x = x[np.isfinite(x)]
            mean = float(x.mean()) if x.size else 0.0
            std = float(x.std()) if x.size > 1 else 1.0
            nums[name] = [mean, std if std > 1e-8 else 1.0]
            z = np.clip((x - mean) / nums[name][1], -CLIP, CLIP)
            edges[name] = np.unique(np.quantile(z, np.linspace(0, 1, bins + 1))).round(6).tolist() if x.size else []
        return cls(cats, nums, edges)

    @property
    def names(self) -> list[str]:
        return [*self.categorical, *self.numeric]

    @property
    def categorical_sizes(self) -> list[int]:
        """Embedding rows per categorical feature: its vocabulary plus missing and unseen."""
        return [len(v) + RESERVED for v in self.categorical.values()]

    def encode(self, rows: pd.DataFrame | Sequence[Mapping[str, Any]] | Mapping[str, Any] | None) -> dict:
        """The model's arrays for rows (a DataFrame, a list of dicts, one dict). A feature absent from the rows, or
        `rows=None` (one row), reads as missing."""
        if rows is None:
            rows = [{}]
        if isinstance(rows, Mapping):
            rows = [rows]
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        n = len(frame) if len(frame.columns) else len(rows)
        ids = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, (name, vocab) in enumerate(self.categorical.items()):
            index = {v: i + RESERVED for i, v in enumerate(vocab)}
            if name in frame:
                ids[:, j] = [
                    MISSING if is_missing(v) else index.get(str(v).strip(), UNSEEN) for v in frame[name].tolist()
                ]
        values = np.zeros((n, len(self.numeric)), dtype=np.float32)
        missing = np.ones((n, len(self.numeric)), dtype=bool)
        for j, (name, (mean, std)) in enumerate(self.numeric.items()):
            if name not in frame:
                continue
            x = np.array([_number(v) for v in frame[name].tolist()], dtype=np.float64)
            seen = np.isfinite(x)
            values[seen, j] = np.clip((x[seen] - mean) / std, -CLIP, CLIP)
            missing[:, j] = ~seen
        return {"categorical_ids": ids, "numeric_values": values, "numeric_missing": missing}

    def to_dict(self) -> dict[str, Any]:
        return {"categorical": self.categorical, "numeric": self.numeric, "edges": self.edges}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TabularSchema:
        numeric = {k: list(v) for k, v in (d.get("numeric") or {}).items()}
        return cls(dict(d.get("categorical") or {}), numeric, {k: list(v) for k, v in (d.get("edges") or {}).items()})


def with_tabular(dataset, schema: TabularSchema, frame: pd.DataFrame):
    """`dataset` (a `datasets.Dataset`, rows in `frame`'s order) with the encoded arrays as columns."""
    if len(frame) != len(dataset):
        raise ValueError(f"{len(frame)} tabular rows for {len(dataset)} examples")
    arrays = schema.encode(frame.reset_index(drop=True))
    for key in KEYS:
        dataset = dataset.add_column(key, arrays[key].tolist())
    return dataset


class TabularCollator:
    """Wraps a collator (images or padded text): it batches the rest, this stacks the tabular arrays (and
    `primary_absent` flags when the rows have them)."""

    def __init__(self, base):
        self.base = base

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        rest = [{k: v for k, v in e.items() if k not in (*KEYS, "primary_absent")} for e in examples]
        batch = dict(self.base(rest))
        batch["categorical_ids"] = torch.as_tensor(
            np.array([e["categorical_ids"] for e in examples]), dtype=torch.long
        )
        batch["numeric_values"] = torch.as_tensor(
            np.array([e["numeric_values"] for e in examples]), dtype=torch.float32
        )
        batch["numeric_missing"] = torch.as_tensor(
            np.array([e["numeric_missing"] for e in examples]), dtype=torch.bool
        )
        if "primary_absent" in examples[0]:  # scoring without the image / note (missing-modality rows, the demo)
            batch["primary_absent"] = torch.as_tensor([bool(e["primary_absent"]) for e in examples])
        return batch
