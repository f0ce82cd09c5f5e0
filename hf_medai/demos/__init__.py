"""One Gradio app per kind of run folder; `build_app(run_dir)` picks it from metrics.json's "task".

    hf-medai demo runs/lesions            # or: python -c "from hf_medai.demos import launch_demo; launch_demo('runs/lesions')"

Gradio, torch and the model libraries are imported only when an app is built (the CLI starts fast).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from hf_medai.demos.common import BANNER, read_metrics

# metrics.json "task" -> (module, demo class)
APPS = {
    "image-classification": ("hf_medai.demos.lesion", "LesionDemo"),
    "text-classification": ("hf_medai.demos.clinical", "ClinicalDemo"),
    "text-generation": ("hf_medai.demos.qa", "QADemo"),
    "image-generation": ("hf_medai.demos.image_diffusion", "ImageDiffusionDemo"),
    "molecule-generation": ("hf_medai.demos.molecules", "MoleculeDemo"),
}

__all__ = ["APPS", "BANNER", "build_app", "demo_for", "launch_demo"]


def demo_for(run_dir: str | Path):
    """The demo object (model loaded) for a run folder; its `build()` gives the gr.Blocks."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder at {run_dir}")
    task = read_metrics(run_dir).get("task")
    if task not in APPS:
        raise ValueError(f"{run_dir}/metrics.json has task {task!r}; demos exist for {sorted(APPS)}")
    module, name = APPS[task]
    return getattr(importlib.import_module(module), name)(run_dir)


def build_app(run_dir: str | Path):
    """gr.Blocks of the app that fits this run folder."""
    return demo_for(run_dir).build()


def launch_demo(run_dir: str | Path, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
                block: bool = True):
    """Build and launch the app; it serves files only from `run_dir` (and Gradio's own cache)."""
    from hf_medai.demos.common import launch

    app = build_app(run_dir)
    launch(app, run_dir, host=host, port=port, share=share, block=block)
    return app
