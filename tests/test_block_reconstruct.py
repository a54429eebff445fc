"""Block reconstruction (``weight_rounding="reconstruct"``): each low-bit conv's rounding is
learned so that its block of the quantized network reproduces the float block, and the rewrite
emits the same integer program with the learned codes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from qbuild.errors import QbuildError
from qbuild.models import WeightsProvenance
from qbuild.plan import SWEEP
from qbuild.quantize import make, quantize, reconstruction_refusal
from qbuild.relax.torch_mirror import Mirror
from qbuild.stages import reconstruction_skipped
from qbuild.trace import fold_batch_norm, trace
from tests import qdq_nets


def _float_module(module: torch.nn.Module):
    traced = trace(module, qdq_nets.SHAPE)
    return fold_batch_norm(traced.inference_module())


def test_the_pytorch_mirror_computes_what_the_traced_model_computes_on_a_batch():
    module = qdq_nets.block()
    mirror = Mirror(_float_module(module))
    batch = torch.from_numpy(np.stack(qdq_nets.images(3)))
    env = mirror.run({mirror.params[0]: batch}, 0, len(mirror.bindings))
    (logits,) = env[mirror.bindings[-1].var]
    with torch.no_grad():
        np.testing.assert_allclose(logits.numpy(), module(batch).numpy(), rtol=1e-4, atol=1e-5)


def test_the_mirror_refuses_an_op_it_cannot_run_and_names_the_fallback():
    class Softmax(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x, dim=1)

    with pytest.raises(QbuildError, match="weight_rounding='gptq'"):
        Mirror(_float_module(Softmax()))


def test_a_sweep_build_of_a_model_the_mirror_cannot_run_rounds_by_gptq_and_says_why():
    class Softmax(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(torch.nn.functional.relu(x), dim=1)

    pretrained = SimpleNamespace(weights=WeightsProvenance("pretrained", "test", None))
    sweep = make(**{**SWEEP, "nbit_weight": 4, "nbit_input": 4})
    config, why = reconstruction_skipped(sweep, pretrained, trace(Softmax(), qdq_nets.SHAPE))
    assert config.weight_rounding == "gptq" and why == "the PyTorch mirror cannot run relax.nn.softmax"
    convs = trace(qdq_nets.block(), qdq_nets.SHAPE)
    config, why = reconstruction_skipped(sweep, pretrained, convs)
    assert config == sweep and why is None, "a network of convs, adds and ReLUs learns its rounding"
    assert reconstruction_refusal(convs.inference_module()) is None


def _logit_error(rounding: str, images: list[np.ndarray]) -> tuple[float, list[dict]]:
    module = qdq_nets.block()
    traced = trace(module, qdq_nets.SHAPE)
    settings = {"calibrate_samples": len(images), "nbit_weight": 4, "nbit_input": 4, "weight_rounding": rounding}
    config = make(**{**SWEEP, **settings})
    quantized = quantize(traced.mod, traced.params, images, config)
    run = qdq_nets.compiled(quantized.mod)
    with torch.no_grad():
        expected = module(torch.from_numpy(np.stack(images))).numpy()
    got = np.concatenate([run(image[None]) for image in images])
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected)), quantized.layers


def test_learned_rounding_brings_a_4_bit_network_closer_to_float_than_gptq_it_starts_from():
    images = qdq_nets.images(16, seed=3)
    gptq, _ = _logit_error("gptq", images)
    learned, layers = _logit_error("reconstruct", images)
    roundings = {layer["name"]: layer.get("weight_rounding") for layer in layers if layer["status"] == "quantized"}
    assert "reconstruct" in roundings.values()  # the 4-bit convs; the 8-bit depthwise conv keeps its codes
    assert learned < gptq
