"""The compiled form of generated CUDA code, for the instruction census: PTX and SASS.

TVM keeps a CUDA module's source (``inspect_source("cuda")``) but neither the PTX nor the
machine code (a CUDA module cannot ``write_to_file``). So:

- ``capture_binaries`` wraps TVM's compile callback (``tvm_callback_cuda_compile``, NVRTC by
  default) while a model compiles and keeps the binaries it returned: the SASS of the census is
  ``cuobjdump -sass`` of the very cubin that runs. Where none was caught, the SASS is of nvcc's
  cubin of the same source (``CompiledModel.sass_origin`` says which).
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


_sinks: list[list[bytes]] = []  # the open captures; the innermost one collects
_installed: list = []  # TVM's own callback, once the pass-through wrapper replaced it


def _install() -> None:
    """Put a pass-through wrapper in place of TVM's compile callback, once per process (TVM's C++
    side may keep the function it first looked up, so the wrapper stays and routes binaries to
    whichever capture is open)."""
    if _installed:
        return
    import tvm_ffi
    from tvm.support import nvcc  # noqa: F401  (registers TVM's callback)

    original = tvm_ffi.get_global_func(CALLBACK)

    def compile_and_keep(*args):
        binary = original(*args)
        if _sinks:
            _sinks[-1].append(bytes(binary))
        return binary

    tvm_ffi.register_global_func(CALLBACK, compile_and_keep, override=True)
    _installed.append(original)


@contextmanager
def capture_binaries() -> Iterator[list[bytes]]:
    """Within the block, every binary TVM's CUDA compile callback returns is appended to the list."""
    _install()
    sink: list[bytes] = []
    _sinks.append(sink)
    try:
        yield sink
    finally:
        _sinks.remove(sink)


def cubin(source: str, arch: str) -> bytes | None:
    """nvcc's cubin for ``source`` on ``arch``, or None without nvcc."""
    return _nvcc(source, arch, "cubin")


def ptx(source: str, arch: str) -> str | None:
    """nvcc's PTX for ``source`` on ``arch``, or None without nvcc."""
    code = _nvcc(source, arch, "ptx")
    return None if code is None else code.decode()


def _nvcc(source: str, arch: str, target_format: str) -> bytes | None:
    if shutil.which("nvcc") is None:
        return None
    import tvm
    from tvm.support import nvcc

    with tvm.target.Target({"kind": "cuda", "arch": arch}):
        return bytes(nvcc.compile_cuda(source, target_format=target_format, arch=arch, compiler="nvcc"))


def sass(binaries: list[bytes], source: str, arch: str) -> str | None:
    """``cuobjdump -sass`` of ``binaries``, or of nvcc's cubin of ``source`` where none was kept;
    None without cuobjdump (or without nvcc when a cubin has to be made)."""
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump is None:
        return None
    binaries = binaries or list(filter(None, [cubin(source, arch)]))
    listings = []
    with tempfile.TemporaryDirectory(prefix="qbuild-sass-") as tmp:
        for index, binary in enumerate(binaries):
            path = Path(tmp) / f"module{index}.cubin"
            path.write_bytes(binary)
            listings.append(
                subprocess.run(
                    [cuobjdump, "-sass", str(path)], capture_output=True, text=True, check=True, timeout=300
                ).stdout
            )
    return "\n".join(listings) or None
