"""The shared Accelerate loop (hf_medai/training.py): it learns, checkpoints atomically and resumes exactly."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainingArguments

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
    base = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=8,
                learning_rate=1e-2, max_steps=12, save_strategy="steps", save_steps=4, logging_steps=2,
                lr_scheduler_type="cosine", warmup_steps=2, seed=3)
    base.update(kw)
    return TrainingArguments(**base)


def test_loop_learns_and_changes_every_parameter(tmp_path):
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    result = train_loop(model, _args(tmp_path, max_steps=40, save_strategy="no"), _data(), _collate, _loss, ema_decay=None)
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
        train_loop(_model(), _args(tmp_path / "b"), data, _collate, _loss, ema_decay=0.9, on_step=crash, on_step_every=1)
    ckpt = tmp_path / "b" / "checkpoint-4"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["checkpoint-4"]
    assert (ckpt / LOOP_STATE).is_file() and (ckpt / EMA_WEIGHTS).is_file()
    assert (ckpt / "model.safetensors").is_file()
    resumed = train_loop(_model(), _args(tmp_path / "b"), data, _collate, _loss, ema_decay=0.9,
                         resume_from_checkpoint=str(ckpt))
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
    result = train_loop(_model(), _args(tmp_path, save_strategy="no"), _data(), _collate, _loss, ema_decay=0.5,
                        on_step=lambda step, m: seen.append((step, [p.detach().clone() for p in m.parameters()])),
                        on_step_every=6)
    assert [s for s, _ in seen] == [6, 12]
    # At the last step the hook saw the EMA weights, which are what the loop returns.
    for a, b in zip(seen[-1][1], result.model.parameters()):
        torch.testing.assert_close(a, b)


def test_mixed_precision_on_cpu_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="need a GPU"):
        train_loop(_model(), _args(tmp_path, bf16=True), _data(), _collate, _loss)
