"""group_split: no group in two splits, label mix kept, deterministic; split_report."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from hf_medai.data.splits import group_split, split_report


def _lesions(n_lesions: int = 300, seed: int = 0, melanoma_rate: float = 0.15) -> datasets.Dataset:
    """1-4 images per lesion, several lesions per patient; the label belongs to the lesion."""
    rng = np.random.default_rng(seed)
    per_lesion = rng.integers(1, 5, n_lesions)
    lesion = np.repeat(np.arange(n_lesions), per_lesion)
    label = (rng.random(n_lesions) < melanoma_rate).astype(int)[lesion]
    patient = lesion // 3
    return datasets.Dataset.from_dict(
        {
            "id": [f"img{i}" for i in range(len(lesion))],
            "lesion_id": [f"L{i}" for i in lesion],
            "patient_id": [f"P{p}" for p in patient],
            "label": label.tolist(),
        },
        features=datasets.Features(
            {
                "id": datasets.Value("string"),
                "lesion_id": datasets.Value("string"),
                "patient_id": datasets.Value("string"),
                "label": datasets.ClassLabel(names=["not_melanoma", "melanoma"]),
            }
        ),
    )


@pytest.mark.parametrize("group_column", ["lesion_id", "patient_id"])
def test_no_group_in_two_splits_and_every_row_once(group_column):
    ds = _lesions()
    dsd = group_split(ds, group_column=group_column)
    assert list(dsd) == ["train", "validation", "test"]
    groups = {name: set(split[group_column]) for name, split in dsd.items()}
    assert not groups["train"] & groups["validation"]
    assert not groups["train"] & groups["test"]
    assert not groups["validation"] & groups["test"]
    ids = [i for split in dsd.values() for i in split["id"]]
    assert sorted(ids) == sorted(ds["id"])


def test_fractions_and_label_mix_roughly_kept():
    ds = _lesions(n_lesions=600)
    dsd = group_split(ds, fractions=(0.7, 0.15, 0.15))
    overall = np.mean(ds["label"])
    for name, fraction in zip(["train", "validation", "test"], [0.7, 0.15, 0.15]):
        assert abs(len(dsd[name]) / len(ds) - fraction) < 0.04, name
        assert abs(np.mean(dsd[name]["label"]) - overall) < 0.04, name


def test_deterministic_for_a_seed():
    ds = _lesions()
    first, again, other = group_split(ds, seed=3), group_split(ds, seed=3), group_split(ds, seed=4)
    assert all(first[n]["id"] == again[n]["id"] for n in first)
    assert first["test"]["id"] != other["test"]["id"]


def test_zero_fraction_leaves_the_split_out():
    dsd = group_split(_lesions(), fractions=(0.85, 0.15, 0.0))
    assert list(dsd) == ["train", "validation"]


def test_errors():
    tiny = _lesions(n_lesions=2)
    with pytest.raises(ValueError, match="cannot fill 3 splits"):
        group_split(tiny)
    with pytest.raises(ValueError, match="sum to 1"):
        group_split(_lesions(), fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="no column 'site'"):
        group_split(_lesions(), group_column="site")
    missing = _lesions().map(lambda r, i: {"lesion_id": None if i == 0 else r["lesion_id"]}, with_indices=True)
    with pytest.raises(ValueError, match="1 rows have no 'lesion_id'"):
        group_split(missing)


def test_split_report_counts_rows_groups_and_labels():
    dsd = group_split(_lesions(), seed=1)
    report = split_report(dsd)
    assert set(report) == {"train", "validation", "test"}
    for name, split in dsd.items():
        entry = report[name]
        assert entry["rows"] == len(split)
        assert entry["groups"] == len(set(split["lesion_id"]))
        assert entry["label_counts"] == {
            "melanoma": sum(split["label"]),
            "not_melanoma": len(split) - sum(split["label"]),
        }
    assert split_report(dsd, group_column="patient_id")["test"]["groups"] <= report["test"]["groups"]


def test_string_labels_and_other_column_names():
    ds = datasets.Dataset.from_dict(
        {"stay": [f"S{i // 2}" for i in range(80)], "outcome": ["died" if i % 10 < 2 else "lived" for i in range(80)]}
    )
    dsd = group_split(ds, group_column="stay", label_column="outcome", fractions=(0.6, 0.2, 0.2))
    assert sum(len(s) for s in dsd.values()) == 80
    assert split_report(dsd, label_column="outcome", group_column="stay")["train"]["label_counts"].keys() == {
        "died",
        "lived",
    }
