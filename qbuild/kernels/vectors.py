"""The CPU's vector registers, as qbuild's CPU kernels are shaped for them.

AVX2 has sixteen 256-bit registers: 8 lanes of fp32 or int32. AVX-512 has thirty-two 512-bit
registers: 16 lanes. The width decides three things: a conv's channel block (its output channels
are one register's lanes, ``conv2d``), the lanes the generic schedule vectorizes by
(``schedule``), and how many accumulators a conv's register tile may hold (``tiles``); with VNNI
the integer conv's inner step is one ``vpdpbusd`` per register (``intrin``).

Measured on ResNet-50, batch 1 (Intel Xeon with AVX-512 VNNI, 2 threads, side by side with ONNX
Runtime): 8-lane blocks with ``vpdpbusd`` on ymm took 50.0 ms (float) and 19.0 ms (int8); 16-lane
blocks 38.8 and 13.5 ms (``vpdpbusd`` on zmm); with, besides, 4 x 4 register tiles, 31.8 and 12.3
ms (ONNX Runtime: 27.2 fp32, 10.0 int8).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# The instruction sets the kernels have a form for: the integer conv's intrinsics (AVX2, AVX-512
# VNNI, AMX; on AArch64 the dot products, ``dotprod``: sdot) and the register width (AVX-512
# Foundation). An AArch64 CPU gets AVX2's shapes (8-lane blocks: two NEON registers).
TENSOR_FEATURES = ("avx2", "avx512f", "avx512vnni", "amx-int8", "dotprod")

HALF_WIDTH_LANES = 8  # 32-bit lanes of a 256-bit register


@dataclass(frozen=True)
class Vectors:
    """``lanes`` 32-bit lanes per register, ``registers`` of them; ``avx2``: it is an x86 CPU with
    AVX2, whose integer conv intrinsics exist (``intrin``) and whose multiplies take a memory
    operand (``tiles``); ``vnni``: the CPU has AVX-512 VNNI (``vpdpbusd``), so int8 convs take
    the offset byte compute (``conv2d``); ``amx``: it has AMX tiles too, where those convs' tiles
    run (``amx``); ``sdot``: it is an AArch64 CPU with the dot products, so int8 convs take the
    signed byte compute (``conv2d``)."""

    lanes: int
    registers: int
    avx2: bool = False
    vnni: bool = False
    amx: bool = False
    sdot: bool = False

    @property
    def blocks(self) -> tuple[int, ...]:
        """Channel block sizes, widest first: the lanes, then halves of them down to 1."""
        sizes = [self.lanes]
        while sizes[-1] > 1:
            sizes.append(sizes[-1] // 2)
        return tuple(sizes)

    def block(self, channels: int) -> int:
        """The widest block that divides ``channels``."""
        return next(b for b in self.blocks if channels % b == 0)

    @property
    def widths(self) -> tuple[int, ...]:
        """The lanes a loop is vectorized by, widest first: a whole register, and on AVX-512 also
        a 256-bit half (a classifier row of 1000 outputs divides by 8, not by 16)."""
        return tuple(b for b in self.blocks if b >= HALF_WIDTH_LANES)

    @property
    def max_accumulators(self) -> int:
        """A register tile's accumulators at most: the registers less a weight vector and a
        broadcast value."""
        return self.registers - 2

    def with_vnni(self, vnni: bool | None) -> Vectors:
        """The same registers with ``vnni`` overridden (None: as they are); no AMX without VNNI."""
        return self if vnni is None else replace(self, vnni=vnni, amx=self.amx and vnni)


AVX2 = Vectors(lanes=8, registers=16, avx2=True)
AVX512 = Vectors(lanes=16, registers=32, avx2=True)
WIDEST_LANES = AVX512.lanes


def cpu_features(target) -> frozenset[str]:
    """Which of ``TENSOR_FEATURES`` LLVM's view of the CPU of ``target`` (a ``tvm.target.Target``)
    includes."""
    from tvm.target import codegen

    return frozenset(f for f in TENSOR_FEATURES if codegen.target_has_features(f, target))


def of_features(features: frozenset[str]) -> Vectors:
    """The registers of a CPU with ``features`` (``cpu_features``): AVX-512 where it has
    ``avx512f``, else AVX2's width (also what a CPU without AVX2 gets: plain vector code)."""
    registers = AVX512 if "avx512f" in features else AVX2
    return replace(
        registers,
        avx2="avx2" in features,
        vnni="avx512vnni" in features,
        amx={"avx512vnni", "amx-int8"} <= features,
        sdot="dotprod" in features,
    )


def of_target(target) -> Vectors:
    """The registers of the CPU of ``target`` (a ``tvm.target.Target``)."""
    return of_features(cpu_features(target))
