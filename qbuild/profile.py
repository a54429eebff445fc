"""Where a compiled model's time goes: every call the Relax VM makes, timed on its own.

``profile`` runs the model ``runs`` times through a VM of its own whose instrument waits for
the device before and after each call, so each generated function (a fused conv, a pad, a
pool) is timed alone. The waits add a little to every call and remove the overlap of
consecutive GPU kernels, so the shares are what to read, not the sum. A CUDA build replayed
as a CUDA graph is one call to the VM: profile it built without the graph.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import numpy as np

from qbuild.compile import CompiledModel


def profile(compiled: CompiledModel, input_shape: tuple[int, ...], runs: int = 10, seed: int = 0) -> list[dict]:
    """Per VM call symbol: calls and milliseconds per run and share of the total, slowest first."""
    from tvm import relax
    from tvm.runtime.vm import VMInstrumentReturnKind

    batch = np.random.default_rng(seed).standard_normal(input_shape).astype(np.float32)
    device = compiled.target.device()
    vm = relax.VirtualMachine(compiled.executable, device)
    data = compiled.upload(batch)
    totals: defaultdict[str, float] = defaultdict(float)
    calls: Counter[str] = Counter()
    started: list[float] = []

    def instrument(_func, symbol: str, before_run: bool, _ret, *_args) -> int:
        device.sync()
        if before_run:
            started.append(time.perf_counter())
        else:
            totals[symbol] += time.perf_counter() - started.pop()
            calls[symbol] += 1
        return VMInstrumentReturnKind.NO_OP

    vm["main"](data)  # the first run, untimed: before the instrument
    vm.set_instrument(instrument)
    for _ in range(runs):
        vm["main"](data)
    whole = sum(totals.values()) or 1.0
    rows = [{"function": symbol, "calls": calls[symbol] / runs, "ms": 1e3 * seconds / runs, "share": seconds / whole}
            for symbol, seconds in totals.items()]
    return sorted(rows, key=lambda row: -row["ms"])


def render(rows: list[dict], top: int = 25) -> str:
    """The slowest ``top`` functions as a table, and what the rest add up to."""
    lines = [f"{'function':<60} {'calls':>6} {'ms/run':>9} {'share':>7}"]
    for row in rows[:top]:
        lines.append(f"{row['function'][:60]:<60} {row['calls']:>6.0f} {row['ms']:>9.3f} {100 * row['share']:>6.1f}%")
    rest = rows[top:]
    if rest:
        lines.append(f"{f'({len(rest)} more)':<60} {sum(r['calls'] for r in rest):>6.0f} "
                     f"{sum(r['ms'] for r in rest):>9.3f} {100 * sum(r['share'] for r in rest):>6.1f}%")
    lines.append(f"{'total':<60} {sum(r['calls'] for r in rows):>6.0f} {sum(r['ms'] for r in rows):>9.3f}")
    return "\n".join(lines)
