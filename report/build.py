"""Render the report: results -> each page's data (report.pages) + charts -> ``docs/*.md`` from ``templates/*.md.j2``.

Everything under ``docs/`` is generated (pages, chart specs and SVGs, the offline Vega bundle
and the chart loader, copied artifacts) and not committed; ``mkdocs build`` makes the site.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import jinja2

from qbuild.schema.documents import max_auto_pairs
from report import charts
from report import rows as report_rows
from report.load import Results, load
from report.pages import accuracy as accuracy_page
from report.pages import benchmarks, code, imports, model, overview, quantization
from report.pages import compile as compile_page
from report.pages import environment as environment_page
from report.pages import sweep as sweep_page

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
STATIC = Path(__file__).resolve().parent / "static"
STATIC_WIDTH = 960  # px: the static SVG of a chart that the page draws at its own width
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
    if magnitude != 0 and (magnitude < 10**-digits or magnitude >= 1e6):
        return f"{value:.{digits}e}"
    return f"{value:,.{digits}f}"


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB" if num_bytes >= 1e6 else f"{num_bytes / 1e3:.0f} kB"


def _signed_pct(value) -> str:
    return "–" if value is None else f"{value:+.1f}%"


def environment() -> jinja2.Environment:
    """The Jinja environment of the templates, with the number filters they use."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=_number, pct=_signed_pct, size=_size, json=lambda v: json.dumps(v, default=str))
    env.tests["match"] = lambda value, pattern: isinstance(value, str) and re.match(pattern, value) is not None
    return env


def _shown(path: Path) -> str:
    """``path`` as the pages name it: relative to the working directory where it lies inside it
    (a published page never shows the build machine's absolute paths)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return Path(path).name


def context(results: Results, results_root: Path) -> dict:
    """Everything the templates read."""
    rows = report_rows.rows([(f.record, f.machine_id) for f in results.files])
    latency = benchmarks.latency(rows)
    accuracy = accuracy_page.accuracy(rows)
    layer_errors = accuracy_page.layer_errors(rows)
    side_by_side = [
        {**doc, "top1": benchmarks.side_by_side_top1(doc, rows), "alone": benchmarks.side_by_side_alone(doc, rows)}
        for doc in results.side_by_side
    ]
    sweep = sweep_page.sweep(rows)
    return {
        "results_root": _shown(results_root),
        "problems": results.problems,
        "rows": rows,
        "models": model.models(rows),
        "compiles": compile_page.compiles(rows),
        "qconfig": quantization.qconfig_table(rows),
        "layers": quantization.quantized_layers(rows),
        "census": code.census(rows),
        "latency": latency,
        "latency_findings": benchmarks.latency_findings(latency),
        "kernel_findings": benchmarks.kernel_findings(rows),
        "side_by_side": side_by_side,
        "imported": imports.imported_models(rows, results.side_by_side),
        "answers": _answers(rows, side_by_side, sweep),
        "gpu_cpu": benchmarks.gpu_cpu_findings(latency),
        "gpu_goals": benchmarks.gpu_goals(latency, results.side_by_side),
        "accuracy": accuracy,
        "accuracy_findings": accuracy_page.accuracy_findings(accuracy),
        "layer_errors": layer_errors,
        "layer_floor": accuracy_page.layer_floor(layer_errors),
        "comparable_points": report_rows.COMPARABLE_POINTS,
        "alone_tolerance_pct": benchmarks.ALONE_TOLERANCE_PCT,
        "layer_charts": _layer_charts(layer_errors),
        "environments": environment_page.environments(results),
        "charts": _latency_charts(rows),
        "sweep": sweep,
        "subbyte_kernels": [{**doc, "max_auto_pairs": max_auto_pairs(doc)} for doc in results.subbyte_kernels],
        "tuning": [benchmarks.tuning(database) for database in results.tuning],
        "sweep_charts": _latency_charts(rows, sweep=True),
        "pareto_charts": _pareto_charts(sweep),
        "headline_charts": _headline_charts(rows),
    }


def _answers(rows: list[report_rows.Row], side_by_side: list[dict], sweep: list[dict]) -> dict:
    """The Overview's answers: per machine, and summed into its headline sentences."""
    answers = {
        "speedups": overview.speedups(rows),
        "accuracy": overview.accuracy_costs(rows),
        "peers": overview.against_peers(side_by_side),
        "bit_widths": overview.bit_widths(sweep),
    }
    return {**answers, "headline": overview.headline(answers["speedups"], answers["peers"], answers["bit_widths"])}


def _slug(text: str) -> str:
    """``text`` as a chart id part: lower case, runs of other characters as one dash."""
    return re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-")


def _latency_charts(rows: list[report_rows.Row], sweep: bool = False) -> list[dict]:
    """One box plot per model and target (drop-downs choose the machine and the kernel set): the
    study's variants and the peers, or (``sweep``) the bit-width sweep's beside the float build."""
    chosen = [
        r
        for r in rows
        if r.samples
        and (r.in_sweep == sweep or (sweep and r.variant == "float"))
        and not (sweep and r.kernels != "builtin")
    ]
    prefix, by = ("sweep", "precision") if sweep else ("latency", "type of compilation")
    out = []
    for setting, target in sorted({(r.setting, r.target) for r in chosen}):
        group = [r for r in chosen if (r.setting, r.target) == (setting, target)]
        boxes = [
            {
                "build": r.label,
                "engine": r.engine,
                "series": f"{r.machine} ({r.device})",
                "kernels": r.kernels or "peer",
                "quantiles": charts.quantiles(r.samples),
                "samples": r.samples,
            }
            for r in group
        ]
        where = "GPU" if target == "cuda" else "CPU"
        title = f"{setting}: latency by {by} ({where})"
        out.append(
            {
                "id": f"{prefix}-{_slug(setting)}-{_slug(target)}",
                "model": setting,
                "target": target,
                "title": title,
                "spec": charts.latency_boxplot(boxes, title),
                "samples": boxes,
            }
        )
    return out


def _headline_charts(rows: list[report_rows.Row]) -> list[dict]:
    """The Overview's latency-vs-accuracy chart of each model with real weights."""
    return [
        {
            "id": f"headline-{_slug(model)}",
            "model": model,
            "spec": charts.latency_vs_accuracy(points, f"{model}: top-1 accuracy against latency (CPU)"),
        }
        for model, points in sorted(overview.headline_points(rows).items())
    ]


def _pareto_charts(sweep: list[dict]) -> list[dict]:
    """The sweep page's latency-vs-accuracy chart of each sweep group with measured top-1, its
    Pareto front marked."""
    return [
        {
            "id": f"pareto-{_slug(g['model'])}-{_slug(g['target'])}-{_slug(g['machine'])}",
            "model": g["model"],
            "target": g["target"],
            "machine": g["machine"],
            "spec": charts.latency_vs_accuracy(
                g["pareto"], f"{g['model']}: top-1 against latency, Pareto front ({g['machine']})"
            ),
        }
        for g in sweep
        if g["pareto"]
    ]


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
                out.append(
                    {
                        "id": f"layers-{slug}-{name}",
                        "model": group["model"],
                        "machine": group["machine"],
                        "kind": name,
                        "spec": spec,
                    }
                )
    return out


def _write_samples(path: Path, boxes: list[dict]) -> None:
    """A box plot's raw samples as CSV (build, series, kernels, sample in ms), for download."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["build", "series", "kernels", "latency_ms"])
        for box in boxes:
            writer.writerows([box["build"], box["series"], box["kernels"], sample] for sample in box["samples"])


def _write_assets(docs: Path, ctx: dict, results_root: Path) -> None:
    import vl_convert

    chart_dir = docs / "assets" / "charts"
    chart_dir.mkdir(parents=True, exist_ok=True)
    for chart in (
        ctx["charts"] + ctx["sweep_charts"] + ctx["pareto_charts"] + ctx["layer_charts"] + ctx["headline_charts"]
    ):
        (chart_dir / f"{chart['id']}.json").write_text(json.dumps(chart["spec"]))
        (chart_dir / f"{chart['id']}.svg").write_text(
            vl_convert.vegalite_to_svg({**chart["spec"], "width": STATIC_WIDTH})
        )
        if "samples" in chart:
            _write_samples(chart_dir / f"{chart['id']}-samples.csv", chart["samples"])
    js_dir = docs / "assets" / "js"
    js_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(STATIC / "charts.js", js_dir / "charts.js")
    css_dir = docs / "assets" / "css"
    css_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(STATIC / "charts.css", css_dir / "charts.css")
    bundle = js_dir / "vega-bundle.js"
    if not bundle.exists():
        bundle.write_text(vl_convert.javascript_bundle())  # type: ignore[call-arg]  # the stub omits its default
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
