"""Builds timed in worker processes of their own (qbuild.isolated), and the OpenVINO peer."""

from __future__ import annotations

import importlib.util
import statistics

import numpy as np
import pytest

from qbuild import compare
from qbuild.isolated import Worker, WorkerError
from qbuild.plan import build_plan
from qbuild.stages import build

needs_ort = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime: pip install -e .[peers]"
)
needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None,
    reason="needs openvino and nncf: pip install -e .[peers]",
)


def _plan(*variants: str):
    return build_plan(["resnet18"], list(variants), ["cpu"], "quick", "random", kernels=["builtin"])


@needs_ort
def test_a_peers_time_does_not_depend_on_which_builds_are_beside_it():
    """ONNX Runtime's median alone and right after a TVM build's turn (whose pool would share its
    process if both lived in one) agree within 15%. The two settings alternate, on the same
    workers, so that the machine's slow spells fall on both alike."""
    peer, tvm_build = _plan("ort-fp32", "int8-a8")
    with Worker(peer, build=build) as peer_worker, Worker(tvm_build, build=build) as tvm_worker:
        alone = compare.Entry(peer, peer_worker)
        beside = compare.Entry(peer, peer_worker)
        neighbour = compare.Entry(tvm_build, tvm_worker)
        for _ in range(6):
            compare.measure([alone], (1, 3, 64, 64), 1, 15, say=lambda _: None, idle=1.0)
            compare.measure([neighbour, beside], (1, 3, 64, 64), 1, 15, say=lambda _: None, idle=1.0)
    assert neighbour.median_ms is not None and alone.median_ms and beside.median_ms
    assert abs(beside.median_ms / alone.median_ms - 1) <= 0.15, (alone.median_ms, beside.median_ms)


def test_a_worker_holds_its_build_in_a_process_of_its_own():
    import os

    with Worker(_plan("float")[0], build=build) as worker:
        assert worker.description["pid"] not in (None, os.getpid())
        times = worker.time(np.zeros((1, 3, 64, 64), np.float32), 3)
    assert len(times) == 3 and all(t > 0 for t in times)
    assert not worker.process.is_alive()


def test_a_build_that_fails_in_its_worker_says_why_in_one_line(tmp_path):
    broken = tmp_path / "not-a-library.so"
    broken.write_text("not a shared library")
    with pytest.raises(WorkerError) as failure:
        Worker(_plan("float")[0], broken)
    assert "\n" not in str(failure.value) and str(failure.value)


@needs_openvino
def test_openvino_runs_fp32_in_fp32_and_int8_close_to_the_float_model():
    """openvino-f32 is told f32 (it would run bf16 on AVX-512 BF16 and AMX CPUs), and matches
    PyTorch; openvino-int8 (NNCF on the held-out images) stays close to it."""
    import torch

    from qbuild.models import load_model

    f32, int8 = _plan("openvino-f32", "openvino-int8")
    loaded = load_model("resnet18", "random", 64)
    batch = np.random.default_rng(0).standard_normal(loaded.input_shape).astype(np.float32)
    with torch.no_grad():
        expected = loaded.module(torch.from_numpy(batch)).numpy()
    fp32_peer = build(f32, loaded)
    assert fp32_peer.describe()["inference_precision"].endswith("f32")
    np.testing.assert_allclose(fp32_peer(batch), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    quantized = build(int8, loaded)(batch)
    cosine = float((quantized * expected).sum() / np.linalg.norm(quantized) / np.linalg.norm(expected))
    assert cosine > 0.9 and quantized.shape == expected.shape
    assert int8.variant.precision == "int8" and f32.variant.precision == "fp32"


@needs_openvino
def test_compare_times_openvino_beside_qbuild_and_judges_against_the_fastest_peer():
    entries = compare.run(_plan("float", "ort-fp32", "openvino-f32"), rounds=2, executions=3, say=lambda _: None)
    assert all(e.error is None and e.median_ms for e in entries)
    rows = {r["name"]: r for r in compare.ratios(entries)}
    fastest = min(("ort-fp32", "openvino-f32"), key=lambda name: rows[name]["median_ms"])
    assert rows["float"]["best_peer"] == fastest
    (goal,) = [g for g in compare.targets(entries) if g["numerator"] == "float"]
    assert goal["denominator"] == fastest and goal["goal_at_most"] == 1.0
    assert statistics.median(entries[0].samples_ms) == pytest.approx(rows["float"]["median_ms"])
