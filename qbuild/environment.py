"""What machine and software a result was measured with; the machine id that files results.

Reads /proc/cpuinfo, package metadata, nvidia-smi and git; imports neither TVM nor torch.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shutil
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGES = ("apache-tvm", "apache-tvm-ffi", "torch", "torchvision", "numpy", "onnxruntime")
# CPU flags that decide which kernels a chip can run; they name the machine id's ISA tag.
# The first flag the CPU has names its kernels' ISA in the machine id: AMX's tile multiply, then
# the vector extensions (a Xeon with AMX and one without run different int8 convs and tunings).
ISA_TAGS = (
    ("amx_int8", "amx"),
    ("avx512_vnni", "avx512vnni"),
    ("avx512f", "avx512"),
    ("avx2", "avx2"),
    # ARM: the int8 matrix multiply (smmla), the dot products (sdot/udot), NEON.
    ("i8mm", "i8mm"),
    ("asimddp", "dotprod"),
    ("asimd", "neon"),
)
_PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Set, they name the commit (and "1": with uncommitted changes) instead of asking git.
GIT_COMMIT_VAR, GIT_DIRTY_VAR = "QBUILD_GIT_COMMIT", "QBUILD_GIT_DIRTY"


@lru_cache(maxsize=1)
def cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor is enough
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def model_of(fields: dict[str, str]) -> str | None:
    """A CPU's name in its cpuinfo fields: x86's ``model name``; an ARM core's implementer and part."""
    if fields.get("model name"):
        return fields["model name"]
    if fields.get("CPU implementer") and fields.get("CPU part"):
        return f"ARM {fields['CPU implementer']} part {fields['CPU part']}"
    return None


def flags_of(fields: dict[str, str]) -> list[str]:
    """A CPU's feature flags in its cpuinfo fields (x86 ``flags``, ARM ``Features``)."""
    return sorted((fields.get("flags") or fields.get("Features") or "").split())


def cpu_model() -> str:
    """The CPU's marketing name, e.g. 'AMD EPYC 9454'."""
    return model_of(cpuinfo()) or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU feature flags the kernel reports (avx2, avx512_vnni, ...; asimd, asimddp, ... on ARM)."""
    return flags_of(cpuinfo())


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name, or None when there is none."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return names[0] if names else None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_id() -> str:
    """A stable name for this kind of machine (``machine_id_of`` this one, with its GPU)."""
    return machine_id_of(cpu_model(), cpu_flags(), os.cpu_count() or 1, platform.machine(), gpu_name())


def machine_id_of(model: str, flags: list[str], cores: int, arch: str, gpu: str | None = None) -> str:
    """A stable name for a kind of machine: CPU model, widest ISA (``ISA_TAGS``; else ``arch``),
    cores (+ GPU).

    Two VMs that both call themselves "AMD EPYC" but differ in AVX-512 get different ids,
    since that decides which kernels run.
    """
    isa = next((tag for flag, tag in ISA_TAGS if flag in set(flags)), arch.lower())
    parts = [_slug(model), isa, f"{cores}c"]
    if gpu:
        parts.append(_slug(gpu))
    return "-".join(parts)


def device_cpu(description: str | None, cores: int | None) -> dict:
    """A remote device's CPU (``model``, ``cores``, ``flags``) and ``machine_id``, with ``cores``
    as the device counts them (None: unknown). Without a ``description`` it is this machine's
    kind of CPU (``machine_id_of`` it, without a GPU); else the ``TRIPLE[/MCPU][+FEATURE...]``
    it was described as names it."""
    if description is None:
        cores = cores or os.cpu_count() or 1
        machine = machine_id_of(cpu_model(), cpu_flags(), cores, platform.machine())
        return {"machine_id": machine, "model": cpu_model(), "cores": cores, "flags": cpu_flags()}
    head, *features = description.split("+")
    machine = "-".join([_slug(description), *([f"{cores}c"] if cores else [])])
    return {"machine_id": machine, "model": head, "cores": cores, "flags": sorted(features)}


def git_revision() -> dict:
    """The project's git commit and whether the work tree had uncommitted changes."""

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=_PROJECT_ROOT, capture_output=True, text=True, timeout=20, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    if os.environ.get(GIT_COMMIT_VAR):
        # A copy of the work tree run elsewhere (a lent GPU machine, whose copy may carry a stale
        # .git): the caller names the commit it copied.
        return {"commit": os.environ[GIT_COMMIT_VAR], "dirty": os.environ.get(GIT_DIRTY_VAR) == "1"}
    commit = git("rev-parse", "HEAD")
    # results/ is written by the run itself: its changes say nothing about the code that ran.
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the results (None when absent)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def capture(device: dict | None = None) -> dict:
    """The environment block of a results file; ``device``: the remote device it was measured on
    (``device_cpu``, with its ``key``), whose machine id and CPU it then names, this machine's
    CPU under ``build_host``."""
    from qbuild import __version__, threads

    cpu = {
        "model": cpu_model(),
        "cores": os.cpu_count(),
        "flags": cpu_flags(),
        "tvm_threads": int(os.environ.get(threads.ENV_VAR, "0")) or None,
    }
    env = {
        "machine_id": machine_id(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "qbuild": __version__,
        "git": git_revision(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu,
        "gpu": gpu_name(),
    }
    if device is not None:
        env.update(
            machine_id=device["machine_id"],
            cpu={**{name: device[name] for name in ("model", "cores", "flags")}, "tvm_threads": None},
            gpu=None,
            build_host={"machine_id": env["machine_id"], "cpu": cpu},
            remote={"key": device["key"]},
        )
    return env
