"""Altair charts of the results: the study's latency box plots by type of compilation."""

from __future__ import annotations

import altair as alt

TYPE = "type of compilation"
LATENCY = "latency (ms)"
DEVICE = "device"


def latency_boxplot(groups: list[dict], samples: dict, title: str) -> dict:
    """Box plot of every timed run, by type of compilation, one box per device when several.

    ``groups``: latency groups of one model (``derive.latency``); ``samples``: (model, target,
    machine, variant) -> raw samples in ms. Each group is one machine's: two machines of one
    target (the H100 and the H200, say) are two series, never one pooled box. Returns a
    Vega-Lite spec (a dict).
    """
    values = []
    order = []
    for group in groups:
        series = f"{group['target'].upper()}: {group['device']}"
        for row in group["rows"]:
            if row["label"] not in order:
                order.append(row["label"])
            for sample in samples[(group["model"], group["target"], group["machine"], row["variant"])]:
                values.append({TYPE: row["label"], DEVICE: series, LATENCY: sample})
    series_count = len({v[DEVICE] for v in values})
    several = series_count > 1
    encodings = {
        "x": alt.X(f"{TYPE}:N", sort=order, axis=alt.Axis(labelAngle=-30, labelLimit=260)),
        "y": alt.Y(f"{LATENCY}:Q", scale=alt.Scale(type="log", zero=False), title="latency (ms, log scale)"),
        "color": alt.Color(f"{DEVICE}:N" if several else f"{TYPE}:N", sort=None if several else order,
                           legend=alt.Legend(orient="top", columns=1, labelLimit=400) if several else None),
        "tooltip": [f"{TYPE}:N", f"{DEVICE}:N"],
    }
    if several:
        encodings["xOffset"] = alt.XOffset(f"{DEVICE}:N")
    box = 28 if series_count == 1 else 16  # px; each type of compilation gets room for every series' box
    chart = alt.Chart(alt.Data(values=values)).mark_boxplot(extent="min-max", size=box).encode(**encodings)
    return chart.properties(title=title, width=alt.Step(max(60, (box + 6) * series_count)), height=320).to_dict()


def layer_sqnr(group: dict, variants: list[dict], title: str) -> dict:
    """Line chart of each variant's output SQNR (dB) at every layer, in layer order (a layer
    whose output is exact, e.g. a float first conv, has no point). ``group``: one of
    ``derive.layer_errors``; ``variants``: which of its variants to draw."""
    values = [{"layer": layer["position"], "kind": layer["kind"], "variant": v["label"],
               "SQNR (dB)": db}
              for v in variants for layer, db in zip(group["layers"], v["sqnr_db"]) if db is not None]
    order = [v["label"] for v in variants]
    chart = alt.Chart(alt.Data(values=values)).mark_line(point=True).encode(
        x=alt.X("layer:Q", title="layer (conv/dense, in program order)"),
        y=alt.Y("SQNR (dB):Q", title="output SQNR against the float model (dB)"),
        color=alt.Color("variant:N", sort=order, legend=alt.Legend(orient="top", columns=2, labelLimit=400)),
        tooltip=["variant:N", "layer:Q", "kind:N", alt.Tooltip("SQNR (dB):Q", format=".1f")],
    )
    return chart.properties(title=title, width=640, height=320).to_dict()
