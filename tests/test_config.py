"""Config precedence: dataclass defaults < recipe defaults < YAML < command-line flags."""

import dataclasses

import pytest
import yaml
from transformers import TrainingArguments

from hf_medai.config import ConfigError, EvalArguments, parse_args, resolved_config


@dataclasses.dataclass
class Demo:
    task: str = "binary"
    epochs_hint: int = 1
    columns: list[str] = dataclasses.field(default_factory=lambda: ["sex"])


def _parse(tmp_path, yaml_values=None, flags=()):
    args = list(flags)
    if yaml_values is not None:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump(yaml_values))
        args = ["--config", str(cfg), *args]
    return parse_args(
        Demo, TrainingArguments, args=args, defaults={"learning_rate": 0.123, "output_dir": str(tmp_path / "o")}
    )


def test_precedence_defaults_yaml_flags(tmp_path):
    demo, ta = _parse(tmp_path)
    assert (demo.task, ta.learning_rate) == ("binary", 0.123)  # recipe default beats dataclass default
    demo, ta = _parse(tmp_path, {"task": "multiclass", "learning_rate": 0.5, "columns": ["sex", "age_band"]})
    assert (demo.task, ta.learning_rate, demo.columns) == ("multiclass", 0.5, ["sex", "age_band"])
    demo, ta = _parse(
        tmp_path, {"task": "multiclass", "learning_rate": 0.5}, ["--learning_rate", "0.7", "--task", "binary"]
    )
    assert (demo.task, ta.learning_rate) == ("binary", 0.7)  # flags win over YAML


def test_unknown_yaml_key_names_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'learnin_rate'.*did you mean 'learning_rate'"):
        _parse(tmp_path, {"learnin_rate": 0.1})


def test_unknown_flag_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"--taks \(did you mean --task\?\)"):
        _parse(tmp_path, None, ["--taks", "binary"])


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_args(Demo, args=["--config", str(bad)])
    with pytest.raises(ConfigError, match="no such file"):
        parse_args(Demo, args=["--config", str(tmp_path / "nope.yaml")])


def test_resolved_config_round_trips(tmp_path):
    demo, ta = _parse(tmp_path, {"task": "multiclass"}, ["--seed", "7"])
    saved = resolved_config(demo, ta)
    assert "hub_token" not in saved
    path = tmp_path / "run_config.yaml"
    path.write_text(yaml.safe_dump(saved))
    demo2, ta2 = parse_args(Demo, TrainingArguments, args=["--config", str(path)])
    assert demo2 == demo
    assert (ta2.seed, ta2.learning_rate, ta2.output_dir) == (7, 0.123, ta.output_dir)


def test_eval_arguments_validate():
    with pytest.raises(ConfigError):
        EvalArguments(threshold_method="magic")
