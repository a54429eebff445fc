"""The x86 tensor intrinsic behind the integer convolution: ``vpmaddwd`` on 16-bit operands.

One call computes eight int32 outputs from a pair of input channels: ``C[j] += A[0]*B[j,0] +
A[1]*B[j,1]``. The pair ``A`` (two int16) is broadcast as one 32-bit word, ``B`` is 16
contiguous int16 (eight output channels x the pair), and ``llvm.x86.avx2.pmadd.wd`` multiplies
and adds neighbours exactly: int8 values widened to int16 give products of at most 2**14, so no
saturation can occur (unlike ``vpmaddubsw``, which saturates u8 x s8 pair sums). This is the
fallback for CPUs without AVX-512 VNNI; the operands are widened at compile time (weights) and
in the padding stage (activations), so the inner loop is one broadcast, one multiply-add and
one add per 16 MACs.
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

PMADDWD_8X2 = "qbuild_pmaddwd_8x2_i16"
LANES = 8  # int32 outputs per call
PAIR = 2  # input channels per call


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


def register() -> str:
    """Register the intrinsic once per process; returns its name for ``Schedule.tensorize``."""
    try:
        TensorIntrin.get(PMADDWD_8X2)
    except Exception:  # not registered yet (TensorIntrin.get raises for unknown names)
        TensorIntrin.register(PMADDWD_8X2, _pmaddwd_desc, _pmaddwd_impl)
    return PMADDWD_8X2
