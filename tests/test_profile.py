"""The profile times each generated function of a build and says what share of the run it takes."""

from __future__ import annotations

import numpy as np
import pytest
from tvm import relax

from qbuild.cli import main
from qbuild.compile import compile_model
from qbuild.profile import profile, render
from qbuild.targets import gpu_visible, resolve_target


def _conv_relu_pool():
    bb = relax.BlockBuilder()
    data = relax.Var("data", relax.TensorType((1, 8, 16, 16), "float32"))
    weight = relax.const(np.random.default_rng(0).standard_normal((16, 8, 3, 3)).astype(np.float32))
    with bb.function("main", [data]):
        with bb.dataflow():
            conv = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(data, weight, padding=1)))
            out = bb.emit_output(relax.op.nn.max_pool2d(conv, 2, 2))
        bb.emit_func_output(out)
    return bb.get()


def test_every_generated_function_is_timed_and_the_shares_add_up():
    compiled = compile_model(_conv_relu_pool(), resolve_target("cpu"), "builtin")
    rows = profile(compiled, (1, 8, 16, 16), runs=3)
    functions = [row["function"] for row in rows]
    assert any("conv2d" in name for name in functions) and any("pool" in name for name in functions)
    assert sum(row["share"] for row in rows) == pytest.approx(1.0)
    assert all(row["calls"] >= 1 and row["ms"] >= 0 for row in rows)
    assert [row["ms"] for row in rows] == sorted((row["ms"] for row in rows), reverse=True)
    table = render(rows, top=1)
    assert f"({len(rows) - 1} more)" in table and table.splitlines()[-1].startswith("total")


def test_profiling_a_peer_is_refused_with_the_fix(capsys):
    assert (
        main(["profile", "--model", "resnet18", "--variant", "torch-fp32", "--target", "cpu", "--profile", "quick"])
        == 2
    )
    assert "is a peer" in capsys.readouterr().err


@pytest.mark.skipif(not gpu_visible(), reason="needs a CUDA GPU: runs on the lent GPU machine")
def test_a_cuda_build_is_timed_by_cuda_events_without_a_wait_per_call():
    from qbuild import profile as profiling

    compiled = compile_model(_conv_relu_pool(), resolve_target("cuda"), "builtin", cuda_graph=False)
    assert isinstance(profiling.clock_for(compiled, compiled.target.device()), profiling.CudaEventClock)
    rows = profile(compiled, (1, 8, 16, 16), runs=3)
    assert any("conv2d" in row["function"] for row in rows)
    assert sum(row["share"] for row in rows) == pytest.approx(1.0) and all(row["ms"] >= 0 for row in rows)
