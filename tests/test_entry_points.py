"""How every recipe behaves at its command line: --help, misspelled flags, and errors a user can fix."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest
from transformers import TrainingArguments

from helpers import ROOT, accelerate_launch, load_recipe

RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.py"))


def test_every_recipe_is_listed():
    assert len(RECIPES) >= 7 and "lesion_classification" in RECIPES


@pytest.mark.parametrize("name", RECIPES)
def test_help_exits_0_and_lists_config(name, capsys):
    recipe = load_recipe(name)
    with pytest.raises(SystemExit) as exit_:
        recipe.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--output_dir" in out
    assert "95% CIs" in out or name not in ("lesion_classification", "clinical_outcomes", "medqa_lora")


def test_abbreviated_or_unknown_flags_are_errors_naming_the_closest_option():
    from hf_medai.config import ConfigError, RunArguments, parse_args

    with pytest.raises(ConfigError, match=r"--learning_rat \(did you mean --learning_rate\?\)"):
        parse_args(RunArguments, TrainingArguments, args=["--learning_rat", "1e-4", "--output_dir", "x"])
    # Every unknown flag is named, not only the first; a stray value is named as such.
    with pytest.raises(ConfigError) as err:
        parse_args(RunArguments, TrainingArguments, args=["--num_train_epoch", "2", "--sed=3", "stray"])
    msg = str(err.value)
    assert "--num_train_epoch (did you mean --num_train_epochs?)" in msg and "--sed" in msg
    assert "'stray' (a value without an option)" in msg and "'2'" not in msg
    # The full names still work.
    _, args = parse_args(RunArguments, TrainingArguments, args=["--learning_rate", "1e-4", "--output_dir", "x"])
    assert args.learning_rate == 1e-4


def test_a_refused_value_is_a_config_error():
    from hf_medai.config import ConfigError

    recipe = load_recipe("lesion_classification")
    with pytest.raises(
        ConfigError, match=r"argument --task: invalid choice: 'trinary' \(choose from '?binary'?, '?multiclass'?\)"
    ):
        recipe.main(["--task", "trinary", "--output_dir", "unused"])


def _no_exit_calls(path) -> list[str]:
    """`raise SystemExit` / `sys.exit(...)` / `exit(...)` in a module, outside its `if __name__ == "__main__":`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    main_guard = {
        id(n)
        for node in tree.body
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in main_guard:
            continue
        if isinstance(node, ast.Raise) and node.exc is not None and "SystemExit" in ast.unparse(node.exc):
            found.append(f"{path.name}:{node.lineno}")
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("sys.exit", "exit", "quit"):
            found.append(f"{path.name}:{node.lineno}")
    return found


def test_library_raises_typed_errors_never_system_exit():
    modules = list((ROOT / "hf_medai").rglob("*.py"))
    assert len(modules) > 30
    found = [hit for path in modules for hit in _no_exit_calls(path)]
    assert not found, f"exits inside the library (raise an hf_medai.errors type instead): {found}"


def test_the_check_above_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import sys\ndef f():\n    raise SystemExit('x')\ndef g():\n    sys.exit(1)\n"
        "if __name__ == '__main__':\n    sys.exit(f())\n"
    )
    assert _no_exit_calls(bad) == ["bad.py:3", "bad.py:5"]


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_MEDAI_CACHE": str(tmp_path / "cache")}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_expected_error_is_one_line_without_traceback(tmp_path):
    missing = tmp_path / "no_such_data"
    out = tmp_path / "run"
    # The recipe alone, and under `accelerate launch -q` (without -q accelerate's launcher adds its own traceback).
    direct = _run(
        [sys.executable, "recipes/lesion_classification.py", "--data_dir", str(missing), "--output_dir", str(out)],
        tmp_path,
    )
    launched = _run(
        [
            *accelerate_launch(1, options=["-q"]),
            "recipes/lesion_classification.py",
            "--data_dir",
            str(missing),
            "--output_dir",
            str(out),
        ],
        tmp_path,
    )
    for result in (direct, launched):
        text = result.stdout + result.stderr
        assert result.returncode != 0, text
        assert "Traceback" not in text, text
        errors = [line for line in text.splitlines() if "error" in line.lower()]
        assert errors == [f"lesion_classification.py: error: {missing}: no such file or directory"], text
    # A usage error exits 2, as argparse's own do.
    usage = _run([sys.executable, "recipes/lesion_classification.py", "--learning_rat", "1e-4"], tmp_path)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert usage.stderr.strip().splitlines()[-1] == (
        "lesion_classification.py: error: unknown option(s): --learning_rat (did you mean --learning_rate?)"
    )


def test_cpu_runs_do_not_pin_memory():
    """Pinned memory needs an accelerator; without one Trainer warned at every evaluation."""
    import torch

    from hf_medai.config import RunArguments, parse_args

    _, args = parse_args(RunArguments, TrainingArguments, args=["--output_dir", "x"])
    assert args.dataloader_pin_memory is torch.accelerator.is_available()


def test_deepspeed_accelerator_notice_is_dropped(caplog):
    import logging

    import hf_medai  # noqa: F401  (installs the filter)

    logger = logging.getLogger("DeepSpeed")
    assert any(
        f.filter(logging.makeLogRecord({"msg": "Setting accelerator to CPU. If you have GPU..."})) is False
        for f in logger.filters
    )
    assert all(f.filter(logging.makeLogRecord({"msg": "ZeRO stage 3 enabled"})) for f in logger.filters)
