"""The x86 tensor intrinsics behind the integer convolution, one per instruction set.

``vpmaddwd`` (AVX2) on 16-bit operands: one call computes eight int32 outputs from a pair of
input channels, ``C[j] += A[0]*B[j,0] + A[1]*B[j,1]``. The pair ``A`` (two int16) is broadcast as
one 32-bit word, ``B`` is 16 contiguous int16 (eight output channels x the pair), and
``llvm.x86.avx2.pmadd.wd`` multiplies and adds neighbours exactly: int8 values widened to int16
give products of at most 2**14, so no saturation can occur (unlike ``vpmaddubsw``, which
saturates u8 x s8 pair sums). This is the path for CPUs without AVX-512 VNNI; the operands are
widened at compile time (weights) and in the padding stage (activations), so the inner loop is
one broadcast, one multiply-add and one add per 16 MACs.

``vpmaddubsw`` + ``vpmaddwd`` (AVX2) on bytes, for data known to lie in [0, 127]: the same
operands as ``vpdpbusd`` below; ``vpmaddubsw`` forms eight x two int16 pair sums of u8 x s8
products (at most 2 x 127 x 128 = 32512: no saturation for such data, which is why it is used
for nothing else) and ``vpmaddwd`` by ones adds the pairs into int32: 32 MACs for one broadcast
and three instructions, against 16 per two with ``vpmaddwd`` on int16.

``vpdpbusd`` (AVX-512 VNNI, on 256-bit registers: AVX512VL): one call computes eight int32
outputs from a quad of input channels, ``C[j] += sum_k A[k]*B[j,k]``, with ``A`` four uint8
(broadcast as one 32-bit word) and ``B`` 32 int8 (eight output channels x the quad), accumulating
in the same instruction: 32 MACs per instruction, exact (int32 accumulation, no intermediate
saturation). The activations are made unsigned by adding 128 (``conv2d``), which the compute
takes back out with a per-channel constant. TVM 0.27's own ``dot_16x4_vnni`` intrinsic calls
``llvm.x86.avx512.vpdpbusd.512`` with <16 x i32> operands, which LLVM 20+ rejects ("Call
parameter type does not match function signature!"): the byte operands must be typed as bytes
(here <32 x i8>).
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

PMADDWD_8X2 = "qbuild_pmaddwd_8x2_i16"
VPDPBUSD_8X4 = "qbuild_vpdpbusd_8x4_u8s8"
PMADDUBSW_8X4 = "qbuild_pmaddubsw_8x4_u7s8"
LANES = 8  # int32 outputs per call
PAIR = 2  # input channels per vpmaddwd call
QUAD = 4  # input channels per vpdpbusd call


@T.prim_func(s_tir=True)
def _pmaddwd_desc(
    A: T.Buffer((2,), "int16", offset_factor=1),
    B: T.Buffer((8, 2), "int16", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1, scope="local"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:2], B[0:8, 0:2])
        T.writes(C[0:8])
        for i in T.serial(0, 8):
            for k in T.serial(0, 2):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _pmaddwd_impl(
    A: T.Buffer((2,), "int16", offset_factor=1),
    B: T.Buffer((8, 2), "int16", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1, scope="local"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:2], B[0:8, 0:2])
        T.writes(C[0:8])
        pair = T.reinterpret(A.vload([0], "int16x2"), dtype="int32")
        a = T.reinterpret(T.broadcast(pair, 8), dtype="int16x16")
        b = B.vload([0, 0], "int16x16")
        C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], "int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), a, b, dtype="int32x8"
        )


@T.prim_func(s_tir=True)
def _vpdpbusd_desc(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((8, 4), "int8", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1, scope="local"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        for i in T.serial(0, 8):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _vpdpbusd_impl(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((8, 4), "int8", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1, scope="local"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        quad = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        a = T.reinterpret(T.broadcast(quad, 8), dtype="int8x32")
        b = B.vload([0, 0], "int8x32")
        C[T.ramp(T.int32(0), 1, 8)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.256"), C.vload([0], "int32x8"), a, b,
            dtype="int32x8",
        )


@T.prim_func(s_tir=True)
def _pmaddubsw_impl(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((8, 4), "int8", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1, scope="local"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        quad = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        a = T.reinterpret(T.broadcast(quad, 8), dtype="int8x32")
        b = B.vload([0, 0], "int8x32")
        pairs = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"), a, b, dtype="int16x16")
        C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], "int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), pairs, T.broadcast(T.int16(1), 16), dtype="int32x8"
        )


# The vpmaddubsw pair shares vpdpbusd's description: the same arithmetic, exact for data <= 127.
_INTRINSICS = {PMADDWD_8X2: (_pmaddwd_desc, _pmaddwd_impl), VPDPBUSD_8X4: (_vpdpbusd_desc, _vpdpbusd_impl),
               PMADDUBSW_8X4: (_vpdpbusd_desc, _pmaddubsw_impl)}


def register(name: str) -> str:
    """Register intrinsic ``name`` once per process; returns the name for ``Schedule.tensorize``."""
    try:
        TensorIntrin.get(name)
    except Exception:  # not registered yet (TensorIntrin.get raises for unknown names)
        TensorIntrin.register(name, *_INTRINSICS[name])
    return name
