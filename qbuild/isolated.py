"""Builds timed in processes of their own: no build ever shares a process with another.

A ``Worker`` is one spawned process that holds one build, made once and kept alive: built there
from its experiment by the function the caller names (``build``: a TVM build or a peer), or
loaded from a TVM library that the caller exported (``export``). It times what it is asked,
``executions`` runs on a batch or the whole benchmark protocol, and answers over a pipe. Between requests it is stopped
(``SIGSTOP``), so that a build's threads (TVM's pool, ONNX Runtime's and OpenVINO's spinning
workers) never run while another build is timed: TVM's pool beside ONNX Runtime in one process
slowed ONNX Runtime int8 on EfficientNet-Lite0 ~3x.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any, Callable

import numpy as np

from qbuild.bench import Protocol
from qbuild.plan import Experiment


class WorkerError(RuntimeError):
    """The worker's build or run failed (its one-line message), or the worker died."""


# (experiment, loaded model) -> the build: a module-level function, so that it reaches the worker by name.
Build = Callable[[Experiment, Any], Any]


class Worker:
    """``experiment``'s build in a process of its own, made there by ``build`` (``qbuild.stages.build``,
    say); ``library``: a TVM library (``export``) to load instead. Raises ``WorkerError`` when the
    build fails."""

    def __init__(self, experiment: Experiment, library: Path | None = None, build: Build | None = None) -> None:
        from qbuild.gate import end_with_parent

        if (library is None) == (build is None):
            raise ValueError("a Worker takes either a library to load or a build function")
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of this process's
        self._conn, child = context.Pipe()
        library_path = None if library is None else str(library)
        self.process = context.Process(target=_serve, args=(child, experiment, library_path, build, end_with_parent))
        self.process.start()
        child.close()
        self.name = experiment.variant.name
        try:
            self.description: dict = self._answer(None)
        except WorkerError:
            self.close()
            raise
        self._stop()

    def time(self, batch: np.ndarray, executions: int) -> list[float]:
        """Milliseconds of ``executions`` runs on ``batch`` (uploaded once, one untimed run first)."""
        return self._ask(("time", batch, executions))

    def bench(
        self,
        input_shape: tuple[int, ...],
        protocol: Protocol,
        on_iteration: Callable[[int, int, float], None] | None = None,
    ) -> dict:
        """``qbuild.bench.benchmark`` of the build, run in the worker."""
        return self._ask(("bench", tuple(input_shape), protocol), on_iteration)

    def close(self) -> None:
        """End the worker (it ends with this process anyway)."""
        if self.process.is_alive():
            self._signal(signal.SIGCONT)
            try:
                self._conn.send(("close",))
            except OSError:
                pass
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        self._conn.close()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ask(self, request: tuple, on_progress: Callable[..., None] | None = None) -> Any:
        self._signal(signal.SIGCONT)
        try:
            self._conn.send(request)
            return self._answer(on_progress)
        finally:
            self._stop()

    def _answer(self, on_progress: Callable[..., None] | None) -> Any:
        while True:
            try:
                kind, *value = self._conn.recv()
            except EOFError:
                self.process.join(5)
                raise WorkerError(f"the worker of {self.name} died (exit code {self.process.exitcode})") from None
            if kind == "progress":
                if on_progress is not None:
                    on_progress(*value)
                continue
            if kind == "error":
                raise WorkerError(value[0])
            return value[0]

    def _stop(self) -> None:
        self._signal(signal.SIGSTOP)

    def _signal(self, which: signal.Signals) -> None:
        if self.process.is_alive():
            os.kill(self.process.pid, which)


def export(compiled: Any, directory: Path, fcompile: Callable | None = None) -> Path:
    """``compiled`` (a ``CompiledModel``) as a shared library in ``directory``, for ``Worker`` or a
    remote device; ``fcompile``: the compiler that links it (None: the host's)."""
    path = Path(directory) / "model.so"
    compiled.executable.export_library(str(path), fcompile=fcompile)
    return path


def _serve(
    conn: Any, experiment: Experiment, library: str | None, build: Build | None, initialize: Callable[[], None]
) -> None:
    """The worker's loop: build (or load), say so, then answer requests until told to close."""
    from qbuild.errors import one_line

    initialize()
    try:
        model = _open(experiment, library, build)
        description = model.describe() if hasattr(model, "describe") else {"engine": "tvm"}
        conn.send(("ready", {**description, "pid": os.getpid()}))
    except Exception as exc:  # noqa: BLE001 - the caller records it
        conn.send(("error", f"{type(exc).__name__}: {one_line(exc)}"))
        return
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request[0] == "close":
            return
        try:
            conn.send(("done", _handle(model, request, conn)))
        except Exception as exc:  # noqa: BLE001 - the caller records it
            conn.send(("error", f"{type(exc).__name__}: {one_line(exc)}"))


def _open(experiment: Experiment, library: str | None, build: Build | None) -> Any:
    if build is not None:
        from qbuild.models import load_model

        loaded = load_model(experiment.model, experiment.weights, experiment.profile.image_size)
        return build(experiment, loaded)
    import tvm

    from qbuild.compile import CompiledModel

    experiment.target.tvm_target()  # this process's AMX permission, where the target has AMX
    return CompiledModel(tvm.runtime.load_module(library), experiment.target, 0.0, None, {})


def _handle(model: Any, request: tuple, conn: Any) -> Any:
    from qbuild.bench import benchmark, time_ms

    if request[0] == "time":
        _, batch, executions = request
        run = model.prepare(batch)
        run()  # untimed: the first call after a new upload
        return [time_ms(run) for _ in range(executions)]
    if request[0] == "bench":
        _, input_shape, protocol = request
        return benchmark(
            model.prepare, input_shape, protocol, lambda done, total, eta: conn.send(("progress", done, total, eta))
        )
    raise ValueError(f"unknown request {request[0]!r}")
