"""Block reconstruction: learn each low-bit conv's rounding so that its block of the quantized
network reproduces the float block's output on the calibration images
(``weight_rounding="reconstruct"``).

After BRECQ (Li et al., 2021): the network is cut into blocks (a residual add, or at most
``BLOCK_LAYERS`` quantized convs, ends one), reconstructed in program order, so that each block
starts from the quantized network's output of the ones before it. A block's loss is on its last
value only: where the conv cap ends a block, what its other convs give later blocks directly is
not in it (in a ResNet block with a shortcut conv, traced last, the main path's last conv).
Each weight is rounded up or down by a learned gate (AdaRound, Nagel et al., 2020: ``h(V)``,
pushed to 0 or 1 by a regulariser that hardens as training goes on). Each batch's block input is, element by element,
the quantized network's or the float one's (QDrop, Wei et al., 2022), which keeps the rounding
from fitting the calibration images' own errors. Conv inputs are quantized at the integer
program's scales and code ranges (round half up, the sweep's rounding), the gradient passing them
straight through; the int8 requantizes between layers and the bias correction the rewrite adds
are not simulated.

The float module runs in PyTorch (``qbuild.relax.torch_mirror``); what comes out is each learned
layer's integer codes, on the step and code range the rewriter chose, so the rewrite emits the
same integer program with other codes (and bias correction computed on them).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from qbuild.relax.graph import op_name

if TYPE_CHECKING:
    import torch
    import tvm

ITERATIONS = 300  # optimiser steps per block
BATCH = 8  # calibration images per step
BLOCK_LAYERS = 4  # quantized convs in a block that no residual add ends earlier
WARMUP = 0.2  # share of the steps with no regulariser (the gates find their side first)
REGULARISER = 0.01  # weight of the rounding regulariser against the reconstruction error
BETA = (20.0, 2.0)  # the regulariser's exponent, annealed: soft early, hard late
LEARNING_RATE = 1e-2
DROP = 0.5  # QDrop: the share of block-input elements taken from the float network
ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (AdaRound)
SEED = 0


@dataclass(frozen=True)
class LayerQuantization:
    """How the rewriter quantized one conv: its float weights (OIHW), integer codes and step per
    output channel, its weight code range, and its input's step and code range. ``learnable``:
    its rounding is learned (signed weights below 8 bits); the others keep their codes."""

    weights: np.ndarray
    codes: np.ndarray
    step: np.ndarray
    weight_range: tuple[int, int]
    input_step: float
    input_range: tuple[int, int]
    learnable: bool

    @functools.cached_property
    def floor(self) -> np.ndarray:
        """The weights rounded down on their steps: the codes a gate adds 0 or 1 to."""
        return np.floor(self.weights / _per_output(self.step))


def learn(mod: "tvm.IRModule", layers: dict, images: Sequence[np.ndarray], iterations: int = ITERATIONS) -> dict:
    """The learned integer codes (OIHW, the dtype of the rewriter's) of each learnable layer in
    ``layers`` ({conv output var of the float ``mod``: ``LayerQuantization``}), from ``images``
    (CHW float32 each), keyed by var."""
    import torch

    from qbuild.relax.torch_mirror import Mirror

    if not any(layer.learnable for layer in layers.values()):
        return {}
    generator = torch.Generator().manual_seed(SEED)
    mirror = Mirror(mod)
    batch = torch.from_numpy(np.stack([np.asarray(image, dtype=np.float32) for image in images]))
    floats, quantized = {mirror.params[0]: batch}, {mirror.params[0]: batch}
    last_use = _last_uses(mirror)
    codes: dict = {}
    with torch.no_grad():
        for start, stop in _blocks(mirror, layers):
            inputs = _inputs(mirror, start, stop)
            mirror.run(floats, start, stop)
            span = [b.var for b in mirror.bindings[start:stop] if b.var in layers]
            learnable = [var for var in span if layers[var].learnable]
            if learnable:
                block = _Block(mirror, (start, stop), {var: layers[var] for var in span})
                with torch.enable_grad():
                    block.fit(
                        {var: floats[var] for var in inputs},
                        {var: quantized[var] for var in inputs},
                        floats[mirror.bindings[stop - 1].var],
                        iterations,
                        generator,
                    )
                codes.update(block.codes())
            mirror.run(quantized, start, stop, {var: _hard(layers[var], codes.get(var)) for var in span})
            for env in (floats, quantized):
                for var in [var for var in env if last_use.get(var, -1) < stop]:
                    del env[var]
    return codes


class _Block:
    """One span of bindings and its quantized convs (vars to ``LayerQuantization``), whose
    learnable convs' gates are trained."""

    def __init__(self, mirror, span: tuple[int, int], layers: dict) -> None:
        import torch

        self.mirror, self.span, self.layers = mirror, span, layers
        self.gates: dict = {}
        for var, layer in layers.items():
            if layer.learnable:
                # h(V) starts near the rewriter's rounding (GPTQ's, for a 1x1 conv): up or down
                rest = np.where(layer.codes > layer.floor, 0.9, 0.1)
                start = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1)
                self.gates[var] = torch.nn.Parameter(torch.from_numpy(start.astype(np.float32)))

    def _gate(self, var) -> "torch.Tensor":
        import torch

        return torch.clamp(torch.sigmoid(self.gates[var]) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def _soft(self, var):
        import torch

        layer = self.layers[var]
        floor = torch.from_numpy(layer.floor.astype(np.float32))
        step = torch.from_numpy(_per_output(layer.step).astype(np.float32))

        def conv(call, args: list) -> "torch.Tensor":
            weights = torch.clamp(floor + self._gate(var), *layer.weight_range) * step
            return self.mirror.apply(call, [_fake_quantized(args[0], layer), weights])

        return conv

    def fit(self, floats: dict, quantized: dict, target, iterations: int, generator) -> None:
        """Train the gates: the block's output from inputs mixed element-wise from ``quantized``
        and ``floats`` (its input vars' values on every image) against ``target``."""
        import torch

        params = list(self.gates.values())
        optimiser = torch.optim.Adam(params, lr=LEARNING_RATE)
        replaced = {var: self._soft(var) if var in self.gates else _hard(layer) for var, layer in self.layers.items()}
        out = self.mirror.bindings[self.span[1] - 1].var
        images = target.shape[0]
        warm = int(WARMUP * iterations)
        for step in range(iterations):
            chosen = torch.randint(images, (min(BATCH, images),), generator=generator)
            env = {}
            for var, value in quantized.items():
                picked = value[chosen]
                keep = torch.rand(picked.shape, generator=generator) >= DROP
                env[var] = torch.where(keep, picked, floats[var][chosen])
            self.mirror.run(env, *self.span, replaced)
            loss = (env[out] - target[chosen]).pow(2).sum(dim=1).mean()
            if step >= warm:
                progress = (step - warm) / max(iterations - warm, 1)
                beta = BETA[0] + (BETA[1] - BETA[0]) * progress
                loss = loss + REGULARISER * sum(
                    (1 - (2 * self._gate(var) - 1).abs().pow(beta)).sum() for var in self.gates
                )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

    def codes(self) -> dict:
        """Each learnable conv's integer codes: its weights rounded down, plus one where its
        trained gate is past one half."""
        out = {}
        with_gates = ((var, self.layers[var], self._gate(var).detach().numpy()) for var in self.gates)
        for var, layer, gate in with_gates:
            codes = np.clip(layer.floor + (gate >= 0.5), *layer.weight_range)
            out[var] = codes.astype(layer.codes.dtype)
        return out


def _per_output(step: np.ndarray) -> np.ndarray:
    return step.reshape(-1, 1, 1, 1)


def _fake_quantized(x: "torch.Tensor", layer: LayerQuantization) -> "torch.Tensor":
    """``x`` on the layer's input codes (round half up, clipped to the code range), the gradient
    passing straight through."""
    import torch

    low, high = layer.input_range
    codes = torch.clamp(torch.floor(x / layer.input_step + 0.5), low, high)
    return x + (codes * layer.input_step - x).detach()


def _hard(layer: LayerQuantization, codes: np.ndarray | None = None):
    """The conv on its quantized input with fixed weights: ``codes`` (learned) or the rewriter's."""
    import torch

    from qbuild.relax.torch_mirror import Mirror

    weights = torch.from_numpy((layer.codes if codes is None else codes) * _per_output(layer.step)).float()

    def conv(call, args: list) -> "torch.Tensor":
        return Mirror.apply(call, [_fake_quantized(args[0], layer), weights])

    return conv


def _blocks(mirror, layers: dict) -> list[tuple[int, int]]:
    """(start, stop) binding spans covering ``main``'s computed bindings, each but the last
    holding a quantized conv: a span ends at a residual add (two computed operands) or after
    ``BLOCK_LAYERS`` quantized convs."""
    from tvm import relax

    spans, start, count = [], 0, 0
    computed = [i for i, b in enumerate(mirror.bindings) if isinstance(b.value, relax.Call)]
    for i in computed:
        binding = mirror.bindings[i]
        count += binding.var in layers
        value = binding.value
        residual = op_name(value) == "relax.add" and all(isinstance(arg, relax.Var) for arg in value.args)
        if count and (residual or count == BLOCK_LAYERS):
            spans.append((start, i + 1))
            start, count = i + 1, 0
    if computed and start <= computed[-1]:
        spans.append((start, computed[-1] + 1))
    return spans


def _reads(binding) -> list:
    """The vars a binding reads."""
    from tvm import relax

    args = binding.value.fields if isinstance(binding.value, relax.Tuple) else binding.value.args
    return [arg for arg in args if isinstance(arg, relax.Var)]


def _inputs(mirror, start: int, stop: int) -> list:
    """The vars bindings ``start`` to ``stop`` read that are defined before them (or params)."""
    inside = {b.var for b in mirror.bindings[start:stop]}
    return list(dict.fromkeys(var for b in mirror.bindings[start:stop] for var in _reads(b) if var not in inside))


def _last_uses(mirror) -> dict:
    """Each var's index of the last binding that reads it."""
    return {var: i for i, binding in enumerate(mirror.bindings) for var in _reads(binding)}
