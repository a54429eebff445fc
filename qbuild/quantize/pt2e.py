"""PT2E-quantized PyTorch programs (torchao's ``prepare_pt2e`` / ``convert_pt2e``, then
``torch.export.export``) as qbuild's integer Relax program.

Design: a converted PT2E program is a QDQ graph in PyTorch's own ops: every quantized tensor
passes through ``quantized_decomposed.quantize_per_tensor`` then ``dequantize_per_tensor``, and
weights are int8 codes read by ``dequantize_per_channel``. Relax's PyTorch frontend imports the
float ops; the quantize/dequantize ops are given to it here as ``relax.quantize`` /
``relax.dequantize`` with their scales and zero points as constants, which yields the same float
program Relax's ONNX frontend makes of a QDQ model. ``onnx_qdq.QdqImporter`` then rewrites it into
integer ops exactly as it rewrites an ONNX import, with the program's scales taken as given.

Forms not supported are refused with one line naming them: programs without quantize ops,
dynamic quantization (``choose_qparams``), per-channel activations, dtypes other than int8/uint8
and quantize ranges narrower than the dtype's (``reduce_range``, 4-bit in int8).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import tvm
from tvm import relax

from qbuild.errors import QbuildError, one_line
from qbuild.quantize.onnx_qdq import QdqImporter, UnsupportedQuantization
from qbuild.quantize.zero_point import code_range

# PT2E's quantize ops live in PyTorch's quantized_decomposed library; torchao's own affine ones in torchao.
NAMESPACES = ("quantized_decomposed", "torchao")
# The PT2E quantize ops this import maps, by overload name (as the frontend keys its converters).
QUANTIZE = ("quantize_per_tensor.default", "quantize_per_tensor.tensor", "quantize_per_channel.default")
DEQUANTIZE = ("dequantize_per_tensor.default", "dequantize_per_tensor.tensor", "dequantize_per_channel.default")
# Ops that compute quantization parameters while the program runs.
DYNAMIC = ("choose_qparams", "choose_qparams_symmetric", "choose_qparams_per_token")
DTYPES = {"torch.int8": "int8", "torch.uint8": "uint8"}
FIX = (
    "quantize it with PT2E (torchao.quantization.pt2e: prepare_pt2e, calibrate, convert_pt2e), "
    "then torch.export.export the converted model"
)


def _schema(node: Any) -> tuple[str, str]:
    """(namespace, "op.overload") of an fx call_function node."""
    target = node.target
    return getattr(target, "namespace", ""), getattr(target, "__name__", str(target))


def check_pt2e(program: Any) -> None:
    """Refuse, with the form's name, an exported program qbuild cannot compile as an integer program."""
    calls = [node for node in program.graph.nodes if node.op == "call_function"]
    quantized = [node for node in calls if _schema(node)[0] in NAMESPACES]
    names = {_schema(node)[1] for node in quantized}
    dynamic = sorted(name for name in names if name.split(".")[0] in DYNAMIC)
    if dynamic:
        raise UnsupportedQuantization(
            f"dynamic quantization ({', '.join(dynamic)}) is not supported: activation scales computed at run time",
            "quantize statically (get_default_x86_inductor_quantization_config(is_dynamic=False))",
        )
    other = sorted(names - set(QUANTIZE) - set(DEQUANTIZE))
    if other:
        raise UnsupportedQuantization(
            f"PT2E ops {', '.join(other)} are not supported",
            "quantize with X86InductorQuantizer: per-tensor activations, per-channel weights",
        )
    if not names:
        raise UnsupportedQuantization("the exported program has no PT2E quantize ops: it is not quantized", FIX)
    constants = _constants(program)
    for node in quantized:
        _check_op(node, constants)
    if not any(name.startswith("quantize_per_tensor") for name in names):
        raise UnsupportedQuantization(
            "weight-only quantization is not supported: no activation is quantized",
            "quantize activations too (get_default_x86_inductor_quantization_config())",
        )


def _check_op(node: Any, constants: dict[str, np.ndarray]) -> None:
    """Refuse a PT2E quantize/dequantize op outside what the importer reads: 8-bit, float32
    values, per-tensor activations, scales known before the program runs, the dtype's full range."""
    import torch

    name = _schema(node)[1]
    dtype = str(node.args[-1])
    if dtype not in DTYPES:
        raise UnsupportedQuantization(f"{dtype} quantization is not supported ({node.name})", "quantize to 8 bits")
    if node.kwargs.get("out_dtype") not in (None, torch.float32):
        raise UnsupportedQuantization(
            f"a dequantize to {node.kwargs['out_dtype']} ({node.name}): qbuild's float ops run in float32",
            "dequantize to float32 (convert_pt2e of a float32 model)",
        )
    computed = [arg.name for arg in node.args[1:3] if hasattr(arg, "name") and arg.name not in constants]
    if computed:
        raise UnsupportedQuantization(
            f"quantization parameters computed at run time ({', '.join(computed)} of {node.name})",
            "quantize statically: scales and zero points fixed by calibration",
        )
    data = node.args[0]
    if "per_channel" in name and data.name not in constants and _schema(data)[1] not in QUANTIZE:
        raise UnsupportedQuantization(
            f"per-channel activation quantization ({node.name}) is not supported",
            "quantize activations per tensor (per-channel scales are for weights)",
        )
    low, high = (int(v) for v in node.args[-3:-1])
    if name.startswith("quantize") and (low, high) != code_range(DTYPES[dtype]):
        raise UnsupportedQuantization(
            f"a {DTYPES[dtype]} quantize to [{low}, {high}] ({node.name}): only the dtype's full range is supported",
            "quantize over the full 8-bit range (reduce_range=False)",
        )


def _constants(program: Any) -> dict[str, np.ndarray]:
    """The program's parameters, buffers and constant tensors by placeholder name."""
    tensors = {**program.state_dict, **program.constants}
    return {
        spec.arg.name: tensors[spec.target].detach().cpu().numpy()
        for spec in program.graph_signature.input_specs
        if spec.target in tensors
    }


def _converters(constants: dict[str, np.ndarray]) -> dict[str, Callable]:
    """The frontend converters of the PT2E quantize ops: ``relax.quantize`` / ``relax.dequantize``
    with constant scales (float32) and zero points (int32) along the op's axis."""

    def value(arg: Any, dtype: str) -> relax.Constant:
        array = constants[arg.name] if hasattr(arg, "name") else np.asarray(arg)
        return relax.const(np.asarray(array, dtype=dtype))

    def convert(node: Any, importer: Any) -> relax.Expr:
        name = _schema(node)[1]
        data, scale, zero = node.args[:3]
        axis = int(node.args[3]) if "per_channel" in name else -1
        zeros = value(zero, "int32") if zero is not None else relax.const(np.zeros(1, np.int32))
        if name.startswith("quantize"):
            op, out_dtype = relax.op.quantize, DTYPES[str(node.args[-1])]
        else:
            op, out_dtype = relax.op.dequantize, "float32"
        return importer.block_builder.emit(op(importer.env[data], value(scale, "float32"), zeros, axis, out_dtype))

    return {name: convert for name in QUANTIZE + DEQUANTIZE}


def import_pt2e(program: Any) -> tvm.IRModule:
    """The float Relax program of a converted PT2E exported program (weights bound), checked,
    with its quantize ops as ``relax.quantize`` / ``relax.dequantize``."""
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    check_pt2e(program)
    # Linear layers stay whole: decomposed, their bias comes first in an addmm, which the
    # importer does not read as a bias of the accumulator.
    table = torch.export.default_decompositions()
    del table[torch.ops.aten.linear.default]
    program = program.run_decompositions(table)
    try:
        return from_exported_program(
            program, custom_convert_map=_converters(_constants(program)), run_ep_decomposition=False
        )
    except AssertionError as exc:  # the frontend's word for ops it has no converter for
        raise QbuildError(
            f"Relax's PyTorch frontend cannot import the program: {one_line(exc)}",
            "export the model without those ops",
        ) from None


def load_pt2e(program: Any, producer: str = "torch") -> tuple[tvm.IRModule, list[dict], dict]:
    """A PT2E-quantized ``torch.export.ExportedProgram`` as qbuild's integer program: (module, the
    record of each layer, its origin: format "pt2e", ``producer`` (who quantized it), torch's version)."""
    import torch

    if not isinstance(program, torch.export.ExportedProgram):
        raise QbuildError(
            f"a {type(program).__name__} is not an exported program",
            "pass torch.export.export(convert_pt2e(prepared), example_args)",
        )
    importer = QdqImporter()
    mod = importer.run(import_pt2e(program))
    return mod, importer.layers, {"format": "pt2e", "producer": producer, "torch": torch.__version__}
