"""Train a class-conditional diffusion model of skin-lesion images and measure what it produces.

Offline default (synthetic HAM10000-format sample, 32 px, small UNet, CPU, a few minutes); the
evaluation uses a lesion-classifier run folder (from recipes/lesion_classification.py) when one is given:
    accelerate launch recipes/image_diffusion.py --config recipes/configs/image_diffusion/synthetic_32px.yaml
Real HAM10000 at 64 px on a GPU, or latent diffusion with a pretrained AutoencoderKL:
    accelerate launch recipes/image_diffusion.py --config recipes/configs/image_diffusion/ham10000_64px_gpu.yaml

The diffusion model sees only the TRAINING split of the lesion recipe's patient-grouped split (same data,
fractions and seed), so its images never contain the classifier's validation or test patients and can be
added to that recipe's training data (recipes/augmentation_experiment.py). The run folder loads with
`LesionDiffusionPipeline.from_pretrained(DIR)`; it also holds the card, metrics.json (fidelity, FID/KID,
memorisation, diversity, throughput), samples/ and run_config.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import TrainingArguments

from hf_medai.config import RunArguments, parse_args, resolved_config
from hf_medai.data.image_batches import square_pixel_tensors
from hf_medai.data.lesions import LESION_GROUP, subgroup_frame
from hf_medai.data.splits import split_report
from hf_medai.data.synthetic.lesions import is_synthetic
from hf_medai.errors import run_main
from hf_medai.evaluation.image_generation import FidCurve, GenerationEvalArguments, evaluate_generator
from hf_medai.hub import finish_run
from hf_medai.io import save_pretrained_atomic, write_json
from hf_medai.lesion_split import LesionSplitArguments, load_lesion_split
from hf_medai.models.diffusion import build_lesion_unet, build_noise_scheduler, class_conditional_loss, encode_latents
from hf_medai.pipelines.lesion_diffusion import LesionDiffusionPipeline
from hf_medai.pipelines.sampling import save_grid
from hf_medai.run_folder import begin_run, num_parameters, run_record
from hf_medai.training import train_loop


@dataclass
class ModelArguments:
    resolution: int = field(default=32, metadata={"help": "Image side in pixels (centre square, resized)."})
    block_out_channels: list[int] = field(
        default_factory=lambda: [32, 64, 64], metadata={"help": "UNet channels per resolution level."}
    )
    layers_per_block: int = field(default=1, metadata={"help": "ResNet layers per UNet block."})
    attention_levels: int = field(
        default=1, metadata={"help": "Self-attention in this many of the lowest-resolution levels."}
    )
    class_dropout: float = field(
        default=0.1,
        metadata={"help": "Probability of training a batch row unconditionally (classifier-free guidance)."},
    )
    num_train_timesteps: int = field(
        default=1000, metadata={"help": "Diffusion steps of the training noise schedule."}
    )
    beta_schedule: Literal["squaredcos_cap_v2", "linear", "scaled_linear"] = field(
        default="squaredcos_cap_v2", metadata={"help": "diffusers beta schedule of the training noise."}
    )
    prediction_type: Literal["v_prediction", "epsilon"] = field(
        default="v_prediction",
        metadata={
            "help": "v keeps few-step samplers (DPM-Solver++, DDIM) stable with the cosine schedule, where epsilon "
            "amplifies errors at high noise."
        },
    )
    ema_decay: float = field(
        default=0.999, metadata={"help": "EMA of the weights (0 = off); the saved pipeline holds the EMA weights."}
    )
    snr_gamma: float = field(
        default=0.0,
        metadata={"help": "Min-SNR-gamma loss weighting (e.g. 5; 0 = the plain MSE). See benchmarks/ for its effect."},
    )
    augment: bool = field(
        default=True, metadata={"help": "Random flips and quarter turns (dermoscopy has no up or down)."}
    )
    vae_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A pretrained AutoencoderKL (hub id or folder): latent diffusion. Default: pixel space."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from the UNet of a saved LesionDiffusionPipeline folder."}
    )
    sample_every: int = field(
        default=200,
        metadata={"help": "Write a per-class sample grid (samples/step-N.png) every N optimizer steps (0 = never)."},
    )

    def __post_init__(self):
        if not 0 <= self.class_dropout < 1:
            raise ValueError(f"class_dropout must be in [0, 1), got {self.class_dropout}")


DEFAULTS = dict(
    output_dir="runs/image_diffusion",
    max_steps=800,
    learning_rate=5e-4,
    weight_decay=0.0,
    warmup_steps=100,
    lr_scheduler_type="cosine",
    per_device_train_batch_size=32,
    save_strategy="steps",
    save_steps=200,
    save_total_limit=2,
    logging_steps=25,
    max_grad_norm=1.0,
    report_to="none",
    dataloader_num_workers=0,
)

CONFIG_DATACLASSES = (LesionSplitArguments, ModelArguments, GenerationEvalArguments, RunArguments, TrainingArguments)


def main(args=None):
    data_args, model_args, gen_args, run_args, training_args = parse_args(
        *CONFIG_DATACLASSES, args=args, defaults=DEFAULTS
    )
    resume, push = begin_run(training_args, run_args)

    # Data: load -> decode once (cached) -> the lesion recipe's patient-grouped split -> centre squares
    with training_args.main_process_first(desc="data"):
        splits, class_names, report, source = load_lesion_split(data_args)
        # Each split as two in-memory tensors: uint8 pixels [N,3,H,W] and int64 labels [N] (small at these sizes).
        squares = {name: square_pixel_tensors(ds, model_args.resolution) for name, ds in splits.items()}
    train_pixels, train_labels = squares["train"]

    # Model: a class-conditional UNet (+1 "no class" embedding), a DDPM noise schedule, optionally a VAE
    noise_scheduler = build_noise_scheduler(
        model_args.num_train_timesteps, model_args.beta_schedule, model_args.prediction_type
    )
    vae = None
    if model_args.vae_name_or_path:
        from diffusers import AutoencoderKL

        vae = (
            AutoencoderKL.from_pretrained(model_args.vae_name_or_path, use_safetensors=True)
            .to(training_args.device)
            .eval()
        )
        inputs = encode_latents(
            vae, train_pixels, batch_size=training_args.per_device_eval_batch_size
        )  # once, not per step
    else:
        inputs = train_pixels  # scaled to [-1, 1] per batch
    unet = build_lesion_unet(
        len(class_names),
        sample_size=inputs.shape[-1],
        in_channels=inputs.shape[1],
        block_out_channels=model_args.block_out_channels,
        layers_per_block=model_args.layers_per_block,
        attention_levels=model_args.attention_levels,
        init_from=model_args.model_name_or_path,
    )
    null_class = len(class_names)

    def collate(rows):
        x = torch.stack([r[0] for r in rows])
        x = x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x
        return {"x": x, "labels": torch.stack([r[1] for r in rows])}

    def diffusion_loss(model, batch):
        return class_conditional_loss(
            model,
            batch["x"],
            batch["labels"],
            noise_scheduler,
            null_class,
            model_args.class_dropout,
            model_args.augment,
            model_args.snr_gamma or None,
        )

    def pipeline_of(model) -> LesionDiffusionPipeline:
        pipe = LesionDiffusionPipeline(unet=model, scheduler=noise_scheduler, vae=vae, class_names=class_names)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    fid_curve = None  # FID/KID and fidelity at each sample point (main process): the card's FID-vs-steps table

    def sample_grid(step, model):
        nonlocal fid_curve
        pipe = pipeline_of(model)
        images = pipe(
            class_names,
            num_images_per_label=gen_args.grid_images_per_class,
            num_inference_steps=25,
            guidance_scale=gen_args.guidance_scale,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images
        save_grid(images, rows=len(class_names), path=Path(training_args.output_dir) / "samples" / f"step-{step}.png")
        if gen_args.fid_curve and gen_args.classifier_dir:
            fid_curve = fid_curve or FidCurve(gen_args, train_pixels, training_args.device)
            fid_curve(step, pipe)

    # Train!
    result = train_loop(
        unet,
        training_args,
        torch.utils.data.TensorDataset(inputs, train_labels),
        collate,
        diffusion_loss,
        resume_from_checkpoint=resume,
        ema_decay=model_args.ema_decay or None,
        on_step=sample_grid,
        on_step_every=model_args.sample_every,
    )

    if result.accelerator.is_main_process:
        out = Path(training_args.output_dir)
        # Save: the pipeline (EMA weights, scheduler, class names, VAE if any)
        pipe = pipeline_of(result.model)
        save_pretrained_atomic(pipe, out)

        # Evaluate: generate per class, score against training and held-out images
        heldout = {
            "pixels": torch.cat([squares["validation"][0], squares["test"][0]]),
            "labels": torch.cat([squares["validation"][1], squares["test"][1]]),
        }
        evaluation = evaluate_generator(
            pipe,
            gen_args,
            out,
            train={"pixels": train_pixels, "labels": train_labels},
            heldout=heldout,
            device=training_args.device,
            train_subgroups=subgroup_frame(splits["train"], ["fitzpatrick", "site"]).drop(columns="lesion_id"),
        )
        headline, sampling = evaluation.pop("headline"), evaluation.pop("sampling_throughput")

        # Report: metrics.json (the run record + fidelity, FID/KID, memorisation, diversity)
        record = run_record(
            "image_diffusion",
            "image-generation",
            loop=result,
            training={"train_images": len(train_labels)},
            extra_throughput=sampling,
            dataset=str(data_args.data_dir or "synthetic HAM10000-format sample (hf-medai data lesions)"),
            synthetic_data=is_synthetic(source),
            data_report=report.to_dict(),
            splits=split_report(splits, group_column=LESION_GROUP),
        )
        write_json(
            out / "metrics.json",
            {
                **headline,
                **record.to_dict(),
                "pipeline_tag": "unconditional-image-generation",  # the Hub has no class-conditional tag
                "library_name": "diffusers",
                "class_names": class_names,
                **evaluation,
                "fid_curve": fid_curve.rows if fid_curve else None,
                "model": {
                    "space": "latent" if vae is not None else "pixel",
                    "vae": model_args.vae_name_or_path,
                    "resolution": model_args.resolution,
                    "unet_sample_size": inputs.shape[-1],
                    "num_parameters": num_parameters(result.model),
                    "init_from": model_args.model_name_or_path,
                },
            },
        )

        # Card (README.md + CHAI), push if asked, summary
        finish_run(out, resolved_config(data_args, model_args, gen_args, run_args, training_args), training_args, push)
    result.accelerator.wait_for_everyone()
    return training_args.output_dir


if __name__ == "__main__":
    run_main(main)
