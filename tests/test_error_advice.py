"""Advice in an error message must be followable from the command line of every recipe that can show it.

The data layer's messages recommend options ("pass largest_fragment=True", "use note_sections='full'", "raise
max_length", "--flag"). A user meets them while running a recipe, so each advised option must be a flag of that
recipe, and the recipe must hand it to the loader. The first test finds the advice by reading the string literals
(not the docstrings) of hf_medai/data/, finds which recipes reach each module through their imports, and parses each
advised flag and value with the recipe's own parser. The others follow the advice literally on a file that needs it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from helpers import ROOT, load_recipe
from hf_medai.config import parse_args
from hf_medai.data.report import DataError

DATA = ROOT / "hf_medai" / "data"
# "<verb> name=value" or "<verb> name_with_underscore"; bare words ("pass the file") are not options.
ADVICE = re.compile(
    r"\b(?i:pass|use|set|raise|increase|lower|reduce)\s+`?([a-z][a-z0-9_]*)"
    r"(?:=(['\"]?)([A-Za-z0-9_][A-Za-z0-9_.+-]*)?\2)?"
)
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9_]*)")
# Loader keywords that every recipe spells differently, by one convention: the data file's format is data_format.
RECIPE_FLAG = {"format": "data_format"}


def _literals(path: Path) -> list[str]:
    """The text of every string literal in a module except docstrings; an f-string's fields read as "{}"."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    inside_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            texts.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and id(node) not in inside_fstrings
        ):
            texts.append(node.value)
    return texts


def advice_by_module() -> dict[str, dict[str, str]]:
    """{"hf_medai.data.molecules": {"largest_fragment": "True", ...}}: advised option -> advised value ("" if none)."""
    found: dict[str, dict[str, str]] = {}
    for path in sorted(DATA.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for text in _literals(path):
            for m in ADVICE.finditer(text):
                name, has_value = m.group(1), m.group(0).count("=") > 0
                if has_value or "_" in name:
                    found.setdefault(module, {})[name] = m.group(3) or ""
            for m in FLAG.finditer(text):
                found.setdefault(module, {}).setdefault(m.group(1), "")
    return found


def _module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path) -> set[str]:
    """hf_medai modules a file imports at its top level (what runs whenever the file is imported)."""
    out = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hf_medai"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}")}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("hf_medai")}
    return out


def reached_modules(recipe_path: Path) -> set[str]:
    """Every hf_medai module a recipe imports, directly or through other hf_medai modules (and their packages)."""
    seen: set[str] = set()
    todo = list(_imports(recipe_path))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        path = _module_file(name)
        if path is not None:
            todo += list(_imports(path))
    return seen


RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.py"))


def test_the_scan_finds_the_advice_it_is_about():
    advice = advice_by_module()
    assert advice["hf_medai.data.molecules"]["largest_fragment"] == "True"
    assert advice["hf_medai.data.qa_formats"]["medmcqa_cop_base"] == "0"
    assert advice["hf_medai.data.clinical_notes"]["note_sections"] == "full"
    # "Pass format= explicitly": the recipe's --data_format
    assert advice["hf_medai.data.lesion_formats"]["format"] == ""
    assert "the" not in {name for names in advice.values() for name in names}  # "pass the file" is no option
    assert {"hf_medai.data.molecules", "hf_medai.data.medqa"} <= reached_modules(
        ROOT / "recipes" / "molecule_diffusion.py"
    ) | reached_modules(ROOT / "recipes" / "medqa_lora.py")


def _advised(recipe_name: str) -> dict[str, str]:
    advice = advice_by_module()
    modules = reached_modules(ROOT / "recipes" / f"{recipe_name}.py")
    return {name: value for module in sorted(modules & set(advice)) for name, value in advice[module].items()}


# Advice a recipe reaches through its imports but whose loader call it never makes, or whose options another run
# folder holds: not flags of that recipe.
NOT_THIS_RECIPES_ADVICE = {
    # its data and split settings are the diffusion run's (recipes/image_diffusion.py has these flags)
    "augmentation_experiment": {"data_format", "task"},
    # passes the lesion classifier's flags through --lesion_args to runs of its own
    "label_efficiency": {"data_format", "task"},
    # reads image folders only: it reaches data/lesions.py for the image decoding (with_images), never its loaders
    "image_classification": {"data_format", "task"},
    # reads lesion tables for their images only, always with task="multiclass" (every labelled row), labels dropped
    "image_pretraining": {"task"},
}
# Recipes that reach no data module giving advice have nothing to check; every other recipe is.
ADVISED_RECIPES = [name for name in RECIPES if _advised(name)]


def test_recipes_with_advice_to_check():
    assert {"lesion_classification", "clinical_outcomes", "medqa_lora", "molecule_diffusion"} <= set(ADVISED_RECIPES)


@pytest.mark.parametrize("recipe_name", ADVISED_RECIPES)
def test_every_advised_option_is_a_flag_of_the_recipe(recipe_name, tmp_path):
    advised = _advised(recipe_name)
    recipe = load_recipe(recipe_name)
    fields = {f for dc in recipe.CONFIG_DATACLASSES for f in dc.__dataclass_fields__}
    advised = {
        name: value
        for name, value in advised.items()
        if RECIPE_FLAG.get(name, name) not in NOT_THIS_RECIPES_ADVICE.get(recipe_name, ())
    }
    flags = {name: RECIPE_FLAG.get(name, name) for name in advised}
    assert not {flag for flag in flags.values() if flag not in fields}, (
        f"{recipe_name} can raise errors advising options it has no flag for"
    )
    for name, value in advised.items():
        if not value:
            continue  # advice without a value ("pass format=", "raise max_length"): the flag exists, checked above
        parsed = parse_args(
            *recipe.CONFIG_DATACLASSES,
            args=["--output_dir", str(tmp_path), f"--{flags[name]}", value],
            defaults=getattr(recipe, "DEFAULTS", None),
        )
        got = next(getattr(p, flags[name]) for p in parsed if hasattr(p, flags[name]))
        assert str(got).lower() == value.lower(), (recipe_name, name, value, got)


class _Loaded(Exception):
    """Stops a recipe right after its loader returned, carrying what the loader returned."""


def _stop_after(recipe, loader_name: str, monkeypatch):
    real = getattr(recipe, loader_name)

    def load_then_stop(*args, **kwargs):
        raise _Loaded(real(*args, **kwargs))

    monkeypatch.setattr(recipe, loader_name, load_then_stop)


def test_molecule_recipe_follows_the_largest_fragment_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MEDAI_CACHE", str(tmp_path / "cache"))
    salts = tmp_path / "salts.smi"
    salts.write_text("CCO\nCCN.Cl\nCCO.O\n")
    recipe = load_recipe("molecule_diffusion")
    _stop_after(recipe, "load_molecules", monkeypatch)
    args = ["--data_path", str(salts)]
    with pytest.raises(DataError, match="pass largest_fragment=True"):
        recipe.main([*args, "--output_dir", str(tmp_path / "run1")])
    with pytest.raises(_Loaded) as loaded:
        recipe.main([*args, "--output_dir", str(tmp_path / "run2"), "--largest_fragment", "True"])
    dataset, _, report = loaded.value.args[0]
    assert dataset["smiles"] == ["CCO", "CCN", "CCO"] and report.notes["fragments_removed"] == 2


def test_medqa_recipe_follows_the_medmcqa_cop_base_advice(tmp_path, monkeypatch):
    import json

    rows = [
        {"id": f"q{c}", "question": f"Question {c}?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": c}
        for c in (1, 2, 3)
    ]
    path = tmp_path / "medmcqa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = load_recipe("medqa_lora")
    _stop_after(recipe, "load_qa", monkeypatch)
    args = ["--data_dir", str(path)]
    with pytest.raises(DataError, match="pass medmcqa_cop_base=0 or 1"):
        recipe.main([*args, "--output_dir", str(tmp_path / "run1")])
    with pytest.raises(_Loaded) as loaded:
        recipe.main([*args, "--output_dir", str(tmp_path / "run2"), "--medmcqa_cop_base", "1"])
    dataset, report = loaded.value.args[0]
    assert report.notes["medmcqa_cop_base"] == 1 and dataset["answer_text"] == ["a", "b", "c"]
