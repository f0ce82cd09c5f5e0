"""The two fusion kinds (lesion_fusion, note_fusion): each card rendered from a run folder whose metrics.json is
written by the shared classifier report (as recipes/lesion_fusion.py writes it), with the fusion, the ablation and
the missing-modality rows; the CHAI card valid; note_fusion's card free of dermatology.

The ablation table is the shared `ablation_section` macro's (model_cards/_macros.md.j2). Where that macro is not
there yet, the fusion cards fall back to a plain table of the ablation's rows; these tests pass either way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_chai_card import schema  # noqa: F401  (the CHAI schema fixture)

from hf_medai.cards import TEMPLATES_DIR
from hf_medai.kinds import get_kind, kind_of
from hf_medai.run_folder import RECIPE_KINDS, card_sections

DERMATOLOGY = re.compile(r"melanoma|fitzpatrick|dermoscop|skin|brinker|lesion", re.IGNORECASE)
EHR_NUMERIC = ["heart_rate_last", "sbp_min", "resp_rate_max", "lactate_max", "creatinine_last", "wbc_last"]


def _ablation(primary: str, tabular: str, auroc: float) -> dict:
    """The real ablation dict (hf_medai.evaluation.modality_ablation) of made-up scores: the fused model, each single
    modality, and the fused model with each modality absent (under "missing_modality", as metrics.json has it)."""
    from hf_medai.evaluation.modality_ablation import missing_modality, modality_ablation

    rng = np.random.default_rng(1)
    y = {s: rng.integers(0, 2, 200) for s in ("validation", "test")}

    def scores(strength):
        return {s: np.clip(0.5 + strength * (y[s] - 0.5) + rng.normal(0, 0.25, 200), 0, 1) for s in y}

    models = {"fused": scores(0.6), f"{primary}_only": scores(0.45), f"{tabular}_only": scores(0.3)}
    table = modality_ablation(
        y["validation"],
        {k: v["validation"] for k, v in models.items()},
        y["test"],
        {k: v["test"] for k, v in models.items()},
        ["negative", "positive"],
        modalities={"fused": [primary, tabular], f"{primary}_only": [primary], f"{tabular}_only": [tabular]},
        n_bootstrap=50,
    )
    absent = {f"fused, {tabular} absent": scores(0.45)["test"], f"fused, {primary} absent": scores(0.3)["test"]}
    table["missing_modality"] = missing_modality(
        y["test"], models["fused"]["test"], absent, ["negative", "positive"], n_bootstrap=50
    )
    return table


def fusion_run_folder(kind: str, folder: Path, ablation: bool = True) -> Path:
    """A run folder of a fusion kind, metrics from `write_classifier_report` on made-up scores (about 2 s)."""
    from hf_medai.config import EvalArguments
    from hf_medai.run_outputs import write_classifier_report

    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.3 + 0.35 * y + rng.normal(0, 0.2, n), 0.01, 0.99)
    vy = rng.integers(0, 2, n)
    vp1 = np.clip(0.3 + 0.35 * vy + rng.normal(0, 0.2, n), 0.01, 0.99)
    if kind == "lesion_fusion":
        classes, primary, tabular, model_type = ["not_melanoma", "melanoma"], "image", "metadata", "vit"
        categorical, numeric = {"sex": ["male", "female"], "site": ["back", "trunk", "lower extremity"]}, ["age"]
        groups = pd.DataFrame(
            {"sex": rng.choice(["male", "female"], n), "fitzpatrick": rng.choice(["I-II", "III-IV"], n)}
        )
        facts = {"recipe": "lesion_fusion", "dataset": "synthetic HAM10000-format sample", "base_model": "small ViT"}
    else:
        classes, primary, tabular, model_type = ["survived", "in-hospital death"], "note", "EHR", "bert"
        categorical, numeric = {"sex": ["F", "M"], "admission_type": ["EMERGENCY", "ELECTIVE"]}, EHR_NUMERIC
        groups = pd.DataFrame({"sex": rng.choice(["F", "M"], n), "age_band": rng.choice(["18-64", "65+"], n)})
        facts = {
            "recipe": "clinical_fusion",
            "outcome": "mortality",
            "dataset": "synthetic MIMIC-III-format sample",
            "base_model": "all-MiniLM-L6-v2",
        }
    features = [*categorical, *numeric]
    folder.mkdir(parents=True, exist_ok=True)
    backbone = {"model_type": model_type, "hidden_size": 16, **({"image_size": 32} if model_type == "vit" else {})}
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["FusionModel"],
                "model_type": "hf_medai_fusion",
                "backbone_config": backbone,
                "fusion": "film",
                "fusion_dim": 32,
                "modality_dropout": 0.15,
                "categorical_features": list(categorical),
                "numeric_features": numeric,
            }
        )
    )
    spec = {"categorical": categorical, "numeric": {k: [60.0 + i, 10.0] for i, k in enumerate(numeric)}}
    modality = "image" if model_type == "vit" else "text"
    (folder / "fusion_processor.json").write_text(json.dumps({"modality": modality, "schema": spec}))
    table = _ablation(primary, tabular, 0.82)
    extra = {
        **facts,
        "kind": RECIPE_KINDS[facts["recipe"]],
        "task": get_kind(RECIPE_KINDS[facts["recipe"]]).task,
        "synthetic_data": True,
        "data_report": {"rows_read": 400, "rows_kept": 390, "rows_skipped": 10, "skipped_by_reason": {"no image": 10}},
        "splits": {
            s: {"rows": r, "groups": r - 5, "label_counts": {classes[0]: r - 20, classes[1]: 20}}
            for s, r in (("train", 230), ("validation", 80), ("test", 80))
        },
        "training": {
            "global_step": 40,
            "num_parameters": 123456,
            "fusion": "film",
            "modality_dropout": 0.15,
            "tabular_features": features,
        },
        "throughput": {"world_size": 1, "train_samples_per_second": 50.0, "train_seconds": 12.0, "peak_rss_mb": 900},
        "ablation": {k: v for k, v in table.items() if k != "missing_modality"} if ablation else None,
        "missing_modality": table["missing_modality"],
    }
    eval_args = EvalArguments(n_bootstrap=20, min_group_size=5, min_group_class_count=1)
    write_classifier_report(
        folder,
        ids=list(range(n)),
        y_true=y,
        probs=np.stack([1 - p1, p1], 1),
        class_names=classes,
        subgroups=groups,
        eval_args=eval_args,
        val_true=vy,
        val_probs=np.stack([1 - vp1, vp1], 1),
        extra=extra,
    )
    config = {"output_dir": str(folder), "fusion": "film", "fusion_dim": 32, "learning_rate": 1e-4, "max_length": 128}
    config.update(n_bootstrap=20, min_group_size=5, min_group_class_count=1, window_hours=24)
    (folder / "run_config.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture(scope="module")
def cards(tmp_path_factory, schema):  # noqa: F811
    """{kind: (run folder, card text)}: write_card on each kind's run folder; the CHAI card validated too."""
    from hf_medai.cards import write_card

    root = tmp_path_factory.mktemp("fusion_cards")
    out = {}
    for kind in ("lesion_fusion", "note_fusion"):
        run = fusion_run_folder(kind, root / kind)
        write_card(run)
        assert not list(schema.iter_errors(str(run / "model_card.chai.xml"))), kind
        out[kind] = (run, (run / "README.md").read_text())
    return out


def test_fusion_kinds_are_registered_with_template_demo_and_recipe():
    for name, demo in (("lesion_fusion", "LesionFusionDemo"), ("note_fusion", "NoteFusionDemo")):
        kind = get_kind(name)
        assert (TEMPLATES_DIR / kind.template).is_file() and kind.demo == ("hf_medai.demos.fusion", demo)
        assert name in RECIPE_KINDS.values()
        assert kind.tripod[11].startswith("Fusion")  # missing data: the learned tokens, not "rows skipped"
    assert kind_of({"recipe": "clinical_fusion"}).name == "note_fusion"
    # the fusion kinds come after the classifiers: old folders with only a task keep their kind
    assert kind_of({"task": "image-classification"}).name == "lesion_classifier"
    assert kind_of({"task": "text-classification"}).name == "note_outcome"


def test_lesion_fusion_card_says_what_is_fused_the_ablation_and_missing_modalities(cards):
    run, text = cards["lesion_fusion"]
    assert "# Melanoma vs rest skin-lesion classifier from image and patient metadata (vit + film fusion)" in text
    sections = card_sections(text.split("\n---\n", 1)[1])
    fusion = sections["fusion"]
    assert "`sex`, `site` categorical; `age` numeric" in fusion
    assert "FiLM" in fusion and 'learned "missing" token' in fusion and "probability 0.15" in fusion
    m = json.loads((run / "metrics.json").read_text())
    ablation = sections["modality ablation"]
    fused = m["ablation"]["rows"][0]
    assert f"| fused | image + metadata | {fused['test_auroc']:.3f} ({fused['test_auroc_ci_low']:.3f}" in ablation
    assert f"best single modality is **{m['ablation']['best_single']}**, chosen on validation" in ablation
    missing = sections["missing-modality behaviour"]
    for row in m["missing_modality"]:
        auroc = f"{row['test_auroc']:.3f} ({row['test_auroc_ci_low']:.3f}–{row['test_auroc_ci_high']:.3f})"
        assert f"| {row['model']} | {auroc} | {row['fused_minus_model']:+.3f} (" in missing
    assert "Metadata as a shortcut" in sections["bias, risks and limitations"]
    assert "FusionProcessor.from_pretrained" in sections["how to use"] and "'sex': 'male'" in sections["how to use"]
    assert "| fusion | film |" in sections["training details"]
    assert "| 11 | Methods | Missing data and how it was handled | Fusion (a metadata field not recorded" in text
    xml = (run / "model_card.chai.xml").read_text()
    assert "age, sex, anatomical site" in xml


def test_note_fusion_card_states_the_prediction_time_and_speaks_no_dermatology(cards):
    run, text = cards["note_fusion"]
    body = text.split("\n---\n", 1)[1]
    assert body.startswith("# In-hospital mortality from the clinical note and structured EHR data of the first 24 h")
    assert "nothing measured after admission + 24 h" in body
    sections = card_sections(body)
    assert "`lactate_max`" in sections["fusion"] and "not measured" in sections["fusion"]
    m = json.loads((run / "metrics.json").read_text())
    assert f"{m['ablation']['rows'][0]['test_auroc']:.3f}" in sections["modality ablation"]
    assert "| fused, EHR absent |" in sections["missing-modality behaviour"]
    assert "after the prediction time (admission + 24 h)" in sections["out-of-scope use"]
    found = DERMATOLOGY.search(body)
    assert not found, found and body[max(0, found.start() - 80) : found.end() + 80]
    assert not DERMATOLOGY.search((run / "model_card.chai.xml").read_text())
    assert "'heart_rate_last': 60.0" in sections["how to use"]


def test_a_fusion_card_without_an_ablation_says_so(tmp_path):
    from hf_medai.cards import render_card

    run = fusion_run_folder("note_fusion", tmp_path / "run", ablation=False)
    sections = card_sections(str(render_card(run)).split("\n---\n", 1)[1])
    assert "No ablation in this run" in sections["modality ablation"]
    assert "| fused, note absent |" in sections["missing-modality behaviour"]  # the top-level rows still
