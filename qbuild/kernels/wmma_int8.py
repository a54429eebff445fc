"""An int8 x int8 -> int32 matmul-shaped PrimFunc (an int8 conv read as a matmul, or a split
conv's chunked matmul) on the int8 tensor cores through wmma ``m16n16k16``, with a tile sized to
its shape.

The function is first normalised to ``C[S, I, J] += A[S, I, K] * B[S, J, K]`` (dlight's index
maps: ``I`` and ``J`` the output pixels and channels, in the order of the function's operands;
``K`` input channels x window) and padded to whole tiles. Each thread block computes a
``rows x cols`` tile of C; its warps form a grid, each warp a 2 x 2 block of 16 x 16 fragments.
Per step of the reduction the block copies a ``rows x depth`` slice of A and a ``cols x depth``
slice of B into shared memory, each 16-deep part of a slice on its own (where the source runs
along the tile's rows, as NCHW activations run along pixels, a warp's threads take adjacent rows,
so that their loads coalesce), then every warp runs ``depth / 16`` fragment multiply-adds on it;
the int32 tile goes back through shared memory, where the fused epilogue (bias, requantize,
residual) reads it.

Why not dlight's ``MatmulInt8Tensorization``, which ResNet-50's int8 build used until now: its
tile is 128 x 128 with a reduction step of 16 (one ``mma`` per warp and fragment between two
barriers: the block waits on its global loads four times as often as with a step of 64), and
its software pipelining cannot be kept (TVM 0.27's ``InjectSoftwarePipeline`` fails on wmma
fragments). A 128-wide tile also pads ResNet's 64-channel convs and its 7 x 7 = 49-pixel
stage to twice their work or more; here such a side gets a 64-wide tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx

FRAGMENT = 16  # wmma m16n16k16
WARP_FRAGMENTS = 2  # a warp computes 2 x 2 fragments: 32 x 32 of C
WARP_SIDE = FRAGMENT * WARP_FRAGMENTS
WARP = 32
# Bytes of the reduction one thread copies per step into shared memory: 16 (one 128-bit load)
# gives gathered copies (im2col windows, padding) an int32x16 index vector that TVM's CUDA code
# generator cannot print.
LOAD_BYTES = 4


@dataclass(frozen=True)
class Tile:
    """A thread block's share of C (``rows x cols``) and its reduction step (``depth``)."""

    rows: int
    cols: int
    depth: int

    def __post_init__(self) -> None:
        if self.rows % WARP_SIDE or self.cols % WARP_SIDE or self.depth % FRAGMENT:
            raise ValueError(f"tile {self}: rows and cols must be multiples of {WARP_SIDE}, depth of {FRAGMENT}")

    @property
    def warps(self) -> tuple[int, int]:
        return self.rows // WARP_SIDE, self.cols // WARP_SIDE


def choose_tile(rows: int, cols: int, depth: int) -> Tile:
    """The tile for a matmul of ``rows x cols`` outputs over ``depth``: 128 on a side that fills
    it, 64 on one of 64 or fewer (ResNet-50's 49-pixel stage, its 64-channel convs); the deepest
    reduction step of 64, 32 or 16 that divides the depth (a split 3x3 conv's chunks of 288 take
    32: padded to steps of 64 they would do 11% more work), else 16."""
    step = next((s for s in (64, 32) if depth % s == 0), FRAGMENT)
    return Tile(64 if rows <= 64 else 128, 64 if cols <= 64 else 128, step)


def schedule(func: tirx.PrimFunc) -> s_tir.Schedule | None:
    """``func`` on the int8 tensor cores with ``choose_tile``'s tile; None where it is no
    int8 x int8 -> int32 matmul or a step does not apply."""
    from tvm.s_tir.dlight.gpu import matmul
    from tvm.s_tir.tensor_intrin.cuda import get_wmma_intrin_group

    sch = s_tir.Schedule(func)
    blocks = matmul.get_reduction_blocks(sch, sch.get_child_blocks(sch.get_sblock("root")))
    if blocks is None:
        return None
    main = blocks[0]
    if matmul.get_index_map(sch.get(main)) is None or tuple(matmul.get_in_out_dtypes(sch.get(main))) != (
        "int8",
        "int32",
    ):
        return None  # no int8 matmul (reindexing a reduction of one tensor would raise)
    # 1. C[S, I, J] += A[S, I, K] * B[S, J, K], padded to whole tiles (the maps are read off the
    # block once its operands are reindexed to its own iterators).
    reindexed = [sch.reindex(main, ("read", 0)), sch.reindex(main, ("read", 1)), sch.reindex(main, ("write", 0))]
    maps = matmul.get_index_map(sch.get(main))
    if maps is None:
        return None
    block_map, a_map, b_map, c_map = maps
    sch.transform_layout(reindexed[0], ("write", 0), a_map)
    sch.transform_layout(reindexed[1], ("write", 0), b_map)
    sch.transform_layout(reindexed[2], ("read", 0), c_map)
    sch.transform_block_layout(main, block_map)
    _, i, j, k = sch.get_loops(main)
    extents = [sch.get(loop).extent for loop in (i, j, k)]
    if not all(isinstance(e, tirx.IntImm) for e in extents):
        return None
    tile = choose_tile(*(e.value for e in extents))
    sch.pad_einsum(main, [1, tile.rows, tile.cols, tile.depth])
    # 2. Fragments, warps, blocks.
    batch, i, j, k = sch.get_loops(main)
    i, fi = sch.split(i, [None, FRAGMENT])
    j, fj = sch.split(j, [None, FRAGMENT])
    k, fk = sch.split(k, [None, FRAGMENT])
    sch.reorder(i, j, k, fi, fj, fk)
    fragment = sch.blockize(fi)
    warps_i, warps_j = tile.warps
    bi, wi, ii = sch.split(i, [None, warps_i, WARP_FRAGMENTS])
    bj, wj, jj = sch.split(j, [None, warps_j, WARP_FRAGMENTS])
    ko, ki = sch.split(k, [None, tile.depth // FRAGMENT])
    sch.reorder(bi, bj, wi, wj, ko, ki, ii, jj)
    sch.bind(batch, "blockIdx.z")
    sch.bind(sch.fuse(bi, bj), "blockIdx.x")
    warp = sch.fuse(wi, wj)
    sch.bind(warp, "threadIdx.y")
    # 3. A and B slices into shared memory, the whole block copying, LOAD_BYTES of the reduction a thread.
    for operand in (0, 1):
        copy = sch.cache_read(fragment, operand, "shared.dyn")
        sch.compute_at(copy, ko)
        matmul.auto_inline_producers(sch, copy)  # the im2col window and padding read while copying
        row, k_loop = sch.get_loops(copy)[-2:]
        k_loop, vec = sch.split(k_loop, [None, LOAD_BYTES])
        if rows_contiguous(sch.get(copy)):  # NCHW activations: a warp's threads take adjacent pixels
            sch.reorder(k_loop, row, vec)
            flat = sch.fuse(k_loop, row)
        else:
            flat = sch.fuse(row, k_loop)
        _, ty, tx = sch.split(flat, [None, warps_i * warps_j, WARP])
        sch.bind(ty, "threadIdx.y")
        sch.bind(tx, "threadIdx.x")
        sch.vectorize(vec)
        # Each 16-deep slice of the tile on its own, 16 bytes a row: a fragment starts on a 256-byte
        # boundary (wmma's load_matrix_sync wants 256-bit aligned rows; in rows of the whole depth
        # every odd slice would start 16 bytes off).
        sch.transform_layout(copy, ("write", 0), lambda b, r, k: (b, k // FRAGMENT, r, k % FRAGMENT))
    # 4. Fragments from shared memory, the accumulator back through it.
    intrinsics = get_wmma_intrin_group(
        load_scope="shared.dyn", store_scope="shared.dyn", in_dtype="int8", out_dtype="int32", trans_b=True
    )
    loads = [
        sch.cache_read(fragment, operand, scope) for operand, scope in ((0, "wmma.matrix_a"), (1, "wmma.matrix_b"))
    ]
    for load in loads:
        sch.compute_at(load, ki)
    staged = sch.cache_write(fragment, 0, "shared.dyn")
    sch.storage_align(staged, 0, axis=-2, factor=16, offset=4)
    accumulator = sch.cache_write(fragment, 0, "wmma.accumulator")
    sch.reverse_compute_at(accumulator, warp)
    sch.reverse_compute_at(staged, warp)
    init = sch.decompose_reduction(fragment, ko)
    try:
        for load, name in zip(loads, ("load_a", "load_b")):
            _tensorize_2d(sch, load, intrinsics[name])
        _tensorize_2d(sch, accumulator, intrinsics["store"])
        sch.tensorize(sch.get_loops(sch.get_child_blocks(init)[0])[-2], intrinsics["init"])
        sch.tensorize(sch.get_loops(main)[-3], intrinsics["compute"])
    except tvm.TVMError:
        return None
    # 5. The epilogue reads the staged tile, a warp's 32 threads 4 values each per step.
    matmul.auto_inline_consumer_chain(sch, staged)
    _, tx, vec = sch.split(sch.fuse(*sch.get_loops(staged)[-2:]), [None, WARP, 4])
    sch.bind(tx, "threadIdx.x")
    sch.vectorize(vec)
    return sch


def rows_contiguous(copy: tirx.SBlock) -> bool:
    """Whether a copy into shared memory reads its source along the tile's rows (the pixels of
    NCHW activations) rather than along the reduction: the source's last index uses the row
    iterator and not the reduction one."""
    import tvm_ffi

    row, depth = (iv.var for iv in copy.iter_vars[-2:])
    used: list[tirx.Var] = []
    for region in copy.reads:
        tvm_ffi.structural_walk(region.region[-1].min, (tirx.Var, used.append), order="post")
    return any(v.same_as(row) for v in used) and not any(v.same_as(depth) for v in used)


def _tensorize_2d(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, intrinsic: str) -> None:
    """Tile a copy's last two loops into 16 x 16 fragments (unrolled) and tensorize each."""
    i, j = sch.get_loops(block)[-2:]
    io, ii = sch.split(i, [None, FRAGMENT])
    jo, ji = sch.split(j, [None, FRAGMENT])
    sch.reorder(io, jo, ii, ji)
    sch.unroll(io)
    sch.unroll(jo)
    sch.tensorize(ii, intrinsic)
