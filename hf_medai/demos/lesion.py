"""Lesion classifier demo: the image classifier's app (one decision at the run's operating threshold, saliency,
intended use, weakest subgroups), for dermoscopic images."""

from __future__ import annotations

from hf_medai.demos.image_classifier import ImageClassifierDemo, attention_rollout, saliency_figure

__all__ = ["LesionDemo", "attention_rollout", "saliency_figure"]


class LesionDemo(ImageClassifierDemo):
    title = "Lesion classifier"
    image_label = "Dermoscopic image"
