"""The CHAI Applied Model Card (model_card.chai.xml) of every recipe's kind of run folder validates against the CHAI
v0.2 schema and carries metrics.json's numbers; predictive models' Hub cards end with all 27 TRIPOD+AI items.

One tiny run per recipe (a few optimizer steps on the bundled/synthetic sample data, as in each recipe's own test).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from helpers import QUICK_RUN, load_recipe
from hf_medai.chai import FILENAME, NS
from hf_medai.tripod import ITEMS, tripod_rows

SCHEMA = Path(__file__).resolve().parent / "data" / "chai-applied-model-card-v0.2.xsd"
KINDS = [
    "lesion_classification",
    "clinical_outcomes",
    "clinical_pretraining",
    "medqa_lora",
    "image_diffusion",
    "molecule_diffusion",
]
PREDICTIVE = ["lesion_classification", "clinical_outcomes", "medqa_lora"]


@pytest.fixture(scope="module")
def schema():
    xmlschema = pytest.importorskip("xmlschema")
    # The schema imports the W3C signature schema from the network for its optional ds:Signature; offline, drop
    # both the import and that optional element (a card without a signature validates the same).
    text = SCHEMA.read_text()
    text = re.sub(r'<xs:import namespace="http://www.w3.org/2000/09/xmldsig#"[^>]*/>', "", text)
    text = text.replace('<xs:element ref="ds:Signature" minOccurs="0" />', "")
    assert "ds:Signature" not in text and "w3.org/TR" not in text
    return xmlschema.XMLSchema(text)


def _lesion(root: Path, out: Path):
    from hf_medai.data.synthetic.lesions import write_ham10000

    ham = write_ham10000(root / "ham", n=160, seed=1)
    load_recipe("lesion_classification").main(
        [
            "--data_dir",
            str(ham),
            "--output_dir",
            str(out),
            "--max_steps",
            "3",
            "--image_size",
            "32",
            "--from_scratch",
            "true",
            "--per_device_train_batch_size",
            "16",
            *QUICK_RUN,
        ]
    )


def _clinical(root: Path, out_outcomes: Path, out_pretraining: Path):
    from test_clinical_recipes import FAST, tiny_bert

    from hf_medai.data.synthetic.ehr import write_mimic

    mimic = write_mimic(root / "mimic3", "mimic-iii", n_patients=100, seed=1)
    load_recipe("clinical_outcomes").main(
        [
            "--data_dir",
            str(mimic),
            "--model_name_or_path",
            str(tiny_bert(root / "enc")),
            "--output_dir",
            str(out_outcomes),
            *FAST,
            "--task",
            "mortality",
            "--max_length",
            "64",
            "--max_steps",
            "3",
        ]
    )
    load_recipe("clinical_pretraining").main(
        [
            "--data_dir",
            str(mimic),
            "--model_name_or_path",
            str(tiny_bert(root / "mlm", masked_lm=True)),
            "--output_dir",
            str(out_pretraining),
            "--max_length",
            "32",
            "--max_steps",
            "3",
            "--per_device_train_batch_size",
            "8",
            "--eval_windows",
            "32",
            "--n_bootstrap",
            "20",
            "--save_strategy",
            "no",
        ]
    )


def _medqa(root: Path, out: Path):
    from hf_medai.data.medqa import sample_path
    from hf_medai.models.causal_lm import tiny_llama

    model, tokenizer = tiny_llama(seed=0)
    model.save_pretrained(root / "llama")
    tokenizer.save_pretrained(root / "llama")
    questions = root / "medqa.jsonl"
    questions.write_text("\n".join(sample_path("medqa").read_text().splitlines()[:16]) + "\n")
    load_recipe("medqa_lora").main(
        [
            "--model_name_or_path",
            str(root / "llama"),
            "--data_dir",
            str(questions),
            "--output_dir",
            str(out),
            "--max_steps",
            "3",
            "--n_bootstrap",
            "20",
            "--min_group_size",
            "2",
            "--generate_max_new_tokens",
            "4",
            "--safety_max_new_tokens",
            "6",
            "--logging_steps",
            "1",
        ]
    )


def _image_diffusion(root: Path, out: Path):
    from hf_medai.data.lesion_formats import BINARY_CLASSES
    from hf_medai.data.synthetic.lesions import write_ham10000
    from hf_medai.models.vision import build_image_classifier

    ham = write_ham10000(root / "ham2", n=160, seed=5)
    torch.manual_seed(0)
    model, processor = build_image_classifier(None, BINARY_CLASSES, image_size=32)
    model.save_pretrained(root / "clf")
    processor.save_pretrained(root / "clf")
    load_recipe("image_diffusion").main(
        [
            "--data_dir",
            str(ham),
            "--output_dir",
            str(out),
            "--classifier_dir",
            str(root / "clf"),
            "--resolution",
            "16",
            "--block_out_channels",
            "16",
            "32",
            "--max_steps",
            "3",
            "--save_strategy",
            "no",
            "--sample_every",
            "0",
            "--per_device_train_batch_size",
            "16",
            "--eval_images_per_class",
            "4",
            "--eval_inference_steps",
            "2",
            "--eval_batch_size",
            "8",
            "--warmup_steps",
            "0",
            "--logging_steps",
            "1",
            "--grid_images_per_class",
            "2",
        ]
    )


def _molecules(root: Path, out: Path):
    load_recipe("molecule_diffusion").main(
        [
            "--output_dir",
            str(out),
            "--limit",
            "48",
            "--hidden_size",
            "16",
            "--num_layers",
            "2",
            "--max_steps",
            "3",
            "--save_strategy",
            "no",
            "--per_device_train_batch_size",
            "16",
            "--num_eval_molecules",
            "8",
            "--eval_batch_size",
            "8",
            "--eval_inference_steps",
            "10",
            "--logging_steps",
            "1",
            "--warmup_steps",
            "0",
            "--num_train_timesteps",
            "100",
        ]
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("chai")
    out = {kind: root / "runs" / kind for kind in KINDS}
    _lesion(root, out["lesion_classification"])
    _clinical(root, out["clinical_outcomes"], out["clinical_pretraining"])
    _medqa(root, out["medqa_lora"])
    _image_diffusion(root, out["image_diffusion"])
    _molecules(root, out["molecule_diffusion"])
    return out


def _results(path: Path) -> dict[str, list[dict]]:
    """KeyMetrics group -> the parsed ValueJson of each MetricResult."""
    root = ET.parse(path).getroot()
    groups = {}
    for group in root.find(f"{{{NS}}}KeyMetrics"):
        groups[group.tag.split("}")[1]] = [
            json.loads(r.findtext(f"{{{NS}}}ValueJson")) for r in group.iter(f"{{{NS}}}MetricResult")
        ]
    return groups


@pytest.mark.parametrize("kind", KINDS)
def test_every_recipe_writes_a_chai_card_valid_against_the_schema(runs, schema, kind):
    path = runs[kind] / FILENAME
    assert path.is_file(), f"{kind}: write_card did not write {FILENAME}"
    errors = list(schema.iter_errors(str(path)))
    assert not errors, f"{kind}: {errors[0]}"
    groups = _results(path)
    assert set(groups) == {"UsefulnessUsabilityEfficacy", "FairnessEquity", "SafetyReliability"}
    assert all(groups.values())  # at least one result each, every ValueJson parsed as JSON
    root = ET.parse(path).getroot()
    # Uses and warnings come from the Hub card's own sections, not from placeholders.
    readme = (runs[kind] / "README.md").read_text()
    intended = root.findtext(f"{{{NS}}}UsesAndDirections/{{{NS}}}IntendedUseAndWorkflow")
    out_of_scope = root.findtext(f"{{{NS}}}UsesAndDirections/{{{NS}}}CautionedOutOfScopeSettings")
    limits = root.findtext(f"{{{NS}}}Warnings/{{{NS}}}KnownRisksAndLimitations")
    for text in (intended.split("\n\nClinical workflow")[0], out_of_scope, limits.split("\n\n")[0]):
        assert len(text) > 40 and text.splitlines()[0] in readme
    data = root.findtext(f"{{{NS}}}TrustIngredients/{{{NS}}}AISystemFacts/{{{NS}}}DevelopmentDataCharacterization")
    assert data and "To be supplied" not in data
    # Both cards pass the push gates (PHI scanner included) and travel with the model.
    from hf_medai.hub import plan_push

    assert {"README.md", FILENAME} <= set(plan_push(runs[kind]).upload)


def test_key_metrics_round_trip_from_metrics_json(runs):
    expected = {
        "lesion_classification": ("UsefulnessUsabilityEfficacy", "auroc"),
        "clinical_outcomes": ("UsefulnessUsabilityEfficacy", "auroc"),
        "clinical_pretraining": ("UsefulnessUsabilityEfficacy", "perplexity"),
        "medqa_lora": ("UsefulnessUsabilityEfficacy", "accuracy_loglik"),
        "image_diffusion": ("SafetyReliability", "memorised_fraction"),
        "molecule_diffusion": ("UsefulnessUsabilityEfficacy", "validity"),
    }
    for kind, (group, key) in expected.items():
        m = json.loads((runs[kind] / "metrics.json").read_text())
        by_metric = {r.get("metric"): r for r in _results(runs[kind] / FILENAME)[group]}
        assert by_metric[key]["value"] == m[key], kind  # exact: the float goes through JSON unchanged
        if f"{key}_ci_low" in m:
            assert by_metric[key]["ci_low"] == m[f"{key}_ci_low"] and by_metric[key]["ci_high"] == m[f"{key}_ci_high"]
    # Fairness: the worst group per subgroup column, as metrics.json has it.
    m = json.loads((runs["clinical_outcomes"] / "metrics.json").read_text())
    fairness = _results(runs["clinical_outcomes"] / FILENAME)["FairnessEquity"]
    sex = next(r for r in fairness if r.get("subgroup_column") == "sex" and r["metric"] == "auroc")
    assert sex["worst_group"] == m["subgroups"]["sex"]["worst"]["auroc"]["group"]
    assert sex["worst_value"] == m["subgroups"]["sex"]["worst"]["auroc"]["value"]
    # Safety: calibration of the predictive models.
    safety = {r["metric"]: r for r in _results(runs["lesion_classification"] / FILENAME)["SafetyReliability"]}
    m = json.loads((runs["lesion_classification"] / "metrics.json").read_text())
    assert safety["ece"]["value"] == m["ece"]


def test_the_card_command_rewrites_both_cards(runs):
    from hf_medai.cli import main as cli

    run = runs["molecule_diffusion"]
    (run / FILENAME).unlink()
    assert cli(["card", str(run)]) == 0
    assert (run / FILENAME).is_file()


def test_tripod_checklist_has_all_27_items_in_order():
    assert [number for number, *_ in ITEMS] == list(range(1, 28))
    for kind in ("image-classification", "text-classification", "text-generation", "anything-else"):
        rows = tripod_rows(kind, {})
        assert len(rows) == 27 and all(where.strip() for *_, where in rows), kind


@pytest.mark.parametrize("kind", KINDS)
def test_predictive_cards_end_with_the_tripod_checklist(runs, kind):
    readme = (runs[kind] / "README.md").read_text()
    if kind not in PREDICTIVE:
        assert "TRIPOD" not in readme  # generative models and encoders are not prediction models
        return
    section = readme.split("## TRIPOD+AI checklist", 1)[1]
    assert "\n## " not in section  # it is the last section
    rows = [line for line in section.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert [int(r.split("|")[1]) for r in rows] == list(range(1, 28))
    for row in rows:
        where = row.rstrip(" |").rsplit("|", 1)[1].strip()
        assert where, row  # no item silently missing: reported somewhere, or who must supply it
    assert any("to be supplied by the deployer" in r.lower() for r in rows)  # e.g. the clinical setting
