"""The CPU tensor intrinsics behind the integer convolution, one per instruction set (x86, and
AArch64's ``sdot``).

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

``vpmaddubsw`` + ``vpaddw`` (AVX2) on bytes, for data in [0, 127] whose conv sums are known to
fit in int16 (narrow codes: 2-bit activations and weights, and others whose weights are small
enough, ``conv2d``): the pair sums of ``vpmaddubsw`` are accumulated as they are, sixteen int16
lanes (eight output channels x two halves of the quad), and the halves are added into int32 once
per output, after the whole reduction. 32 MACs for one broadcast and two instructions, one of
them a multiply: half the multiplies of the int8 byte path above, the saving fewer bits buy on a
CPU without VNNI.

``vpdpbusd`` (AVX-512 VNNI, on 256-bit registers: AVX512VL; on 512-bit registers sixteen
outputs, ``VPDPBUSD_16X4``, for the 16-channel blocks of an AVX-512 CPU): one call computes eight
int32 outputs from a quad of input channels, ``C[j] += sum_k A[k]*B[j,k]``, with ``A`` four uint8
(broadcast as one 32-bit word) and ``B`` 32 int8 (eight output channels x the quad), accumulating
in the same instruction: 32 MACs per instruction, exact (int32 accumulation, no intermediate
saturation). The activations are made unsigned by adding 128 (``conv2d``), which the compute
takes back out with a per-channel constant. TVM 0.27's own ``dot_16x4_vnni`` intrinsic calls
``llvm.x86.avx512.vpdpbusd.512`` with <16 x i32> operands, which LLVM 20+ rejects ("Call
parameter type does not match function signature!"): the byte operands must be typed as bytes
(here <32 x i8>, or <64 x i8> on zmm).

``sdot`` (AArch64 with the dot products, ``+dotprod``): the same shape on a 128-bit NEON register,
four int32 outputs from a quad of input channels, ``A`` four int8 broadcast as one 32-bit word,
``B`` 16 int8, both signed (``llvm.aarch64.neon.sdot``): no offset, 16 MACs per instruction.

Lane-wise forms (``*_LANEWISE``) of ``vpdpbusd`` and ``vpmaddubsw``, for depthwise convs: a
depthwise conv reduces over no channels, so its lanes (channels) read lane-own data, not one
broadcast group: ``C[j] += sum_k A[k, j] * B[j, k]``, with ``A`` four neighbouring pixels of the
lanes' channels as they lie in the blocked data (``k`` the four taps of a kernel row, each a
block of channels: ``conv2d``) and ``B`` the taps' weights, four int8 per lane, packed so at
compile time. One byte shuffle (``vpermb`` where the CPU has AVX-512 VBMI) puts each lane's four
taps side by side, then the same instruction as above.
"""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

PMADDWD_8X2 = "qbuild_pmaddwd_8x2_i16"
VPDPBUSD_8X4 = "qbuild_vpdpbusd_8x4_u8s8"
PMADDUBSW_8X4 = "qbuild_pmaddubsw_8x4_u7s8"
PMADDUBSW_8X4_I16 = "qbuild_pmaddubsw_8x4_u7s8_acc16"
PAIR_SUM_8 = "qbuild_pair_sum_8_i16"
VPDPBUSD_16X4 = "qbuild_vpdpbusd_16x4_u8s8"  # on 512-bit registers
VPDPBUSD_8X4_LANEWISE = "qbuild_vpdpbusd_8x4_u8s8_lanewise"
VPDPBUSD_16X4_LANEWISE = "qbuild_vpdpbusd_16x4_u8s8_lanewise"
PMADDUBSW_8X4_LANEWISE = "qbuild_pmaddubsw_8x4_u7s8_lanewise"
SDOT_4X4 = "qbuild_sdot_4x4_s8s8"  # AArch64
NEON_LANES = 4  # int32 outputs per sdot (128-bit registers)
LANES = 8  # int32 outputs per call (256-bit registers)
WIDE_LANES = 16  # int32 outputs per call on 512-bit registers
PAIR = 2  # input channels per vpmaddwd call
QUAD = 4  # input channels per vpdpbusd call


def _operand_a(group: int, lanes: int, lanewise: bool) -> tuple[tuple[int, ...], tuple[slice, ...]]:
    """The shape of an intrinsic's ``A`` buffer and its whole region: one group of channels, or
    (``lanewise``) a group of taps for each of ``lanes`` lanes."""
    shape = (group, lanes) if lanewise else (group,)
    return shape, tuple(slice(0, extent) for extent in shape)


def _dot_desc(group: int, a_dtype: str, b_dtype: str, lanes: int, lanewise: bool = False) -> tirx.PrimFunc:
    """What every intrinsic here computes in int32, for ``lanes`` outputs j and ``group`` input
    channels (or taps) k: ``C[j] += sum_k A[k] * B[j, k]``, or, ``lanewise``,
    ``C[j] += sum_k A[k, j] * B[j, k]``."""
    a_shape, a_whole = _operand_a(group, lanes, lanewise)

    def a_index(j, k):
        return (k, j) if lanewise else (k,)

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer(a_shape, a_dtype, offset_factor=1),
        B: T.Buffer((lanes, group), b_dtype, offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[a_whole], B[0:lanes, 0:group])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, group):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[a_index(vi, vk)], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def _int16_dot_desc() -> tirx.PrimFunc:
    """What ``PMADDUBSW_8X4_I16`` computes: ``C[2j + h] += A[2h] * B[j, 2h] + A[2h+1] * B[j, 2h+1]``
    in int16, for ``LANES`` outputs j and the two halves h of a channel quad."""

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((QUAD,), "uint8", offset_factor=1),
        B: T.Buffer((8, QUAD), "int8", offset_factor=1),
        C: T.Buffer((16,), "int16", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:8, 0:4])
            T.writes(C[0:16])
            for lane, t in T.grid(16, 2):
                with T.sblock("update"):
                    vl, vt = T.axis.remap("SR", [lane, t])
                    C[vl] = C[vl] + T.cast(A[vl % 2 * 2 + vt], "int16") * T.cast(B[vl // 2, vl % 2 * 2 + vt], "int16")

    return desc


def _pair_sum_desc() -> tirx.PrimFunc:
    """What ``PAIR_SUM_8`` computes: ``D[j] = C[2j] + C[2j+1]``, int16 lanes summed into int32."""

    @T.prim_func(s_tir=True)
    def desc(
        C: T.Buffer((16,), "int16", offset_factor=1, scope="local"),
        D: T.Buffer((8,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16])
            T.writes(D[0:8])
            for j in T.serial(0, 8):
                with T.sblock("update"):
                    vj = T.axis.remap("S", [j])
                    D[vj] = T.cast(C[vj * 2], "int32") + T.cast(C[vj * 2 + 1], "int32")

    return desc


def _pair_sum_impl() -> tirx.PrimFunc:
    """``vpmaddwd`` by ones: one instruction for the eight pair sums."""

    @T.prim_func(s_tir=True)
    def impl(
        C: T.Buffer((16,), "int16", offset_factor=1, scope="local"),
        D: T.Buffer((8,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16])
            T.writes(D[0:8])
            D[T.ramp(T.int32(0), 1, 8)] = _pair_sums(C.vload([0], "int16x16"))

    return impl


def _pmaddwd_step(acc, a, b):
    """vpmaddwd (int16 pair sums in int32), add."""
    return acc + T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), a, b, dtype="int32x8")


def _vpdpbusd(lanes: int):
    """The vpdpbusd step on ``lanes`` int32 lanes (8: ymm, 16: zmm): acc += the four u8 x s8
    products of each lane, in one instruction."""
    intrinsic = f"llvm.x86.avx512.vpdpbusd.{32 * lanes}"

    def step(acc, a, b):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(intrinsic), acc, a, b, dtype=f"int32x{lanes}")

    return step


def _sdot(acc, a, b):
    """sdot: acc += the four s8 x s8 products of each of four int32 lanes, in one instruction."""
    intrinsic = T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8")
    return T.call_llvm_pure_intrin(intrinsic, acc, a, b, dtype="int32x4")


def _byte_pairs(a, b):
    """vpmaddubsw: the u8 x s8 products of neighbouring bytes summed in pairs, sixteen int16."""
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"), a, b, dtype="int16x16")


def _pair_sums(pairs):
    """vpmaddwd by ones: sixteen int16 summed in neighbouring pairs, eight int32."""
    return T.call_llvm_pure_intrin(
        T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), pairs, T.broadcast(T.int16(1), 16), dtype="int32x8"
    )


def _pmaddubsw_step(acc, a, b):
    """vpmaddubsw (u8 x s8 pair sums in int16), vpmaddwd by ones (pairs of pairs in int32), add."""
    return acc + _pair_sums(_byte_pairs(a, b))


def _pmaddubsw_int16_step(acc, a, b):
    """vpmaddubsw, added to int16 accumulators as it is."""
    return acc + _byte_pairs(a, b)


def _impl(group: int, a_dtype: str, b_dtype: str, step, accumulators: str, lanewise: bool = False) -> tirx.PrimFunc:
    """An intrinsic over ``group`` input channels: the group of ``A`` broadcast to every lane as one
    32-bit word (``lanewise``: ``A`` loaded as one vector and shuffled to a group per lane), ``B`` loaded as one
    vector, ``step(accumulators, a, b)`` the new accumulators (both operands typed as ``b_dtype``
    vectors, as the LLVM intrinsics declare them; the accumulators a vector of type
    ``accumulators``)."""
    acc_dtype, lanes = accumulators.split("x")
    lanes = int(lanes)
    outputs = lanes if acc_dtype == "int32" else lanes // 2  # int16 accumulators: two halves per output
    vector = f"{b_dtype}x{outputs * group}"
    a_shape, a_whole = _operand_a(group, outputs, lanewise)

    def operand_a(A):
        if lanewise:  # (group, lanes) -> (lanes, group): element e of the operand is A[e % group, e // group]
            order = [e % group * outputs + e // group for e in range(outputs * group)]
            return T.reinterpret(T.Shuffle([A.vload([0, 0], f"{a_dtype}x{outputs * group}")], order), dtype=vector)
        word = T.reinterpret(A.vload([0], f"{a_dtype}x{group}"), dtype="int32")
        return T.reinterpret(T.broadcast(word, outputs), dtype=vector)

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer(a_shape, a_dtype, offset_factor=1),
        B: T.Buffer((outputs, group), b_dtype, offset_factor=1),
        C: T.Buffer((lanes,), acc_dtype, offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[a_whole], B[0:outputs, 0:group])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = step(C.vload([0], accumulators), operand_a(A), B.vload([0, 0], vector))

    return impl


_OPERANDS = {PAIR: ("int16", "int16"), QUAD: ("uint8", "int8")}  # (A, B) dtypes per channel group
# (channel group, step, int32 lanes) of each dot intrinsic; vpmaddubsw is described as vpdpbusd
# is: the same sums for data <= 127.
_STEPS = {
    PMADDWD_8X2: (PAIR, _pmaddwd_step, LANES),
    VPDPBUSD_8X4: (QUAD, _vpdpbusd(LANES), LANES),
    VPDPBUSD_16X4: (QUAD, _vpdpbusd(WIDE_LANES), WIDE_LANES),
    PMADDUBSW_8X4: (QUAD, _pmaddubsw_step, LANES),
    VPDPBUSD_8X4_LANEWISE: (QUAD, _vpdpbusd(LANES), LANES),
    VPDPBUSD_16X4_LANEWISE: (QUAD, _vpdpbusd(WIDE_LANES), WIDE_LANES),
    PMADDUBSW_8X4_LANEWISE: (QUAD, _pmaddubsw_step, LANES),
    SDOT_4X4: (QUAD, _sdot, NEON_LANES),
}
SIGNED = (SDOT_4X4,)  # int8 x int8 operands, not _OPERANDS' u8 x s8
LANEWISE = (VPDPBUSD_8X4_LANEWISE, VPDPBUSD_16X4_LANEWISE, PMADDUBSW_8X4_LANEWISE)


def lanes(name: str) -> int:
    """The lanes (of the conv block) one call of intrinsic ``name`` covers: its int32 lanes, or 16
    int16 halves for the int16-accumulating one."""
    return 2 * LANES if name == PMADDUBSW_8X4_I16 else _STEPS[name][2]


def register(name: str) -> str:
    """Register intrinsic ``name`` once per process; returns the name for ``Schedule.tensorize``."""
    try:
        TensorIntrin.get(name)
    except Exception:  # not registered yet (TensorIntrin.get raises for unknown names)
        TensorIntrin.register(name, *_definition(name))
    return name


def _definition(name: str) -> tuple[tirx.PrimFunc, tirx.PrimFunc]:
    """(description, implementation) of intrinsic ``name``."""
    if name == PMADDUBSW_8X4_I16:
        return _int16_dot_desc(), _impl(QUAD, "uint8", "int8", _pmaddubsw_int16_step, "int16x16")
    if name == PAIR_SUM_8:
        return _pair_sum_desc(), _pair_sum_impl()
    group, step, width = _STEPS[name]
    lanewise = name in LANEWISE
    operands = ("int8", "int8") if name in SIGNED else _OPERANDS[group]
    return (
        _dot_desc(group, *operands, width, lanewise),
        _impl(group, *operands, step, f"int32x{width}", lanewise),
    )
