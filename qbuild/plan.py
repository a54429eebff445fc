"""The experiment plan, declared: models x variants x targets under one profile.

An ``Experiment`` is plain data; ``qbuild.runner`` carries it through the stages (``qbuild.stages``). Its id names
the results file, and its fingerprint (config + code + package versions) decides whether an
existing result is still current.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from qbuild.bench import Protocol
from qbuild.errors import QbuildError
from qbuild.kernels import KERNEL_SETS
from qbuild.targets import TargetChoice


@dataclass(frozen=True)
class Variant:
    """A way of compiling a model: float, or quantized with a config."""

    name: str
    label: str  # the study's "type of compilation", e.g. "float"
    qconfig: dict | None = None
    engine: str = "tvm"  # otherwise a peer baseline run by that engine itself (qbuild.peers.ENGINES)
    options: dict | None = None  # the peer's settings, e.g. ONNX Runtime's quantization format
    targets: tuple[str, ...] = ("cpu", "cuda")  # where it runs (ONNX Runtime: CPU; fp16 peers: GPU)

    @property
    def quant_format(self) -> str | None:
        """A peer's integer quantization format (ONNX Runtime's QOperator/QDQ, OpenVINO's NNCF), None
        for float."""
        options = self.options or {}
        return "NNCF" if options.get("precision") == "int8" else options.get("quant_format")

    @property
    def imported_from(self) -> str | None:
        """Who quantized the model qbuild imports and compiles (``qbuild.peers.QDQ_PRODUCERS``), None
        when qbuild quantizes it itself or it is not quantized."""
        return (self.options or {}).get("import")

    @property
    def quantized(self) -> bool:
        """Integer arithmetic: quantized by qbuild (a qconfig), imported quantized, or by the peer engine."""
        return self.qconfig is not None or self.quant_format is not None or self.imported_from is not None

    @property
    def precision(self) -> str:
        """What the arithmetic runs in: int8 (quantized), fp16 (a half-precision peer) or fp32."""
        if self.quantized:
            return "int8"
        options = self.options or {}
        if options.get("precision") == "bf16":
            return "bf16"
        return "fp16" if options.get("dtype") == "float16" else "fp32"

    def to_json(self) -> dict:
        """The variant as its results record it, with the description a reader judges it by
        (``qbuild.schema.variants``): precision, sweep membership, position in the plan."""
        return {
            "name": self.name,
            "label": self.label,
            "qconfig": self.qconfig,
            "engine": self.engine,
            "options": self.options,
            "precision": self.precision,
            "quantized": self.quantized,
            "in_sweep": self.name in SWEEP_VARIANTS,
            "order": list(VARIANTS).index(self.name) if VARIANTS.get(self.name) == self else None,
        }

    def config(self):
        """The variant's validated QConfig, or None for the float model."""
        from qbuild.quantize import make

        return None if self.qconfig is None else make(**self.qconfig)


@dataclass(frozen=True)
class Profile:
    """How thoroughly to run: benchmark counts, input size, and which models by default."""

    name: str
    description: str
    protocol: Protocol
    image_size: int | None = None  # None: each model's own input size
    models: tuple[str, ...] = ("resnet50", "efficientnet_lite0")
    # Images of the labelled set held out for calibration (never evaluated), and how many of
    # the rest to evaluate (None: all).
    calibration_images: int = 64
    accuracy_images: int | None = None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "protocol": self.protocol.to_json(),
            "image_size": self.image_size,
            "calibration_images": self.calibration_images,
            "accuracy_images": self.accuracy_images,
        }


# Calibrated quantization: per-channel weight scales from each channel's range, activation
# ranges from the 99.99th percentile on held-out images; every conv and the classifier quantized,
# as the int8 peers quantize them (relay's defaults keep the first conv and the classifier float).
CALIBRATED = {
    "per_channel_weights": True,
    "weight_scale": "max",
    "calibrate_mode": "percentile",
    "skip_dense_layer": False,
    "skip_conv_layers": None,
}
# The bit-width sweep (the study's int8 -> int4 -> int2 -> int1, and mixed settings): W weight
# bits, A conv-input bits. Calibrated for low bits (per-channel weights; activation ranges by KL
# divergence at 8 bits and by least squared error below; sub-byte convs' rounding learned by
# block reconstruction, from GPTQ's for 1x1 convs; bias correction; all 64 held-out calibration
# images); the first conv
# stays float (relay's default skip), the classifier and depthwise convs stay at 8 bits
# (nbit_edge); activations between layers are int8.
SWEEP = {
    "per_channel_weights": True,
    "weight_scale": "mse",
    "calibrate_mode": "kl_mse",
    "weight_rounding": "reconstruct",
    "bias_correction": True,
    "skip_dense_layer": False,
    "edge_layers": ["first_conv", "dense", "depthwise"],
    "nbit_activation": 8,
    "dtype_activation": "int8",
    "calibrate_samples": 64,
}
SWEEP_PRECISIONS = ((8, 8), (4, 8), (2, 8), (4, 4), (2, 2), (1, 1))
PRECISION_VARIANTS = tuple(f"w{w}a{a}" for w, a in SWEEP_PRECISIONS)
# Mixed precision in the sweep: the SWEEP settings with each non-edge layer's bits chosen under a
# bit budget (``QConfig.bit_budget``: the MAC-weighted mean of (W + A) / 2 over those layers).
SWEEP_BUDGETS = (3.0, 4.0)  # 4.0: W4A4's bits, spent per layer
BUDGET_VARIANTS = tuple(f"mixed-b{budget:g}" for budget in SWEEP_BUDGETS)
SWEEP_VARIANTS = PRECISION_VARIANTS + BUDGET_VARIANTS
# The study's "type of compilation": unquantized, and quantized with relay's defaults for each
# activation dtype (the value in brackets); the same three calibrated, which separates the
# activation dtype's effect from relay's fixed +-8 range; and peers: PyTorch eager, ONNX Runtime
# fp32 and int8 (static, calibrated on the same held-out images).
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("float", "unquantized"),
        Variant("int8-a8", "quantized (int8)", {"nbit_activation": 8, "dtype_activation": "int8"}),
        Variant("int8-a16", "quantized (int16)", {"nbit_activation": 16, "dtype_activation": "int16"}),
        Variant("int8-a32", "quantized (int32)", {}),
        *(
            Variant(
                f"int8-a{bits}-calibrated",
                f"quantized (int{bits}), per-channel, percentile",
                {**CALIBRATED, "nbit_activation": bits, "dtype_activation": f"int{bits}"},
            )
            for bits in (8, 16, 32)
        ),
        Variant("torch-fp32", "PyTorch eager fp32 (peer)", engine="torch"),
        Variant(
            "torch-fp16",
            "PyTorch eager fp16 channels-last (peer)",
            engine="torch",
            options={"dtype": "float16", "channels_last": True},
            targets=("cuda",),
        ),
        *(
            Variant(
                name,
                f"torch.compile fp16 {how} (peer)",
                engine="torch",
                targets=("cuda",),
                options={"dtype": "float16", "channels_last": True, "compile_mode": mode},
            )
            for name, how, mode in (
                ("torch-compile-fp16", "without CUDA graphs", "default"),
                ("torch-compile-fp16-graphs", "with CUDA graphs", "reduce-overhead"),
            )
        ),
        Variant("ort-fp32", "ONNX Runtime fp32 (peer)", engine="onnxruntime", targets=("cpu",)),
        *(
            Variant(
                f"ort-int8-{fmt.lower()}",
                f"ONNX Runtime int8 {fmt} (peer)",
                engine="onnxruntime",
                options={"quant_format": fmt},
                targets=("cpu",),
            )
            for fmt in ("QOperator", "QDQ")
        ),
        *(
            Variant(
                f"openvino-{precision}",
                f"OpenVINO {what} (peer)",
                engine="openvino",
                targets=("cpu",),
                options={"precision": precision},
            )
            for precision, what in (("f32", "fp32"), ("int8", "int8, NNCF"), ("bf16", "bf16"))
        ),
        *(
            Variant(
                name, f"W{w}A{a} ({w}-bit weights, {a}-bit conv inputs)", {**SWEEP, "nbit_weight": w, "nbit_input": a}
            )
            for name, (w, a) in zip(PRECISION_VARIANTS, SWEEP_PRECISIONS)
        ),
        # after the sweep: each variant schema 1 names keeps its position (qbuild.schema.variants)
        *(
            Variant(
                f"import-{short}-qdq",
                f"{what} QDQ model compiled by qbuild",
                options={"import": producer},
                targets=("cpu",),
            )
            for short, producer, what in (("ort", "onnxruntime", "ONNX Runtime"), ("nncf", "nncf", "NNCF"))
        ),
        # the NNCF model's own runtime (ONNX Runtime's is the ort-int8-qdq peer)
        Variant(
            "ort-nncf-qdq",
            "ONNX Runtime running NNCF's QDQ model (peer)",
            engine="onnxruntime",
            options={"quant_format": "QDQ", "producer": "nncf"},
            targets=("cpu",),
        ),
        # appended: the variants before keep their positions
        *(
            Variant(
                name,
                f"mixed precision, at most {budget:g} bits on average (MAC-weighted (W+A)/2 of the non-edge layers)",
                {**SWEEP, "bit_budget": budget},
            )
            for name, budget in zip(BUDGET_VARIANTS, SWEEP_BUDGETS)
        ),
    )
}

# The study's four types of compilation, also built with TVM's untuned default kernels (the
# study's setting) when no kernel sets are asked for: the "before" of every kernel comparison.
STUDY_VARIANTS = ("float", "int8-a8", "int8-a16", "int8-a32")

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "default",
            "the study's protocol (15 x 30), capped at 40 s of timing per experiment; 500 images for accuracy",
            Protocol(iterations=15, executions=30, warmup=3, budget_s=40.0),
            accuracy_images=500,
        ),
        Profile(
            "study",
            "the study's protocol (15 x 30) in full, however long it takes",
            Protocol(iterations=15, executions=30, warmup=3, budget_s=None),
        ),
        Profile(
            "quick",
            "a smoke run: small input (64x64), a few timed runs; used by the tests",
            Protocol(iterations=2, executions=3, warmup=1, budget_s=10.0),
            image_size=64,
            models=("resnet18",),
            calibration_images=4,
            accuracy_images=8,
        ),
    )
}


def _lookup(table: dict, kind: str, name: str):
    try:
        return table[name]
    except KeyError:
        raise QbuildError(f"unknown {kind} {name!r}", f"choose one of: {', '.join(table)}") from None


def get_variant(name: str) -> Variant:
    """The registered variant ``name``."""
    return _lookup(VARIANTS, "variant", name)


def get_profile(name: str) -> Profile:
    """The registered profile ``name``."""
    return _lookup(PROFILES, "profile", name)


def code_version() -> str:
    """A hash of the engine's source files: results from other code are not current."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Experiment:
    """One model, compiled one way, for one target, under one profile."""

    model: str
    variant: Variant
    target: TargetChoice
    profile: Profile
    weights: str = "auto"
    protocol: Protocol = field(default=None)  # type: ignore[assignment]  # None: the profile's
    dataset: str | None = None  # labelled images for calibration and accuracy
    kernels: str | None = "builtin"  # qbuild.kernels.KERNEL_SETS; None: a peer's own

    def __post_init__(self) -> None:
        if self.protocol is None:
            object.__setattr__(self, "protocol", self.profile.protocol)

    @property
    def id(self) -> str:
        kernels = "" if self.kernels in ("builtin", None) else f"-{self.kernels}"
        suffix = "" if self.profile.name == "default" else f"-{self.profile.name}"
        return f"{self.model}-{self.variant.name}-{self.target.name}{kernels}{suffix}"

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "model": self.model,
            "variant": self.variant.to_json(),
            "kernels": self.kernels,
            "target": self.target.to_json(),
            "profile": self.profile.name,
            "image_size": self.profile.image_size,
            "weights_requested": self.weights,
            "protocol": self.protocol.to_json(),
            "dataset": self.dataset,
            "calibration_images": self.profile.calibration_images,
            "accuracy_images": self.profile.accuracy_images,
        }

    def fingerprint(self, packages: dict) -> str:
        """Config + code version + package versions (+ the tuning database of a tuned build):
        equal fingerprints mean an identical run."""
        database = _database_digest() if self.kernels == "tuned" else None
        blob = json.dumps([self.to_json(), code_version(), packages, database], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_targets() -> list[str]:
    """The CPU always; CUDA as well when a GPU is visible."""
    from qbuild.targets import gpu_visible

    return ["cpu", "cuda"] if gpu_visible() else ["cpu"]


def build_plan(
    models: list[str] | None = None,
    variants: list[str] | None = None,
    targets: list[str] | None = None,
    profile: str = "default",
    weights: str = "auto",
    protocol: Protocol | None = None,
    dataset: str | None = None,
    kernels: list[str] | None = None,
    tracker: str | None = None,
) -> list[Experiment]:
    """Expand the choices into experiments (validating every name before any work starts).

    ``dataset``: labelled images (default: ``qbuild.datasets.default_path()``). Peers run on this
    machine only. ``kernels``:
    kernel sets to build every variant with (default: builtin for all, untuned as well for the
    study's variants, ``STUDY_VARIANTS``). Peers run once, with their own kernels. ``tracker``:
    the RPC tracker of ``rpc:`` targets (``qbuild.targets.rpc_target``).
    """
    from qbuild import datasets
    from qbuild.models import WEIGHT_CHOICES, get_spec
    from qbuild.targets import resolve_target

    if weights not in WEIGHT_CHOICES:
        raise QbuildError(f"unknown weights choice {weights!r}", f"use one of: {', '.join(WEIGHT_CHOICES)}")
    chosen_profile = get_profile(profile)
    model_names = models or list(chosen_profile.models)
    for name in model_names:
        get_spec(name).input_side(chosen_profile.image_size)
    chosen_variants = [get_variant(v) for v in (variants or list(VARIANTS))]
    for name in kernels or ():
        if name not in KERNEL_SETS:
            raise QbuildError(f"unknown kernel set {name!r}", f"use one or more of: {', '.join(KERNEL_SETS)}")
    if "tuned" in (kernels or ()):
        from qbuild import tuning_db

        tuning_db.load(tuning_db.machine_path())  # fails here, naming the fix, when missing or unreadable
    resolved: dict[str, TargetChoice] = {}
    for requested in targets or default_targets():
        choice = resolve_target(requested, tracker)
        resolved.setdefault(choice.requested if choice.remote else choice.name, choice)
    dataset_path = Path(dataset) if dataset else datasets.default_path()
    if dataset_path is not None:
        datasets.load(dataset_path)  # a missing or malformed dataset fails here, before any work
    for variant in chosen_variants:
        config = variant.config()
        if (variant.quant_format or variant.imported_from) and dataset_path is None:
            raise QbuildError(
                f"variant {variant.name} calibrates on images but no labelled dataset was found",
                f"pass --dataset DIR (or set ${datasets.ENV_VAR}), or leave out variant {variant.name}",
            )
        if config is not None and config.needs_data and dataset_path is None:
            raise QbuildError(
                f"variant {variant.name} calibrates on images (calibrate_mode={config.calibrate_mode!r}) "
                "but no labelled dataset was found",
                f"pass --dataset DIR (or set ${datasets.ENV_VAR}), or leave out variant {variant.name}",
            )
    dataset_name = str(dataset_path) if dataset_path else None
    tuned_by_default = _database_digest() is not None
    return [
        Experiment(
            model,
            variant,
            target,
            chosen_profile,
            weights,
            protocol or chosen_profile.protocol,
            dataset_name,
            kernel_set,
        )
        for model in model_names
        for variant in chosen_variants
        for target in resolved.values()
        if target.name in variant.targets and (target.remote is None or variant.engine == "tvm")
        for kernel_set in _kernel_sets(variant, target, kernels, tuned_by_default)
    ]


def _database_digest() -> str | None:
    """The digest of this machine's tuning database (None: it has none)."""
    from qbuild import tuning_db

    path = tuning_db.machine_path()
    return tuning_db.digest(path) if path.exists() else None


def _kernel_sets(
    variant: Variant, target: TargetChoice, requested: list[str] | None, with_tuned: bool
) -> list[str | None]:
    """None: a peer's own kernels. By default the builtin set, plus, for the study's variants,
    the untuned one and (on the CPU, ``with_tuned``: this machine has a tuning database) the
    tuned one. The tuned set exists for this machine's CPU only (its tuning database)."""
    if variant.engine != "tvm":
        return [None]
    sets = list(requested) if requested else ["builtin"]
    if not requested and variant.name in STUDY_VARIANTS:
        sets += ["untuned", "tuned"] if with_tuned else ["untuned"]
    return [s for s in sets if s != "tuned" or (target.name == "cpu" and target.remote is None)]
