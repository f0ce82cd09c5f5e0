"""Where hf-medai keeps what it generates or converts once (sample data, image caches, converted models)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("HF_MEDAI_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "hf_medai"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
