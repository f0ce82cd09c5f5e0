"""Lesion-image diffusion: the pipeline's contract, the recipe end to end, resume, and the augmentation table."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from huggingface_hub import ModelCard
from PIL import Image

from helpers import load_recipe
from hf_medai.data.lesion_formats import BINARY_CLASSES
from hf_medai.models.diffusion import build_lesion_unet, dihedral_augment
from hf_medai.pipelines.lesion_diffusion import LesionDiffusionPipeline

recipe = load_recipe("image_diffusion")

TINY = [
    "--resolution",
    "16",
    "--block_out_channels",
    "16",
    "32",
    "--max_steps",
    "6",
    "--save_steps",
    "3",
    "--sample_every",
    "3",
    "--per_device_train_batch_size",
    "16",
    "--eval_images_per_class",
    "6",
    "--eval_inference_steps",
    "4",
    "--eval_batch_size",
    "12",
    "--learning_rate",
    "0.002",
    "--warmup_steps",
    "0",
    "--logging_steps",
    "1",
    "--grid_images_per_class",
    "3",
]


def tiny_pipeline(seed=0, vae=None):
    torch.manual_seed(seed)
    unet = build_lesion_unet(2, sample_size=8 if vae else 16, in_channels=4 if vae else 3, block_out_channels=(16, 32))
    pipe = LesionDiffusionPipeline(
        unet, DDPMScheduler(num_train_timesteps=100), vae=vae, class_names=["benign", "melanoma"]
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_pipeline_is_deterministic_and_survives_save_and_load(tmp_path):
    pipe = tiny_pipeline()
    a = pipe(["melanoma", "benign"], num_inference_steps=5, generator=torch.manual_seed(7), output_type="np").images
    b = pipe(["melanoma", "benign"], num_inference_steps=5, generator=torch.manual_seed(7), output_type="np").images
    c = pipe(["melanoma", "benign"], num_inference_steps=5, generator=torch.manual_seed(8), output_type="np").images
    assert a.shape == (2, 16, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    again = LesionDiffusionPipeline.from_pretrained(tmp_path)
    again.set_progress_bar_config(disable=True)
    assert again.config.class_names == ["benign", "melanoma"]
    d = again(["melanoma", "benign"], num_inference_steps=5, generator=torch.manual_seed(7), output_type="np").images
    assert np.array_equal(a, d)


@pytest.mark.parametrize("scheduler_cls", [DDIMScheduler, DPMSolverMultistepScheduler, DDPMScheduler])
def test_any_scheduler_can_be_swapped_in(scheduler_cls):
    pipe = tiny_pipeline()
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    images = pipe([0, 1, 1], num_inference_steps=4, generator=torch.manual_seed(0)).images
    assert len(images) == 3 and all(isinstance(im, Image.Image) and im.size == (16, 16) for im in images)


def test_class_labels_by_name_or_index_and_guidance():
    pipe = tiny_pipeline()
    by_name = pipe(
        "melanoma", num_images_per_label=2, num_inference_steps=3, generator=torch.manual_seed(1), output_type="np"
    ).images
    by_index = pipe(
        1, num_images_per_label=2, num_inference_steps=3, generator=torch.manual_seed(1), output_type="np"
    ).images
    assert by_name.shape[0] == 2 and np.array_equal(by_name, by_index)
    guided = pipe(
        1,
        num_images_per_label=2,
        num_inference_steps=3,
        guidance_scale=4.0,
        generator=torch.manual_seed(1),
        output_type="np",
    ).images
    assert not np.array_equal(guided, by_index)  # guidance changes the prediction
    with pytest.raises(ValueError, match="unknown class 'nevus'"):
        pipe("nevus")
    with pytest.raises(ValueError, match="out of range"):
        pipe(5)


def test_latent_pipeline_decodes_through_the_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
        sample_size=16,
    )
    pipe = tiny_pipeline(vae=vae)
    images = pipe([0, 1], num_inference_steps=3, generator=torch.manual_seed(0), output_type="np").images
    assert images.shape == (2, 16, 16, 3)  # 8x8 latents decoded to 16x16 pixels


def test_dihedral_augment_only_flips_and_turns():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    torch.manual_seed(0)
    y = dihedral_augment(x)
    for i in range(2):
        options = [x[i].rot90(k, (-2, -1)) for k in range(4)] + [x[i].flip(-1).rot90(k, (-2, -1)) for k in range(4)]
        assert any(torch.equal(y[i], o) for o in options)


# ------------------------------------------------------------------------------------------- recipe end to end


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from hf_medai.data.synthetic.lesions import write_ham10000

    return write_ham10000(tmp_path_factory.mktemp("ham") / "ham", n=160, seed=5)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A lesion-classifier run folder (tiny, untrained): enough to exercise fidelity, FID and features."""
    from hf_medai.models.vision import build_image_classifier

    out = tmp_path_factory.mktemp("clf") / "lesions"
    torch.manual_seed(0)
    model, processor = build_image_classifier(None, BINARY_CLASSES, image_size=32)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def run(sample, classifier, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "diffusion"
    recipe.main(["--data_dir", str(sample), "--output_dir", str(out), "--classifier_dir", str(classifier), *TINY])
    return out


def test_run_folder_follows_the_contract(run):
    for name in [
        "model_index.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/config.json",
        "scheduler/scheduler_config.json",
        "README.md",
        "metrics.json",
        "run_config.yaml",
        "samples/grid.png",
        "samples/step-3.png",
        "samples/step-6.png",
        "samples/README.txt",
        "checkpoint-6/model.safetensors",
        "checkpoint-6/ema_model.safetensors",
    ]:
        assert (run / name).is_file(), name
    assert not [p for p in run.rglob("*.bin") if "checkpoint-" not in str(p)], "weights must be safetensors only"
    for name in BINARY_CLASSES:
        pngs = sorted((run / "samples" / name).glob("*.png"))
        assert len(pngs) == 6
        assert "SYNTHETIC" in Image.open(pngs[0]).text["Comment"]
    assert len(list((run / "memorisation").glob("pair_*.png"))) == 8


def test_folder_loads_with_from_pretrained_and_generates_requested_classes(run):
    pipe = LesionDiffusionPipeline.from_pretrained(run)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.class_names == BINARY_CLASSES
    out = pipe(
        ["melanoma", "not_melanoma", "melanoma"],
        num_inference_steps=3,
        generator=torch.manual_seed(0),
        output_type="np",
    )
    assert out.images.shape == (3, 16, 16, 3)


def test_metrics_hold_every_evaluation_and_match_the_saved_samples(run, classifier):
    from hf_medai.evaluation.generative import ClassifierFeatures, class_fidelity

    m = json.loads((run / "metrics.json").read_text())
    for key in [
        "class_fidelity",
        "class_fidelity_melanoma",
        "fid",
        "fid_heldout_reference",
        "kid",
        "memorised_images",
        "diversity_pixel",
        "training_diversity_pixel",
        "classifier_accuracy_on_heldout",
    ]:
        assert key in m, key
    assert m["fid"] >= 0 and m["fid_heldout_reference"] >= 0
    skin = m["subgroups"]["fitzpatrick"][
        "groups"
    ]  # skin types of the training images vs of the generated images' nearest
    assert sum(g["training_fraction"] for g in skin.values()) == pytest.approx(1)
    assert sum(g["generated_fraction"] for g in skin.values()) == pytest.approx(1)
    assert m["memorisation"]["n_generated"] == 12 and m["memorisation"]["n_training"] == m["training"]["train_images"]
    assert m["throughput"]["train_samples_per_second"] > 0 and m["throughput"]["peak_rss_mb"] > 0
    assert m["throughput"]["sampling_images_per_second_dpmsolver++_4"] > 0
    assert m["training"]["global_step"] == 6 and len(m["training"]["loss_curve"]) == 6
    # Fidelity re-computed from the PNGs on disk with the classifier equals the recorded one.
    images, labels = [], []
    for c, name in enumerate(BINARY_CLASSES):
        for path in sorted((run / "samples" / name).glob("*.png")):
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(c)
    _, probs = ClassifierFeatures(classifier)(np.stack(images))
    again = class_fidelity(probs, labels, BINARY_CLASSES)
    assert again["fidelity"] == pytest.approx(m["class_fidelity"])
    # The generator was trained on the training split only: the held-out reference has the other patients.
    assert m["training"]["train_images"] == m["splits"]["train"]["rows"]
    # FID vs steps: a point at every sample step; the last is the final EMA weights with the evaluation's sampler,
    # seed and images, so it reproduces the headline FID.
    curve = m["fid_curve"]
    assert [r["step"] for r in curve] == [3, 6] and all(r["images"] == 12 for r in curve)
    assert curve[-1]["fid"] == pytest.approx(m["fid"], rel=1e-4)
    assert curve[-1]["class_fidelity"] == pytest.approx(m["class_fidelity"])


def test_card_documents_fidelity_memorisation_and_misuse(run):
    card = ModelCard.load(run / "README.md")
    m = json.loads((run / "metrics.json").read_text())
    text = card.text
    assert card.data.library_name == "diffusers"
    for phrase in [
        "SYNTHETIC",
        "Class fidelity",
        "Memorisation",
        "What it cannot catch",
        "Fabricated clinical evidence",
        "Diversity",
        f"{m['fid']:.2f}",
        "samples/grid.png",
        "Representation of skin types",
        "FID vs training steps",
    ]:
        assert phrase in text, phrase


def test_resume_from_last_checkpoint(run, tmp_path):
    copy = tmp_path / "diffusion"
    shutil.copytree(run, copy)
    args = [
        "--output_dir",
        str(copy),
        "--resume_from_checkpoint",
        "last",
        *TINY,
        "--max_steps",
        "8",
        "--data_dir",
        json.loads((run / "metrics.json").read_text())["dataset"],
    ]
    recipe.main(args)
    m = json.loads((copy / "metrics.json").read_text())
    assert m["training"]["global_step"] == 8 and m["training"]["resumed_from"].endswith("checkpoint-6")
    assert m["throughput"]["optimizer_steps"] == 2


def test_an_existing_run_folder_is_not_overwritten(run):
    with pytest.raises(Exception, match="exists|overwrite"):
        recipe.main(["--output_dir", str(run), *TINY])


def test_augmentation_experiment_produces_its_table(run, classifier, tmp_path):
    experiment = load_recipe("augmentation_experiment")
    diffusion = tmp_path / "diffusion"
    shutil.copytree(run, diffusion)
    out = experiment.main(
        [
            "--diffusion_run",
            str(diffusion),
            "--output_dir",
            str(tmp_path / "aug"),
            "--n_generated",
            "6",
            "--inference_steps",
            "3",
            "--n_bootstrap",
            "20",
            "--lesion_args",
            "--num_train_epochs 1 --image_size 32 --from_scratch true --n_bootstrap 10 --min_group_size 5",
        ]
    )
    result = json.loads((out / "augmentation.json").read_text())
    base, aug = result["runs"]["baseline"], result["runs"]["augmented"]
    assert result["target_class"] == "melanoma"  # the rarer class of the generator's training split
    assert base["generated_images_added"] == 0 and aug["generated_images_added"] == 6
    assert base["train_images_target_class"] == aug["train_images_target_class"]  # same real images
    steps = [
        json.loads((out / name / "metrics.json").read_text())["training"]["global_step"]
        for name in ("baseline", "augmented")
    ]
    assert steps[0] == steps[1] == result["optimizer_steps"]
    assert len(list((out / "generated" / "melanoma").glob("*.png"))) == 6
    assert "| baseline |" in (out / "augmentation.md").read_text()
    # Its own run folder and card; the generator's run folder is only read.
    assert "Augmentation experiment" in (out / "README.md").read_text()
    assert json.loads((out / "metrics.json").read_text())["recipe"] == "augmentation_experiment"
    assert "augmentation" not in json.loads((diffusion / "metrics.json").read_text())
    assert (diffusion / "README.md").read_text() == (run / "README.md").read_text()
    assert "added to the TRAINING split only" in (out / "augmented" / "README.md").read_text()
    assert "added to the TRAINING split only" not in (out / "baseline" / "README.md").read_text()
    # Only training data was augmented: both runs were tested on the same real images.
    assert base["test_images"] == aug["test_images"]


def test_training_lowers_the_denoising_loss(sample, tmp_path):
    out = tmp_path / "learn"
    recipe.main(
        [
            "--data_dir",
            str(sample),
            "--output_dir",
            str(out),
            *TINY,
            "--max_steps",
            "60",
            "--logging_steps",
            "5",
            "--save_strategy",
            "no",
            "--sample_every",
            "0",
            "--eval_images_per_class",
            "2",
            "--eval_inference_steps",
            "2",
        ]
    )
    curve = [loss for _, loss in json.loads((out / "metrics.json").read_text())["training"]["loss_curve"]]
    assert len(curve) == 12 and sum(curve[-3:]) < 0.75 * sum(curve[:3]), curve


def test_a_push_takes_the_pipeline_but_never_training_images(run):
    from hf_medai.hub import plan_push

    files = [p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()]
    pushed = set(plan_push(run).upload)
    assert {"model_index.json", "unet/diffusion_pytorch_model.safetensors", "README.md", "samples/grid.png"} <= pushed
    assert not [f for f in pushed if f.startswith(("memorisation/", "checkpoint-"))]
    assert any(f.startswith("memorisation/") for f in files)  # they exist locally, for the user to inspect


def test_min_snr_weighting_follows_its_formula():
    from diffusers.training_utils import compute_snr

    from hf_medai.models.diffusion import build_noise_scheduler, class_conditional_loss

    torch.manual_seed(0)
    unet = build_lesion_unet(2, sample_size=16, block_out_channels=(16, 32))
    x, y = torch.rand(6, 3, 16, 16) * 2 - 1, torch.tensor([0, 1, 0, 1, 0, 1])
    for prediction_type in ("epsilon", "v_prediction"):
        scheduler = build_noise_scheduler(prediction_type=prediction_type)
        torch.manual_seed(1)
        weighted = class_conditional_loss(unet, x, y, scheduler, 2, snr_gamma=5.0)
        torch.manual_seed(1)  # the same draws, in the loss's order: noise, timesteps (no dropout, no flips)
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (6,))
        with torch.no_grad():
            pred = unet(scheduler.add_noise(x, noise, t), t, class_labels=y).sample
        target = noise if prediction_type == "epsilon" else scheduler.get_velocity(x, noise, t)
        snr = compute_snr(scheduler, t)
        w = snr.clamp(max=5.0) / (snr if prediction_type == "epsilon" else snr + 1)
        expected = (((pred - target) ** 2).flatten(1).mean(1) * w).mean()
        assert weighted.item() == pytest.approx(expected.item(), rel=1e-5)
        assert (w <= 1 + 1e-6).all() and (w < 0.99).any()  # down-weights the low-noise steps, never up-weights
