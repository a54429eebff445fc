"""Peer baselines: the same model run by another engine, measured with the same protocol.

A peer stands where a compiled TVM model would, with the same two entry points
(``model(batch) -> logits`` and ``prepare(batch) -> run once``), so the benchmark and
accuracy stages treat it exactly like qbuild's own output.

- ``TorchEager``: PyTorch eager, float32 on the CPU; on a GPU also float16 in channels-last
  layout, and ``torch.compile``d (Inductor) with or without CUDA graphs (``mode``). It runs on the
  device of the experiment's target, the batch uploaded once, like a TVM build's input.
- ``OnnxRuntime``: the model exported by ``torch.onnx`` and run by ONNX Runtime's CPU provider
  (all graph optimizations), float32 or statically quantized by ``onnxruntime.quantization``
  (int8 weights per channel, uint8 activations, QOperator or QDQ format, calibrated on the same
  held-out images as qbuild's calibrated variants). ``onnxruntime`` is an optional dependency
  (extra ``peers``); without it the compile stage fails with the install command.
- ``OpenVino``: the model converted by ``openvino.convert_model`` and run on OpenVINO's CPU plugin
  (latency hint, all cores): f32 (``INFERENCE_PRECISION_HINT`` f32: on CPUs with AVX-512 BF16 or
  AMX it otherwise runs bf16), bf16, or int8 quantized by NNCF's ``nncf.quantize`` on the same
  held-out images (its float ops at OpenVINO's default precision, as a user gets it). ``openvino``
  and ``nncf`` are optional (extra ``peers``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from qbuild.errors import QbuildError
from qbuild.threads import available_cpus

if TYPE_CHECKING:
    import torch

ENGINES = ("tvm", "torch", "onnxruntime", "openvino")
# OpenVINO: the hint for what its float ops run in ("int8": NNCF-quantized, the rest at its own default).
OPENVINO_PRECISIONS = ("f32", "bf16", "int8")
ORT_FORMATS = ("QOperator", "QDQ")


TORCH_DTYPES = ("float32", "float16")
# torch.compile modes: Inductor's default (no CUDA graphs) and "reduce-overhead" (CUDA graphs).
TORCH_COMPILE_MODES = ("default", "reduce-overhead")


class TorchEager:
    """PyTorch inference on ``device`` ("cpu": all cores, as TVM gets; "cuda"), in ``dtype``,
    optionally channels-last and optionally ``torch.compile``d in ``compile_mode``."""

    def __init__(
        self,
        module: "torch.nn.Module",
        device: str = "cpu",
        dtype: str = "float32",
        channels_last: bool = False,
        compile_mode: str | None = None,
    ) -> None:
        import torch

        if dtype not in TORCH_DTYPES or (compile_mode is not None and compile_mode not in TORCH_COMPILE_MODES):
            raise QbuildError(
                f"unsupported PyTorch peer settings dtype={dtype!r}, compile={compile_mode!r}",
                f"use dtype in {TORCH_DTYPES} and compile mode in {TORCH_COMPILE_MODES}",
            )
        if device == "cpu":
            torch.set_num_threads(available_cpus())
        self.device, self.dtype, self.channels_last, self.compile_mode = device, dtype, channels_last, compile_mode
        # A copy: ``Module.to`` converts in place, and peers built from one loaded model (``qbuild
        # compare``) would otherwise turn each other's weights to float16.
        module = copy.deepcopy(module).eval().to(device=device, dtype=getattr(torch, dtype))
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module if compile_mode is None else torch.compile(module, mode=compile_mode)
        self.threads = torch.get_num_threads()

    def _upload(self, batch: np.ndarray) -> "torch.Tensor":
        import torch

        data = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        data = data.to(device=self.device, dtype=getattr(torch, self.dtype))
        return data.to(memory_format=torch.channels_last) if self.channels_last else data

    def _sync(self) -> None:
        import torch

        if self.device != "cpu":
            torch.cuda.synchronize()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(self._upload(batch)).float().cpu().numpy()

    def prepare(self, batch: np.ndarray) -> Callable[[], None]:
        import torch

        data = self._upload(batch)
        module = self.module
        sync = self._sync

        def run_once() -> None:
            with torch.inference_mode():
                module(data)
            sync()

        return run_once

    def describe(self) -> dict:
        import torch

        mode = "eager" if self.compile_mode is None else f"torch.compile (mode {self.compile_mode!r})"
        layout = ", channels-last" if self.channels_last else ""
        return {
            "engine": "torch",
            "version": torch.__version__,
            "mode": f"{mode}, {self.dtype}{layout}",
            "device": self.device,
            "threads": self.threads,
        }


class OnnxRuntime:
    """ONNX Runtime on the CPU with all cores: float32, or int8 in ``quant_format`` (QOperator/QDQ),
    a QDQ model quantized by ``producer`` (``QDQ_PRODUCERS``: its own ``quantize_static`` or NNCF)."""

    def __init__(
        self,
        module: "torch.nn.Module",
        input_shape: tuple[int, ...],
        workdir: Path,
        quant_format: str | None = None,
        calibration: Iterable[np.ndarray] | None = None,
        producer: str = "onnxruntime",
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise QbuildError(
                "the ONNX Runtime peer needs onnxruntime, which is not installed",
                "pip install -e .[peers] (or leave out the ort-* variants)",
            ) from None
        workdir.mkdir(parents=True, exist_ok=True)
        if quant_format == "QDQ":
            path = qdq_model(module, input_shape, workdir, producer, calibration)
        else:
            path = export_onnx(module, input_shape, workdir / "model.onnx")
            if quant_format is not None:
                path = quantize_static(path, quant_format, calibration, workdir / f"model-int8-{quant_format}.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = available_cpus()
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.quant_format = quant_format
        self.producer = producer
        self.threads = options.intra_op_num_threads
        self.version = ort.__version__

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def prepare(self, batch: np.ndarray) -> Callable[[], None]:
        feed = {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        session = self.session

        def run_once() -> None:
            session.run(None, feed)

        return run_once

    def describe(self) -> dict:
        mode = "float32" if self.quant_format is None else f"int8 static, {self.quant_format}, per-channel weights"
        if self.quant_format == "QDQ" and self.producer != "onnxruntime":
            mode += f", quantized by {self.producer}"
        return {"engine": "onnxruntime", "version": self.version, "mode": mode, "threads": self.threads}


def export_onnx(module: "torch.nn.Module", input_shape: tuple[int, ...], path: Path) -> Path:
    """``module`` as an ONNX file (the exporter's progress chatter is kept off the run's output)."""
    import contextlib
    import io

    import torch

    example = torch.zeros(input_shape, dtype=torch.float32)
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamo=True,
            external_data=False,
        )
    return path


def quantize_static(
    path: Path,
    quant_format: str,
    calibration: Iterable[np.ndarray] | None,
    out: Path,
    seven_bit_weights: bool = False,
) -> Path:
    """The ONNX model at ``path`` quantized by ONNX Runtime's ``quantize_static`` in ``quant_format``
    (int8 weights per channel, uint8 activations; weights in 7 bits with ``seven_bit_weights``, its
    ``reduce_range``) on the ``calibration`` images, written to ``out``."""
    from onnxruntime import quantization as q

    if quant_format not in ORT_FORMATS:
        raise QbuildError(
            f"unknown ONNX Runtime quantization format {quant_format!r}", f"use one of {', '.join(ORT_FORMATS)}"
        )
    if calibration is None:
        raise QbuildError("ONNX Runtime static quantization needs calibration images", "pass --dataset DIR")
    images = [image[None].astype(np.float32) for image in calibration]

    class _Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter([{"input": image} for image in images])

        def get_next(self):
            return next(self._items, None)

    prepared = out.with_suffix(".pre.onnx")
    q.quant_pre_process(str(path), str(prepared))
    q.quantize_static(
        str(prepared),
        str(out),
        _Reader(),
        quant_format=getattr(q.QuantFormat, quant_format),
        per_channel=True,
        activation_type=q.QuantType.QUInt8,
        weight_type=q.QuantType.QInt8,
        reduce_range=seven_bit_weights,
    )
    return out


# Who writes a QDQ ONNX model for qbuild to import (``qdq_model``).
QDQ_PRODUCERS = ("onnxruntime", "nncf")


def qdq_model(
    module: "torch.nn.Module",
    input_shape: tuple[int, ...],
    workdir: Path,
    producer: str,
    calibration: Iterable[np.ndarray] | None,
    seven_bit_weights: bool = False,
) -> Path:
    """``module`` exported to ONNX and quantized statically in QDQ form by ``producer`` on the
    ``calibration`` images: ONNX Runtime's ``quantize_static`` as the ``ort-int8-qdq`` peer runs it,
    or NNCF's ``nncf.quantize`` (its ONNX backend). ``seven_bit_weights`` keeps every weight in
    [-64, 64]: ONNX Runtime's uint8 x int8 kernels on x86 CPUs without VNNI (``vpmaddubsw``) saturate
    their int16 pair sums on full-range weights, and are exact on these."""
    if producer not in QDQ_PRODUCERS:
        raise QbuildError(f"unknown QDQ producer {producer!r}", f"use one of {', '.join(QDQ_PRODUCERS)}")
    workdir.mkdir(parents=True, exist_ok=True)
    path = export_onnx(module, input_shape, workdir / "model.onnx")
    if producer == "onnxruntime":
        return quantize_static(path, "QDQ", calibration, workdir / "model-int8-QDQ.onnx", seven_bit_weights)
    return nncf_quantize_onnx(path, calibration, workdir / "model-int8-nncf.onnx", seven_bit_weights)


def nncf_quantize_onnx(
    path: Path, calibration: Iterable[np.ndarray] | None, out: Path, seven_bit_weights: bool = False
) -> Path:
    """The ONNX model at ``path`` quantized by NNCF (QDQ, its defaults; every layer's weights in 7
    bits with ``seven_bit_weights``, its overflow fix) on every ``calibration`` image."""
    try:
        import nncf
        import onnx
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    except ImportError:
        raise QbuildError(
            "NNCF quantization of an ONNX model needs nncf and onnx, which are not installed",
            "pip install -e .[peers]",
        ) from None
    if calibration is None:
        raise QbuildError("NNCF post-training quantization needs calibration images", "pass --dataset DIR")
    images = [image[None].astype(np.float32) for image in calibration]
    model = onnx.load(str(path))
    name = model.graph.input[0].name
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE) if seven_bit_weights else None
    dataset = nncf.Dataset(images, lambda image: {name: image})
    quantized = nncf.quantize(model, dataset, subset_size=len(images), advanced_parameters=advanced)
    onnx.save(quantized, str(out))
    return out


class OpenVino:
    """OpenVINO on the CPU with all cores, in ``precision`` (``OPENVINO_PRECISIONS``)."""

    def __init__(
        self,
        module: "torch.nn.Module",
        input_shape: tuple[int, ...],
        precision: str,
        calibration: Iterable[np.ndarray] | None = None,
    ) -> None:
        if precision not in OPENVINO_PRECISIONS:
            raise QbuildError(
                f"unknown OpenVINO precision {precision!r}", f"use one of {', '.join(OPENVINO_PRECISIONS)}"
            )
        try:
            import openvino as ov
        except ImportError:
            raise QbuildError(
                "the OpenVINO peer needs openvino, which is not installed",
                "pip install -e .[peers] (or leave out the openvino-* variants)",
            ) from None
        import torch

        with torch.no_grad():
            model = ov.convert_model(
                copy.deepcopy(module).eval(), example_input=torch.zeros(input_shape), input=[tuple(input_shape)]
            )
        if precision == "int8":
            model = _nncf_quantize(model, calibration)
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": available_cpus()}
        if precision != "int8":
            config["INFERENCE_PRECISION_HINT"] = precision
        core = ov.Core()
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision, self.version = precision, ov.__version__
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type: "f32", "bf16"
        self.inference_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer([np.ascontiguousarray(batch, dtype=np.float32)])
        return self.request.get_output_tensor(0).data.copy()

    def prepare(self, batch: np.ndarray) -> Callable[[], None]:
        import openvino as ov

        request = self.request
        request.set_input_tensor(ov.Tensor(np.ascontiguousarray(batch, dtype=np.float32)))

        def run_once() -> None:
            request.infer()

        return run_once

    def describe(self) -> dict:
        mode = "int8 (NNCF post-training quantization)" if self.precision == "int8" else self.precision
        return {
            "engine": "openvino",
            "version": self.version,
            "mode": mode,
            "inference_precision": self.inference_precision,
            "threads": self.threads,
        }


def _nncf_quantize(model, calibration: Iterable[np.ndarray] | None):
    """``model`` quantized by NNCF on ``calibration`` (every image given)."""
    try:
        import nncf
    except ImportError:
        raise QbuildError(
            "the OpenVINO int8 peer needs nncf, which is not installed",
            "pip install -e .[peers] (or leave out openvino-int8)",
        ) from None
    if calibration is None:
        raise QbuildError("NNCF post-training quantization needs calibration images", "pass --dataset DIR")
    images = [image[None].astype(np.float32) for image in calibration]
    return nncf.quantize(model, nncf.Dataset(images), subset_size=len(images))
