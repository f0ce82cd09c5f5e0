"""Masked-autoencoder pre-training: the unlabelled pool, the tiny MAE and its exported encoder, then
recipes/image_pretraining.py end to end on 32 px images, and the lesion classifier fine-tuned from its folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_chai_card import _results, schema  # noqa: F401  (schema: the CHAI card's XSD, a fixture)

from helpers import load_recipe

recipe = load_recipe("image_pretraining")

TINY = [
    "--image_size",
    "32",
    "--per_device_train_batch_size",
    "16",
    "--per_device_eval_batch_size",
    "64",
    "--val_fraction",
    "0.1",
    "--n_bootstrap",
    "50",
    "--logging_steps",
    "1",
    "--eval_strategy",
    "steps",
    "--save_strategy",
    "steps",
]


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    from hf_medai.data.synthetic.lesion_pool import write_unlabelled_pool

    return write_unlabelled_pool(tmp_path_factory.mktemp("pool") / "pool", n=200, seed=3)


@pytest.fixture(scope="module")
def ham(tmp_path_factory) -> Path:
    from hf_medai.data.synthetic.lesions import write_ham10000

    return write_ham10000(tmp_path_factory.mktemp("ham") / "ham", n=160, seed=3)


@pytest.fixture(scope="module")
def run(pool, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "mae"
    recipe.main(
        [
            "--data_dir",
            str(pool),
            "--output_dir",
            str(out),
            "--max_steps",
            "8",
            "--eval_steps",
            "4",
            "--save_steps",
            "4",
        ]
        + TINY
    )
    return out


def tiny_mae(image_size: int = 32):
    from hf_medai.models.mae import build_mae

    torch.manual_seed(0)
    return build_mae(None, image_size)


def pixel_hashes(folder: Path) -> set[str]:
    return {hashlib.sha256(np.asarray(Image.open(p)).tobytes()).hexdigest() for p in sorted(folder.rglob("*.jpg"))}


# ----------------------------------------------------------------------------------------------- the unlabelled pool


def test_pool_is_deterministic_and_disjoint_from_the_labelled_sample(tmp_path):
    from hf_medai.cli import main as cli
    from hf_medai.data.synthetic.lesion_pool import write_unlabelled_pool
    from hf_medai.data.synthetic.lesions import is_synthetic, write_ham10000

    a = write_unlabelled_pool(tmp_path / "a", n=60, seed=0)
    b = write_unlabelled_pool(tmp_path / "b", n=60, seed=0)
    names = sorted(p.name for p in a.glob("*.jpg"))
    assert len(names) == 60 and names == sorted(p.name for p in b.glob("*.jpg"))
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    assert is_synthetic(a)
    other_seed = write_unlabelled_pool(tmp_path / "c", n=60, seed=1)
    assert not pixel_hashes(a) & pixel_hashes(other_seed)
    # the labelled sample of the same seed, size and class mix shares no image with the pool
    labelled = write_ham10000(tmp_path / "ham", n=60, seed=0)
    assert not pixel_hashes(a) & pixel_hashes(labelled)
    # the same pool from the command line
    assert cli(["data", "lesion_pool", "--out", str(tmp_path / "cli"), "--n", "60", "--seed", "0"]) == 0
    assert pixel_hashes(tmp_path / "cli") == pixel_hashes(a)


def test_pool_is_a_plain_folder_the_loader_reads(pool, ham):
    from hf_medai.data.lesion_formats import detect_format
    from hf_medai.data.report import DataError
    from hf_medai.data.unlabelled_images import heldout_split, load_unlabelled_images

    with pytest.raises(DataError):
        detect_format(pool)  # no table, no class sub-folders: not a lesion format, a plain folder
    images, report, fmt = load_unlabelled_images(pool)
    assert fmt == "folder" and len(images) == 200 and "label" not in images.column_names
    assert images[0]["image"].size == (128, 96) and report.rows_kept == 200
    # a lesion dataset: its images, labels dropped, split by patient
    lesions, _, fmt = load_unlabelled_images(ham)
    assert fmt == "ham10000" and len(lesions) == 160 and "label" not in lesions.column_names
    splits = heldout_split(lesions, 0.2, seed=0)
    train, held = (set(splits[s]["group"]) for s in ("train", "validation"))
    assert train and held and not train & held
    assert len(splits["train"]) + len(splits["validation"]) == 160


# ----------------------------------------------------------------------------------------------- the model


def test_fresh_mae_has_sin_cos_positions_and_tokens():
    """transformers 5.25 leaves them at zero in a fresh ViTMAEForPreTraining; build_mae sets them."""
    from hf_medai.models.mae import sincos_position_embedding

    mae, _ = tiny_mae()
    emb = mae.vit.embeddings
    assert torch.equal(emb.position_embeddings, sincos_position_embedding(16, 128))
    assert torch.equal(mae.decoder.decoder_pos_embed, sincos_position_embedding(16, 64))
    assert emb.position_embeddings[0, 1:].abs().sum() > 0 and not emb.position_embeddings.requires_grad
    assert emb.cls_token.abs().sum() > 0 and mae.decoder.mask_token.abs().sum() > 0


def test_a_loaded_mae_keeps_its_position_embeddings_fixed(tmp_path):
    """transformers 5.25's from_pretrained makes them trainable; build_mae freezes them again."""
    from hf_medai.models.mae import build_mae

    mae, processor = tiny_mae()
    mae.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, _ = build_mae(str(tmp_path), mask_ratio=0.5)
    assert loaded.config.mask_ratio == 0.5
    assert not loaded.vit.embeddings.position_embeddings.requires_grad
    assert not loaded.decoder.decoder_pos_embed.requires_grad
    assert torch.equal(loaded.vit.embeddings.position_embeddings, mae.vit.embeddings.position_embeddings)


def test_loss_falls_on_a_fixed_batch_and_every_trained_parameter_changes(pool):
    from hf_medai.models.mae import masking_noise

    mae, processor = tiny_mae()
    before = {n: p.detach().clone() for n, p in mae.named_parameters()}
    x = processor([Image.open(p) for p in sorted(pool.glob("*.jpg"))[:8]], return_tensors="pt")["pixel_values"]
    noise = masking_noise(8, 16)
    optimizer = torch.optim.AdamW(mae.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = mae(pixel_values=x, noise=noise).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    for name, p in mae.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        assert changed == p.requires_grad, name  # only the fixed sin-cos position embeddings stay


def test_exported_encoder_loads_as_vit_and_gives_the_mae_encoders_output(tmp_path):
    from transformers import AutoModel, AutoModelForImageClassification, ViTModel

    from hf_medai.models.mae import export_encoder

    mae, processor = tiny_mae()
    export_encoder(mae).save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    encoder = AutoModel.from_pretrained(tmp_path, add_pooling_layer=False)
    assert type(encoder) is ViTModel and encoder.config.image_size == 32 and encoder.config.patch_size == 8
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    mae.config.mask_ratio = 0.0  # every patch visible (ViTMAE still shuffles them: the CLS output does not care)
    with torch.no_grad():
        cls_mae = mae.vit(pixel_values=x).last_hidden_state[:, 0]
        in_order = mae.vit(pixel_values=x, noise=torch.arange(16.0).expand(3, 16)).last_hidden_state
        out = encoder(pixel_values=x).last_hidden_state
    assert torch.allclose(out[:, 0], cls_mae, atol=1e-5)
    assert torch.allclose(out, in_order, atol=1e-5)  # every patch too, in the MAE's order when it keeps the order
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=2)
    assert classifier(pixel_values=x).logits.shape == (3, 2)
    assert torch.equal(
        classifier.vit.embeddings.patch_embeddings.projection.weight,
        encoder.embeddings.patch_embeddings.projection.weight,
    )


# ----------------------------------------------------------------------------------------------- the recipe


def test_run_folder_follows_the_contract(run):
    for name in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "mae/config.json",
        "mae/model.safetensors",
        "mae/preprocessor_config.json",
        "README.md",
        "model_card.chai.xml",
        "metrics.json",
        "run_config.yaml",
        "loss_curve.png",
        "reconstructions.png",
    ]:
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["model_type"] == "vit"
    assert json.loads((run / "mae/config.json").read_text())["model_type"] == "vit_mae"
    m = json.loads((run / "metrics.json").read_text())
    assert (m["kind"], m["task"], m["recipe"]) == (
        "masked_image_model",
        "image-feature-extraction",
        "image_pretraining",
    )
    assert m["synthetic_data"] is True and m["training"]["global_step"] == 8
    assert m["throughput"]["train_samples_per_second"] > 0 and m["throughput"]["peak_rss_mb"] > 0
    assert m["splits"]["validation"]["images"] == m["heldout"]["images"] == 20 and m["splits"]["groups_in_both"] == 0
    assert m["pretraining_data"] == {
        **m["pretraining_data"],
        "images": 180,
        "format": "folder",
        "input_size": [32, 32],
    }
    assert m["reconstruction_loss"] < m["reconstruction_loss_before"]
    assert m["reconstruction_loss_ci_low"] <= m["reconstruction_loss"] <= m["reconstruction_loss_ci_high"]
    # the Trainer's held-out evaluation at the last step used the same fixed masks as the final score
    curve = m["training"]["eval_loss_curve"]
    assert [s for s, _ in curve] == [0, 4, 8] and curve[0][1] == pytest.approx(m["reconstruction_loss_before"])
    assert curve[-1][1] == pytest.approx(m["reconstruction_loss"], rel=1e-5)
    for name in ("loss_curve.png", "reconstructions.png"):
        assert Image.open(run / name).size[0] > 300


def test_encoder_folder_reproduces_the_mae_encoder_on_an_image(run, pool):
    from transformers import AutoImageProcessor, AutoModel, ViTMAEForPreTraining

    processor = AutoImageProcessor.from_pretrained(run)
    encoder = AutoModel.from_pretrained(run, add_pooling_layer=False)
    mae = ViTMAEForPreTraining.from_pretrained(run / "mae", mask_ratio=0.0)
    pixels = processor([Image.open(next(pool.glob("*.jpg")))], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = mae.vit(pixel_values=pixels).last_hidden_state[:, 0]
        got = encoder(pixel_values=pixels).last_hidden_state[:, 0]
    assert pixels.shape[-1] == 32 and torch.allclose(got, expected, atol=1e-5)


def test_card_and_cli(run, capsys):
    from huggingface_hub import ModelCard

    from hf_medai.cli import main as cli
    from hf_medai.hub import plan_push

    m = json.loads((run / "metrics.json").read_text())
    (run / "README.md").unlink()
    assert cli(["card", str(run)]) == 0
    text = ModelCard.load(run / "README.md").text
    assert text.startswith("# Image encoder: masked-autoencoder pre-training (ViT, 4 layers, 32 px)")
    for section in ["## Intended use", "## Out-of-scope use", "## Training data", "## Evaluation",
                    "## Bias, risks and limitations", "## How to use", "## Training details"]:  # fmt: skip
        assert section in text, section
    assert f"| After pre-training | {m['reconstruction_loss']:.4f} (" in text
    assert "180 images; no labels were read" in text and "pre-trained on synthetic images" in text
    assert "not a diagnostic model" in text and "loss_curve.png" in text and "reconstructions.png" in text
    assert f"{m['throughput']['train_samples_per_second']} training images/s" in text
    # an encoder has no demo: said in one line, exit 2
    capsys.readouterr()
    assert cli(["demo", str(run)]) == 2
    err = capsys.readouterr().err
    assert "masked_image_model" in err and "no demo" in err and "Traceback" not in err
    # a push sends the encoder, the MAE and the card; the held-out images beside their reconstructions stay behind
    plan = plan_push(run)
    assert {"model.safetensors", "mae/model.safetensors", "README.md", "loss_curve.png"} <= set(plan.upload)
    assert "reconstructions.png" in plan.left_behind and "reconstructions.png" not in plan.upload


def test_existing_run_folder_is_not_overwritten(run, pool):
    from hf_medai.run_folder import RunFolderExists

    with pytest.raises(RunFolderExists, match="already holds a run"):
        recipe.main(["--data_dir", str(pool), "--output_dir", str(run), "--max_steps", "1", *TINY])


def test_interrupted_run_resumes_to_the_same_total_steps(pool, tmp_path):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 5:
                raise RuntimeError("simulated crash")

    out = tmp_path / "run"
    flags = ["--data_dir", str(pool), "--output_dir", str(out), "--max_steps", "8", "--save_steps", "4"]
    flags += ["--eval_steps", "4", *TINY]
    with pytest.raises(RuntimeError, match="simulated crash"):
        recipe.main(flags, callbacks=[Crash()])
    assert (out / "checkpoint-4").is_dir() and not (out / "metrics.json").exists()
    recipe.main([*flags, "--resume_from_checkpoint", "last"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["training"]["global_step"] == 8 and m["training"]["resumed_from"].endswith("checkpoint-4")
    assert m["throughput"]["optimizer_steps"] == 4  # only the steps this process ran


def test_pretraining_continues_from_a_run_folder_and_changes_the_encoder(run, pool, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "more"
    recipe.main(["--data_dir", str(pool), "--output_dir", str(out), "--model_name_or_path", str(run),
                 "--max_steps", "4", *TINY, "--eval_strategy", "no", "--save_strategy", "no"])  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())
    assert m["base_model"] == str(run)
    # starts where the first run ended: its "before" is the first run's "after", on the same held-out images and masks
    assert m["reconstruction_loss_before"] == pytest.approx(
        json.loads((run / "metrics.json").read_text())["reconstruction_loss"], rel=1e-5
    )
    a, b = load_file(run / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(a) == set(b)
    same = sorted(k for k in a if torch.equal(a[k], b[k]))
    assert same == [k for k in a if "position_embeddings" in k], same  # every trained encoder weight moved


def test_lesion_classifier_fine_tunes_from_the_encoder(run, ham, tmp_path):
    from transformers import AutoModelForImageClassification

    lesions = load_recipe("lesion_classification")
    out = tmp_path / "lesions"
    lesions.main(["--data_dir", str(ham), "--model_name_or_path", str(run), "--output_dir", str(out),
                  "--max_steps", "3", "--per_device_train_batch_size", "16", "--n_bootstrap", "20",
                  "--min_group_size", "5", "--save_strategy", "no", "--eval_strategy", "no",
                  "--load_best_model_at_end", "false"])  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())
    assert m["base_model"] == str(run) and m["training"]["global_step"] == 3 and 0 <= m["auroc"] <= 1
    model = AutoModelForImageClassification.from_pretrained(out)
    assert model.config.image_size == 32 and model.config.hidden_size == 128


def test_chai_card_is_valid_and_reports_the_losses(run, schema):
    from hf_medai.chai import FILENAME

    path = run / FILENAME
    errors = list(schema.iter_errors(str(path)))
    assert not errors, errors[0]
    m = json.loads((run / "metrics.json").read_text())
    usefulness = {r.get("metric"): r for r in _results(path)["UsefulnessUsabilityEfficacy"]}
    assert usefulness["reconstruction_loss"]["value"] == m["reconstruction_loss"]
    assert usefulness["reconstruction_loss_before"]["value"] == m["reconstruction_loss_before"]


def test_two_processes_under_accelerate_launch(pool, tmp_path):
    import os
    import subprocess

    from helpers import ROOT, accelerate_launch

    out = tmp_path / "ddp"
    cmd = accelerate_launch(2, "recipes/image_pretraining.py", "--data_dir", str(pool), "--output_dir", str(out),
                            "--max_steps", "4", "--eval_steps", "2", "--save_steps", "2", *TINY)  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["throughput"]["world_size"] == 2 and m["throughput"]["global_batch_size"] == 32
    assert m["training"]["global_step"] == 4 and (out / "mae" / "model.safetensors").is_file()


def test_lesion_default_starts_from_the_cached_encoder_and_its_card_says_so(run, ham, tmp_path, monkeypatch):
    import hf_medai.lesion_runs as lesion_runs

    made = []
    monkeypatch.setattr(lesion_runs, "cached_default_run", lambda recipe, name: made.append((recipe, name)) or run)
    lesions = load_recipe("lesion_classification")
    flags = ["--data_dir", str(ham), "--max_steps", "2", "--per_device_train_batch_size", "16", "--n_bootstrap",
             "10", "--min_group_size", "5", "--save_strategy", "no", "--eval_strategy", "no",
             "--load_best_model_at_end", "false"]  # fmt: skip
    lesions.main([*flags, "--output_dir", str(tmp_path / "default")])
    assert made == [(lesion_runs.RECIPES / "image_pretraining.py", lesion_runs.DEFAULT_ENCODER)]
    m = json.loads((tmp_path / "default" / "metrics.json").read_text())
    pre = json.loads((run / "metrics.json").read_text())
    assert m["base_model"] == str(run) and m["pretrained_encoder"]["images"] == pre["pretraining_data"]["images"]
    assert m["pretrained_encoder"]["reconstruction_loss"] == pre["reconstruction_loss"]
    card = (tmp_path / "default" / "README.md").read_text()
    assert f"**Pre-trained on:** {pre['pretraining_data']['images']:,} unlabelled images" in card

    # Making the encoder first (which draws random numbers) must not change the run: the head is seeded after it.
    def made_now(recipe, name):
        torch.rand(1000)
        return run

    monkeypatch.setattr(lesion_runs, "cached_default_run", made_now)
    lesions.main([*flags, "--output_dir", str(tmp_path / "made_now")])
    assert (tmp_path / "made_now" / "predictions.csv").read_text() == (
        tmp_path / "default" / "predictions.csv"
    ).read_text()
    # --from_scratch: the small ViT from random weights, no encoder made, nothing said about pre-training
    lesions.main([*flags, "--output_dir", str(tmp_path / "scratch"), "--from_scratch", "true", "--image_size", "32"])
    m = json.loads((tmp_path / "scratch" / "metrics.json").read_text())
    assert len(made) == 1 and "random init" in m["base_model"] and "pretrained_encoder" not in m
    assert "Pre-trained on" not in (tmp_path / "scratch" / "README.md").read_text()
