"""Importing PT2E-quantized programs: qbuild's integer program agrees with PyTorch running the converted model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("torchao", reason="pip install -e .[pt2e]  (torchao)")

from qdq_nets import SHAPE, block, compiled, images  # noqa: E402
from torchao.quantization.pt2e import quantize_pt2e as pt2e  # noqa: E402
from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86  # noqa: E402

from qbuild import load_quantized  # noqa: E402
from qbuild.errors import QbuildError  # noqa: E402
from qbuild.quantize.onnx_qdq import UnsupportedQuantization  # noqa: E402


def converted(module: torch.nn.Module, shape: tuple[int, ...], **config) -> torch.fx.GraphModule:
    """``module`` through PT2E with torchao's X86InductorQuantizer (``config``: its options),
    calibrated on eight images of ``shape``."""
    example = (torch.zeros(shape),)
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config(**config))
    prepared = pt2e.prepare_pt2e(torch.export.export(module, example).module(), quantizer)
    for image in np.random.default_rng(0).standard_normal((8, *shape)).astype(np.float32):
        prepared(torch.from_numpy(image))
    return pt2e.convert_pt2e(prepared)


@pytest.fixture(scope="module")
def model() -> torch.fx.GraphModule:
    return converted(block(), SHAPE)


@pytest.fixture(scope="module")
def program(model) -> torch.export.ExportedProgram:
    return torch.export.export(model, (torch.zeros(SHAPE),))


def output_step(reference: np.ndarray) -> float:
    """PT2E leaves the last linear layer's output in float, with no scale of its own: one step of
    an int8 code over its range (as the NNCF import test measures)."""
    return float(np.abs(reference).max()) / 127


def test_a_pt2e_quantized_conv_net_compiles_to_integer_convs_and_dense_with_records(program):
    imported = load_quantized(program)
    script = imported.mod.script()
    assert "relax.dequantize" not in script and "relax.quantize" not in script
    ops = [(layer["op"], layer["status"]) for layer in imported.layers if layer["op"].startswith("nn.")]
    assert ops == [("nn.conv2d", "quantized")] * 4 + [("nn.dense", "quantized")]
    assert imported.report()["layers_quantized"] == 5
    assert imported.origin["format"] == "pt2e" and imported.origin["producer"] == "torch"


def test_scales_and_zero_points_are_the_programs_own(program):
    first = next(node for node in program.graph.nodes if "quantize_per_tensor" in str(node.target))
    scale, zero = first.args[1:3]
    stem = load_quantized(program).layers[0]
    assert stem["input_scale"] == pytest.approx(scale, rel=1e-7)
    assert stem["input_zero_point"] == zero and stem["input_encoding"]["kind"] == "unsigned"  # uint8, as it is
    assert stem["weight_shape"] == [16, 3, 3, 3] and stem["strides"] == [2, 2]


def test_the_integer_program_matches_pytorch_within_one_step_per_output(program, model):
    build = compiled(load_quantized(program).mod)
    for image in images(4, seed=1):
        theirs = model(torch.from_numpy(image)[None]).detach().numpy()
        assert np.abs(build(image[None]) - theirs).max() <= output_step(theirs)


def test_the_residual_add_pt2e_leaves_unquantized_runs_in_float_and_says_so(program):
    """X86InductorQuantizer quantizes conv + add as one pattern: the conv's output is not
    quantized, so the add reads an accumulator and int8 codes and is computed in float."""
    floats = [layer for layer in load_quantized(program).layers if layer["status"] == "float"]
    assert [layer["op"] for layer in floats] == ["relax.add"]
    assert "runs in float" in floats[0]["reason"]


def test_an_exported_program_without_quantize_ops_is_refused_naming_the_fix():
    program = torch.export.export(block(), (torch.zeros(SHAPE),))
    with pytest.raises(UnsupportedQuantization, match="not quantized.*convert_pt2e"):
        load_quantized(program)


def test_a_converted_module_not_yet_exported_is_refused_naming_the_fix(model):
    with pytest.raises(QbuildError, match="not an exported program.*torch.export.export"):
        load_quantized(model)


def test_dynamic_quantization_is_refused_by_name():
    linear = torch.nn.Sequential(torch.nn.Linear(12, 4)).eval()
    program = torch.export.export(converted(linear, (1, 12), is_dynamic=True), (torch.zeros(1, 12),))
    with pytest.raises(UnsupportedQuantization, match="dynamic quantization"):
        load_quantized(program)


def test_a_reduced_quantize_range_is_refused_by_name():
    program = torch.export.export(converted(block(), SHAPE, reduce_range=True), (torch.zeros(SHAPE),))
    with pytest.raises(UnsupportedQuantization, match=r"uint8 quantize to \[0, 127\]"):
        load_quantized(program)


class ChannelQuantized(torch.nn.Module):
    """An input quantized with one scale per channel, as no PT2E quantizer of qbuild's reads."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor([0.01, 0.02, 0.03]))
        self.register_buffer("zero", torch.zeros(3, dtype=torch.int64))

    def forward(self, x):
        ops = torch.ops.quantized_decomposed
        codes = ops.quantize_per_channel(x, self.scale, self.zero, 1, -128, 127, torch.int8)
        return ops.dequantize_per_channel(codes, self.scale, self.zero, 1, -128, 127, torch.int8)


def test_per_channel_activation_quantization_is_refused_by_name():
    program = torch.export.export(ChannelQuantized(), (torch.zeros(SHAPE),))
    with pytest.raises(UnsupportedQuantization, match="per-channel activation"):
        load_quantized(program)


class WeightOnly(torch.nn.Module):
    """int8 weight codes dequantized per channel into a float linear layer, its input left float."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("codes", torch.randint(-127, 128, (4, 12), dtype=torch.int8))
        self.register_buffer("scale", torch.full((4,), 0.01))

    def forward(self, x):
        ops = torch.ops.quantized_decomposed
        weight = ops.dequantize_per_channel(self.codes, self.scale, None, 0, -128, 127, torch.int8)
        return torch.nn.functional.linear(x, weight)


def test_weight_only_quantization_is_refused_by_name():
    program = torch.export.export(WeightOnly(), (torch.zeros(1, 12),))
    with pytest.raises(UnsupportedQuantization, match="weight-only"):
        load_quantized(program)


class AffineQuantized(torch.nn.Module):
    """An input through torchao's own affine quantize ops (not PT2E's quantized_decomposed ones)."""

    def forward(self, x):
        ops, block, scale, zero = torch.ops.torchao, list(x.shape), torch.tensor([0.01]), torch.tensor([0])
        codes = ops.quantize_affine(x, block, scale, zero, torch.int8)
        return ops.dequantize_affine(codes, block, scale, zero, torch.int8)


def test_torchaos_affine_quantize_ops_are_refused_by_name():
    program = torch.export.export(AffineQuantized(), (torch.zeros(SHAPE),))
    with pytest.raises(UnsupportedQuantization, match="quantize_affine.* not supported"):
        load_quantized(program)


class Bfloat16Dequantized(torch.nn.Module):
    """An input quantized per tensor and dequantized to bfloat16."""

    def forward(self, x):
        ops = torch.ops.quantized_decomposed
        codes = ops.quantize_per_tensor(x, 0.01, 0, -128, 127, torch.int8)
        return ops.dequantize_per_tensor(codes, 0.01, 0, -128, 127, torch.int8, out_dtype=torch.bfloat16)


def test_a_dequantize_to_bfloat16_is_refused_by_name():
    program = torch.export.export(Bfloat16Dequantized(), (torch.zeros(SHAPE),))
    with pytest.raises(UnsupportedQuantization, match="dequantize to torch.bfloat16"):
        load_quantized(program)
