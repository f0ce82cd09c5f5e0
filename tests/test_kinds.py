"""Kinds of model: a kind registered in one file gets a card, a CHAI card valid against the schema, TRIPOD cells and a
demo; old run folders (no "kind") still find theirs; the renderers key on the kind, never on the task."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml
from test_chai_card import schema  # noqa: F401  (the CHAI schema fixture)

from hf_medai.kinds import ChaiFacts, Kind, get_kind, kind_of, register_kind
from hf_medai.run_folder import RECIPE_KINDS

ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------------------------- a toy kind

TOY_TEMPLATE = """{% import "_macros.md.j2" as c %}
# Toy wound-healing scorer ({{ m.n }} test patients)

A toy model of whether a wound heals in 30 days, trained with the `{{ m.recipe }}` recipe.

## Intended use
- **Intended users:** developers checking that a new kind of model reaches every report of hf-medai.

## Out-of-scope use
- Anything clinical: it is a toy, its numbers are made up.

## Training data
{{ rows_text }}

## Evaluation
{{ c.overall_table(m, [("auroc", "AUROC")]) }}

## Bias, risks and limitations
- Made-up numbers on made-up patients; no subgroup was looked at.

## How to use
`ToyDemo(run_dir).build().launch()`

{% import "_tripod.md.j2" as tripod %}
{{ tripod.checklist(tripod_rows(kind, m)) }}
"""


class ToyDemo:
    """The toy kind's demo: one banner, one line."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)

    def build(self):
        import gradio as gr

        from hf_medai.demos.common import header

        with gr.Blocks(title="toy") as app:
            header("Toy wound-healing scorer", "A toy.")
        return app


TOY = Kind(
    name="toy_wound_scorer",
    task="tabular-classification",
    template="toy_wound_scorer.md",
    template_text=TOY_TEMPLATE,
    context=lambda m, config, run_dir: {"rows_text": f"{m['n']} made-up patients."},
    chai=ChaiFacts(
        outputs="A made-up probability that a wound heals in 30 days.",
        io="Input: three numbers. Output: a probability.",
        population="None: made-up patients.",
        risk="None: a toy that no one should use.",
        usefulness=(("auroc", "AUROC"),),
        safety=(("ece", "Expected calibration error"),),
        no_fairness="a toy has no subgroups",
        splits=None,
        bias_steps=("Nothing: it is a toy.",),
    ),
    tripod={6: "Training data (made-up patients)", 8: "First paragraph (healing in 30 days)"},
    metric_keys=("auroc", "ece"),
    demo=(__name__, "ToyDemo"),
)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    register_kind(TOY, replace=True)
    run = tmp_path_factory.mktemp("toy") / "run"
    run.mkdir()
    (run / "metrics.json").write_text(
        json.dumps(
            {
                "kind": TOY.name,
                "recipe": "toy_recipe",
                "task": TOY.task,
                "n": 40,
                "auroc": 0.71,
                "auroc_ci_low": 0.6,
                "auroc_ci_high": 0.8,
                "ece": 0.05,
                "dataset": "made-up",
                "training": {"global_step": 1},
            }
        )
    )
    (run / "run_config.yaml").write_text(yaml.safe_dump({"output_dir": str(run)}))
    return run


def test_a_kind_registered_in_one_file_gets_card_chai_card_and_demo(toy_run, schema):  # noqa: F811
    from huggingface_hub import ModelCard

    from hf_medai.cards import write_card

    write_card(toy_run)
    text = (toy_run / "README.md").read_text()
    assert "# Toy wound-healing scorer (40 test patients)" in text and "40 made-up patients." in text
    assert "| AUROC | 0.710 (0.600–0.800) |" in text
    assert (
        "| 6 | Methods | Participants: setting, eligibility criteria, treatments received | Training data "
        "(made-up patients) |" in text
    )
    results = ModelCard.load(toy_run / "README.md").data.to_dict()["model-index"][0]["results"]
    assert results[0]["task"]["type"] == "tabular-classification"
    chai = toy_run / "model_card.chai.xml"
    assert not list(schema.iter_errors(str(chai)))
    xml = chai.read_text()
    for fact in (
        "A made-up probability that a wound heals in 30 days.",
        "a toy has no subgroups",
        "Nothing: it is a toy.",
        "<ModelName>Toy wound-healing scorer (40 test patients)</ModelName>",
    ):
        assert fact in xml, fact
    gr = pytest.importorskip("gradio")
    from hf_medai.demos import build_app, demo_for

    assert isinstance(demo_for(toy_run), ToyDemo)
    assert isinstance(build_app(toy_run), gr.Blocks)


def test_old_run_folders_find_their_kind_by_recipe_or_task():
    legacy = {
        "lesion_classification": "lesion_classifier",
        "clinical_outcomes": "note_outcome",
        "clinical_pretraining": "masked_lm",
        "medqa_lora": "qa_adapter",
        "image_diffusion": "image_generator",
        "molecule_diffusion": "molecule_generator",
        "image_classification": "image_classifier",
    }
    for recipe, kind in legacy.items():
        assert kind_of({"recipe": recipe, "task": "whatever"}).name == kind
    # folders with only a task: the kind that wrote such folders before "kind" existed
    assert kind_of({"task": "image-classification"}).name == "lesion_classifier"
    assert kind_of({"task": "text-classification"}).name == "note_outcome"
    assert kind_of({"kind": "image_classifier", "recipe": "lesion_classification"}).name == "image_classifier"
    with pytest.raises(ValueError, match="known kinds"):
        kind_of({"task": "tabular-regression"})
    with pytest.raises(ValueError, match="already registered"):
        register_kind(Kind(**{**TOY.__dict__, "name": "lesion_classifier"}))


def test_every_builtin_kind_declares_everything_the_reports_need():
    from hf_medai.cards import TEMPLATES_DIR

    for name in (
        "lesion_classifier",
        "image_classifier",
        "note_outcome",
        "masked_lm",
        "qa_adapter",
        "image_generator",
        "molecule_generator",
        "lesion_fusion",
        "note_fusion",
        "masked_image_model",
    ):
        kind = get_kind(name)
        assert (TEMPLATES_DIR / kind.template).is_file(), name
        assert kind.chai.outputs and kind.chai.population and kind.chai.risk, name
        assert name in RECIPE_KINDS.values(), name  # a recipe writes it (and old folders map to it)


# ----------------------------------------------------------------------------------------------- where things live


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_chai_does_not_import_cards_and_kinds_import_no_renderer():
    assert not {"hf_medai.cards"} & _imports(ROOT / "hf_medai" / "chai.py")
    renderers = {"hf_medai.cards", "hf_medai.chai", "hf_medai.tripod", "hf_medai.demos"}
    for module in (ROOT / "hf_medai" / "kinds").glob("*.py"):
        assert not {m for m in _imports(module) if m.split(".")[:2] != ["hf_medai", "kinds"]} & renderers, module
    for module in ("reporting_text.py", "tripod.py"):
        assert not {m for m in _imports(ROOT / "hf_medai" / module) if m.startswith("hf_medai.")} - {
            "hf_medai.reporting_text"
        }, module


def test_dermatology_wording_lives_only_in_the_lesion_kind():
    words = re.compile(r"melanoma|fitzpatrick|dermoscop|skin|brinker", re.IGNORECASE)
    generic = [
        ROOT / "hf_medai" / p
        for p in (
            "cards.py",
            "chai.py",
            "tripod.py",
            "reporting_text.py",
            "kinds/base.py",
            "kinds/classifier.py",
            "kinds/image_classifier.py",
            "kinds/fusion.py",
            "kinds/note_fusion.py",
            "model_cards/image_classifier.md",
            "model_cards/_fusion.md.j2",
            "model_cards/note_fusion.md",
            "model_cards/_macros.md.j2",
            "model_cards/_tripod.md.j2",
            "demos/image_classifier.py",
            "demos/__init__.py",
        )
    ]
    for path in generic:
        found = words.search(path.read_text())
        assert not found, (path.name, found and found.group())
