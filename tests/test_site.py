"""The built site in a real browser (headless Chromium): charts render offline, no console errors.

Screenshots of every page land in test-artifacts/site/ for a person to look at.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
def site(quick_results, tmp_path_factory):
    """The report of the quick results, built strictly by mkdocs, served on 127.0.0.1."""
    root, _outcomes = quick_results
    work = tmp_path_factory.mktemp("site")
    build(root, work / "docs")
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


def visit(browser, url: str) -> tuple[object, list[str]]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
    page.goto(url, wait_until="networkidle")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return page, errors


def test_the_benchmark_box_plots_render_as_svg_with_marks(site, browser):
    page, errors = visit(browser, f"{site}/benchmarks.html")
    page.wait_for_selector(".qb-chart svg .mark-group", timeout=20_000)
    marks = page.eval_on_selector_all(".qb-chart svg path, .qb-chart svg rect", "els => els.length")
    page.screenshot(path=str(SCREENSHOTS / "benchmarks.png"), full_page=True)
    assert page.eval_on_selector_all(".qb-chart", "els => els.length") >= 1
    assert marks > 10
    assert errors == []


@pytest.mark.parametrize("page_name", [p.replace(".md", "") for p in PAGES])
def test_every_page_loads_without_console_errors(site, browser, page_name):
    page, errors = visit(browser, f"{site}/{page_name}.html")
    page.screenshot(path=str(SCREENSHOTS / f"{page_name}.png"), full_page=True)
    assert page.title() and page.locator("h1").count() == 1
    assert errors == []
