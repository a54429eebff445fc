"""Which hardware to compile for: ``auto`` | ``cpu`` | ``cuda`` | ``rpc:KEY[@DEVICE]`` -> a TVM target and device.

``auto`` picks CUDA when TVM sees a GPU, else the host CPU. The CPU target names the host's
real LLVM ``mcpu`` (e.g. znver4), so LLVM may use every vector extension the chip has, plus
AMX where the CPU has it and Linux lets this process use it (``kernels.amx``).
TVM 0.27 targets are dicts; CLI strings such as "llvm -mcpu=..." are rejected.

``rpc:KEY`` is a CPU reached through a TVM RPC tracker (``qbuild.remote``): the devices registered
under ``KEY``. The build is made here for the device's CPU, described after ``@`` as
``TRIPLE[/MCPU][+FEATURE...]`` (e.g. ``rpc:pi5@aarch64-linux-gnu/cortex-a76+neon+dotprod``), by
default this machine's CPU (a loopback server, or a device of the same kind). That CPU names the
results' machine id (``environment.device_cpu``), with the core count a device under the key
reports when the target is resolved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qbuild.errors import QbuildError

if TYPE_CHECKING:
    import tvm

TARGET_CHOICES = ("auto", "cpu", "cuda", "rpc:KEY")
RPC_PREFIX = "rpc:"


@dataclass(frozen=True)
class TargetChoice:
    """A resolved compilation target."""

    name: str  # "cpu" or "cuda": part of the experiment id
    requested: str  # what the user asked for
    spec: dict  # the TVM target as a dict
    device_name: str  # e.g. "AMD EPYC (znver4, 2 cores)" or "NVIDIA H100 80GB HBM3"
    reason: str  # why this target was chosen
    # An rpc: target's devices: their key, tracker (a qbuild.remote.Tracker) and what they are
    # (environment.device_cpu); None: this machine.
    remote: dict | None = None

    def tvm_target(self) -> "tvm.target.Target":
        """The TVM target; for one with AMX, this process is first given the tile registers (a
        plan's job processes are spawned: Linux's permission does not survive ``exec``)."""
        import tvm

        from qbuild.kernels import amx

        if set(amx.MATTR) <= set(self.spec.get("mattr", [])) and not amx.allowed():
            raise QbuildError(
                "this target uses AMX but Linux does not give this process the tile registers",
                "run on the machine the plan was made for, or plan again here (qbuild picks the "
                "CPU's features when it resolves the target)",
            )
        return tvm.target.Target(self.spec)

    def device(self) -> "tvm.runtime.Device":
        import tvm

        return tvm.cuda(0) if self.name == "cuda" else tvm.cpu(0)

    def to_json(self) -> dict:
        found = {
            "name": self.name,
            "requested": self.requested,
            "spec": self.spec,
            "device": self.device_name,
            "reason": self.reason,
        }
        if self.remote is not None:
            found["remote"] = {"key": self.remote["key"], "machine_id": self.remote["device"]["machine_id"]}
        return found


def gpu_visible() -> bool:
    """Whether TVM's CUDA runtime sees a GPU."""
    import tvm

    try:
        return bool(tvm.cuda(0).exist)
    except Exception:  # a CUDA-less runtime answers with an error, not False
        return False


def _cpu_target(requested: str, reason: str) -> TargetChoice:
    from tvm.target import codegen

    from qbuild.environment import cpu_model
    from qbuild.kernels import amx

    mcpu = codegen.llvm_get_system_cpu()
    cores = os.cpu_count() or 1
    spec = {"kind": "llvm", "mcpu": mcpu, "num-cores": cores}
    if amx.allowed():  # LLVM may name an older core (a VM's CPU model): AMX said explicitly
        spec["mattr"] = list(amx.MATTR)
    return TargetChoice("cpu", requested, spec, f"{cpu_model()} ({mcpu}, {cores} cores)", reason)


def cuda_target(
    arch: str,
    device_name: str | None = None,
    requested: str = "cuda",
    reason: str = "cross-compiling: no GPU needed to build",
) -> TargetChoice:
    """A CUDA target for ``arch`` (e.g. "sm_90"). Without ``device_name`` it is for building and
    analysing only: running needs the GPU (``resolve_target("cuda")`` finds it)."""
    spec = {"kind": "cuda", "arch": arch, "host": {"kind": "llvm"}}
    return TargetChoice("cuda", requested, spec, device_name or f"no device (cross-compiled for {arch})", reason)


def _cuda_target(requested: str, reason: str) -> TargetChoice:
    import tvm

    dev = tvm.cuda(0)
    arch = "sm_" + str(dev.compute_version).replace(".", "")
    return cuda_target(arch, f"{dev.device_name} ({arch})", requested, reason)


def parse_device(description: str) -> dict:
    """An LLVM CPU target for ``TRIPLE[/MCPU][+FEATURE...]`` (mcpu default ``generic``)."""
    head, *features = description.split("+")
    triple, _, mcpu = head.partition("/")
    if not triple or not all(features):
        raise QbuildError(
            f"device description {description!r} is not TRIPLE[/MCPU][+FEATURE...]",
            "write it as e.g. aarch64-linux-gnu/cortex-a76+neon+dotprod",
        )
    spec: dict = {"kind": "llvm", "mtriple": triple, "mcpu": mcpu or "generic"}
    if features:
        spec["mattr"] = [f"+{feature}" for feature in features]
    return spec


def rpc_target(requested: str, tracker_address: str | None = None) -> TargetChoice:
    """The ``rpc:KEY[@DEVICE]`` target (``requested``): the tracker at ``tracker_address`` (None:
    ``$TVM_TRACKER_HOST``/``PORT``) is asked for a device under ``KEY`` to say what it is."""
    from tvm.target import codegen

    from qbuild import environment, remote

    key, _, description = requested[len(RPC_PREFIX) :].partition("@")
    if not key:
        raise QbuildError(f"target {requested!r} names no device key", "write it as rpc:KEY (the servers' --key)")
    tracker = remote.Tracker.parse(tracker_address)
    device = {**environment.device_cpu(description or None, remote.device_cores(tracker, key)), "key": key}
    spec = parse_device(description) if description else {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()}
    if device["cores"]:
        spec["num-cores"] = device["cores"]
    name = f"{device['model']} ({spec['mcpu']}, {device['cores'] or '?'} cores) via RPC key {key}"
    reason = f"requested: devices under key {key!r} at tracker {tracker.address}"
    return TargetChoice("cpu", requested, spec, name, reason, {"key": key, "tracker": tracker, "device": device})


def resolve_target(requested: str = "auto", tracker: str | None = None) -> TargetChoice:
    """Resolve a target choice; ``cuda`` without a visible GPU is a QbuildError. ``tracker``:
    the ``HOST:PORT`` of an ``rpc:`` target's tracker (``rpc_target``)."""
    if requested.startswith(RPC_PREFIX):
        return rpc_target(requested, tracker)
    if requested not in TARGET_CHOICES:
        raise QbuildError(f"unknown target {requested!r}", f"use one of: {', '.join(TARGET_CHOICES)}")
    if requested == "cpu":
        return _cpu_target(requested, "requested")
    has_gpu = gpu_visible()
    if requested == "cuda":
        if not has_gpu:
            raise QbuildError(
                "target cuda was asked for but no CUDA GPU is visible to TVM",
                "run on a machine with an NVIDIA GPU, or use --target cpu (or auto)",
            )
        return _cuda_target(requested, "requested")
    if has_gpu:
        return _cuda_target(requested, "auto: a CUDA GPU is visible")
    return _cpu_target(requested, "auto: no CUDA GPU visible, compiling for the host CPU")
