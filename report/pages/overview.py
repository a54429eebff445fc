"""The Overview page's answers: what int8 buys with qbuild's kernels and with TVM's untuned ones,
what it costs in accuracy, where qbuild stands against the fastest peer, which bit widths pay.

Each function returns plain data; ``templates/index.md.j2`` words it. Speed against a peer is
taken from side-by-side runs only, and only between builds of comparable accuracy.
"""

from __future__ import annotations

from report.rows import COMPARABLE_POINTS, Row, comparable

# qbuild's int8 builds the answers speak of: relay's defaults and the calibrated one.
INT8_BUILDS = ("int8-a8", "int8-a8-calibrated")


def _timed(rows: list[Row], kernels: str) -> dict[str, Row]:
    return {r.variant: r for r in rows if r.kernels == kernels and r.median_ms is not None}


def speedups(all_rows: list[Row]) -> list[dict]:
    """Per (model, target, machine): float's median and each int8 build's, with qbuild's builtin
    kernels and with TVM's untuned ones (separate runs of the plan, each build alone)."""
    out = []
    keys = sorted({(r.setting, r.target, r.machine) for r in all_rows if not r.is_peer})
    for setting, target, machine in keys:
        group = [r for r in all_rows if (r.setting, r.target, r.machine) == (setting, target, machine)]
        sets = {}
        for kernels in ("builtin", "untuned"):
            timed = _timed(group, kernels)
            if "float" in timed and any(v in timed for v in INT8_BUILDS):
                sets[kernels] = {
                    "float_ms": timed["float"].median_ms,
                    "int8": [
                        {
                            "variant": v,
                            "label": timed[v].label,
                            "median_ms": timed[v].median_ms,
                            "speedup": timed["float"].median_ms / timed[v].median_ms,
                        }
                        for v in INT8_BUILDS
                        if v in timed
                    ],
                }
        if "builtin" in sets:
            out.append({"model": setting, "target": target, "machine": machine, **sets})
    return out


def accuracy_costs(all_rows: list[Row]) -> list[dict]:
    """Per (model, machine) with real weights and measured accuracy: float's top-1 and each int8
    build's drop against it, in points."""
    out = []
    measured = [
        r
        for r in all_rows
        if r.top1 is not None and r.weights.get("kind") == "pretrained" and r.kernels == "builtin" and r.target == "cpu"
    ]
    for setting, machine in sorted({(r.setting, r.machine) for r in measured}):
        by = {r.variant: r for r in measured if (r.setting, r.machine) == (setting, machine)}
        if "float" in by and any(v in by for v in INT8_BUILDS):
            base = by["float"].top1
            out.append(
                {
                    "model": setting,
                    "machine": machine,
                    "float_top1": base,
                    "int8": [
                        {"label": by[v].label, "top1": by[v].top1, "drop_points": 100 * (base - by[v].top1)}
                        for v in INT8_BUILDS
                        if v in by
                    ],
                }
            )
    return out


def _newest(documents: list[dict]) -> list[dict]:
    """The newest side-by-side run of each (model, target, machine)."""
    newest: dict[tuple, dict] = {}
    for doc in documents:
        key = (doc["model"], doc.get("target", "cpu"), doc["machine"])
        if key not in newest or doc["environment"]["date"] > newest[key]["environment"]["date"]:
            newest[key] = doc
    return [newest[key] for key in sorted(newest)]


def against_peers(documents: list[dict]) -> list[dict]:
    """Per newest side-by-side run: each goal against a peer, with both builds' top-1 (as the
    report attaches it, ``top1``) and whether their accuracies are comparable."""
    out = []
    for doc in _newest(documents):
        builds = {b["name"]: b for b in doc["builds"]}
        top1 = doc.get("top1", {})
        goals = []
        for t in doc.get("targets", []):
            peer = builds.get(t["denominator"])
            if peer is None or peer["engine"] == "tvm":
                continue
            ours, theirs = top1.get(t["numerator"]), top1.get(t["denominator"])
            goals.append(
                {
                    "variant": t["numerator"],
                    "ours": builds[t["numerator"]]["label"],
                    "peer": peer["label"],
                    "ratio": t["ratio"],
                    "at_most": t["goal_at_most"],
                    "met": t["met"],
                    "ours_top1": ours,
                    "peer_top1": theirs,
                    "comparable": comparable(ours, theirs),
                    "accuracy_known": None not in (ours, theirs),
                }
            )
        if goals:
            out.append(
                {
                    "model": doc["model"],
                    "target": doc.get("target", "cpu"),
                    "machine": doc["machine"],
                    "date": doc["environment"]["date"][:10],
                    "method": doc.get("method"),
                    "goals": goals,
                }
            )
    return out


def bit_widths(sweep_groups: list[dict]) -> list[dict]:
    """Per sweep group (``report.pages.sweep``) with an int8-a8 median: the precisions faster than that
    build, and which of those also keep top-1 within ``COMPARABLE_POINTS`` of float."""
    out = []
    for g in sweep_groups:
        timed = [row for row in g["rows"] if row["median_ms"] is not None]
        if g["int8_ms"] is None or not timed:
            continue
        faster = [row for row in timed if row["vs_int8"] < 1]
        accurate = [
            row for row in faster if row["delta_points"] is not None and -row["delta_points"] <= COMPARABLE_POINTS
        ]
        out.append(
            {
                "model": g["model"],
                "target": g["target"],
                "machine": g["machine"],
                "int8_ms": g["int8_ms"],
                "timed": len(timed),
                "accuracy_measured": any(row["top1"] is not None for row in timed),
                "faster": [
                    {
                        "label": row["label"],
                        "ratio": row["vs_int8"],
                        "drop_points": None if row["delta_points"] is None else -row["delta_points"],
                    }
                    for row in faster
                ],
                "worth_it": [row["label"] for row in accurate],
            }
        )
    return out


def headline_points(all_rows: list[Row]) -> dict[str, list[dict]]:
    """{model: points} for the latency-vs-accuracy chart: every builtin build and peer of a model
    with real weights, timed and with measured accuracy, on the CPU."""
    points: dict[str, list[dict]] = {}
    for r in all_rows:
        if (
            r.median_ms is None
            or r.top1 is None
            or r.weights.get("kind") != "pretrained"
            or r.kernels not in ("builtin", None)
            or r.target != "cpu"
        ):
            continue
        points.setdefault(r.setting, []).append(
            {
                "build": r.label,
                "engine": r.engine,
                "precision": r.precision,
                "machine": r.machine,
                "median_ms": r.median_ms,
                "top1": r.top1,
            }
        )
    return points


def _span(values: list[float]) -> dict | None:
    return {"low": min(values), "high": max(values), "count": len(values)} if values else None


def headline(speeds: list[dict], peers: list[dict], widths: list[dict]) -> dict:
    """The Overview's sentences, summed over every machine: the spans of int8's speed-up over
    unquantized (qbuild's kernels, TVM's untuned ones), each peer goal's spans and how often it is
    met (side-by-side runs with a process per build only), and the bit widths that pay anywhere."""

    def speedup(kernels: str, variant: str) -> dict | None:
        return _span(
            [q["speedup"] for s in speeds if kernels in s for q in s[kernels]["int8"] if q["variant"] == variant]
        )

    goals: dict[str, list[dict]] = {}
    for run in peers:
        if run["method"]:
            for goal in run["goals"]:
                goals.setdefault(goal["variant"], []).append({**goal, "model": run["model"], "machine": run["machine"]})
    return {
        "int8": speedup("builtin", "int8-a8"),
        "calibrated": speedup("builtin", "int8-a8-calibrated"),
        "untuned": speedup("untuned", "int8-a8"),
        "goals": [
            {
                "ours": found[0]["ours"],
                "span": _span([g["ratio"] for g in found]),
                "at_most": found[0]["at_most"],
                "met": sum(g["met"] for g in found),
                "peers": sorted({g["peer"] for g in found}),
                "unlike": [g for g in found if not g["comparable"]],
            }
            for found in goals.values()
        ],
        "one_process_runs": sum(1 for run in peers if not run["method"]),
        "worth_it": sorted({label for w in widths for label in w["worth_it"]}),
        "faster_bits": sorted({f["label"] for w in widths for f in w["faster"]}),
    }
