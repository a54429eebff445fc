"""qbuild's post-training quantizer: a Relax-to-Relax transformation.

``quantize(mod, params, dataset)`` takes a float Relax module (from ``qbuild.trace``), binds
its weights, folds batch norm, calibrates activation ranges (``calibrate``), and rewrites
conv2d/dense into integer kernels with requantize epilogues (``rewrite``). The options and
defaults are relay.quantize's (``config``). It knows nothing of benchmarks or targets: how a
sub-byte conv runs is asked of the target's kernels, passed in as ``convs``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from qbuild.errors import QbuildError
from qbuild.quantize.config import DEFAULTS, QConfig, current_qconfig, make, options, qconfig

if TYPE_CHECKING:
    import tvm

    from qbuild.quantize.memo import Memory
    from qbuild.quantize.rewrite import Rewriter, SubbyteKernels

__all__ = [
    "QConfig",
    "DEFAULTS",
    "ImportedModule",
    "QuantizedModule",
    "current_qconfig",
    "make",
    "options",
    "qconfig",
    "quantize",
    "load_quantized",
]


@dataclass
class QuantizedModule:
    """The integer module and what the quantizer did: per-layer decisions, calibration facts."""

    mod: "tvm.IRModule"
    config: QConfig
    layers: list[dict]
    calibration: dict
    auto_bitserial_pairs: int  # "auto" ran convs of at most this many plane pairs bit-serially
    mixed_precision: dict | None = None  # under a bit budget: what it chose (``mixed_precision.record``)
    source: "tvm.IRModule | None" = field(default=None, repr=False)  # what was rewritten (BN folded)
    rewriter: Callable[[], "Rewriter"] | None = field(default=None, repr=False)  # makes the same rewrite

    def layer_outputs(self) -> tuple["tvm.IRModule", "tvm.IRModule"]:
        """Two modules whose ``main`` returns every conv/dense layer's output (float32, in
        ``layers`` order): this integer program's (an accumulator dequantized at its scales; the
        same integers as ``mod``), and the float module's as the quantizer received it (batch norm
        folded), followed there by each layer's input. Returned as (float, integer)."""
        from qbuild.relax.graph import with_outputs

        rewriter = self.rewriter()
        probed = rewriter.run(self.source, probe=True)
        return with_outputs(self.source, rewriter.layer_vars + rewriter.layer_inputs), probed

    def report(self) -> dict:
        """The quantization block of a results file (``qbuild.schema.quantization``): the config
        and every option's default beside it."""
        quantized = [layer for layer in self.layers if layer["status"] == "quantized"]
        return {
            "config": self.config.to_json(),
            "defaults": DEFAULTS.to_json(),
            "calibration": self.calibration,
            "layers_quantized": len(quantized),
            "layers_skipped": len(self.layers) - len(quantized),
            "bitserial_layers": sum(layer.get("kernel") == "bitserial" for layer in self.layers),
            "auto_bitserial_pairs": self.auto_bitserial_pairs,
            "mixed_precision": self.mixed_precision,
            "layers": self.layers,
        }


@dataclass
class ImportedModule:
    """The integer module of a model quantized by another tool (``origin``: its format and
    producer), its scales taken as given; ``layers`` as ``QuantizedModule``'s, plus the ops that
    run in float between quantized tensors (status "float")."""

    mod: "tvm.IRModule"
    layers: list[dict]
    origin: dict

    def report(self) -> dict:
        """The quantization block of a results file (the same keys as ``QuantizedModule.report``)."""
        quantized = [layer for layer in self.layers if layer["status"] == "quantized"]
        return {
            "config": {"imported": self.origin},
            "calibration": {"mode": "taken as given", "tensors": 0, "images": 0},
            "layers_quantized": len(quantized),
            "layers_skipped": len(self.layers) - len(quantized),
            "bitserial_layers": 0,
            "auto_bitserial_pairs": 0,
            "layers": self.layers,
        }


def _check_skips(config: QConfig, conv_count: int) -> None:
    out_of_range = [i for i in (config.skip_conv_layers or ()) if i >= conv_count]
    if out_of_range:
        raise QbuildError(
            f"qconfig option skip_conv_layers={list(config.skip_conv_layers)} is out of range: "
            f"the model has {conv_count} convolutions",
            f"use indices 0..{conv_count - 1}",
        )


def quantize(
    mod: "tvm.IRModule",
    params: dict[str, np.ndarray] | None = None,
    dataset: Iterable[np.ndarray] | None = None,
    config: QConfig | None = None,
    convs: "SubbyteKernels | None" = None,
    memory: "Memory | None" = None,
) -> QuantizedModule:
    """Quantize a float Relax module under ``config`` (default: the current ``qconfig``).

    ``params``: weights to bind (None if ``mod`` has them bound already). ``dataset``: CHW
    float32 calibration images, preprocessed like the model's inputs; needed by every
    calibrate_mode but global_scale (the first ``calibrate_samples`` are used). ``convs``: the
    target's answer to which sub-byte convs run bit-serially (``SubbyteKernels``; None: every one
    as the int8 conv). ``memory``: what the quantizations of one model share (``Memory``). Under a
    ``bit_budget``, each layer's bits are chosen (``mixed_precision``) between calibration and the
    rewrite, from a rewrite at the widest bits that measures every layer's sensitivity.
    """
    from qbuild.quantize import block_reconstruct, mixed_precision
    from qbuild.quantize.calibrate import collect, threshold
    from qbuild.quantize.memo import Memory
    from qbuild.quantize.rewrite import ChosenBits, Rewriter

    config = config or current_qconfig()
    memory = memory if memory is not None else Memory()
    if config.subbyte_kernel == "bitserial" and convs is None:
        raise QbuildError(
            "subbyte_kernel='bitserial' needs the target's kernels",
            "pass convs=qbuild.kernels.subbyte_convs.SubbyteConvs.for_target(target)",
        )
    mod = _prepared(mod, params)

    auto_pairs = convs.max_pairs if convs is not None else 0
    calibration: dict = {"mode": config.calibrate_mode, "tensors": 0, "images": 0}
    stats: dict = {}
    if config.needs_data:
        # A dry run names the tensors whose ranges the rewrite needs (and checks the layer
        # indices before the model is run on any image).
        requested: dict = {}
        dry = Rewriter(config, lambda var, levels: requested.setdefault(var, 1.0), kernels=convs, memory=memory)
        dry.run(mod)
        _check_skips(config, dry.conv_count)
        images = list(_take(dataset, config.calibrate_samples, config.calibrate_mode))
        if requested:  # nothing to calibrate when every layer is skipped
            started = time.perf_counter()
            stats = collect(mod, list(requested), images, config.calibrate_chunk_by, dry.gram_inputs, memory)
            calibration.update(seconds=time.perf_counter() - started)
        calibration.update(tensors=len(requested), images=len(images))

    def make_rewriter(chosen: ChosenBits | None, learned: dict | None = None) -> Rewriter:
        return Rewriter(
            config,
            lambda var, levels: threshold(config, stats.get(var), levels),
            stats.get,
            convs,
            memory,
            chosen,
            learned,
        )

    chosen: ChosenBits | None = None
    sensitivities: dict = {}
    if config.bit_budget is not None:
        started = time.perf_counter()
        measuring = make_rewriter(None)
        measuring.run(mod)
        sensitivities = measuring.sensitivities
        chosen = dict(zip(sensitivities, mixed_precision.choose(list(sensitivities.values()), config.bit_budget)))
        calibration.update(sensitivity_seconds=time.perf_counter() - started)

    learned = None
    if config.weight_rounding == "reconstruct":
        started = time.perf_counter()
        probing = make_rewriter(chosen)
        probing.run(mod)
        learned = block_reconstruct.learn(mod, probing.quantizations, images)
        calibration.update(reconstruction_seconds=time.perf_counter() - started)
    rewriter = make_rewriter(chosen, learned)
    quantized = rewriter.run(mod)
    _check_skips(config, rewriter.conv_count)
    mixed = None if chosen is None else mixed_precision.record(rewriter.layers, sensitivities, config.bit_budget)
    return QuantizedModule(
        quantized, config, rewriter.layers, calibration, auto_pairs, mixed, mod, lambda: make_rewriter(chosen, learned)
    )


def _prepared(mod: "tvm.IRModule", params: dict | None) -> "tvm.IRModule":
    """The float module the quantizer rewrites: ``params`` bound, batch norm folded, and explicit zero
    pads (TF-style "same" padding) made their convs' own padding: after the rewrite a quantize
    would sit between pad and conv, where the lowering's fold cannot see them (EfficientNet-Lite0's
    calibrated, a16, a32 and sweep builds ran their pads in NCHW). Zero is zero in every symmetric
    encoding, so the integer conv pads exactly as the float pad did."""
    from tvm import relax

    from qbuild.relax.fold_pads import fold_pads_into_convs
    from qbuild.trace import fold_batch_norm

    if params:
        mod = relax.transform.BindParams("main", dict(params))(mod)
    return fold_pads_into_convs()(fold_batch_norm(mod))


def reconstruction_refusal(mod: "tvm.IRModule", params: dict | None = None) -> str | None:
    """Why ``weight_rounding='reconstruct'`` cannot run on the float module ``mod`` (what its PyTorch
    mirror lacks, ``qbuild.relax.torch_mirror``), or None where it can."""
    from qbuild.relax.torch_mirror import refusal

    return refusal(_prepared(mod, params))


def _take(dataset: Iterable[np.ndarray] | None, count: int, mode: str) -> Iterable[np.ndarray]:
    if dataset is None:
        raise QbuildError(
            f"calibrate_mode={mode!r} needs calibration images but none were given",
            "pass a dataset (qbuild: --dataset DIR) or use calibrate_mode='global_scale'",
        )
    taken = 0
    for image in dataset:
        if taken == count:
            break
        taken += 1
        yield image
    if taken == 0:
        raise QbuildError(f"calibrate_mode={mode!r} got an empty calibration set", "point --dataset at labelled images")


def load_quantized(source: "str | PathLike | Any", producer: str | None = None) -> ImportedModule:
    """A model quantized by another tool as qbuild's integer program, its scales and zero points
    taken as given: an ONNX QDQ model (a ``.onnx`` path or an ``onnx.ModelProto``, as ONNX
    Runtime's ``quantize_static`` or NNCF write it), or a PT2E-quantized
    ``torch.export.ExportedProgram`` (``convert_pt2e``, then ``torch.export.export``).
    ``producer`` names the tool in the record (default "onnx", or "torch" for PT2E)."""
    if isinstance(source, (str, PathLike)) or type(source).__name__ == "ModelProto":
        from qbuild.quantize.onnx_qdq import load_onnx_qdq

        return ImportedModule(*load_onnx_qdq(source, producer or "onnx"))
    from qbuild.quantize.pt2e import load_pt2e

    return ImportedModule(*load_pt2e(source, producer or "torch"))
