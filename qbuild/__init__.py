"""qbuild: study and generate quantized DNN kernels with Apache TVM.

The engine is a one-way pipeline of small stages (see "Layout" in the README):
models -> trace -> compile -> analysis -> bench -> results JSON. Importing this package is
cheap: TVM and torch are imported only by the stages that need them, so the results readers
(`qbuild summary`, the report) run without either. Importing it also gives TVM's runtime all
of this process's CPUs (``threads``: TVM's own default would be half of them on x86).
"""

from __future__ import annotations

from importlib import import_module
from os import PathLike
from typing import Any

from qbuild.threads import use_all_cpus

__version__ = "0.1.0"
use_all_cpus()


def load_quantized(source: str | PathLike | Any, producer: str | None = None) -> Any:
    """A model quantized by another tool (an ONNX QDQ model: a path or an ``onnx.ModelProto``; a
    PT2E-quantized ``torch.export.ExportedProgram``) as qbuild's integer Relax program, a
    ``qbuild.quantize.ImportedModule`` (see ``qbuild.quantize.load_quantized``)."""
    # Looked up when called: the package root is a facade, and the layers below read its version.
    return import_module("qbuild.quantize").load_quantized(source, producer)
