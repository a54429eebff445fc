"""How a target runs the quantizer's sub-byte convs: bit-serially (``bitserial``) or as the int8
conv on their narrow values. The quantizer asks an instance for each conv (``qbuild.quantize``
takes it as ``convs``), so the choice is the kernels' and the quantizer stays target-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tvm import relax

from qbuild.bitpack import Encoding
from qbuild.kernels import MAX_AUTO_PAIRS, auto_bitserial_pairs
from qbuild.kernels.bitserial import BitserialConv

if TYPE_CHECKING:
    import tvm


@dataclass(frozen=True)
class SubbyteConvs:
    """Under ``subbyte_kernel="auto"``, a conv of at most ``max_pairs`` (activation plane, weight
    plane) pairs runs bit-serially, every other as the int8 conv."""

    max_pairs: int = MAX_AUTO_PAIRS

    @classmethod
    def for_target(cls, target: "tvm.target.Target | None" = None) -> SubbyteConvs:
        """The choice for ``target`` (None: a CPU without AMX): ``auto_bitserial_pairs``."""
        return cls(auto_bitserial_pairs(target))

    def kernel(self, choice: str, attrs: relax.expr.Attrs, activation: Encoding, weight: Encoding) -> str:
        """ "bitserial" or "int8": how a quantized conv with these attributes and operand encodings
        runs under ``choice`` (``QConfig.subbyte_kernel``). Only plain NCHW/OIHW convs (no groups,
        no dilation) with a sub-byte operand run bit-serially."""
        subbyte = activation.bits < 8 or weight.bits < 8
        plain = (
            attrs.groups == 1
            and all(int(d) == 1 for d in attrs.dilation)
            and (attrs.data_layout, attrs.kernel_layout, attrs.out_layout or "NCHW") == ("NCHW", "OIHW", "NCHW")
        )
        if choice == "int8" or not (subbyte and plain):
            return "int8"
        pairs = len(activation.coefficients) * len(weight.coefficients)
        return "bitserial" if choice == "bitserial" or pairs <= self.max_pairs else "int8"

    def emit_bitserial(
        self,
        bb: relax.BlockBuilder,
        data: relax.Expr,
        weights: np.ndarray,
        attrs: relax.expr.Attrs,
        activation: Encoding,
        weight: Encoding,
    ) -> tuple[relax.Expr, int]:
        """The bit-serial conv of int8 NCHW ``data`` with integer OIHW ``weights`` (int32 NCHW out),
        and the bytes its packed weights take."""
        spec = BitserialConv(
            activation,
            weight,
            int(weights.shape[0]),
            tuple(int(s) for s in attrs.strides),
            tuple(int(p) for p in attrs.padding),
        )
        packed = spec.pack(weights)
        return spec.emit(bb, data, packed), int(packed.nbytes)
