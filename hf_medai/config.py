"""One way to configure every recipe: dataclass defaults < recipe defaults < YAML (`--config`) < CLI flags.

`parse_args(DataArguments, ModelArguments, TrainingArguments)` returns one instance per dataclass.
An unknown YAML key is an error that names the key and the closest valid one: a misspelled option
must never pass silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import typing
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from hf_medai.errors import ConfigError  # noqa: F401  (re-exported: recipes import it from here)

# TrainingArguments fields that never belong in a saved config (secrets, or derived at run time).
_NOT_SAVED = {"hub_token", "push_to_hub_token", "push_to_hub_model_id", "push_to_hub_organization", "local_rank"}


def _fields(dataclass_types: Sequence[type]) -> dict[str, type]:
    names: dict[str, type] = {}
    for dc in dataclass_types:
        for f in dataclasses.fields(dc):
            if f.init:
                names[f.name] = dc
    return names


def literal_choices(dataclass_types: Sequence[type]) -> dict[str, tuple]:
    """{field: its allowed values} for every field typed `Literal[...]` (or `Literal[...] | None`)."""
    out: dict[str, tuple] = {}
    for dc in dataclass_types:
        hints = typing.get_type_hints(dc)
        for f in dataclasses.fields(dc):
            hint = hints.get(f.name)
            options = [hint] if typing.get_origin(hint) is Literal else typing.get_args(hint)
            for option in options:
                if typing.get_origin(option) is Literal:
                    out[f.name] = typing.get_args(option) + ((None,) if type(None) in typing.get_args(hint) else ())
    return out


def _check_choices(values: dict[str, Any], choices: dict[str, tuple], where: str) -> None:
    for key, value in values.items():
        if key in choices and value not in choices[key]:
            allowed = " | ".join(str(c) for c in choices[key] if c is not None)
            raise ConfigError(f"{where}{key} must be one of {allowed}, got {value!r}")


def _usage_error(message: str):
    """argparse's errors (a bad value of a flag: `argument --batching: invalid choice: ...`) as a ConfigError,
    not argparse's exit."""
    raise ConfigError(message)


def load_yaml_config(path: str | Path, dataclass_types: Sequence[type]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option: value, got {type(values).__name__}")
    valid = _fields(dataclass_types)
    for key in values:
        if key not in valid:
            close = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"--config {path}: unknown key '{key}'{hint}")
    return values


def parse_args(
    *dataclass_types: type, args: Sequence[str] | None = None, defaults: dict[str, Any] | None = None
) -> tuple:
    """Parse `args` (default: sys.argv[1:]) into one instance of each dataclass.

    `defaults` are the recipe's own defaults (e.g. its num_train_epochs) which YAML and flags override.
    """
    from transformers import HfArgumentParser

    args = list(sys.argv[1:] if args is None else args)
    config_path = None
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--config":
            if i + 1 >= len(args):
                raise ConfigError("--config needs a file path")
            config_path = args[i + 1]
            i += 2
            continue
        if a.startswith("--config="):
            config_path = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1

    merged: dict[str, Any] = {}
    valid = _fields(dataclass_types)
    for key, value in (defaults or {}).items():
        if key not in valid:  # a recipe bug, not a user error
            raise ConfigError(f"recipe default '{key}' is not a field of {[d.__name__ for d in dataclass_types]}")
        merged[key] = value
    if config_path:
        merged.update(load_yaml_config(config_path, dataclass_types))
    # argparse checks `choices` only for values given as flags, not for defaults: check the YAML's here.
    _check_choices(merged, literal_choices(dataclass_types), f"--config {config_path}: " if config_path else "")

    # allow_abbrev=False: argparse would otherwise take `--learning_rat 1e-4` as --learning_rate, silently.
    parser = HfArgumentParser(dataclass_types, allow_abbrev=False)
    parser.error = _usage_error
    # argparse stores the default unconverted, so YAML lists/dicts reach the dataclass as they are.
    parser.set_defaults(**merged)
    # Read above, before argparse; declared here so that --help lists it.
    parser.add_argument("--config", metavar="YAML", help="Config file of option: value lines; flags given here win.")
    for action in parser._actions:
        # Required fields satisfied by YAML must not be demanded again on the command line.
        if action.dest in merged:
            action.required = False
        # `--help` %-formats every help string: a literal "95%" (ours or a library's) would crash it.
        if action.help:
            action.help = _PERCENT.sub(lambda m: m.group() if len(m.group()) == 2 else "%%", action.help)
    try:
        parsed = parser.parse_args_into_dataclasses(args=rest, return_remaining_strings=True)
    except ValueError as e:  # a dataclass's __post_init__ (ours or TrainingArguments') refused a value
        raise ConfigError(str(e)) from None
    *instances, remaining = parsed
    instances = instances[: len(dataclass_types)]  # then a Namespace holding the --config declared above
    if remaining:
        raise ConfigError(_unknown_options_message(remaining, parser))
    for inst in instances:
        if hasattr(inst, "deepspeed_plugin"):
            _load_models_whole_under_zero3(inst)
            _no_pinned_memory_without_accelerator(inst)
    return tuple(instances)


# A lone "%" in a help string; "%%" and "%(name)s" are argparse's own and stay.
_PERCENT = re.compile(r"%%|%\(|%")


def _unknown_options_message(remaining: list[str], parser) -> str:
    """Name every unknown option, each with the closest valid one."""
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    parts = []
    for i, token in enumerate(remaining):
        if not token.startswith("-"):
            before = remaining[i - 1] if i else ""
            if not (before.startswith("-") and "=" not in before):  # not the value of the unknown option before it
                parts.append(f"{token!r} (a value without an option)")
            continue
        name = token.split("=", 1)[0]
        close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
        parts.append(f"{name}" + (f" (did you mean {close[0]}?)" if close else ""))
    return "unknown option(s): " + "; ".join(parts)


def _no_pinned_memory_without_accelerator(training_args) -> None:
    """Trainer pins DataLoader memory by default; without an accelerator that does nothing but warn at every
    evaluation ("'pin_memory' argument is set as true but no accelerator is found")."""
    import torch

    if training_args.dataloader_pin_memory and (training_args.use_cpu or not torch.accelerator.is_available()):
        training_args.dataloader_pin_memory = False


def _load_models_whole_under_zero3(training_args) -> None:
    """Under a DeepSpeed ZeRO-3 launch, TrainingArguments makes transformers build every model inside
    `deepspeed.zero.Init` (partitioned as it loads, a collective), whatever the config's `zero3_init_flag` says.
    The recipes load models on the main process alone (data preparation, evaluation before and after training), which
    would wait forever for the other processes. Honour `zero3_init_flag: false`: models load whole, and DeepSpeed
    partitions them when training starts; refuse `true`."""
    plugin = getattr(training_args, "deepspeed_plugin", None)
    if plugin is None or plugin.zero_stage != 3:
        return
    if plugin.zero3_init_flag:
        raise ConfigError(
            "DeepSpeed zero3_init_flag: true is not supported by the hf-medai recipes: it partitions "
            "each model while it loads, which needs every process to load it at the same moment, and "
            "the recipes load models on the main process alone for evaluation. Set zero3_init_flag: "
            "false (as recipes/accelerate/deepspeed_zero3.yaml does): every process then loads the base "
            "model whole into CPU memory, and DeepSpeed partitions it when training starts."
        )
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "value") and value.__class__.__module__ != "builtins":  # enums
        return value.value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def resolved_config(*instances: Any) -> dict[str, Any]:
    """A flat {option: value} of every init field: what the run really used, loadable again by --config."""
    out: dict[str, Any] = {}
    for inst in instances:
        for f in dataclasses.fields(inst):
            if not f.init or f.name in _NOT_SAVED:
                continue
            out[f.name] = _plain(getattr(inst, f.name))
    return out


@dataclasses.dataclass
class RunArguments:
    """Options every recipe shares that `TrainingArguments` does not have."""

    overwrite_output_dir: bool = dataclasses.field(
        default=False, metadata={"help": "Replace an existing run folder (default: refuse to touch it)."}
    )


@dataclasses.dataclass
class EvalArguments:
    """How predictive models are scored (shared by every classifier recipe)."""

    n_bootstrap: int = dataclasses.field(default=1000, metadata={"help": "Bootstrap resamples for 95% CIs (0: none)."})
    threshold_method: str = dataclasses.field(
        default="youden", metadata={"help": "How the decision threshold is chosen on validation: youden | fixed."}
    )
    threshold: float = dataclasses.field(default=0.5, metadata={"help": "Threshold used with threshold_method=fixed."})
    min_group_size: int = dataclasses.field(
        default=30, metadata={"help": "Subgroups smaller than this are flagged as too small to judge."}
    )
    min_group_class_count: int = dataclasses.field(
        default=10,
        metadata={
            "help": "A subgroup's metric is compared only with this many of the cases it depends "
            "on (positives for sensitivity, negatives for specificity, ...)."
        },
    )

    robustness_audit: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "After the test scores, audit what the model reacts to (image artefacts, counterfactual notes): "
            "metrics.json 'robustness' and the card's 'Robustness and shortcuts'. false skips it (the card says so); "
            "`hf-medai audit RUN_DIR` runs it later."
        },
    )

    def __post_init__(self):
        if self.threshold_method not in ("youden", "fixed"):
            raise ConfigError(f"threshold_method must be youden or fixed, got {self.threshold_method!r}")
        if self.n_bootstrap < 0:
            raise ConfigError("n_bootstrap must be >= 0")
        if self.min_group_class_count < 1:
            raise ConfigError("min_group_class_count must be >= 1")
