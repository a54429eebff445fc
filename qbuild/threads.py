"""How many threads TVM's runtime (and PyTorch, and NumPy's BLAS) run qbuild's kernels on.

TVM 0.27's thread pool, when ``TVM_NUM_THREADS`` is unset, takes half of
``std::thread::hardware_concurrency()`` on x86-64 (it assumes hyper-threading): on a 2-vCPU
machine every parallel loop ran on one thread, while PyTorch and ONNX Runtime (the peers) used
both. ``use_all_cpus`` sets ``TVM_NUM_THREADS`` to the CPUs of this process's affinity mask,
unless the user set it; the pool reads it once, when it is made, so it must be called before
that (``qbuild`` does it on import). Results record the count (``environment.capture``).

``run_on`` changes the count at run time (TVM's ``runtime.config_threadpool``, up to the pool's
size; PyTorch's ``set_num_threads``; NumPy's BLAS through ``threadpoolctl``: calibration's Gram
matrices, GPTQ). A plan's parallel jobs need it (``qbuild.gate``): a parallel
loop waits for its slowest thread, and a pool as wide as the machine beside another busy process
waits on a descheduled thread at every barrier. Measured on the 2-CPU EPYC: EfficientNet-Lite0
took 95.6 ms per image on 2 TVM threads beside one busy process, 20.5 on 1 thread (14.8 alone on 2).
"""

from __future__ import annotations

import os
import sys

ENV_VAR = "TVM_NUM_THREADS"
# TVM's AffinityMode kBig: the pool's own default (on x86 every CPU counts as big), kept as is.
_POOL_MODE = 1


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


def pool_size() -> int:
    """The threads TVM's pool was made with (``TVM_NUM_THREADS``): the most ``run_on`` can give."""
    return int(os.environ.get(ENV_VAR) or available_cpus())


def run_on(count: int) -> None:
    """Run TVM's parallel loops, NumPy's BLAS, and PyTorch's ops if it is loaded, on ``count``
    threads from now on (at least 1, at most ``pool_size()``)."""
    import threadpoolctl
    import tvm

    count = max(1, min(count, pool_size()))
    tvm.get_global_func("runtime.config_threadpool")(_POOL_MODE, count)
    threadpoolctl.threadpool_limits(count, user_api="blas")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)
