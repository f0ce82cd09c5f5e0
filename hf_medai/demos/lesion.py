"""Lesion classifier demo: class probabilities, a saliency map, the card's intended use and the weakest subgroups.

The saliency map is attention rollout (Abnar & Zuidema, 2020) for vision transformers, and the gradient of the
predicted class's logit with respect to the pixels (Simonyan et al., 2014) for any other image classifier.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hf_medai.demos.common import MAX_IMAGE_PIXELS, card_section, header, read_metrics

ROLLOUT_MODEL_TYPES = {"vit", "deit", "beit", "dinov2", "dinov3_vit", "data2vec-vision"}


class LesionDemo:
    def __init__(self, run_dir: str | Path):
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        self.run_dir = Path(run_dir)
        self.metrics = read_metrics(run_dir)
        self.processor = AutoImageProcessor.from_pretrained(run_dir)
        config_type = json.loads((self.run_dir / "config.json").read_text()).get("model_type")
        self.rollout = config_type in ROLLOUT_MODEL_TYPES
        # eager attention: the fused kernels do not return the attention maps that rollout needs
        extra = {"attn_implementation": "eager"} if self.rollout else {}
        self.model = AutoModelForImageClassification.from_pretrained(run_dir, use_safetensors=True, **extra).eval()
        self.class_names = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.torch = torch

    # ------------------------------------------------------------------------------------------- prediction
    def predict(self, image):
        """PIL image -> ({class: probability}, saliency overlay as a PIL image, decision text)."""
        import gradio as gr
        from PIL import Image

        if image is None:
            raise gr.Error("Upload an image first.")
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise gr.Error(f"The image is {image.width}x{image.height} pixels ({image.width * image.height:,}); "
                           f"the limit is {MAX_IMAGE_PIXELS:,} pixels. Please downscale it.")
        image = image.convert("RGB")
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"]
        if self.rollout:
            with self.torch.no_grad():
                out = self.model(pixel_values=pixels, output_attentions=True)
            saliency = attention_rollout(out.attentions, pixels.shape[-2:])
            logits = out.logits
        else:
            pixels.requires_grad_(True)
            logits = self.model(pixel_values=pixels).logits
            logits[0, logits[0].argmax()].backward()
            saliency = pixels.grad[0].abs().amax(0).numpy()
        probs = self.torch.softmax(logits.detach().float(), -1)[0].numpy()
        scores = {name: float(p) for name, p in zip(self.class_names, probs)}
        return scores, overlay(image, saliency), self.decision(probs)

    def decision(self, probs) -> str:
        threshold = self.metrics.get("threshold")
        if len(self.class_names) == 2 and threshold is not None:
            positive = self.class_names[1]
            call = positive if probs[1] >= threshold else self.class_names[0]
            return (f"**{call}** at the run's operating threshold ({positive} probability {probs[1]:.3f} "
                    f"vs threshold {threshold:.3f}).")
        return f"**{self.class_names[int(np.argmax(probs))]}** (highest probability)."

    # ------------------------------------------------------------------------------------------- the card
    def weakest_subgroups(self) -> str:
        """Markdown: per subgroup variable and metric, the worst group and the gap to the best."""
        rows = []
        for column, section in (self.metrics.get("subgroups") or {}).items():
            for metric, worst in (section.get("worst") or {}).items():
                if worst.get("group") is None or worst.get("value") is None:
                    continue
                gap = (section.get("largest_gap") or {}).get(metric)
                rows.append(f"| {column} | {metric} | {worst['group']} | {worst['value']:.3f} | "
                            f"{'' if gap is None else f'{gap:.3f}'} |")
        if not rows:
            return "_No subgroup results in metrics.json (groups too small, or none recorded)._"
        return "| subgroup | metric | weakest group | value | largest gap |\n|:--|:--|:--|--:|--:|\n" + "\n".join(rows)

    def build(self):
        import gradio as gr

        with gr.Blocks(title="hf-medai: lesion classifier") as app:
            header("Lesion classifier", f"Model: `{self.run_dir.name}` ({', '.join(self.class_names)})")
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="pil", label="Dermoscopic image", image_mode="RGB", height=320, elem_id="image")
                    button = gr.Button("Classify", variant="primary", elem_id="classify")
                with gr.Column():
                    label = gr.Label(label="Class probabilities", elem_id="probabilities")
                    decision = gr.Markdown(elem_id="decision")
                    saliency = gr.Image(label=("Attention rollout" if self.rollout else "Gradient saliency")
                                        + " (where the model looked)", interactive=False, height=320)
            with gr.Accordion("Intended use (from the model card)", open=False):
                gr.Markdown(card_section(self.run_dir, "Intended use") or "_The card has no intended-use section._")
            with gr.Accordion("Where this model was weakest (test-set subgroups, from metrics.json)", open=True):
                gr.Markdown(self.weakest_subgroups())
            button.click(self.predict, inputs=image, outputs=[label, saliency, decision])
        return app


def attention_rollout(attentions, image_hw) -> np.ndarray:
    """Attention rollout: average heads, add the residual (identity), renormalise, multiply through the layers;
    the [CLS] row over the patch tokens, as a (grid, grid) map."""
    import torch

    joint = None
    for layer in attentions:
        a = layer[0].mean(0)
        a = a + torch.eye(a.shape[-1])
        a = a / a.sum(-1, keepdim=True)
        joint = a if joint is None else a @ joint
    cls = joint[0, 1:]
    side = int(round(cls.numel() ** 0.5))
    cls = cls[-side * side:]  # drop any register/distillation tokens that precede the patches
    return cls.reshape(side, side).numpy()


def overlay(image, saliency: np.ndarray, max_side: int = 384):
    """The saliency map (any resolution) over the image, as a heat map at 50% opacity."""
    from matplotlib import colormaps
    from PIL import Image

    scale = min(1.0, max_side / max(image.size))
    base = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    s = np.asarray(saliency, dtype=np.float64)
    s = (s - s.min()) / (s.max() - s.min() + 1e-12)
    heat = Image.fromarray((colormaps["inferno"](s)[..., :3] * 255).astype(np.uint8)).resize(base.size, Image.BILINEAR)
    return Image.blend(base, heat, 0.5)
