"""Render the report: results -> derived data + charts -> ``docs/*.md`` from ``templates/*.md.j2``.

Everything under ``docs/`` is generated (pages, chart specs and SVGs, the offline Vega bundle
and the chart loader, copied artifacts) and not committed; ``mkdocs build`` makes the site.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jinja2

from qbuild.kernels import MAX_AUTO_PAIRS
from report import charts, derive
from report.load import Results, load

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
STATIC = Path(__file__).resolve().parent / "static"
# page file -> template; the order is the site's navigation (mkdocs.yml lists the same pages)
PAGES = {
    "index.md": "index.md.j2",
    "model.md": "model.md.j2",
    "compile.md": "compile.md.j2",
    "quantization.md": "quantization.md.j2",
    "code.md": "code.md.j2",
    "benchmarks.md": "benchmarks.md.j2",
    "accuracy.md": "accuracy.md.j2",
    "sweep.md": "sweep.md.j2",
    "engine.md": "engine.md.j2",
    "environment.md": "environment.md.j2",
}


def _number(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 10 ** -digits or magnitude >= 1e6):
        return f"{value:.{digits}e}"
    return f"{value:,.{digits}f}"


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB" if num_bytes >= 1e6 else f"{num_bytes / 1e3:.0f} kB"


def _signed_pct(value) -> str:
    return "–" if value is None else f"{value:+.1f}%"


def environment() -> jinja2.Environment:
    """The Jinja environment of the templates, with the number filters they use."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(num=_number, pct=_signed_pct, size=_size, json=lambda v: json.dumps(v, default=str))
    env.tests["match"] = lambda value, pattern: isinstance(value, str) and re.match(pattern, value) is not None
    return env


def context(results: Results, results_root: Path) -> dict:
    """Everything the templates read."""
    rows = derive.rows([(f.record, f.machine_id) for f in results.files])
    latency = derive.latency(rows)
    sweep_latency = derive.latency(rows, sweep=True)
    accuracy = derive.accuracy(rows)
    layer_errors = derive.layer_errors(rows)
    return {
        "results_root": str(results_root),
        "problems": results.problems,
        "rows": rows,
        "models": derive.models(rows),
        "compiles": derive.compiles(rows),
        "qconfig": derive.qconfig_table(rows),
        "layers": derive.quantized_layers(rows),
        "census": derive.census(rows),
        "latency": latency,
        "latency_findings": derive.latency_findings(latency),
        "kernel_findings": derive.kernel_findings(rows),
        "side_by_side": [{**doc, "top1": derive.side_by_side_top1(doc, rows)} for doc in results.side_by_side],
        "gpu_cpu": derive.gpu_cpu_findings(latency),
        "gpu_goals": derive.gpu_goals(latency, results.side_by_side),
        "accuracy": accuracy,
        "accuracy_findings": derive.accuracy_findings(accuracy),
        "layer_errors": layer_errors,
        "layer_floor": derive.FLOOR_DB,
        "layer_charts": _layer_charts(layer_errors),
        "environments": derive.environments(results),
        "charts": _charts(rows, latency),
        "sweep": derive.sweep(rows),
        "max_auto_pairs": MAX_AUTO_PAIRS,
        "subbyte_kernels": results.subbyte_kernels,
        "tuning": [derive.tuning(database) for database in results.tuning],
        "sweep_charts": _charts(rows, sweep_latency, "sweep", "precision"),
    }


def _slug(text: str) -> str:
    """``text`` as a chart id part: lower case, runs of other characters as one dash."""
    return re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-")


def _charts(rows: list[derive.Row], latency: list[dict], prefix: str = "latency",
            by: str = "type of compilation") -> list[dict]:
    """The study's three box plots per model (CPU, GPU, both), where data exists; ``prefix``
    names them apart (the sweep page draws its own from the sweep's latency groups, ``by`` precision)."""
    samples = {(r.subject, r.target, r.machine, r.variant): r.samples for r in rows}
    out = []
    for model in sorted({g["model"] for g in latency}):
        groups = [g for g in latency if g["model"] == model]
        for name, title, chosen in (
            ("cpu", "CPU", [g for g in groups if g["target"] == "cpu"]),
            ("gpu", "GPU", [g for g in groups if g["target"] == "cuda"]),
            ("both", "CPU and GPU", groups if len({g["target"] for g in groups}) > 1 else []),
        ):
            if chosen:
                spec = charts.latency_boxplot(chosen, samples, f"{model}: latency by {by} ({title})")
                out.append({"id": f"{prefix}-{_slug(model)}-{name}", "model": model, "kind": name, "title": title, "spec": spec})
    return out


def _layer_charts(groups: list[dict]) -> list[dict]:
    """Per model and machine with layer errors: one chart of the study's variants (activation
    dtypes, relay defaults and calibrated), one of the bit-width sweep's."""
    out = []
    for group in groups:
        slug = _slug(f"{group['model']}-{group['machine']}")
        for name, title, sweep in (("study", "activation dtypes", False), ("sweep", "bit widths", True)):
            chosen = [v for v in group["variants"] if v["in_sweep"] == sweep]
            if chosen:
                spec = charts.layer_sqnr(group, chosen, f"{group['model']}: output SQNR per layer ({title})")
                out.append({"id": f"layers-{slug}-{name}", "model": group["model"], "machine": group["machine"],
                            "kind": name, "spec": spec})
    return out


def _write_assets(docs: Path, ctx: dict, results_root: Path) -> None:
    import vl_convert

    chart_dir = docs / "assets" / "charts"
    chart_dir.mkdir(parents=True, exist_ok=True)
    for chart in ctx["charts"] + ctx["sweep_charts"] + ctx["layer_charts"]:
        (chart_dir / f"{chart['id']}.json").write_text(json.dumps(chart["spec"]))
        (chart_dir / f"{chart['id']}.svg").write_text(vl_convert.vegalite_to_svg(chart["spec"]))
    js_dir = docs / "assets" / "js"
    js_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(STATIC / "charts.js", js_dir / "charts.js")
    bundle = js_dir / "vega-bundle.js"
    if not bundle.exists():
        bundle.write_text(vl_convert.javascript_bundle())
    for source in sorted(Path(results_root).glob("*/artifacts")):
        shutil.copytree(source, docs / "artifacts" / source.parent.name, dirs_exist_ok=True)


def build(results_root: Path, docs: Path, tuning_dir: Path | None = None) -> list[Path]:
    """Render every page from the results under ``results_root`` (and the tuning databases in
    ``tuning_dir``, default qbuild's) into ``docs``; return the pages."""
    results_root, docs = Path(results_root), Path(docs)
    results = load(results_root, tuning_dir)
    ctx = context(results, results_root)
    docs.mkdir(parents=True, exist_ok=True)
    _write_assets(docs, ctx, results_root)
    env = environment()
    written = []
    for page, template in PAGES.items():
        path = docs / page
        path.write_text(env.get_template(template).render(**ctx, page=page))
        written.append(path)
    return written
