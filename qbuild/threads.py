"""How many threads TVM's runtime runs qbuild's kernels on: all the CPUs this process may use.

TVM 0.27's thread pool, when ``TVM_NUM_THREADS`` is unset, takes half of
``std::thread::hardware_concurrency()`` on x86-64 (it assumes hyper-threading): on a 2-vCPU
machine every parallel loop ran on one thread, while PyTorch and ONNX Runtime (the peers) used
both. ``use_all_cpus`` sets ``TVM_NUM_THREADS`` to the CPUs of this process's affinity mask,
unless the user set it; the pool reads it once, when the first parallel kernel runs, so it must
be called before that (``qbuild`` does it on import). Results record the count
(``environment.capture``).
"""

from __future__ import annotations

import os

ENV_VAR = "TVM_NUM_THREADS"


def available_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def use_all_cpus() -> int:
    """Set ``TVM_NUM_THREADS`` to ``available_cpus()`` unless already set; the count in force."""
    os.environ.setdefault(ENV_VAR, str(available_cpus()))
    return int(os.environ[ENV_VAR])
