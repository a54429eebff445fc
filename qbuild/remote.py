"""Devices reached over TVM's RPC: a tracker hands out the device servers registered under a key.

A key names a kind of device: every server started with ``--key KEY`` against the tracker is one
device of that kind (TVM's tracker matches keys whole, and gives each free server to one session
at a time, in turn). ``Tracker.session(key)`` waits for the next free device under the key and
holds it for the block: so a device runs one stage at a time, and the devices of a key share a
plan's stages among them.

On a device, ``RemoteModel`` is a library built here (cross-compiled for the device's target,
``export_library``) uploaded and loaded into a Relax VM there: called with a batch it answers the
logits (verify, accuracy), and ``timer`` times runs on the device itself (``time_evaluator``:
the clock is the device's, not the round trip's). ``on_device`` runs a stage's work on a device
and, when that device fails (it dropped, its session broke), once more on another device of the
key, recording both.

What a device is: the target's description says (``qbuild.targets``); ``cores`` counts the
device's CPUs from the list Linux gives in sysfs (an RPC server sends only files whose size it
can read, which ``/proc`` files have not).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np

from qbuild.errors import QbuildError, one_line

if TYPE_CHECKING:
    import tvm

T = TypeVar("T")

HOST_VAR, PORT_VAR = "TVM_TRACKER_HOST", "TVM_TRACKER_PORT"
DEFAULT_PORT = 9190
# How long a request waits for a free device under its key, and how long a session may last.
REQUEST_TIMEOUT_S = 600.0
SESSION_TIMEOUT_S = 3600
_TIMED_FUNCTION = "qbuild_timed"  # the VM closure that time_evaluator runs on an uploaded batch
_ONLINE_CPUS = "/sys/devices/system/cpu/online"  # e.g. "0-3" or "0,2-5"
_PROBE_TIMEOUT_S = 5.0


class DeviceError(RuntimeError):
    """A device failed a stage's work: the RPC error (its one line), on each device tried;
    ``address`` names the device where one was assigned."""

    def __init__(self, message: str, address: str | None = None) -> None:
        super().__init__(message)
        self.address = address


@dataclass(frozen=True)
class Tracker:
    """A TVM RPC tracker's address."""

    host: str
    port: int

    @classmethod
    def parse(cls, address: str | None) -> "Tracker":
        """``HOST:PORT`` (``address``), or ``$TVM_TRACKER_HOST`` and ``$TVM_TRACKER_PORT`` (default 9190)."""
        fix = f"pass --tracker HOST:PORT or set ${HOST_VAR} (and ${PORT_VAR})"
        if not address:
            if not os.environ.get(HOST_VAR):
                raise QbuildError("an rpc: target needs the address of a TVM RPC tracker", fix)
            address = f"{os.environ[HOST_VAR]}:{os.environ.get(PORT_VAR, DEFAULT_PORT)}"
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise QbuildError(f"tracker address {address!r} is not HOST:PORT", fix)
        return cls(host, int(port))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def servers(self, key: str) -> list[str]:
        """The addresses (``host:port``) of the device servers registered under ``key``."""
        from tvm import rpc

        try:
            socket.create_connection((self.host, self.port), timeout=_PROBE_TIMEOUT_S).close()  # TVM retries 60 s
            summary = rpc.connect_tracker(self.host, self.port).summary()
        except (OSError, RuntimeError) as exc:
            raise QbuildError(
                f"no TVM RPC tracker answers at {self.address} ({one_line(exc)})",
                "start one: python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port PORT",
            ) from None
        return sorted(
            f"{info['addr'][0]}:{info['addr'][1]}"
            for info in summary["server_info"]
            if info.get("key") == f"server:{key}"
        )

    @contextmanager
    def session(self, key: str, timeout_s: float = REQUEST_TIMEOUT_S) -> Iterator["Device"]:
        """The next free device under ``key``, held for the block (``DeviceError`` if none frees
        up within ``timeout_s``)."""
        from tvm import rpc
        from tvm.rpc import base

        tracker = socket.create_connection((self.host, self.port), timeout=timeout_s)
        try:
            tracker.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            base.recvall(tracker, 4)
            base.sendjson(tracker, [base.TrackerCode.REQUEST, key, "", 1])
            code, (host, port, match_key) = base.recvjson(tracker)
        except OSError as exc:
            raise DeviceError(f"no device under key {key!r} at {self.address}: {one_line(exc)}") from None
        finally:
            tracker.close()
        if code != base.TrackerCode.SUCCESS:
            raise DeviceError(f"the tracker at {self.address} refused a device under key {key!r}")
        address = f"{host}:{port}"
        try:
            session = rpc.connect(host, port, match_key, session_timeout=SESSION_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a server that dropped answers with any of TVM's errors
            raise DeviceError(f"device {address} took no session: {one_line(exc)}", address) from None
        device = Device(key, address, session)
        try:
            yield device
        finally:
            device.close()


@dataclass
class Device:
    """One device server's session."""

    key: str
    address: str  # the server's host:port, as the tracker knows it
    session: Any  # tvm.rpc.RPCSession

    def load(self, library: Path) -> "RemoteModel":
        """``library`` (an exported TVM build) uploaded to the device and loaded there."""
        from tvm import relax

        self.session.upload(str(library))
        module = self.session.load_module(Path(library).name)
        device = self.session.cpu(0)
        return RemoteModel(relax.VirtualMachine(module, device), device)

    def close(self) -> None:
        """End the session (the server then registers again as free), whatever still refers to it."""
        import gc

        self.session = None
        gc.collect()  # the VM and modules loaded in the session refer to each other

    def cores(self) -> int | None:
        """How many CPUs the device has online (None where it does not say: not Linux)."""
        try:
            text = bytes(self.session.download(_ONLINE_CPUS)).decode(errors="replace").strip("\x00\n ")
        except Exception:  # noqa: BLE001 - a missing file answers with an RPC error
            return None
        return count_cpus(text)


def count_cpus(ranges: str) -> int | None:
    """The CPUs of a Linux CPU list such as ``0-3,6`` (None for anything else)."""
    count = 0
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or not (last or first).isdigit():
            return None
        count += int(last or first) - int(first) + 1
    return count or None


class RemoteModel:
    """A build loaded on a device: ``model(batch) -> logits``, and ``timer`` for the protocol."""

    def __init__(self, vm: "tvm.relax.VirtualMachine", device: "tvm.runtime.Device") -> None:
        self.vm = vm
        self.device = device

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        # The stateful calls: a tuple of outputs cannot come back over RPC as one value.
        self.vm.set_input("main", self._upload(batch))
        self.vm.invoke_stateful("main")
        out = self.vm.get_outputs("main")
        while not hasattr(out, "numpy"):  # a tuple of outputs: the logits are the first
            out = out[0]
        return out.numpy()

    def timer(self, batch: np.ndarray) -> Callable[[int], list[float]]:
        """Upload ``batch`` once; the returned function times ``n`` runs on it on the device (ms
        each; ``time_evaluator`` runs it once untimed first)."""
        self.vm.save_function("main", _TIMED_FUNCTION, self._upload(batch))

        def time_runs(n: int) -> list[float]:
            evaluator = self.vm.time_evaluator(_TIMED_FUNCTION, self.device, number=1, repeat=n)
            return [seconds * 1e3 for seconds in evaluator().results]

        return time_runs

    def _upload(self, batch: np.ndarray) -> "tvm.runtime.Tensor":
        import tvm

        return tvm.runtime.tensor(np.ascontiguousarray(batch, dtype=np.float32), self.device)


def on_device(
    tracker: Tracker,
    key: str,
    library: Path,
    work: Callable[[RemoteModel], T],
    say: Callable[[str], None] = lambda line: None,
) -> tuple[T, dict]:
    """``work(model)`` on the next free device under ``key``, ``library`` loaded there; when the
    device fails, once more on the next device. Returns what ``work`` returned and where it ran:
    ``{"key", "address", "failed": [{"address", "error"}]}``. Both failed: ``DeviceError``."""
    failed: list[dict] = []
    for _attempt in range(2):
        address = None
        try:
            with tracker.session(key) as device:
                address = device.address
                say(f"on device {address} (key {key})")
                value = work(device.load(library))
            return value, {"key": key, "address": address, "failed": failed}
        except QbuildError:
            raise
        except Exception as exc:  # noqa: BLE001 - a dropped device answers with any of TVM's errors
            if isinstance(exc, DeviceError) and exc.address:
                address = exc.address  # assigned, but it dropped before its session began
            failed.append({"address": address, "error": f"{type(exc).__name__}: {one_line(exc)}"})
            say(f"device {address} failed ({failed[-1]['error']}); trying another device of key {key}")
    raise DeviceError("; ".join(f"{f['address']}: {f['error']}" for f in failed))


def device_cores(tracker: Tracker, key: str, timeout_s: float = 60.0) -> int | None:
    """How many CPUs a device under ``key`` has (``Device.cores``); a QbuildError when no device
    is registered under it."""
    if not tracker.servers(key):
        raise QbuildError(
            f"no device server is registered under key {key!r} at tracker {tracker.address}",
            f"start one on the device: python -m tvm.exec.rpc_server --tracker {tracker.address} --key {key}",
        )
    with tracker.session(key, timeout_s) as device:
        return device.cores()


def cross_compiler(triple: str | None) -> Callable | None:
    """The ``export_library`` compiler for a build whose LLVM triple is ``triple``: None (the
    host's) for the host's architecture, else the toolchain's ``<triple>-gcc`` (Debian's
    ``gcc-aarch64-linux-gnu`` for aarch64); a QbuildError when it is missing."""
    import platform
    import shutil

    from tvm.support import cc

    if triple is None or triple.split("-")[0] == platform.machine():
        return None
    compiler = f"{triple}-gcc"
    if shutil.which(compiler) is None:
        package = f"gcc-{triple}"
        raise QbuildError(
            f"linking a library for {triple} needs the cross compiler {compiler}",
            f"install it (Debian: apt-get install -y {package})",
        )
    return cc.cross_compiler(compiler)
