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
    """Add a uint8 `pixels` column [3, H, W] made by `processor` (resize/crop only) from `image`.

    Stored as a fixed-shape `Array3D`, which reads back as one numpy block per row: a nested-list
    column would cost more per row to decode than the model's forward pass on it.
    """
    h, w = _output_size(processor, dataset[0]["image"])

    def _process(batch):
        out = processor(
            [im.convert("RGB") for im in batch["image"]], do_rescale=False, do_normalize=False, return_tensors="np"
        )["pixel_values"]
        return {"pixels": np.clip(np.rint(out), 0, 255).astype(np.uint8)}

    return _add_pixels(dataset, _process, (3, h, w), batch_size, num_proc, desc="resizing images (cached)")


def add_square_pixels(dataset, size: int, batch_size: int = 64, num_proc: int | None = None):
    """Add a uint8 `pixels` column [3, size, size]: the centre square of each image, resized (Lanczos).

    For generative models, which must not learn a stretched aspect ratio. Cached like `add_pixel_values`.
    """
    from PIL import Image, ImageOps

    def _process(batch):
        squares = [
            np.asarray(ImageOps.fit(im.convert("RGB"), (size, size), Image.Resampling.LANCZOS))
            for im in batch["image"]
        ]
        return {"pixels": np.stack(squares).transpose(0, 3, 1, 2)}

    return _add_pixels(
        dataset, _process, (3, size, size), batch_size, num_proc, desc=f"centre-cropping images to {size}px (cached)"
    )


def square_pixel_tensors(
    dataset, size: int, batch_size: int = 64, num_proc: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`add_square_pixels`, read into memory: (uint8 pixels [N, 3, size, size], int64 labels [N]).

    The pixels are read as uint8: the torch formatter's default would widen them to int64 (8x the memory) first.
    """
    ds = add_square_pixels(dataset, size, batch_size, num_proc)
    pixels = ds.with_format("torch", columns=["pixels"], dtype=torch.uint8)[:]["pixels"]
    labels = ds.with_format("torch", columns=["label"], dtype=torch.int64)[:]["label"]
    return pixels, labels


def _add_pixels(dataset, process, shape: tuple[int, int, int], batch_size: int, num_proc: int | None, desc: str):
    """Map `process` (a batch -> {"pixels": uint8 [B, *shape]}) over `dataset` in place of its `image` column (cached)."""
    import datasets

    features = dataset.features.copy()
    del features["image"]
    features["pixels"] = datasets.Array3D(shape=shape, dtype="uint8")
    ds = dataset.map(
        process,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        features=features,
        remove_columns=["image"],
        desc=desc,
    )
    # unlabelled images (pre-training) have no label
    columns = [c for c in ("pixels", "label") if c in ds.column_names]
    return ds.with_format("torch", columns=columns, output_all_columns=True)


def _output_size(processor, image) -> tuple[int, int]:
    out = processor([image.convert("RGB")], do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"]
    return int(out.shape[-2]), int(out.shape[-1])


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
        # Random resized crop, flips and 90-degree turns as ONE affine resampling of the whole batch:
        # for each image, output coordinates -> (turn, flip) -> scale to the crop box -> move to its centre.
        area = torch.empty(b).uniform_(*self.crop_scale, generator=g)
        ratio = torch.exp(
            torch.empty(b).uniform_(math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]), generator=g)
        )
        sw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
        sh = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (torch.rand(b, generator=g) * 2 - 1) * (1 - sw)  # crop centre, normalised to [-1, 1]
        cy = (torch.rand(b, generator=g) * 2 - 1) * (1 - sh)
        flip_x = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
        flip_y = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
        turns = torch.randint(0, 4, (b,), generator=g) if h == w else torch.zeros(b, dtype=torch.long)
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0])[turns]
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0])[turns]
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = sw * cos * flip_x, -sw * sin * flip_y
        theta[:, 1, 0], theta[:, 1, 1] = sh * sin * flip_x, sh * cos * flip_y
        theta[:, 0, 2], theta[:, 1, 2] = cx, cy
        grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

        # Colour jitter: brightness, contrast, saturation and hue are all affine in RGB, so they compose into
        # one 3x3 matrix and offset per image, applied in a single pass.
        def factor(amount):
            return 1 + torch.empty(b).uniform_(-amount, amount, generator=g)

        eye = torch.eye(3).expand(b, 3, 3)
        luma = torch.tensor([0.299, 0.587, 0.114])
        bright, contrast, sat = factor(self.brightness), factor(self.contrast), factor(self.saturation)
        m = eye * bright.view(b, 1, 1)  # brightness
        offset = (1 - contrast).view(b, 1) * (bright * x.mean(dim=(1, 2, 3))).view(b, 1).expand(b, 3)
        m = m * contrast.view(b, 1, 1)  # contrast about the (brightened) image mean
        grey = luma.view(1, 1, 3).expand(b, 3, 3)
        to_sat = eye * sat.view(b, 1, 1) + (1 - sat).view(b, 1, 1) * grey  # saturation about the luma
        m, offset = to_sat @ m, (to_sat @ offset.unsqueeze(-1)).squeeze(-1)
        if self.hue_shift:
            hue = _hue_matrix(torch.empty(b).uniform_(-self.hue_shift, self.hue_shift, generator=g))
            m, offset = hue @ m, (hue @ offset.unsqueeze(-1)).squeeze(-1)
        x = torch.einsum("bij,bjhw->bihw", m, x) + offset.view(b, 3, 1, 1)
        return x.clamp_(0, 255)


def _hue_matrix(turns: torch.Tensor) -> torch.Tensor:
    """Per-image 3x3 matrices rotating hue by `turns` (fraction of 360 degrees) about the grey axis."""
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
    return m


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
