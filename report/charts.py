"""Altair charts of the results: the study's latency box plots by type of compilation."""

from __future__ import annotations

import altair as alt

TYPE = "type of compilation"
LATENCY = "latency (ms)"


def latency_boxplot(groups: list[dict], samples: dict, title: str) -> dict:
    """Box plot of every timed run, by type of compilation, one box per target when several.

    ``groups``: latency groups of one model (``derive.latency``); ``samples``: (model, target,
    machine, variant) -> raw samples in ms. Returns a Vega-Lite spec (a dict).
    """
    values = []
    order = []
    for group in groups:
        for row in group["rows"]:
            if row["label"] not in order:
                order.append(row["label"])
            for sample in samples[(group["model"], group["target"], group["machine"], row["variant"])]:
                values.append({TYPE: row["label"], "target": group["target"].upper(), LATENCY: sample})
    several = len({g["target"] for g in groups}) > 1
    encodings = {
        "x": alt.X(f"{TYPE}:N", sort=order, axis=alt.Axis(labelAngle=-30, labelLimit=260)),
        "y": alt.Y(f"{LATENCY}:Q", scale=alt.Scale(type="log", zero=False), title="latency (ms, log scale)"),
        "color": alt.Color("target:N" if several else f"{TYPE}:N", sort=None if several else order,
                           legend=alt.Legend(orient="top") if several else None),
        "tooltip": [f"{TYPE}:N", "target:N"],
    }
    if several:
        encodings["xOffset"] = alt.XOffset("target:N")
    chart = alt.Chart(alt.Data(values=values)).mark_boxplot(extent="min-max", size=28).encode(**encodings)
    return chart.properties(title=title, width=alt.Step(60), height=320).to_dict()
