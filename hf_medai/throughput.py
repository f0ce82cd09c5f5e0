"""Throughput and peak memory, computed once for every recipe (torchtune's lesson: not per recipe).

Throughput counts only time spent training: evaluation and checkpointing inside the run are taken out,
so the number compares with a baseline that does neither. Samples are counted globally (all processes).
"""

from __future__ import annotations

import resource
import sys
import time

import torch
from transformers import TrainerCallback


def peak_memory_mb() -> dict[str, float]:
    """Peak accelerator memory (allocated by torch) if there is one, and the process's peak RSS."""
    out: dict[str, float] = {}
    if torch.cuda.is_available():
        out["peak_accelerator_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    out["peak_rss_mb"] = round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)
    return out


class ThroughputCallback(TrainerCallback):
    """Times a `Trainer` run, leaving out evaluation and checkpoint saving."""

    def __init__(self, tokens_per_sample: float | None = None):
        self.tokens_per_sample = tokens_per_sample
        self._start = self._paused_at = None
        self.paused = 0.0
        self.wall = 0.0
        self.steps_at_start = 0
        self.steps = 0
        self.global_batch = 0

    def on_train_begin(self, args, state, control, **kw):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        self.steps_at_start = state.global_step  # a resumed run counts only the steps it ran
        self._start = time.perf_counter()

    def _pause(self):
        self._paused_at = time.perf_counter()

    def _resume(self):
        if self._paused_at is not None:
            self.paused += time.perf_counter() - self._paused_at
            self._paused_at = None

    # Trainer calls on_step_end, then evaluates / saves, then on_evaluate / on_save.
    def on_step_end(self, args, state, control, **kw):
        if (control.should_evaluate or control.should_save) and self._paused_at is None:
            self._pause()

    # ... and at an epoch's end the same (epoch-strategy evaluation and saving).
    def on_epoch_end(self, args, state, control, **kw):
        if (control.should_evaluate or control.should_save) and self._paused_at is None:
            self._pause()

    def on_evaluate(self, args, state, control, **kw):
        self._resume()
        if control.should_save:
            self._pause()

    def on_save(self, args, state, control, **kw):
        self._resume()

    def on_train_end(self, args, state, control, **kw):
        self._resume()
        self.wall = time.perf_counter() - self._start
        self.steps = state.global_step - self.steps_at_start

    def summary(self, world_size: int) -> dict[str, float]:
        train_time = max(self.wall - self.paused, 1e-9)
        samples = self.steps * self.global_batch
        out = {
            "train_samples_per_second": round(samples / train_time, 2),
            "train_seconds": round(train_time, 2),
            "train_seconds_incl_eval_and_save": round(self.wall, 2),
            "optimizer_steps": self.steps,
            "global_batch_size": self.global_batch,
            "world_size": world_size,
        }
        if self.tokens_per_sample:
            out["train_tokens_per_second"] = round(samples * self.tokens_per_sample / train_time, 1)
        return out
