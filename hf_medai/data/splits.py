"""Splits without leakage: every row of a group (lesion, patient) lands in one split only.

Several images of one lesion in both train and test inflate every metric, because the model has seen that very
lesion; HAM10000 has 1.3 images per lesion on average, so a plain random split leaks. Column names are
arguments, so the same functions split clinical notes by patient as well as images by lesion. Admissions also split
by time (`temporal_split`: train on earlier years, test on later ones, still no patient in two splits).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import datasets
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from hf_medai.data.outcome_labels import bin_values, label_summary
from hf_medai.data.report import DataReport

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
        raise ValueError(
            f"{missing} rows have no {group_column!r}; fill it (e.g. with the row's own id) so that "
            "every row belongs to a group"
        )
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
            raise ValueError(
                f"split {name!r} would be empty ({n_groups} groups, fractions {list(fractions)}); "
                "use more data or other fractions"
            )
        result[name] = dataset.select(rows)
    return datasets.DatasetDict(result)


def label_subset(
    dataset: datasets.Dataset,
    fraction: float,
    group_column: str = "lesion_id",
    label_column: str | None = "label",
    seed: int = 0,
) -> datasets.Dataset:
    """The rows of a `fraction` of the groups (patients), stratified by label: for label-efficiency experiments.

    A group counts under its most frequent label (`label_column=None`: one stratum, e.g. for a regression target). Per label, the groups are ordered by one permutation drawn from
    `seed` and the first ceil(fraction * n) are kept (at least one per label), so the subsets are nested: the 1%
    groups are among the 10% ones. Deterministic for a seed; `fraction` 1 returns `dataset` itself.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction {fraction} must be in (0, 1]")
    if fraction == 1:
        return dataset
    plain = dataset.with_format(None)
    groups = np.array([str(g) for g in plain[group_column]], dtype=object)
    labels = np.array([str(v) for v in plain[label_column]] if label_column else [""] * len(groups), dtype=object)
    label_of_group = {g: Counter(labels[groups == g]).most_common(1)[0][0] for g in sorted(set(groups))}
    rng = np.random.default_rng(seed)
    kept: set[str] = set()
    for label in sorted(set(label_of_group.values())):
        members = [g for g, v in label_of_group.items() if v == label]
        order = rng.permutation(len(members))
        kept.update(members[i] for i in order[: max(1, math.ceil(fraction * len(members)))])
    return dataset.select(np.flatnonzero([g in kept for g in groups]))


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


# ----------------------------------------------------------------------------------------------- admissions


def temporal_split(
    dataset: datasets.Dataset,
    year_column: str = "admit_year",
    test_years: Iterable[int] | None = None,
    validation_years: Iterable[int] | None = None,
    group_column: str = "subject_id",
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    report: DataReport | None = None,
) -> datasets.DatasetDict:
    """Train on earlier years, validate and test on later ones, with no patient in two splits.

    Test holds every admission of `test_years` (default: the latest years that make up `test_fraction` of the
    data); validation those of `validation_years` (default: the latest remaining years making up
    `validation_fraction`); train the rest. A patient seen in a later split loses their admissions in the
    earlier ones (test wins over validation over train), so the test period stays complete. Counts and label
    prevalence per split go to `report.notes["splits"]`.
    """
    years = np.asarray(dataset[year_column], dtype=float)
    if np.isnan(years).any():
        raise ValueError(f"{year_column} has missing years; a temporal split needs every row's year")
    test = set(test_years) if test_years is not None else _latest_years(years, set(), test_fraction)
    val = set(validation_years) if validation_years is not None else _latest_years(years, test, validation_fraction)
    if test & val:
        raise ValueError(f"test_years and validation_years overlap: {sorted(test & val)}")
    if not set(years.astype(int).tolist()) - test - val:
        raise ValueError(f"no year left for training (test {sorted(test)}, validation {sorted(val)})")
    groups = np.asarray(dataset[group_column]).astype(str)
    year_int = years.astype(int)
    in_test, in_val = np.isin(year_int, list(test)), np.isin(year_int, list(val))
    test_groups = set(groups[in_test])
    in_val &= ~np.isin(groups, list(test_groups))
    val_groups = set(groups[in_val])
    in_train = ~in_test & ~np.isin(year_int, list(val)) & ~np.isin(groups, list(test_groups | val_groups))
    splits = datasets.DatasetDict(
        {
            "train": dataset.select(np.flatnonzero(in_train)),
            "validation": dataset.select(np.flatnonzero(in_val)),
            "test": dataset.select(np.flatnonzero(in_test)),
        }
    )
    if report is not None:
        report.notes["splits"] = {
            "how": "temporal",
            "test_years": sorted(test),
            "validation_years": sorted(val),
            "rows_dropped_for_patient_overlap": int(len(dataset) - in_train.sum() - in_val.sum() - in_test.sum()),
            **split_summary(splits, group_column=group_column),
        }
    return splits


def _latest_years(years: np.ndarray, taken: set[int], fraction: float) -> set[int]:
    """The latest years (not in `taken`) whose admissions reach `fraction` of all rows."""
    chosen: set[int] = set()
    count, target = 0, fraction * len(years)
    for year in sorted(set(years.astype(int).tolist()) - taken, reverse=True):
        if count >= target:
            break
        chosen.add(year)
        count += int((years.astype(int) == year).sum())
    return chosen


def split_summary(
    splits: Mapping[str, datasets.Dataset], label_column: str = "label", group_column: str = "subject_id"
) -> dict:
    """`hf_medai.data.splits.split_report` with the label prevalence per split (or mean/median for los_days)
    and, as a check, the number of patients found in more than one split (0 by construction)."""
    out: dict[str, Any] = split_report(datasets.DatasetDict(splits), label_column, group_column)
    owners: Counter = Counter()
    for name, split in splits.items():
        out[name].pop("label_counts", None)
        out[name].update({k: v for k, v in label_summary(split, label_column).items() if k != "examples"})
        owners.update(set(split[group_column]))
    out["patients_in_more_than_one_split"] = sum(1 for c in owners.values() if c > 1)
    return out


def split_admissions(
    dataset: datasets.Dataset,
    how: str = "patient",
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    test_years: Iterable[int] | None = None,
    validation_years: Iterable[int] | None = None,
    los_bins: Sequence[float] = (3, 7, 14),
    report: DataReport | None = None,
) -> datasets.DatasetDict:
    """Train/validation/test with no patient in two splits; counts and prevalence to `report.notes["splits"]`.

    how="patient": `group_split` by subject_id, stratified by the label (by its `los_bins` bin for los_days).
    how="temporal": `temporal_split` on admit_year, validation and test sizes from `fractions` unless the years
    are given. Only meaningful on MIMIC-IV (see "Years" in `hf_medai.data.clinical_notes`).
    """
    if how == "temporal":
        return temporal_split(
            dataset,
            test_years=test_years,
            validation_years=validation_years,
            test_fraction=fractions[2],
            validation_fraction=fractions[1],
            report=report,
        )
    if how != "patient":
        raise ValueError(f"how={how!r}: choose 'patient' or 'temporal'")
    stratify = "label"
    if not isinstance(dataset.features["label"], datasets.ClassLabel):  # regression: stratify by LOS bin
        stratify = "_stratum"
        dataset = dataset.add_column(stratify, bin_values(dataset["label"], los_bins).tolist())
    splits = group_split(dataset, group_column="subject_id", label_column=stratify, fractions=fractions, seed=seed)
    if stratify != "label":
        splits = datasets.DatasetDict({k: v.remove_columns(stratify) for k, v in splits.items()})
    if report is not None:
        report.notes["splits"] = {"how": "patient", "seed": seed, **split_summary(splits)}
    return splits


def question_split(dataset, test_fraction: float, seed: int):
    """(train, test): each question (unique id; load_qa rejects duplicates) in one split, stratified by the gold
    letter so neither split teaches or rewards a letter prior. Near-copies across splits are what the contamination
    check looks for."""
    from sklearn.model_selection import train_test_split

    letters = np.asarray(dataset["answer_index"])
    stratify = letters if np.unique(letters, return_counts=True)[1].min() >= 2 else None
    train_rows, test_rows = train_test_split(
        np.arange(len(dataset)), test_size=test_fraction, random_state=seed, stratify=stratify
    )
    return dataset.select(np.sort(train_rows)), dataset.select(np.sort(test_rows))
