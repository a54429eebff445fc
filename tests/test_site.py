"""The built site in a real browser (headless Chromium, 1400 px wide): every page loads offline
within its size budget and without console errors, and every chart draws its marks at page width.

Screenshots of every page land in test-artifacts/site/ for a person to look at.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest

from report.build import PAGES, build

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = ROOT / "test-artifacts" / "site"
# Flags for a sandboxed machine with no network: no background calls home, no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The published report (the repository's committed results), built strictly by mkdocs,
    served on 127.0.0.1."""
    work = tmp_path_factory.mktemp("site")
    build(ROOT / "results", work / "docs")
    shutil.copy(ROOT / "mkdocs.yml", work / "mkdocs.yml")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-q",
            "-f",
            str(work / "mkdocs.yml"),
            "-d",
            str(work / "site"),
        ],
        check=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(work / "site"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


PAGE_BUDGET_BYTES = 2_000_000  # everything a page loads: HTML, scripts, styles, chart data
WIDTH = 1400


@dataclass
class Visit:
    """A page as the browser loaded it: its console errors, every URL it requested, the bytes."""

    page: object
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    responses: list[object] = field(default_factory=list)

    def bytes_loaded(self) -> int:
        return sum(len(response.body()) for response in self.responses if response.ok)


def visit(browser, url: str) -> Visit:
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    seen = Visit(page)
    page.on("console", lambda msg: seen.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: seen.errors.append(str(exc)))
    page.on("requestfailed", lambda req: seen.errors.append(f"request failed: {req.url}"))
    page.on("request", lambda req: seen.requests.append(req.url))
    page.on("response", lambda response: seen.responses.append(response))
    page.goto(url, wait_until="networkidle")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return seen


PAGE_NAMES = [p.replace(".md", "") for p in PAGES]
CHARTED_PAGES = ("index", "benchmarks", "accuracy", "sweep")  # the committed results draw charts there


@pytest.mark.parametrize("page_name", PAGE_NAMES)
def test_every_page_loads_offline_within_its_budget_without_console_errors(site, browser, page_name):
    seen = visit(browser, f"{site}/{page_name}.html")
    seen.page.screenshot(path=str(SCREENSHOTS / f"{page_name}.png"), full_page=True)
    assert seen.page.title() and seen.page.locator("h1").count() == 1
    assert seen.errors == []
    assert [url for url in seen.requests if urlparse(url).hostname != "127.0.0.1" and not url.startswith("data:")] == []
    assert seen.bytes_loaded() < PAGE_BUDGET_BYTES


@pytest.mark.parametrize("page_name", PAGE_NAMES)
def test_every_chart_draws_marks_at_page_width_with_titled_axes(site, browser, page_name):
    seen = visit(browser, f"{site}/{page_name}.html")
    charts = seen.page.locator(".qb-chart")
    if page_name in CHARTED_PAGES:
        assert charts.count() >= 1
    for index in range(charts.count()):
        chart = charts.nth(index)
        chart.locator("svg .mark-group").first.wait_for(timeout=20_000)
        marks = chart.locator("svg .role-mark path, svg .role-mark line, svg .role-mark rect, svg .role-mark symbol")
        assert marks.count() > 0, chart.get_attribute("id")
        content = seen.page.locator("article").first.bounding_box()["width"]
        assert chart.locator("svg").first.bounding_box()["width"] > 0.8 * content, chart.get_attribute("id")
        titles = chart.locator("svg .role-axis-title text").all_text_contents()
        assert titles and all(title.strip() for title in titles), chart.get_attribute("id")
    assert seen.errors == []


def test_the_overview_answers_above_the_fold(site, browser):
    seen = visit(browser, f"{site}/index.html")
    answer = seen.page.locator("#the-answer")
    assert answer.count() == 1 and answer.bounding_box()["y"] < 900
    assert "What was run" not in seen.page.content()
