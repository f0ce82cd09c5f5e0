"""The shared Accelerate loop (hf_medai/training.py): it learns, checkpoints atomically and resumes exactly."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainingArguments

from helpers import accelerate_launch
from hf_medai.errors import SetupError
from hf_medai.training import EMA_WEIGHTS, LOOP_STATE, train_loop


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) + 0.5
    return [{"x": a, "y": b} for a, b in zip(x, y)]


def _collate(rows):
    return {"x": torch.stack([r["x"] for r in rows]), "y": torch.stack([r["y"] for r in rows])}


def _loss(model, batch):
    # Noise drawn inside the loss, as diffusion losses do: exact resume needs the RNG state restored too.
    noise = 0.01 * torch.randn_like(batch["y"])
    return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"] + noise)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        max_steps=12,
        save_strategy="steps",
        save_steps=4,
        logging_steps=2,
        lr_scheduler_type="cosine",
        warmup_steps=2,
        seed=3,
    )
    base.update(kw)
    return TrainingArguments(**base)


def test_loop_learns_and_changes_every_parameter(tmp_path):
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    result = train_loop(
        model, _args(tmp_path, max_steps=40, save_strategy="no"), _data(), _collate, _loss, ema_decay=None
    )
    losses = [loss for _, loss in result.loss_curve]
    assert result.global_step == 40
    assert losses[-1] < 0.5 * losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(before, result.model.parameters()))
    t = result.throughput
    assert t["optimizer_steps"] == 40 and t["train_samples_per_second"] > 0 and t["world_size"] == 1
    assert t["peak_rss_mb"] > 0


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    data = _data()
    straight = train_loop(_model(), _args(tmp_path / "a"), data, _collate, _loss, ema_decay=0.9)

    # The same run killed during step 6 (its checkpoint-4 on disk), then resumed from that checkpoint.
    def crash(step, model):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_loop(
            _model(), _args(tmp_path / "b"), data, _collate, _loss, ema_decay=0.9, on_step=crash, on_step_every=1
        )
    ckpt = tmp_path / "b" / "checkpoint-4"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["checkpoint-4"]
    assert (ckpt / LOOP_STATE).is_file() and (ckpt / EMA_WEIGHTS).is_file()
    assert (ckpt / "model.safetensors").is_file()
    resumed = train_loop(
        _model(), _args(tmp_path / "b"), data, _collate, _loss, ema_decay=0.9, resume_from_checkpoint=str(ckpt)
    )
    assert resumed.global_step == 12 and resumed.throughput["optimizer_steps"] == 8
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert [s for s, _ in resumed.loss_curve] == [s for s, _ in straight.loss_curve]


def test_checkpoints_rotate_and_leave_no_staging_folder(tmp_path):
    train_loop(_model(), _args(tmp_path, save_total_limit=2), _data(), _collate, _loss)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-12", "checkpoint-8"]


def test_ema_weights_are_returned_and_sampling_hook_sees_them(tmp_path):
    seen = []
    result = train_loop(
        _model(),
        _args(tmp_path, save_strategy="no"),
        _data(),
        _collate,
        _loss,
        ema_decay=0.5,
        on_step=lambda step, m: seen.append((step, [p.detach().clone() for p in m.parameters()])),
        on_step_every=6,
    )
    assert [s for s, _ in seen] == [6, 12]
    # At the last step the hook saw the EMA weights, which are what the loop returns.
    for a, b in zip(seen[-1][1], result.model.parameters()):
        torch.testing.assert_close(a, b)


def test_mixed_precision_on_cpu_is_refused(tmp_path):
    with pytest.raises(SetupError, match="need a GPU"):
        train_loop(_model(), _args(tmp_path, bf16=True), _data(), _collate, _loss)


def test_gradient_accumulation_matches_the_larger_batch(tmp_path):
    def exact_loss(model, batch):  # no noise: the two runs must agree to rounding
        return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])

    kw = dict(save_strategy="no", max_steps=3, warmup_steps=0, lr_scheduler_type="constant")
    big = train_loop(
        _model(),
        _args(tmp_path / "a", per_device_train_batch_size=8, **kw),
        _data(),
        _collate,
        exact_loss,
        ema_decay=None,
    )
    accumulated = train_loop(
        _model(),
        _args(tmp_path / "b", per_device_train_batch_size=4, gradient_accumulation_steps=2, **kw),
        _data(),
        _collate,
        exact_loss,
        ema_decay=None,
    )
    assert accumulated.global_step == 3 and accumulated.throughput["global_batch_size"] == 8
    for a, b in zip(big.model.parameters(), accumulated.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


TWO_PROCESS_SCRIPT = """
import json, sys, torch
from transformers import TrainingArguments
from hf_medai.training import train_loop

out = sys.argv[1]
data = [{"x": torch.full((4,), float(i)), "i": torch.tensor(i)} for i in range(32)]
seen = []

def collate(rows):
    return {"x": torch.stack([r["x"] for r in rows]), "i": torch.stack([r["i"] for r in rows])}

def loss_fn(model, batch):
    seen.extend(batch["i"].tolist())
    return model(batch["x"]).pow(2).mean()

torch.manual_seed(0)
args = TrainingArguments(output_dir=out, use_cpu=True, report_to="none", per_device_train_batch_size=4, max_steps=4,
                         save_strategy="no", learning_rate=0.01, seed=0)
r = train_loop(torch.nn.Linear(4, 1), args, data, collate, loss_fn, ema_decay=None)
rank = r.accelerator.process_index
json.dump({"world": r.throughput["world_size"], "seen": seen, "weights": r.model.weight.flatten().tolist()},
          open(f"{out}/rank{rank}.json", "w"))
"""


def test_two_processes_train_on_different_data_and_stay_in_sync(tmp_path):
    import json
    import os
    import subprocess

    script = tmp_path / "two.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    cmd = accelerate_launch(2, str(script), str(tmp_path))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 16  # 4 steps x batch 4 on each process
    assert not set(ranks[0]["seen"]) & set(ranks[1]["seen"])  # one epoch of 32: no example on both processes
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients all-reduced: identical models
