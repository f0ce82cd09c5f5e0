"""Pre-train an image encoder as a masked autoencoder (MAE, He et al. 2022) on UNLABELLED images, for fine-tuning.

Offline default (a synthetic unlabelled pool of 20,000 lesion-like images, a tiny MAE whose encoder is the lesion
classifier's small ViT, CPU, about 10 minutes), then fine-tune the lesion classifier from it:
    accelerate launch recipes/image_pretraining.py --output_dir runs/image_pretraining
    accelerate launch recipes/lesion_classification.py --model_name_or_path runs/image_pretraining --output_dir runs/lesions_from_mae
Your images (any lesion format, labels ignored, or a plain folder of images), continuing facebook/vit-mae-base:
    recipes/configs/image_pretraining/isic_vit_mae_base.yaml

The run folder's root is the ENCODER: a plain `ViTModel` (`AutoModel.from_pretrained(DIR, add_pooling_layer=False)`,
`AutoModelForImageClassification.from_pretrained(DIR, num_labels=2)`) with its image processor. `mae/` keeps the
whole MAE (decoder included) to continue pre-training from (`--model_name_or_path DIR`). The reconstruction loss
is measured on held-out images (by patient for lesion data) with fixed masks, before and after training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from transformers import TrainingArguments

from hf_medai.config import ConfigError, RunArguments, parse_args, resolved_config
from hf_medai.data.image_batches import add_pixel_values
from hf_medai.data.synthetic.lesions import is_synthetic
from hf_medai.data.unlabelled_images import heldout_split, load_pretraining_images, split_facts
from hf_medai.errors import run_main
from hf_medai.evaluation.reconstruction import mean_with_ci
from hf_medai.hub import finish_run
from hf_medai.image_pretraining import (
    PLOTS,
    heldout_losses,
    masked_image_trainer,
    save_encoder_and_mae,
    training_facts,
    with_fixed_noise,
    write_pretraining_plots,
)
from hf_medai.io import write_json
from hf_medai.models.mae import build_mae, encoder_config
from hf_medai.models.vision import processor_image_size
from hf_medai.run_folder import begin_run, num_parameters, run_record

POOL = "synthetic unlabelled lesion-image pool (hf-medai data lesion_pool)"


@dataclass
class DataArguments:
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Unlabelled images: a folder of images, or any lesion dataset (labels ignored). "
            "Default: a synthetic unlabelled pool of lesion-like images, generated once."
        },
    )
    data_format: Literal["auto", "folder", "imagefolder", "ham10000", "isic2019", "isic2020", "csv"] = field(
        default="auto",
        metadata={
            "help": "Format of data_dir: auto (a lesion table if there is one, else every image under it) | folder | a lesion format."
        },
    )
    val_fraction: float = field(
        default=0.05,
        metadata={
            "help": "Fraction of patients (of images, for a plain folder) held out for the reconstruction loss."
        },
    )
    eval_images: int = field(default=1000, metadata={"help": "Held-out images scored at each evaluation (0: all)."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the held-out split."})
    skip_bad_rows: bool = field(
        default=False, metadata={"help": "Skip and count bad rows/images instead of stopping at the first."}
    )
    max_image_side: int = field(
        default=512, metadata={"help": "Images are decoded once and cached with the longer side at most this."}
    )
    synthetic_n: int = field(default=20000, metadata={"help": "Images in the synthetic pool (offline default only)."})


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "An MAE to continue: hub id (facebook/vit-mae-base), its folder, or a run folder of this recipe. "
            "Default: a tiny MAE whose encoder is the lesion classifier's small ViT."
        },
    )
    image_size: int = field(default=64, metadata={"help": "Input size of the default tiny MAE (ignored otherwise)."})
    mask_ratio: float = field(default=0.75, metadata={"help": "Fraction of patches hidden from the encoder."})
    norm_pix_loss: bool = field(
        default=True, metadata={"help": "Reconstruct each patch normalised to zero mean and unit variance."}
    )
    augment: bool = field(
        default=True, metadata={"help": "Augment training images: crops, flips, 90-degree turns, mild colour jitter."}
    )
    n_bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples (of images) for the loss CIs."})

    def __post_init__(self):
        if not 0 < self.mask_ratio < 1:
            raise ConfigError(f"mask_ratio must be between 0 and 1 (exclusive), got {self.mask_ratio}")


DEFAULTS = dict(
    output_dir="runs/image_pretraining",
    num_train_epochs=12,
    learning_rate=1.5e-3,
    weight_decay=0.05,
    adam_beta2=0.95,  # the MAE paper's
    warmup_steps=0.05,
    lr_scheduler_type="cosine",
    per_device_train_batch_size=128,
    per_device_eval_batch_size=256,
    eval_strategy="epoch",
    save_strategy="epoch",
    save_total_limit=1,
    logging_steps=20,
    report_to="none",
    remove_unused_columns=False,  # the collator reads `pixels` and `noise`, which the model's forward does not name
    dataloader_num_workers=0,
)
CONFIG_DATACLASSES = (DataArguments, ModelArguments, RunArguments, TrainingArguments)


def main(args=None, callbacks=None):
    data_args, model_args, run_args, training_args = parse_args(*CONFIG_DATACLASSES, args=args, defaults=DEFAULTS)
    resume, push = begin_run(training_args, run_args)

    # Data: images (decoded once, cached) -> held-out split by patient -> pixels at the model's size (cached)
    with training_args.main_process_first(desc="data"):
        images, report, source, fmt = load_pretraining_images(
            data_args.data_dir,
            data_args.data_format,
            data_args.skip_bad_rows,
            data_args.max_image_side,
            data_args.synthetic_n,
        )
        splits = heldout_split(images, data_args.val_fraction, data_args.split_seed)
        mae, processor = build_mae(
            model_args.model_name_or_path, model_args.image_size, model_args.mask_ratio, model_args.norm_pix_loss
        )
        train = add_pixel_values(splits["train"], processor)
        heldout = splits["validation"]
        if data_args.eval_images and len(heldout) > data_args.eval_images:
            keep = np.random.default_rng(0).choice(len(heldout), data_args.eval_images, replace=False)
            heldout = heldout.select(np.sort(keep))
        heldout = with_fixed_noise(
            add_pixel_values(heldout, processor), mae.vit.embeddings.patch_embeddings.num_patches
        )

    # The loss before training, on the same held-out images and masks as after
    batch = training_args.per_device_eval_batch_size
    before = heldout_losses(mae, heldout, processor, batch) if training_args.process_index == 0 else None

    # Train!
    trainer = masked_image_trainer(mae, processor, train, heldout, training_args, model_args.augment, callbacks or ())
    train_result = trainer.train(resume_from_checkpoint=resume)
    model = trainer.whole_model()  # every process: under FSDP / ZeRO-3 this gathers the weights

    if trainer.is_world_process_zero():
        out = training_args.output_dir
        # Evaluate, then save: the encoder (a plain ViTModel) at the root, the whole MAE in mae/
        after = heldout_losses(model, heldout, processor, batch)
        save_encoder_and_mae(model, processor, out)
        loss, loss_before = (mean_with_ci(x["loss"], model_args.n_bootstrap) for x in (after, before))
        flat = float(np.mean(after["zero_prediction"])) if model.config.norm_pix_loss else None
        curves = write_pretraining_plots(trainer, model, processor, heldout, out, loss_before["mean"], reference=flat)

        # Report: metrics.json (the run record + the held-out losses + what was read), card, push if asked, summary
        record = run_record(
            "image_pretraining",
            "image-feature-extraction",
            trainer=trainer,
            train_result=train_result,
            resumed_from=resume,
            throughput=trainer.throughput,
            model=model,
            training={**training_facts(trainer), **curves},
            base_model=model_args.model_name_or_path or "tiny MAE from a config (random init)",
            dataset=str(data_args.data_dir or POOL),
            synthetic_data=is_synthetic(source),
            data_report=report.to_dict(),
            splits=split_facts(splits),
        )
        encoder = encoder_config(model.config)
        write_json(
            f"{out}/metrics.json",
            {
                **record.to_dict(),
                "reconstruction_loss": loss["mean"],
                "reconstruction_loss_ci_low": loss["ci_low"],
                "reconstruction_loss_ci_high": loss["ci_high"],
                "reconstruction_loss_before": loss_before["mean"],
                "reconstruction_loss_before_ci_low": loss_before["ci_low"],
                "reconstruction_loss_before_ci_high": loss_before["ci_high"],
                "flat_patch_loss": flat,
                "heldout": {
                    "split": "validation",
                    "images": len(heldout),
                    "mask_ratio": model.config.mask_ratio,
                    "masks": "fixed (seed 0): the same masked patches before, during and after training",
                    "n_bootstrap": model_args.n_bootstrap,
                },
                "pretraining_data": {
                    "images": len(train),
                    "groups": split_facts(splits)["train"]["groups"],
                    "format": fmt,
                    "source": str(source),
                    "input_size": list(processor_image_size(processor)),
                },
                "encoder": {
                    "architecture": "ViTModel",
                    "num_parameters": num_parameters(model.vit),
                    "decoder_parameters": num_parameters(model.decoder),
                    **{
                        k: getattr(encoder, k)
                        for k in ("hidden_size", "num_hidden_layers", "patch_size", "image_size")
                    },
                },
                "plots": PLOTS,
            },
        )
        finish_run(out, resolved_config(data_args, model_args, run_args, training_args), training_args, push)
    trainer.accelerator.wait_for_everyone()
    return training_args.output_dir


if __name__ == "__main__":
    run_main(main)
