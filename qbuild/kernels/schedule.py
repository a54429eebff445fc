"""Built-in CPU schedules for the fused PrimFuncs of a model: no tuning, one rule per kind.

- ``conv``: a function holding a ``conv2d.CONV_BLOCK``. Output rows of each group of channel
  blocks run in parallel; a register tile (``tiles.ConvTile``: output pixels of a row x channel
  blocks, the vector lanes) accumulates (``cache_write`` to local) across the whole reduction
  (or, with a ``chunk``, the groups run in parallel, each sweeping its output plane once per
  chunk of input channel blocks, the partial sums in a local plane buffer that LLVM keeps in
  registers while a tile's chunk runs);
  the tile is ``tiles.default_tile`` unless a tuning database names one for the conv's
  workload (``conv_workload``); the integer conv's innermost channel group is tensorized
  (``intrin``, ``_tensor_intrinsic``: ``vpdpbusd``, ``vpmaddubsw`` or ``vpmaddwd``; the conv that
  accumulates in int16 keeps its int16 tile local and sums its pairs into a local int32 tile with
  one ``vpmaddwd`` per accumulator, ``conv2d.INT16_SUMS``). The
  elementwise epilogue that FuseOps put in the same function (bias, ReLU, requantize, residual
  add) is inlined into the tile's write-back, so each output is stored once. An AMX conv
  (``conv2d.AMX``, ``_amx_conv``) has a tile of accumulator tiles instead: ``tiles.amx_tiles``,
  three tensorized steps (``amx``: clear, dot, store), its int32 sums stored to a local buffer
  that the epilogue reads.
- ``generic``: everything else (padding, layout transforms, pooling, mean, matmul, elementwise
  chains). Elementwise stages are first inlined into their consumers (one loop nest, no int64
  intermediates in memory); then each nest runs its leading data-parallel loops in parallel and
  vectorizes its innermost data-parallel loop by the widest vector that divides its extent
  (8 lanes on AVX2; 16, else 8, on AVX-512: ``vectors``), moving a
  reduction (pooling window, matmul row) outside those lanes.

TVM 0.27 notes learned here: ``Schedule.vectorize`` and ``Schedule.parallel`` refuse a loop
around a reduction block whose init was already decomposed (vectorize and parallelize first,
then ``decompose_reduction``; the other order made every matmul and pool fall back to scalar
code, a 2048 x 1000 classifier taking 6.4 ms instead of 0.4); a tensor
intrinsic's buffers must declare the scope they match (``local`` for a register tile); a
``reverse_compute_inline`` of a layout transform fails (kept as its own nest); a ``Schedule``
made from a PrimFunc that nothing else holds (``Schedule(func.with_attr(...))``) may rewrite its
statements in place, and those are shared with ``func``, which then changes too: hold the copy
in a variable while scheduling it (``schedule_function``'s parameter does); ``reverse_compute_at``
of a block that reads its producer at a constant index (``halves[..., 0] + halves[..., 1]``)
fails ("TensorRegion pattern match failed"), so the int16 conv keeps its halves in lanes
``2b + h`` and the pair sum reads ``2b`` and ``2b + 1``.

Each function is scheduled on a copy; a rule that fails on some unforeseen shape falls back to
``generic``, then to the function as it was, and the counts of each outcome are kept
(``KernelReport``) so the results say what code actually ran.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import tvm
from tvm import tirx
from tvm.s_tir import Schedule
from tvm.sym import detect_linear_equation

from qbuild.kernels import amx, intrin
from qbuild.kernels.bitserial import PACK_BLOCK
from qbuild.kernels.conv2d import (
    AMX,
    CONV_BLOCK,
    DEPTHWISE,
    DEPTHWISE_TAPS,
    INT16_SUMS,
    PAD_BLOCK,
    SEVEN_BIT,
    SIGNED_BYTES,
    UNSIGNED_BYTES,
)
from qbuild.kernels.tiles import (
    MAX_ACCUMULATORS,
    ConvTile,
    KernelShape,
    amx_tiles,
    candidate_tiles,
    workload_key,
)
from qbuild.kernels.vectors import HALF_WIDTH_LANES, Vectors, of_features

DATA_PAR = 0  # tirx.IterVar.DataPar
SERIAL_TAIL_TASKS = 64  # parallel iterations a nest without lanes keeps when its last two loops stay serial
SERIAL = 0  # tirx.ForKind.SERIAL
# What a schedule primitive raises when its preconditions fail (ScheduleError is a RuntimeError).
SCHEDULE_ERRORS = (RuntimeError, tvm.error.InternalError)


@dataclass
class KernelReport:
    """How many PrimFuncs each rule scheduled (``conv``, ``generic``, ``unscheduled``), how
    many convs took their tile from a tuning database, and how many accumulated in int16."""

    counts: Counter = field(default_factory=Counter)
    tuned_convs: int = 0
    int16_sum_convs: int = 0
    tuning: dict | None = None  # the tuning database compiled with (``qbuild.tuning_db``), if any

    def to_json(self) -> dict:
        return dict(sorted(self.counts.items()))

    def tuning_json(self) -> dict | None:
        """The database and how many convs took their tile from it (None: no database)."""
        return None if self.tuning is None else {**self.tuning, "tuned_convs": self.tuned_convs}


@dataclass(frozen=True)
class ConvWorkload:
    """What a tile is chosen for: a conv block's key (``tiles.workload_key``), its output row
    width, output and input channel blocks (1 for a depthwise conv: no channel reduction), a
    readable summary, the block's name, the channels of an output block, and the rest of its shape
    that the default tile depends on (``tiles.KernelShape``)."""

    key: str
    width: int
    out_blocks: int
    in_blocks: int
    summary: str
    block: str
    out_block: int
    kernel: KernelShape

    @property
    def amx(self) -> bool:
        """Whether the conv's tile runs on AMX tiles (rows x accumulator tiles) rather than vector
        registers (pixels x channel blocks)."""
        return self.block.endswith(AMX)

    def default_tile(self, registers: Vectors) -> ConvTile:
        return self.candidate_tiles(registers)[0]

    def candidate_tiles(self, registers: Vectors) -> list[ConvTile]:
        """The tiles ``qbuild tune`` tries, the default first."""
        if self.amx:
            return amx_tiles(self.width, self.out_blocks, self.out_block)
        return candidate_tiles(self.width, self.out_blocks, self.in_blocks, registers, self.kernel)

    def fits(self, tile: ConvTile) -> bool:
        """Whether ``tile`` can schedule this workload (a tuning database's tile may be from
        another build of it)."""
        if self.amx:
            return tile in amx_tiles(self.width, self.out_blocks, self.out_block)
        return tile.pixels * tile.blocks <= MAX_ACCUMULATORS and tile.fits(self.width, self.out_blocks, self.in_blocks)


def conv_workload(func: tirx.PrimFunc) -> ConvWorkload | None:
    """The conv workload of a fused PrimFunc (None if it holds no qbuild conv)."""
    sch = Schedule(func)
    name = _conv_block_name(sch)
    if name is None:
        return None
    block = sch.get(sch.get_sblock(name))
    extents = [int(iv.dom.extent) for iv in block.iter_vars]
    reduce = [int(iv.dom.extent) for iv in block.iter_vars if int(iv.iter_type) != DATA_PAR]
    operands = " x ".join(dict.fromkeys(str(region.source.dtype) for region in block.reads))
    summary = f"{operands} -> {block.writes[0].source.dtype}: out {tuple(extents[:5])}, reduce {tuple(reduce)}"
    depthwise = name.startswith(CONV_BLOCK + DEPTHWISE)
    in_blocks = 1 if depthwise else reduce[0]  # (c, r, q, ...); a depthwise conv has no c
    floating = str(block.writes[0].source.dtype).startswith("float")
    taps = math.prod(reduce) if depthwise else reduce[1] * reduce[2]  # (r, q), (r, quads, 4) or (c, r, q, ...)
    operand_bytes = 1 if name.endswith(SEVEN_BIT) else 2 if operands == "int16" else 0
    kernel = KernelShape(taps, extents[2], floating, depthwise, operand_bytes)
    key = workload_key(block.script())
    return ConvWorkload(key, extents[3], extents[1], in_blocks, summary, name, extents[4], kernel)


def _extent(sch: Schedule, loop) -> int:
    return int(sch.get(loop).extent)


def _tensor_intrinsic(sch: Schedule, name: str, loops: list, features: frozenset[str]) -> str | None:
    """The intrinsic for an integer conv's innermost (lanes, channel group) step on this CPU:
    ``vpmaddwd`` for int16 channel pairs (AVX2), ``vpdpbusd`` for byte quads (AVX-512 VNNI),
    ``vpmaddubsw`` for byte quads of data known to be at most 127 (AVX2, the ``SEVEN_BIT``
    block), accumulating in int16 for the ``INT16_SUMS`` block; ``sdot`` for signed byte quads
    (AArch64, the ``SIGNED_BYTES`` block); None for a float conv, a conv whose block is not a
    multiple of the lanes, or a CPU without the instruction (plain vector code then)."""
    _n, _o, _y, _x, b, *reduction = loops
    if DEPTHWISE_TAPS in name:
        return _lanewise_intrinsic(_extent(sch, b), features, seven_bit=not name.endswith(UNSIGNED_BYTES))
    if name.endswith(INT16_SUMS):  # lanes: two int16 halves per output channel
        lanes_fit = _extent(sch, b) % (2 * intrin.LANES) == 0
        return intrin.register(intrin.PMADDUBSW_8X4_I16) if lanes_fit and "avx2" in features else None
    if len(reduction) != 5 or _extent(sch, b) % intrin.LANES:  # (c, r, q, group, channel): the integer computes
        return None
    group = _extent(sch, reduction[-1])
    if group == intrin.QUAD and "dotprod" in features and name.endswith(SIGNED_BYTES):
        return intrin.register(intrin.SDOT_4X4)
    if group == intrin.QUAD and "avx512vnni" in features and _extent(sch, b) % intrin.WIDE_LANES == 0:
        return intrin.register(intrin.VPDPBUSD_16X4)
    if group == intrin.PAIR and "avx2" in features:
        return intrin.register(intrin.PMADDWD_8X2)
    if group == intrin.QUAD and "avx512vnni" in features:
        return intrin.register(intrin.VPDPBUSD_8X4)
    if group == intrin.QUAD and "avx2" in features and name.endswith(SEVEN_BIT):
        return intrin.register(intrin.PMADDUBSW_8X4)
    return None


def _schedule_padding(sch: Schedule, registers: Vectors, task=None) -> None:
    """Schedule a conv's padding stage (which also casts, offsets or re-blocks its data): with
    ``task``, inside each parallel task of the conv, for the input rows that task reads while they
    are in cache; else once over the whole input, before the conv. Either way before the conv is
    tensorized: TVM 0.27 cannot copy a schedule whose last primitive was ``tensorize``
    (``Schedule.copy``: "unordered_map::at") until a later one, such as the ``reverse_compute_inline``
    of an epilogue, rebuilds its state, and the generic rule tries each nest on a copy."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if not sch.get(block).name_hint.startswith(PAD_BLOCK):
            continue
        if task is None:
            _generic_nest(sch, block, registers.widths)
        else:
            sch.compute_at(block, task)
            sch.vectorize(sch.get_loops(block)[-1])


def _pads_per_task(sch: Schedule, name: str, reduction: list) -> bool:
    """Whether a conv's tasks each pad their own input rows: a depthwise conv's and a 1x1 conv's
    tasks read each input row once. A 3x3 conv's would pad each row three times. Measured side by
    side (this Xeon, tuned): EfficientNet-Lite0 int8 2.21 -> 1.71 ms and float 4.38 -> 4.11 ms,
    ResNet-50 float and int8 unchanged; padding per task in every conv made ResNet-50 float 4% slower."""
    return name.startswith(CONV_BLOCK + DEPTHWISE) or _extent(sch, reduction[1]) == _extent(sch, reduction[2]) == 1


def _lanewise_intrinsic(block: int, features: frozenset[str], seven_bit: bool) -> str | None:
    """The lane-wise intrinsic of a depthwise byte conv (``conv2d.DEPTHWISE_TAPS``) with channel
    blocks of ``block`` on this CPU: ``vpdpbusd`` with VNNI, ``vpmaddubsw`` on AVX2 where its data
    is at most 127 (``seven_bit``), else None. One call takes a whole block (its four taps lie a
    block apart)."""
    if "avx512vnni" in features and block == intrin.WIDE_LANES:
        return intrin.register(intrin.VPDPBUSD_16X4_LANEWISE)
    if "avx512vnni" in features and block == intrin.LANES:
        return intrin.register(intrin.VPDPBUSD_8X4_LANEWISE)
    if "avx2" in features and block == intrin.LANES and seven_bit:
        return intrin.register(intrin.PMADDUBSW_8X4_LANEWISE)
    return None


def _conv(sch: Schedule, name: str, features: frozenset[str], tile: ConvTile, registers: Vectors) -> None:
    conv = sch.get_sblock(name)
    loops = sch.get_loops(conv)
    halves = name.endswith(INT16_SUMS)  # int16 lanes, two per output channel, summed by the next block
    n, o, y, x, b, *reduction = loops
    tensor_intrinsic = _tensor_intrinsic(sch, name, loops, features)
    xo, xi = sch.split(x, [None, tile.pixels])
    oo, oi = sch.split(o, [None, tile.blocks])
    if tile.chunk:  # a task per channel group; its plane swept once per chunk of input blocks
        chunks, *reduction = [*sch.split(reduction[0], [None, tile.chunk]), *reduction[1:]]
        tasks, sweep = [n, oo], [chunks, y, xo]
    else:  # a task per row of a channel group; each tile takes the whole reduction
        tasks, sweep = [n, oo, y], [xo]
    if tensor_intrinsic:
        bo, bi = sch.split(b, [None, intrin.lanes(tensor_intrinsic)])
        sch.reorder(*tasks, *sweep, *reduction[:-1], xi, oi, bo, bi, reduction[-1])
    else:
        sch.reorder(*tasks, *sweep, *reduction, xi, oi, b)
    task = sch.fuse(*tasks)
    sch.parallel(task)
    per_task = not tile.chunk and _pads_per_task(sch, name, reduction)
    _schedule_padding(sch, registers, task if per_task else None)
    tile_loop = task if tile.chunk else xo
    pair_sum = None
    if halves:  # the tile's int16 sums stay local, summed in pairs into a local int32 tile
        sch.set_scope(conv, 0, "local")
        pair_sum = sch.get_consumers(conv)[0]
        writeback = sch.cache_write(pair_sum, 0, "local")
        sch.reverse_compute_at(pair_sum, tile_loop)
    else:
        writeback = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(writeback, tile_loop)
    if not tensor_intrinsic:
        sch.vectorize(b)
    init = sch.decompose_reduction(conv, sweep[0] if tile.chunk else reduction[0])
    sch.vectorize(sch.get_loops(init)[-1])
    if tensor_intrinsic:
        sch.tensorize(bi, tensor_intrinsic)
        sch.unroll(bo)
    if pair_sum is not None:
        lanes = sch.get_loops(pair_sum)[-1]
        if tensor_intrinsic:
            sch.tensorize(lanes, intrin.register(intrin.PAIR_SUM_8))
        else:
            sch.vectorize(lanes)
    sch.unroll(xi)
    sch.unroll(oi)
    writeback = _inline_epilogue(sch, writeback, tile_loop)
    sch.vectorize(sch.get_loops(writeback)[-1])


def _amx_conv(sch: Schedule, name: str, tile: ConvTile, registers: Vectors) -> None:
    """An AMX conv (``amx``): a parallel task per output row of a group of ``tile.blocks``
    accumulator tiles (one output block of 64 channels, or ``tile.blocks`` blocks of 16); per tile
    of ``tile.pixels`` pixels, the accumulators cleared, one ``dot`` per input channel block and
    kernel position, stored to an int32 tile buffer, and the epilogue written from that."""
    conv = sch.get_sblock(name)
    n, o, y, x, b, c, r, q, p, t = sch.get_loops(conv)
    wide = _extent(sch, b) > amx.COLUMNS  # the tiles side by side in one block of channels
    data = _conv_data(sch.get(conv))
    stride = _row_stride(sch.get(conv), data)
    xo, xi = sch.split(x, [None, tile.pixels])
    if wide:
        sch.reorder(n, o, y, xo, c, r, q, xi, b, p, t)
        sch.parallel(sch.fuse(n, o, y))
    else:
        oo, oi = sch.split(o, [None, tile.blocks])
        sch.reorder(n, oo, y, xo, c, r, q, xi, oi, b, p, t)
        sch.parallel(sch.fuse(n, oo, y))
    _schedule_padding(sch, registers)
    sums = sch.cache_write(conv, 0, "local")  # the tile's int32 sums, which the epilogue reads
    accumulators = sch.cache_write(conv, 0, "local")  # tile registers: described, never in memory
    sch.reverse_compute_at(accumulators, xo)
    sch.reverse_compute_at(sums, xo)
    init = sch.decompose_reduction(conv, c)
    shape = (tile.pixels, tile.blocks, wide)
    tile_loops = 2 if wide else 3  # (pixels, lanes) or (pixels, blocks, lanes)
    sch.tensorize(sch.get_loops(init)[-tile_loops], amx.register("zero", *shape))
    sch.tensorize(xi, amx.register("dot", *shape, stride, data.source.dtype == "int8"))
    sch.tensorize(sch.get_loops(accumulators)[-tile_loops], amx.register("store", *shape))
    sums = _inline_epilogue(sch, sums, xo)
    sch.vectorize(sch.get_loops(sums)[-1])


def _row_stride(conv: "tvm.s_tir.SBlock", data: "tvm.tirx.BufferRegion") -> int:
    """How many input pixels apart a conv block's neighbouring output pixels read (its stride
    along a row): the coefficient of the output column in the data's column index."""
    return int(detect_linear_equation(data.region[3].min, [conv.iter_vars[3].var])[0])


def _conv_data(conv: "tvm.s_tir.SBlock") -> "tvm.tirx.BufferRegion":
    """The region of a conv block's data (its one five-dimensional operand, ``NCHW[c]c``)."""
    return next(region for region in conv.reads if len(region.region) == 5 and region.source.dtype != "int32")


def _inline_epilogue(sch: Schedule, writeback, tile_loop):
    """Fold the chain of elementwise consumers into the tile's write-back while they allow it;
    returns the block that now writes the tile's outputs. A consumer that reads another tensor
    too (a residual add) cannot take the write-back inlined into it from above
    (``reverse_compute_inline`` allows one input): it is moved into the tile loop and the
    write-back inlined into it from below. Without that, the rest of the chain ran as a pass of
    its own over an int32 tensor the size of the output (ResNet-50's residual convs)."""
    while True:
        consumers = sch.get_consumers(writeback)
        if len(consumers) != 1:
            return writeback
        consumer = consumers[0]
        try:
            sch.reverse_compute_inline(consumer)
            continue
        except SCHEDULE_ERRORS:  # not elementwise over the tile (e.g. a layout transform), or two inputs
            pass
        if len(sch.get(consumer).reads) < 2:
            return writeback
        try:
            _inline_other_producers(sch, consumer, writeback)
            sch.reverse_compute_at(consumer, tile_loop)
            sch.compute_inline(writeback)
        except SCHEDULE_ERRORS:
            return writeback
        writeback = consumer


def _inline_other_producers(sch: Schedule, block, writeback) -> None:
    """Inline into ``block`` the whole chain that computes its other input (a residual's casts
    and requantize), producer after producer, until only ``writeback`` and buffers that nothing
    in the function writes are left. Raises a schedule error where a producer cannot be inlined;
    what was inlined by then stays inlined (the function computes the same either way)."""
    while True:
        others = [p for p in sch.get_producers(block) if not sch.get(p).same_as(sch.get(writeback))]
        if not others:
            return
        for producer in others:
            sch.compute_inline(producer)


def _loop_kinds(sch: Schedule, block) -> list[bool] | None:
    """Per loop of a block's nest: data parallel or not (None if loops and iterators differ)."""
    loops = sch.get_loops(block)
    iters = sch.get(block).iter_vars
    if len(loops) != len(iters):
        return None
    return [int(iv.iter_type) == DATA_PAR for iv in iters]


def _generic_nest(sch: Schedule, block, widths: tuple[int, ...]) -> None:
    """Schedule one loop nest: vectorized by the widest of ``widths`` that divides its innermost
    loop if that works (tried on a copy first), else parallel only (``_schedule_nest``)."""
    for vector in (widths, ()):
        try:
            _schedule_nest(sch.copy(), block, vector)
        except SCHEDULE_ERRORS:
            continue
        _schedule_nest(sch, block, vector)
        return


def _schedule_nest(sch: Schedule, block, widths: tuple[int, ...]) -> None:
    """Vector lanes over the innermost data-parallel loop where one of ``widths`` divides it, and
    the outer data-parallel loops fused into one parallel loop. Without lanes, a nest whose
    innermost loop is shorter than a half register (a pack of 4 channels) keeps its last two
    loops serial where the rest still gives ``SERIAL_TAIL_TASKS`` parallel iterations: fused
    too, each element would recompute its indices with divisions."""
    kinds = _loop_kinds(sch, block)
    if not kinds:
        return
    loops = sch.get_loops(block)
    if any(int(sch.get(loop).kind) != SERIAL for loop in loops):
        return  # already scheduled by a specific rule
    lead = 0
    while lead < len(kinds) and kinds[lead]:
        lead += 1
    if lead == 0:
        return
    spatial, reduction = loops[:lead], loops[lead:]
    lanes = next((w for w in widths if _extent(sch, spatial[-1]) % w == 0), None)
    lanes_found = lanes is not None and all(not kind for kind in kinds[lead:]) and len(spatial) > 1
    if lanes_found:
        # Vector lanes over the innermost data-parallel loop (a channel block, a matmul's
        # output row); a reduction runs outside it, each lane accumulating its own output.
        outer, vector = sch.split(spatial[-1], [None, lanes])
        sch.reorder(*spatial[:-1], outer, *reduction, vector)
        sch.vectorize(vector)
        spatial = [*spatial[:-1], outer]
    elif len(spatial) > 2 and _extent(sch, spatial[-1]) < HALF_WIDTH_LANES:
        if math.prod(_extent(sch, loop) for loop in spatial[:-2]) >= SERIAL_TAIL_TASKS:
            spatial = spatial[:-2]
    sch.parallel(sch.fuse(*spatial) if len(spatial) > 1 else spatial[0])
    if lanes_found and reduction:  # after parallel: TVM refuses to parallelize around a decomposed init
        init = sch.decompose_reduction(block, reduction[0])
        sch.vectorize(sch.get_loops(init)[-1])


def _generic(sch: Schedule, registers: Vectors) -> None:
    if not _has_root(sch):
        return
    root = sch.get_sblock("root")
    _inline_intermediates(sch, root)
    for block in sch.get_child_blocks(root):
        _generic_nest(sch, block, registers.widths)


def _inline_intermediates(sch: Schedule, root) -> None:
    """Inline every elementwise stage into its consumer, so a chain of casts, shifts and clamps
    is one loop nest with no intermediate buffers. A conv's padding stays a stage of its own
    (inlined, it would put a bounds test in the innermost loop), and so do a bit-serial conv's
    padding and packing (inlined, each word would be packed again for every output channel) and
    any block a rule has already scheduled (``_scheduled``)."""
    outputs = {sch.get(block).name_hint for block in sch.get_output_blocks(root)}
    for block in sch.get_child_blocks(root):
        name = sch.get(block).name_hint
        if name in outputs or name.startswith((PAD_BLOCK, PACK_BLOCK)) or _scheduled(sch, block):
            continue
        try:
            sch.compute_inline(block)
        except SCHEDULE_ERRORS:  # a reduction, or not elementwise over its consumer
            pass


def _scheduled(sch: Schedule, block) -> bool:
    """Whether a rule has scheduled ``block`` already (a loop of its nest is not serial), such as a
    conv's write-back in the conv's tiles."""
    return any(int(sch.get(loop).kind) != SERIAL for loop in sch.get_loops(block))


def _has_root(sch: Schedule) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except SCHEDULE_ERRORS:
        return False


def _conv_block_name(sch: Schedule) -> str | None:
    if not _has_root(sch):
        return None
    names = [sch.get(block).name_hint for block in sch.get_child_blocks(sch.get_sblock("root"))]
    return next((name for name in names if name.startswith(CONV_BLOCK)), None)


def schedule_function(
    func: tirx.PrimFunc, features: frozenset[str], report: KernelReport, tiles: Mapping[str, ConvTile] | None = None
) -> tirx.PrimFunc:
    """``func`` scheduled by the first rule that succeeds (conv, generic), else unchanged.
    ``features``: the CPU's instruction sets (``vectors.TENSOR_FEATURES``: the intrinsics, and
    the register width, ``vectors``). ``tiles``: a tuning database's conv tiles by workload key
    (the rest get the default tile)."""
    registers = of_features(features)
    workload = conv_workload(func)
    tuned = (tiles or {}).get(workload.key) if workload is not None else None
    if tuned is not None and not workload.fits(tuned):
        tuned = None  # a database for another build of this workload's code: ignored
    rules = [("generic", lambda s: _generic(s, registers))]
    if workload is not None:
        tile = tuned or workload.default_tile(registers)
        conv = (
            (lambda s: _amx_conv(s, workload.block, tile, registers))
            if workload.amx
            else (lambda s: _conv(s, workload.block, features, tile, registers))
        )
        rules.insert(0, ("conv", lambda s: (conv(s), _generic(s, registers))))
    for name, rule in rules:
        sch = Schedule(func)
        try:
            rule(sch)
        except SCHEDULE_ERRORS:
            continue
        report.counts[name] += 1
        report.tuned_convs += name == "conv" and tuned is not None
        report.int16_sum_convs += name == "conv" and workload.block.endswith(INT16_SUMS)
        return sch.mod["main"]
    report.counts["unscheduled"] += 1
    return func


def schedule_pass(
    features: frozenset[str], report: KernelReport, tiles: Mapping[str, ConvTile] | None = None
) -> tvm.transform.Pass:
    """A module pass applying ``schedule_function`` to every PrimFunc of the module."""

    @tvm.transform.module_pass(opt_level=0, name="qbuild.ScheduleCPU")
    def _apply(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        updated = {}
        for gvar, func in mod.functions.items():
            if isinstance(func, tirx.PrimFunc):
                updated[gvar] = schedule_function(
                    func.with_attr("global_symbol", gvar.name_hint), features, report, tiles
                )
        for gvar, func in updated.items():
            mod[gvar] = func
        return mod

    return _apply
