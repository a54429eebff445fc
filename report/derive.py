"""Tables and findings derived from results records: everything a page shows, as plain data.

Each study claim is re-tested here and returned as a finding: what the study said, whether our
data supports it, and the numbers. Templates only choose wording from these booleans.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from itertools import groupby
from typing import Iterable

from qbuild.compare import GOALS
from qbuild.layer_errors import FLOOR_DB, describe
from qbuild.plan import SWEEP, SWEEP_VARIANTS, VARIANTS, Variant
from qbuild.quantize.config import DEFAULTS, options

VARIANT_ORDER = list(VARIANTS)
# Families of the study's activation-dtype comparison: (name, variant per activation dtype).
ACTIVATION_FAMILIES = (
    ("relay defaults", {"int8": "int8-a8", "int16": "int8-a16", "int32": "int8-a32"}),
    ("calibrated", {"int8": "int8-a8-calibrated", "int16": "int8-a16-calibrated", "int32": "int8-a32-calibrated"}),
)
RELAY_ACTIVATIONS = ACTIVATION_FAMILIES[0][1]  # the study's own three "types of compilation"
# A top-1 drop of more than this many points counts as losing accuracy.
ACCURACY_LOSS_POINTS = 1.0
INT_TYPES = ("int8", "int16", "int32")
STUDY_DTYPES = ("float32", "int32", "int16", "int8")


@dataclass
class Row:
    """One experiment's result, flattened for the report."""

    record: dict
    machine: str

    def _get(self, *keys, default=None):
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
        return self._get("experiment", "model")

    @property
    def variant(self) -> str:
        return self._get("experiment", "variant", "name")

    @property
    def label(self) -> str:
        return self._get("experiment", "variant", "label")

    @property
    def target(self) -> str:
        return self._get("experiment", "target", "name")

    @property
    def device(self) -> str:
        return self._get("experiment", "target", "device")

    @property
    def commit(self) -> str | None:
        """The commit whose code produced this result."""
        return self._get("environment", "git", "commit")

    @property
    def kernels(self) -> str | None:
        """The kernel set (``qbuild.kernels``: builtin, tuned (CPU) or untuned); None for peers."""
        return self._get("experiment", "kernels")

    @property
    def subject(self) -> str:
        """What is compared across variants: the model, plus its profile when not the default one
        (a quick 64x64 run must not share a box plot with full-size runs), plus "untuned
        kernels" for TVM's unscheduled default build (the study's setting) and "tuned kernels"
        for builds with a tuning database, each compared among itself; builtin builds share
        their tables with the peers."""
        profile = self._get("experiment", "profile", default="default")
        subject = self.model if profile == "default" else f"{self.model} ({profile} profile)"
        return f"{subject}, {self.kernels} TVM kernels" if self.kernels in ("untuned", "tuned") else subject

    @property
    def weights(self) -> dict:
        return self._get("experiment", "weights", default={"kind": "unknown", "source": "", "reason": None})

    @property
    def is_peer(self) -> bool:
        """A baseline run by another engine (PyTorch, ONNX Runtime), not by qbuild."""
        return self._get("experiment", "variant", "engine", default="tvm") != "tvm"

    @property
    def quantized(self) -> bool:
        """Integer arithmetic: a qbuild quantized variant or an int8 peer."""
        return Variant(**self._get("experiment", "variant")).quantized

    @property
    def precision(self) -> str:
        """What the arithmetic runs in: int8 (quantized), fp16 (a half-precision peer) or fp32."""
        return Variant(**self._get("experiment", "variant")).precision

    @property
    def failure(self) -> dict | None:
        """The first stage that failed: {"stage", "message"}, or None."""
        for name, stage in (self._get("stages", default={}) or {}).items():
            if stage.get("status") == "error":
                return {"stage": name, "message": (stage.get("error") or {}).get("message", "")}
        return None

    @property
    def in_sweep(self) -> bool:
        """One of the bit-width sweep's precisions (shown on the sweep page, not the study's)."""
        return self.variant in SWEEP_VARIANTS

    @property
    def samples(self) -> list[float]:
        return [s for iteration in self._get("latency", "samples_ms", default=[]) for s in iteration]

    @property
    def median_ms(self) -> float | None:
        return self._get("latency", "summary", "median_ms")

    def stage(self, name: str) -> str:
        return self._get("stages", name, "status", default="absent")

    def sort_key(self) -> tuple:
        order = VARIANT_ORDER.index(self.variant) if self.variant in VARIANT_ORDER else len(VARIANT_ORDER)
        return (self.subject, self.target, order, self.machine)


def rows(records_with_machine: list[tuple[dict, str]]) -> list[Row]:
    """Rows sorted by model, target, variant (the plan's order), machine."""
    return sorted((Row(rec, machine) for rec, machine in records_with_machine), key=Row.sort_key)


def _by(items: list[Row], key) -> list[tuple]:
    ordered = sorted(items, key=lambda r: (key(r), r.sort_key()))
    return [(k, list(group)) for k, group in groupby(ordered, key=key)]


def pct_change(before: float, after: float) -> float | None:
    """Percentage change from ``before`` to ``after`` (None if before is 0)."""
    return None if not before else 100.0 * (after - before) / before


# --- study item 1 and 2 ---------------------------------------------------------------------
def models(all_rows: list[Row]) -> list[dict]:
    """Per model: its summary and weights provenance (from its first result)."""
    out = []
    for model, group in _by(all_rows, lambda r: r.model):
        summary = next((r.record["model"] for r in group if r.record.get("model")), None)
        out.append({"name": model, "summary": summary, "weights": group[0].weights,
                    "input_shape": summary["input_shape"] if summary else None})
    return out


def compiles(all_rows: list[Row]) -> list[dict]:
    """Per (machine, target): each experiment's compile time and its error against PyTorch."""
    out = []
    for (machine, target), group in _by([r for r in all_rows if not r.is_peer], lambda r: (r.machine, r.target)):
        out.append({"machine": machine, "target": target, "device": group[0].device,
                    "reason": group[0]._get("experiment", "target", "reason"),
                    "spec": group[0]._get("experiment", "target", "spec"),
                    "rows": [{"id": r.id, "model": r.model, "label": r.label, "status": r.stage("compile"),
                              "seconds": r._get("compile", "seconds"),
                              "correctness": r.record.get("correctness")} for r in group]})
    return out


# --- study item 3 and 6 (defaults) -------------------------------------------------------------
def qconfig_table(all_rows: list[Row]) -> dict:
    """The option table: relay's default and the value in each quantized variant that ran."""
    variants = []
    for variant, group in _by([r for r in all_rows if r.record.get("quantization") and not r.in_sweep], lambda r: r.variant):
        variants.append({"name": variant, "label": group[0].label, "config": group[0].record["quantization"]["config"]})
    variants.sort(key=lambda v: VARIANT_ORDER.index(v["name"]) if v["name"] in VARIANT_ORDER else 99)
    table = [{"name": o["name"], "default": o["default"],
              "values": [v["config"].get(o["name"]) for v in variants]} for o in options()]
    return {"variants": variants, "options": table, "defaults": DEFAULTS.to_json()}


def quantized_layers(all_rows: list[Row]) -> list[dict]:
    """Per quantized experiment: how many layers were quantized, which were skipped and why."""
    out = []
    for r in all_rows:
        q = r.record.get("quantization")
        if not q:
            continue
        out.append({"id": r.id, "model": r.model, "label": r.label, "quantized": q["layers_quantized"],
                    "skipped": [layer for layer in q["layers"] if layer["status"] == "skipped"],
                    "calibration": q["calibration"], "correctness": r.record.get("correctness")})
    return out


# --- study item 4 ---------------------------------------------------------------------------
# What each census read (qbuild.analysis): its artifact suffix -> the words the page uses.
CENSUS_SOURCES = {"ll": "LLVM IR", "s": "x86 assembly", "cu": "CUDA source", "ptx": "PTX", "sass": "SASS (GPU machine code)"}

def census(all_rows: list[Row]) -> list[dict]:
    """Per (machine, model, target): the dtype census of each variant, changes against unquantized,
    and the instruction census."""
    out = []
    for (machine, model, target), group in _by(all_rows, lambda r: (r.machine, r.subject, r.target)):
        with_ir = [r for r in group if r._get("ir", "dtype_census", "counts")]
        if not with_ir:
            continue
        counts = {r.variant: r.record["ir"]["dtype_census"]["counts"] for r in with_ir}
        dtypes = list(STUDY_DTYPES) + sorted({d for c in counts.values() for d in c} - set(STUDY_DTYPES))
        base = counts.get("float")
        changes = []
        for r in with_ir:
            if base is None or r.variant == "float":
                continue
            c = counts[r.variant]
            float_change = pct_change(base.get("float32", 0), c.get("float32", 0))
            int_change = pct_change(sum(base.get(t, 0) for t in INT_TYPES), sum(c.get(t, 0) for t in INT_TYPES))
            changes.append({"label": r.label, "float32_pct": float_change, "int_pct": int_change,
                            "study_claim_holds": float_change is not None and int_change is not None
                            and float_change <= -80 and int_change >= 100})
        families = list(next(iter(r.record["ir"].get("instruction_census", {}).get("families", {}) for r in with_ir), {}))
        instructions = with_ir[0].record["ir"].get("instruction_census", {})
        out.append({
            "machine": machine, "model": model, "target": target, "device": with_ir[0].device,
            "dtype_source": CENSUS_SOURCES.get(with_ir[0]._get("ir", "dtype_census", "source"), "generated code"),
            "instruction_source": CENSUS_SOURCES.get(instructions.get("source"), "generated code"),
            "binary": instructions.get("binary"),
            "variants": [{"label": r.label, "id": r.id, "artifacts": r.record["ir"].get("artifacts", {})} for r in with_ir],
            "dtype_rows": [{"dtype": d, "counts": [counts[r.variant].get(d, 0) for r in with_ir]} for d in dtypes],
            "changes": changes,
            "instruction_rows": [{"family": f, "counts": [r._get("ir", "instruction_census", "families", f, default=0)
                                                          for r in with_ir]} for f in families],
            "vector_rows": [{"width": w, "counts": [r._get("ir", "instruction_census", "vector_registers", w, default=0)
                                                    for r in with_ir]} for w in ("xmm", "ymm", "zmm")]
            if instructions.get("source") == "s" else [],
            "launch_rows": _launch_rows(with_ir, target),
        })
    return out


def _launch_rows(rows: list[Row], target: str) -> list[dict]:
    """Kernels launched per inference (and, on a GPU, how many a CUDA graph replays) for each
    variant; none where no results file has the launch census (results older than it)."""
    if not any(r._get("ir", "launch_census") for r in rows):
        return []
    keys = [("kernels", "kernels launched per inference")]
    if target == "cuda":
        keys.append(("in_cuda_graph", "of them replayed from one CUDA graph"))
    return [{"what": what, "counts": [r._get("ir", "launch_census", key) for r in rows]} for key, what in keys]


# --- study item 5 ---------------------------------------------------------------------------
def latency(all_rows: list[Row], sweep: bool = False) -> list[dict]:
    """Per (model, target, machine): the latency summary of each variant, in the plan's order:
    the study's variants and peers, or (``sweep``) the bit-width sweep's beside the float build."""
    out = []
    chosen = [r for r in all_rows if r.in_sweep == sweep or (sweep and r.variant == "float")]
    for (model, target, machine), group in _by(chosen, lambda r: (r.subject, r.target, r.machine)):
        timed = [r for r in group if r.samples]
        if not timed or (sweep and not any(r.in_sweep for r in timed)):
            continue
        out.append({"model": model, "target": target, "machine": machine, "device": timed[0].device,
                    "failed": [{"label": r.label, **r.failure} for r in group if not r.samples and r.failure],
                    "rows": [{"label": r.label, "variant": r.variant, "quantized": r.quantized, "peer": r.is_peer,
                              "precision": r.precision, "commit": r.commit,
                              "date": r._get("environment", "date"),
                              **r.record["latency"]["summary"],
                              "iterations": r.record["latency"]["iterations_run"],
                              "executions": r.record["latency"]["executions_run"],
                              "truncated": r.record["latency"]["truncated_by_budget"],
                              "protocol": r.record["latency"]["protocol"]} for r in timed]})
    return out


def _median(group: dict, variant: str) -> float | None:
    row = next((r for r in group["rows"] if r["variant"] == variant), None)
    return None if row is None else row["median_ms"]


def latency_findings(groups: list[dict]) -> list[dict]:
    """The study's latency claims, re-tested per (model, target, machine)."""
    findings = []
    for g in groups:
        base = _median(g, "float")
        quantized = [r for r in g["rows"] if r["quantized"] and not r["peer"]]
        peers = [r for r in g["rows"] if r["peer"]]
        if base is None or not quantized:
            continue
        ours = min([r for r in g["rows"] if not r["peer"]], key=lambda r: r["median_ms"])
        slower = [r for r in quantized if r["median_ms"] > base]
        relay = [r for r in quantized if r["variant"] in RELAY_ACTIVATIONS.values()]
        best = min(relay, key=lambda r: r["median_ms"]) if len(relay) == 3 else None  # all three to compare
        findings.append({
            "model": g["model"], "target": g["target"], "machine": g["machine"], "float_ms": base,
            "all_quantized_slower": len(slower) == len(quantized),
            "none_quantized_slower": not slower,
            "ratios": [{"label": r["label"], "ratio": r["median_ms"] / base} for r in quantized],
            "fastest_activation": best["label"] if best else None,
            "int16_fastest": best is not None and best["variant"] == RELAY_ACTIVATIONS["int16"],
            "fastest_ours": {"label": ours["label"], "median_ms": ours["median_ms"]},
            "peers": [_against_peer(g["rows"], p) for p in peers],
        })
    return findings


def _against_peer(group_rows: list[dict], peer: dict) -> dict:
    """A peer against qbuild's fastest build of the same precision (int8 peers against quantized;
    fp16 peers against none: qbuild builds no fp16 variant)."""
    same = [r for r in group_rows if not r["peer"] and r["precision"] == peer["precision"]]
    ours = min(same, key=lambda r: r["median_ms"]) if same else None
    return {"label": peer["label"], "median_ms": peer["median_ms"], "precision": peer["precision"],
            "ours_label": ours["label"] if ours else None,
            "ours_ratio": ours["median_ms"] / peer["median_ms"] if ours else None}


KERNEL_SET_ORDER = ("untuned", "builtin", "tuned")


def kernel_findings(all_rows: list[Row]) -> list[dict]:
    """Per model and target: what the builtin kernels change against TVM's untuned default, and
    the tuned ones against the builtin, variant by variant; and whether the study's "quantized is
    slower" holds under each kernel set."""
    out = []
    built = [r for r in all_rows if (r.median_ms is not None or r.failure) and not r.is_peer
             and r.kernels in KERNEL_SET_ORDER]
    for (model, target, machine), group in _by(built, lambda r: (r.model, r.target, r.machine)):
        by = {(r.variant, r.kernels): r for r in group}
        pairs = [_kernel_row({k: by.get((v, k)) for k in KERNEL_SET_ORDER})
                 for v in VARIANT_ORDER if (v, "builtin") in by and ((v, "untuned") in by or (v, "tuned") in by)]
        if not any(p["speedup"] or p["tuned_gain"] for p in pairs):
            continue
        timed = {key: r for key, r in by.items() if r.median_ms is not None}
        slower = {}
        for kernels in KERNEL_SET_ORDER:
            base = timed.get(("float", kernels))
            quantized = [r for (v, k), r in timed.items() if k == kernels and r.quantized]
            if base and quantized:
                slower[kernels] = {"all": all(r.median_ms > base.median_ms for r in quantized),
                                   "none": all(r.median_ms <= base.median_ms for r in quantized),
                                   "best_ratio": min(r.median_ms for r in quantized) / base.median_ms}
        out.append({"model": model, "target": target, "machine": machine, "pairs": pairs, "quantized_slower": slower,
                    "tuned": any(p["tuned_ms"] is not None or p["tuned_failure"] for p in pairs)})
    return out


def _ratio(before: Row | None, after: Row | None) -> float | None:
    timed = before is not None and after is not None and before.median_ms is not None and after.median_ms is not None
    return before.median_ms / after.median_ms if timed else None


def _kernel_row(builds: dict[str, Row | None]) -> dict:
    """One variant under each kernel set: medians (None where not built or not timed), failures,
    the speed-up of builtin over untuned and the gain of tuned over builtin."""
    row = {"label": builds["builtin"].label, "speedup": _ratio(builds["untuned"], builds["builtin"]),
           "tuned_gain": _ratio(builds["builtin"], builds["tuned"])}
    for kernels, r in builds.items():
        row[f"{kernels}_ms"] = r.median_ms if r is not None else None
        row[f"{kernels}_failure"] = r.failure if r is not None else None
    return row


TUNING_TOP = 8  # workloads listed per tuning database: the largest gains


def tuning(database) -> dict:
    """A tuning database (``qbuild.tuning_db``) for the page: what was searched, the summed
    medians of every workload with the default and the chosen tiles, the largest gains."""
    records = list(database.records.values())
    gains = sorted(records, key=lambda r: r.default_ms / r.best_ms, reverse=True)[:TUNING_TOP]
    default_ms, tuned_ms = database.summed_ms()
    return {"machine": database.machine_id, "workloads": len(records), "trials": database.trials,
            "rounds": database.rounds, "date": database.environment.get("date", ""),
            "commit": (database.environment.get("git") or {}).get("commit"),
            "default_ms": default_ms, "tuned_ms": tuned_ms,
            "changed": sum(r.best_ms < r.default_ms for r in records),
            "top": [{"summary": r.summary, "tile": r.tile.label(), "default_ms": r.default_ms,
                     "tuned_ms": r.best_ms, "gain": r.default_ms / r.best_ms} for r in gains]}


def _goal(ours: dict, peer: dict, at_most: float) -> dict:
    ratio = ours["median_ms"] / peer["median_ms"]
    return {"ours": ours["label"], "peer": peer["label"], "ratio": ratio, "at_most": at_most, "met": ratio <= at_most,
            "same_commit": ours["commit"] == peer["commit"],
            "dates": sorted({(ours["date"] or "")[:16], (peer["date"] or "")[:16]})}


def gpu_goals(groups: list[dict], side_by_side: Iterable[dict] = ()) -> list[dict]:
    """Per CUDA latency group with qbuild's kernels: each GPU goal's ratio from the plan's medians
    (separate benchmark runs), where both are timed, and the goals as the same machine's
    side-by-side run judged them (interleaved rounds; None where it has none)."""
    out = []
    for g in groups:
        if g["target"] != "cuda":
            continue
        rows = {r["variant"]: r for r in g["rows"]}
        goals = [_goal(rows[ours], rows[peer], at_most) for ours, peer, at_most in GOALS["cuda"]  # as compare judges them
                 if ours in rows and peer in rows]
        judged = next((d.get("targets") for d in side_by_side if d.get("target") == "cuda"
                       and d.get("model") == g["model"] and d.get("machine") == g["machine"]), None)
        if goals:
            out.append({"model": g["model"], "machine": g["machine"], "device": g["device"], "goals": goals,
                        "side_by_side": judged})
    return out


def _gaps(cpu: dict, gpu: dict) -> dict:
    """CPU/GPU median ratio per variant timed on both, and whether the quantized gap is smaller."""
    gaps = {}
    for variant in VARIANT_ORDER:
        c, g = _median(cpu, variant), _median(gpu, variant)
        if c and g:
            gaps[variant] = c / g
    quantized = [g for v, g in gaps.items() if v != "float"]
    smaller = max(quantized) < gaps["float"] if "float" in gaps and quantized else None  # None: not measurable
    return {"device": cpu["device"], "machine": cpu["machine"], "gaps": gaps, "quantized_gap_smaller": smaller}


def gpu_cpu_findings(groups: list[dict]) -> list[dict]:
    """Per GPU machine (where some CPU machine timed the same model): the flatness of its time
    across activation dtypes, and its gap to each CPU machine, named (never one machine's
    numbers for another's)."""
    out = []
    for model, per_model in groupby(sorted(groups, key=lambda g: g["model"]), key=lambda g: g["model"]):
        per_model = list(per_model)
        cpus = [g for g in per_model if g["target"] == "cpu"]
        for gpu in (g for g in per_model if g["target"] == "cuda" and cpus):
            relay = [r for r in gpu["rows"] if r["variant"] in RELAY_ACTIVATIONS.values() and r.get("median_ms")]
            gpu_relay = [r["median_ms"] for r in relay]
            spread = (max(gpu_relay) - min(gpu_relay)) / statistics.median(gpu_relay) if len(gpu_relay) > 1 else None
            out.append({"model": model, "device": gpu["device"], "machine": gpu["machine"],
                        "gpu_activation_spread": spread, "gpu_flat": spread is not None and spread < 0.1,
                        "activation_commits": sorted({(r.get("commit") or "?")[:7] for r in relay}),
                        "cpus": [_gaps(cpu, gpu) for cpu in cpus]})
    return out


def accuracy(all_rows: list[Row]) -> list[dict]:
    """Per model with measured accuracy: each variant's top-1/top-5, agreement and cat verdict."""
    out = []
    for (model, target, machine), group in _by(all_rows, lambda r: (r.subject, r.target, r.machine)):
        measured = [r for r in group if r.record.get("accuracy") and not r.in_sweep]
        if not measured:
            continue
        base = next((r for r in measured if r.variant == "float"), None)
        base_top1 = base.record["accuracy"]["top1"] if base else None
        rows_out = []
        for r in measured:
            acc = r.record["accuracy"]
            rows_out.append({"label": r.label, "variant": r.variant, **acc["labelled"],
                             "delta_points": None if base_top1 is None else 100 * (acc["top1"] - base_top1),
                             "cat": acc.get("cat")})
        out.append({"model": model, "target": target, "machine": machine, "weights": measured[0].weights,
                    "rows": rows_out})
    return out




def side_by_side_top1(document: dict, all_rows: list[Row]) -> dict[str, float]:
    """{build name: top-1} for the builds of a side-by-side ``document`` whose accuracy its
    machine measured in the plan (same model, target and variant; the builtin build's, which
    every kernel set's integers match, where the compared kernel set has none)."""
    found: dict[str, float] = {}
    compared = {e["variant"]["name"]: e for e in document.get("experiments", []) if "variant" in e}
    for r in all_rows:
        top1 = r._get("accuracy", "top1")
        if (top1 is None or r.model != document["model"] or r.machine != document["machine"]
                or r.target != document.get("target", "cpu") or r.variant not in compared
                or r._get("experiment", "profile") != compared[r.variant].get("profile")):
            continue
        if r.variant not in found or r.kernels == compared[r.variant].get("kernels"):
            found[r.variant] = top1
    return found


def layer_errors(all_rows: list[Row]) -> list[dict]:
    """Per (model, machine): each quantized variant's output SQNR at every layer
    (``qbuild.layer_errors``), the layers described once, and where each variant's error first
    reaches ``FLOOR_DB``."""
    out = []
    for (model, machine), group in _by(all_rows, lambda r: (r.subject, r.machine)):
        measured = [r for r in group if r.record.get("layer_errors") and r.record.get("quantization")]
        if not measured:
            continue
        first = measured[0].record["quantization"]["layers"]
        layers = [{"position": i, "kind": describe(layer)} for i, layer in enumerate(first)]
        out.append({"model": model, "machine": machine, "layers": layers,
                    "images": measured[0].record["layer_errors"]["images"],
                    "variants": [_layer_profile(r) for r in measured]})
    return out


def _noticeable(share: float | None) -> float | None:
    """A share of clipped values worth a sentence (0.1% or more), else None."""
    return share if share is not None and share >= 0.001 else None


def _layer_profile(row: Row) -> dict:
    """One variant's layer errors: the SQNR at each layer (None where exact), the logits', and the
    first layer below the floor with its weights' own SQNR and the share of its input clipped."""
    records = row.record["quantization"]["layers"]
    errors = row.record["layer_errors"]["layers"]
    sqnr = [layer["sqnr_db"] for layer in errors]
    measured = [(i, db) for i, db in enumerate(sqnr) if db is not None]
    below = next(((i, db) for i, db in measured if db < FLOOR_DB), None)
    lowest = min(measured, key=lambda item: item[1]) if measured else None
    first_below = None
    if below is not None:
        position, db = below
        weights_db = records[position].get("weight_sqnr_db")
        first_below = {"position": position, "kind": describe(records[position]), "sqnr_db": db,
                       "weight_sqnr_db": weights_db, "input_clipped": _noticeable(errors[position].get("input_clipped")),
                       "from_input": weights_db is not None and weights_db >= db + FLOOR_DB}
    return {"variant": row.variant, "label": row.label, "in_sweep": row.in_sweep, "sqnr_db": sqnr,
            "logits_db": sqnr[-1] if sqnr else None, "first_below": first_below,
            "lowest": None if lowest is None else {"position": lowest[0], "sqnr_db": lowest[1]}}


def accuracy_findings(groups: list[dict]) -> list[dict]:
    """The study's accuracy claim (int8 activations lose accuracy, int16/int32 do not), re-tested
    for each family of variants that has all three activation dtypes and the unquantized model."""
    out = []
    for g in groups:
        by_variant = {r["variant"]: r for r in g["rows"]}
        for family, variants in ACTIVATION_FAMILIES:
            if "float" not in by_variant or not set(variants.values()) <= set(by_variant):
                continue
            drop = {dtype: -by_variant[v]["delta_points"] for dtype, v in variants.items()}
            out.append({"model": g["model"], "target": g["target"], "machine": g["machine"], "family": family,
                        "drop_points": drop,
                        "int8_drops": drop["int8"] > ACCURACY_LOSS_POINTS,
                        "wider_hold": drop["int16"] <= ACCURACY_LOSS_POINTS and drop["int32"] <= ACCURACY_LOSS_POINTS,
                        "cats": {dtype: (by_variant[v]["cat"] or {}).get("is_cat") for dtype, v in variants.items()}})
    return out


# --- study item 6: the bit-width sweep --------------------------------------------------------
SWEEP_STAGES = ("quantize", "compile", "kernel_check", "bench", "accuracy")
# The qconfig options a sweep group's settings table shows (as its results recorded them).
SWEEP_SETTINGS = (*SWEEP, "skip_conv_layers", "nbit_edge", "subbyte_kernel")
W4A8_ACCURACY_POINTS = 3.0  # issue 6's target: W4A8 top-1 within this many points of float


def _stage(row: Row, name: str) -> dict:
    stage = row._get("stages", name, default={"status": "absent"})
    note = (stage.get("error") or {}).get("message") or stage.get("reason")
    return {"status": stage["status"], "note": note}


def sweep(all_rows: list[Row]) -> list[dict]:
    """Per (model, target, machine): each sweep precision's stages, latency, accuracy, weight
    bytes and kernels, against the float build of the same model."""
    out = []
    for (model, target, machine), group in _by(all_rows, lambda r: (r.subject, r.target, r.machine)):
        swept = sorted((r for r in group if r.in_sweep), key=lambda r: SWEEP_VARIANTS.index(r.variant))
        if not swept:
            continue
        base = next((r for r in group if r.variant == "float"), None)
        float_top1 = base._get("accuracy", "top1") if base else None
        parameters = next((r._get("model", "parameters") for r in group if r._get("model", "parameters")), None)
        float_bytes = 4 * parameters if parameters else None
        configs = [r._get("quantization", "config", default={}) for r in swept]
        rows_out = []
        for r, config in zip(swept, configs):
            layers = [layer for layer in r._get("quantization", "layers", default=[]) if layer["status"] == "quantized"]
            top1, weight_bytes = r._get("accuracy", "top1"), r._get("compile", "weight_bytes")
            rows_out.append({
                "variant": r.variant, "label": r.label, "id": r.id, "commit": r.commit,
                "weight_bits": config.get("nbit_weight"), "input_bits": config.get("nbit_input"),
                "stages": {name: _stage(r, name) for name in SWEEP_STAGES},
                "median_ms": r.median_ms, "top1": top1, "top5": r._get("accuracy", "top5"),
                "delta_points": None if top1 is None or float_top1 is None else 100 * (top1 - float_top1),
                "weight_bytes": weight_bytes,
                "bytes_vs_float": weight_bytes / float_bytes if weight_bytes and float_bytes else None,
                "bitserial_layers": sum(layer.get("kernel") == "bitserial" for layer in layers),
                "int8_layers": sum(layer.get("kernel") == "int8" for layer in layers),
                "int16_sum_convs": r._get("compile", "kernels", "int16_sum_convs"),
                "kernel_check": r.record.get("kernel_check"),
            })
        w4a8 = next((row for row in rows_out if row["variant"] == "w4a8"), None)
        shared = [name for name in SWEEP_SETTINGS if len({repr(c.get(name)) for c in configs}) == 1]
        out.append({
            "model": model, "target": target, "machine": machine, "weights": swept[0].weights,
            "settings": [{"name": name, "value": configs[0].get(name)} for name in shared],
            "differing": [name for name in SWEEP_SETTINGS if name not in shared],
            "float_ms": base.median_ms if base else None, "float_top1": float_top1, "float_bytes": float_bytes,
            "float_commit": base.commit if base else None,
            "rows": rows_out,
            # the rule "auto" chose sub-byte kernels by (absent in results written before it was recorded)
            "auto_pairs": sorted({pairs for r in swept
                                  if (pairs := r._get("quantization", "auto_bitserial_pairs")) is not None}),
            "failed": [(row["label"], name, stage["note"]) for row in rows_out
                       for name, stage in row["stages"].items() if stage["status"] == "error"],
            "w4a8_target": None if w4a8 is None or w4a8["delta_points"] is None
            else {"drop_points": -w4a8["delta_points"], "met": -w4a8["delta_points"] <= W4A8_ACCURACY_POINTS,
                  "goal_points": W4A8_ACCURACY_POINTS},
        })
    return out


def environments(results) -> list[dict]:
    """Per machine: the environment of its newest result, and the minutes its results' stages took
    (summed over the files: what making them all again would take, process start-up aside)."""
    out = []
    for machine in results.machines():
        files = [f for f in results.files if f.machine_id == machine]
        newest = max(files, key=lambda f: f.record["environment"].get("date", ""))
        env = newest.record["environment"]
        out.append({"machine": machine, "env": env, "experiments": len(files),
                    "jobs": max(f.record.get("jobs", 1) for f in files),
                    "dates": sorted({f.record["environment"].get("date", "")[:10] for f in files}),
                    **stage_minutes(f.record for f in files)})
    return out


def stage_minutes(records) -> dict:
    """{"minutes": all stages of ``records`` summed, "by_stage": [(stage, minutes)], largest first}."""
    seconds: dict[str, float] = {}
    for record in records:
        for name, stage in (record.get("stages") or {}).items():
            seconds[name] = seconds.get(name, 0.0) + (stage.get("seconds") or 0.0)
    by_stage = sorted(((name, total / 60) for name, total in seconds.items()), key=lambda item: -item[1])
    return {"minutes": sum(seconds.values()) / 60, "by_stage": by_stage}
