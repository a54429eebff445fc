"""Intel AMX: the int8 conv's tile of output pixels x channels in the CPU's tile registers.

A CPU with AMX (Sapphire Rapids and later) has eight tile registers of up to 16 rows x 64 bytes
and instructions that add to an int32 tile C (M rows x 16 columns) the product of a byte tile A
(M rows x 64 bytes; ``tdpbssd`` int8, ``tdpbusd`` uint8) and an int8 tile B (16 rows x 64 bytes,
each row four input channels of 16 output channels: ``vpdpbusd``'s operand order): M x 16 x 64
multiply-adds in one instruction, where ``vpdpbusd`` on zmm does 16 x 4. The data is read as it
is, signed or not: no offset.

The conv maps onto it directly (``conv2d``): a tile row is one output pixel, its 64 bytes 64
input channels of the pixel's input (data in blocks of 64 channels: as the AMX conv before it
wrote it, ``layouts``, else re-blocked in the padding stage); B is the weights of 64 input
channels x 16 output channels at one kernel position (re-blocked at compile time to ``(O/o,
I/64, KH, KW, 16, o, 4)`` for output blocks of o = 16 or 64 channels); C accumulates over the
input channel blocks and kernel positions. A conv tile is ``rows`` pixels of an output row x
``blocks`` (at most 4) accumulator tiles (tiles 0-3), each its own output block of 16 channels
or (``wide``) side by side in one block of 64; each step loads A once (tile 4) and each tile's
B (tiles 5 and 6 in turn). Rows are strided: a stride-2 conv's pixels are two input pixels
apart, which ``tileloadd``'s row stride expresses.

Three intrinsics per tile shape, in the conv's loop nest (``schedule``): ``zero`` (configure the
tiles where the thread's configuration differs, and clear the accumulators) where the reduction
starts, ``dot`` per input channel block and kernel position, ``store`` (accumulators to the tile's
int32 buffer) before the epilogue reads them. The accumulators live in tile registers between the
three: the conv's accumulation buffer is only described, never read or written (LLVM's
immediate-operand AMX intrinsics act on the registers named by number). ``ldtilecfg`` on every
tile took a fifth of the time of ResNet-50's 1x1 convs of 64 input channels (one ``dot`` per tile):
``zero`` reads the configuration back (``sttilecfg``) and loads it only when it differs (the
thread's first tile, or after a conv of another row count), and the tiles are never released,
so the configuration carries over from tile to tile and conv to conv (ResNet-50 int8: 8.0 -> 7.1
ms).

TVM 0.27 notes learned here: a description's block iterators must come in the order of the
scheduled block's iterators (``o, x, b``), bound to loops in the loop order (``x, o, b``); the
loops of extent 1 that ``decompose_reduction`` and ``reverse_compute_at`` create are dropped, so
a description with a loop of one pixel or one block matches nothing (``tiles.amx_tiles`` offers
none); buffers whose tile region has unit dimensions between the others (the weights'
``(blocks, 1, 1, 1, ...)``) are described at full rank; ``T.decl_buffer`` gives an intrinsic a
scratch buffer of its own (the tile configuration).

Linux hands a process the tile registers only on request (``arch_prctl(ARCH_REQ_XCOMP_PERM)``);
``allowed()`` asks once per process, and without the permission the CPU is treated as having no
AMX (an AMX instruction would end the process with SIGILL).

Measured on one core of the Intel Xeon (AVX-512 VNNI + AMX, 2.6 GHz nominal): 4 to 6 independent
``tdpbusd`` chains ran at 1.8-2.0 int8 TOP/s, bit-exact against NumPy.
"""

from __future__ import annotations

import ctypes
import functools
import struct

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from qbuild.kernels.tiles import AMX_BLOCKS, AMX_COLUMNS

DEPTH = 64  # bytes of a tile row: input channels per step
COLUMNS = AMX_COLUMNS  # int32 columns of an accumulator tile: output channels (one 16-lane block)
QUAD = 4  # input channels per int32 word of B
A_TILE = AMX_BLOCKS  # the accumulators are tiles 0 .. AMX_BLOCKS - 1, then A, then two B in turn
B_TILES = (A_TILE + 1, A_TILE + 2)
FEATURES = ("amx-tile", "amx-int8")  # LLVM's names; /proc/cpuinfo says amx_tile, amx_int8
MATTR = tuple(f"+{feature}" for feature in FEATURES)  # what a target with AMX lists in its mattr

_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18
_SYS_ARCH_PRCTL = 158  # x86-64


@functools.cache
def allowed() -> bool:
    """Whether this process may use the tile registers: the CPU has AMX (``/proc/cpuinfo``) and
    Linux granted the permission asked for here (once per process; it holds for every thread)."""
    from qbuild.environment import cpu_flags

    if not {"amx_tile", "amx_int8"} <= set(cpu_flags()):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0


def _config_words(rows: int) -> tuple[int, ...]:
    """``ldtilecfg``'s 64-byte operand as 8 int64 words: palette 1; A and C tiles ``rows`` rows,
    the B tiles 16; every used tile's rows 64 bytes."""
    used = [rows] * (A_TILE + 1) + [DEPTH // QUAD] * len(B_TILES)
    raw = (
        bytes([1])
        + bytes(15)
        + struct.pack("<8H", *[DEPTH] * len(used), *[0] * (8 - len(used)))
        + bytes(16)
        + bytes(used + [0] * (8 - len(used)))
        + bytes(8)
    )
    return struct.unpack("<8q", raw)


def _intrin(*args, dtype: str = "void"):
    """A call of LLVM intrinsic ``llvm.x86.<args[0]>`` with the rest as operands."""
    name, *operands = args
    return T.call_llvm_intrin(dtype, f"llvm.x86.{name}", *operands)


def _tile(number: int):
    return T.uint8(number)


def _layout(blocks: int, wide: bool) -> tuple[int, int]:
    """The accumulators' channel blocks and lanes in ``(1, blocks, 1, rows, lanes)``: each tile
    its own block of 16 channels, or (``wide``) the tiles side by side in one block of
    ``blocks`` x 16 channels (a conv whose output is ``NCHW64c``)."""
    return (1, blocks * COLUMNS) if wide else (blocks, COLUMNS)


def _zero(rows: int, blocks: int, wide: bool) -> tuple[tirx.PrimFunc, tirx.PrimFunc]:
    """Accumulators C[0, j, 0, x, b] = 0 (wide: C[0, 0, 0, x, l]) for ``rows`` pixels x and
    ``blocks`` tiles."""
    nb, nl = _layout(blocks, wide)

    @T.prim_func(s_tir=True)
    def desc(c: T.handle) -> None:
        C = T.match_buffer(c, (1, nb, 1, rows, nl), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads()
            T.writes(C[0, 0:nb, 0, 0:rows, 0:nl])
            if wide:
                for x, lane in T.grid(rows, nl):
                    with T.sblock("init"):
                        vx, vl = T.axis.remap("SS", [x, lane])
                        C[0, 0, 0, vx, vl] = 0
            else:
                for x, j, b in T.grid(rows, nb, nl):
                    with T.sblock("init"):
                        vj, vx, vb = T.axis.remap("SSS", [j, x, b])
                        C[0, vj, 0, vx, vb] = 0

    w0, _, w2, w3, _, _, w6, _ = _config_words(rows)

    @T.prim_func(s_tir=True)
    def impl(c: T.handle) -> None:
        C = T.match_buffer(
            c,
            (1, nb, 1, rows, nl),
            "int32",
            offset_factor=1,
            scope="local",
            strides=[T.int32(), T.int32(), T.int32(), T.int32(), T.int32()],
        )
        with T.sblock("root"):
            T.reads()
            T.writes(C[0, 0:nb, 0, 0:rows, 0:nl])
            config = T.decl_buffer((8,), "int64", scope="local")
            T.evaluate(_intrin("sttilecfg", config.access_ptr("w")))
            if config[0] != w0 or config[2] != w2 or config[3] != w3 or config[6] != w6:
                config[0] = T.int64(w0)
                config[1] = T.int64(0)
                config[2] = T.int64(w2)
                config[3] = T.int64(w3)
                config[4] = T.int64(0)
                config[5] = T.int64(0)
                config[6] = T.int64(w6)
                config[7] = T.int64(0)
                T.evaluate(_intrin("ldtilecfg", config.access_ptr("r")))
            for j in T.unroll(blocks):
                T.evaluate(_intrin("tilezero", T.Cast("uint8", j)))

    return desc, impl


def _dot(rows: int, blocks: int, wide: bool, stride: int, signed: bool) -> tuple[tirx.PrimFunc, tirx.PrimFunc]:
    """C[0, j, 0, x, b] (wide: C[0, 0, 0, x, 16 j + b]) += sum over 64 channels of
    A[x * stride, channel] x B[j, .., channel / 4, b, channel % 4] (wide: B[0, .., channel / 4,
    16 j + b, channel % 4]): one step of the reduction for ``rows`` pixels ``stride`` apart and
    ``blocks`` tiles of 16 output channels. A is int8 (``signed``: ``tdpbssd``) or uint8 (``tdpbusd``)."""
    span = (rows - 1) * stride + 1
    groups = DEPTH // QUAD
    nb, nl = _layout(blocks, wide)
    data = "int8" if signed else "uint8"
    instruction = "tdpbssd" if signed else "tdpbusd"

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (span, DEPTH), data, offset_factor=1)
        B = T.match_buffer(b, (nb, 1, 1, 1, groups, nl, QUAD), "int8", offset_factor=1)
        C = T.match_buffer(c, (1, nb, 1, rows, nl), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0, 0:nb, 0, 0:rows, 0:nl], A[0:span, 0:DEPTH], B[0:nb, 0, 0, 0, 0:groups, 0:nl, 0:QUAD])
            T.writes(C[0, 0:nb, 0, 0:rows, 0:nl])
            if wide:
                for x, lane, p, t in T.grid(rows, nl, groups, QUAD):
                    with T.sblock("update"):
                        vx, vl, vp, vt = T.axis.remap("SSRR", [x, lane, p, t])
                        C[0, 0, 0, vx, vl] = C[0, 0, 0, vx, vl] + T.cast(
                            A[vx * stride, vp * QUAD + vt], "int32"
                        ) * T.cast(B[0, 0, 0, 0, vp, vl, vt], "int32")
            else:
                for x, j, n, p, t in T.grid(rows, nb, nl, groups, QUAD):
                    with T.sblock("update"):
                        vj, vx, vn, vp, vt = T.axis.remap("SSSRR", [j, x, n, p, t])
                        C[0, vj, 0, vx, vn] = C[0, vj, 0, vx, vn] + T.cast(
                            A[vx * stride, vp * QUAD + vt], "int32"
                        ) * T.cast(B[vj, 0, 0, 0, vp, vn, vt], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        a_row = T.int32()
        b_block = T.int32()
        A = T.match_buffer(a, (span, DEPTH), data, offset_factor=1, strides=[a_row, 1])
        B = T.match_buffer(
            b,
            (nb, 1, 1, 1, groups, nl, QUAD),
            "int8",
            offset_factor=1,
            strides=[b_block, T.int32(), T.int32(), T.int32(), nl * QUAD, QUAD, 1],
        )
        C = T.match_buffer(
            c,
            (1, nb, 1, rows, nl),
            "int32",
            offset_factor=1,
            scope="local",
            strides=[T.int32(), T.int32(), T.int32(), T.int32(), T.int32()],
        )
        with T.sblock("root"):
            T.reads(C[0, 0:nb, 0, 0:rows, 0:nl], A[0:span, 0:DEPTH], B[0:nb, 0, 0, 0, 0:groups, 0:nl, 0:QUAD])
            T.writes(C[0, 0:nb, 0, 0:rows, 0:nl])
            T.evaluate(_intrin("tileloadd64", _tile(A_TILE), A.access_ptr("r"), T.Cast("int64", a_row * stride)))
            for j in T.unroll(blocks):
                T.evaluate(
                    _intrin(
                        "tileloadd64",
                        T.Cast("uint8", B_TILES[0] + j % 2),
                        B.access_ptr("r", offset=j * (COLUMNS * QUAD if wide else b_block)),
                        T.int64(nl * QUAD),
                    )
                )
                T.evaluate(_intrin(instruction, T.Cast("uint8", j), _tile(A_TILE), T.Cast("uint8", B_TILES[0] + j % 2)))

    return desc, impl


def _store(rows: int, blocks: int, wide: bool) -> tuple[tirx.PrimFunc, tirx.PrimFunc]:
    """D = C: the accumulators to the tile's buffer (of C's layout). The tiles stay configured
    for the thread's next tile (``_zero``)."""
    nb, nl = _layout(blocks, wide)

    @T.prim_func(s_tir=True)
    def desc(c: T.handle, d: T.handle) -> None:
        C = T.match_buffer(c, (1, nb, 1, rows, nl), "int32", offset_factor=1, scope="local")
        D = T.match_buffer(d, (1, nb, 1, rows, nl), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0, 0:nb, 0, 0:rows, 0:nl])
            T.writes(D[0, 0:nb, 0, 0:rows, 0:nl])
            if wide:
                for x, lane in T.grid(rows, nl):
                    with T.sblock("store"):
                        vx, vl = T.axis.remap("SS", [x, lane])
                        D[0, 0, 0, vx, vl] = C[0, 0, 0, vx, vl]
            else:
                for j, x, b in T.grid(nb, rows, nl):
                    with T.sblock("store"):
                        vj, vx, vb = T.axis.remap("SSS", [j, x, b])
                        D[0, vj, 0, vx, vb] = C[0, vj, 0, vx, vb]

    @T.prim_func(s_tir=True)
    def impl(c: T.handle, d: T.handle) -> None:
        d_block = T.int32()
        d_row = T.int32()
        C = T.match_buffer(
            c,
            (1, nb, 1, rows, nl),
            "int32",
            offset_factor=1,
            scope="local",
            strides=[T.int32(), T.int32(), T.int32(), T.int32(), T.int32()],
        )
        D = T.match_buffer(
            d,
            (1, nb, 1, rows, nl),
            "int32",
            offset_factor=1,
            scope="local",
            strides=[T.int32(), d_block, T.int32(), d_row, 1],
        )
        with T.sblock("root"):
            T.reads(C[0, 0:nb, 0, 0:rows, 0:nl])
            T.writes(D[0, 0:nb, 0, 0:rows, 0:nl])
            for j in T.unroll(blocks):
                T.evaluate(
                    _intrin(
                        "tilestored64",
                        T.Cast("uint8", j),
                        D.access_ptr("w", offset=j * (COLUMNS if wide else d_block)),
                        T.Cast("int64", d_row * 4),
                    )
                )

    return desc, impl


_SHAPES = {"zero": _zero, "dot": _dot, "store": _store}


def register(kind: str, *shape: int) -> str:
    """Register the ``kind`` intrinsic ("zero", "dot" or "store") for a tile of ``shape`` (rows,
    blocks, wide, and for "dot" the stride and whether the data is signed) once per process;
    returns its name for ``Schedule.tensorize``."""
    name = f"qbuild_amx_{kind}_" + "_".join(str(int(value)) for value in shape)
    try:
        TensorIntrin.get(name)
    except Exception:  # not registered yet (TensorIntrin.get raises for unknown names)
        TensorIntrin.register(name, *_SHAPES[kind](*shape))
    return name
