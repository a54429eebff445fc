"""Altair charts of the results, as Vega-Lite specs (dicts) sized to the page's width.

Box plots are drawn from each build's quantiles, never from raw samples, so that a page stays
light; the raw samples are written beside the chart for download (``report.build``).
"""

from __future__ import annotations

import statistics

import altair as alt

BUILD = "build"
LATENCY_TITLE = "latency per image (ms, log scale)"
CHART_HEIGHT = 360


def quantiles(samples: list[float]) -> dict:
    """The five numbers a box plot draws: min, lower quartile, median, upper quartile, max (ms)."""
    ordered = sorted(samples)
    if len(ordered) == 1:
        q1 = q3 = ordered[0]
    else:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    return {"min": ordered[0], "q1": q1, "median": statistics.median(ordered), "q3": q3, "max": ordered[-1]}


def _selector(name: str, options: list[str], label: str) -> alt.Parameter:
    """A drop-down over ``options`` (first one chosen), shown above the chart."""
    return alt.param(name=name, value=options[0], bind=alt.binding_select(options=options, name=f"{label} "))


def latency_boxplot(boxes: list[dict], title: str) -> dict:
    """Box plot of latency by build, one chart for every machine and kernel set of a model.

    ``boxes``: one per build and series, each with ``build`` (its label), ``engine``,
    ``series`` (the machine and target it ran on), ``kernels`` (the kernel set; peers appear
    beside every set) and the ``quantiles`` of its samples. Several series give a drop-down to
    choose one; several kernel sets give another.
    """
    order = list(dict.fromkeys(b[BUILD] for b in boxes))
    series = list(dict.fromkeys(b["series"] for b in boxes))
    kernel_sets = list(dict.fromkeys(b["kernels"] for b in boxes if b["kernels"] != "peer"))
    values = [
        {
            BUILD: b[BUILD],
            "engine": b["engine"],
            "series": b["series"],
            "kernels": b["kernels"],
            **{k: round(v, 4) for k, v in b["quantiles"].items()},
        }
        for b in boxes
    ]
    scale = alt.Scale(type="log", zero=False)
    base = alt.Chart().encode(
        x=alt.X(f"{BUILD}:N", sort=order, title=None, axis=alt.Axis(labelAngle=-30, labelLimit=320, labelFontSize=12)),
        color=alt.Color("engine:N", title="engine", legend=alt.Legend(orient="top", labelFontSize=12)),
        tooltip=[
            f"{BUILD}:N",
            "series:N",
            alt.Tooltip("median:Q", title="median (ms)", format=".3f"),
            alt.Tooltip("q1:Q", title="lower quartile (ms)", format=".3f"),
            alt.Tooltip("q3:Q", title="upper quartile (ms)", format=".3f"),
            alt.Tooltip("min:Q", format=".3f"),
            alt.Tooltip("max:Q", format=".3f"),
        ],
    )
    layers = [
        base.mark_rule().encode(y=alt.Y("min:Q", scale=scale, title=LATENCY_TITLE), y2="max:Q"),
        base.mark_bar(size=22).encode(y="q1:Q", y2="q3:Q"),
        base.mark_tick(color="black", size=22, thickness=2).encode(y="median:Q"),
    ]
    chart = alt.layer(*layers, data=alt.Data(values=values))
    if len(series) > 1:
        machine = _selector("machine", series, "machine")
        chart = chart.add_params(machine).transform_filter(alt.datum.series == machine)
    if len(kernel_sets) > 1:
        kernels = _selector("kernels", kernel_sets, "kernel set")
        chart = chart.add_params(kernels).transform_filter(
            (alt.datum.kernels == kernels) | (alt.datum.kernels == "peer")
        )
    return chart.properties(title=title, width="container", height=CHART_HEIGHT).to_dict()


def latency_vs_accuracy(points: list[dict], title: str) -> dict:
    """Scatter of top-1 accuracy against median latency, one point per build, one panel per
    machine. ``points``: ``build``, ``engine``, ``precision``, ``machine``, ``median_ms``,
    ``top1`` (a fraction); optionally ``short`` (a name written beside the point) and ``front``
    (on the Pareto front: such points are ringed and joined by the front's staircase). The mouse
    zooms and pans."""
    values = [
        {
            BUILD: p[BUILD],
            "engine": p["engine"],
            "precision": p["precision"],
            "machine": p["machine"],
            "median_ms": round(p["median_ms"], 4),
            "top1": round(100 * p["top1"], 2),
            **{key: p[key] for key in ("short", "front") if key in p},
        }
        for p in points
    ]
    machines = sorted({p["machine"] for p in points})
    base = alt.Chart().encode(
        x=alt.X("median_ms:Q", scale=alt.Scale(type="log", zero=False), title=LATENCY_TITLE),
        y=alt.Y("top1:Q", scale=alt.Scale(zero=False), title="top-1 accuracy (%)"),
    )
    layers = [
        base.mark_point(size=110, filled=True, opacity=0.85)
        .encode(
            color=alt.Color("engine:N", title="engine", legend=alt.Legend(orient="top", labelFontSize=12)),
            shape=alt.Shape("precision:N", title="precision", legend=alt.Legend(orient="top", labelFontSize=12)),
            tooltip=[
                f"{BUILD}:N",
                "engine:N",
                "machine:N",
                alt.Tooltip("median_ms:Q", title="median (ms)", format=".3f"),
                alt.Tooltip("top1:Q", title="top-1 (%)", format=".1f"),
            ],
        )
        .add_params(alt.selection_interval(bind="scales", name="zoom"))
    ]
    if any("front" in p for p in points):
        front = base.transform_filter(alt.datum.front)
        layers.insert(
            0, front.mark_line(color="gray", strokeDash=[4, 3], interpolate="step-after").encode(order="median_ms:Q")
        )
        layers.append(front.mark_point(size=320, color="black", strokeWidth=1.5))
    if any("short" in p for p in points):
        layers.append(base.mark_text(align="left", dx=9, dy=-6, fontSize=11).encode(text="short:N"))
    chart = alt.layer(*layers, data=alt.Data(values=values))
    if len(machines) > 1:
        machine = _selector("machine", machines, "machine")
        chart = chart.add_params(machine).transform_filter(alt.datum.machine == machine)
    return chart.properties(title=title, width="container", height=CHART_HEIGHT).to_dict()


def layer_sqnr(group: dict, variants: list[dict], title: str) -> dict:
    """Line chart of each variant's output SQNR (dB) at every layer, in layer order (a layer
    whose output is exact, e.g. a float first conv, has no point). ``group``: one of
    ``report.pages.accuracy.layer_errors``; ``variants``: which of its variants to draw."""
    values = [
        {"layer": layer["position"], "kind": layer["kind"], "variant": v["label"], "SQNR (dB)": round(db, 2)}
        for v in variants
        for layer, db in zip(group["layers"], v["sqnr_db"])
        if db is not None
    ]
    order = [v["label"] for v in variants]
    chart = (
        alt.Chart(alt.Data(values=values))
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q", title="layer (conv/dense, in program order)"),
            y=alt.Y("SQNR (dB):Q", title="output SQNR against the float model (dB)"),
            color=alt.Color("variant:N", sort=order, legend=alt.Legend(orient="top", columns=2, labelLimit=400)),
            tooltip=["variant:N", "layer:Q", "kind:N", alt.Tooltip("SQNR (dB):Q", format=".1f")],
        )
    )
    return chart.properties(title=title, width="container", height=CHART_HEIGHT).to_dict()
