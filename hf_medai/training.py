"""The one Accelerate training loop, for the models `transformers.Trainer` does not fit (diffusion).

It reads the same `TrainingArguments` as every other recipe (learning rate and schedule, warm-up,
epochs or max_steps, batch size, gradient accumulation, bf16/fp16, seed, save_steps,
save_total_limit, logging_steps, max_grad_norm, use_cpu), so a user learns one set of flags once.

What it does that a hand-written diffusers example loop usually leaves out:
- exact resume: a checkpoint holds model, optimizer, LR schedule, RNG states, EMA weights and the
  position in the epoch; the data order is a function of (seed, epoch), so a run interrupted and
  resumed ends with the same weights as one that was not;
- checkpoints are written to a staging folder and renamed, so a kill mid-save leaves no half
  checkpoint for `--resume_from_checkpoint last` to pick;
- EMA weights (diffusers' `EMAModel`) saved as safetensors, used for the periodic sampling hook and
  copied into the returned model;
- throughput that counts only training time (not checkpointing or sampling) and peak memory;
- the loss is read back to Python only at logging steps, so the accelerator never waits on `.item()`.

Scaling: the global batch is per_device_train_batch_size x processes x gradient_accumulation_steps; max_steps and
the LR schedule count optimizer steps; samples/s sums every process. Test hook: with HF_MEDAI_RECORD_TRAINING_DATA=1
each process records the indices it trained on and its final weights' hash (hf_medai/throughput.py).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Sampler

from hf_medai.errors import ConfigError, SetupError
from hf_medai.io import checkpoint_folders
from hf_medai.throughput import IndexRecordingDataset, peak_memory_mb, record_requested, write_training_record

LOOP_STATE = "loop_state.json"
EMA_WEIGHTS = "ema_model.safetensors"


class EpochShuffleSampler(Sampler):
    """A random order that depends only on (seed, epoch): resuming mid-run replays the same order."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


@dataclass
class LoopResult:
    model: torch.nn.Module  # unwrapped; holds the EMA weights when EMA was on
    accelerator: Any
    global_step: int
    loss_curve: list[tuple[int, float]]
    throughput: dict[str, Any]
    resumed_from: str | None = None
    ema_decay: float | None = None


def _every(value: float, max_steps: int) -> int:
    """TrainingArguments' step intervals may be fractions of the run (0 < x < 1)."""
    if not value or value <= 0:
        return 0
    return max(1, math.ceil(value * max_steps)) if value < 1 else int(value)


def _mixed_precision(args) -> str:
    if not (args.bf16 or args.fp16):
        return "no"
    if args.use_cpu or not torch.cuda.is_available():
        # bf16 matmuls are ~400x slower than fp32 on these CPUs; a silent fallback would hide the flag.
        raise SetupError("--bf16/--fp16 need a GPU; on CPU train in fp32 (drop the flag)")
    return "bf16" if args.bf16 else "fp16"


def train_loop(
    model: torch.nn.Module,
    args,
    dataset,
    collate_fn: Callable[[list], Any],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    *,
    resume_from_checkpoint: str | None = None,
    ema_decay: float | None = 0.999,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
    on_step_every: int = 0,
    samples_per_batch: Callable[[Any], int] | None = None,
) -> LoopResult:
    """Train `model` on `dataset` with `loss_fn(model, batch) -> scalar loss`, as `args` says.

    `on_step(step, model)` runs on the main process every `on_step_every` optimizer steps with the EMA
    weights swapped in (e.g. to write sample grids); its time is not counted as training time.
    `samples_per_batch(batch)` counts samples for throughput (default: the batch's leading dimension).
    """
    from accelerate import Accelerator, DistributedType
    from diffusers.training_utils import EMAModel
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    accelerator = Accelerator(
        mixed_precision=_mixed_precision(args),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        cpu=args.use_cpu,
    )
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        # EMA, sampling hooks and the pipeline save all read whole weights; these models fit one GPU.
        raise SetupError(
            f"{accelerator.distributed_type.value} launch: the hf-medai training loop (image_diffusion, "
            "molecule_diffusion) runs one process or data-parallel (DDP) only. Launch with "
            "recipes/accelerate/single_gpu.yaml or multi_gpu.yaml."
        )
    seen_indices: list[int] = []  # test hook (HF_MEDAI_RECORD_TRAINING_DATA, see hf_medai/throughput.py)
    if record_requested():
        dataset = IndexRecordingDataset(dataset, seen_indices)
    sampler = EpochShuffleSampler(len(dataset), seed=args.seed)
    loader = DataLoader(
        dataset,
        batch_size=args.per_device_train_batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        drop_last=args.dataloader_drop_last,
        num_workers=args.dataloader_num_workers,
        # Its own generator: each new iterator draws a worker seed, which must not advance
        # the global RNG that the loss's noise comes from (resume would drift by one draw).
        generator=torch.Generator().manual_seed(args.seed),
    )
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=args.learning_rate,
        weight_decay=args.weight_decay,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if len(loader) == 0:
        raise ConfigError(
            f"no training batches: {len(dataset)} examples, batch size {args.per_device_train_batch_size}, "
            f"{accelerator.num_processes} process(es), drop_last={args.dataloader_drop_last}"
        )

    steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    max_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
    # Not `accelerator.prepare`d: that would step it once per process. One step per optimizer step.
    lr_scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=args.get_warmup_steps(max_steps),
        num_training_steps=max_steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs or {},
    )
    unwrapped = accelerator.unwrap_model(model)
    ema = EMAModel(unwrapped.parameters(), decay=ema_decay, use_ema_warmup=True) if ema_decay else None
    save_every = (
        _every(args.save_steps, max_steps)
        if getattr(args.save_strategy, "value", args.save_strategy) == "steps"
        else 0
    )
    log_every = _every(args.logging_steps, max_steps) or 50

    global_step, loss_curve = 0, []
    if resume_from_checkpoint:
        accelerator.load_state(resume_from_checkpoint)
        state = json.loads((Path(resume_from_checkpoint) / LOOP_STATE).read_text())
        global_step, loss_curve = state["global_step"], [tuple(x) for x in state["loss_curve"]]
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        if ema is not None:
            ema_file = Path(resume_from_checkpoint) / EMA_WEIGHTS
            if not ema_file.is_file():
                raise ConfigError(
                    f"{resume_from_checkpoint}: no {EMA_WEIGHTS}; it was saved without EMA (set ema_decay to match)"
                )
            shadow = load_file(ema_file)
            ema.shadow_params = [shadow[f"{i}"].to(p.device) for i, p in enumerate(ema.shadow_params)]
            ema.optimization_step = state["ema_optimization_step"]

    def save_checkpoint():
        final = Path(args.output_dir) / f"checkpoint-{global_step}"
        staging = final.with_name(final.name + ".partial")
        if accelerator.is_main_process and staging.exists():
            shutil.rmtree(staging)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))
        if accelerator.is_main_process:
            if ema is not None:
                save_file(
                    {f"{i}": p.detach().contiguous().cpu() for i, p in enumerate(ema.shadow_params)},
                    staging / EMA_WEIGHTS,
                )
            loop_state = {
                "global_step": global_step,
                "loss_curve": loss_curve,
                "lr_scheduler": lr_scheduler.state_dict(),
                "ema_optimization_step": ema.optimization_step if ema is not None else None,
                "max_steps": max_steps,
                "world_size": accelerator.num_processes,
            }
            (staging / LOOP_STATE).write_text(json.dumps(loop_state))
            # A same-step folder (a re-save) is moved aside, not deleted in place: a kill mid-delete would leave a
            # `checkpoint-N` with its loop_state.json but without some weights, and it would pass for complete.
            old = final.with_name(final.name + ".old")
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
            _rotate_checkpoints(Path(args.output_dir), args.save_total_limit)
        accelerator.wait_for_everyone()

    def run_hook():
        if ema is not None:
            ema.store(unwrapped.parameters())
            ema.copy_to(unwrapped.parameters())
        unwrapped.eval()
        with torch.no_grad():
            on_step(global_step, unwrapped)
        unwrapped.train()
        if ema is not None:
            ema.restore(unwrapped.parameters())

    # Train!
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    steps_at_start, paused, samples = global_step, 0.0, 0
    bar = tqdm(total=max_steps, initial=global_step, desc="training", disable=not accelerator.is_local_main_process)
    running_loss, running_n = torch.zeros((), device=accelerator.device), 0
    model.train()
    start = time.perf_counter()
    # Where a resumed run picks up. An epoch ends with a short accumulation when len(loader) is not a multiple of
    # gradient_accumulation_steps (accelerate syncs at the loader's end), so count in optimizer steps per epoch.
    epoch, skip = global_step // steps_per_epoch, (global_step % steps_per_epoch) * args.gradient_accumulation_steps
    while global_step < max_steps:
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        epoch_loader.set_epoch(epoch)  # accelerate's loaders re-set the sampler's epoch from their own counter
        skip = 0
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                loss = loss_fn(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            running_loss += loss.detach().float()
            running_n += 1
            samples += samples_per_batch(batch) if samples_per_batch else _leading_dim(batch)
            if not accelerator.sync_gradients:
                continue
            lr_scheduler.step()
            if ema is not None:
                ema.step(unwrapped.parameters())
            global_step += 1
            bar.update(1)
            if global_step % log_every == 0 or global_step == max_steps:
                mean_loss = accelerator.reduce(running_loss / max(running_n, 1), reduction="mean").item()
                loss_curve.append((global_step, round(mean_loss, 6)))
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
                running_loss.zero_()
                running_n = 0
            pause = time.perf_counter()
            if save_every and global_step % save_every == 0:
                save_checkpoint()
            if on_step is not None and on_step_every and global_step % on_step_every == 0:
                if accelerator.is_main_process:
                    run_hook()
                accelerator.wait_for_everyone()
            paused += time.perf_counter() - pause
            if global_step >= max_steps:
                break
        epoch += 1
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    bar.close()
    if save_every and global_step % save_every != 0 and global_step > steps_at_start:
        save_checkpoint()  # the end of the run is always resumable

    train_time = max(wall - paused, 1e-9)
    steps = global_step - steps_at_start
    total_samples = int(accelerator.reduce(torch.tensor(samples, device=accelerator.device), reduction="sum").item())
    throughput = {
        "train_samples_per_second": round(total_samples / train_time, 2),
        "train_steps_per_second": round(steps / train_time, 3),
        "train_seconds": round(train_time, 2),
        "optimizer_steps": steps,
        "global_batch_size": args.per_device_train_batch_size
        * args.gradient_accumulation_steps
        * accelerator.num_processes,
        "world_size": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "device": str(accelerator.device),
        **peak_memory_mb(),
    }
    if ema is not None:
        ema.copy_to(unwrapped.parameters())
    # Without the mixed-precision forward wrapper: the returned model is for saving and fp32 inference.
    unwrapped = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    unwrapped.eval()
    if record_requested():
        write_training_record(
            args.output_dir, accelerator.process_index, accelerator.num_processes, seen_indices, unwrapped
        )
    return LoopResult(
        model=unwrapped,
        accelerator=accelerator,
        global_step=global_step,
        loss_curve=loss_curve,
        throughput=throughput,
        resumed_from=str(resume_from_checkpoint) if resume_from_checkpoint else None,
        ema_decay=ema_decay,
    )


def _leading_dim(batch) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    values = batch.values() if isinstance(batch, dict) else batch
    return next(v.shape[0] for v in values if isinstance(v, torch.Tensor))


def _rotate_checkpoints(output_dir: Path, limit: int | None) -> None:
    if not limit:
        return
    for old in checkpoint_folders(output_dir)[:-limit]:
        shutil.rmtree(old, ignore_errors=True)
