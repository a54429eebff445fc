"""Layer errors: each quantized layer's output against the float model's, as an SQNR in dB."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qbuild import layer_errors, stages
from qbuild.compile import host_tensors
from qbuild.plan import build_plan
from qbuild.progress import Progress
from qbuild.quantize import make, quantize
from qbuild.scheduler import run_plan
from qbuild.trace import trace
from qbuild.verify import energy_db, sqnr_db


class Chain(torch.nn.Module):
    """conv-relu, conv-relu, pooling, a classifier: three layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(torch.relu(self.conv0(x))))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def chain():
    torch.manual_seed(0)
    return trace(Chain().eval(), (1, 3, 16, 16))


def images(n: int = 3, gain: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(2)
    return [gain * rng.standard_normal((3, 16, 16)).astype(np.float32) for _ in range(n)]


def errors(chain, gain: float = 1.0, **options) -> tuple[dict, list[dict]]:
    options = {"calibrate_mode": "max", **options}
    quantized = quantize(chain.inference_module(), None, images(4, gain), make(**options))
    reference, probed = quantized.layer_outputs()
    return layer_errors.measure(
        host_tensors(reference), host_tensors(probed), images(gain=gain), quantized.layers
    ), quantized.layers


def test_an_sqnr_is_the_signal_energy_over_the_error_energy_in_db():
    signal = np.linspace(-1.0, 1.0, 101)
    assert sqnr_db(signal, signal + 0.1 * signal) == pytest.approx(20.0)
    assert energy_db(1.0, 1e-3) == pytest.approx(30.0)
    assert sqnr_db(signal, signal) is None, "no error: no ratio"


def test_every_layer_is_measured_in_the_order_the_quantizer_records_it(chain):
    measured, layers = errors(chain)  # relay's defaults: the first conv and the dense layer stay float
    assert measured["images"] == 3
    assert (
        [(m["op"], m["index"], m["status"]) for m in measured["layers"]]
        == [(layer["op"], layer["index"], layer["status"]) for layer in layers]
        == [("nn.conv2d", 0, "skipped"), ("nn.conv2d", 1, "quantized"), ("nn.dense", 0, "skipped")]
    )
    first, quantized_conv, dense = (m["sqnr_db"] for m in measured["layers"])
    assert first is None, "a float layer on the float input is exact"
    assert 10.0 < quantized_conv < 60.0
    assert dense is not None and dense < 60.0, "a float layer after a quantized one inherits its error"
    clipped = [m["input_clipped"] for m in measured["layers"]]
    assert clipped == [None, 0.0, None], "ranges calibrated to the maximum clip nothing; float layers have no range"


def test_inputs_beyond_global_scales_range_are_counted_as_clipped(chain):
    calm, _layers = errors(chain, calibrate_mode="global_scale")
    loud, _layers = errors(chain, gain=40.0, calibrate_mode="global_scale")  # activations far beyond +-8
    assert calm["layers"][1]["input_clipped"] < 0.01 < 0.2 < loud["layers"][1]["input_clipped"] <= 1.0
    assert loud["layers"][1]["sqnr_db"] < calm["layers"][1]["sqnr_db"] - 6.0


def test_fewer_bits_lose_more_of_each_layers_output(chain):
    wide, wide_layers = errors(chain, skip_conv_layers=[], skip_dense_layer=False)
    narrow, narrow_layers = errors(
        chain, skip_conv_layers=[], skip_dense_layer=False, nbit_input=4, nbit_weight=4, edge_layers=[]
    )  # no layer kept at 8 bits
    for w, n in zip(wide["layers"], narrow["layers"]):
        assert n["sqnr_db"] < w["sqnr_db"] - 6.0, "four bits fewer: well over 6 dB less (~6 dB a bit)"
    for w, n in zip(wide_layers, narrow_layers):
        assert n["weight_sqnr_db"] < w["weight_sqnr_db"] - 6.0


def test_a_build_that_quantizes_nothing_has_no_error(chain):
    measured, _layers = errors(chain, skip_conv_layers=[0, 1], skip_dense_layer=True)
    assert [m["sqnr_db"] for m in measured["layers"]] == [None, None, None]


def test_layer_errors_are_measured_once_per_quantized_program_on_its_builtin_cpu_build():
    (untuned,) = build_plan(["resnet18"], ["int8-a8"], ["cpu"], "quick", "random", kernels=["untuned"])
    assert "measured on that build" in stages.why_no_layer_errors(untuned, None)


def test_a_builtin_build_with_random_weights_skips_its_layer_errors_and_says_so():
    from types import SimpleNamespace

    (builtin,) = build_plan(["resnet18"], ["int8-a8"], ["cpu"], "quick", "random", kernels=["builtin"])
    random_weights = SimpleNamespace(weights=SimpleNamespace(kind="random"))
    assert stages.why_no_layer_errors(builtin, random_weights) == "random weights: layer errors would be meaningless"


def test_a_quantized_experiment_with_real_weights_records_its_layer_errors(tmp_path):
    from test_accuracy import make_csv_set

    dataset = make_csv_set(tmp_path / "set", n=12)
    plan = build_plan(
        ["efficientnet_lite0"],
        ["int8-a8-calibrated"],
        ["cpu"],
        "quick",
        "auto",
        dataset=str(dataset),
        kernels=["builtin"],
    )
    (outcome,) = run_plan(plan, tmp_path / "results", progress=Progress(quiet=True))
    record = outcome.record
    assert record["stages"]["layers"]["status"] == "ok"
    layers = record["quantization"]["layers"]
    measured = record["layer_errors"]["layers"]
    assert [m["name"] for m in measured] == [layer["name"] for layer in layers]
    assert record["layer_errors"]["images"] == min(layer_errors.LAYER_IMAGES, 12 - plan[0].profile.calibration_images)
    assert all(m["sqnr_db"] is None or np.isfinite(m["sqnr_db"]) for m in measured)
    assert measured[-1]["sqnr_db"] > 0, "the calibrated build's logits keep more signal than error"


def test_a_layer_is_described_by_its_kind_and_shape():
    assert (
        layer_errors.describe({"op": "nn.conv2d", "weight_shape": [672, 1, 5, 5], "groups": 672})
        == "depthwise 5x5 conv, 672 channels"
    )
    assert (
        layer_errors.describe({"op": "nn.conv2d", "weight_shape": [96, 16, 1, 1], "groups": 1}) == "1x1 conv 16 -> 96"
    )
    assert layer_errors.describe({"op": "nn.dense", "weight_shape": [1280, 1000]}) == "dense 1280 -> 1000"


def test_the_layer_table_marks_the_first_layer_below_the_floor():
    layers = [
        {"op": "nn.conv2d", "weight_shape": [8, 3, 3, 3], "groups": 1, "status": "skipped"},
        {"op": "nn.conv2d", "weight_shape": [8, 8, 1, 1], "groups": 1, "status": "quantized", "weight_sqnr_db": 30.0},
        {"op": "nn.dense", "weight_shape": [8, 10], "status": "quantized", "weight_sqnr_db": 28.0},
    ]
    measured = {
        "images": 8,
        "layers": [
            {"sqnr_db": None, "input_clipped": None},
            {"sqnr_db": 4.0, "input_clipped": 0.25},
            {"sqnr_db": 3.0, "input_clipped": 0.0},
        ],
    }
    lines = layer_errors.render(measured, layers).splitlines()
    assert lines[2].split() == [
        "1",
        "1x1",
        "conv",
        "8",
        "->",
        "8",
        "quantized",
        "30.0",
        "25.00%",
        "4.0",
        "<-",
        "first",
        "below",
        "10",
        "dB",
    ]
    assert lines[1].split()[-3:] == ["-", "-", "-"] and "<-" not in lines[3], (
        "exact shows '-'; only the first is marked"
    )
