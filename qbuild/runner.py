"""Carry one experiment through its stages (``qbuild.stages``) and write its results file.

Each stage records ok / error / skipped with its duration (``qbuild.stagelog``); the stages that
need a failed one are skipped, so a result always says how far it got and why. Bad input (a
QbuildError) is not a stage failure: it stops the run before anything is written. A plan's
experiments are scheduled by ``qbuild.scheduler``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qbuild import environment, stages
from qbuild.gate import TimingGate
from qbuild.plan import Experiment
from qbuild.progress import Progress
from qbuild.results import result_path, write_result
from qbuild.schema.kinds import RESULTS
from qbuild.schema.results import ResultsFileError, load_result
from qbuild.session import ModelSession
from qbuild.stagelog import StageLog
from qbuild.stages import NEEDS


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


def run_experiment(
    experiment: Experiment,
    root: Path,
    force: bool = False,
    progress: Progress | None = None,
    gate: TimingGate | None = None,
    jobs: int = 1,
    session: ModelSession | None = None,
) -> Outcome:
    """Run ``experiment`` unless a current result exists (``force`` re-runs it); write its results file.
    ``gate``: shared with the other ``jobs`` - 1 jobs of a parallel plan (``qbuild.gate``);
    ``session``: what the other builds of its model made (None: a new one)."""
    progress = progress or Progress()
    env = environment.capture(experiment.target.remote and experiment.target.remote["device"])
    path = result_path(root, env["machine_id"], experiment.id)
    fingerprint = experiment.fingerprint(env["packages"])
    if not force:
        current = _current_result(path, fingerprint, progress)
        if current is not None:
            progress.say("up to date, skipped (--force re-runs it)")
            return Outcome(path, current, skipped=True)

    record = _run_stages(experiment, path.parent, progress, gate, session or ModelSession())
    record.update(schema=RESULTS, id=experiment.id, fingerprint=fingerprint, environment=env, jobs=jobs)
    write_result(path, record)
    progress.say(f"wrote {path}")
    return Outcome(path, record, skipped=False)


def _run_stages(
    experiment: Experiment, results_dir: Path, progress: Progress, gate: TimingGate | None, session: ModelSession
) -> dict:
    from qbuild.models import load_model, model_summary

    log = StageLog(progress, gate)
    out: dict = {
        "experiment": experiment.to_json(),
        "model": None,
        "quantization": None,
        "compile": None,
        "correctness": None,
        "ir": None,
        "latency": None,
        "accuracy": None,
    }

    loaded = log.run("load", load_model, experiment.model, experiment.weights, experiment.profile.image_size)
    if loaded is not None:
        out["experiment"]["weights"] = loaded.weights.to_json()
        out["model"] = log.run("summarise", model_summary, loaded, needs=NEEDS["summarise"])
    if experiment.variant.engine != "tvm":
        return _run_peer(experiment, log, loaded, out, progress, session)
    traced = log.run("trace", lambda: session.traced(experiment, loaded), needs=NEEDS["trace"])
    module_stage = "trace"
    config = experiment.variant.config()
    integer = config is not None or experiment.variant.imported_from is not None
    if integer:
        quantized = log.run(
            "quantize",
            lambda: (
                stages.quantize(experiment, loaded, traced, config, session)
                if config is not None
                else stages.import_quantized(experiment, loaded)
            ),
            needs=NEEDS["quantize"],
        )
        out["quantization"] = quantized.report() if quantized is not None else None
        module_stage = "quantize"
    compiled = log.run(
        "compile",
        lambda: stages.compile_module(quantized.mod if integer else traced.inference_module(), experiment),
        needs=(module_stage,),
    )
    if compiled is not None:
        out["compile"] = {
            "seconds": compiled.seconds,
            "target": experiment.target.to_json(),
            "kernels": compiled.kernels,
            "weight_bytes": compiled.weight_bytes,
        }
    out["correctness"] = log.run(
        "verify", lambda: stages.verify(experiment, compiled, loaded, progress), needs=NEEDS["verify"]
    )
    if out["quantization"] and out["quantization"]["bitserial_layers"]:
        out["kernel_check"] = log.run(
            "kernel_check", lambda: stages.check_kernels(quantized.layers), needs=NEEDS["kernel_check"]
        )
    out["ir"] = log.run("analyse", lambda: stages.analyse(experiment, compiled, results_dir), needs=NEEDS["analyse"])
    if integer:
        out["layer_errors"] = None
        if reason := stages.why_no_layer_errors(experiment, loaded):
            log.skip("layers", reason)
        else:
            out["layer_errors"] = log.run(
                "layers",
                lambda: stages.layer_errors(experiment, quantized, loaded, progress, session),
                needs=NEEDS["layers"],
            )
    return _measure(experiment, log, compiled, loaded, out, progress, session)


def _measure(
    experiment: Experiment, log: StageLog, model, loaded, out: dict, progress: Progress, session: ModelSession
) -> dict:
    """The bench and accuracy stages, for a compiled model or a peer."""
    out["latency"] = log.run("bench", lambda: stages.bench(experiment, model, loaded, progress), needs=NEEDS["bench"])
    if reason := stages.why_no_accuracy(experiment, loaded):
        log.skip("accuracy", reason)
    else:
        out["accuracy"] = log.run(
            "accuracy", lambda: stages.accuracy(experiment, model, loaded, progress, session), needs=NEEDS["accuracy"]
        )
    out["stages"] = log.stages
    return out


def _run_peer(
    experiment: Experiment, log: StageLog, loaded, out: dict, progress: Progress, session: ModelSession
) -> dict:
    """A peer baseline: another engine runs the model itself; nothing is traced or generated by qbuild."""
    peer = log.run("compile", lambda: stages.make_peer(experiment, loaded), needs=("load",))
    if peer is not None:
        out["compile"] = {"seconds": 0.0, "target": experiment.target.to_json(), "peer": peer.describe()}
    log.skip("verify", "peer baseline: checked by its own engine, not against qbuild's reference")
    log.skip("analyse", "peer baseline: qbuild generates no code to census")
    return _measure(experiment, log, peer, loaded, out, progress, session)
