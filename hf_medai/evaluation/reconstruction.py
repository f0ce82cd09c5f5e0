"""How well a masked autoencoder reconstructs held-out images: the loss on fixed masks, pictures of it, its curve.

    losses = per_image_loss(mae, batches)              # [n] each held-out image's loss on its fixed mask
    reconstruction_grid(mae, pixel_values, noise, processor, "reconstructions.png")
    loss_curve_plot(train_curve, eval_curve, "loss_curve.png")

The loss is ViTMAE's own: mean squared error over the masked patches, each patch's target normalised to zero mean and
unit variance when `norm_pix_loss` is set. Computed per image here (the model returns the batch mean), so that the
held-out loss gets a bootstrap interval over images. Figures are drawn on matplotlib's Agg canvas (no display).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch


def _targets(model, pixel_values: torch.Tensor) -> torch.Tensor:
    target = model.patchify(pixel_values)
    if model.config.norm_pix_loss:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    return target


@torch.no_grad()
def per_image_loss(model, batches: Iterable[dict]) -> dict[str, np.ndarray]:
    """{"loss": the model's loss per image, "zero_prediction": the loss of predicting zeros (with `norm_pix_loss`:
    every masked patch flat at its own mean colour)}, over `batches` of `pixel_values` and `noise`."""
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, list] = {"loss": [], "zero_prediction": []}
    for batch in batches:
        pixel_values, noise = batch["pixel_values"].to(device), batch["noise"].to(device)
        result = model(pixel_values=pixel_values, noise=noise)
        target, mask = _targets(model, pixel_values), result.mask
        for name, prediction in (("loss", result.logits), ("zero_prediction", torch.zeros_like(target))):
            error = ((prediction - target) ** 2).mean(dim=-1)
            out[name].append(((error * mask).sum(1) / mask.sum(1)).float().cpu().numpy())
    return {name: np.concatenate(values) for name, values in out.items()}


def mean_with_ci(values: np.ndarray, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, float | None]:
    """Mean, and its 95% bootstrap interval over images (None without resamples)."""
    values = np.asarray(values, dtype=np.float64)
    out = {"mean": float(values.mean()), "ci_low": None, "ci_high": None}
    if n_bootstrap > 0 and len(values) > 1:
        rng = np.random.default_rng(seed)
        means = values[rng.integers(0, len(values), (n_bootstrap, len(values)))].mean(axis=1)
        out["ci_low"], out["ci_high"] = (float(q) for q in np.quantile(means, [0.025, 0.975]))
    return out


@torch.no_grad()
def reconstruct(
    model, pixel_values: torch.Tensor, noise: torch.Tensor, image_mean, image_std
) -> dict[str, np.ndarray]:
    """Images in [0, 1], [B, H, W, 3]: the original, the visible patches (masked ones grey), and the reconstruction
    (predicted masked patches, un-normalised with each true patch's mean and variance when `norm_pix_loss` is set,
    pasted among the visible ones, as the MAE paper shows them)."""
    model.eval()
    device = next(model.parameters()).device
    pixel_values, noise = pixel_values.to(device), noise.to(device)
    result = model(pixel_values=pixel_values, noise=noise)
    patches = model.patchify(pixel_values)
    prediction = result.logits
    if model.config.norm_pix_loss:
        mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
        prediction = prediction * (var + 1.0e-6) ** 0.5 + mean
    mask = result.mask.unsqueeze(-1)  # 1: masked
    mean = torch.as_tensor(image_mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.as_tensor(image_std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    grey = (0.5 - mean) / std  # mid-grey in the model's input space
    grey_patches = model.patchify(grey.expand_as(pixel_values).contiguous())

    def to_image(p):
        x = model.unpatchify(p, pixel_values.shape[-2:]) * std + mean
        return x.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()

    return {
        "original": to_image(patches),
        "masked": to_image(patches * (1 - mask) + grey_patches * mask),
        "reconstruction": to_image(patches * (1 - mask) + prediction * mask),
    }


def reconstruction_grid(
    images: dict[str, np.ndarray], path: str | Path, mask_ratio: float, normalised: bool = False
) -> Path:
    """One column per image, rows: original / masked / reconstruction (`reconstruct`'s output); `normalised`: the
    model was trained on normalised patches (norm_pix_loss), which the title then says."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [
        ("original", images["original"]),
        (f"masked ({mask_ratio:.0%})", images["masked"]),
        ("reconstruction", images["reconstruction"]),
    ]
    n = len(images["original"])
    fig = Figure(figsize=(1.3 * n + 0.6, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, n, squeeze=False)
    for r, (label, batch) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(batch[c], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=9)
    title = "Held-out images, fixed masks: what the encoder saw and what the decoder filled in"
    if normalised:  # the model predicts each patch's pattern, not its colour: the picture borrows the true patch's
        title += "\n(predicted masked patches drawn at the true patch's mean level and spread: norm_pix_loss)"
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def loss_curve_plot(
    train_curve: list[tuple[int, float]],
    eval_curve: list[tuple[int, float]],
    path: str | Path,
    reference: float | None = None,
) -> Path:
    """Training loss (as logged) and held-out loss (fixed masks) against the optimizer step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if train_curve:
        ax.plot(*zip(*train_curve), linewidth=1, alpha=0.8, label="training (random masks)")
    if eval_curve:
        ax.plot(*zip(*eval_curve), "o-", linewidth=1.5, label="held-out (fixed masks)")
    if reference is not None:
        ax.axhline(
            reference, color="k", linestyle="--", linewidth=1, label="predicting flat patches (each at its own mean)"
        )
    ax.set(xlabel="optimizer step", ylabel="reconstruction loss (masked patches)", title="MAE reconstruction loss")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    from hf_medai.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(path)
