"""The stages of one experiment, each a function of what the earlier ones made, and ``NEEDS``: the
stages each one needs to have succeeded. ``qbuild.runner`` runs them in order and records them.

load -> summarise -> trace -> [quantize] -> compile -> verify -> [kernel_check] -> analyse ->
[layers] -> bench -> accuracy. A peer baseline (engine "torch", "onnxruntime", "openvino") has that
engine stand in for the compiled model (``make_peer``). The values a model's builds share come
from its ``ModelSession``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

from qbuild.plan import Experiment
from qbuild.progress import Progress, format_seconds
from qbuild.session import ModelSession

ARTIFACTS_DIR = "artifacts"
T = TypeVar("T")

# Stage -> the stages it needs (compile needs whichever of trace and quantize made its module).
NEEDS: dict[str, tuple[str, ...]] = {
    "load": (),
    "summarise": ("load",),
    "trace": ("load",),
    "quantize": ("trace",),
    "verify": ("compile",),
    "kernel_check": ("compile",),
    "analyse": ("compile",),
    "layers": ("quantize",),
    "bench": ("compile",),
    "accuracy": ("compile",),
}


def quantize(experiment: Experiment, loaded: Any, traced: Any, config: Any, session: ModelSession) -> Any:
    """The traced model quantized under ``config`` for the experiment's target (``qbuild.quantize``),
    its rounding by GPTQ where ``config`` asks to learn it by block reconstruction and that cannot
    or need not run (``reconstruction_skipped``); the results record the config used and why."""
    from qbuild.kernels.subbyte_convs import SubbyteConvs
    from qbuild.quantize import quantize as quantize_module

    config, skipped = reconstruction_skipped(config, loaded, traced)
    calibration = calibration_images(experiment, loaded) if config.needs_data else None
    convs = SubbyteConvs.for_target(experiment.target.tvm_target())
    quantized = quantize_module(traced.inference_module(), None, calibration, config, convs, session.memory)
    if skipped is not None:
        quantized.calibration["reconstruction_skipped"] = skipped
    return quantized


def reconstruction_skipped(config: Any, loaded: Any, traced: Any) -> tuple[Any, str | None]:
    """``config``, with GPTQ's rounding where it asks for block reconstruction that would not pay
    (random weights: no accuracy to keep) or cannot run (an op its PyTorch mirror lacks), and why."""
    import dataclasses

    from qbuild.quantize import reconstruction_refusal

    if config.weight_rounding != "reconstruct":
        return config, None
    if loaded.weights.kind != "pretrained":
        why = "random weights"
    else:
        refused = reconstruction_refusal(traced.inference_module())
        if refused is None:
            return config, None
        why = f"the PyTorch mirror cannot run {refused}"
    return dataclasses.replace(config, weight_rounding="gptq"), why


def import_quantized(experiment: Experiment, loaded: Any) -> Any:
    """The model quantized in QDQ form by the variant's producer on the held-out calibration images
    (``qbuild.peers.qdq_model``; ONNX Runtime's is the ``ort-int8-qdq`` peer's model), imported as
    qbuild's integer program (``qbuild.quantize.load_quantized``)."""
    import tempfile

    from qbuild.peers import qdq_model
    from qbuild.quantize import load_quantized

    producer = experiment.variant.imported_from
    with tempfile.TemporaryDirectory(prefix="qbuild-qdq-") as workdir:
        calibration = calibration_images(experiment, loaded)
        path = qdq_model(loaded.module, loaded.input_shape, Path(workdir), producer, calibration)
        return load_quantized(path, producer)


def compile_module(mod: Any, experiment: Experiment, cuda_graph: bool = True) -> Any:
    """``mod`` compiled for the experiment's target and kernel set (``compile.compile_model``)."""
    from qbuild.compile import compile_model

    return compile_model(mod, experiment.target, experiment.kernels, cuda_graph)


def check_kernels(layers: list[dict]) -> dict:
    """Each distinct bit-serial layer built alone and checked against NumPy (``qbuild.subbyte``)."""
    from qbuild.subbyte import check_layers

    return check_layers(layers)


def verify(experiment: Experiment, compiled: Any, loaded: Any, progress: Progress) -> dict:
    """The compiled model against PyTorch on one input (``qbuild.verify``), run where it is measured."""
    from qbuild.verify import against_torch

    return where_measured(
        experiment, compiled, lambda model: against_torch(model, loaded.module, loaded.input_shape), progress
    )


def where_measured(experiment: Experiment, compiled: Any, work: Callable[[Any], dict], progress: Progress) -> dict:
    """``work(compiled)`` here, or on a device of ``experiment``'s ``rpc:`` target (``on_device``),
    its result then naming the device (``"device"``)."""
    if experiment.target.remote is None:
        return work(compiled)
    result, where = on_device(experiment, compiled, work, progress)
    return {**result, "device": where}


def on_device(experiment: Experiment, compiled: Any, work: Callable[[Any], T], progress: Progress) -> tuple[T, dict]:
    """``work(model)`` on a device of ``experiment``'s ``rpc:`` target, ``compiled`` exported for
    it (``qbuild.remote.on_device``: another device of the key if the first fails); and where it ran."""
    import tempfile

    from qbuild import remote
    from qbuild.isolated import export

    where = experiment.target.remote
    with tempfile.TemporaryDirectory(prefix="qbuild-remote-") as workdir:
        library = export(compiled, Path(workdir), remote.cross_compiler(experiment.target.spec.get("mtriple")))
        return remote.on_device(where["tracker"], where["key"], library, work, progress.say)


def analyse(experiment: Experiment, compiled: Any, results_dir: Path) -> dict:
    """The instruction census of the generated code; the sources saved as artifacts."""
    from qbuild.analysis import analyse_sources, save_artifacts

    sources = compiled.sources()
    census = analyse_sources(sources)
    if census.get("instruction_census", {}).get("source") == "sass":
        census["instruction_census"]["binary"] = compiled.sass_origin
    files = {**sources, "relax.py": compiled.relax_module.script()}
    census["artifacts"] = save_artifacts(files, results_dir / ARTIFACTS_DIR / experiment.id, "module", results_dir)
    return census


def bench(experiment: Experiment, compiled: Any, loaded: Any, progress: Progress) -> dict:
    """The protocol run in a process of the build's own (``qbuild.isolated``): a TVM build is
    exported and loaded there, a peer made there anew; this process's builds stay out of it. On
    an ``rpc:`` target, run and timed on a device (``on_device``)."""
    import tempfile

    from qbuild.bench import benchmark_timed
    from qbuild.isolated import Worker, export

    def on_iteration(done: int, total: int, eta_s: float) -> None:
        progress.say(f"bench iteration {done}/{total}, ETA {format_seconds(eta_s)}")

    if experiment.target.remote is not None:
        timed, where = on_device(
            experiment,
            compiled,
            lambda model: benchmark_timed(model.timer, loaded.input_shape, experiment.protocol, on_iteration),
            progress,
        )
        return {**timed, "process": "device", "device": where}
    with tempfile.TemporaryDirectory(prefix="qbuild-bench-") as workdir:
        library = export(compiled, Path(workdir)) if experiment.variant.engine == "tvm" else None
        with Worker(experiment, library, None if library else build) as worker:
            result = worker.bench(loaded.input_shape, experiment.protocol, on_iteration)
    return {**result, "process": "own"}


def accuracy(experiment: Experiment, compiled: Any, loaded: Any, progress: Progress, session: ModelSession) -> dict:
    """Top-1/top-5 on the held-out labelled images and the agreement with the float reference, and
    the cat image's top classes."""
    from qbuild import accuracy as scoring
    from qbuild import datasets

    scored = session.evaluation(experiment, loaded, progress)
    cat = datasets.cat_image()

    def score(run: Any) -> dict:
        result = {
            "labelled": scoring.labelled(
                run, scored, lambda n: progress.say(f"accuracy {n}/{len(scored.labels)} images")
            )
        }
        result["cat"] = None if cat is None else scoring.cat(run, loaded.preprocess(cat))
        result.update(top1=result["labelled"]["top1"], top5=result["labelled"]["top5"])
        return result

    return where_measured(experiment, compiled, score, progress)


def layer_errors(
    experiment: Experiment, quantized: Any, loaded: Any, progress: Progress, session: ModelSession
) -> dict:
    """Each layer's error against the float model (``qbuild.layer_errors``) on held-out images."""
    from qbuild import datasets
    from qbuild import layer_errors as errors
    from qbuild.compile import host_tensors

    _, held_out = datasets.load(experiment.dataset).split(experiment.profile.calibration_images)
    images = [image for image, _label in datasets.images(held_out[: errors.LAYER_IMAGES], loaded.preprocess)]
    reference, probed = quantized.layer_outputs()
    progress.say(f"layer errors: {len(quantized.layers)} layers on {len(images)} evaluation images")
    float_layers = session.float_layers(experiment, loaded, reference)
    return errors.measure(float_layers, host_tensors(probed), images, quantized.layers)


def unscorable(experiment: Experiment, loaded: Any, score: str) -> str | None:
    """Why ``experiment`` cannot be scored on labelled images (``score``: accuracy, layer errors), or None."""
    if loaded is not None and loaded.weights.kind != "pretrained":
        return f"random weights: {score} would be meaningless"
    if experiment.dataset is None:
        return "no labelled dataset (pass --dataset DIR)"
    return None


def why_no_layer_errors(experiment: Experiment, loaded: Any) -> str | None:
    """Why a quantized ``experiment`` measures no layer errors, or None: they are measured once per
    quantized program, on its builtin CPU build, and only where it can be scored."""
    if experiment.variant.imported_from is not None:
        return "an imported model's float source is its ONNX graph, not qbuild's trace: no layer-by-layer reference"
    if experiment.kernels != "builtin" or experiment.target.name != "cpu":
        return (
            "every kernel set and target computes the builtin CPU build's integers (tested); "
            "layer errors are measured on that build"
        )
    return unscorable(experiment, loaded, "layer errors")


def why_no_accuracy(experiment: Experiment, loaded: Any) -> str | None:
    """Why ``experiment`` measures no accuracy, or None."""
    if experiment.kernels == "untuned":
        return (
            "untuned kernels compute what the builtin build computes (integer variants bit for "
            "bit, tested); accuracy is measured on the builtin build"
        )
    return unscorable(experiment, loaded, "accuracy")


def make_peer(experiment: Experiment, loaded: Any) -> Any:
    """The peer engine's build of the model (``qbuild.peers``)."""
    import tempfile

    from qbuild.peers import OnnxRuntime, OpenVino, TorchEager

    if experiment.variant.engine == "torch":
        return TorchEager(loaded.module, experiment.target.name, **(experiment.variant.options or {}))
    quant_format = experiment.variant.quant_format
    if experiment.variant.engine == "openvino":
        precision = experiment.variant.options["precision"]
        calibration = calibration_images(experiment, loaded) if precision == "int8" else None
        return OpenVino(loaded.module, loaded.input_shape, precision, calibration)
    with tempfile.TemporaryDirectory(prefix="qbuild-onnx-") as workdir:
        calibration = calibration_images(experiment, loaded) if quant_format else None
        producer = (experiment.variant.options or {}).get("producer", "onnxruntime")
        return OnnxRuntime(loaded.module, loaded.input_shape, Path(workdir), quant_format, calibration, producer)


def calibration_images(experiment: Experiment, loaded: Any) -> Any:
    """The held-out calibration images (never evaluated), preprocessed for the model."""
    from qbuild import datasets

    held_out, _ = datasets.load(experiment.dataset).split(experiment.profile.calibration_images)
    return (image for image, _label in datasets.images(held_out, loaded.preprocess))


def build(experiment: Experiment, loaded: Any, cuda_graph: bool = True, session: ModelSession | None = None) -> Any:
    """What ``experiment`` measures, built outside the staged run (no results file): the compiled
    TVM model, or the peer. Errors propagate. ``cuda_graph``: see ``compile_model``."""
    if experiment.variant.engine != "tvm":
        return make_peer(experiment, loaded)
    return compile_module(relax_module(experiment, loaded, session), experiment, cuda_graph)


def relax_module(experiment: Experiment, loaded: Any, session: ModelSession | None = None) -> Any:
    """The Relax module ``experiment`` hands to the compiler: traced, and quantized if its variant is."""
    session = session or ModelSession()
    if experiment.variant.imported_from is not None:
        return import_quantized(experiment, loaded).mod
    traced = session.traced(experiment, loaded)
    config = experiment.variant.config()
    if config is None:
        return traced.inference_module()
    return quantize(experiment, loaded, traced, config, session).mod


def layer_errors_of(
    experiment: Experiment, loaded: Any, progress: Progress, session: ModelSession | None = None
) -> tuple[dict, list[dict]]:
    """A quantized ``experiment``'s layer errors (``qbuild.layer_errors``) outside a staged run,
    with the quantizer's layer records. Errors propagate."""
    session = session or ModelSession()
    quantized = quantize(experiment, loaded, session.traced(experiment, loaded), experiment.variant.config(), session)
    return layer_errors(experiment, quantized, loaded, progress, session), quantized.layers
