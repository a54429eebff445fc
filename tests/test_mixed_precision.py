"""Mixed precision under a bit budget: the solver spends bits where the error is, within the
budget; the measures see the error each width causes; a budgeted model records and runs its bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qbuild import plan
from qbuild.compile import compile_model
from qbuild.errors import QbuildError
from qbuild.quantize import make, quantize
from qbuild.quantize.calibrate import Histogram
from qbuild.quantize.config import BUDGET_BITS
from qbuild.quantize.mixed_precision import Sensitivity, choose, input_error, mean_bits, weight_error
from qbuild.targets import resolve_target
from qbuild.trace import trace


def ladder(scale: float) -> dict[int, float]:
    """Errors that fall 4x per bit, as rounding errors do, scaled by ``scale``."""
    return {bits: scale * 4.0**-bits for bits in (2, 3, 4, 5, 6, 8)}


def test_the_solver_keeps_the_budget_and_gives_the_bits_to_the_more_sensitive_layer():
    sensitive = Sensitivity(1000, weight=ladder(100.0), input=ladder(1.0))
    robust = Sensitivity(1000, weight=ladder(1.0), input=ladder(1.0))
    (sensitive_w, sensitive_a), (robust_w, robust_a) = choose([sensitive, robust], 3.0)
    assert mean_bits([(1000, sensitive_w, sensitive_a), (1000, robust_w, robust_a)]) <= 3.0
    assert sensitive_w > robust_w


def test_the_solver_takes_bits_from_the_layer_with_the_most_multiply_accumulates():
    big, small = (Sensitivity(macs, weight=ladder(1.0), input=ladder(1.0)) for macs in (10_000, 100))
    chosen = choose([big, small], 3.0)
    assert mean_bits([(10_000, *chosen[0]), (100, *chosen[1])]) <= 3.0
    assert sum(chosen[0]) < sum(chosen[1])


def test_a_budget_above_the_widest_bits_keeps_every_layer_at_them():
    layers = [Sensitivity(10, weight=ladder(1.0), input=ladder(1.0)) for _ in range(3)]
    assert choose(layers, 8.0) == [(8, 8)] * 3


def test_weight_error_is_the_output_error_so_channels_without_input_energy_cost_nothing():
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((4, 2, 1, 1))
    off_channel_1 = weights.copy()
    off_channel_1[:, 1] += 0.5
    silent_channel_1 = np.diag([1.0, 0.0])
    assert weight_error(weights, off_channel_1, silent_channel_1, 1) == 0.0
    assert weight_error(weights, off_channel_1, np.eye(2), 1) == pytest.approx(
        np.sum((off_channel_1 - weights) ** 2) / np.sum(weights**2)
    )


def test_input_error_falls_with_a_finer_step():
    rng = np.random.default_rng(0)
    values = np.abs(rng.standard_normal((1, 8, 6, 6))).astype(np.float32)
    stats = Histogram(keep_gram=True)
    stats.add(values)
    weights = rng.standard_normal((4, 8, 1, 1))
    top = float(values.max())
    errors = [input_error(weights, 1, stats, top / high, high) for high in (3, 15, 255)]
    assert errors[0] > errors[1] > errors[2] > 0


@pytest.mark.parametrize("budget, fix", [(1.5, "use 2 to 8 bits"), (9, "use 2 to 8 bits"), ("3", "a number of bits")])
def test_qconfig_refuses_a_budget_outside_the_widths_it_chooses_from_naming_the_fix(budget, fix):
    with pytest.raises(QbuildError, match=f"bit_budget={budget!r}.*{fix}"):
        make(calibrate_mode="mse", bit_budget=budget)


def test_qconfig_refuses_a_budget_without_calibration_images():
    with pytest.raises(QbuildError, match="calibrate_mode other than global_scale"):
        make(bit_budget=3.0)


class Net(torch.nn.Module):
    """A stem, a 3x3 conv and two 1x1 convs of different sizes, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.conv = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.expand = torch.nn.Conv2d(32, 64, 1)
        self.project = torch.nn.Conv2d(64, 16, 1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        a = torch.relu(self.conv(torch.relu(self.stem(x))))
        return self.fc(self.project(torch.relu(self.expand(a))).mean(dim=(2, 3)))


def test_a_budgeted_model_records_each_layers_bits_and_sensitivity_keeps_the_budget_and_runs():
    torch.manual_seed(0)
    module = Net().eval()
    traced = trace(module, (1, 3, 12, 12))
    rng = np.random.default_rng(1)
    images = [rng.standard_normal((3, 12, 12)).astype(np.float32) for _ in range(4)]
    config = make(**{**plan.SWEEP, "calibrate_samples": 4, "calibrate_mode": "mse", "bit_budget": 3.0})
    quantized = quantize(traced.mod, traced.params, images, config)
    stem, conv, expand, project, dense = quantized.layers
    assert stem["status"] == "skipped" and "sensitivity" not in dense  # float, and an edge layer at 8 bits
    assert dense["weight_encoding"]["bits"] == 8
    chosen = [conv, expand, project]
    for layer in chosen:
        assert set(layer["sensitivity"]["weight"]) == {str(bits) for bits in BUDGET_BITS}
        assert {layer["weight_encoding"]["bits"], layer["input_encoding"]["bits"]} <= set(BUDGET_BITS)
    realised = mean_bits((r["macs"], r["weight_encoding"]["bits"], r["input_encoding"]["bits"]) for r in chosen)
    summary = quantized.report()["mixed_precision"]
    assert summary["layers_chosen"] == 3 and summary["mean_bits"] == realised <= 3.0
    assert any(layer["weight_encoding"]["bits"] < 8 for layer in chosen)
    x = images[0][None]
    expected = module(torch.from_numpy(x)).detach().numpy()
    got = compile_model(quantized.mod, resolve_target("cpu"), "builtin")(x)
    cosine = float(np.sum(expected * got) / (np.linalg.norm(expected) * np.linalg.norm(got)))
    assert cosine > 0.5
