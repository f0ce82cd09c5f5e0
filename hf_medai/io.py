"""Atomic outputs (nothing half-written) and checkpoint folders. The run folder's guard is hf_medai.run_folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should have the user's usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Strict JSON: an undefined number must be null, never NaN, so any JSON reader can load the file."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=False) + "\n")


def write_yaml(path: str | Path, obj: Any) -> Path:
    return write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def write_csv(path: str | Path, frame) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def _json_default(o: Any):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_pretrained_atomic(obj: Any, output_dir: str | Path, **kwargs: Any) -> None:
    """`obj.save_pretrained` into a staging folder, then move each file into place by rename."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=output_dir))
    try:
        obj.save_pretrained(staging, **kwargs)
        for src in sorted(staging.rglob("*")):
            if src.is_file():
                dst = output_dir / src.relative_to(staging)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# The file each kind of checkpoint writes last: `Trainer` (MedTrainer makes every process finish first) and our loop.
CHECKPOINT_STATE_FILES = ("trainer_state.json", "loop_state.json")


def checkpoint_incomplete_reason(folder: str | Path) -> str | None:
    """None if `checkpoint-N` is complete, else why not.

    Complete: its state file (`trainer_state.json` from Trainer, `loop_state.json` from hf_medai.training), written
    after every other file of the checkpoint, is there, parses and names step N. A process killed while saving leaves
    the folder without it, or with it cut short.
    """
    folder = Path(folder)
    step = int(folder.name.split("-")[-1])
    for name in CHECKPOINT_STATE_FILES:
        if (folder / name).is_file():
            try:
                state = json.loads((folder / name).read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                return f"{name} is cut short"
            if not isinstance(state, dict) or state.get("global_step") != step:
                return f"{name} does not name step {step}"
            return None
    return f"no {' or '.join(CHECKPOINT_STATE_FILES)} (the last file a save writes)"


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` folders of a run (not `.partial` staging ones), oldest step first."""
    output_dir = Path(output_dir)
    found = (
        [p for p in output_dir.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
        if output_dir.is_dir()
        else []
    )
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def last_complete_checkpoint(output_dir: str | Path) -> tuple[str | None, list[str]]:
    """(the newest complete `checkpoint-N` folder or None, the newer incomplete ones with why they were skipped)."""
    skipped = []
    for folder in reversed(checkpoint_folders(output_dir)):
        reason = checkpoint_incomplete_reason(folder)
        if reason is None:
            return str(folder), skipped
        skipped.append(f"{folder.name} ({reason})")
    return None, skipped


def save_dataset_cache(dataset, target: str | Path, sidecar_name: str, sidecar: Any):
    """Save a `datasets.Dataset` cache with a JSON sidecar, in one rename, and return it memory-mapped.

    The staging folder is renamed into place with the sidecar already inside, so a crash or a concurrent run
    never leaves half a cache, and a folder without the sidecar (not written by us) is replaced.
    """
    import datasets

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    if target.exists() and not (target / sidecar_name).is_file():
        shutil.rmtree(target)
    try:
        dataset.save_to_disk(str(staging))
        (staging / sidecar_name).write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / sidecar_name).is_file():  # not a concurrent writer's finished cache
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return datasets.load_from_disk(str(target))
