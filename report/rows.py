"""Results records flattened for the report: one ``Row`` per experiment, and the helpers
every page's derivations share."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import groupby
from typing import Iterable

from qbuild.schema.variants import VariantDescription, describe_variant

ENGINE_NAMES = {"tvm": "qbuild", "torch": "PyTorch", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
# Builds within this many points of top-1 of each other are compared for speed.
COMPARABLE_POINTS = 1.0


@dataclass
class Row:
    """One experiment's result, flattened for the report."""

    record: dict
    machine: str

    @cached_property
    def description(self) -> VariantDescription:
        """The variant as the result describes it (``qbuild.schema.variants``)."""
        return describe_variant(self.field("experiment", "variant"))

    def field(self, *keys, default=None):
        value = self.record
        for key in keys:
            if not isinstance(value, dict) or value.get(key) is None:
                return default
            value = value[key]
        return value

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def model(self) -> str:
        return self.field("experiment", "model")

    @property
    def variant(self) -> str:
        return self.field("experiment", "variant", "name")

    @property
    def label(self) -> str:
        return self.field("experiment", "variant", "label")

    @property
    def target(self) -> str:
        return self.field("experiment", "target", "name")

    @property
    def device(self) -> str:
        return self.field("experiment", "target", "device")

    @property
    def commit(self) -> str | None:
        """The commit whose code produced this result."""
        return self.field("environment", "git", "commit")

    @property
    def kernels(self) -> str | None:
        """The kernel set (``qbuild.kernels``: builtin, tuned (CPU) or untuned); None for peers."""
        return self.field("experiment", "kernels")

    @property
    def setting(self) -> str:
        """The model, plus its profile when not the default one (a quick 64x64 run must not share
        a chart or a table with full-size runs)."""
        profile = self.field("experiment", "profile", default="default")
        return self.model if profile == "default" else f"{self.model} ({profile} profile)"

    @property
    def subject(self) -> str:
        """What is compared across variants: the ``setting``, plus "untuned kernels" for TVM's
        unscheduled default build (the study's setting) and "tuned kernels" for builds with a
        tuning database, each compared among itself; builtin builds share their tables with the
        peers."""
        kernels = self.kernels in ("untuned", "tuned")
        return f"{self.setting}, {self.kernels} TVM kernels" if kernels else self.setting

    @property
    def engine(self) -> str:
        """Who ran the build, as the report names it: qbuild, or the peer's engine."""
        return ENGINE_NAMES.get(self.description.engine, self.description.engine)

    @property
    def top1(self) -> float | None:
        """Top-1 accuracy on the held-out images (a fraction), where measured."""
        return self.field("accuracy", "top1")

    @property
    def weights(self) -> dict:
        return self.field("experiment", "weights", default={"kind": "unknown", "source": "", "reason": None})

    @property
    def is_peer(self) -> bool:
        """A baseline run by another engine (PyTorch, ONNX Runtime), not by qbuild."""
        return self.description.is_peer

    @property
    def quantized(self) -> bool:
        """Integer arithmetic: a qbuild quantized variant or an int8 peer."""
        return self.description.quantized

    @property
    def precision(self) -> str:
        """What the arithmetic runs in: int8 (quantized), fp16 (a half-precision peer) or fp32."""
        return self.description.precision

    @property
    def failure(self) -> dict | None:
        """The first stage that failed: {"stage", "message"}, or None."""
        for name, stage in (self.field("stages", default={}) or {}).items():
            if stage.get("status") == "error":
                return {"stage": name, "message": (stage.get("error") or {}).get("message", "")}
        return None

    @property
    def in_sweep(self) -> bool:
        """One of the bit-width sweep's precisions (shown on the sweep page, not the study's)."""
        return self.description.in_sweep

    @property
    def samples(self) -> list[float]:
        return [s for iteration in self.field("latency", "samples_ms", default=[]) for s in iteration]

    @property
    def median_ms(self) -> float | None:
        return self.field("latency", "summary", "median_ms")

    def stage(self, name: str) -> str:
        return self.field("stages", name, "status", default="absent")

    def sort_key(self) -> tuple:
        return (self.subject, self.target, self.description.rank(), self.machine)


def rows(records_with_machine: list[tuple[dict, str]]) -> list[Row]:
    """Rows sorted by model, target, variant (the plan's order), machine."""
    return sorted((Row(rec, machine) for rec, machine in records_with_machine), key=Row.sort_key)


def in_plan_order(items: Iterable[Row]) -> list[str]:
    """The distinct variants of ``items``, in the plan's order (those it does not list last)."""
    ranks = {r.variant: r.description.rank() for r in items}
    return sorted(ranks, key=lambda variant: ranks[variant])


def group_by(items: list[Row], key) -> list[tuple]:
    """``items`` grouped by ``key(row)``: [(key, rows in report order)], keys sorted."""
    ordered = sorted(items, key=lambda r: (key(r), r.sort_key()))
    return [(k, list(group)) for k, group in groupby(ordered, key=key)]


def pct_change(before: float, after: float) -> float | None:
    """Percentage change from ``before`` to ``after`` (None if before is 0)."""
    return None if not before else 100.0 * (after - before) / before


def comparable(top1: float | None, other: float | None) -> bool:
    """Whether two builds' accuracies allow a speed comparison: within ``COMPARABLE_POINTS`` of
    top-1, or not both measured (random weights, say: then accuracy cannot tell them apart)."""
    return top1 is None or other is None or abs(top1 - other) * 100 <= COMPARABLE_POINTS
