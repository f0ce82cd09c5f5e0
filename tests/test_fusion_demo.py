"""The fusion demo, fast: tiny fusion run folders (image + metadata, note + structured EHR) as the recipes lay them
out; the scoring function against direct model calls, blank fields read as not recorded, the decision at the run's
threshold and the contribution table. `tiny_fusion_run` is shared with test_fusion_demo_browser.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

gr = pytest.importorskip("gradio")

from hf_medai.demos import BANNER, build_app, demo_for  # noqa: E402
from hf_medai.demos.fusion import LesionFusionDemo, NoteFusionDemo, score_fusion  # noqa: E402

INTENDED_USE = "Research on fusing images with patient metadata; never a diagnosis."
EHR_NUMERIC = ["heart_rate_last", "sbp_min", "lactate_max", "creatinine_last"]
NOTE = "Admitted with septic shock; lactate rising, on norepinephrine."


def tiny_fusion_run(kind: str, folder: Path) -> Path:
    """A run folder of a fusion kind with a tiny random FusionModel, its processor, metrics.json and a card stub."""
    from hf_medai.data.tabular import TabularSchema
    from hf_medai.models.fusion import FusionModel, FusionProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if kind == "lesion_fusion":
        from transformers import ViTConfig, ViTImageProcessor

        from hf_medai.models.vision import TINY_VIT

        frame = pd.DataFrame(
            {
                "sex": rng.choice(["male", "female", None], 40),
                "site": rng.choice(["back", "trunk", "lower extremity", "face"], 40),
                "age": rng.normal(55, 15, 40).round(),
            }
        )
        schema = TabularSchema.fit(frame, ["sex", "site"], ["age"])
        backbone = ViTConfig(image_size=32, **{**TINY_VIT, "hidden_size": 32, "intermediate_size": 64})
        classes, modality = ["not_melanoma", "melanoma"], "image"
        inner = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        facts = {"kind": "lesion_fusion", "recipe": "lesion_fusion", "task": "image-classification"}
    else:
        from transformers import AutoTokenizer, BertConfig

        from hf_medai.models.text import default_encoder_path

        frame = pd.DataFrame({"sex": rng.choice(["F", "M"], 40), **{f: rng.normal(80, 20, 40) for f in EHR_NUMERIC}})
        schema = TabularSchema.fit(frame, ["sex"], EHR_NUMERIC)
        inner = AutoTokenizer.from_pretrained(default_encoder_path())
        inner.model_max_length = 64
        backbone = BertConfig(
            vocab_size=inner.vocab_size,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        )
        classes, modality = ["survived", "in-hospital death"], "text"
        facts = {"kind": "note_fusion", "recipe": "clinical_fusion", "task": "text-classification"}
    model = FusionModel.from_backbone(backbone, schema, classes, modality, fusion="late", fusion_dim=16)
    with torch.no_grad():  # an untrained head sits at p = 0.5: spread it so each modality visibly moves the score
        for p in [*model.head.parameters(), *model.tabular.parameters(), model.absent]:
            p.normal_(0, 0.3)
    model.save_pretrained(folder)
    FusionProcessor(inner, schema, modality).save_pretrained(folder)
    (folder / "README.md").write_text(
        f"---\nlicense: apache-2.0\n---\n# Tiny fusion model\n\n## Intended use\n\n{INTENDED_USE}\n\n"
        "## Out-of-scope use\n\nEverything clinical.\n"
    )
    (folder / "metrics.json").write_text(
        json.dumps({**facts, "threshold": 0.4, "threshold_source": "youden on validation", "auroc": 0.8})
    )
    return folder


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion_demo_runs")
    return {kind: demo_for(tiny_fusion_run(kind, root / kind)) for kind in ("lesion_fusion", "note_fusion")}


def _image(seed: int = 0):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8))


def _direct(model, inputs, absent: bool = False) -> np.ndarray:
    with torch.no_grad():
        out = model(**inputs, primary_absent=torch.tensor([absent]))
    return torch.softmax(out.logits, -1)[0].numpy()


def test_the_kinds_name_these_apps_and_the_app_has_the_banner(demos):
    assert isinstance(demos["lesion_fusion"], LesionFusionDemo)
    assert isinstance(demos["note_fusion"], NoteFusionDemo)
    for demo in demos.values():
        app = build_app(demo.run_dir)
        assert any(BANNER in (b.value or "") for b in app.blocks.values() if isinstance(b, gr.HTML))
        # one input per schema feature, in the schema's order (a dropdown per category, a number per value)
        labels = [b.label for b in app.blocks.values() if isinstance(b, (gr.Dropdown, gr.Number))]
        assert [label.split(" (")[0] for label in labels] == demo.schema.names
    note_app = build_app(demos["note_fusion"].run_dir)
    texts = [b.value or "" for b in note_app.blocks.values() if isinstance(b, gr.Markdown)]
    assert any("prediction time (admission + 24 h); nothing measured later" in t for t in texts)


def test_lesion_deltas_equal_direct_model_calls(demos):
    demo = demos["lesion_fusion"]
    image, fields = _image(), {"age": 70, "sex": "male", "site": "back"}
    s = score_fusion(demo.model, demo.processor, image, fields)
    full = _direct(demo.model, demo.processor(images=[image], tabular=[fields]))
    no_tabular = _direct(demo.model, demo.processor(images=[image], tabular=None))
    no_image = _direct(demo.model, demo.processor(images=[image], tabular=[fields]), absent=True)
    assert s.target == 1 and s.primary_given and s.fields_given == 3
    np.testing.assert_allclose(s.probs, full, atol=1e-5)
    assert s.tabular_delta == pytest.approx(full[1] - no_tabular[1], abs=1e-5)
    assert s.primary_delta == pytest.approx(full[1] - no_image[1], abs=1e-5)
    assert abs(s.tabular_delta) > 1e-4 and abs(s.primary_delta) > 1e-4  # both modalities move this model


def test_blank_and_unknown_fields_read_as_not_recorded(demos):
    demo = demos["lesion_fusion"]
    image = _image(1)
    # the form's order: sex, site (dropdowns), age (number); unknown / None / "" are "not recorded"
    assert demo.schema.names == ["sex", "site", "age"]
    blank = demo.score(image, "unknown", None, None)
    assert blank.fields_given == 0
    np.testing.assert_allclose(blank.probs, blank.without_tabular, atol=1e-6)
    direct = _direct(demo.model, demo.processor(images=[image], tabular=None))
    np.testing.assert_allclose(blank.probs, direct, atol=1e-5)
    only_age = demo.score(image, "unknown", "", 64)
    expected = _direct(demo.model, demo.processor(images=[image], tabular=[{"age": 64}]))
    assert only_age.fields_given == 1
    np.testing.assert_allclose(only_age.probs, expected, atol=1e-5)


def test_lesion_decision_at_the_threshold_and_contribution_table(demos):
    demo = demos["lesion_fusion"]
    s = demo.score(_image(), "female", "trunk", 45)
    decision, table = demo.predict(_image(), "female", "trunk", 45)
    call = "Melanoma" if s.probs[1] >= 0.4 else "Not melanoma"
    assert decision.startswith(f"## {call}\n") and f"{s.probs[1]:.3f}" in decision and "threshold 0.400" in decision
    assert f"| image | yes | {s.without_primary[1]:.3f} | {s.primary_delta:+.3f} |" in table
    assert f"| metadata | 3 of 3 fields | {s.without_tabular[1]:.3f} | {s.tabular_delta:+.3f} |" in table
    assert "Contribution = P(Melanoma) with everything given" in table


def test_metadata_only_and_nothing_given(demos):
    demo = demos["lesion_fusion"]
    s = demo.score(None, "male", "back", 80)  # no image: the learned "absent" vector, as in the card's rows
    assert not s.primary_given
    expected = _direct(
        demo.model, demo.processor(images=[_image()], tabular=[{"sex": "male", "site": "back", "age": 80}]), True
    )
    np.testing.assert_allclose(s.probs, expected, atol=1e-5)
    decision, table = demo.predict(None, "male", "back", 80)
    assert "Scored without the image" in decision and "| image | no |" in table and "n/a (not given)" in table
    with pytest.raises(gr.Error, match="Give the image, or at least one of the metadata fields"):
        demo.score(None, "unknown", None, None)


def test_note_deltas_blank_labs_and_a_missing_note(demos):
    demo = demos["note_fusion"]
    assert demo.schema.names == ["sex", *EHR_NUMERIC]
    fields = {"sex": "F", "heart_rate_last": 118, "lactate_max": 4.2}
    s = demo.score(NOTE, "F", 118, None, 4.2, None)  # sbp_min and creatinine_last not measured
    full = _direct(demo.model, demo.processor(text=[NOTE], tabular=[fields]))
    no_ehr = _direct(demo.model, demo.processor(text=[NOTE], tabular=None))
    no_note = _direct(demo.model, demo.processor(text=[NOTE], tabular=[fields]), absent=True)
    assert s.fields_given == 3
    np.testing.assert_allclose(s.probs, full, atol=1e-5)
    assert s.tabular_delta == pytest.approx(full[1] - no_ehr[1], abs=1e-5)
    assert s.primary_delta == pytest.approx(full[1] - no_note[1], abs=1e-5)
    blank_note = demo.score("   ", "F", 118, None, 4.2, None)
    assert not blank_note.primary_given
    np.testing.assert_allclose(blank_note.probs, no_note, atol=1e-5)
    _, table = demo.predict(NOTE, "unknown", None, None, None, None)
    assert f"| EHR | 0 of {len(EHR_NUMERIC) + 1} fields |" in table and "n/a (not given)" in table
    with pytest.raises(gr.Error, match="limit is 20,000"):
        demo.score("x" * 20_001)
