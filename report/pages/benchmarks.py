"""The benchmarks page: latency groups, the study's latency claims re-tested, kernel sets
compared, tuning databases, the GPU goals and the side-by-side runs' checks."""

from __future__ import annotations

import statistics
from itertools import groupby
from typing import Iterable

from qbuild.schema.documents import goals as recorded_goals
from qbuild.schema.tuning import TuningFile, tile_label
from report.rows import Row, comparable, group_by, in_plan_order

# The study's own three "types of compilation": relay's defaults per activation dtype.
RELAY_ACTIVATIONS = {"int8": "int8-a8", "int16": "int8-a16", "int32": "int8-a32"}
# A side-by-side median further than this from the same build timed alone is flagged.
ALONE_TOLERANCE_PCT = 15.0


def latency(all_rows: list[Row], sweep: bool = False) -> list[dict]:
    """Per (model, target, machine): the latency summary of each variant, in the plan's order:
    the study's variants and peers, or (``sweep``) the bit-width sweep's beside the float build."""
    out = []
    chosen = [r for r in all_rows if r.in_sweep == sweep or (sweep and r.variant == "float")]
    for (model, target, machine), group in group_by(chosen, lambda r: (r.subject, r.target, r.machine)):
        timed = [r for r in group if r.samples]
        if not timed or (sweep and not any(r.in_sweep for r in timed)):
            continue
        out.append(
            {
                "model": model,
                "target": target,
                "machine": machine,
                "device": timed[0].device,
                "failed": [{"label": r.label, **r.failure} for r in group if not r.samples and r.failure],
                "rows": [
                    {
                        "label": r.label,
                        "variant": r.variant,
                        "quantized": r.quantized,
                        "peer": r.is_peer,
                        "precision": r.precision,
                        "commit": r.commit,
                        "top1": r.top1,
                        "date": r.field("environment", "date"),
                        **r.record["latency"]["summary"],
                        "iterations": r.record["latency"]["iterations_run"],
                        "executions": r.record["latency"]["executions_run"],
                        "truncated": r.record["latency"]["truncated_by_budget"],
                        "protocol": r.record["latency"]["protocol"],
                    }
                    for r in timed
                ],
            }
        )
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
        findings.append(
            {
                "model": g["model"],
                "target": g["target"],
                "machine": g["machine"],
                "float_ms": base,
                "all_quantized_slower": len(slower) == len(quantized),
                "none_quantized_slower": not slower,
                "ratios": [{"label": r["label"], "ratio": r["median_ms"] / base} for r in quantized],
                "fastest_activation": best["label"] if best else None,
                "int16_fastest": best is not None and best["variant"] == RELAY_ACTIVATIONS["int16"],
                "fastest_ours": {"label": ours["label"], "median_ms": ours["median_ms"]},
                "peers": [_against_peer(g["rows"], p) for p in peers],
            }
        )
    return findings


def _against_peer(group_rows: list[dict], peer: dict) -> dict:
    """A peer against qbuild's fastest build of the same precision and comparable accuracy (int8
    peers against quantized builds; fp16 peers against none: qbuild builds no fp16 variant).
    ``unlike``: qbuild's builds of that precision left out for their accuracy."""
    same = [r for r in group_rows if not r["peer"] and r["precision"] == peer["precision"]]
    like = [r for r in same if comparable(r["top1"], peer["top1"])]
    ours = min(like, key=lambda r: r["median_ms"]) if like else None
    return {
        "label": peer["label"],
        "median_ms": peer["median_ms"],
        "precision": peer["precision"],
        "top1": peer["top1"],
        "ours_label": ours["label"] if ours else None,
        "ours_top1": ours["top1"] if ours else None,
        "ours_ratio": ours["median_ms"] / peer["median_ms"] if ours else None,
        "unlike": [{"label": r["label"], "top1": r["top1"]} for r in same if r not in like],
    }


KERNEL_SET_ORDER = ("untuned", "builtin", "tuned")


def kernel_findings(all_rows: list[Row]) -> list[dict]:
    """Per model and target: what the builtin kernels change against TVM's untuned default, and
    the tuned ones against the builtin, variant by variant; and whether the study's "quantized is
    slower" holds under each kernel set."""
    out = []
    built = [
        r
        for r in all_rows
        if (r.median_ms is not None or r.failure) and not r.is_peer and r.kernels in KERNEL_SET_ORDER
    ]
    for (model, target, machine), group in group_by(built, lambda r: (r.model, r.target, r.machine)):
        by = {(r.variant, r.kernels): r for r in group}
        pairs = [
            _kernel_row({k: by.get((v, k)) for k in KERNEL_SET_ORDER})
            for v in in_plan_order(group)
            if (v, "builtin") in by and ((v, "untuned") in by or (v, "tuned") in by)
        ]
        if not any(p["speedup"] or p["tuned_gain"] for p in pairs):
            continue
        timed = {key: r for key, r in by.items() if r.median_ms is not None}
        slower = {}
        for kernels in KERNEL_SET_ORDER:
            base = timed.get(("float", kernels))
            quantized = [r for (v, k), r in timed.items() if k == kernels and r.quantized]
            if base and quantized:
                slower[kernels] = {
                    "all": all(r.median_ms > base.median_ms for r in quantized),
                    "none": all(r.median_ms <= base.median_ms for r in quantized),
                    "best_ratio": min(r.median_ms for r in quantized) / base.median_ms,
                }
        out.append(
            {
                "model": model,
                "target": target,
                "machine": machine,
                "pairs": pairs,
                "quantized_slower": slower,
                "tuned": any(p["tuned_ms"] is not None or p["tuned_failure"] for p in pairs),
            }
        )
    return out


def _ratio(before: Row | None, after: Row | None) -> float | None:
    timed = before is not None and after is not None and before.median_ms is not None and after.median_ms is not None
    return before.median_ms / after.median_ms if timed else None


def _kernel_row(builds: dict[str, Row | None]) -> dict:
    """One variant under each kernel set: medians (None where not built or not timed), failures,
    the speed-up of builtin over untuned and the gain of tuned over builtin."""
    row = {
        "label": builds["builtin"].label,
        "speedup": _ratio(builds["untuned"], builds["builtin"]),
        "tuned_gain": _ratio(builds["builtin"], builds["tuned"]),
    }
    for kernels, r in builds.items():
        row[f"{kernels}_ms"] = r.median_ms if r is not None else None
        row[f"{kernels}_failure"] = r.failure if r is not None else None
    return row


TUNING_TOP = 8  # workloads listed per tuning database: the largest gains


def tuning(database: TuningFile) -> dict:
    """A tuning database (``qbuild.schema.tuning``) for the page: what was searched, the summed
    medians of every workload with the default and the chosen tiles, the largest gains."""
    records = list(database.workloads.values())
    gains = sorted(records, key=lambda r: r.default_ms / r.best_ms, reverse=True)[:TUNING_TOP]
    return {
        "machine": database.machine_id,
        "workloads": len(records),
        "trials": sum(r.candidates for r in records),
        "rounds": database.rounds,
        "date": database.environment.get("date", ""),
        "commit": (database.environment.get("git") or {}).get("commit"),
        "default_ms": sum(r.default_ms for r in records),
        "tuned_ms": sum(r.best_ms for r in records),
        "changed": sum(r.best_ms < r.default_ms for r in records),
        "top": [
            {
                "summary": r.summary,
                "tile": tile_label(r.tile),
                "default_ms": r.default_ms,
                "tuned_ms": r.best_ms,
                "gain": r.default_ms / r.best_ms,
            }
            for r in gains
        ],
    }


def _goal(ours: dict, peer: dict, at_most: float) -> dict:
    ratio = ours["median_ms"] / peer["median_ms"]
    return {
        "ours": ours["label"],
        "peer": peer["label"],
        "ratio": ratio,
        "at_most": at_most,
        "met": ratio <= at_most,
        "same_commit": ours["commit"] == peer["commit"],
        "dates": sorted({(ours["date"] or "")[:16], (peer["date"] or "")[:16]}),
    }


def gpu_goals(groups: list[dict], side_by_side: Iterable[dict] = ()) -> list[dict]:
    """Per CUDA latency group with qbuild's kernels: each GPU goal's ratio from the plan's medians
    (separate benchmark runs), where both are timed, and the goals as the same machine's
    side-by-side run judged them (interleaved rounds; None where it has none). The goals are
    those that run recorded (``qbuild.schema.documents.goals``; without one, schema 1's)."""
    out = []
    for g in groups:
        if g["target"] != "cuda":
            continue
        rows = {r["variant"]: r for r in g["rows"]}
        document = next(
            (
                d
                for d in side_by_side
                if d.get("target") == "cuda" and d.get("model") == g["model"] and d.get("machine") == g["machine"]
            ),
            None,
        )
        goals = [
            _goal(rows[goal.numerator], rows[goal.denominator], goal.at_most)
            for goal in recorded_goals(document, "cuda")  # as that machine's compare judged them
            if goal.numerator in rows and goal.denominator in rows
        ]
        judged = document.get("targets") if document else None
        if goals:
            out.append(
                {
                    "model": g["model"],
                    "machine": g["machine"],
                    "device": g["device"],
                    "goals": goals,
                    "side_by_side": judged,
                }
            )
    return out


def _gaps(cpu: dict, gpu: dict) -> dict:
    """CPU/GPU median ratio per variant timed on both, and whether the quantized gap is smaller."""
    gaps = {}
    for variant in dict.fromkeys(r["variant"] for r in cpu["rows"]):  # in the plan's order
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
            out.append(
                {
                    "model": model,
                    "device": gpu["device"],
                    "machine": gpu["machine"],
                    "gpu_activation_spread": spread,
                    "gpu_flat": spread is not None and spread < 0.1,
                    "activation_commits": sorted({(r.get("commit") or "?")[:7] for r in relay}),
                    "cpus": [_gaps(cpu, gpu) for cpu in cpus],
                }
            )
    return out


def _compared_in_plan(document: dict, all_rows: list[Row]) -> list[tuple[Row, dict]]:
    """The plan's results of the builds a side-by-side ``document`` compared: same machine, model,
    target, variant and profile, each with the document's experiment it matches."""
    compared = {e["variant"]["name"]: e for e in document.get("experiments", []) if "variant" in e}
    return [
        (r, compared[r.variant])
        for r in all_rows
        if r.model == document["model"]
        and r.machine == document["machine"]
        and r.target == document.get("target", "cpu")
        and r.variant in compared
        and r.field("experiment", "profile") == compared[r.variant].get("profile")
    ]


def side_by_side_top1(document: dict, all_rows: list[Row]) -> dict[str, float]:
    """{build name: top-1} for the builds of a side-by-side ``document`` whose accuracy its
    machine measured in the plan (the builtin build's, which every kernel set's integers match,
    where the compared kernel set has none)."""
    found: dict[str, float] = {}
    for r, experiment in _compared_in_plan(document, all_rows):
        if r.top1 is not None and (r.variant not in found or r.kernels == experiment.get("kernels")):
            found[r.variant] = r.top1
    return found


def side_by_side_alone(document: dict, all_rows: list[Row]) -> dict[str, float]:
    """{build name: median ms} of the plan's bench of the same build (same kernel set), which
    timed it alone in a process of its own: the check on each side-by-side median."""
    return {
        r.variant: r.median_ms
        for r, experiment in _compared_in_plan(document, all_rows)
        if r.median_ms is not None and r.kernels == experiment.get("kernels")
    }
