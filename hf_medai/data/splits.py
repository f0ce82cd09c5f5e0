"""Splits without leakage: every row of a group (lesion, patient) lands in one split only.

Several images of one lesion in both train and test inflate every metric, because the model has seen that very
lesion; HAM10000 has 1.3 images per lesion on average, so a plain random split leaks. Column names are
arguments, so the same functions split clinical notes by patient as well as images by lesion.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

SPLIT_NAMES = ("train", "validation", "test")
MAX_FOLDS = 20  # fractions are rounded to multiples of 1/20 (5%) of the groups' folds


def group_split(
    dataset: datasets.Dataset,
    group_column: str = "lesion_id",
    label_column: str = "label",
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> datasets.DatasetDict:
    """Split into train / validation / test, grouped by `group_column` and stratified by `label_column`.

    StratifiedGroupKFold deals the groups into K folds with label mixes as equal as it can (K = 20, or the
    number of groups if fewer); each split then takes a whole number of folds in proportion to `fractions`.
    A fraction of 0 leaves that split out (e.g. (0.85, 0.15, 0.0) when the test set comes from elsewhere).
    Deterministic for a seed. Raises ValueError if a split would be empty or a group value is missing.
    For patient-level splits pass group_column="patient_id" (the loaders fill it with lesion_id when absent).
    """
    fractions = _check_fractions(fractions)
    for column in (group_column, label_column):
        if column not in dataset.column_names:
            raise ValueError(f"no column {column!r} to split by; columns: {dataset.column_names}")
    plain = dataset.with_format(None)
    groups = list(plain[group_column])
    labels = list(plain[label_column])
    missing = sum(g is None for g in groups)
    if missing:
        raise ValueError(f"{missing} rows have no {group_column!r}; fill it (e.g. with the row's own id) so that "
                         "every row belongs to a group")
    n_groups = len(set(groups))
    n_wanted = sum(f > 0 for f in fractions)
    if n_groups < n_wanted:
        raise ValueError(f"{n_groups} distinct {group_column!r} values cannot fill {n_wanted} splits")

    if n_wanted == 1:
        return datasets.DatasetDict({"train": dataset})
    n_folds = min(MAX_FOLDS, n_groups)
    folds_per_split = _folds_per_split(fractions, n_folds)
    fold_of_row = np.empty(len(groups), dtype=int)
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    label_codes = np.unique(np.array(labels, dtype=object).astype(str), return_inverse=True)[1]
    with warnings.catch_warnings():
        # Rare classes with fewer groups than folds are expected (HAM10000's df, vasc): stratification is then
        # as good as it can be, which is all we ask of it.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for fold, (_, held_out) in enumerate(cv.split(np.zeros(len(groups)), label_codes, groups)):
            fold_of_row[held_out] = fold
    # Which folds go where is also drawn from the seed, so no split is always made of the "first" folds.
    order = np.random.default_rng(seed).permutation(n_folds)
    split_of_fold = np.empty(n_folds, dtype=int)
    for split, folds in enumerate(np.split(order, np.cumsum(folds_per_split)[:-1])):
        split_of_fold[folds] = split
    split_of_row = split_of_fold[fold_of_row]

    result = {}
    for split, name in enumerate(SPLIT_NAMES):
        if fractions[split] == 0:
            continue
        rows = np.flatnonzero(split_of_row == split)
        if len(rows) == 0:
            raise ValueError(f"split {name!r} would be empty ({n_groups} groups, fractions {list(fractions)}); "
                             "use more data or other fractions")
        result[name] = dataset.select(rows)
    return datasets.DatasetDict(result)


def split_report(
    dsd: datasets.DatasetDict, label_column: str = "label", group_column: str = "lesion_id"
) -> dict[str, dict[str, Any]]:
    """Per split: rows, distinct groups and label counts (by class name when the label is a ClassLabel)."""
    report: dict[str, dict[str, Any]] = {}
    for name, split in dsd.items():
        plain = split.with_format(None)
        feature = split.features.get(label_column)
        labels = list(plain[label_column])
        if isinstance(feature, datasets.ClassLabel):
            labels = [feature.int2str(v) if v is not None and v >= 0 else None for v in labels]
        counts = Counter(labels)
        entry: dict[str, Any] = {"rows": len(split)}
        if group_column in split.column_names:
            entry["groups"] = len(set(plain[group_column]))
        entry["label_counts"] = {str(k): counts[k] for k in sorted(counts, key=str)}
        report[name] = entry
    return report


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != len(SPLIT_NAMES):
        raise ValueError(f"fractions needs {len(SPLIT_NAMES)} values (train, validation, test), got {fractions}")
    if any(not f >= 0 for f in fractions) or fractions[0] == 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be >= 0 (train > 0) and sum to 1, got {fractions}")
    return fractions


def _folds_per_split(fractions: Sequence[float], n_folds: int) -> list[int]:
    """Whole folds per split by largest remainder: at least one for each positive fraction, none for 0."""
    raw = np.array(fractions) * n_folds
    wanted = raw > 0
    counts = np.where(wanted, np.maximum(np.floor(raw).astype(int), 1), 0)
    while counts.sum() < n_folds:
        counts[np.argmax(np.where(wanted, raw - counts, -np.inf))] += 1
    while counts.sum() > n_folds:
        counts[np.argmax(np.where(counts > 1, counts - raw, -np.inf))] -= 1
    return counts.tolist()
