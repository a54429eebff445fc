"""The tiny network and images the import tests quantize with other tools (ONNX Runtime, NNCF, PT2E),
and the CPU build they run qbuild's integer program with."""

from __future__ import annotations

import numpy as np
import torch

SHAPE = (1, 3, 32, 32)


class Block(torch.nn.Module):
    """A MobileNet-like block: a strided stem, a padded depthwise conv, ReLU6, a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.ReLU())
        self.depthwise = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.ReLU6())
        self.project = torch.nn.Conv2d(16, 16, 1)
        self.head = torch.nn.Sequential(
            torch.nn.Conv2d(16, 24, 3, padding=1),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(24, 10),
        )

    def forward(self, x):
        y = self.stem(x)
        return self.head(y + self.project(self.depthwise(y)))


def block() -> Block:
    """The block with seeded weights, in eval mode."""
    torch.manual_seed(0)
    return Block().eval()


def images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(SHAPE[1:]).astype(np.float32) for _ in range(count)]


def compiled(mod):
    """``mod`` built for the CPU with qbuild's builtin kernels: a callable on a batch."""
    from qbuild.compile import compile_model
    from qbuild.targets import resolve_target

    return compile_model(mod, resolve_target("cpu"), "builtin")
