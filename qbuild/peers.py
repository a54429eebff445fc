"""Peer baselines: the same model run by another engine, measured with the same protocol.

A peer stands where a compiled TVM model would, with the same two entry points
(``model(batch) -> logits`` and ``prepare(batch) -> run once``), so the benchmark and
accuracy stages treat it exactly like qbuild's own output.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import torch

ENGINES = ("tvm", "torch")


class TorchEager:
    """PyTorch eager inference in float32 on the CPU, with as many threads as TVM gets (all cores)."""

    def __init__(self, module: "torch.nn.Module") -> None:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        self.module = module.eval()
        self.threads = torch.get_num_threads()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()

    def prepare(self, batch: np.ndarray) -> Callable[[], None]:
        import torch

        data = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        module = self.module

        def run_once() -> None:
            with torch.inference_mode():
                module(data)

        return run_once

    def describe(self) -> dict:
        import torch

        return {"engine": "torch", "version": torch.__version__, "mode": "eager, float32", "threads": self.threads}
