"""`LesionDiffusionPipeline`: class-conditional lesion images from a `UNet2DModel`, with classifier-free guidance.

The UNet has one class embedding per lesion class plus one "no class" embedding (the last index), which
training uses for label dropout; sampling mixes the conditional and unconditional predictions with
`guidance_scale`. Any diffusers scheduler that predicts noise works (DDPM, DDIM, DPM-Solver++, ...):

    pipe = LesionDiffusionPipeline.from_pretrained("runs/image_diffusion")
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    images = pipe(["melanoma"] * 4, num_inference_steps=20, generator=torch.manual_seed(0)).images

With a `vae` (`AutoencoderKL`) the UNet works in its latent space (latent diffusion); without one, in
pixel space. Every image this pipeline makes is synthetic and must be labelled so wherever it is used.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image


class LesionDiffusionPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "unet->vae"
    _optional_components = ["vae"]

    def __init__(self, unet, scheduler, vae=None, class_names: list[str] | None = None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, vae=vae)
        n_classes = unet.config.num_class_embeds - 1 if unet.config.num_class_embeds else 0
        class_names = list(class_names) if class_names else [str(i) for i in range(n_classes)]
        if len(class_names) != n_classes:
            raise ValueError(f"{len(class_names)} class names for a UNet with {n_classes} classes (+1 unconditional)")
        self.register_to_config(class_names=class_names)

    @property
    def null_class(self) -> int:
        return len(self.config.class_names)

    def class_ids(self, class_labels: int | str | Sequence[int | str]) -> list[int]:
        """Class names or indices -> indices, with an error naming the known classes."""
        labels = [class_labels] if isinstance(class_labels, (int, str, np.integer)) else list(class_labels)
        names = list(self.config.class_names)
        out = []
        for label in labels:
            if isinstance(label, str):
                if label not in names:
                    raise ValueError(f"unknown class {label!r}; this pipeline generates {names}")
                out.append(names.index(label))
            elif not 0 <= int(label) < len(names):
                raise ValueError(f"class index {label} out of range for classes {names}")
            else:
                out.append(int(label))
        return out

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | Sequence[int | str],
        num_images_per_label: int = 1,
        num_inference_steps: int = 50,
        guidance_scale: float = 2.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Generate `num_images_per_label` images for each entry of `class_labels` (names or indices).

        guidance_scale: 1.0 = conditional prediction only; larger values follow the class more strongly
        at some cost of diversity; 0.0 = unconditional. output_type: "pil", "np" (uint8 HWC) or "pt"
        (float in [0, 1], NCHW).
        """
        labels = torch.tensor(self.class_ids(class_labels), device=self.device).repeat_interleave(num_images_per_label)
        unet = self.unet
        size = unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        shape = (len(labels), unet.config.in_channels, *size)
        x = randn_tensor(shape, generator=generator, device=self.device, dtype=unet.dtype)
        x = x * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        use_cfg = guidance_scale != 1.0
        class_input = torch.cat([labels, torch.full_like(labels, self.null_class)]) if use_cfg else labels
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(torch.cat([x, x]) if use_cfg else x, t)
            noise = unet(model_input, t, class_labels=class_input).sample
            if use_cfg:
                cond, uncond = noise.chunk(2)
                noise = uncond + guidance_scale * (cond - uncond)
            x = self.scheduler.step(noise, t, x, generator=generator).prev_sample
        if self.vae is not None:
            x = self.vae.decode(x / self.vae.config.scaling_factor).sample
        images = (x.float() / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            out = images
        else:
            out = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
            if output_type == "pil":
                out = [Image.fromarray(a) for a in out]
            elif output_type != "np":
                raise ValueError(f"output_type must be pil, np or pt, got {output_type!r}")
        return ImagePipelineOutput(images=out) if return_dict else (out,)
