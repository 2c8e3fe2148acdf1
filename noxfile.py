"""Sessions: ``nox -s tests`` (what CI runs), ``lint``, ``slow``, ``reference``, ``bench``.

Each session installs the package from scratch into its own virtualenv. torch is pinned in the same pip
command as the package: on CPU-only machines a lone ``torch`` requirement may otherwise resolve to a
multi-GB CUDA build (see docs/install.md).
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = False

TORCH = "torch==2.13.0"
ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0"}


def _install(session: nox.Session, extras: str = "dev") -> None:
    session.install(TORCH, "-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The default suite (slow and reference-scorer tests excluded), < 15 min on 2 CPU cores."""
    _install(session)
    session.run("pytest", "-q", "--durations=15", *session.posargs, env=ENV)


@nox.session
def slow(session: nox.Session) -> None:
    """Tests marked ``slow`` (long training runs, METEOR through Java)."""
    _install(session)
    session.run("pytest", "-q", "-m", "slow", *session.posargs, env=ENV)


@nox.session
def reference(session: nox.Session) -> None:
    """Re-run the official scorers on the stored metric cases (needs their checkouts; each test names the
    environment variable that points at its checkout and skips without it)."""
    _install(session)
    session.install("opencv-python-headless", "scikit-image", "tqdm", "matplotlib")  # the scorers' own needs
    session.run("pytest", "-q", "-m", "reference", "tests/metrics", *session.posargs, env=ENV)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "benchmarks", "data_recipes", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "data_recipes", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Speed benchmarks; each writes JSON/markdown under benchmarks/results/ (``-- --quick`` to shorten)."""
    _install(session)
    for script in sorted(Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs, env=ENV)
    # The loader at the tiny default's 128 px (above) and at a larger size, where decoding weighs more
    # against the fixed per-sample work (validation, masks, the queue) that raw decoding does not do.
    session.run("python", "benchmarks/bench_loader.py", "--image-size", "384", *session.posargs, env=ENV)
    session.run("python", "benchmarks/trace_streaming_rss.py", env=ENV)
    session.run("python", "benchmarks/collect_results.py")
