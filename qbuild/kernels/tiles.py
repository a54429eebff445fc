"""The register tile of a blocked convolution: the knobs of the conv schedule.

A tile is ``pixels`` neighbouring output pixels of one row x ``blocks`` output channel blocks
(each block one vector register's lanes, ``vectors``). Every accumulator of the tile stays
in a register across the reduction; each broadcast input value feeds ``blocks`` vector
multiply-adds and each weight vector ``pixels`` of them.

``chunk`` says how much of the reduction a register tile takes in one go. 0 (the default): the
whole of it, the tile written once; a parallel task is one output row of ``blocks`` blocks, and
every tile of the row streams all of that group's weights again (for a 3x3 conv of 256
channels, 4 blocks x 74 kB: from L2, the bottleneck). ``chunk`` = k > 0: k input channel blocks
at a time over the whole output plane of the group (a parallel task), the partial sums kept in a
plane-sized buffer: each chunk's weights (k x 9 x 1 kB for a 3x3 conv of 4 blocks) are then
read from L1 by every tile of the plane. The plane buffer is read and written once per chunk.
Measured on ResNet-50's 14 x 14 3x3 convs (float and int8, side by side): 0.77-0.80x the time of
the whole-reduction tile; on others from 0.8x to 1.1x. It is the default of float 3x3 convs
whose partial sums stay in L2 with 32 registers (``float_tile``) or in L1 with 16
(``_chunked_in_l1``), and on 16 registers of byte and 1 x 1 int16 convs whose weights would
leave L1 (``one_pixel_tile``); elsewhere a knob for ``qbuild tune``.

With 16 vector registers (AVX2) the tile must leave room for the weight vectors and the
broadcast value: at most ``Vectors.max_accumulators`` (14) accumulators, and LLVM spills well
before that on the integer path (its machine combiner reassociated the adds of the unrolled
channel pairs; qbuild's kernels compile with it off there, ``pipeline.llvm_options``). AVX-512
has 32 registers (30 accumulators at most).

Measured on ResNet-50's conv shapes (AMD EPYC, AVX2, 2 threads, side by side): 4 pixels x 2
blocks took 0.68-0.88x the time of 8 x 1 on rows of 56 and 28; 2 x 4 took 0.74-0.96x the time
of 7 x 1 on rows of 14; rows of 7 have only 7 x 1 (7 x 2 spills: 1.0-1.3x). Byte convs (``vpmaddubsw``)
and 1 x 1 int16 convs later took one pixel of up to 8 blocks (``one_pixel_tile``). With AVX-512's
registers (Intel Xeon, ResNet-50 side by side) 4 x 4, else 7 x 2, took ResNet-50 from 38.8 to
31.8 ms (float) and from 13.5 to 12.3 ms (int8) against 4 x 2 / 2 x 4; the float convs whose
weights would stream from L2 then took ``float_tile``'s tiles (ResNet-50 float 32.5 -> 29.7 ms
on an Emerald Rapids VM, own workers side by side), and odd block counts ``_odd_blocks_tile``'s.
``default_tile`` encodes that; ``qbuild.tune`` measures every ``candidate_tiles`` entry per conv
and keeps the fastest in a tuning database, which ``schedule`` then reads by ``workload_key``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from qbuild.kernels.vectors import AVX2, AVX512, Vectors
from qbuild.schema.tuning import tile_label

MAX_ACCUMULATORS = AVX512.max_accumulators  # any CPU's register tile at most (one CPU's: Vectors.max_accumulators)
AMX_ROWS = 16  # pixels of an AMX tile at most: a tile register's rows
AMX_BLOCKS = 4  # accumulator tiles at most: the tile registers less A and two B (``amx``)
AMX_COLUMNS = 16  # int32 columns (output channels) of an accumulator tile
MAX_OUTPUTS = max(MAX_ACCUMULATORS, AMX_ROWS * AMX_BLOCKS)  # pixels x blocks of any tile, AMX's included
MIN_ACCUMULATORS = 4  # fewer: the multiply-add latency is exposed, never the fastest
CHUNKS = (1, 4)  # input channel blocks per pass over the plane that the tuner tries
PLANE_BYTES = 512 * 1024  # a chunked tile's partial sums at most (float on AVX-512, integer on AVX2): half of a 1 MB L2
MIN_DEPTHWISE_ROW = 14  # the narrowest output row on which a depthwise conv takes one block per tile
ODD_ACCUMULATORS = 14  # an odd-blocks tile's accumulators at most (7 x 2's: no spills on the integer path)
ODD_BLOCKS = ODD_ACCUMULATORS // 2  # an odd-blocks tile's blocks at most (two pixels each)
DEEP_BLOCKS = 32  # input blocks from which a float 1x1 conv's 4 x 4 tile streams 128 kB of weights per tile
BYTE_BLOCKS = 8  # a one-pixel AVX2 tile's blocks at most: 8 accumulators, a broadcast (bytes: a temporary, the ones)
L1_WEIGHT_BYTES = 16 * 1024  # a tile's weights at most that stay in L1 over the whole reduction: half a 32 kB L1
L1_PLANE_BYTES = 32 * 1024  # a chunked float tile's partial sums at most on 16 registers: a 32 kB L1


@dataclass(frozen=True)
class ConvTile:
    """``pixels`` output pixels of a row x ``blocks`` output channel blocks, taking ``chunk``
    input channel blocks of the reduction per pass over the output plane (0: all of it)."""

    pixels: int
    blocks: int
    chunk: int = 0

    def __post_init__(self) -> None:
        if self.pixels < 1 or self.blocks < 1 or self.chunk < 0:
            raise ValueError(
                f"a conv tile needs at least one pixel and one block, and a chunk of 0 or more, not {self}"
            )
        if self.pixels * self.blocks > MAX_OUTPUTS:
            raise ValueError(
                f"{self} needs {self.pixels * self.blocks} accumulators; at most "
                f"{MAX_OUTPUTS} fit in the vector or tile registers"
            )

    def fits(self, width: int, out_blocks: int, in_blocks: int) -> bool:
        """Whether the tile divides a row of ``width`` pixels and ``out_blocks`` channel blocks,
        and its chunk (if any) the ``in_blocks`` input channel blocks into more than one pass."""
        chunk_fits = self.chunk == 0 or (in_blocks % self.chunk == 0 and self.chunk < in_blocks)
        return width % self.pixels == 0 and out_blocks % self.blocks == 0 and chunk_fits

    def to_json(self) -> list[int]:
        """[pixels, blocks], then the chunk if there is one."""
        return [self.pixels, self.blocks] + ([self.chunk] if self.chunk else [])

    def label(self) -> str:
        """ "4x2", or "4x2/4" for 4 input channel blocks per pass."""
        return tile_label(self.to_json())


def _divisors(n: int, at_most: int) -> list[int]:
    """The divisors of ``n`` up to ``at_most``, ascending."""
    return [d for d in range(1, min(n, at_most) + 1) if n % d == 0]


def candidate_tiles(
    width: int, out_blocks: int, in_blocks: int, registers: Vectors = AVX2, kernel: KernelShape | None = None
) -> list[ConvTile]:
    """The default tile (``default_tile``), then every tile that divides the row and the channel
    blocks with ``MIN_ACCUMULATORS`` to ``registers.max_accumulators`` accumulators, each whole
    and in the ``CHUNKS`` that divide the input channel blocks."""
    default = default_tile(width, out_blocks, registers, in_blocks, kernel)
    most = registers.max_accumulators
    shapes = [
        (p, b) for p in _divisors(width, most) for b in _divisors(out_blocks, most) if MIN_ACCUMULATORS <= p * b <= most
    ]
    tiles = [ConvTile(p, b, chunk) for p, b in shapes for chunk in (0, *CHUNKS)]
    return [default] + [tile for tile in tiles if tile != default and tile.fits(width, out_blocks, in_blocks)]


@dataclass(frozen=True)
class KernelShape:
    """What else a conv's default tile depends on: its kernel's taps (3 x 3: 9), its output's
    height, whether it computes in float, whether it is depthwise, and the bytes of each integer
    operand it multiplies on AVX2: 1 for bytes (``conv2d.SEVEN_BIT``: channel quads of uint8 x
    int8, ``vpmaddubsw``), 2 for int16 (channel pairs, ``vpmaddwd``), 0 for any other compute."""

    taps: int = 1
    height: int = 1
    floating: bool = False
    depthwise: bool = False
    operand_bytes: int = 0


def default_tile(
    width: int, out_blocks: int, registers: Vectors = AVX2, in_blocks: int = 1, kernel: KernelShape | None = None
) -> ConvTile:
    """The untuned choice (see the module doc): with 32 registers 4 x 4, else 7 x 2, else for an
    odd number of blocks ``_odd_blocks_tile``'s; then 4 x 2, else 2 x 4, else the widest row
    (``_widest_row``: at most 8 pixels) x 1 block. With 32 registers, a float conv whose weights
    would stream from L2 takes ``float_tile``'s, and a depthwise conv of rows of
    ``MIN_DEPTHWISE_ROW`` or more the widest row x 1 block: each block is a plane of its own, and
    a tile of several reads several planes at once (EfficientNet-Lite0's depthwise convs of rows
    of 56 and 112: float 0.49-0.69x the time of 7 x 2 / 4 x 3, int8 0.92-0.95x). On AVX2's 16
    registers, byte convs and 1 x 1 int16 convs take ``one_pixel_tile``'s, and float convs whose
    partial sums stay in L1 their tile one input block per pass (``_chunked_in_l1``)."""
    kernel = kernel or KernelShape()
    wide = _wide(registers)
    row = _widest_row(width)
    if wide and kernel.depthwise and width >= MIN_DEPTHWISE_ROW and row >= MIN_ACCUMULATORS:
        return ConvTile(row, 1)
    chosen = float_tile(width, out_blocks, registers, in_blocks, kernel) or one_pixel_tile(
        width, out_blocks, registers, in_blocks, kernel
    )
    if chosen is not None:
        return chosen
    for tile in (ConvTile(4, 4), ConvTile(7, 2)) if wide else ():
        if tile.fits(width, out_blocks, in_blocks=1):  # whole-reduction tiles: any input blocks
            return tile
    odd = _odd_blocks_tile(width, out_blocks) if wide and out_blocks % 2 else None
    tiles = (*((odd,) if odd else ()), ConvTile(4, 2), ConvTile(2, 4))
    tile = next((tile for tile in tiles if tile.fits(width, out_blocks, in_blocks=1)), ConvTile(row, 1))
    return _chunked_in_l1(tile, width, registers, in_blocks, kernel)


def _wide(registers: Vectors) -> bool:
    """Whether the CPU has AVX-512's 32 registers (else AVX2's 16)."""
    return registers.registers >= AVX512.registers


def _partial_sums(kernel: KernelShape, width: int, blocks: int, registers: Vectors) -> int:
    """The bytes of a chunked tile's partial sums over its group's output plane (int32 or fp32)."""
    return kernel.height * width * blocks * registers.lanes * 4


def _chunked_in_l1(tile: ConvTile, width: int, registers: Vectors, in_blocks: int, kernel: KernelShape) -> ConvTile:
    """A float conv's ``tile`` on an AVX2 CPU's 16 registers, one input block per pass over the
    plane where the kernel is wider than 1 x 1 over several input blocks and the plane's partial
    sums stay in L1 (``L1_PLANE_BYTES``); else ``tile`` as it is. ResNet-50's float 3x3 convs
    (AMD EPYC, AVX2, each alone): 0.81x and 0.83x the time of the whole-reduction tile at 14 x 14
    and 7 x 7; at 28 x 28 and 56 x 56 (50 and 200 kB of partial sums) one block per pass gained
    nothing."""
    if _wide(registers) or not (registers.avx2 and kernel.floating) or kernel.depthwise:
        return tile
    if kernel.taps == 1 or in_blocks < 2:
        return tile
    if _partial_sums(kernel, width, tile.blocks, registers) > L1_PLANE_BYTES:
        return tile
    return ConvTile(tile.pixels, tile.blocks, 1)


def _widest_row(width: int) -> int:
    """The most pixels of a row that a one-block tile takes: the widest divisor of at most 8."""
    return max(_divisors(width, 8))


def _odd_blocks_tile(width: int, out_blocks: int) -> ConvTile | None:
    """For an odd number of output blocks (3, 5, 7, 9, 15: EfficientNet's 24 to 240 channels): the
    most blocks that divide them, up to ``ODD_BLOCKS``, and the most pixels that keep the tile
    within ``ODD_ACCUMULATORS``, so that each broadcast input value feeds several blocks
    (EfficientNet-Lite0's 1x1 convs: 0.63-0.87x the time of one block of the widest row). None
    where no block count above 1 divides them."""
    blocks = max(_divisors(out_blocks, ODD_BLOCKS))
    if blocks < 2:
        return None
    return ConvTile(max(_divisors(width, ODD_ACCUMULATORS // blocks)), blocks)


def float_tile(width: int, out_blocks: int, registers: Vectors, in_blocks: int, kernel: KernelShape) -> ConvTile | None:
    """The float default on 32 registers where the weights would stream from L2 (None elsewhere,
    for a depthwise conv, or where no such tile divides the row):

    - a kernel wider than 1 x 1 over several input blocks: 14 x 2, else 7 x 2, one input block per
      pass over the plane, whose weights (9 taps x 2 blocks of 16 x 16 floats: 18 kB) every tile
      of the plane reads from L1, where a whole-reduction tile streams all of its group's weights
      from L2 again (a 3 x 3 conv of 256 channels: 295 kB per tile). The plane's partial sums (at
      most ``PLANE_BYTES``) stay in L2. ResNet-50's: 0.64-0.95x the time of 4 x 4 / 7 x 2.
    - a 1 x 1 conv of ``DEEP_BLOCKS`` input blocks or more: 14 x 2, whose two weight vectors feed
      28 accumulators (4 x 4: four feed 16), half the weight bytes per multiply-add. ResNet-50's:
      0.61-0.88x (shallower ones gained nothing, and int8 convs nothing chunked)."""
    if not (_wide(registers) and kernel.floating) or kernel.depthwise:
        return None
    if kernel.taps == 1:
        tile = ConvTile(14, 2)
        return tile if in_blocks >= DEEP_BLOCKS and tile.fits(width, out_blocks, in_blocks) else None
    if in_blocks < 2 or _partial_sums(kernel, width, 2, registers) > PLANE_BYTES:
        return None
    tiles = (ConvTile(14, 2, 1), ConvTile(7, 2, 1))
    return next((tile for tile in tiles if tile.fits(width, out_blocks, in_blocks)), None)


def one_pixel_tile(
    width: int, out_blocks: int, registers: Vectors, in_blocks: int, kernel: KernelShape
) -> ConvTile | None:
    """The default of a dense byte conv, and of a 1 x 1 int16 conv, on an AVX2 CPU's 16 registers
    (None elsewhere, or where fewer than ``MIN_ACCUMULATORS`` blocks divide the output): one pixel x up to
    ``BYTE_BLOCKS`` blocks. Each weight vector is the memory operand of one multiply
    (``vpmaddubsw``, or ``vpmaddwd`` on int16), read from L1 and never held, and the tile's
    blocks share one broadcast input value; a byte step takes a temporary and the ones besides
    (``vpmaddwd`` by ones, then an add). Where the tile's weights over the whole reduction
    (``L1_WEIGHT_BYTES``) would not stay in L1 and the plane's partial sums stay in L2
    (``PLANE_BYTES``), it takes 4 input blocks per pass (else 1). Measured on an AMD EPYC (AVX2),
    each conv alone: ResNet-50's byte convs 0.42-0.9x the time of 4 x 2 / 2 x 4 / 7 x 1,
    EfficientNet-Lite0's int16 1 x 1 convs 0.43-0.89x; whole models, side by side: int16 1 x 1
    convs 0.80x (EfficientNet-Lite0) and 0.97x (ResNet-50), but every int16 conv 1.05x."""
    if _wide(registers) or not registers.avx2 or kernel.depthwise:
        return None
    if not (kernel.operand_bytes == 1 or (kernel.operand_bytes == 2 and kernel.taps == 1)):
        return None
    blocks = max(_divisors(out_blocks, BYTE_BLOCKS))
    if blocks < MIN_ACCUMULATORS:
        return None
    # at most in_blocks x 8 channels x taps x blocks x 8 channels of weights, each of operand_bytes
    weights = in_blocks * kernel.taps * blocks * registers.lanes * registers.lanes * kernel.operand_bytes
    if weights <= L1_WEIGHT_BYTES or _partial_sums(kernel, width, blocks, registers) > PLANE_BYTES:
        return ConvTile(1, blocks)
    chunk = next((c for c in sorted(CHUNKS, reverse=True) if in_blocks % c == 0 and c < in_blocks), 0)
    return ConvTile(1, blocks, chunk)


def amx_tiles(width: int, out_blocks: int, out_block: int = AMX_COLUMNS) -> list[ConvTile]:
    """An AMX conv's tiles (``amx``): rows of 2 to 16 pixels that divide the output row x 2 to 4
    accumulator tiles of 16 channels that divide its ``out_blocks`` blocks of ``out_block``
    channels (blocks of 64: all four, side by side in the block), the default (widest, then most
    blocks) first; none where nothing divides (the conv then takes vector registers). The whole
    reduction each: the accumulators stay in tile registers. (A loop of one pixel or one block
    would vanish from the loop nest that the intrinsics describe.)"""
    per_block = out_block // AMX_COLUMNS
    if per_block > 1:
        counts = [per_block] if per_block <= AMX_BLOCKS else []
    else:
        counts = [b for b in _divisors(out_blocks, AMX_BLOCKS) if b > 1]
    tiles = [ConvTile(p, b) for p in _divisors(width, AMX_ROWS) for b in counts if p > 1]
    return sorted(tiles, key=lambda tile: (-tile.pixels, -tile.blocks))


def workload_key(block_script: str) -> str:
    """A tuning database key: a hash of the conv block's TIR (its loop extents, strides, operand
    types and arithmetic; not the fused epilogue, which the tile does not change)."""
    return hashlib.sha256(block_script.encode()).hexdigest()[:16]
