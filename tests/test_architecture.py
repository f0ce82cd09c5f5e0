"""The house's shape, checked from the source: every module has a layer, imports only run down (or sideways within
a layer), no two modules import each other even indirectly, and no module grows past MAX_LINES.

The graph is read with `ast`, not by importing: every `import x` and `from x import y` anywhere in a module, inside
functions too (a lazy import is still a dependency; it only moves the failure to run time).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_medai"

# ---------------------------------------------------------------------------------------------------------------
# Layers, lowest first. A module may import from its own layer and the layers above it in this table (lower in the
# house), never from one below it. A new module must be placed here: the first matching prefix decides
# (a prefix ending in "." matches a package and everything under it; otherwise the exact module).
# ---------------------------------------------------------------------------------------------------------------
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "hf_medai",
            "hf_medai.errors",
            "hf_medai.paths",
            "hf_medai.io",
            "hf_medai.config",
            "hf_medai.throughput",
            "hf_medai.run_folder",
        ),
    ),
    ("data", ("hf_medai.data.", "hf_medai.clinical_tasks", "hf_medai.image_folder", "hf_medai.lesion_split")),
    ("models", ("hf_medai.models.",)),
    ("pipelines", ("hf_medai.pipelines.",)),
    ("training", ("hf_medai.training", "hf_medai.trainer")),
    ("evaluation", ("hf_medai.evaluation.",)),
    (
        "reporting",
        (
            "hf_medai.run_outputs",
            "hf_medai.tripod",
            "hf_medai.chai",
            "hf_medai.cards",
            "hf_medai.run_summary",
            "hf_medai.external_eval",
            "hf_medai.note_outcome_report",
            "hf_medai.image_classification",
            "hf_medai.image_pretraining",
            "hf_medai.fusion_runs",
            "hf_medai.fusion_report",
            "hf_medai.reporting_text",
            "hf_medai.kinds.",
        ),
    ),
    ("apps", ("hf_medai.hub", "hf_medai.demos.", "hf_medai.lesion_runs", "hf_medai.audits", "hf_medai.audits.")),
    ("cli", ("hf_medai.cli",)),
]
# Import cycles known and owned elsewhere, each with the change that removes it. Keep this empty.
KNOWN_CYCLES: list[frozenset[str]] = []
MAX_LINES = 450


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    """Index in LAYERS of the first prefix that matches `module`, or None."""
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix.endswith(".") and (module + ".").startswith(prefix)):
                return index
    return None


def imports_of(path: Path, module: str, modules: set[str]) -> set[str]:
    """The hf_medai modules `path` imports: `from a.b import c` names a.b.c when that is a module, else a.b."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            # `import hf_medai.data.lesions` or a name below a module: the longest known module it starts with.
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    return {m: imports_of(p, m, modules) for m, p in files.items()}


def unplaced(graph: dict[str, set[str]]) -> list[str]:
    return sorted(m for m in graph if layer_of(m) is None)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a (layer) -> b (layer)' for each import from a lower layer into a higher one."""
    out = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = layer_of(module), layer_of(target)
            if low is not None and high is not None and high > low:
                out.append(f"{module} ({LAYERS[low][0]}) -> {target} ({LAYERS[high][0]})")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def long_modules(root: Path = PACKAGE, limit: int = MAX_LINES) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            out.append(f"{path.relative_to(root.parent)}: {lines} lines")
    return out


# ---------------------------------------------------------------------------------------------------------------
# The checks on hf_medai
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_every_module_has_a_layer(graph):
    assert not unplaced(graph), f"place these modules in LAYERS (tests/test_architecture.py): {unplaced(graph)}"


def test_no_import_runs_up_the_layers(graph):
    assert not upward_imports(graph), "imports from a lower layer into a higher one:\n" + "\n".join(
        upward_imports(graph)
    )


def test_no_import_cycles(graph):
    found = [c for c in cycles(graph) if frozenset(c) not in KNOWN_CYCLES]
    assert not found, f"modules that import each other (directly or through others): {found}"


def test_no_module_over_the_line_limit():
    assert not long_modules(), f"split these modules along a seam (max {MAX_LINES} lines): {long_modules()}"


# ---------------------------------------------------------------------------------------------------------------
# The checks can fail
# ---------------------------------------------------------------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "hf_medai"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    for folder in {p.parent for p in root.rglob("*.py")} - {root}:
        (folder / "__init__.py").touch()
    return root


def test_a_bad_edge_is_caught(tmp_path):
    root = _package(
        tmp_path,
        {
            "data/lesions.py": "def f():\n    from hf_medai.evaluation.fairness import age_band\n",  # lazy, still upward
            "evaluation/fairness.py": "from ..data import lesions\n",  # relative, downward: fine
            "cards.py": "import hf_medai.chai\n",
            "chai.py": "from hf_medai import cards\n",
            "hub.py": "from hf_medai.cli import main\n",
            "cli.py": "",
            "newthing.py": "",
        },
    )
    graph = import_graph(root)
    assert graph["hf_medai.data.lesions"] == {"hf_medai.evaluation.fairness"}
    assert graph["hf_medai.evaluation.fairness"] == {"hf_medai.data.lesions"}
    assert upward_imports(graph) == [
        "hf_medai.data.lesions (data) -> hf_medai.evaluation.fairness (evaluation)",
        "hf_medai.hub (apps) -> hf_medai.cli (cli)",
    ]
    assert sorted(cycles(graph)) == [
        ["hf_medai.cards", "hf_medai.chai"],
        ["hf_medai.data.lesions", "hf_medai.evaluation.fairness"],
    ]
    assert unplaced(graph) == ["hf_medai.newthing"]


def test_a_long_module_is_named(tmp_path):
    root = _package(tmp_path, {"data/big.py": "x = 1\n" * (MAX_LINES + 1), "data/ok.py": "x = 1\n" * MAX_LINES})
    assert long_modules(root) == [f"hf_medai/data/big.py: {MAX_LINES + 1} lines"]
