"""Remote devices over TVM's RPC, on loopback: a tracker and two device servers under the key
``local``, started (and always ended) by these tests; a small plan spread over both, and one
server killed while it serves (its stage retried on the other)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from qbuild.errors import QbuildError
from qbuild.remote import Tracker

KEY = "local"
SERVER_LIFETIME_S = 600  # `timeout` ends every process these tests start, whatever happens to them


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(*module_and_args: str) -> subprocess.Popen:
    """``python -m ...`` under ``timeout``, in a process group of its own (ended with ``end``)."""
    command = ["timeout", str(SERVER_LIFETIME_S), sys.executable, "-m", *module_and_args]
    return subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def end(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def descendants(pid: int) -> int:
    import psutil

    try:
        return len(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return 0


class Pool:
    """A tracker and device servers on loopback."""

    def __init__(self) -> None:
        port = free_port()
        self.tracker = Tracker("127.0.0.1", port)
        self.processes = [
            start("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1))
        ]
        self.servers: dict[str, subprocess.Popen] = {}

    def add_server(self) -> None:
        port = free_port()
        self.servers[f"127.0.0.1:{port}"] = server = start(
            "tvm.exec.rpc_server",
            *("--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)),
            *("--tracker", self.tracker.address, "--key", KEY),
        )
        self.processes.append(server)

    def wait_ready(self) -> None:
        """Until every server started is registered under the key."""
        self.wait_until(lambda: len(self.tracker.servers(KEY)) == len(self.servers), "the servers did not register")

    def wait_until(self, ready, failure: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ended = [p.args[4] for p in self.processes if p.poll() is not None]
            if ended:
                raise RuntimeError(f"ended before the plan: {ended}")
            try:
                if ready():
                    return
            except QbuildError:  # the tracker is still starting
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{failure} within {timeout_s} s")

    def close(self) -> None:
        for process in self.processes:
            end(process)


@pytest.fixture
def pool():
    pytest.importorskip("psutil", reason="pip install psutil")
    pytest.importorskip("tornado", reason="pip install tornado (TVM's RPC tracker needs it)")
    devices = Pool()
    try:
        devices.wait_until(lambda: devices.tracker.servers(KEY) == [], "the tracker did not answer")
        devices.add_server()
        devices.add_server()
        devices.wait_ready()
        yield devices
    finally:
        devices.close()


def tiny_plan(tracker: Tracker, variants: list[str]):
    from qbuild.plan import build_plan

    return build_plan(
        models=["squeezenet1_1"],
        variants=variants,
        targets=[f"rpc:{KEY}"],
        profile="quick",
        weights="random",
        kernels=["builtin"],
        tracker=tracker.address,
    )


def stage_devices(record: dict) -> list[dict]:
    """Where each measuring stage of a result ran."""
    return [record[part]["device"] for part in ("correctness", "latency") if record[part] and "device" in record[part]]


def test_a_tracker_address_comes_from_the_option_or_the_environment(monkeypatch):
    monkeypatch.delenv("TVM_TRACKER_HOST", raising=False)
    assert Tracker.parse("10.0.0.2:9190") == Tracker("10.0.0.2", 9190)
    with pytest.raises(QbuildError, match="tracker"):
        Tracker.parse(None)
    monkeypatch.setenv("TVM_TRACKER_HOST", "board")
    monkeypatch.setenv("TVM_TRACKER_PORT", "9000")
    assert Tracker.parse(None) == Tracker("board", 9000)
    with pytest.raises(QbuildError, match="HOST:PORT"):
        Tracker.parse("board")


def test_a_device_description_gives_its_triple_cpu_and_features():
    from qbuild.targets import parse_device

    assert parse_device("aarch64-linux-gnu/cortex-a76+neon+dotprod") == {
        "kind": "llvm",
        "mtriple": "aarch64-linux-gnu",
        "mcpu": "cortex-a76",
        "mattr": ["+neon", "+dotprod"],
    }
    assert parse_device("aarch64-linux-gnu")["mcpu"] == "generic"
    with pytest.raises(QbuildError, match="TRIPLE"):
        parse_device("aarch64-linux-gnu+")


def test_an_arm_cpu_is_filed_under_a_machine_id_naming_its_dot_product_tier():
    from qbuild.environment import machine_id_of

    flags = ["fp", "asimd", "asimddp"]
    assert machine_id_of("ARM 0x41 part 0xd0b", flags, 4, "aarch64") == "arm-0x41-part-0xd0b-dotprod-4c"
    assert machine_id_of("ARM 0x41 part 0xd0b", [*flags, "i8mm"], 4, "aarch64").endswith("-i8mm-4c")


def test_a_described_device_is_filed_under_its_description_and_core_count():
    from qbuild.environment import device_cpu, machine_id

    device = device_cpu("aarch64-linux-gnu/cortex-a76+neon+dotprod", 4)
    assert device["machine_id"] == "aarch64-linux-gnu-cortex-a76-neon-dotprod-4c"
    assert device["flags"] == ["dotprod", "neon"] and device["cores"] == 4
    assert machine_id().startswith(device_cpu(None, None)["machine_id"]), "without one, this machine's CPU"


def test_a_linux_cpu_list_counts_its_cpus():
    from qbuild.remote import count_cpus

    assert count_cpus("0-3") == 4 and count_cpus("0,2-5") == 5 and count_cpus("0") == 1
    assert count_cpus("") is None and count_cpus("n/a") is None


def test_a_device_that_drops_before_its_session_begins_is_named_and_the_work_moves_on():
    from contextlib import contextmanager

    from qbuild.remote import DeviceError, on_device

    class Device:
        address = "10.0.0.2:9091"

        def load(self, library):
            return f"{library} on {self.address}"

    class Tracker:
        """Assigns 10.0.0.1, which drops as its session is set up, then 10.0.0.2."""

        def __init__(self) -> None:
            self.requests = 0

        @contextmanager
        def session(self, key):
            self.requests += 1
            if self.requests == 1:
                raise DeviceError("device 10.0.0.1:9091 took no session: connection reset", "10.0.0.1:9091")
            yield Device()

    value, where = on_device(Tracker(), KEY, "model.so", lambda model: model)
    assert value == "model.so on 10.0.0.2:9091"
    assert where["address"] == "10.0.0.2:9091"
    assert [failure["address"] for failure in where["failed"]] == ["10.0.0.1:9091"]


def test_an_rpc_target_without_devices_under_its_key_says_how_to_start_one(pool):
    from qbuild.targets import resolve_target

    with pytest.raises(QbuildError, match="rpc_server --tracker"):
        resolve_target("rpc:nobody", pool.tracker.address)


def test_a_plan_on_rpc_local_runs_on_the_loopback_devices_and_files_results_like_local_ones(pool, tmp_path):
    from qbuild import environment
    from qbuild.progress import Progress
    from qbuild.scheduler import run_plan

    plan = tiny_plan(pool.tracker, ["float", "int8-a8"])
    assert {e.target.remote["device"]["machine_id"] for e in plan} == {environment.machine_id()}
    outcomes = run_plan(plan, tmp_path, progress=Progress(quiet=True), jobs=2)
    for outcome in outcomes:
        record = outcome.record
        ran = {name: stage["status"] for name, stage in record["stages"].items() if stage["status"] != "skipped"}
        assert set(ran.values()) == {"ok"}, ran
        assert {"compile", "verify", "analyse", "bench"} <= set(ran)
        assert outcome.path == tmp_path / environment.machine_id() / f"{record['id']}.json"
        assert record["id"].endswith("-cpu-quick"), "the same experiment ids as local ones"
        assert record["environment"]["remote"] == {"key": KEY}
        assert record["correctness"]["cosine_similarity"] > 0.99
        latency = record["latency"]
        assert {"samples_ms", "summary", "warmup_ms", "iterations_run", "executions_run"} <= set(latency)
        assert len(latency["samples_ms"]) == latency["iterations_run"] and latency["summary"]["median_ms"] > 0
        for device in stage_devices(record):
            assert device["address"] in pool.servers and device["failed"] == []


def test_a_device_that_drops_mid_plan_has_its_stage_retried_on_another_device(pool, tmp_path):
    from qbuild.progress import Progress
    from qbuild.scheduler import run_plan

    victim, survivor = sorted(pool.servers)
    idle = descendants(pool.servers[victim].pid)
    killed = threading.Event()

    def kill_when_serving() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed.is_set():
            if descendants(pool.servers[victim].pid) > idle:  # it forked to serve a session
                end(pool.servers[victim])
                killed.set()
            time.sleep(0.02)

    plan = tiny_plan(pool.tracker, ["float", "int8-a8"])  # before the watcher: resolving it holds a device too
    for _ in range(300):  # until that session has ended (30 s at most)
        if descendants(pool.servers[victim].pid) <= idle:
            break
        time.sleep(0.1)
    watcher = threading.Thread(target=kill_when_serving, daemon=True)
    watcher.start()
    try:
        outcomes = run_plan(plan, tmp_path, progress=Progress(quiet=True), jobs=2)
    finally:
        killed.set()
        watcher.join()
    devices = [device for outcome in outcomes for device in stage_devices(outcome.record)]
    for outcome in outcomes:
        failed = {n: s for n, s in outcome.record["stages"].items() if s["status"] == "error"}
        assert failed == {}, failed
    retried = [device for device in devices if device["failed"]]
    assert len(retried) == 1, devices
    assert retried[0]["failed"][0]["address"] == victim and retried[0]["address"] == survivor
    assert {device["address"] for device in devices if device is not retried[0]} <= set(pool.servers)


def test_an_aarch64_int8_build_uses_the_dot_product_instructions():
    import torch

    from qbuild.analysis import instruction_census
    from qbuild.compile import compile_model
    from qbuild.quantize import quantize
    from qbuild.targets import TargetChoice, parse_device
    from qbuild.trace import trace

    model = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 1))
    module = trace(model.eval(), (1, 16, 16, 16)).inference_module()
    spec = parse_device("aarch64-linux-gnu/cortex-a76+neon+dotprod")
    target = TargetChoice("cpu", "rpc:arm", spec, "aarch64 (cross-compiled)", "test")
    compiled = compile_model(quantize(module).mod, target, "builtin")
    census = instruction_census(compiled.sources()["s"])
    assert census["families"]["int8 dot NEON (sdot/udot)"] > 0, census["top_mnemonics"]
    assert census["vector_registers"]["neon"] > 0
