"""Peer baselines stand where a compiled model would: same calls, same numbers as PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qbuild.peers import TorchEager


def test_torch_eager_gives_pytorchs_logits_and_a_timed_closure():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5)).eval()
    batch = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = module(torch.from_numpy(batch)).detach().numpy()
    peer = TorchEager(module)
    np.testing.assert_array_equal(peer(batch), expected)
    assert peer.prepare(batch)() is None
    assert peer.describe()["engine"] == "torch" and peer.describe()["threads"] >= 1


def test_a_peer_leaves_the_module_it_was_given_as_it_was():
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()
    half = TorchEager(module, dtype="float16", channels_last=True)
    assert next(half.module.parameters()).dtype == torch.float16
    assert next(module.parameters()).dtype == torch.float32
    assert module[0].weight.is_contiguous()


def small_classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 5),
    ).eval()


def test_onnx_runtime_runs_the_exported_model_in_fp32_and_in_int8(tmp_path):
    pytest.importorskip("onnxruntime")
    from qbuild.peers import OnnxRuntime

    module = small_classifier()
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    expected = module(torch.from_numpy(batch)).detach().numpy()
    fp32 = OnnxRuntime(module, (1, 3, 16, 16), tmp_path / "fp32")
    np.testing.assert_allclose(fp32(batch), expected, rtol=1e-4, atol=1e-5)
    calibration = [rng.standard_normal((3, 16, 16)).astype(np.float32) for _ in range(4)]
    int8 = OnnxRuntime(module, (1, 3, 16, 16), tmp_path / "int8", "QOperator", calibration)
    assert np.abs(int8(batch) - expected).max() < 0.1 * np.abs(expected).max() + 0.05
    assert int8.describe()["mode"].startswith("int8 static, QOperator")
    assert int8.prepare(batch)() is None


def test_onnx_runtime_runs_nncfs_qdq_model_as_the_runtime_of_what_qbuild_imports(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("nncf", reason="pip install -e .[peers]")
    from qbuild.peers import OnnxRuntime

    module = small_classifier()
    rng = np.random.default_rng(1)
    batch = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    expected = module(torch.from_numpy(batch)).detach().numpy()
    calibration = [rng.standard_normal((3, 16, 16)).astype(np.float32) for _ in range(4)]
    nncf = OnnxRuntime(module, (1, 3, 16, 16), tmp_path, "QDQ", calibration, producer="nncf")
    assert (tmp_path / "model-int8-nncf.onnx").is_file()
    assert np.abs(nncf(batch) - expected).max() < 0.1 * np.abs(expected).max() + 0.05
    assert nncf.describe()["mode"] == "int8 static, QDQ, per-channel weights, quantized by nncf"


def test_an_unknown_onnx_quantization_format_is_refused(tmp_path):
    pytest.importorskip("onnxruntime")
    from qbuild.errors import QbuildError
    from qbuild.peers import OnnxRuntime

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval()
    with pytest.raises(QbuildError, match="unknown ONNX Runtime quantization format 'QInt4'"):
        OnnxRuntime(module, (1, 3, 8, 8), tmp_path, "QInt4", [np.zeros((3, 8, 8), np.float32)])
