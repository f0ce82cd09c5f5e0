"""Throughput and peak memory, computed once for every recipe (torchtune's lesson: not per recipe).

Throughput counts only time spent training: evaluation and checkpointing inside the run are taken out,
so the number compares with a baseline that does neither. Samples are counted globally (all processes).
"""

from __future__ import annotations

import time

import torch
from transformers import TrainerCallback

from hf_medai.run_folder import peak_memory_mb  # noqa: F401  (re-exported: training.py imports it from here)


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


# ---------------------------------------------------------------------------------------------------------------
# What each process trained on: a test hook for data-parallel runs, off unless the environment asks for it.
#
# With HF_MEDAI_RECORD_TRAINING_DATA=1, `MedTrainer.train` and `train_loop` make every process write
# `<output_dir>/training_record/rank-<R>.json`: the indices (into the training dataset) of the examples that process
# loaded for training, in loading order, and the SHA-256 of its final model's state dict. accelerate's loaders fetch
# one batch ahead, so the last batch recorded may have been loaded but not trained on. tests/test_scaling.py reads them to check that
# the processes saw different data and ended with the same weights as the saved model. Nothing else reads them.

RECORD_ENV = "HF_MEDAI_RECORD_TRAINING_DATA"
RECORD_DIR = "training_record"


def record_requested() -> bool:
    import os

    return os.environ.get(RECORD_ENV, "") not in ("", "0", "false", "False")


class IndexRecordingDataset(torch.utils.data.Dataset):
    """A map-style dataset that appends each index it is asked for to `sink` (the loading process's own list)."""

    def __init__(self, dataset, sink: list[int]):
        self.dataset, self.sink = dataset, sink

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        self.sink.append(int(index))
        return self.dataset[index]


def state_dict_sha256(model: torch.nn.Module) -> str:
    """One hash of every tensor of the state dict (names, dtypes, shapes and values), in name order."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_training_record(output_dir, rank: int, world_size: int, indices: list[int], model: torch.nn.Module) -> None:
    """Under sharding (FSDP's DTensor shards, ZeRO-3's partitions) a process holds part of each weight: then the record
    says how many weight elements it held, of how many, instead of a hash."""
    from torch.distributed.tensor import DTensor

    from hf_medai.io import write_json

    params = list(model.parameters())
    total = sum(int(getattr(p, "ds_numel", p.numel())) for p in params)
    held = sum(
        int(
            p.to_local().numel()
            if isinstance(p, DTensor)
            else p.ds_tensor.numel()
            if hasattr(p, "ds_tensor")
            else p.numel()
        )
        for p in params
    )
    record = {
        "rank": rank,
        "world_size": world_size,
        "indices": indices,
        "parameter_elements": total,
        "parameter_elements_held": held,
        "state_dict_sha256": state_dict_sha256(model) if held == total else None,
    }
    write_json(f"{output_dir}/{RECORD_DIR}/rank-{rank}.json", record)
