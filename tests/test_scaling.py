"""Scaling out: 2 real CPU processes (gloo) through `accelerate launch`, SIGKILL and resume, half-written checkpoints.

Two recipes, one on `Trainer` (lesion_classification) and one on our own loop (image_diffusion), each:
- run with 2 processes: world size 2, the processes trained on different examples, every process ended with the
  weights that were saved (test hook HF_MEDAI_RECORD_TRAINING_DATA, hf_medai/throughput.py);
- killed with SIGKILL mid-training (a subprocess, kill -9 as soon as a checkpoint folder appears, possibly while it
  is being written) and resumed with `--resume_from_checkpoint last`: it ends at the planned step count.
`last` takes only complete checkpoints (hf_medai/io.py, `last_complete_checkpoint`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import TrainingArguments

from helpers import ROOT, accelerate_launch, load_recipe
from hf_medai.config import RunArguments
from hf_medai.errors import ConfigError
from hf_medai.io import checkpoint_incomplete_reason
from hf_medai.run_folder import begin_run
from hf_medai.throughput import RECORD_DIR, RECORD_ENV, state_dict_sha256

LESION = [
    "--max_steps",
    "4",
    "--image_size",
    "32",
    "--from_scratch",
    "true",
    "--n_bootstrap",
    "20",
    "--eval_strategy",
    "no",
    "--load_best_model_at_end",
    "false",
    "--class_balance",
    "none",
]  # none: the saved head is the trained one
DIFFUSION = [
    "--resolution",
    "16",
    "--block_out_channels",
    "16",
    "32",
    "--per_device_train_batch_size",
    "16",
    "--eval_images_per_class",
    "2",
    "--eval_inference_steps",
    "2",
    "--eval_batch_size",
    "4",
    "--grid_images_per_class",
    "1",
    "--sample_every",
    "0",
    "--learning_rate",
    "0.002",
    "--warmup_steps",
    "0",
    "--logging_steps",
    "1",
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("scaling")
    return {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "HF_HOME": str(home / "hf_home"),  # no user default_config.yaml
        "HF_MEDAI_CACHE": str(home / "cache"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from hf_medai.data.synthetic.lesions import write_ham10000

    return write_ham10000(tmp_path_factory.mktemp("ham") / "ham", n=160, seed=5)


def _launch_two(script: str, args: list[str], env, cwd):
    cmd = accelerate_launch(2, str(ROOT / "recipes" / script), *args)
    proc = subprocess.run(cmd, env={**env, RECORD_ENV: "1"}, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _records(out) -> list[dict]:
    records = [json.loads((out / RECORD_DIR / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in records] == [2, 2]
    return records


def _assert_different_data_same_weights(records, per_rank: int, batch: int, saved_model):
    # Indices in loading order. accelerate's loader fetches one batch ahead (to know where the epoch ends), so the
    # record may end with one batch that was loaded but not trained on.
    for r in records:
        assert len(r["indices"]) in (per_rank, per_rank + batch)
    a, b = (set(r["indices"]) for r in records)
    # Within one epoch (no wrap-around padding): each process its own share of examples, none on both.
    assert len(a) == len(records[0]["indices"]) and len(b) == len(records[1]["indices"])
    assert not a & b
    assert records[0]["state_dict_sha256"] == records[1]["state_dict_sha256"] == state_dict_sha256(saved_model)


def test_lesion_recipe_two_processes(sample, env, tmp_path):
    from transformers import AutoModelForImageClassification

    out = tmp_path / "run"
    _launch_two(
        "lesion_classification.py",
        [
            "--data_dir",
            str(sample),
            "--output_dir",
            str(out),
            *LESION,
            "--per_device_train_batch_size",
            "4",
            "--gradient_accumulation_steps",
            "2",
            "--save_strategy",
            "no",
        ],
        env,
        tmp_path,
    )
    m = json.loads((out / "metrics.json").read_text())
    t = m["throughput"]
    assert t["world_size"] == 2 and t["global_batch_size"] == 4 * 2 * 2 and m["training"]["global_step"] == 4
    saved = AutoModelForImageClassification.from_pretrained(out)
    _assert_different_data_same_weights(
        _records(out), per_rank=4 * 2 * 4, batch=4, saved_model=saved
    )  # batch x accum x steps


def test_image_diffusion_recipe_two_processes(sample, env, tmp_path):
    from hf_medai.pipelines.lesion_diffusion import LesionDiffusionPipeline

    out = tmp_path / "run"
    _launch_two(
        "image_diffusion.py",
        ["--data_dir", str(sample), "--output_dir", str(out), *DIFFUSION, "--max_steps", "2", "--save_strategy", "no"],
        env,
        tmp_path,
    )
    m = json.loads((out / "metrics.json").read_text())
    t = m["throughput"]
    assert t["world_size"] == 2 and t["global_batch_size"] == 32 and m["training"]["global_step"] == 2
    assert t["optimizer_steps"] == 2
    saved = LesionDiffusionPipeline.from_pretrained(out).unet  # the EMA weights: the same on every process
    _assert_different_data_same_weights(_records(out), per_rank=16 * 2, batch=16, saved_model=saved)


def test_molecule_diffusion_recipe_two_processes(env, tmp_path):
    """The molecule loss goes through the DDP wrapper: without it the processes' gradients were never averaged and
    each process ended with its own weights."""
    from hf_medai.pipelines.molecule_diffusion import MoleculeDiffusionPipeline

    out = tmp_path / "run"
    _launch_two(
        "molecule_diffusion.py",
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
            "2",
            "--save_strategy",
            "no",
            "--per_device_train_batch_size",
            "8",
            "--num_eval_molecules",
            "4",
            "--eval_batch_size",
            "4",
            "--eval_inference_steps",
            "5",
            "--warmup_steps",
            "0",
            "--num_train_timesteps",
            "100",
        ],
        env,
        tmp_path,
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["throughput"]["world_size"] == 2 and m["training"]["global_step"] == 2
    saved = MoleculeDiffusionPipeline.from_pretrained(out).denoiser
    _assert_different_data_same_weights(_records(out), per_rank=8 * 2, batch=8, saved_model=saved)


def _run_until_checkpoint_then_kill(cmd, env, watch, cwd) -> None:
    """Start `cmd`; kill -9 the moment any path in `watch` exists (a checkpoint folder, maybe still being written)."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not any(p.exists() for p in watch):
            if proc.poll() is not None:
                pytest.fail(
                    f"the run ended (rc {proc.returncode}) before a checkpoint appeared: {proc.stderr.read()[-3000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 300 s")
            time.sleep(0.005)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()


def test_trainer_recipe_killed_mid_training_resumes_to_the_planned_step(sample, env, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "--data_dir",
        str(sample),
        "--output_dir",
        str(out),
        *LESION,
        "--max_steps",
        "30",
        "--per_device_train_batch_size",
        "8",
        "--save_strategy",
        "steps",
        "--save_steps",
        "3",
        "--save_total_limit",
        "20",
    ]
    # The folder checkpoint-6 appears when Trainer starts writing it: the kill may land mid-save.
    _run_until_checkpoint_then_kill(
        [sys.executable, str(ROOT / "recipes" / "lesion_classification.py"), *args],
        env,
        [out / "checkpoint-6"],
        tmp_path,
    )
    assert not (out / "metrics.json").exists()
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    complete = [s for s in steps if checkpoint_incomplete_reason(out / f"checkpoint-{s}") is None]
    assert complete and complete[-1] < 30
    # Plant a half-written newest checkpoint, as a kill during `save_model` leaves it: weights cut short, no state.
    planted = out / f"checkpoint-{steps[-1] + 1}"
    planted.mkdir()
    (planted / "model.safetensors").write_bytes(
        (out / f"checkpoint-{complete[-1]}" / "model.safetensors").read_bytes()[:1000]
    )

    os.environ["HF_MEDAI_CACHE"] = env["HF_MEDAI_CACHE"]  # the same decoded-image cache as the killed run
    try:
        load_recipe("lesion_classification").main([*args, "--resume_from_checkpoint", "last"])
    finally:
        del os.environ["HF_MEDAI_CACHE"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["training"]["resumed_from"] == str(out / f"checkpoint-{complete[-1]}")
    assert m["training"]["global_step"] == 30 and m["throughput"]["optimizer_steps"] == 30 - complete[-1]
    assert f"skipped incomplete {planted.name}" in capsys.readouterr().err


def test_own_loop_recipe_killed_mid_training_resumes_to_the_planned_step(sample, env, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "--data_dir",
        str(sample),
        "--output_dir",
        str(out),
        *DIFFUSION,
        "--max_steps",
        "16",
        "--save_steps",
        "2",
        "--save_total_limit",
        "0",
    ]
    # Our loop writes checkpoint-N.partial and renames it: kill the moment the second one starts.
    _run_until_checkpoint_then_kill(
        [sys.executable, str(ROOT / "recipes" / "image_diffusion.py"), *args],
        env,
        [out / "checkpoint-4.partial", out / "checkpoint-4"],
        tmp_path,
    )
    assert not (out / "metrics.json").exists()
    finished = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if not p.name.endswith(".partial"))
    assert finished and all(checkpoint_incomplete_reason(out / f"checkpoint-{s}") is None for s in finished)
    os.environ["HF_MEDAI_CACHE"] = env["HF_MEDAI_CACHE"]
    try:
        load_recipe("image_diffusion").main([*args, "--resume_from_checkpoint", "last"])
    finally:
        del os.environ["HF_MEDAI_CACHE"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["training"]["resumed_from"] == str(out / f"checkpoint-{finished[-1]}")
    assert m["training"]["global_step"] == 16 and m["throughput"]["optimizer_steps"] == 16 - finished[-1]
    assert [s for s, _ in m["training"]["loss_curve"]] == list(range(1, 17))  # the resumed curve continues the first


def _resume_last(out):
    args = TrainingArguments(output_dir=str(out), resume_from_checkpoint="last", report_to="none", use_cpu=True)
    return begin_run(args, RunArguments())[0]


def test_last_skips_half_written_checkpoints_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    good = out / "checkpoint-2"
    good.mkdir(parents=True)
    (good / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (out / "checkpoint-4").mkdir()  # killed while saving the weights: no trainer_state.json yet
    (out / "checkpoint-4" / "model.safetensors").write_bytes(b"\0" * 10)
    (out / "checkpoint-6").mkdir()  # killed while writing trainer_state.json itself
    (out / "checkpoint-6" / "trainer_state.json").write_text('{"global_step": 6, "log_hist')
    (out / "checkpoint-8.partial").mkdir()  # our loop's staging folder: never a candidate
    (out / "checkpoint-8.partial" / "loop_state.json").write_text(json.dumps({"global_step": 8}))
    assert _resume_last(out) == str(good)
    err = capsys.readouterr().err
    assert "checkpoint-6 (trainer_state.json is cut short)" in err and "checkpoint-4 (no trainer_state.json" in err
    assert f"resuming from {good}" in err

    (good / "trainer_state.json").write_text("")
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        _resume_last(out)


def test_loop_resumes_at_the_right_batch_when_an_epoch_ends_in_a_short_accumulation(tmp_path):
    """5 batches per epoch, 2 accumulated: optimizer steps of 2, 2, 1 batches. A resume at step 3 starts epoch 1."""
    from hf_medai.training import train_loop

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    data = [{"x": a, "y": a.sum(-1, keepdim=True)} for a in x]

    def collate(rows):
        return {"x": torch.stack([r["x"] for r in rows]), "y": torch.stack([r["y"] for r in rows])}

    def loss_fn(model, batch):
        return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])

    def model():
        torch.manual_seed(0)
        return torch.nn.Linear(4, 1)

    def args(out):
        return TrainingArguments(
            output_dir=str(out),
            use_cpu=True,
            report_to="none",
            per_device_train_batch_size=8,
            gradient_accumulation_steps=2,
            max_steps=7,
            save_strategy="steps",
            save_steps=3,
            learning_rate=0.05,
            lr_scheduler_type="constant",
            seed=1,
        )

    straight = train_loop(model(), args(tmp_path / "a"), data, collate, loss_fn, ema_decay=None)
    train_loop(model(), args(tmp_path / "b"), data, collate, loss_fn, ema_decay=None)
    resumed = train_loop(
        model(),
        args(tmp_path / "b"),
        data,
        collate,
        loss_fn,
        ema_decay=None,
        resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-3"),
    )
    assert resumed.global_step == 7 and resumed.throughput["optimizer_steps"] == 4
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
