"""Masked-autoencoder pre-training with the Trainer, then the held-out report and the run folder: what
recipes/image_pretraining.py runs, kept here so the recipe reads in one sitting and the benchmark trains the same way.

    trainer = masked_image_trainer(mae, processor, train, heldout, training_args, augment=True)
    trainer.train(resume_from_checkpoint=resume)
    save_encoder_and_mae(trainer.whole_model(), processor, output_dir)   # root: ViTModel; mae/: the full MAE

The held-out images carry fixed masking `noise` (seed 0), so the validation loss of every evaluation, before and after
training, is measured on the same masked patches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hf_medai.data.image_batches import DermoscopyAugment
from hf_medai.evaluation.reconstruction import (
    loss_curve_plot,
    mean_with_ci,
    per_image_loss,
    reconstruct,
    reconstruction_grid,
)
from hf_medai.io import save_pretrained_atomic
from hf_medai.models.mae import MAE_SUBFOLDER, MaskedImageCollator, export_encoder, masking_noise
from hf_medai.run_outputs import kept_checkpoint
from hf_medai.throughput import ThroughputCallback
from hf_medai.trainer import MedTrainer

PLOTS = {"loss_curve": "loss_curve.png", "reconstructions": "reconstructions.png"}
# Decoding only the columns the collator reads keeps the data path off the profile.
TRAIN_COLUMNS, HELDOUT_COLUMNS = ["pixels"], ["pixels", "noise"]


class MaskedImageTrainer(MedTrainer):
    """MedTrainer whose evaluation reports the model's own loss: Trainer computes an evaluation loss only for models
    that take labels (or declare `return_loss=True`), and an MAE's loss needs neither."""

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = model(**inputs).loss
        return loss.detach(), None, None


def with_fixed_noise(heldout, num_patches: int, seed: int = 0):
    """The held-out images with a `noise` column: each image's masking noise, the same at every evaluation."""
    noise = masking_noise(len(heldout), num_patches, seed).numpy()
    return heldout.add_column("noise", list(noise)).with_format("torch", columns=HELDOUT_COLUMNS)


def masked_image_trainer(
    model, processor, train, heldout, training_args, augment: bool = True, callbacks=()
) -> MaskedImageTrainer:
    """The Trainer of an MAE on `train` (a `pixels` column) evaluated on `heldout` (`pixels` and fixed `noise`).

    `augment`: the lesion classifier's augmentation (crops, flips, 90-degree turns, mild colour jitter) on training
    batches. Its `throughput` (a ThroughputCallback) is read again for metrics.json."""
    throughput = ThroughputCallback()
    trainer = MaskedImageTrainer(
        model=model,
        args=training_args,
        train_dataset=train.select_columns(TRAIN_COLUMNS),
        eval_dataset=heldout.select_columns(HELDOUT_COLUMNS),
        data_collator=MaskedImageCollator(processor, None),
        train_data_collator=MaskedImageCollator(processor, DermoscopyAugment()) if augment else None,
        processing_class=processor,
        callbacks=[throughput, *callbacks],
    )
    trainer.throughput = throughput
    return trainer


def heldout_losses(model, heldout, processor, batch_size: int) -> dict[str, Any]:
    """Per-image held-out losses of `model` (`per_image_loss`), batched through the evaluation collator."""
    collate = MaskedImageCollator(processor, None)
    rows = heldout.select_columns(HELDOUT_COLUMNS)
    batches = (
        collate([rows[j] for j in range(i, min(i + batch_size, len(rows)))]) for i in range(0, len(rows), batch_size)
    )
    return per_image_loss(model, batches)


def heldout_summary(losses: dict[str, Any], n_bootstrap: int) -> dict[str, float | None]:
    loss = mean_with_ci(losses["loss"], n_bootstrap)
    return {"loss": loss["mean"], "ci_low": loss["ci_low"], "ci_high": loss["ci_high"]}


def save_encoder_and_mae(model, processor, output_dir: str | Path) -> None:
    """The run folder's artifacts: at the root the encoder as a plain ViTModel (what fine-tuning recipes load) with
    the image processor; in mae/ the whole MAE, decoder included, to continue pre-training from."""
    output_dir = Path(output_dir)
    save_pretrained_atomic(export_encoder(model), output_dir)
    save_pretrained_atomic(processor, output_dir)
    save_pretrained_atomic(model, output_dir / MAE_SUBFOLDER)
    save_pretrained_atomic(processor, output_dir / MAE_SUBFOLDER)


def write_pretraining_plots(
    trainer, model, processor, heldout, output_dir, before: float, reference: float | None, n_images: int = 8
):
    """loss_curve.png (training and held-out loss by step; `before`: the held-out loss at step 0) and
    reconstructions.png (the first `n_images` held-out images, their fixed masks, the reconstructions). Returns the
    curves for metrics.json."""
    history = trainer.state.log_history
    train_curve = [(e["step"], e["loss"]) for e in history if "loss" in e and "step" in e]
    eval_curve = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e]
    if not eval_curve or eval_curve[0][0] > 0:
        eval_curve.insert(0, (0, before))
    loss_curve_plot(train_curve, eval_curve, Path(output_dir) / PLOTS["loss_curve"], reference)
    rows = heldout.select_columns(HELDOUT_COLUMNS)[: min(n_images, len(heldout))]
    batch = MaskedImageCollator(processor, None)(
        [{"pixels": p, "noise": z} for p, z in zip(rows["pixels"], rows["noise"])]
    )
    images = reconstruct(model, batch["pixel_values"], batch["noise"], processor.image_mean, processor.image_std)
    grid = Path(output_dir) / PLOTS["reconstructions"]
    reconstruction_grid(images, grid, model.config.mask_ratio, normalised=model.config.norm_pix_loss)
    return {"eval_loss_curve": eval_curve, "train_loss_curve": train_curve}


def training_facts(trainer) -> dict[str, Any]:
    """How the run ended: which weights were kept (the last step, unless `load_best_model_at_end`)."""
    return {"epochs": trainer.state.epoch, "kept_checkpoint": kept_checkpoint(trainer.state, trainer.args)}
