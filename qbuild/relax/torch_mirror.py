"""A float Relax module's ``main`` evaluated by PyTorch, binding by binding: for learning on the
float model with autograd (``qbuild.quantize.block_reconstruct``), never for timing.

Evaluation works on an environment (each var's value so far), so that a span of bindings (one
block of layers) can be run on its own inputs, and a binding can be replaced by the caller (a
quantized layer). The module is traced at batch 1; a reshape's leading 1 stands for the batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
from tvm import relax

from qbuild.errors import QbuildError
from qbuild.relax.graph import bindings, const_array, op_name, scalar_value

if TYPE_CHECKING:
    import torch
    import tvm

Replacement = Callable[[object, list], "torch.Tensor"]  # (a binding's call, its argument values) -> its value


class Mirror:
    """``mod``'s ``main`` (weights bound, NCHW convs) as PyTorch operations."""

    def __init__(self, mod: "tvm.IRModule") -> None:
        self.params = list(mod["main"].params)
        self.bindings = bindings(mod)
        self._constants: dict = {}  # keyed by the constant (TVM objects hash by identity)
        refused = refusal(mod)
        if refused is not None:
            raise QbuildError(
                f"block reconstruction cannot run {refused} in PyTorch", "use weight_rounding='gptq' for this model"
            )

    def value(self, expr, env: dict):
        """An argument's value: a var's from ``env``, a tensor constant as a PyTorch tensor, any
        other argument (a shape, a scalar) as it is."""
        import torch

        if isinstance(expr, relax.Var):
            return env[expr]
        if expr not in self._constants:
            array = const_array(expr)
            self._constants[expr] = expr if array is None else torch.from_numpy(np.ascontiguousarray(array))
        return self._constants[expr]

    def run(self, env: dict, start: int, stop: int, replaced: "dict[relax.Var, Replacement] | None" = None) -> dict:
        """``env`` extended by bindings ``start`` to ``stop`` (indices into ``bindings``); a binding
        whose var is in ``replaced`` is computed by that ``Replacement``."""
        replaced = replaced or {}
        for binding in self.bindings[start:stop]:
            call = binding.value
            if isinstance(call, relax.Tuple):
                env[binding.var] = tuple(self.value(field, env) for field in call.fields)
                continue
            args = [self.value(arg, env) for arg in call.args]
            apply = replaced.get(binding.var)
            env[binding.var] = (apply or self.apply)(call, args)
        return env

    @staticmethod
    def apply(call, args: list) -> "torch.Tensor":
        """``call``'s op on argument values ``args`` (its tensors as PyTorch tensors)."""
        return _OPS[op_name(call)](call, args)


def refusal(mod: "tvm.IRModule") -> str | None:
    """What in ``mod``'s ``main`` the mirror cannot run (an op, or a conv's layouts), or None."""
    for binding in bindings(mod):
        value = binding.value
        if isinstance(value, relax.Tuple):
            continue
        if op_name(value) not in _OPS:
            return op_name(value) or type(value).__name__
        if op_name(value) == "relax.nn.conv2d" and (
            str(value.attrs.data_layout) != "NCHW" or str(value.attrs.kernel_layout) != "OIHW"
        ):
            return f"a {value.attrs.data_layout}/{value.attrs.kernel_layout} conv (it runs NCHW/OIHW)"
    return None


def _padded(x: "torch.Tensor", padding, fill: float) -> "torch.Tensor":
    import torch.nn.functional as F

    top, left, bottom, right = (int(p) for p in padding)
    return F.pad(x, (left, right, top, bottom), value=fill) if any((top, left, bottom, right)) else x


def _conv2d(call, args: list) -> "torch.Tensor":
    import torch.nn.functional as F

    attrs = call.attrs  # NCHW data, OIHW weights (``refusal``)
    stride = tuple(int(s) for s in attrs.strides)
    dilation = tuple(int(d) for d in attrs.dilation)
    return F.conv2d(_padded(args[0], attrs.padding, 0.0), args[1], None, stride, 0, dilation, int(attrs.groups))


def _max_pool2d(call, args: list) -> "torch.Tensor":
    import torch.nn.functional as F

    attrs = call.attrs
    x = _padded(args[0], attrs.padding, float("-inf"))
    size, stride = (tuple(int(v) for v in values) for values in (attrs.pool_size, attrs.strides))
    return F.max_pool2d(x, size, stride, 0, tuple(int(d) for d in attrs.dilation), bool(attrs.ceil_mode))


def _reshape(call, args: list) -> "torch.Tensor":
    shape = [int(v) for v in call.args[1].values]
    return args[0].reshape(args[0].shape[0], *shape[1:])


def _clip(call, args: list) -> "torch.Tensor":
    return args[0].clamp(scalar_value(call.args[1]), scalar_value(call.args[2]))


def _mean(call, args: list) -> "torch.Tensor":
    return args[0].mean(dim=[int(a) for a in call.attrs.axis], keepdim=bool(call.attrs.keepdims))


def _relu(call, args: list) -> "torch.Tensor":
    return args[0].clamp(min=0.0)


_OPS: dict[str, Callable] = {
    "relax.nn.conv2d": _conv2d,
    "relax.nn.max_pool2d": _max_pool2d,
    "relax.nn.relu": _relu,
    "relax.add": lambda call, args: args[0] + args[1],
    "relax.multiply": lambda call, args: args[0] * args[1],
    "relax.clip": _clip,
    "relax.mean": _mean,
    "relax.reshape": _reshape,
    "relax.matmul": lambda call, args: args[0] @ args[1],
}
