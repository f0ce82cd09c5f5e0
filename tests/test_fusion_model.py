"""The fusion model, its tabular schema and processor: missing values as tokens, plain-HF save/load, training."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoModelForSequenceClassification, ViTConfig

from hf_medai.data.tabular import MISSING, UNSEEN, TabularCollator, TabularSchema, with_tabular
from hf_medai.models.fusion import FUSIONS, FusionModel, FusionProcessor
from hf_medai.models.vision import TINY_VIT, build_image_classifier

FRAME = pd.DataFrame(
    {
        "sex": ["male", "female", "male", None, "unknown", "female"],
        "site": ["back", "face", "back", "trunk", "back", ""],
        "age": [40.0, 60.0, np.nan, 80.0, 50.0, 70.0],
    }
)


def tiny_backbone(size=32):
    return ViTConfig(image_size=size, **dict(TINY_VIT, num_hidden_layers=1))


def images(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_schema_missing_and_unseen_are_their_own_ids_and_numbers_use_training_statistics():
    schema = TabularSchema.fit(FRAME, ["sex", "site"], ["age"])
    assert schema.categorical == {"sex": ["female", "male"], "site": ["back", "face", "trunk"]}
    mean, std = schema.numeric["age"]
    assert mean == pytest.approx(60.0) and std == pytest.approx(np.std([40, 60, 80, 50, 70]))
    out = schema.encode([{"sex": "male", "site": "scalp", "age": 60.0}, {"sex": "n/a"}, {}])
    sex, site = out["categorical_ids"].T
    assert sex.tolist() == [3, MISSING, MISSING]  # "male" is the 2nd word of the vocabulary: id 2 + 1
    assert site.tolist() == [UNSEEN, MISSING, MISSING]  # scalp was never seen in training
    assert out["numeric_values"][:, 0].tolist() == [0.0, 0.0, 0.0]
    assert out["numeric_missing"][:, 0].tolist() == [False, True, True]
    z = (np.array([40, 60, 80, 50, 70]) - mean) / std
    assert schema.edges["age"] == pytest.approx(np.unique(np.quantile(z, np.linspace(0, 1, 9))).tolist(), abs=1e-6)
    assert TabularSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


def test_schema_refuses_features_the_data_lacks():
    with pytest.raises(ValueError, match="bmi"):
        TabularSchema.fit(FRAME, ["sex"], ["bmi"])


@pytest.mark.parametrize("fusion", FUSIONS)
def test_saved_model_reloads_with_plain_hf_and_predicts_the_same(tmp_path, fusion):
    schema = TabularSchema.fit(FRAME, ["sex", "site"], ["age"])
    model = FusionModel.from_backbone(tiny_backbone(), schema, ["benign", "melanoma"], fusion=fusion).eval()
    _, image_processor = build_image_classifier(None, ["benign", "melanoma"], 32)
    processor = FusionProcessor(image_processor, schema, "image")
    batch = processor(images=images(6), tabular=FRAME.to_dict("records"))
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    for loader in (AutoModel, AutoModelForSequenceClassification, FusionModel):
        again = loader.from_pretrained(tmp_path).eval()
        with torch.no_grad():
            after = again(
                **FusionProcessor.from_pretrained(tmp_path)(images=images(6), tabular=FRAME.to_dict("records"))
            )
        torch.testing.assert_close(after.logits, before)
    assert json.loads((tmp_path / "config.json").read_text())["fusion"] == fusion


def test_absent_features_read_as_missing_tokens_and_absent_primary_as_its_vector():
    schema = TabularSchema.fit(FRAME, ["sex", "site"], ["age"])
    torch.manual_seed(0)
    model = FusionModel.from_backbone(tiny_backbone(), schema, ["a", "b"]).eval()
    _, image_processor = build_image_classifier(None, ["a", "b"], 32)
    processor = FusionProcessor(image_processor, schema, "image")
    same = images(1) * 2
    x = processor(images=same, tabular=[{}, {"sex": "unknown", "site": None, "age": None}])
    with torch.no_grad():
        blank = model(**x).logits
        none = model(pixel_values=x["pixel_values"]).logits  # no tabular inputs at all: all missing
        full = model(**processor(images=same, tabular=[{"sex": "male", "site": "back", "age": 70}] * 2)).logits
        absent = model(**x, primary_absent=torch.tensor([True, True])).logits
        other_image = model(
            **processor(images=images(2, seed=1), tabular=[{}, {}]), primary_absent=torch.tensor([True, True])
        ).logits
    torch.testing.assert_close(blank[0], blank[1])
    torch.testing.assert_close(none, blank)
    assert not torch.allclose(full, blank)
    torch.testing.assert_close(absent, other_image)  # with the image absent, the pixels no longer matter


def test_single_modality_model_has_no_tabular_encoder():
    model = FusionModel.from_backbone(tiny_backbone(), None, ["a", "b"])
    assert not model.config.use_tabular and not hasattr(model, "tabular")
    assert model.config.modalities == ["image"]


def test_pretrained_backbone_weights_are_copied(tmp_path):
    backbone = AutoModel.from_config(tiny_backbone(), add_pooling_layer=False)
    backbone.save_pretrained(tmp_path)
    model = FusionModel.from_backbone(str(tmp_path), None, ["a", "b"])
    for name, value in backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[name], value)


def test_training_learns_a_planted_tabular_signal_and_modality_dropout_only_trains():
    """Labels depend only on the metadata: the fused model's loss falls and it ranks by the metadata."""
    rng = np.random.default_rng(0)
    n = 64
    frame = pd.DataFrame({"site": rng.choice(["back", "face"], n), "age": rng.normal(50, 15, n)})
    y = ((frame["site"] == "back") & (frame["age"] > 45)).astype(int).to_numpy()
    schema = TabularSchema.fit(frame, ["site"], ["age"])
    torch.manual_seed(0)
    model = FusionModel.from_backbone(tiny_backbone(), schema, ["a", "b"], modality_dropout=0.0)
    tab = {k: torch.as_tensor(v) for k, v in schema.encode(frame).items()}
    pixels = torch.randn(n, 3, 32, 32)
    labels = torch.tensor(y)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = {k: v.clone() for k, v in model.tabular.state_dict().items()}
    losses = []
    for _ in range(60):
        loss = model(pixel_values=pixels, labels=labels, **tab).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert any(not torch.equal(before[k], v) for k, v in model.tabular.state_dict().items())
    model.config.modality_dropout = 0.5
    model.eval()
    with torch.no_grad():
        a, b = model(pixel_values=pixels, **tab).logits, model(pixel_values=pixels, **tab).logits
    torch.testing.assert_close(a, b)  # evaluation never drops a modality


def test_collator_stacks_tabular_arrays_around_the_image_collator():
    import datasets

    from hf_medai.data.image_batches import ImageCollator

    schema = TabularSchema.fit(FRAME, ["sex", "site"], ["age"])
    _, image_processor = build_image_classifier(None, ["a", "b"], 32)
    ds = datasets.Dataset.from_dict(
        {"pixels": [np.zeros((3, 32, 32), dtype=np.uint8)] * 6, "label": [0, 1, 0, 1, 0, 1]}
    )
    ds = with_tabular(ds, schema, FRAME)
    batch = TabularCollator(ImageCollator(image_processor))([ds[i] for i in range(6)])
    assert batch["pixel_values"].shape == (6, 3, 32, 32)
    assert batch["categorical_ids"].dtype == torch.long and batch["categorical_ids"].shape == (6, 2)
    assert batch["numeric_missing"].dtype == torch.bool and batch["numeric_missing"][2, 0]
    expected = schema.encode(FRAME)
    np.testing.assert_array_equal(batch["categorical_ids"].numpy(), expected["categorical_ids"])


def test_note_processor_turns_ehr_rows_into_the_loaders_features():
    """(note, EHR rows) -> inputs: rows are aggregated like the loader, and only the window's rows count."""
    from transformers import AutoTokenizer

    from hf_medai.data.ehr_features import features_from_rows
    from hf_medai.models.text import default_encoder_path

    frame = pd.DataFrame({"sex": ["F", "M"], "heart_rate_max": [90.0, 120.0], "lactate_last": [1.0, 4.0]})
    schema = TabularSchema.fit(frame, ["sex"], ["heart_rate_max", "lactate_last"])
    processor = FusionProcessor(AutoTokenizer.from_pretrained(default_encoder_path()), schema, "text")
    rows = [
        {"item": 220045, "charttime": "2150-01-01 10:00", "value": 130},  # heart rate (MetaVision itemid)
        {"item": "lactate", "charttime": "2150-01-01 12:00", "value": 3.5},
        {"item": 220045, "charttime": "2150-01-02 09:01", "value": 200},  # after admit + 24 h: never counts
    ]
    batch = processor(text=["septic shock"], tabular=[{"sex": "M"}], events=[rows], admit_times=["2150-01-01 09:00"])
    expected = schema.encode([{"sex": "M", **features_from_rows(rows, "2150-01-01 09:00")}])
    np.testing.assert_allclose(batch["numeric_values"].numpy(), expected["numeric_values"])
    mean, std = schema.numeric["heart_rate_max"]
    assert batch["numeric_values"][0, 0].item() == pytest.approx((130 - mean) / std)
    assert not batch["numeric_missing"].any()


def test_fusion_trainer_gives_the_layers_around_the_backbone_their_own_learning_rate(tmp_path):
    import datasets
    from transformers import TrainingArguments

    from hf_medai.fusion_runs import fusion_trainer

    schema = TabularSchema.fit(FRAME, ["sex", "site"], ["age"])
    model = FusionModel.from_backbone(tiny_backbone(), schema, ["a", "b"])
    ds = datasets.Dataset.from_dict({"pixels": [np.zeros((3, 32, 32), dtype=np.uint8)] * 6, "label": [0, 1] * 3})
    splits = {"train": with_tabular(ds, schema, FRAME), "validation": with_tabular(ds, schema, FRAME)}
    args = TrainingArguments(str(tmp_path), learning_rate=1e-4, report_to="none", use_cpu=True)
    trainer = fusion_trainer(
        model, splits, (None, None), args, ["a", "b"], ("pixels", "label"), head_learning_rate=1e-3
    )
    groups = trainer.create_optimizer().param_groups
    backbone = {id(p) for p in model.backbone.parameters()}
    by_lr = {}
    for g in groups:
        for p in g["params"]:
            by_lr.setdefault(g["lr"], set()).add(id(p) in backbone)
    assert by_lr == {1e-4: {True}, 1e-3: {False}}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
