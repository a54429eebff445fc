"""Carry one experiment through the stages and write its results file.

load -> summarise -> trace -> [quantize] -> compile -> verify -> [kernel_check] -> analyse -> bench -> accuracy.
``kernel_check`` runs for a model with bit-serial layers: each distinct one against NumPy.
A peer baseline (engine "torch" or "onnxruntime") has that engine stand in for the compiled model.

Each stage records ok / error / skipped with its duration (in a parallel plan, ``qbuild.gate``,
neither a wait at the gate nor the time another job had this one stopped); a failing stage records the
exception (type, first line, detail) and the stages that need it are skipped, so a result
always says how far it got and why.
Bad input (a QbuildError) is not a stage failure: it stops the run before anything is written.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from qbuild import environment
from qbuild.errors import QbuildError, one_line
from qbuild.gate import TimingGate, end_with_parent, release_all
from qbuild.plan import Experiment
from qbuild.progress import Progress, format_seconds
from qbuild.results import SCHEMA, ResultsFileError, load_result, result_path, write_result

ARTIFACTS_DIR = "artifacts"
_DETAIL_LIMIT = 4000


class StageLog:
    """Runs stages in order, recording each one's status, duration and error."""

    def __init__(self, progress: Progress, gate: TimingGate | None = None) -> None:
        self.progress = progress
        self.gate = gate or TimingGate()
        self.stages: dict[str, dict] = {}

    def ok(self, name: str) -> bool:
        return self.stages.get(name, {}).get("status") == "ok"

    def skip(self, name: str, reason: str) -> None:
        """Record that stage ``name`` was not run, and why."""
        self.stages[name] = {"status": "skipped", "seconds": 0.0, "reason": reason}
        self.progress.say(f"{name} skipped ({reason})")

    def run(self, name: str, fn: Callable[..., Any], *args: Any, needs: tuple[str, ...] = ()) -> Any:
        """Run ``fn(*args)`` as stage ``name`` unless a stage it ``needs`` did not succeed."""
        missing = [need for need in needs if not self.ok(need)]
        if missing:
            self.skip(name, f"needs {', '.join(missing)}")
            return None
        self.progress.say(f"{name} ...")
        start = time.monotonic()
        try:
            with self.gate.stage(name):
                start = time.monotonic()  # the stage's own time, not its wait at the gate
                value = fn(*args)
        except (QbuildError, KeyboardInterrupt):
            raise
        except Exception as exc:
            seconds = self._seconds_since(start)
            detail = "".join(traceback.format_exception(exc))[-_DETAIL_LIMIT:]
            self.stages[name] = {
                "status": "error",
                "seconds": seconds,
                "error": {"stage": name, "type": type(exc).__name__, "message": one_line(exc), "detail": detail},
            }
            self.progress.say(f"{name} FAILED after {format_seconds(seconds)}: {type(exc).__name__}: {one_line(exc)}")
            return None
        seconds = self._seconds_since(start)
        self.stages[name] = {"status": "ok", "seconds": seconds}
        self.progress.say(f"{name} ok ({format_seconds(seconds)})")
        return value

    def _seconds_since(self, start: float) -> float:
        """The stage's seconds since ``start``, less those in which another job had this one stopped."""
        end = time.monotonic()
        return end - start - self.gate.stopped_seconds(start, end)


@dataclass(frozen=True)
class Outcome:
    """What happened to one experiment: its results file, and whether it was re-used."""

    path: Path
    record: dict
    skipped: bool


def _current_result(path: Path, fingerprint: str, progress: Progress) -> dict | None:
    """The existing result at ``path`` if it is current; a corrupt one is moved aside, not lost."""
    if not path.exists():
        return None
    try:
        existing = load_result(path)
    except ResultsFileError as exc:
        aside = path.with_name(path.name + ".corrupt")
        path.replace(aside)
        progress.say(f"{exc} -- kept as {aside.name}, running again")
        return None
    if existing.record.get("fingerprint") == fingerprint:
        return existing.record
    return None


def run_experiment(experiment: Experiment, root: Path, force: bool = False, progress: Progress | None = None,
                   gate: TimingGate | None = None, jobs: int = 1) -> Outcome:
    """Run ``experiment`` unless a current result exists (``force`` re-runs it); write its results file.
    ``gate``: shared with the other ``jobs`` - 1 jobs of a parallel plan (``qbuild.gate``)."""
    progress = progress or Progress()
    env = environment.capture()
    path = result_path(root, env["machine_id"], experiment.id)
    fingerprint = experiment.fingerprint(env["packages"])
    if not force:
        current = _current_result(path, fingerprint, progress)
        if current is not None:
            progress.say("up to date, skipped (--force re-runs it)")
            return Outcome(path, current, skipped=True)

    record = _run_stages(experiment, path.parent, progress, gate)
    record.update(schema=SCHEMA, id=experiment.id, fingerprint=fingerprint, environment=env, jobs=jobs)
    write_result(path, record)
    progress.say(f"wrote {path}")
    return Outcome(path, record, skipped=False)


def _run_stages(experiment: Experiment, results_dir: Path, progress: Progress, gate: TimingGate | None) -> dict:
    from qbuild.models import load_model, model_summary

    log = StageLog(progress, gate)
    out: dict = {"experiment": experiment.to_json(), "model": None, "quantization": None, "compile": None,
                 "correctness": None, "ir": None, "latency": None, "accuracy": None}

    loaded = log.run("load", load_model, experiment.model, experiment.weights, experiment.profile.image_size)
    if loaded is not None:
        out["experiment"]["weights"] = loaded.weights.to_json()
        out["model"] = log.run("summarise", model_summary, loaded, needs=("load",))
    if experiment.variant.engine != "tvm":
        return _run_peer(experiment, log, loaded, out, progress)
    traced = log.run("trace", lambda: _traced(experiment, loaded), needs=("load",))
    module_stage = "trace"
    config = experiment.variant.config()
    if config is not None:
        quantized = log.run("quantize", lambda: _quantize(experiment, loaded, traced, config), needs=("trace",))
        out["quantization"] = quantized.report() if quantized is not None else None
        module_stage = "quantize"
    compiled = log.run(
        "compile",
        lambda: _compile(quantized.mod if config is not None else traced.inference_module(), experiment),
        needs=(module_stage,),
    )
    if compiled is not None:
        out["compile"] = {"seconds": compiled.seconds, "target": experiment.target.to_json(),
                          "kernels": compiled.kernels, "weight_bytes": compiled.weight_bytes}
    out["correctness"] = log.run("verify", lambda: _verify(compiled, loaded), needs=("compile",))
    if out["quantization"] and out["quantization"]["bitserial_layers"]:
        out["kernel_check"] = log.run("kernel_check", lambda: _check_kernels(quantized.layers), needs=("compile",))
    out["ir"] = log.run("analyse", lambda: _analyse(experiment, compiled, results_dir), needs=("compile",))
    if config is not None:
        out["layer_errors"] = _layers_stage(experiment, log, quantized, loaded, progress)
    return _measure(experiment, log, compiled, loaded, out, progress)


def _layers_stage(experiment: Experiment, log: StageLog, quantized, loaded, progress: Progress) -> dict | None:
    """Each layer's error against the float model (``qbuild.layer_errors``), measured once per
    quantized program: on its builtin CPU build."""
    if experiment.kernels != "builtin" or experiment.target.name != "cpu":
        return log.skip("layers", "every kernel set and target computes the builtin CPU build's integers (tested); "
                                  "layer errors are measured on that build")
    if unscorable := _unscorable(experiment, loaded, "layer errors"):
        return log.skip("layers", unscorable)
    return log.run("layers", lambda: _layer_errors(experiment, quantized, loaded, progress), needs=("quantize",))


def _measure(experiment: Experiment, log: StageLog, model, loaded, out: dict, progress: Progress) -> dict:
    """The bench and accuracy stages, for a compiled model or a peer."""
    out["latency"] = log.run("bench", lambda: _bench(experiment, model, loaded, progress), needs=("compile",))
    if experiment.kernels == "untuned":
        log.skip("accuracy", "untuned kernels compute what the builtin build computes (integer variants bit for "
                             "bit, tested); accuracy is measured on the builtin build")
    elif unscorable := _unscorable(experiment, loaded, "accuracy"):
        log.skip("accuracy", unscorable)
    else:
        out["accuracy"] = log.run("accuracy", lambda: _accuracy(experiment, model, loaded, progress),
                                  needs=("compile",))
    out["stages"] = log.stages
    return out


def _unscorable(experiment: Experiment, loaded, score: str) -> str | None:
    """Why ``experiment`` cannot be scored on labelled images (``score``: accuracy, layer errors), or None."""
    if loaded is not None and loaded.weights.kind != "pretrained":
        return f"random weights: {score} would be meaningless"
    if experiment.dataset is None:
        return "no labelled dataset (pass --dataset DIR)"
    return None


def _run_peer(experiment: Experiment, log: StageLog, loaded, out: dict, progress: Progress) -> dict:
    """A peer baseline: another engine runs the model itself; nothing is traced or generated by qbuild."""
    peer = log.run("compile", lambda: _make_peer(experiment, loaded), needs=("load",))
    if peer is not None:
        out["compile"] = {"seconds": 0.0, "target": experiment.target.to_json(), "peer": peer.describe()}
    log.skip("verify", "peer baseline: checked by its own engine, not against qbuild's reference")
    log.skip("analyse", "peer baseline: qbuild generates no code to census")
    return _measure(experiment, log, peer, loaded, out, progress)


def build(experiment: Experiment, loaded, cuda_graph: bool = True):
    """What ``experiment`` measures, built outside the staged run (no results file): the compiled
    TVM model, or the peer. Errors propagate. ``cuda_graph``: see ``compile_model``."""
    if experiment.variant.engine != "tvm":
        return _make_peer(experiment, loaded)
    return _compile(relax_module(experiment, loaded), experiment, cuda_graph)


def relax_module(experiment: Experiment, loaded):
    """The Relax module ``experiment`` hands to the compiler: traced, and quantized if its variant is."""
    traced = _traced(experiment, loaded)
    config = experiment.variant.config()
    return _quantize(experiment, loaded, traced, config).mod if config is not None else traced.inference_module()


def _make_peer(experiment: Experiment, loaded):
    import tempfile

    from qbuild.peers import OnnxRuntime, OpenVino, TorchEager

    if experiment.variant.engine == "torch":
        return TorchEager(loaded.module, experiment.target.name, **(experiment.variant.options or {}))
    quant_format = experiment.variant.quant_format
    if experiment.variant.engine == "openvino":
        precision = experiment.variant.options["precision"]
        calibration = _calibration_images(experiment, loaded) if precision == "int8" else None
        return OpenVino(loaded.module, loaded.input_shape, precision, calibration)
    with tempfile.TemporaryDirectory(prefix="qbuild-onnx-") as workdir:
        calibration = _calibration_images(experiment, loaded) if quant_format else None
        return OnnxRuntime(loaded.module, loaded.input_shape, Path(workdir), quant_format, calibration)


def _calibration_images(experiment: Experiment, loaded):
    """The held-out calibration images (never evaluated), preprocessed for the model."""
    from qbuild import datasets

    held_out, _ = datasets.load(experiment.dataset).split(experiment.profile.calibration_images)
    return (image for image, _label in datasets.images(held_out, loaded.preprocess))


def _quantize(experiment: Experiment, loaded, traced, config):
    from qbuild.kernels.subbyte_convs import SubbyteConvs
    from qbuild.quantize import quantize

    calibration = _calibration_images(experiment, loaded) if config.needs_data else None
    convs = SubbyteConvs.for_target(experiment.target.tvm_target())
    return quantize(traced.inference_module(), None, calibration, config, convs)


def _compile(mod, experiment: Experiment, cuda_graph: bool = True):
    from qbuild.compile import compile_model

    return compile_model(mod, experiment.target, experiment.kernels, cuda_graph)


def _check_kernels(layers: list[dict]) -> dict:
    from qbuild.subbyte import check_layers

    return check_layers(layers)


def _verify(compiled, loaded) -> dict:
    from qbuild.verify import against_torch

    return against_torch(compiled, loaded.module, loaded.input_shape)


def _analyse(experiment: Experiment, compiled, results_dir: Path) -> dict:
    from qbuild.analysis import analyse_sources, save_artifacts

    sources = compiled.sources()
    census = analyse_sources(sources)
    if census.get("instruction_census", {}).get("source") == "sass":
        census["instruction_census"]["binary"] = compiled.sass_origin
    files = {**sources, "relax.py": compiled.relax_module.script()}
    census["artifacts"] = save_artifacts(files, results_dir / ARTIFACTS_DIR / experiment.id, "module", results_dir)
    return census


def _bench(experiment: Experiment, compiled, loaded, progress: Progress) -> dict:
    """The protocol run in a process of the build's own (``qbuild.isolated``): a TVM build is
    exported and loaded there, a peer made there anew; this process's builds stay out of it."""
    import tempfile

    from qbuild.isolated import Worker, export

    def on_iteration(done: int, total: int, eta_s: float) -> None:
        progress.say(f"bench iteration {done}/{total}, ETA {format_seconds(eta_s)}")

    with tempfile.TemporaryDirectory(prefix="qbuild-bench-") as workdir:
        library = export(compiled, Path(workdir)) if experiment.variant.engine == "tvm" else None
        with Worker(experiment, library, None if library else build) as worker:
            result = worker.bench(loaded.input_shape, experiment.protocol, on_iteration)
    return {**result, "process": "own"}


# What a plan's builds of one model share, made for the first and reused by the next: {what: (key,
# value)}. A plan runs a model's builds one after another, so one model's are kept at a time.
_SHARED: dict[str, tuple] = {}


def _shared(what: str, key: tuple, make):
    """``make()``, or what it made last time for ``what`` if ``key`` is unchanged."""
    held = _SHARED.get(what)
    if held is None or held[0] != key:
        _SHARED.pop(what, None)  # the previous model's goes before the next is made
        _SHARED[what] = (key, make())
    return _SHARED[what][1]


def _model_key(experiment: Experiment, loaded) -> tuple:
    """Which model, with which weights: what the shared values of a model's builds depend on first."""
    return (experiment.model, repr(loaded.weights.to_json()))


def _traced(experiment: Experiment, loaded):
    """The model traced into Relax (its inference module made once too): traced on the first build
    of a model and reused (ResNet-50: ~6 s of tracing and ~8 s of batch-norm folding per build)."""
    from qbuild.trace import trace

    key = (*_model_key(experiment, loaded), tuple(loaded.input_shape))
    return _shared("traced", key, lambda: trace(loaded.module, loaded.input_shape))


def _evaluation(experiment: Experiment, loaded, progress: Progress):
    """The held-out images ``experiment`` is scored on, with the float reference's top-1 on each:
    read and scored on the first build of a model, then reused (on EfficientNet-Lite0, 500
    images: ~20 s per build)."""
    from qbuild import accuracy, datasets

    dataset = datasets.load(experiment.dataset)
    profile = experiment.profile
    key = (*_model_key(experiment, loaded), dataset.id, profile.calibration_images, profile.accuracy_images,
           profile.image_size)

    def score():
        _, held_out = dataset.split(profile.calibration_images)
        held_out = held_out[: profile.accuracy_images]
        progress.say(f"reading {len(held_out)} evaluation images, scoring the float reference on them")
        return accuracy.evaluation(accuracy.torch_logits(loaded.module),
                                   datasets.images(held_out, loaded.preprocess), dataset.id)

    return _shared("evaluation", key, score)


def _accuracy(experiment: Experiment, compiled, loaded, progress: Progress) -> dict:
    from qbuild import accuracy, datasets

    scored = _evaluation(experiment, loaded, progress)
    result = {"labelled": accuracy.labelled(
        compiled, scored, lambda n: progress.say(f"accuracy {n}/{len(scored.labels)} images"))}
    cat = datasets.cat_image()
    result["cat"] = None if cat is None else accuracy.cat(compiled, loaded.preprocess(cat))
    result.update(top1=result["labelled"]["top1"], top5=result["labelled"]["top5"])
    return result


def layer_errors_of(experiment: Experiment, loaded, progress: Progress) -> tuple[dict, list[dict]]:
    """A quantized ``experiment``'s layer errors (``qbuild.layer_errors``) outside a staged run,
    with the quantizer's layer records. Errors propagate."""
    quantized = _quantize(experiment, loaded, _traced(experiment, loaded), experiment.variant.config())
    return _layer_errors(experiment, quantized, loaded, progress), quantized.layers


def _layer_errors(experiment: Experiment, quantized, loaded, progress: Progress) -> dict:
    from qbuild import datasets, layer_errors
    from qbuild.compile import host_tensors

    _, held_out = datasets.load(experiment.dataset).split(experiment.profile.calibration_images)
    images = [image for image, _label in datasets.images(held_out[: layer_errors.LAYER_IMAGES], loaded.preprocess)]
    reference, probed = quantized.layer_outputs()
    progress.say(f"layer errors: {len(quantized.layers)} layers on {len(images)} evaluation images")
    # The float module's layers are the same for every variant of the model: compiled once.
    key = (*_model_key(experiment, loaded), tuple(loaded.input_shape))
    float_layers = _shared("float layers", key, lambda: host_tensors(reference))
    return layer_errors.measure(float_layers, host_tensors(probed), images, quantized.layers)


def run_plan(experiments: list[Experiment], root: Path, force: bool = False, progress: Progress | None = None,
             stop_after_s: float | None = None, jobs: int = 1) -> list[Outcome]:
    """Run every experiment; each result is written as soon as it is done. With ``stop_after_s``,
    no experiment starts once that many seconds have passed (a lent machine's time is limited;
    what finished is kept). With ``jobs`` > 1, the plan's models are shared out to that many
    processes, each running its models' experiments in plan order (a model's builds share its
    trace and evaluation images, ``_shared``): their untimed stages overlap, their timed stages
    run alone (``qbuild.gate``). Outcomes come back in plan order."""
    import time

    from qbuild.results import ensure_writable

    progress = progress or Progress()
    ensure_writable(Path(root))
    numbered = list(enumerate(experiments, start=1))
    deadline = None if stop_after_s is None else time.time() + stop_after_s
    groups = list(_by_model(numbered).values())
    if jobs <= 1 or len(groups) <= 1:
        return [outcome for _, outcome in _run_group(numbered, len(experiments), root, force, progress, deadline)]
    return _run_parallel(groups, len(experiments), root, force, progress.quiet, deadline, jobs)


def _by_model(numbered: list[tuple[int, Experiment]]) -> dict[str, list[tuple[int, Experiment]]]:
    groups: dict[str, list[tuple[int, Experiment]]] = {}
    for index, experiment in numbered:
        groups.setdefault(experiment.model, []).append((index, experiment))
    return groups


def _run_group(numbered: list[tuple[int, Experiment]], total: int, root: Path, force: bool, progress: Progress,
               deadline: float | None, gate_dir: str | None = None, jobs: int = 1) -> list[tuple[int, Outcome]]:
    """Run ``numbered`` (plan index, experiment) in order, in this process; ``(index, outcome)`` each."""
    import time

    gate = TimingGate(gate_dir)
    outcomes = []
    with gate.joined():
        for done, (index, experiment) in enumerate(numbered):
            if deadline is not None and time.time() > deadline:
                progress.prefix = ""
                progress.say("time limit reached: not started: " + ", ".join(e.id for _, e in numbered[done:]))
                break
            progress.experiment(index, total, experiment.id, done, len(numbered) - done)
            outcomes.append((index, run_experiment(experiment, root, force, progress, gate, jobs)))
    progress.prefix = ""
    return outcomes


def _run_group_quietly(numbered, total, root, force, quiet: bool, deadline, gate_dir, jobs) -> list[tuple[int, Outcome]]:
    """``_run_group`` in a job process (a ``Progress`` cannot be sent to one: it holds a stream)."""
    return _run_group(numbered, total, root, force, Progress(quiet=quiet), deadline, gate_dir, jobs)


def _run_parallel(groups: list, total: int, root: Path, force: bool, quiet: bool, deadline: float | None,
                  jobs: int) -> list[Outcome]:
    import multiprocessing
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no TVM thread pool forked mid-use
    workers = min(jobs, len(groups))
    with tempfile.TemporaryDirectory(prefix="qbuild-gate-") as gate_dir, \
            ProcessPoolExecutor(workers, mp_context=context, initializer=end_with_parent) as pool:
        try:
            futures = [pool.submit(_run_group_quietly, group, total, root, force, quiet, deadline, gate_dir, workers)
                       for group in groups]
            numbered = [pair for future in futures for pair in future.result()]
        finally:
            release_all(Path(gate_dir))
    return [outcome for _, outcome in sorted(numbered, key=lambda pair: pair[0])]
