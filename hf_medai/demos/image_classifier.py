"""Image classifier demo: one decision at the run's operating threshold (the class probabilities beneath it), a
saliency map with its colour bar, the card's intended use and the weakest subgroups.

The saliency map is attention rollout (Abnar & Zuidema, 2020) for vision transformers, and the gradient of the
predicted class's logit with respect to the pixels (Simonyan et al., 2014) for any other image classifier.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hf_medai.demos.common import MAX_IMAGE_PIXELS, card_section, header, read_metrics

ROLLOUT_MODEL_TYPES = {"vit", "deit", "beit", "dinov2", "dinov3_vit", "data2vec-vision"}


class ImageClassifierDemo:
    """The app of any image classifier's run folder; a kind's subclass may name its images (`title`, `image_label`)."""

    title = "Image classifier"
    image_label = "Image"

    def __init__(self, run_dir: str | Path):
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        import hf_medai.models.efficientnet  # noqa: F401  (registers EfficientNet-Lite with the Auto classes)

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
        """PIL image -> ({class: probability}, saliency figure as a PIL image, decision markdown)."""
        import gradio as gr
        from PIL import Image

        if image is None:
            raise gr.Error("Upload an image first.")
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise gr.Error(
                f"The image is {image.width}x{image.height} pixels ({image.width * image.height:,}); "
                f"the limit is {MAX_IMAGE_PIXELS:,} pixels. Please downscale it."
            )
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
        method = "attention rollout" if self.rollout else "gradient saliency"
        return scores, saliency_figure(image, saliency, method), self.decision(probs)

    def decided_class(self, probs) -> str:
        """The one call the demo makes: at the run's operating threshold for a binary model (as the card's
        sensitivity and specificity are), the most probable class otherwise."""
        threshold = self.metrics.get("threshold")
        if len(self.class_names) == 2 and threshold is not None:
            return self.class_names[1] if probs[1] >= threshold else self.class_names[0]
        return self.class_names[int(np.argmax(probs))]

    def decision(self, probs) -> str:
        """Markdown: the decision as a heading, then the rule that made it."""
        call = self.decided_class(probs)
        threshold = self.metrics.get("threshold")
        if len(self.class_names) == 2 and threshold is not None:
            positive = self.class_names[1]
            sign = "≥" if probs[1] >= threshold else "<"
            source = self.metrics.get("threshold_source")
            return (
                f"## {_display(call)}\n{_display(positive)} score **{probs[1]:.3f} {sign} threshold "
                f"{threshold:.3f}**, the run's operating threshold{f' ({source})' if source else ''}: the "
                f"threshold at which the model card reports sensitivity and specificity."
            )
        if len(self.class_names) == 2:
            return (
                f"## {_display(call)}\nThe more probable class: this run folder records no operating threshold, "
                "so this is not a validated decision rule."
            )
        return f"## {_display(call)}\nThe most probable of {len(self.class_names)} classes."

    def probabilities(self, scores: dict[str, float]) -> str:
        """Markdown, secondary to the decision: every class's probability, most probable first."""
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])
        text = "Model probabilities: " + " · ".join(f"{_display(c)} {p:.3f}" for c, p in ranked) + "."
        if len(self.class_names) == 2 and self.metrics.get("threshold") is not None:
            text += (
                f" The decision compares the {_display(self.class_names[1], capital=False)} score with the "
                "threshold, not the two probabilities with each other."
            )
        return text

    def classify(self, image):
        """The button: (decision, probabilities, saliency figure)."""
        scores, saliency, decision = self.predict(image)
        return decision, self.probabilities(scores), saliency

    # ------------------------------------------------------------------------------------------- the card
    def weakest_subgroups(self) -> str:
        """Markdown: per subgroup variable and metric, the worst group compared and the largest gap, with intervals."""
        rows = []
        for column, section in (self.metrics.get("subgroups") or {}).items():
            for metric, worst in (section.get("worst") or {}).items():
                if worst.get("group") is None or worst.get("value") is None:
                    continue
                gap = (section.get("largest_gap") or {}).get(metric)
                gap_ci = (section.get("largest_gap_ci") or {}).get(metric) or (None, None)
                rows.append(
                    f"| {column} | {metric} | {worst['group']} | "
                    f"{_with_ci(worst['value'], worst.get('ci_low'), worst.get('ci_high'))} | "
                    f"{'' if gap is None else _with_ci(gap, *gap_ci)} |"
                )
        if not rows:
            return "_No subgroup results in metrics.json (groups too small, or none recorded)._"
        return (
            "| subgroup | metric | weakest group | value (95% CI) | largest gap (95% CI) |\n"
            "|:--|:--|:--|--:|--:|\n" + "\n".join(rows)
        )

    def build(self):
        import gradio as gr

        with gr.Blocks(title=f"hf-medai: {self.title.lower()}") as app:
            header(self.title, f"Model: `{self.run_dir.name}` ({', '.join(self.class_names)})")
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="pil", label=self.image_label, image_mode="RGB", height=320, elem_id="image")
                    button = gr.Button("Classify", variant="primary", elem_id="classify")
                with gr.Column():
                    decision = gr.Markdown(elem_id="decision")
                    probabilities = gr.Markdown(elem_id="probabilities")
            saliency = gr.Image(
                label=("Attention rollout" if self.rollout else "Gradient saliency") + " (where the model looked)",
                interactive=False,
                height=470,
                elem_id="saliency",
                buttons=["download", "fullscreen"],
            )
            with gr.Accordion("Intended use (from the model card)", open=False):
                gr.Markdown(card_section(self.run_dir, "Intended use") or "_The card has no intended-use section._")
            with gr.Accordion("Where this model was weakest (test-set subgroups, from metrics.json)", open=True):
                gr.Markdown(self.weakest_subgroups())
            button.click(self.classify, inputs=image, outputs=[decision, probabilities, saliency])
        return app


def _display(class_name: str, capital: bool = True) -> str:
    """A class name as a reader sees it: "not_tumour" -> "Not tumour" (or "not tumour" mid-sentence)."""
    text = str(class_name).replace("_", " ")
    return text[:1].upper() + text[1:] if capital else text


def _with_ci(value, low, high) -> str:
    return f"{value:.3f}" + ("" if low is None or high is None else f" ({low:.3f}–{high:.3f})")


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
    cls = cls[-side * side :]  # drop any register/distillation tokens that precede the patches
    return cls.reshape(side, side).numpy()


def saliency_figure(image, saliency: np.ndarray, method: str, max_side: int = 448):
    """The image and, beside it, the saliency map over it with a colour bar, as one PIL image (about 950x450).

    The map is scaled to 0-1 per image: it says where this model looked most and least in THIS image, not how
    much; values cannot be compared between images.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from PIL import Image

    scale = min(1.0, max_side / max(image.size))
    base = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    s = np.asarray(saliency, dtype=np.float64)
    s = (s - s.min()) / (s.max() - s.min() + 1e-12)
    heat = np.asarray(Image.fromarray((s * 255).astype(np.uint8)).resize(base.size, Image.BILINEAR)) / 255.0
    fig = Figure(figsize=(9.5, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.imshow(base)
    left.set_title("Image")
    right.imshow(base)
    right.imshow(heat, cmap=colormaps["inferno"], norm=Normalize(0, 1), alpha=0.55)
    right.set_title(f"{method[:1].upper() + method[1:]} over the image")
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    # the colour bar in full colour (the overlay is drawn at 55% over the image)
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps["inferno"]), ax=right, fraction=0.046, pad=0.02)
    bar.set_label("relative saliency in this image (0 = least, 1 = most)")
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
