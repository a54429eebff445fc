"""Where a compiled model's time goes: every call the Relax VM makes, timed on its own.

``profile`` runs the model ``runs`` times through a VM of its own with an instrument around each
call, so each generated function (a fused conv, a pad, a pool) is timed alone. On a CPU the
instrument waits for the device before and after each call and reads the wall clock. On CUDA
(where PyTorch is there to record them) it records a CUDA event before and after each call on
the stream TVM launches on, and reads the GPU's own time between them once the run is done:
no host wait per call (a wait costs several microseconds, as much as a small kernel takes).
Either way consecutive calls no longer overlap, so the shares are what to read, not the sum. A
CUDA build replayed as a CUDA graph is one call to the VM: profile it built without the graph.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import numpy as np

from qbuild.compile import CompiledModel


class _HostClock:
    """Wall-clock seconds of each call, the device synchronised before and after it."""

    def __init__(self, device) -> None:
        self.device = device
        self.timed: list = []

    def start(self) -> float:
        self.device.sync()
        return time.perf_counter()

    def stop(self, symbol: str, started: float) -> None:
        self.device.sync()
        self.timed.append((symbol, time.perf_counter() - started))

    def collect(self) -> list[tuple[str, float]]:
        """The calls timed since the last collect, as (symbol, seconds)."""
        timed, self.timed = self.timed, []
        return timed


class CudaEventClock:
    """GPU seconds of each call between two CUDA events on the default stream (TVM's)."""

    def __init__(self, torch) -> None:
        self.torch = torch
        self.pending: list = []

    def start(self):
        event = self.torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def stop(self, symbol: str, started) -> None:
        event = self.torch.cuda.Event(enable_timing=True)
        event.record()
        self.pending.append((symbol, started, event))

    def collect(self) -> list[tuple[str, float]]:
        self.torch.cuda.synchronize()
        timed = [(symbol, begin.elapsed_time(end) / 1e3) for symbol, begin, end in self.pending]
        self.pending = []
        return timed


def clock_for(compiled: CompiledModel, device):
    """CUDA events for a CUDA build where PyTorch can record them, else the host clock."""
    if compiled.target.name == "cuda":
        try:
            import torch
        except ImportError:
            return _HostClock(device)
        if torch.cuda.is_available():
            return CudaEventClock(torch)
    return _HostClock(device)


def profile(compiled: CompiledModel, input_shape: tuple[int, ...], runs: int = 10, seed: int = 0) -> list[dict]:
    """Per VM call symbol: calls and milliseconds per run and share of the total, slowest first."""
    from tvm import relax
    from tvm.runtime.vm import VMInstrumentReturnKind

    batch = np.random.default_rng(seed).standard_normal(input_shape).astype(np.float32)
    device = compiled.target.device()
    vm = relax.VirtualMachine(compiled.executable, device)
    data = compiled.upload(batch)
    clock = clock_for(compiled, device)
    totals: defaultdict[str, float] = defaultdict(float)
    calls: Counter[str] = Counter()
    started: list = []

    def instrument(_func, symbol: str, before_run: bool, _ret, *_args) -> int:
        if before_run:
            started.append(clock.start())
        else:
            clock.stop(symbol, started.pop())
        return VMInstrumentReturnKind.NO_OP

    vm["main"](data)  # the first run, untimed: before the instrument
    vm.set_instrument(instrument)
    for _ in range(runs):
        vm["main"](data)
        for symbol, seconds in clock.collect():
            totals[symbol] += seconds
            calls[symbol] += 1
    whole = sum(totals.values()) or 1.0
    rows = [
        {"function": symbol, "calls": calls[symbol] / runs, "ms": 1e3 * seconds / runs, "share": seconds / whole}
        for symbol, seconds in totals.items()
    ]
    return sorted(rows, key=lambda row: -row["ms"])


def render(rows: list[dict], top: int = 25) -> str:
    """The slowest ``top`` functions as a table, and what the rest add up to."""
    lines = [f"{'function':<60} {'calls':>6} {'ms/run':>9} {'share':>7}"]
    for row in rows[:top]:
        lines.append(f"{row['function'][:60]:<60} {row['calls']:>6.0f} {row['ms']:>9.3f} {100 * row['share']:>6.1f}%")
    rest = rows[top:]
    if rest:
        lines.append(
            f"{f'({len(rest)} more)':<60} {sum(r['calls'] for r in rest):>6.0f} "
            f"{sum(r['ms'] for r in rest):>9.3f} {100 * sum(r['share'] for r in rest):>6.1f}%"
        )
    lines.append(f"{'total':<60} {sum(r['calls'] for r in rows):>6.0f} {sum(r['ms'] for r in rows):>9.3f}")
    return "\n".join(lines)
