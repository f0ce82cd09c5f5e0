"""Load a recipe script (recipes/ is not a package) as a module, so a benchmark can call its main() or its pieces."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_recipe(name: str):
    """recipes/<name>.py as the module `recipe_<name>`, registered in sys.modules (its dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
