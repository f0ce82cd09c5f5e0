"""Post-hoc corrections folded into a classifier's output layer, so the saved model carries them.

Whatever loads the folder (`pipeline`, `from_pretrained`, a demo) then gets the corrected probabilities.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


def output_layer(model) -> nn.Linear:
    """The linear layer that produces the logits (ViT's/BERT's `classifier`, RoBERTa's `classifier.out_proj`, ...)."""
    num_labels = model.config.num_labels
    found = None
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.Linear)
            and module.out_features == num_labels
            and any(k in name for k in ("classifier", "score", "out_proj", "head"))
        ):
            found = module  # the last one in module order is the output layer
    if found is None:
        raise ValueError(f"{type(model).__name__}: no classifier linear layer with {num_labels} outputs found")
    return found


@torch.no_grad()
def fold_into_head(model, scale: float = 1.0, shift: Sequence[float] | float = 0.0, temperature: float = 1.0) -> None:
    """Make the model output (logits * scale + shift) / temperature, by rewriting its last linear layer.

    Temperature scaling: temperature=T. Undoing a class-weighted loss's prior shift: shift = -log(weights).
    A standardised regression target: scale=std, shift=mean. Exact, since the layer is the last operation.
    """
    layer = output_layer(model)
    shift_t = torch.as_tensor(
        np.broadcast_to(np.asarray(shift, dtype=np.float64), (layer.out_features,)).copy(),
        dtype=layer.weight.dtype,
        device=layer.weight.device,
    )
    layer.weight.mul_(scale / temperature)
    if layer.bias is None:
        layer.bias = nn.Parameter(
            torch.zeros(layer.out_features, dtype=layer.weight.dtype, device=layer.weight.device)
        )
    layer.bias.copy_((layer.bias * scale + shift_t) / temperature)


def prior_correction(train_counts: Sequence[float]) -> np.ndarray:
    """Logit shift that undoes training on balanced classes (class-weighted loss or a balanced sampler).

    Either way the model learns p_train(c|x) proportional to p(c|x) / prior_c; adding log(C * prior_c) to
    the logits gives back probabilities at the data's own class frequencies (logit adjustment, Menon et
    al., ICLR 2021). Ranking within a class is unchanged, so binary AUROC is too.
    """
    counts = np.asarray(train_counts, dtype=np.float64)
    prior = np.maximum(counts, 1) / counts.sum()
    return np.log(len(counts) * prior)


def class_weighted_loss(train_counts: Sequence[float]):
    """A Trainer `compute_loss_func`: cross-entropy with inverse-frequency class weights (undo the prior shift it
    causes with `prior_correction`)."""
    counts = np.asarray(train_counts, dtype=np.float64)
    weights = torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        total = nn.functional.cross_entropy(logits.float(), labels, weight=weights.to(logits.device), reduction="sum")
        return total / (num_items_in_batch if num_items_in_batch is not None else labels.numel())

    return loss
