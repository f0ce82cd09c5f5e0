"""From decoded images to model batches, fast: resize once (cached), augment whole batches as tensors.

The resize is the model's own image processor with rescale/normalise turned off, so the cached uint8
pixels are exactly what `pipeline("image-classification")` feeds the model after normalising; the
collator then rescales/normalises on the batch. Augmentation (dermoscopy has no up or down: flips and
90-degree rotations are label-preserving; mild colour jitter; random resized crop) runs on the uint8
batch tensor, so the data path costs little next to the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def add_pixel_values(dataset, processor, batch_size: int = 64, num_proc: int | None = None):
    """Add a uint8 `pixels` column [3, H, W] made by `processor` (resize/crop only) from `image`."""

    def _process(batch):
        out = processor(
            [im.convert("RGB") for im in batch["image"]], do_rescale=False, do_normalize=False, return_tensors="np"
        )["pixel_values"]
        return {"pixels": np.clip(np.rint(out), 0, 255).astype(np.uint8)}

    ds = dataset.map(_process, batched=True, batch_size=batch_size, num_proc=num_proc,
                     remove_columns=["image"], desc="resizing images (cached)")
    return ds.with_format("torch", columns=["pixels", "label"], output_all_columns=True)


@dataclass
class DermoscopyAugment:
    """Label-preserving augmentation for dermoscopy, on a uint8 batch [B, 3, H, W]."""

    crop_scale: tuple[float, float] = (0.7, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue_shift: float = 0.02  # fraction of a turn; kept small, colour carries diagnostic signal

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        g = generator
        x = x.float()
        # random resized crop, per image, back to (h, w)
        scales = torch.empty(b).uniform_(*self.crop_scale, generator=g)
        log_r = torch.empty(b).uniform_(math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]), generator=g)
        ratios = torch.exp(log_r)
        crops = []
        for i in range(b):
            area = scales[i].item() * h * w
            cw = int(round(min(w, math.sqrt(area * ratios[i].item()))))
            ch = int(round(min(h, math.sqrt(area / ratios[i].item()))))
            top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            patch = x[i : i + 1, :, top : top + ch, left : left + cw]
            crops.append(F.interpolate(patch, size=(h, w), mode="bilinear", align_corners=False, antialias=True))
        x = torch.cat(crops)
        # flips and 90-degree rotations (rotations only when square)
        flip_h = torch.rand(b, generator=g) < 0.5
        flip_v = torch.rand(b, generator=g) < 0.5
        x[flip_h] = x[flip_h].flip(-1)
        x[flip_v] = x[flip_v].flip(-2)
        if h == w:
            k = torch.randint(0, 4, (b,), generator=g)
            for r in (1, 2, 3):
                sel = k == r
                if sel.any():
                    x[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
        # colour jitter, batched
        def factor(amount):
            return 1 + torch.empty(b, 1, 1, 1).uniform_(-amount, amount, generator=g)

        x = x * factor(self.brightness)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor(self.contrast) + mean
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - gray) * factor(self.saturation) + gray
        if self.hue_shift:
            x = _rotate_hue(x, torch.empty(b).uniform_(-self.hue_shift, self.hue_shift, generator=g))
        return x.clamp_(0, 255)


def _rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate hue by `turns` (fraction of 360 degrees) about the grey axis in RGB space."""
    theta = turns * 2 * math.pi
    cos, sin = torch.cos(theta), torch.sin(theta)
    k = 1 / 3
    sq = math.sqrt(k)
    # Rodrigues rotation about (1,1,1)/sqrt(3)
    m = torch.empty(len(turns), 3, 3)
    m[:, 0, 0] = cos + k * (1 - cos)
    m[:, 0, 1] = k * (1 - cos) - sq * sin
    m[:, 0, 2] = k * (1 - cos) + sq * sin
    m[:, 1, 0] = k * (1 - cos) + sq * sin
    m[:, 1, 1] = cos + k * (1 - cos)
    m[:, 1, 2] = k * (1 - cos) - sq * sin
    m[:, 2, 0] = k * (1 - cos) - sq * sin
    m[:, 2, 1] = k * (1 - cos) + sq * sin
    m[:, 2, 2] = cos + k * (1 - cos)
    return torch.einsum("bij,bjhw->bihw", m, x)


class ImageCollator:
    """Stacks cached uint8 pixels, augments (training only), rescales and normalises like the processor."""

    def __init__(self, processor, augment: DermoscopyAugment | None = None):
        self.augment = augment
        scale = float(getattr(processor, "rescale_factor", 1 / 255)) if getattr(processor, "do_rescale", True) else 1.0
        mean = processor.image_mean if getattr(processor, "do_normalize", True) else [0.0, 0.0, 0.0]
        std = processor.image_std if getattr(processor, "do_normalize", True) else [1.0, 1.0, 1.0]
        self.scale = scale
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        pixels = torch.stack([torch.as_tensor(e["pixels"]) for e in examples])
        x = self.augment(pixels) if self.augment is not None else pixels.float()
        x = (x * self.scale - self.mean) / self.std
        batch = {"pixel_values": x.contiguous()}
        if "label" in examples[0]:
            batch["labels"] = torch.as_tensor([int(e["label"]) for e in examples])
        return batch
