"""A result's variant, described: what its arithmetic runs in, whether it is part of the
bit-width sweep, where the plan lists it.

Each result records its variant (``experiment.variant``): name, label, qconfig, engine and
options, and (since they are recorded) ``precision``, ``quantized``, ``in_sweep`` and ``order``.
Who quantized the QDQ model a variant runs, where another tool did, is read from its options:
``import`` for a model qbuild imports and compiles, ``producer`` for an ONNX Runtime QDQ peer;
a QDQ peer that records no producer runs ONNX Runtime's own (``SCHEMA_1_QDQ_PRODUCER``).
For a file written before those were recorded, ``SCHEMA_1_VARIANTS`` says what they were: the
plan's variants as results of schema ``qbuild.results/1`` described them when they began to be
recorded. It is frozen: a variant added to the plan later records its own description.
"""

from __future__ import annotations

from dataclasses import dataclass

# name -> (precision, quantized, in_sweep), in the plan's order (``order`` is the position).
SCHEMA_1_VARIANTS: dict[str, tuple[str, bool, bool]] = {
    "float": ("fp32", False, False),
    "int8-a8": ("int8", True, False),
    "int8-a16": ("int8", True, False),
    "int8-a32": ("int8", True, False),
    "int8-a8-calibrated": ("int8", True, False),
    "int8-a16-calibrated": ("int8", True, False),
    "int8-a32-calibrated": ("int8", True, False),
    "torch-fp32": ("fp32", False, False),
    "torch-fp16": ("fp16", False, False),
    "torch-compile-fp16": ("fp16", False, False),
    "torch-compile-fp16-graphs": ("fp16", False, False),
    "ort-fp32": ("fp32", False, False),
    "ort-int8-qoperator": ("int8", True, False),
    "ort-int8-qdq": ("int8", True, False),
    "openvino-f32": ("fp32", False, False),
    "openvino-int8": ("int8", True, False),
    "openvino-bf16": ("bf16", False, False),
    "w8a8": ("int8", True, True),
    "w4a8": ("int8", True, True),
    "w2a8": ("int8", True, True),
    "w4a4": ("int8", True, True),
    "w2a2": ("int8", True, True),
    "w1a1": ("int8", True, True),
}
# The producer of the model an ONNX Runtime QDQ peer runs when its options name none: its own quantize_static.
SCHEMA_1_QDQ_PRODUCER = "onnxruntime"


@dataclass(frozen=True)
class VariantDescription:
    """What a reader judges a result's variant by."""

    name: str
    label: str
    engine: str  # "tvm" for qbuild's builds, otherwise the peer engine that ran it
    precision: str  # what the arithmetic runs in: int8 (quantized), fp16, bf16 or fp32
    quantized: bool  # integer arithmetic: quantized by qbuild or by the peer engine
    in_sweep: bool  # one of the bit-width sweep's precisions
    order: int | None  # the variant's position in the plan's list (None: not in it)
    qdq_producer: str | None  # who quantized the QDQ model it runs (None: none another tool made)

    @property
    def is_peer(self) -> bool:
        """A baseline run by another engine, not by qbuild."""
        return self.engine != "tvm"

    def rank(self) -> tuple[bool, int]:
        """Sorts variants in the plan's order, those it does not list last."""
        return (self.order is None, self.order or 0)


def describe_variant(recorded: dict) -> VariantDescription:
    """The description of a result's recorded variant (``experiment.variant``); a field it lacks
    (or records as null) comes from ``SCHEMA_1_VARIANTS`` (a variant absent there: fp32,
    quantized if it has a qconfig, not in the sweep, unlisted)."""
    name = recorded["name"]
    options = recorded.get("options") or {}
    names = list(SCHEMA_1_VARIANTS)
    precision, quantized, in_sweep = SCHEMA_1_VARIANTS.get(name, ("fp32", recorded.get("qconfig") is not None, False))

    def given(key: str, otherwise):
        return otherwise if recorded.get(key) is None else recorded[key]

    return VariantDescription(
        name=name,
        label=recorded["label"],
        engine=given("engine", "tvm"),
        precision=given("precision", precision),
        quantized=given("quantized", quantized),
        in_sweep=given("in_sweep", in_sweep),
        order=given("order", names.index(name) if name in names else None),
        qdq_producer=_qdq_producer(given("engine", "tvm"), options),
    )


def _qdq_producer(engine: str, options: dict) -> str | None:
    if engine == "tvm":
        return options.get("import")
    if engine == "onnxruntime" and options.get("quant_format") == "QDQ":
        return options.get("producer", SCHEMA_1_QDQ_PRODUCER)
    return None
