"""Lesion image diffusion demo: class, seed, steps, guidance -> a gallery of synthetic images."""

from __future__ import annotations

from pathlib import Path

from hf_medai.demos.common import MAX_IMAGES, MAX_STEPS, check_range, header


class ImageDiffusionDemo:
    def __init__(self, run_dir: str | Path):
        import torch

        from hf_medai.pipelines import LesionDiffusionPipeline

        self.torch = torch
        self.run_dir = Path(run_dir)
        self.pipe = LesionDiffusionPipeline.from_pretrained(run_dir)
        self.pipe.set_progress_bar_config(disable=True)
        self.class_names = list(self.pipe.config.class_names)
        self.train_steps = self.pipe.scheduler.config.num_train_timesteps

    def generate(self, class_name: str, num_images, seed, steps, guidance_scale):
        """-> [(PIL image, caption)] for gr.Gallery."""
        import gradio as gr

        if class_name not in self.class_names:
            raise gr.Error(f"Unknown class {class_name!r}; this model generates {self.class_names}.")
        num_images = check_range("Number of images", num_images, 1, MAX_IMAGES)
        steps = check_range("Denoising steps", steps, 1, min(MAX_STEPS, self.train_steps))
        seed = check_range("Seed", seed, 0, 2**31 - 1)
        try:
            guidance_scale = float(guidance_scale)
        except (TypeError, ValueError):
            raise gr.Error("Guidance scale must be a number between 0 and 20.") from None
        if not 0.0 <= guidance_scale <= 20.0:
            raise gr.Error(f"Guidance scale must be between 0 and 20; got {guidance_scale}.")
        images = self.pipe(
            class_name,
            num_images_per_label=num_images,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=self.torch.Generator().manual_seed(seed),
        ).images
        return [(im, f"synthetic {class_name} · seed {seed} · #{k + 1}") for k, im in enumerate(images)]

    def build(self):
        import gradio as gr

        default_steps = min(25, self.train_steps)
        with gr.Blocks(title="hf-medai: lesion image diffusion") as app:
            header(
                "Synthetic lesion images",
                f"Model: `{self.run_dir.name}`. Every image here is synthetic and must be labelled so wherever it is used.",
            )
            with gr.Row():
                with gr.Column(scale=1):
                    cls = gr.Dropdown(self.class_names, value=self.class_names[-1], label="Class", elem_id="class")
                    n = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Number of images", elem_id="num_images")
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="seed")
                    steps = gr.Slider(
                        1,
                        min(MAX_STEPS, self.train_steps),
                        value=default_steps,
                        step=1,
                        label="Denoising steps",
                        elem_id="steps",
                    )
                    guidance = gr.Slider(0.0, 20.0, value=2.0, step=0.5, label="Guidance scale", elem_id="guidance")
                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column(scale=2):
                    gallery = gr.Gallery(label="Generated (synthetic)", columns=3, height=420, elem_id="gallery")
            button.click(self.generate, inputs=[cls, n, seed, steps, guidance], outputs=gallery)
        return app
