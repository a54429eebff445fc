"""Sub-byte kernels on their own: bit-exactness of a model's bit-serial convs, and their speed
against the int8 conv of the same shape, side by side.

``check_layers`` takes the layer records of a quantized model (``QuantizedModule.layers``),
builds each distinct bit-serial conv once with qbuild's kernels, runs it on random integers of
its encodings and compares with the exact NumPy conv. ``compare_kernels`` times, per conv
shape, the int8 conv on 8-bit values (blocked layout, as it runs inside a network) and, for
each of several precisions, the two kernels a layer of that precision may run: the bit-serial
conv, and the byte conv on the precision's values (which accumulates in int16 where its sums
fit, ``qbuild.kernels.conv2d``), in interleaved rounds, and reports each one's ratio to int8.
A precision's goal is judged per shape on the faster of its two kernels (a quantized layer
takes one by its count of plane pairs and its target, ``qbuild.kernels.auto_bitserial_pairs``, set
from these timings: W1A1 bit-serial, W2A2 and wider bytes; bytes throughout on AMX). Not a test:
nothing here asserts a speed.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from qbuild.bitpack import Encoding
from qbuild.kernels import MAX_AUTO_PAIRS
from qbuild.schema.kinds import SUBBYTE_KERNELS as SCHEMA

CHECK_SEED = 7
# ResNet-50's conv shapes, (in channels, size, out channels, kernel, stride).
RESNET50_SHAPES = (
    (64, 56, 64, 3, 1),
    (128, 28, 128, 3, 1),
    (256, 14, 256, 3, 1),
    (512, 7, 512, 3, 1),
    (256, 56, 64, 1, 1),
    (64, 56, 256, 1, 1),
    (1024, 14, 256, 1, 1),
)
# Bit-serial precisions timed against int8: (name, activation encoding, weight encoding).
PRECISIONS = (
    ("W1A1", Encoding(1, "unsigned"), Encoding(1, "bipolar")),
    ("W2A2", Encoding(2, "unsigned"), Encoding(2, "signed")),
    ("W4A4", Encoding(4, "unsigned"), Encoding(4, "signed")),
)
# The goals, as (precision, at most this times the int8 conv of the same shape): W1A1 convs at
# least twice as fast as int8; W2A2 at least as fast (its whole network must beat int8's).
GOALS = (("W1A1", 0.5), ("W2A2", 1.0))
BITSERIAL, BYTES = "bit-serial", "bytes"  # a precision's two kernels, named after it: "W2A2 bytes"


def random_values(rng: np.random.Generator, encoding: Encoding, shape: tuple[int, ...]) -> np.ndarray:
    """Uniformly drawn integers of ``encoding``'s range (random signs for bipolar)."""
    if encoding.kind == "bipolar":
        return rng.choice(np.array([-1, 1]), size=shape)
    return rng.integers(encoding.low, encoding.high + 1, size=shape)


def _build(emit: Callable, data_shape: tuple[int, ...]):
    """A one-op Relax module on an int8 input, compiled with qbuild's kernels; its VM."""
    from tvm import relax

    from qbuild.compile import compile_model
    from qbuild.targets import resolve_target

    bb = relax.BlockBuilder()
    data = relax.Var("data", relax.TensorType(data_shape, "int8"))
    with bb.function("main", [data]):
        with bb.dataflow():
            out = bb.emit_output(emit(bb, data))
        bb.emit_func_output(out)
    return compile_model(bb.get(), resolve_target("cpu"), "builtin").vm


def _bitserial(activation: Encoding, weight: Encoding, weights: np.ndarray, strides, padding):
    from qbuild.kernels.bitserial import BitserialConv

    spec = BitserialConv(activation, weight, int(weights.shape[0]), tuple(strides), tuple(padding))
    packed = spec.pack(weights)
    return lambda bb, data: spec.emit(bb, data, packed)


def check_layers(layers: list[dict], seed: int = CHECK_SEED) -> dict:
    """Run each distinct bit-serial conv among ``layers`` on random integers and compare it with
    the exact conv: how many were checked, and which (if any) differ."""
    import tvm

    from qbuild.kernels.bitserial import reference

    distinct: dict[str, dict] = {}
    for layer in layers:
        if layer.get("kernel") == "bitserial":
            key = repr(
                [
                    layer[k]
                    for k in ("input_shape", "weight_shape", "strides", "padding", "input_encoding", "weight_encoding")
                ]
            )
            distinct.setdefault(key, layer)
    rng = np.random.default_rng(seed)
    mismatches = []
    for layer in distinct.values():
        activation, weight = Encoding(**layer["input_encoding"]), Encoding(**layer["weight_encoding"])
        data = random_values(rng, activation, tuple(layer["input_shape"])).astype(np.int8)
        weights = random_values(rng, weight, tuple(layer["weight_shape"]))
        vm = _build(_bitserial(activation, weight, weights, layer["strides"], layer["padding"]), data.shape)
        got = vm["main"](tvm.runtime.tensor(data)).numpy()
        expected = reference(data, weights, tuple(layer["strides"]), tuple(layer["padding"]))
        if not np.array_equal(got, expected):
            mismatches.append({"layer": layer["name"], "max_abs_difference": int(np.abs(got - expected).max())})
    return {
        "bitserial_layers": sum(1 for layer in layers if layer.get("kernel") == "bitserial"),
        "distinct_convs_checked": len(distinct),
        "exact": len(distinct) - len(mismatches),
        "mismatches": mismatches,
        "seed": seed,
    }


@dataclass
class Timed:
    """One kernel of one shape, with its samples."""

    shape: tuple[int, ...]
    name: str
    run: Callable[[], float]  # one timed call, in ms
    samples_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)


def _byte_conv(weights: np.ndarray, stride: int, padding: int, registers, data_max: int = 127):
    """The int8 conv as it runs inside a quantized network: data and output in the blocked layout
    of this CPU's ``registers``, the data (after a ReLU and a requantize) in [0, ``data_max``], so
    the byte compute (``vpmaddubsw``, ``vpdpbusd`` with AVX-512 VNNI, AMX's ``tdpbssd`` where the
    channels allow) runs, accumulating in int16 where ``data_max`` and the weights allow. (In a
    network, AMX convs hand each other 64-channel blocks; here the data comes in the registers'
    blocks, which the AMX conv's padding stage re-blocks.)"""
    from tvm import relax

    from qbuild.kernels import conv2d
    from qbuild.relax.ranges import largest_channel_sum

    out_channels, in_channels, k, _ = weights.shape
    ob, ib = registers.block(out_channels), registers.block(in_channels)
    blocked = weights.reshape(out_channels // ob, ob, in_channels // ib, ib, k, k).transpose(0, 2, 4, 5, 3, 1)
    weight_sum = largest_channel_sum(weights, "OIHW")
    call = relax.op.nn.conv2d  # legalized here: ConvertLayout does not take a conv that is blocked already
    return lambda bb, data: conv2d.legalize(
        bb,
        bb.normalize(
            call(
                data,
                relax.const(np.ascontiguousarray(blocked).astype(np.int8)),
                strides=stride,
                padding=padding,
                data_layout=f"NCHW{ib}c",
                kernel_layout=f"OIHW{ib}i{ob}o",
                out_layout=f"NCHW{ob}c",
                out_dtype="int32",
            )
        ),
        registers,
        data_max=lambda _: data_max,
        weight_sum=lambda _: weight_sum,
    )


def _timer(vm, data: np.ndarray, executions: int) -> Callable[[], float]:
    import tvm

    evaluator = vm.time_evaluator("main", tvm.cpu(), number=executions, repeat=1)
    argument = tvm.runtime.tensor(data)
    return lambda: float(evaluator(argument).mean * 1e3)


def _blocked(data: np.ndarray, block: int) -> np.ndarray:
    """NCHW -> NCHW[block]c."""
    n, channels, height, width = data.shape
    return np.ascontiguousarray(data.reshape(n, channels // block, block, height, width).transpose(0, 1, 3, 4, 2))


def compare_kernels(
    shapes=RESNET50_SHAPES, rounds: int = 5, executions: int = 10, say: Callable[[str], None] = print
) -> list[Timed]:
    """Build the int8 conv and each ``PRECISIONS`` precision's two convs (bit-serial, bytes) for
    every shape, then time them in interleaved rounds."""
    from qbuild.kernels.vectors import of_target
    from qbuild.targets import resolve_target

    rng = np.random.default_rng(0)
    registers = of_target(resolve_target("cpu").tvm_target())
    timed: list[Timed] = []
    for shape in shapes:
        channels, size, out_channels, k, stride = shape
        padding = k // 2
        block = registers.block(channels)
        say(f"building {channels}x{size}x{size} -> {out_channels}, {k}x{k}/{stride} ...")
        weights8 = rng.integers(-127, 128, (out_channels, channels, k, k))
        data8 = rng.integers(0, 128, (1, channels // block, size, size, block)).astype(np.int8)
        vm = _build(_byte_conv(weights8, stride, padding, registers), data8.shape)
        timed.append(Timed(shape, "int8", _timer(vm, data8, executions), []))
        for name, activation, weight in PRECISIONS:
            weights = random_values(rng, weight, (out_channels, channels, k, k))
            data = random_values(rng, activation, (1, channels, size, size)).astype(np.int8)
            vm = _build(_bitserial(activation, weight, weights, (stride, stride), (padding,) * 4), data.shape)
            timed.append(Timed(shape, f"{name} {BITSERIAL}", _timer(vm, data, executions), []))
            blocked = _blocked(data, block)
            vm = _build(_byte_conv(weights, stride, padding, registers, activation.high), blocked.shape)
            timed.append(Timed(shape, f"{name} {BYTES}", _timer(vm, blocked, executions), []))
    for round_index in range(rounds):
        for entry in timed:
            entry.samples_ms.append(entry.run())
        say(f"round {round_index + 1}/{rounds} done")
    return timed


def record(timed: list[Timed], rounds: int, executions: int, env: dict) -> dict:
    """The comparison as a results document: per shape, each kernel's median and ratio to int8,
    and the rule ``subbyte_kernel="auto"`` follows (``MAX_AUTO_PAIRS``) beside them."""
    rows = []
    for shape in dict.fromkeys(entry.shape for entry in timed):
        int8 = next(e for e in timed if e.shape == shape and e.name == "int8")
        for entry in (e for e in timed if e.shape == shape):
            rows.append(
                {
                    "shape": dict(zip(("in_channels", "size", "out_channels", "kernel", "stride"), shape)),
                    "kernel": entry.name,
                    "median_ms": entry.median_ms,
                    "ratio_to_int8": entry.median_ms / int8.median_ms,
                }
            )
    goals = []
    for name, at_most in GOALS:
        best: dict = {}  # per shape: the faster of the precision's kernels (ratio, kernel)
        for row in rows:
            if row["kernel"].split()[0] == name:
                key = repr(row["shape"])
                best[key] = min(best.get(key, (np.inf, "")), (row["ratio_to_int8"], row["kernel"]))
        if best:
            worst_ratio, worst_kernel = max(best.values())
            goals.append(
                {
                    "kernel": name,
                    "goal_at_most": at_most,
                    "worst_ratio": worst_ratio,
                    "worst_kernel": worst_kernel,
                    "met_on": sum(r <= at_most for r, _ in best.values()),
                    "shapes": len(best),
                    "faster_kernel": dict(Counter(kernel for _, kernel in best.values())),
                }
            )
    return {
        "schema": SCHEMA,
        "rounds": rounds,
        "executions": executions,
        "environment": env,
        "kernels": rows,
        "goals": goals,
        "max_auto_pairs": MAX_AUTO_PAIRS,
    }


def render(document: dict) -> str:
    """The comparison as a plain-text table."""
    lines = [f"{'conv (C x size -> O, k/s)':<28} {'kernel':<16} {'median ms':>10} {'vs int8':>8}"]
    for row in document["kernels"]:
        s = row["shape"]
        shape = f"{s['in_channels']}x{s['size']} -> {s['out_channels']}, {s['kernel']}/{s['stride']}"
        lines.append(f"{shape:<28} {row['kernel']:<16} {row['median_ms']:>10.3f} {row['ratio_to_int8']:>7.2f}x")
    for goal in document["goals"]:
        lines.append(
            f"{goal['kernel']} <= {goal['goal_at_most']}x int8: met on {goal['met_on']}/{goal['shapes']} "
            f"shapes (worst {goal['worst_ratio']:.2f}x, by {goal['worst_kernel']}; the faster kernel per "
            f"shape: {goal['faster_kernel']})"
        )
    return "\n".join(lines)


def save(root: Path, machine_id: str, document: dict) -> Path:
    """Write it where the report finds it: <root>/<machine>/side-by-side/subbyte-kernels.json."""
    from qbuild.results import write_result

    path = Path(root) / machine_id / "side-by-side" / "subbyte-kernels.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_result(path, document)
    return path
