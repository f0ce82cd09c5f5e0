"""Corrections folded into the output layer change the saved model's logits exactly as stated."""

import numpy as np
import torch

from hf_medai.models.heads import fold_into_head, prior_correction
from hf_medai.models.vision import build_image_classifier


def test_fold_shift_and_temperature_exactly():
    model, _ = build_image_classifier(None, ["a", "b", "c"], 32)
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(pixel_values=x).logits
        shift = prior_correction([10, 30, 60])
        fold_into_head(model, shift=shift, temperature=2.0)
        after = model(pixel_values=x).logits
    assert torch.allclose(after, (before + torch.tensor(shift, dtype=torch.float32)) / 2.0, atol=1e-5)


def test_prior_correction_restores_prevalence_of_a_balanced_model():
    # A model trained on balanced classes that knows nothing about x outputs uniform probabilities;
    # after the correction it should output the training prevalence.
    counts = np.array([900, 100])
    p = np.exp(prior_correction(counts))
    assert np.allclose(p / p.sum(), counts / counts.sum())
