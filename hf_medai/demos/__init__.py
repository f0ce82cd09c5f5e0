"""One Gradio app per kind of model; `build_app(run_dir)` picks it from the run folder's kind (`hf_medai.kinds`).

    hf-medai demo runs/lesions            # or: python -c "from hf_medai.demos import launch_demo; launch_demo('runs/lesions')"

Gradio, torch and the model libraries are imported only when an app is built (the CLI starts fast).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from hf_medai.demos.common import BANNER, read_metrics
from hf_medai.kinds import BUILTIN, all_kinds, kind_of

# Run folders from before metrics.json had "kind" name only their pipeline task: the app each task gets there
# (each kind declares its own app as (module, class), imported only when a demo starts).
APPS = {task: kind_of({"task": task}).demo for task in {kind.task for kind in BUILTIN} if kind_of({"task": task}).demo}

__all__ = ["APPS", "BANNER", "build_app", "demo_for", "launch_demo"]


def demo_for(run_dir: str | Path):
    """The demo object (model loaded) for a run folder; its `build()` gives the gr.Blocks."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder at {run_dir}")
    kind = kind_of(read_metrics(run_dir))
    if not kind.demo:
        raise ValueError(
            f"{run_dir} holds a {kind.name} (task {kind.task!r}), which has no demo; demos exist for "
            f"{sorted(k.name for k in all_kinds() if k.demo)}"
        )
    module, name = kind.demo
    return getattr(importlib.import_module(module), name)(run_dir)


def build_app(run_dir: str | Path):
    """gr.Blocks of the app that fits this run folder."""
    return demo_for(run_dir).build()


def launch_demo(
    run_dir: str | Path, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False, block: bool = True
):
    """Build and launch the app; it serves files only from `run_dir` (and Gradio's own cache)."""
    from hf_medai.demos.common import launch

    app = build_app(run_dir)
    launch(app, run_dir, host=host, port=port, share=share, block=block)
    return app
