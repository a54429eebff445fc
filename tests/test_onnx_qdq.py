"""Importing ONNX QDQ models: qbuild's integer program agrees with ONNX Runtime on the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="pip install -e .[peers]")
onnx = pytest.importorskip("onnx", reason="pip install -e .[peers]")
torch = pytest.importorskip("torch")

from qdq_nets import SHAPE, block, compiled, images  # noqa: E402

from qbuild import load_quantized  # noqa: E402
from qbuild.errors import QbuildError  # noqa: E402
from qbuild.peers import OnnxRuntime, qdq_model  # noqa: E402
from qbuild.quantize.onnx_qdq import UnsupportedQuantization  # noqa: E402


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return block()


# The models compared with ONNX Runtime keep their weights in 7 bits: on x86 CPUs without VNNI its
# uint8 x int8 kernels saturate on full-range weights, and the reference would not be exact there.
@pytest.fixture(scope="module")
def ort_qdq(model, tmp_path_factory) -> Path:
    return qdq_model(model, SHAPE, tmp_path_factory.mktemp("ort"), "onnxruntime", images(8), seven_bit_weights=True)


def output_step(path: Path) -> float:
    """The scale of the DequantizeLinear that gives the model's output (one quantization step)."""
    graph = onnx.load(str(path)).graph
    producer = next(node for node in graph.node if graph.output[0].name in node.output)
    assert producer.op_type == "DequantizeLinear"
    scale = next(t for t in graph.initializer if t.name == producer.input[1])
    return float(onnx.numpy_helper.to_array(scale))


def ort_logits(path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def test_an_ort_qdq_model_becomes_integer_convs_and_dense_with_records(ort_qdq):
    imported = load_quantized(ort_qdq, "onnxruntime")
    script = imported.mod.script()
    assert "relax.dequantize" not in script and "relax.quantize" not in script
    ops = [(layer["op"], layer["status"]) for layer in imported.layers if layer["op"].startswith("nn.")]
    assert ops == [("nn.conv2d", "quantized")] * 4 + [("nn.dense", "quantized")]
    assert imported.report()["layers_quantized"] == 5
    assert imported.report()["config"]["imported"]["producer"] == "onnxruntime"


def test_seven_bit_weights_stay_within_64_steps_of_zero(ort_qdq):
    graph = onnx.load(str(ort_qdq)).graph
    weights = [onnx.numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("weight_quantized")]
    assert len(weights) == 5 and all(np.abs(w.astype(int)).max() <= 64 for w in weights)


def test_the_integer_program_agrees_with_onnx_runtime_within_one_step_per_output(ort_qdq):
    build = compiled(load_quantized(ort_qdq).mod)
    step = output_step(ort_qdq)
    for image in images(4, seed=1):
        ours, theirs = build(image[None]), ort_logits(ort_qdq, image[None])
        assert np.abs(ours - theirs).max() <= step * 1.001


def test_an_nncf_qdq_model_runs_its_clips_on_integers_and_agrees_with_onnx_runtime(model, tmp_path):
    pytest.importorskip("nncf", reason="pip install -e .[peers]")
    path = qdq_model(model, SHAPE, tmp_path, "nncf", images(8), seven_bit_weights=True)
    assert "Clip" in {node.op_type for node in onnx.load(str(path)).graph.node}  # NNCF keeps ReLU6
    imported = load_quantized(path, "nncf")
    assert [layer["op"] for layer in imported.layers if layer["status"] == "float"] == []
    build = compiled(imported.mod)
    for image in images(4, seed=1):
        ours, theirs = build(image[None]), ort_logits(path, image[None])
        assert np.abs(ours - theirs).max() <= 1.001 * np.abs(theirs).max() / 127


def test_a_float_onnx_model_is_refused_as_not_quantized(model, tmp_path):
    from qbuild.peers import export_onnx

    path = export_onnx(model, SHAPE, tmp_path / "float.onnx")
    with pytest.raises(UnsupportedQuantization, match="not quantized"):
        load_quantized(path)


def test_dynamic_quantization_is_refused_by_name(model, tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    from qbuild.peers import export_onnx

    path = export_onnx(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4)).eval(), (1, 3, 2, 2), tmp_path / "f.onnx"
    )
    quantize_dynamic(str(path), str(tmp_path / "dynamic.onnx"))
    with pytest.raises(UnsupportedQuantization, match="dynamic quantization"):
        load_quantized(tmp_path / "dynamic.onnx")


def test_the_qoperator_format_is_refused_by_name(model, tmp_path):
    peer = OnnxRuntime(model, SHAPE, tmp_path, "QOperator", images(2))
    assert peer.quant_format == "QOperator"
    with pytest.raises(UnsupportedQuantization, match="QOperator"):
        load_quantized(tmp_path / "model-int8-QOperator.onnx")


def test_a_missing_file_names_the_path(tmp_path):
    with pytest.raises(QbuildError, match="no ONNX model"):
        load_quantized(tmp_path / "absent.onnx")


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (2, 0), (1, 2)])
def test_the_zero_point_correction_is_the_convolution_of_ones(stride, padding):
    from qbuild.quantize.zero_point import ones_response

    weights = np.random.default_rng(3).integers(-127, 128, size=(4, 2, 3, 3))
    ones = torch.ones(1, 2, 9, 8, dtype=torch.float64)
    expected = torch.nn.functional.conv2d(ones, torch.from_numpy(weights).double(), stride=stride, padding=padding)[0]
    out_hw = tuple(expected.shape[1:])
    response = ones_response(weights, (9, 8), (stride, stride), (padding,) * 4, (1, 1), out_hw)
    assert np.array_equal(response, expected.numpy().astype(np.int64))


def channel_quantized_conv(groups: int) -> "onnx.ModelProto":
    """x -> QuantizeLinear with one scale per channel (NNCF's depthwise input) -> a conv."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    weights = rng.integers(-127, 128, size=(4, 4 // groups, 3, 3)).astype(np.int8)
    tensors = {
        "x_scale": np.array([0.01, 0.02, 0.03, 0.04], np.float32),
        "x_zero": np.zeros(4, np.uint8),
        "w": weights,
        "w_scale": np.full(4, 0.005, np.float32),
        "w_zero": np.zeros(4, np.int8),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], axis=1),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], axis=1),
        helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"], group=groups, pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "channel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [numpy_helper.from_array(array, name) for name, array in tensors.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_per_channel_input_scales_feed_a_depthwise_conv_as_integers(tmp_path):
    model = channel_quantized_conv(groups=4)
    imported = load_quantized(model, "nncf")
    assert [layer["status"] for layer in imported.layers] == ["quantized"]
    path = tmp_path / "channel.onnx"
    onnx.save(model, str(path))
    batch = np.random.default_rng(6).uniform(0, 2, size=(1, 4, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(compiled(imported.mod)(batch), ort_logits(path, batch), rtol=1e-5, atol=1e-5)


def test_per_channel_input_scales_into_a_conv_that_mixes_channels_are_refused_by_name():
    with pytest.raises(UnsupportedQuantization, match="mixes channels"):
        load_quantized(channel_quantized_conv(groups=1))
