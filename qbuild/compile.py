"""Relax IRModule -> a Python-callable compiled model (the study's function object ``m``).

``compile_model`` runs ``tvm.compile`` for a resolved target and wraps the Relax VM in a
``CompiledModel``: call it with a NumPy batch to get logits, or ``prepare`` a batch once and
time the returned closure. Generated source (LLVM IR, assembly, CUDA) stays reachable through
``sources`` for the analysis stage.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from qbuild.targets import TargetChoice

if TYPE_CHECKING:
    import tvm

# Module kind -> the inspect_source formats worth keeping, and the artifact suffix of each.
SOURCE_FORMATS = {
    "llvm": (("ll", "ll"), ("asm", "s")),
    "cuda": (("cuda", "cu"),),
}


@dataclass
class CompiledModel:
    """A compiled model bound to its device: ``model(batch) -> logits``."""

    executable: "tvm.relax.VMExecutable"
    target: TargetChoice
    seconds: float
    relax_module: "tvm.IRModule"  # what was compiled (kept as an artifact)
    kernels: dict  # kernel set and, for "builtin", how many functions each schedule rule took
    # CUDA: the cubins TVM compiled for the GPU while building (qbuild.cuda_code.capture_binaries;
    # seen on the lent H200: no compile happened at the first run). Cross-compiling without a GPU
    # compiles none.
    binaries: list[bytes] = field(default_factory=list)
    _vm: "tvm.relax.VirtualMachine | None" = None  # made on first use: a cross-compiled model never runs

    @property
    def _device(self) -> "tvm.runtime.Device":
        return self.target.device()

    @property
    def vm(self) -> "tvm.relax.VirtualMachine":
        """The Relax VM that runs the model on its device (made on first use)."""
        from tvm import relax

        if self._vm is None:
            self._vm = relax.VirtualMachine(self.executable, self._device)
        return self._vm

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = self.vm["main"](self.upload(batch))
        return _first_tensor(out).numpy()

    def prepare(self, batch: np.ndarray) -> Callable[[], None]:
        """Upload ``batch`` once; the returned closure runs the model on it and waits for the device."""
        data = self.upload(batch)
        main = self.vm["main"]
        device = self._device

        def run_once() -> None:
            main(data)
            device.sync()

        return run_once

    @property
    def weight_bytes(self) -> int:
        """Bytes of the constants of the Relax module handed to the compiler: its weights as the
        quantizer stored them (compile-time folding, e.g. int16 pairs for ``vpmaddwd``, aside)."""
        from qbuild.relax.graph import constant_bytes

        return constant_bytes(self.relax_module)

    def sources(self) -> dict[str, str]:
        """Generated code by artifact suffix: {"ll": ..., "s": ...} on CPU; on CUDA {"cu": ...}
        plus "ptx" and "sass" where nvcc (and cuobjdump) can make them (``qbuild.cuda_code``);
        on both, "vm": the Relax VM program that calls the kernels."""
        from qbuild import cuda_code

        found: dict[str, str] = {"vm": self.executable.as_text()}
        # On CUDA the host module only launches kernels: the census is of the device code.
        kind = "cuda" if self.target.name == "cuda" else "llvm"
        for module in _walk_modules(self.executable.mod):
            if module.kind != kind:
                continue
            for fmt, suffix in SOURCE_FORMATS[kind]:
                try:
                    text = module.inspect_source(fmt)
                except Exception:  # a format this module cannot print
                    continue
                if text and suffix not in found:
                    found[suffix] = text
        if "cu" in found:
            arch = self.target.spec["arch"]
            compiled = {
                "ptx": cuda_code.ptx(found["cu"], arch),
                "sass": cuda_code.sass(self.binaries, found["cu"], arch),
            }
            found.update((suffix, text) for suffix, text in compiled.items() if text)
        return found

    @property
    def sass_origin(self) -> str:
        """Which binary a CUDA build's SASS disassembles: the one that ran, or nvcc's of the same source."""
        return "the cubin TVM compiled (NVRTC)" if self.binaries else "nvcc -O3 of the same CUDA source"

    def upload(self, batch: np.ndarray) -> "tvm.runtime.Tensor":
        """``batch`` as a float32 tensor on the model's device."""
        import tvm

        return tvm.runtime.tensor(np.ascontiguousarray(batch, dtype=np.float32), self._device)


def _walk_modules(module: "tvm.runtime.Module"):
    yield module
    for child in module.imports:
        yield from _walk_modules(child)


def _first_tensor(out):
    """The VM returns a tensor or a tuple of them; the logits are the first."""
    return out if hasattr(out, "numpy") else _first_tensor(out[0])


def compile_model(
    mod: "tvm.IRModule", target: TargetChoice, kernels: str | None = "builtin", cuda_graph: bool = True
) -> CompiledModel:
    """Compile a Relax module whose ``main`` takes only the input batch (weights bound), with the
    kernel set ``kernels`` (see ``qbuild.kernels``; None: TVM's default pipeline for the target).
    ``cuda_graph=False`` leaves out the CUDA graph of qbuild's CUDA kernels (``qbuild.profile``
    needs each kernel to be a call of its own). Nothing runs here: a model cross-compiled for a
    GPU this machine lacks can still be analysed."""
    import tvm

    from qbuild import cuda_code
    from qbuild.kernels.pipeline import codegen_target, pass_config, pipeline

    tvm_target = codegen_target(kernels, target.tvm_target())
    relax_pipeline, report = pipeline(kernels, tvm_target)
    config = pass_config(kernels, tvm_target) if cuda_graph else {}
    start = time.perf_counter()
    current = tvm.transform.PassContext.current()
    capture = cuda_code.capture_binaries() if target.name == "cuda" else nullcontext([])
    with tvm.transform.PassContext(opt_level=current.opt_level, config=config), tvm_target, capture as binaries:
        executable = tvm.compile(mod, tvm_target, relax_pipeline=relax_pipeline)
    seconds = time.perf_counter() - start
    details = {
        "set": kernels,
        "functions": report.to_json(),
        "int16_sum_convs": report.int16_sum_convs,
        "pass_config": config,
        "llvm_options": list(tvm_target.export().get("cl-opt", [])),
        "tuning": report.tuning_json(),
    }
    return CompiledModel(executable, target, seconds, mod, details, binaries)


def host_tensors(mod: "tvm.IRModule") -> Callable[[np.ndarray], list[np.ndarray]]:
    """``mod``, whose ``main`` returns a tuple of tensors, compiled for this machine's CPU with the
    builtin kernels: a function from an input batch to those tensors. For reading a module's
    intermediate values (calibration, layer errors), not for timing."""
    import tvm
    from tvm import relax

    from qbuild.kernels.pipeline import codegen_target, pipeline
    from qbuild.targets import resolve_target

    target = codegen_target("builtin", resolve_target("cpu").tvm_target())
    builtin, _report = pipeline("builtin", target)
    vm = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=builtin), tvm.cpu())
    return lambda batch: [value.numpy() for value in vm["main"](tvm.runtime.tensor(batch))]
