"""Tuning: the conv schedule's register tile, the knob search over it, and the database the
``tuned`` kernel set compiles with."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import tvm
from test_kernels import AVX2_CPU, conv_module, reference_conv, requantized_relu_module, run_builtin

from qbuild import tuning_db
from qbuild.compile import compile_model
from qbuild.errors import QbuildError
from qbuild.kernels.conv2d import AMX, CONV_BLOCK, INT16_SUMS, SEVEN_BIT
from qbuild.kernels.pipeline import pipeline
from qbuild.kernels.schedule import ConvWorkload
from qbuild.kernels.tiles import CHUNKS, ConvTile, KernelShape, amx_tiles, candidate_tiles, default_tile
from qbuild.kernels.vectors import AVX2, AVX512, cpu_features, of_target
from qbuild.plan import build_plan
from qbuild.targets import resolve_target
from qbuild.tune import Candidate, conv_functions, to_database, tune, workloads_of

CPU = resolve_target("cpu")
HOST = of_target(CPU.tvm_target())  # this CPU's vector registers


@pytest.fixture
def tuning_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(tuning_db.DIR_VAR, str(tmp_path))
    return tmp_path


def small_conv(dtype: str):
    """A 32 -> 32 channel 3x3 conv on 8x8 (rows of 8 pixels; 4 channel blocks of 8 lanes, or 2
    of 16) and its input."""
    rng = np.random.default_rng(11)
    if dtype == "int8":
        x = rng.integers(-128, 128, (1, 32, 8, 8)).astype(np.int8)
        weight = rng.integers(-128, 128, (32, 32, 3, 3)).astype(np.int8)
        return conv_module(x.shape, weight, 1, 1, 1, "int32"), x, weight
    x = rng.standard_normal((1, 32, 8, 8)).astype(np.float32)
    weight = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    return conv_module(x.shape, weight, 1, 1, 1, "float32"), x, weight


KERNELS = {
    "1x1": KernelShape(),
    "byte 3x3": KernelShape(taps=9, height=14, operand_bytes=1),
    "int16 1x1": KernelShape(height=7, operand_bytes=2),
    "float 3x3": KernelShape(taps=9, height=7, floating=True),
}


@pytest.mark.parametrize("kernel", list(KERNELS.values()), ids=list(KERNELS))
@pytest.mark.parametrize("registers", [AVX2, AVX512], ids=["AVX2", "AVX-512"])
def test_every_candidate_tile_divides_the_row_and_the_blocks_within_the_register_budget(registers, kernel):
    for width in (1, 7, 13, 14, 28, 56, 112):
        for blocks in (1, 3, 8, 64):
            for in_blocks in (1, 4, 32):
                tiles = candidate_tiles(width, blocks, in_blocks, registers, kernel)
                default = default_tile(width, blocks, registers, in_blocks, kernel)
                assert tiles[0] == default, "the default tile is measured first"
                assert len(set(tiles)) == len(tiles)
                for tile in tiles:
                    assert tile.fits(width, blocks, in_blocks)
                    assert tile.pixels * tile.blocks <= registers.max_accumulators
    assert max(t.pixels * t.blocks for t in candidate_tiles(56, 64, 4, AVX512)) > AVX2.max_accumulators


def test_a_chunk_splits_the_input_channel_blocks_into_several_passes_or_is_not_a_candidate():
    assert {t.chunk for t in candidate_tiles(14, 32, 32)} == {0, *CHUNKS}
    assert {t.chunk for t in candidate_tiles(14, 32, 4)} == {0, 1}, "4 of 4 blocks is one pass: no chunk"
    assert {t.chunk for t in candidate_tiles(14, 32, 1)} == {0}
    assert not ConvTile(2, 4, 3).fits(14, 32, 32)


def test_a_tile_reads_and_writes_its_json_with_the_chunk_only_when_it_has_one():
    assert ConvTile(4, 2).to_json() == [4, 2] and ConvTile(*[4, 2]) == ConvTile(4, 2, 0)
    assert ConvTile(4, 2, 4).to_json() == [4, 2, 4] and ConvTile(4, 2, 4).label() == "4x2/4"


def test_the_default_tile_is_four_pixels_by_two_blocks_where_they_divide():
    assert default_tile(56, 8) == ConvTile(4, 2)
    assert default_tile(14, 32) == ConvTile(2, 4)
    assert default_tile(7, 64) == ConvTile(7, 1)


def test_with_avx512s_registers_the_default_tile_is_four_by_four_else_seven_by_two():
    assert default_tile(56, 8, AVX512) == ConvTile(4, 4)
    assert default_tile(14, 32, AVX512) == ConvTile(7, 2)
    assert default_tile(7, 64, AVX512) == ConvTile(7, 2)
    assert default_tile(8, 2, AVX512) == ConvTile(4, 2), "neither fits: the AVX2 choice"


def test_with_avx512s_registers_a_float_conv_whose_weights_would_stream_from_l2_keeps_them_in_l1():
    """A float 3 x 3 conv of several input blocks sweeps its plane once per input block (its 18 kB
    of weights per pass in L1); a float 1 x 1 conv of 32 input blocks or more feeds 28
    accumulators from two weight vectors. Others and int8 convs keep the tiles above (AVX2's
    float 3 x 3 convs: see the L1 test)."""
    three_by_three, pointwise = KernelShape(taps=9, height=14, floating=True), KernelShape(height=14, floating=True)
    assert default_tile(14, 16, AVX512, 16, three_by_three) == ConvTile(14, 2, 1)
    assert default_tile(7, 32, AVX512, 32, replace(three_by_three, height=7)) == ConvTile(7, 2, 1)
    assert default_tile(14, 16, AVX512, 64, pointwise) == ConvTile(14, 2)
    assert default_tile(14, 16, AVX512, 16, pointwise) == ConvTile(7, 2), "a shallow 1 x 1 conv: as before"
    assert default_tile(14, 16, AVX512, 16, replace(three_by_three, floating=False)) == ConvTile(7, 2)
    assert default_tile(14, 16, AVX2, 16, three_by_three) == ConvTile(2, 4, 1), "16 registers: below"
    assert default_tile(112, 4, AVX512, 4, replace(three_by_three, height=112)) == ConvTile(4, 4), (
        "a 112 x 112 plane's partial sums (1.6 MB) would not stay in L2"
    )
    for kernel in (three_by_three, pointwise):
        tiles = candidate_tiles(14, 16, 64, AVX512, kernel)
        assert tiles[0] == default_tile(14, 16, AVX512, 64, kernel) and len(set(tiles)) == len(tiles)


def test_on_avx2_a_float_conv_whose_partial_sums_stay_in_l1_takes_one_input_block_per_pass():
    """A 3 x 3 conv's plane of partial sums for its tile: 25 kB at 14 x 14 (2 x 4) and 1.6 kB at
    7 x 7 (7 x 1) stay in a 32 kB L1; 50 kB at 28 x 28 (4 x 2) does not."""
    three_by_three = KernelShape(taps=9, height=14, floating=True)
    assert default_tile(14, 32, AVX2, 32, three_by_three) == ConvTile(2, 4, 1)
    assert default_tile(7, 64, AVX2, 64, replace(three_by_three, height=7)) == ConvTile(7, 1, 1)
    assert default_tile(28, 16, AVX2, 16, replace(three_by_three, height=28)) == ConvTile(4, 2)
    assert default_tile(14, 32, AVX2, 32, KernelShape(height=14, floating=True)) == ConvTile(2, 4), "1 x 1: whole"
    assert default_tile(14, 32, AVX2, 1, three_by_three) == ConvTile(2, 4), "one input block: one pass anyway"
    assert default_tile(14, 32, AVX2, 32, replace(three_by_three, floating=False)) == ConvTile(2, 4), "int16"
    assert default_tile(14, 32, replace(AVX2, avx2=False), 32, three_by_three) == ConvTile(2, 4), "no AVX2"


def test_on_avx2_a_byte_conv_takes_one_pixel_of_up_to_eight_blocks_chunked_where_its_weights_leave_l1():
    """vpmaddubsw's weight operand is read from L1, never held, so the tile takes one pixel and as
    many blocks as share its broadcast; 4 input blocks per pass (else 1) where the tile's weights
    over the whole reduction exceed 16 kB and the plane's partial sums fit in L2. A 1 x 1 int16
    conv (vpmaddwd's weight operand) takes such tiles too, its weights twice the bytes."""
    three_by_three = KernelShape(taps=9, height=14, operand_bytes=1)
    pointwise_int16 = KernelShape(height=7, operand_bytes=2)
    assert default_tile(14, 32, AVX2, 2, three_by_three) == ConvTile(1, 8), "9 kB of weights: one pass"
    assert default_tile(14, 32, AVX2, 32, three_by_three) == ConvTile(1, 8, 4), "147 kB of weights"
    assert default_tile(7, 6, AVX2, 30, replace(three_by_three, height=7)) == ConvTile(1, 6, 1), "4 does not divide 30"
    assert default_tile(14, 5, AVX2, 2, three_by_three) == ConvTile(1, 5)
    assert default_tile(56, 8, AVX2, 8, replace(three_by_three, height=56)) == ConvTile(1, 8), (
        "a 56 x 56 plane's partial sums (800 kB) would not stay in L2"
    )
    assert default_tile(14, 11, AVX2, 2, three_by_three) == ConvTile(7, 1), "no block count from 4 to 8 divides 11"
    assert default_tile(56, 3, AVX2, 2, three_by_three) == ConvTile(8, 1), "3 blocks: too few accumulators"
    no_avx2 = replace(AVX2, avx2=False)  # an AArch64 CPU without the dot products: AVX2's shapes, plain code
    assert default_tile(14, 32, no_avx2, 32, three_by_three) == ConvTile(2, 4)
    assert default_tile(7, 144, AVX2, 16, pointwise_int16) == ConvTile(1, 8), "16 kB of int16 weights"
    assert default_tile(7, 144, AVX2, 24, pointwise_int16) == ConvTile(1, 8, 4), "24 kB"
    assert default_tile(14, 32, AVX2, 32, replace(three_by_three, operand_bytes=2)) == ConvTile(2, 4), "int16 3 x 3"
    assert default_tile(14, 32, AVX512, 32, three_by_three) == ConvTile(7, 2), "32 registers: as before"
    assert default_tile(14, 32, AVX2, 1, KernelShape(taps=9, depthwise=True, operand_bytes=1)) == ConvTile(2, 4)


def test_with_avx512s_registers_odd_block_counts_share_each_input_value_between_several_blocks():
    """5, 3, 7 and 15 output blocks (EfficientNet's 40, 24, 112 and 240 channels): as many blocks
    as divide them (up to 7) and as many pixels as keep the tile within 14 accumulators, not one
    block of the widest row."""
    assert default_tile(28, 5, AVX512) == ConvTile(2, 5)
    assert default_tile(56, 3, AVX512) == ConvTile(4, 3)
    assert default_tile(14, 7, AVX512) == ConvTile(2, 7)
    assert default_tile(28, 15, AVX512) == ConvTile(2, 5)
    assert default_tile(28, 11, AVX512) == ConvTile(7, 1), "no block count up to 7 divides 11"
    assert default_tile(12, 6, AVX512) == ConvTile(4, 2), "an even number of blocks: as before"
    assert default_tile(28, 5) == ConvTile(7, 1), "AVX2's tiles are as they were"


def test_with_avx512s_registers_a_depthwise_conv_of_wide_rows_takes_one_block_per_tile():
    depthwise = KernelShape(depthwise=True, floating=True)
    assert default_tile(56, 9, AVX512, 1, depthwise) == ConvTile(8, 1)
    assert default_tile(112, 2, AVX512, 1, depthwise) == ConvTile(8, 1)
    assert default_tile(7, 72, AVX512, 1, depthwise) == ConvTile(7, 2), "rows of 7: as before"
    assert default_tile(17, 4, AVX512, 1, depthwise) == default_tile(17, 4, AVX512), (
        "a prime row would give one accumulator: the general rule's tile"
    )
    assert default_tile(56, 9, AVX512) == ConvTile(4, 3), "a dense conv of 9 blocks shares its inputs"


def test_a_tile_beyond_the_register_budget_is_refused():
    with pytest.raises(ValueError, match="accumulators"):
        ConvTile(16, 5)  # AMX's 16 rows x 4 tiles is the most any conv holds
    vector = ConvWorkload("key", 56, 8, 4, "a conv", CONV_BLOCK, 16, KernelShape())
    assert not vector.fits(ConvTile(8, 4)), "32 accumulators: more than the vector registers hold"
    assert ConvWorkload("key", 56, 8, 4, "a conv", CONV_BLOCK + AMX, 16, KernelShape()).fits(ConvTile(14, 4))


def test_an_amx_conv_tile_is_up_to_sixteen_pixels_by_four_tiles_dividing_the_output():
    assert amx_tiles(56, 4)[0] == ConvTile(14, 4), "the default: the widest rows, then the most tiles"
    assert amx_tiles(7, 6)[0] == ConvTile(7, 3)
    for width in (2, 7, 13, 14, 17, 56):
        for blocks in (1, 2, 3, 8, 128):
            for tile in amx_tiles(width, blocks):
                assert width % tile.pixels == 0 and blocks % tile.blocks == 0
                assert 1 < tile.pixels <= 16 and 1 < tile.blocks <= 4
    assert amx_tiles(17, 8) == [] and amx_tiles(14, 1) == [], "one pixel or one block: no AMX tile"


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_every_candidate_tile_computes_the_same_conv(dtype):
    mod, x, weight = small_conv(dtype)
    ((key, (workload, _)),) = conv_functions(mod, CPU.tvm_target()).items()
    lanes = HOST.lanes
    assert (workload.width, workload.out_blocks, workload.in_blocks) == (8, 32 // lanes, 32 // lanes)
    expected = reference_conv(x, weight, 1, 1, 1)
    tiles = workload.candidate_tiles(HOST)
    assert any(tile.chunk for tile in tiles)
    for tile in tiles:
        got, report = run_builtin(mod, x, tiles={key: tile})
        assert report.tuned_convs == 1, tile
        if dtype == "int8":
            np.testing.assert_array_equal(got, expected, err_msg=str(tile))
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=str(tile))


@pytest.mark.parametrize(
    "top, low, suffix", [(127, -128, SEVEN_BIT), (3, -2, INT16_SUMS)], ids=["int32 sums", "int16 sums"]
)
def test_every_candidate_tile_of_a_byte_conv_of_seven_bit_data_stays_exact(top, low, suffix):
    """The byte compute of CPUs with AVX2 and without VNNI (built for one, wherever this CPU has AVX2)."""
    if "avx2" not in cpu_features(CPU.tvm_target()):
        pytest.skip("this CPU has no AVX2: the byte compute's intrinsics would not run")
    rng = np.random.default_rng(12)
    x = rng.integers(0, 2000, (1, 32, 8, 8)).astype(np.int32)
    weight = rng.integers(low, -low, (16, 32, 3, 3)).astype(np.int8)
    mod = requantized_relu_module(x.shape, weight, relu=True, top=top)
    ((key, (workload, _)),) = conv_functions(mod, AVX2_CPU.tvm_target()).items()
    assert workload.block.endswith(suffix) and workload.in_blocks == 4
    expected, _ = run_builtin(mod, x, target=AVX2_CPU)
    tiles = workload.candidate_tiles(AVX2)
    assert {tile.chunk for tile in tiles} == {0, 1}
    for tile in tiles:
        got, report = run_builtin(mod, x, tiles={key: tile}, target=AVX2_CPU)
        assert report.tuned_convs == 1, tile
        np.testing.assert_array_equal(got, expected, err_msg=str(tile))


def test_tune_measures_each_tile_and_the_tuned_kernel_set_compiles_with_the_fastest(tuning_dir):
    mod, x, weight = small_conv("int8")
    measured = tune(workloads_of([mod], CPU.tvm_target()), CPU.tvm_target(), rounds=2, executions=1, say=lambda _: None)
    ((key, (workload, candidates)),) = measured.items()
    assert [c.tile for c in candidates] == workload.candidate_tiles(HOST)
    assert all(len(c.samples_ms) == 2 and min(c.samples_ms) > 0 for c in candidates)
    database = to_database(measured, None, "this-machine", 2, {})
    record = database.records[key]
    assert record.best_ms == min(c.median_ms for c in candidates) <= record.default_ms
    tuning_db.save(database, tuning_db.machine_path())

    compiled = compile_model(mod, CPU, "tuned")
    got = compiled.vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, reference_conv(x, weight, 1, 1, 1))
    tuning = compiled.kernels["tuning"]
    assert tuning["tuned_convs"] == 1 and tuning["workloads"] == 1
    assert tuning["digest"] == tuning_db.digest(tuning_db.machine_path())


def test_a_retune_replaces_measured_records_and_prunes_only_when_told_which_workloads_remain():
    def record(ms):
        return tuning_db.Record(ConvTile(4, 2), "a conv", ms, ms, 3)

    previous = tuning_db.TuningDatabase("m", 5, {"kept": record(1.0), "stale": record(2.0), "retuned": record(3.0)})
    workload = SimpleNamespace(summary="a conv")
    measured = {"retuned": (workload, [Candidate(ConvTile(2, 4), lambda: 0.0, [2.5])])}
    merged = to_database(measured, previous, "m", 5, {})
    assert set(merged.records) == {"kept", "stale", "retuned"} and merged.records["retuned"].best_ms == 2.5
    pruned = to_database(measured, previous, "m", 5, {}, keep={"kept", "retuned"})
    assert set(pruned.records) == {"kept", "retuned"}


def test_the_tuned_set_joins_the_study_variants_when_this_machine_has_a_database(tuning_dir):
    def sets():
        plan = build_plan(["resnet18"], ["float", "w4a8"], ["cpu"], "quick", "random")
        return {(e.variant.name, e.kernels) for e in plan}

    assert ("float", "tuned") not in sets()
    tuning_db.save(tuning_db.TuningDatabase("this-machine", 1), tuning_db.machine_path())
    assert sets() == {("float", "builtin"), ("float", "untuned"), ("float", "tuned"), ("w4a8", "builtin")}


def test_a_tuned_result_is_no_longer_current_once_the_database_changes(tuning_dir):
    database = tuning_db.TuningDatabase("this-machine", 1)
    tuning_db.save(database, tuning_db.machine_path())
    (experiment,) = build_plan(["resnet18"], ["float"], ["cpu"], "quick", "random", kernels=["tuned"])
    before = experiment.fingerprint({})
    database.rounds = 2
    tuning_db.save(database, tuning_db.machine_path())
    assert experiment.fingerprint({}) != before


def test_a_corrupt_database_is_one_error_naming_the_file_and_the_fix(tuning_dir):
    path = tuning_db.machine_path()
    path.write_text(
        json.dumps({"schema": tuning_db.SCHEMA, "machine_id": "m", "rounds": 1, "workloads": {"k": {"tile": [9, 9]}}})
    )
    with pytest.raises(QbuildError, match=f"tuning database {path} is unreadable.*fix: delete it"):
        pipeline("tuned", CPU.tvm_target())


def test_the_tuned_set_is_refused_on_cuda():
    from qbuild.targets import cuda_target

    with pytest.raises(QbuildError, match="CPU targets only"):
        pipeline("tuned", cuda_target("sm_90").tvm_target())
