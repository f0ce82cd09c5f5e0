"""What every demo shares: the banner, the input limits, reading the run folder, and a safe launch.

Every app serves files only from its run folder (`allowed_paths`) and Gradio's own cache (uploads and the
files it returns); nothing else on the machine is reachable through `/gradio_api/file=...`.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

BANNER = "Research use only. Not a medical device."

# Input limits: generous for a real use, small enough that one request cannot exhaust the machine.
MAX_IMAGE_PIXELS = 4096 * 4096  # an uploaded image (width x height)
MAX_NOTE_CHARS = 20_000  # a pasted clinical note
MAX_MESSAGE_CHARS = 2_000  # one chat message
MAX_NEW_TOKENS = 256  # one chat reply
MAX_IMAGES = 8  # images per diffusion request
MAX_MOLECULES = 16  # molecules per request
MAX_ATOMS = 40  # atoms per molecule
MAX_STEPS = 200  # denoising steps per request
MAX_UPLOAD = "20mb"  # any uploaded file


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.json: is it a run folder written by an hf-medai recipe?")
    return json.loads(path.read_text())


def card_section(run_dir: str | Path, heading: str) -> str:
    """The text under the heading `heading` in the run folder's model card (README.md), or "" if there is none."""
    from hf_medai.run_folder import card_sections

    path = Path(run_dir) / "README.md"
    if not path.is_file():
        return ""
    return card_sections(path.read_text(encoding="utf-8")).get(heading.strip().lower(), "")


def check_range(name: str, value, low: int, high: int) -> int:
    """An integer in [low, high], or a gr.Error saying the allowed range (the UI's sliders can be bypassed)."""
    import gradio as gr

    try:
        number = int(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a whole number between {low} and {high}.") from None
    if not low <= number <= high or number != float(value):
        raise gr.Error(f"{name} must be a whole number between {low} and {high}; got {value}.")
    return number


def output_folder(kind: str) -> Path:
    """A fresh folder inside Gradio's own cache for files the app writes (never a path the user chooses)."""
    root = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
    folder = root / "hf_medai" / kind / uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def header(title: str, subtitle: str = ""):
    """The banner (on every app) and the title; call inside `gr.Blocks()`."""
    import gradio as gr

    gr.HTML(
        f'<div id="research-banner" role="alert" style="background:#b91c1c;color:white;padding:8px 12px;'
        f'border-radius:6px;font-weight:600;text-align:center">{BANNER}</div>'
    )
    gr.Markdown(f"# {title}" + (f"\n{subtitle}" if subtitle else ""))


def launch(
    app,
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    share: bool = False,
    block: bool = True,
    **kwargs,
):
    """Start `app` on host:port serving files only from `run_dir` (and Gradio's own cache)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app.queue(default_concurrency_limit=1)  # one model, one request at a time: no memory blow-up
    return app.launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=[str(Path(run_dir).resolve())],
        max_file_size=MAX_UPLOAD,
        prevent_thread_lock=not block,
        show_error=False,
        quiet=not block,
        **kwargs,
    )
