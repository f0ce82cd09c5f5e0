"""Fuse the admission note with structured EHR data of the first 24 hours (labs, vitals, demographics, admission
type) in one model, and measure what each modality brings: the note-only model and a gradient-boosting model of the
structured features are trained in the same run on the same patient split; the card's ablation table gives the
fused model's AUROC gain over the best single modality (chosen on validation) with a paired bootstrap CI.

Offline default (synthetic MIMIC-III tables incl. LABEVENTS/CHARTEVENTS, pretrained all-MiniLM-L6-v2, CPU, about
10 minutes):
    accelerate launch recipes/clinical_fusion.py --output_dir runs/clinical_fusion
Real MIMIC-III / MIMIC-IV: --data_dir <folder> (MIMIC-IV: with hosp/labevents and icu/chartevents), and a clinical
encoder, e.g. recipes/configs/clinical_fusion/mimic4_bioclinicalbert_mortality.yaml.

The prediction time is admission + `window_hours`: only measurements charted in [admit_time, admit_time + window]
enter (hf_medai.data.ehr_measurements), and admissions that ended before the prediction time (death or discharge
within the window) are left out and counted, since their outcome is known when the prediction would be made.
The run folder holds the fused model (`FusionModel.from_pretrained(DIR)`, `FusionProcessor.from_pretrained(DIR)`
turns a note and a dict of features into its inputs), the card, metrics.json (with "ablation" and
"missing_modality", and "robustness": the counterfactual note audit, EHR features held fixed), predictions.csv,
plots, run_config.yaml and ablation/note_only/.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from transformers import DataCollatorWithPadding, TrainingArguments

from hf_medai.audits import write_robustness
from hf_medai.audits.notes import note_fusion_sections
from hf_medai.clinical_tasks import DEFAULT_ENCODER, ClinicalDataArguments, check_classes, load_task, subgroup_frame
from hf_medai.config import EvalArguments, RunArguments, parse_args, resolved_config
from hf_medai.data.ehr_features import AGGREGATIONS, FEATURES, feature_columns
from hf_medai.data.ehr_measurements import load_measurements
from hf_medai.data.tabular import TabularSchema, with_tabular
from hf_medai.errors import ConfigError, run_main
from hf_medai.fusion_report import write_fusion_report
from hf_medai.fusion_runs import ABLATION_DIR, FusionArguments, train_stages
from hf_medai.hub import finish_run
from hf_medai.models.fusion import FusionProcessor
from hf_medai.models.text import default_encoder_path
from hf_medai.run_folder import begin_run

CLASSIFICATION_TASKS = ("mortality", "readmission", "los", "comorbidity")
TEXT_COLUMNS = ("input_ids", "attention_mask", "label")


@dataclass
class DataArguments(ClinicalDataArguments):
    """The notes and split (as clinical_outcomes.py), the outcome, and the structured features."""

    task: str = field(default="mortality", metadata={"help": "mortality | readmission | los | comorbidity."})
    los_bins: list[float] = field(default_factory=lambda: [3, 7, 14], metadata={"help": "Cut points of los."})
    window_hours: float = field(
        default=24.0, metadata={"help": "Prediction time = admission + this; later measurements never enter."}
    )
    ehr_features: list[str] = field(
        default_factory=lambda: [f.name for f in FEATURES],
        metadata={"help": "Labs and vitals (names in hf_medai.data.ehr_features.FEATURES)."},
    )
    ehr_aggregations: list[str] = field(
        default_factory=lambda: ["last", "min", "max"],
        metadata={"help": f"Per feature, over the window: any of {AGGREGATIONS}."},
    )
    demographics_categorical: list[str] = field(
        default_factory=lambda: ["sex", "admission_type"], metadata={"help": "Categorical admission columns fused."}
    )
    demographics_numeric: list[str] = field(default_factory=lambda: ["age"], metadata={"help": "Numeric ones."})

    def __post_init__(self):
        if self.task not in CLASSIFICATION_TASKS:
            raise ValueError(f"task must be one of {CLASSIFICATION_TASKS}, got {self.task!r}")
        bad = [a for a in self.ehr_aggregations if a not in AGGREGATIONS]
        if bad:
            raise ValueError(f"ehr_aggregations {bad}: choose from {AGGREGATIONS}")


@dataclass
class ModelArguments(FusionArguments):
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Text encoder hub id or folder. Default: all-MiniLM-L6-v2 (offline)."}
    )
    max_length: int = field(default=128, metadata={"help": "Note tokens read (the head of the note)."})


DEFAULTS = dict(
    output_dir="runs/clinical_fusion",
    num_train_epochs=2,
    head_learning_rate=1e-3,  # the fresh layers around the pretrained encoder (1e-4)
    synthetic_patients=1000,  # about 280 test admissions: a paired CI narrow enough to say something
    learning_rate=1e-4,
    weight_decay=0.01,
    warmup_steps=0.1,
    per_device_train_batch_size=16,
    per_device_eval_batch_size=64,
    eval_strategy="epoch",
    save_strategy="epoch",
    save_total_limit=1,
    load_best_model_at_end=True,
    metric_for_best_model="auroc",
    logging_steps=10,
    report_to="none",
    remove_unused_columns=False,
    dataloader_num_workers=0,
)
CONFIG_DATACLASSES = (DataArguments, ModelArguments, EvalArguments, RunArguments, TrainingArguments)


def structured_frames(splits, source, data_args, report) -> dict[str, pd.DataFrame]:
    """Per split, the window's lab/vital aggregates and the admission's demographics, in the split's row order."""
    ids = pd.concat([s.select_columns(["id", "admit_time"]).to_pandas() for s in splits.values()], ignore_index=True)
    wide = load_measurements(
        source, data_args.data_format, ids, data_args.window_hours, report, features=data_args.ehr_features
    )
    wanted = [c for c in feature_columns(data_args.ehr_features) if c.rsplit("_", 1)[1] in data_args.ehr_aggregations]
    demographics = [*data_args.demographics_categorical, *data_args.demographics_numeric]
    frames = {}
    for name, split in splits.items():
        rows = split.select_columns(["id", *demographics]).to_pandas()
        frames[name] = pd.concat(
            [rows[demographics], wide.loc[rows["id"].astype(str), wanted].reset_index(drop=True)], axis=1
        )
    return frames


def before_prediction_time(splits, window_hours: float, report):
    """Drop admissions that ended (death or discharge) before the prediction time; count them per split."""
    dropped = {}
    for name, split in splits.items():
        keep = [i for i, d in enumerate(split["los_days"]) if d is not None and d * 24 > window_hours]
        dropped[name] = len(split) - len(keep)
        splits[name] = split.select(keep)
    report.notes["ended_before_prediction_time"] = {"window_hours": window_hours, **dropped}
    return splits


def main(args=None, callbacks=None):
    data_args, model_args, eval_args, run_args, training_args = parse_args(
        *CONFIG_DATACLASSES, args=args, defaults=DEFAULTS
    )
    resuming = training_args.resume_from_checkpoint is not None  # in whichever stage it stopped
    resume, push = begin_run(training_args, run_args, stages=[ABLATION_DIR])
    encoder = model_args.model_name_or_path or default_encoder_path()

    # Data: admissions -> note (admission sections) -> patient split -> cohort at the prediction time -> features
    with training_args.main_process_first(desc="data"):
        source = data_args.source()
        task = load_task(
            data_args.split_spec(source, data_args.task, data_args.los_bins),
            data_args.skip_bad_rows,
            data_args.phi_policy,
        )
        if task.report.notes.get("format") not in ("mimic-iii", "mimic-iv"):
            raise ConfigError(f"{source}: clinical_fusion reads a MIMIC-III/IV folder (its lab and chart events)")
        check_classes([task])
        splits = before_prediction_time(dict(task.splits), data_args.window_hours, task.report)
        frames = structured_frames(splits, source, data_args, task.report)
        categorical = data_args.demographics_categorical
        schema = TabularSchema.fit(frames["train"], categorical, [c for c in frames["train"] if c not in categorical])
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(encoder, trust_remote_code=False)
        tokenizer.model_max_length = model_args.max_length

        def tokenize(batch):
            return tokenizer(batch["text"], truncation=True, max_length=model_args.max_length)

        splits = {
            name: with_tabular(split.map(tokenize, batched=True, desc=f"tokenizing {name}"), schema, frames[name])
            for name, split in splits.items()
        }

    class_names = task.class_names
    collators = (DataCollatorWithPadding(tokenizer), None)
    # The single-modality model of the ablation first (same backbone, head and training), then the fused model,
    # which starts from its backbone (hf_medai.fusion_runs says why), then the fused model with a modality withheld
    stages = train_stages(
        encoder,
        "text",
        "note_only",
        schema,
        splits,
        collators,
        training_args,
        class_names,
        TEXT_COLUMNS,
        model_args,
        resume,
        resuming,
        callbacks or (),
    )

    model = stages.fused.trainer.whole_model()
    if stages.fused.trainer.is_world_process_zero():
        facts = dict(
            recipe="clinical_fusion",
            kind="note_fusion",
            task="text-classification",
            base_model=model_args.model_name_or_path or DEFAULT_ENCODER,
            data_report=task.report.to_dict(),
            outcome=task.name,
            fused_modalities={"note": "admission note", "tabular": ", ".join(schema.names)},
            **data_args.dataset_facts(source),
        )
        subgroups = subgroup_frame(splits["test"], data_args.subgroup_columns)
        report_args = (class_names, eval_args, subgroups, facts, resume, {"primary": "note", "tabular": "EHR"})
        processor = FusionProcessor(tokenizer, schema, "text")
        write_fusion_report(model, processor, stages, splits, frames, schema, *report_args)
        # Robustness: the test notes with sex words, ages, race and insurance changed, EHR features held fixed
        if eval_args.robustness_audit:
            batch = training_args.per_device_eval_batch_size
            audit = note_fusion_sections(
                training_args.output_dir, model, processor, splits["test"], eval_args.n_bootstrap, batch
            )
            write_robustness(training_args.output_dir, audit)
        config = resolved_config(data_args, model_args, eval_args, run_args, training_args)
        finish_run(training_args.output_dir, config, training_args, push)
    stages.fused.trainer.accelerator.wait_for_everyone()
    return training_args.output_dir


if __name__ == "__main__":
    run_main(main)
