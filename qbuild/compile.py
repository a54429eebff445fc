"""Relax IRModule -> a Python-callable compiled model (the study's function object ``m``).

``compile_model`` runs ``tvm.compile`` for a resolved target and wraps the Relax VM in a
``CompiledModel``: call it with a NumPy batch to get logits, or ``prepare`` a batch once and
time the returned closure. Generated source (LLVM IR, assembly, CUDA) stays reachable through
``sources`` for the analysis stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from qbuild.targets import TargetChoice

if TYPE_CHECKING:
    import tvm

# Module kind -> the inspect_source formats worth keeping, and the artifact suffix of each.
SOURCE_FORMATS = {
    "llvm": (("ll", "ll"), ("asm", "s")),
    "cuda": (("cu", "cu"), ("ptx", "ptx")),
}


@dataclass
class CompiledModel:
    """A compiled model bound to its device: ``model(batch) -> logits``."""

    executable: "tvm.relax.VMExecutable"
    target: TargetChoice
    seconds: float
    relax_module: "tvm.IRModule"  # what was compiled (kept as an artifact)
    kernels: dict  # kernel set and, for "builtin", how many functions each schedule rule took
    _vm: "tvm.relax.VirtualMachine"
    _device: "tvm.runtime.Device"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = self._vm["main"](self._upload(batch))
        return _first_tensor(out).numpy()

    def prepare(self, batch: np.ndarray) -> Callable[[], None]:
        """Upload ``batch`` once; the returned closure runs the model on it and waits for the device."""
        data = self._upload(batch)
        main = self._vm["main"]
        device = self._device

        def run_once() -> None:
            main(data)
            device.sync()

        return run_once

    @property
    def weight_bytes(self) -> int:
        """Bytes of the constants of the Relax module handed to the compiler: its weights as the
        quantizer stored them (compile-time folding, e.g. int16 pairs for ``vpmaddwd``, aside)."""
        from qbuild.quantize.graph import constant_bytes

        return constant_bytes(self.relax_module)

    def sources(self) -> dict[str, str]:
        """Generated code by artifact suffix: {"ll": ..., "s": ...} on CPU, {"cu": ...} on CUDA."""
        found: dict[str, str] = {}
        for module in _walk_modules(self.executable.mod):
            for fmt, suffix in SOURCE_FORMATS.get(module.kind, ()):
                try:
                    text = module.inspect_source(fmt)
                except Exception:  # a format this module cannot print
                    continue
                if text and suffix not in found:
                    found[suffix] = text
        return found

    def _upload(self, batch: np.ndarray) -> "tvm.runtime.Tensor":
        import tvm

        return tvm.runtime.tensor(np.ascontiguousarray(batch, dtype=np.float32), self._device)


def _walk_modules(module: "tvm.runtime.Module"):
    yield module
    for child in module.imports:
        yield from _walk_modules(child)


def _first_tensor(out):
    """The VM returns a tensor or a tuple of them; the logits are the first."""
    return out if hasattr(out, "numpy") else _first_tensor(out[0])


def compile_model(mod: "tvm.IRModule", target: TargetChoice, kernels: str | None = "builtin") -> CompiledModel:
    """Compile a Relax module whose ``main`` takes only the input batch (weights bound), with the
    CPU kernel set ``kernels`` (see ``qbuild.kernels``); None, and any CUDA target, use TVM's
    default pipeline for the target."""
    import tvm
    from tvm import relax

    from qbuild.kernels.pipeline import pipeline

    tvm_target = target.tvm_target()
    if target.name != "cpu":
        kernels = None
    relax_pipeline, report = pipeline(kernels, tvm_target)
    start = time.perf_counter()
    executable = tvm.compile(mod, tvm_target, relax_pipeline=relax_pipeline)
    seconds = time.perf_counter() - start
    device = target.device()
    vm = relax.VirtualMachine(executable, device)
    return CompiledModel(executable, target, seconds, mod, {"set": kernels, "functions": report.to_json()}, vm, device)
