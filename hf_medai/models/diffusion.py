"""Builders for lesion-image diffusion: a class-conditional `UNet2DModel`, its noise schedule, and helpers."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from hf_medai.errors import ConfigError


def build_lesion_unet(
    num_classes: int,
    sample_size: int = 32,
    in_channels: int = 3,
    block_out_channels: Sequence[int] = (32, 64, 64),
    layers_per_block: int = 1,
    attention_levels: int = 1,
    init_from: str | None = None,
):
    """A `UNet2DModel` with `num_classes + 1` class embeddings: the last one means "no class" (CFG dropout).

    init_from: a saved `LesionDiffusionPipeline` folder whose UNet to start from (its shape wins).
    """
    from diffusers import UNet2DModel

    if init_from:
        unet = UNet2DModel.from_pretrained(init_from, subfolder="unet", use_safetensors=True)
        if unet.config.num_class_embeds != num_classes + 1:
            raise ConfigError(
                f"{init_from}: its UNet knows {unet.config.num_class_embeds - 1} classes, the data has {num_classes}"
            )
        return unet
    levels = len(block_out_channels)
    if sample_size % 2 ** (levels - 1):
        raise ConfigError(f"image side {sample_size} is not divisible by 2^{levels - 1} ({levels} UNet levels)")
    if not 0 <= attention_levels <= levels:
        raise ConfigError(f"attention_levels must be between 0 and {levels}, got {attention_levels}")
    attn = [i >= levels - attention_levels for i in range(levels)]  # attention at the coarsest levels only
    groups = min(32, *(c for c in block_out_channels if c > 0))
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        layers_per_block=layers_per_block,
        block_out_channels=tuple(block_out_channels),
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        norm_num_groups=groups,
        attention_head_dim=max(8, block_out_channels[-1] // 4),
        num_class_embeds=num_classes + 1,
    )


def build_noise_scheduler(
    num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2", prediction_type: str = "epsilon"
):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=True,
    )


def dihedral_augment(x: torch.Tensor) -> torch.Tensor:
    """Random horizontal flip, vertical flip and transpose per image: the 8 symmetries of a square, in one gather.

    Dermoscopy has no up or down, so these keep the label and the look of a lesion image.
    """
    b = x.shape[0]
    flip_h = torch.rand(b, device=x.device) < 0.5
    flip_v = torch.rand(b, device=x.device) < 0.5
    transpose = torch.rand(b, device=x.device) < 0.5
    x = torch.where(flip_h.view(b, 1, 1, 1), x.flip(-1), x)
    x = torch.where(flip_v.view(b, 1, 1, 1), x.flip(-2), x)
    if x.shape[-1] == x.shape[-2]:
        x = torch.where(transpose.view(b, 1, 1, 1), x.transpose(-1, -2), x)
    return x


def class_conditional_loss(
    model,
    x: torch.Tensor,
    labels: torch.Tensor,
    scheduler,
    null_class: int,
    class_dropout: float = 0.0,
    augment: bool = False,
    snr_gamma: float | None = None,
) -> torch.Tensor:
    """The denoising MSE of a class-conditional UNet on a batch `x` in [-1, 1] (pixels or latents).

    Each row's class is replaced by `null_class` with probability `class_dropout` (classifier-free guidance);
    the target follows `scheduler.config.prediction_type` (epsilon: the noise; v_prediction: the velocity).
    The random draws come in a fixed order (flips, noise, timesteps, class dropout), which exact resume relies on.
    snr_gamma: Min-SNR-gamma loss weighting (Hang et al. 2023): each example's error is weighted by
    min(SNR, gamma) / SNR (epsilon) or min(SNR, gamma) / (SNR + 1) (v), so the many nearly clean timesteps stop
    dominating the gradient. None = the plain unweighted MSE.
    """
    prediction_type = scheduler.config.prediction_type
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be epsilon or v_prediction, got {prediction_type!r}")
    if augment:
        x = dihedral_augment(x)
    noise = torch.randn_like(x)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x),), device=x.device)
    drop = torch.rand(len(x), device=x.device) < class_dropout
    labels = torch.where(drop, torch.full_like(labels, null_class), labels)
    pred = model(scheduler.add_noise(x, noise, t), t, class_labels=labels).sample
    target = noise if prediction_type == "epsilon" else scheduler.get_velocity(x, noise, t)
    if not snr_gamma:
        return F.mse_loss(pred.float(), target.float())
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, t).float()
    weight = snr.clamp(max=snr_gamma) / (snr if prediction_type == "epsilon" else snr + 1)
    per_example = F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
    return (per_example * weight).mean()


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """uint8 images [N,3,H,W] -> scaled latent means [N,C,h,w] (float32, CPU), computed once before training."""
    out = []
    for i in range(0, len(pixels), batch_size):
        x = pixels[i : i + batch_size].to(vae.device, vae.dtype) / 127.5 - 1
        out.append(vae.encode(x).latent_dist.mean.float().cpu() * vae.config.scaling_factor)
    return torch.cat(out)
