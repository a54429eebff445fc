"""The compiled form of generated CUDA code, for the instruction census: PTX and SASS.

TVM keeps a CUDA module's source (``inspect_source("cuda")``) but neither the PTX nor the
machine code (a CUDA module cannot ``write_to_file``). So:

- ``capture_binaries`` wraps TVM's compile callback (``tvm_callback_cuda_compile``, NVRTC by
  default) while a model compiles and keeps the binaries it returned: the SASS of the census is
  ``cuobjdump -sass`` of the very cubin that runs.
- the PTX is nvcc's, from the same source for the same ``sm_XX`` (NVRTC compiles straight to a
  cubin and keeps no PTX). It shows which instructions the code asks for (wmma, mma, dp4a).

A tool that is missing (no CUDA toolkit on this machine) leaves its format out; nothing is guessed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CALLBACK = "tvm_callback_cuda_compile"


@contextmanager
def capture_binaries() -> Iterator[list[bytes]]:
    """Within the block, every binary TVM's CUDA compile callback returns is appended to the list."""
    import tvm_ffi
    from tvm.support import nvcc  # noqa: F401  (registers the callback)

    original = tvm_ffi.get_global_func(CALLBACK)
    captured: list[bytes] = []

    def capture(*args):
        binary = original(*args)
        captured.append(bytes(binary))
        return binary

    tvm_ffi.register_global_func(CALLBACK, capture, override=True)
    try:
        yield captured
    finally:
        tvm_ffi.register_global_func(CALLBACK, original, override=True)


def ptx(source: str, arch: str) -> str | None:
    """nvcc's PTX for ``source`` on ``arch``, or None without nvcc."""
    if shutil.which("nvcc") is None:
        return None
    import tvm
    from tvm.support import nvcc

    with tvm.target.Target({"kind": "cuda", "arch": arch}):
        return nvcc.compile_cuda(source, target_format="ptx", arch=arch, compiler="nvcc").decode()


def sass(binary: bytes) -> str | None:
    """``cuobjdump -sass`` of a cubin or fatbin, or None without cuobjdump."""
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump is None:
        return None
    with tempfile.TemporaryDirectory(prefix="qbuild-sass-") as tmp:
        path = Path(tmp) / "module.cubin"
        path.write_bytes(binary)
        return subprocess.run([cuobjdump, "-sass", str(path)], capture_output=True, text=True,
                              check=True, timeout=300).stdout
