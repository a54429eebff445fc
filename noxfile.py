"""qbuild's sessions. ``nox -s experiments report`` is the main job; ``nox -s tests`` the tests;
``nox -s docs`` builds the site (``mkdocs serve`` shows it while you edit).

All sessions share one virtual environment (``.venv`` at the project root) so that torch
(a ~5.5 GB CUDA build) and TVM are installed once, not once per session. It is (re)installed
whenever pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import nox

nox.options.sessions = ["experiments"]
ROOT = Path(__file__).resolve().parent
ENV = ROOT / ".venv"
BIN = ENV / "bin"
EXTRAS = "report,test,peers,remote,pt2e"


def shared_env(session: nox.Session) -> Path:
    """Create or update the shared environment; return its bin directory."""
    stamp = ENV / ".qbuild-installed"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + EXTRAS.encode()).hexdigest()
    if not (BIN / "python").exists():
        session.run(sys.executable, "-m", "venv", str(ENV), external=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        session.run(str(BIN / "python"), "-m", "pip", "install", "--upgrade", "pip", external=True)
        session.run(str(BIN / "python"), "-m", "pip", "install", "-e", f".[{EXTRAS}]", external=True)
        stamp.write_text(wanted)
    return BIN


@nox.session(venv_backend="none")
def experiments(session: nox.Session) -> None:
    """Run the experiment plan (posargs go to `qbuild experiments`, e.g. -- --models resnet50 --variants float)."""
    bin_dir = shared_env(session)
    session.run(str(bin_dir / "qbuild"), "experiments", *session.posargs, external=True)
    session.run(str(bin_dir / "qbuild"), "summary", external=True)


@nox.session(venv_backend="none")
def compare(session: nox.Session) -> None:
    """Time ResNet-50's builds and its peers side by side; print medians and ratios, save them for the
    report (posargs go to `qbuild compare`, e.g. -- --rounds 5)."""
    bin_dir = shared_env(session)
    session.run(str(bin_dir / "qbuild"), "compare", *session.posargs, external=True)


@nox.session(venv_backend="none")
def subbyte(session: nox.Session) -> None:
    """Time the bit-serial convs (W1A1, W2A2, W4A4) against the int8 conv on ResNet-50's conv shapes side
    by side; print ratios, save them for the report (posargs go to `qbuild subbyte-kernels`)."""
    bin_dir = shared_env(session)
    session.run(str(bin_dir / "qbuild"), "subbyte-kernels", *session.posargs, external=True)


@nox.session(venv_backend="none")
def tune(session: nox.Session) -> None:
    """Search each conv's register tile on this machine (ResNet-50 and EfficientNet-Lite0, float and int8) and
    write its tuning database under tuning/, which the tuned kernel set compiles with (posargs go to
    `qbuild tune`, e.g. -- --models resnet50)."""
    bin_dir = shared_env(session)
    session.run(str(bin_dir / "qbuild"), "tune", *session.posargs, external=True)


@nox.session(venv_backend="none")
def report(session: nox.Session) -> None:
    """Render the report pages (docs/) from results/ (posargs go to `python -m report`)."""
    bin_dir = shared_env(session)
    session.run(str(bin_dir / "python"), "-m", "report", *session.posargs, external=True)


@nox.session(venv_backend="none")
def docs(session: nox.Session) -> None:
    """Render the report and build the site strictly into site/."""
    bin_dir = shared_env(session)
    session.run(str(bin_dir / "python"), "-m", "report", external=True)
    session.run(str(bin_dir / "mkdocs"), "build", "--strict", external=True, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The linter, the formatter's check and the type check, then the test suite (posargs go to pytest)."""
    bin_dir = shared_env(session)
    session.run(str(bin_dir / "ruff"), "check", "qbuild", "report", "tests", external=True)
    session.run(str(bin_dir / "ruff"), "format", "--check", "qbuild", "report", "tests", external=True)
    session.run(str(bin_dir / "mypy"), external=True)
    session.run(str(bin_dir / "python"), "-m", "pytest", *session.posargs, external=True)
