"""Masked autoencoders (`ViTMAEForPreTraining`) and the plain `ViTModel` encoder exported from one.

    mae, processor = build_mae(None, image_size=64)         # tiny: the TINY_VIT encoder + a small decoder
    encoder = export_encoder(mae)                           # a ViTModel with the MAE encoder's weights
    encoder.save_pretrained(run_dir)                        # AutoModel / AutoModelForImageClassification load it

The exported encoder is what downstream recipes fine-tune (`--model_name_or_path run_dir`); the full MAE (with its
decoder) is kept to continue pre-training. `build_mae(run_dir)` finds it in `run_dir/mae/`.

Two transformers 5.25 traps, checked, that `build_mae` undoes:
- a fresh `ViTMAEForPreTraining(config)` leaves its fixed sin-cos position embeddings, the CLS token and the decoder's
  mask token at zero: every patch then looks alike to the decoder, which cannot tell where a masked patch was.
  `build_mae` sets them as the MAE paper and transformers' own `initialize_weights` intend;
- `from_pretrained` returns the fixed position embeddings with `requires_grad=True`, so continued pre-training would
  train them. `build_mae` freezes them again.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import ViTConfig, ViTMAEConfig, ViTMAEForPreTraining, ViTModel

from hf_medai.data.image_batches import ImageCollator
from hf_medai.models.vision import TINY_VIT, build_image_processor

MAE_SUBFOLDER = "mae"  # where a pre-training run folder keeps the full MAE (encoder + decoder)
# Offline default decoder: narrow and shallow (the MAE paper's decoders are ~10% of the encoder's compute per token).
TINY_DECODER = dict(
    decoder_hidden_size=64, decoder_num_hidden_layers=2, decoder_num_attention_heads=4, decoder_intermediate_size=128
)
# ViTConfig fields that mean the same in ViTMAEConfig: the encoder's sizes, copied into the exported ViTConfig.
ENCODER_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "initializer_range",
    "layer_norm_eps",
    "image_size",
    "patch_size",
    "num_channels",
    "qkv_bias",
)


def mae_folder(model_name_or_path: str) -> str:
    """A pre-training run folder's `mae/` when there is one (its root holds the exported encoder), else the path."""
    inner = Path(model_name_or_path) / MAE_SUBFOLDER
    return str(inner) if (inner / "config.json").is_file() else model_name_or_path


def build_mae(
    model_name_or_path: str | None, image_size: int = 64, mask_ratio: float = 0.75, norm_pix_loss: bool = True
):
    """(ViTMAEForPreTraining, image processor). None: a fresh tiny MAE (TINY_VIT encoder, TINY_DECODER) at
    `image_size`, with the lesion classifier's processor; a hub id, an MAE folder or a pre-training run folder:
    its weights (safetensors only, no remote code), with `mask_ratio` and `norm_pix_loss` set as asked."""
    if model_name_or_path is None:
        config = ViTMAEConfig(
            image_size=image_size, mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss, **TINY_VIT, **TINY_DECODER
        )
        model = ViTMAEForPreTraining(config)
        init_mae_weights(model)
        return model, build_image_processor(None, image_size)
    path = mae_folder(model_name_or_path)
    model = ViTMAEForPreTraining.from_pretrained(
        path, mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss, use_safetensors=True, trust_remote_code=False
    )
    freeze_fixed_positions(model)
    return model, build_image_processor(path)


def freeze_fixed_positions(model: ViTMAEForPreTraining) -> None:
    """MAE's sin-cos position embeddings are fixed (`requires_grad=False` in the model's own __init__)."""
    model.vit.embeddings.position_embeddings.requires_grad_(False)
    model.decoder.decoder_pos_embed.requires_grad_(False)


def sincos_position_embedding(num_patches: int, dim: int) -> torch.Tensor:
    """MAE's fixed 2D sin-cos position embedding [1, num_patches + 1, dim] (a zero row for CLS), in the layout of the
    original MAE weights (transformers' `initialize_weights` swaps the two halves to match them; so do we)."""
    from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

    side = int(round(num_patches**0.5))
    if side * side != num_patches:
        raise ValueError(f"MAE needs a square patch grid, got {num_patches} patches")
    table = build_2d_sinusoidal_position_embedding(side, side, embed_dim=dim, cls_token=True)
    half = dim // 2
    return torch.cat([table[:, half:], table[:, :half]], dim=-1).unsqueeze(0)


@torch.no_grad()
def init_mae_weights(model: ViTMAEForPreTraining) -> None:
    """What the MAE paper initialises and a fresh transformers 5.25 model leaves at zero (see the module docstring):
    fixed sin-cos position embeddings (encoder and decoder), CLS and mask tokens N(0, 0.02), the patch projection
    like a linear layer (xavier uniform)."""
    embeddings, decoder = model.vit.embeddings, model.decoder
    n = embeddings.patch_embeddings.num_patches
    embeddings.position_embeddings.copy_(sincos_position_embedding(n, embeddings.position_embeddings.shape[-1]))
    decoder.decoder_pos_embed.copy_(sincos_position_embedding(n, decoder.decoder_pos_embed.shape[-1]))
    std = model.config.initializer_range
    torch.nn.init.normal_(embeddings.cls_token, std=std)
    torch.nn.init.normal_(decoder.mask_token, std=std)
    weight = embeddings.patch_embeddings.projection.weight
    torch.nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
    torch.nn.init.zeros_(embeddings.patch_embeddings.projection.bias)


def encoder_config(config: ViTMAEConfig) -> ViTConfig:
    """The ViTConfig of an MAE's encoder: same sizes, patch size and image size; no pooler weights to expect."""
    return ViTConfig(**{name: getattr(config, name) for name in ENCODER_FIELDS})


@torch.no_grad()
def export_encoder(mae: ViTMAEForPreTraining) -> ViTModel:
    """A plain `ViTModel` (no pooler) holding the MAE encoder's weights: CLS token, the fixed sin-cos position
    embeddings (learnable from here on, as in MAE fine-tuning), patch projection, layers and final layernorm.

    With no masking the two compute the same thing: ViTMAE adds the position embeddings before it shuffles the
    patches, and attention does not see order, so the CLS output and each patch's output are equal."""
    encoder = ViTModel(encoder_config(mae.config), add_pooling_layer=False)
    state = {name: tensor.detach().clone() for name, tensor in mae.vit.state_dict().items()}
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


class MaskedImageCollator(ImageCollator):
    """ImageCollator for the MAE: `pixel_values`, plus each example's fixed masking `noise` when it has one (the
    held-out images, so every evaluation masks the same patches); training batches draw their masks afresh."""

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__(examples)
        if "noise" in examples[0]:
            batch["noise"] = torch.stack([torch.as_tensor(e["noise"], dtype=torch.float32) for e in examples])
        return batch


def masking_noise(n_images: int, num_patches: int, seed: int = 0) -> torch.Tensor:
    """Fixed per-image masking noise [n, num_patches] (ViTMAE keeps the patches of the lowest noise)."""
    return torch.rand(n_images, num_patches, generator=torch.Generator().manual_seed(seed))
