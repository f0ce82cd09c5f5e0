"""Batched dermoscopy augmentation: label-preserving geometry done exactly, colour kept mild."""

import torch

from hf_medai.data.image_batches import DermoscopyAugment, ImageCollator
from hf_medai.models.vision import build_image_classifier


def _geometry_only(**kw):
    return DermoscopyAugment(brightness=0, contrast=0, saturation=0, hue_shift=0, **kw)


def test_full_crop_is_exactly_a_flip_or_quarter_turn():
    x = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    out = _geometry_only(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))(x, torch.Generator().manual_seed(0))
    xf = x.float()
    candidates = []
    for k in range(4):
        r = torch.rot90(xf, k, dims=(-2, -1))
        candidates += [r, r.flip(-1)]
    for i in range(len(x)):
        assert any(torch.allclose(out[i], c[i], atol=1e-3) for c in candidates), i
    # and the batch really is augmented: not every image left as it was
    assert not torch.allclose(out, xf)


def test_crop_and_colour_stay_in_range_and_are_seeded():
    x = torch.randint(0, 256, (8, 3, 24, 32), dtype=torch.uint8)  # not square: no quarter turns
    aug = DermoscopyAugment()
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == (8, 3, 24, 32) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 255


def test_collator_normalises_like_the_image_processor():
    import numpy as np
    from PIL import Image

    _, processor = build_image_classifier(None, ["a", "b"], 32)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    reference = processor([img], return_tensors="pt")["pixel_values"]
    pixels = processor([img], do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
    batch = ImageCollator(processor)([{"pixels": torch.as_tensor(pixels), "label": 1}])
    assert torch.allclose(batch["pixel_values"], reference, atol=1e-5)
    assert batch["labels"].tolist() == [1]


def test_fused_colour_jitter_equals_the_step_by_step_definition():

    from hf_medai.data.image_batches import _hue_matrix

    x = torch.rand(6, 3, 8, 8) * 255
    aug = DermoscopyAugment(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), brightness=0.3, contrast=0.3, saturation=0.3, hue_shift=0.05
    )
    g = torch.Generator().manual_seed(3)
    out = aug(x, g)
    # Replay the same random draws, then apply each colour step on its own.
    g = torch.Generator().manual_seed(3)
    b = 6
    for _ in range(5):
        torch.empty(b).uniform_(0, 1, generator=g)  # area, ratio, cx, cy, flip_x ... consumed in order
    torch.rand(b, generator=g)  # flip_y
    turns = torch.randint(0, 4, (b,), generator=g)
    geo = DermoscopyAugment(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), brightness=0, contrast=0, saturation=0, hue_shift=0
    )(x, torch.Generator().manual_seed(3))
    bright, contrast, sat = (1 + torch.empty(b).uniform_(-0.3, 0.3, generator=g) for _ in range(3))
    hue = torch.empty(b).uniform_(-0.05, 0.05, generator=g)
    y = geo * bright.view(b, 1, 1, 1)
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * contrast.view(b, 1, 1, 1) + mean
    grey = 0.299 * y[:, 0:1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3]
    y = (y - grey) * sat.view(b, 1, 1, 1) + grey
    y = torch.einsum("bij,bjhw->bihw", _hue_matrix(hue), y).clamp(0, 255)
    assert torch.allclose(out, y, atol=1e-3)
