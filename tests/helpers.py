"""Shared test helpers: import a recipe by path, tiny-run flags."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A run that only has to produce its folder: few bootstrap resamples, no per-step checkpoints or evaluation.
QUICK_RUN = "--n_bootstrap 20 --save_strategy no --eval_strategy no --load_best_model_at_end false".split()


def load_recipe(name: str):
    path = ROOT / "recipes" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(
    processes: int, *script_and_args: str, options: tuple[str, ...] | list[str] = (), multi_gpu: bool | None = None
) -> list[str]:
    """`python -m accelerate.commands.launch` with every setting given (no warning, no user config read) and a free
    port. Several processes: `--multi_gpu` unless told otherwise (a `--config_file` for FSDP/DeepSpeed sets its own
    type), which with ACCELERATE_USE_CPU=1 is real DDP over gloo (`--cpu` would run one process). `options` come first
    (e.g. `-q`, `--config_file X`)."""
    settings = "--num_machines 1 --mixed_precision no --dynamo_backend no".split()
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *options,
        *(["--multi_gpu"] if (processes > 1 if multi_gpu is None else multi_gpu) else []),
        "--num_processes",
        str(processes),
        *settings,
        "--main_process_port",
        str(free_port()),
        *script_and_args,
    ]
