"""Every shipped YAML config parses against its recipe, and its first line is the exact launch command."""

from pathlib import Path

import pytest
import torch
import yaml

from helpers import ROOT, load_recipe

CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*/*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_loads_and_names_its_launch_command(path: Path):
    recipe_name = path.parent.name
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "accelerate launch" in first, first
    assert f"recipes/{recipe_name}.py" in first and f"--config recipes/configs/{recipe_name}/{path.name}" in first
    recipe = load_recipe(recipe_name)
    parsers = recipe.CONFIG_DATACLASSES
    from hf_medai.config import parse_args

    values = yaml.safe_load(path.read_text())
    flags = []
    if values.get("bf16") and not torch.cuda.is_available():  # TrainingArguments refuses bf16 without a GPU
        flags, values = ["--bf16", "false"], {k: v for k, v in values.items() if k != "bf16"}
    parsed = parse_args(*parsers, args=["--config", str(path), *flags], defaults=getattr(recipe, "DEFAULTS", None))
    flat = {k: v for inst in parsed for k, v in vars(inst).items()}
    for key, value in values.items():
        got = flat[key]
        got = getattr(got, "value", got)
        assert got == value or str(got) == str(value), (key, got, value)


def test_every_recipe_has_a_config():
    for recipe in (ROOT / "recipes").glob("*.py"):
        assert (ROOT / "recipes" / "configs" / recipe.stem).is_dir(), recipe.stem
