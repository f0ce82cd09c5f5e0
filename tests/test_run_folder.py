"""The run-folder contract (hf_medai/run_folder.py): begin, record, finish, read back; and Literal choices."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import pytest
import yaml

from hf_medai import run_folder
from hf_medai.config import ConfigError, RunArguments, parse_args
from hf_medai.run_folder import (
    RECIPE_KINDS,
    SCHEMA_VERSION,
    RunFolderExists,
    RunRecord,
    begin_run,
    card_sections,
    finish_run,
    load_run,
    run_record,
)

# A lesion classifier's metrics.json as recipes wrote it before the record: no kind, no schema_version.
OLD_METRICS = {
    "auroc": 0.81,
    "recipe": "lesion_classification",
    "task": "image-classification",
    "base_model": "small ViT from config (random init)",
    "dataset": "synthetic HAM10000-format sample",
    "synthetic_data": True,
    "data_report": {"rows_read": 10, "rows_skipped": 0},
    "splits": {"train": {"rows": 6}},
    "training": {"global_step": 4, "loss_curve": [0.7, 0.6]},
    "throughput": {"train_samples_per_second": 12.5, "device": "cpu"},
    "subgroups": {},
}


def test_record_round_trips_through_json():
    record = RunRecord(
        recipe="medqa_lora",
        kind="qa_adapter",
        task="text-generation",
        base_model="tiny",
        dataset="sample",
        data_report={"rows_read": 3},
        training={"global_step": 2, "loss_curve": [1.0]},
        throughput={"device": "cpu"},
    )
    again = RunRecord.from_dict(json.loads(json.dumps({**record.to_dict(), "accuracy_loglik": 0.5})))
    assert again == record and again.schema_version == SCHEMA_VERSION
    # None fields stay out of metrics.json: a generator has no base model, keys are as before plus kind/version
    assert set(record.to_dict()) == {
        "recipe",
        "kind",
        "task",
        "base_model",
        "dataset",
        "data_report",
        "training",
        "throughput",
        "schema_version",
    }


def test_an_old_metrics_json_still_loads(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(OLD_METRICS))
    (tmp_path / "run_config.yaml").write_text(yaml.safe_dump({"output_dir": str(tmp_path)}))
    metrics, config = load_run(tmp_path)
    assert metrics["kind"] == "lesion_classifier" and metrics["auroc"] == 0.81
    assert config == {"output_dir": str(tmp_path)}
    record = RunRecord.from_dict(OLD_METRICS)
    assert record.schema_version == 1 and record.kind == "lesion_classifier"
    assert record.training == OLD_METRICS["training"] and record.splits == OLD_METRICS["splits"]
    with pytest.raises(ValueError, match="lacks recipe"):
        RunRecord.from_dict({"task": "fill-mask"})


def test_every_recipe_has_a_kind():
    recipes = {p.stem for p in Path(__file__).resolve().parents[1].joinpath("recipes").glob("*.py")}
    experiments = {"augmentation_experiment", "label_efficiency"}  # over runs of another recipe, no model of their own
    assert set(RECIPE_KINDS) == recipes - experiments


def test_run_record_of_a_trainer_run_and_of_a_loop_run():
    class Throughput:
        def summary(self, world_size):
            return {"train_samples_per_second": 3.0, "world_size": world_size}

    model = SimpleNamespace(parameters=lambda: [SimpleNamespace(numel=lambda: 5), SimpleNamespace(numel=lambda: 7)])
    trainer = SimpleNamespace(
        state=SimpleNamespace(global_step=3, log_history=[{"loss": 1.0}, {"loss": 0.5}, {"eval_loss": 0.9}]),
        args=SimpleNamespace(world_size=1, device="cpu"),
    )
    record = run_record(
        "clinical_pretraining",
        "fill-mask",
        trainer=trainer,
        train_result=SimpleNamespace(training_loss=0.75),
        resumed_from=None,
        throughput=Throughput(),
        model=model,
        training={"epochs": 1.0},
        base_model="enc",
        synthetic_data=True,
    )
    assert record.kind == "masked_lm" and record.base_model == "enc"
    assert record.training == {
        "global_step": 3,
        "train_loss": 0.75,
        "resumed_from": None,
        "loss_curve": [1.0, 0.5],
        "num_parameters": 12,
        "epochs": 1.0,
    }
    assert record.throughput["train_samples_per_second"] == 3.0 and record.throughput["device"] == "cpu"
    assert "peak_rss_mb" in record.throughput

    loop = SimpleNamespace(
        global_step=8,
        loss_curve=[(4, 0.3), (8, 0.2)],
        resumed_from="x/checkpoint-4",
        ema_decay=0.999,
        throughput={"train_samples_per_second": 9.0, "device": "cpu"},
    )
    record = run_record("molecule_diffusion", "molecule-generation", loop=loop, extra_throughput={"sampling": 2.0})
    assert record.kind == "molecule_generator"
    assert record.training == {
        "global_step": 8,
        "loss_curve": [(4, 0.3), (8, 0.2)],
        "resumed_from": "x/checkpoint-4",
        "ema_decay": 0.999,
    }
    assert record.throughput == {"train_samples_per_second": 9.0, "device": "cpu", "sampling": 2.0}
    # A recipe outside RECIPE_KINDS names its kind
    assert (
        run_record("retina_classification", "image-classification", kind="image_classifier", loop=loop).kind
        == "image_classifier"
    )
    with pytest.raises(ValueError, match="pass kind="):
        run_record("retina_classification", "image-classification", loop=loop)


def _training_args(output_dir, **kw):
    return SimpleNamespace(
        output_dir=str(output_dir),
        push_to_hub=kw.get("push", False),
        seed=0,
        process_index=0,
        resume_from_checkpoint=kw.get("resume"),
    )


def test_begin_run_guards_the_folder_and_takes_the_push_off(tmp_path):
    args = _training_args(tmp_path / "run", push=True)
    assert begin_run(args, RunArguments()) == (None, True) and args.push_to_hub is False
    assert (tmp_path / "run").is_dir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    with pytest.raises(RunFolderExists, match="already holds a run"):
        begin_run(_training_args(tmp_path / "run"), RunArguments())
    begin_run(_training_args(tmp_path / "run"), RunArguments(overwrite_output_dir=True))
    assert not (tmp_path / "run" / "metrics.json").exists()
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        begin_run(_training_args(tmp_path / "run", resume="last"), RunArguments())
    with pytest.raises(ConfigError, match="no such checkpoint folder"):
        begin_run(_training_args(tmp_path / "run", resume=str(tmp_path / "nowhere")), RunArguments())


def test_finish_run_writes_the_config_checks_the_record_then_runs_the_steps(tmp_path):
    done = []
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        finish_run(tmp_path, {"seed": 1}, [done.append])
    (tmp_path / "metrics.json").write_text(json.dumps({"auroc": 0.5}))
    with pytest.raises(ValueError, match="lacks recipe, task"):
        finish_run(tmp_path, {"seed": 1}, [done.append])
    assert done == []
    (tmp_path / "metrics.json").write_text(json.dumps(OLD_METRICS))
    finish_run(tmp_path, {"seed": 1}, [lambda d: done.append(("card", d)), lambda d: done.append(("push", d))])
    assert done == [("card", tmp_path), ("push", tmp_path)]
    assert yaml.safe_load((tmp_path / "run_config.yaml").read_text()) == {"seed": 1}


def test_card_sections():
    text = "# Title\nintro\n## Intended use\nResearch.\n### Detail\nmore\n## Limitations\nMany.\n"
    sections = card_sections(text)
    assert sections["intended use"] == "Research.\n### Detail\nmore" and sections["limitations"] == "Many."


def test_run_folder_imports_nothing_above_it():
    """Low in the house: only errors, paths, config and io of hf_medai (and outside libraries)."""
    tree = ast.parse(Path(run_folder.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    ours = {m for m in imported if m.startswith("hf_medai")}
    assert ours <= {"hf_medai.errors", "hf_medai.paths", "hf_medai.config", "hf_medai.io"}, ours


@dataclass
class _Choices:
    mode: Literal["fast", "exact"] = field(default="fast", metadata={"help": "fast | exact."})
    sampler: Literal["ddpm", "ddim"] | None = field(default=None, metadata={"help": "ddpm | ddim."})


def test_literal_choices_are_checked_with_a_config_error_naming_the_flag(tmp_path):
    assert parse_args(_Choices, args=["--mode", "exact", "--sampler", "ddim"]) == (_Choices("exact", "ddim"),)
    with pytest.raises(ConfigError, match=r"argument --mode: invalid choice: 'slow'"):
        parse_args(_Choices, args=["--mode", "slow"])
    config = tmp_path / "c.yaml"
    config.write_text("sampler: euler\n")
    with pytest.raises(ConfigError, match=r"--config .*c.yaml: sampler must be one of ddpm \| ddim, got 'euler'"):
        parse_args(_Choices, args=["--config", str(config)])
    config.write_text("sampler: null\nmode: exact\n")
    assert parse_args(_Choices, args=["--config", str(config)]) == (_Choices("exact", None),)
