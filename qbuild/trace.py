"""torch.export -> Relax IRModule with the weights detached as named NumPy arrays.

The module's ``main`` takes the input batch first and the weights after it, in the order of
``TracedModel.params``; ``bind_params`` folds them in as constants, and ``inference_module``
also folds batch norm into the convolutions: the form both the float build and the quantizer use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    import tvm


@dataclass
class TracedModel:
    """A Relax module ``main(input, *weights)`` and its weights by parameter name."""

    mod: "tvm.IRModule"
    params: dict[str, np.ndarray]
    input_name: str
    input_shape: tuple[int, ...]
    _inference: "tvm.IRModule | None" = field(default=None, repr=False, compare=False)

    def bind_params(self) -> "tvm.IRModule":
        """The module with every weight bound as a constant, leaving ``main(input)``."""
        from tvm import relax

        return relax.transform.BindParams("main", dict(self.params))(self.mod)

    def inference_module(self) -> "tvm.IRModule":
        """``main(input)`` with weights bound and batch norm folded into the convolutions (made on
        the first call; IRModules are immutable, so every caller may share it)."""
        if self._inference is None:
            self._inference = fold_batch_norm(self.bind_params())
        return self._inference


def fold_batch_norm(mod: "tvm.IRModule") -> "tvm.IRModule":
    """Fold inference batch norms into the preceding conv2d (weights scaled, a bias added);
    any other batch norm becomes elementwise ops; constants are folded. Needs bound weights."""
    from tvm import relax

    mod = relax.transform.FoldBatchnormToConv2D()(mod)
    mod = relax.transform.DecomposeOpsForInference()(mod)
    return relax.transform.FoldConstant()(mod)


def trace(module: "torch.nn.Module", input_shape: tuple[int, ...]) -> TracedModel:
    """Export ``module`` (eval mode) at ``input_shape`` with torch.export and import it into Relax."""
    import torch
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    example = torch.zeros(input_shape, dtype=torch.float32)
    with torch.no_grad():
        exported = torch.export.export(module, (example,))
    mod = from_exported_program(exported, keep_params_as_input=True)
    mod, detached = relax.frontend.detach_params(mod)
    inputs = list(mod["main"].params)
    weights = detached.get("main", [])
    names = [var.name for var in inputs[len(inputs) - len(weights) :]]
    params = {name: value.numpy() for name, value in zip(names, weights)}
    return TracedModel(mod, params, inputs[0].name, tuple(input_shape))
