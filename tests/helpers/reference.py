"""Load a fixture-writing script of ``tests/metrics/reference/`` as a module (for ``reference`` tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REFERENCE_DIR = Path(__file__).parents[1] / "metrics" / "reference"


def reference_script(name: str) -> ModuleType:
    """Import ``tests/metrics/reference/<name>.py`` (it is a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REFERENCE_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _without_printed(obj):
    """Drop the scorers' printed logs (they carry timings) before comparing fixtures."""
    if isinstance(obj, dict):
        return {k: _without_printed(v) for k, v in obj.items() if k != "printed"}
    return obj


def assert_reference_reproduces(script: str, fixtures: list[str], env_vars: list[str], tmp_path, monkeypatch):
    """Re-run ``tests/metrics/reference/<script>.py`` (the official scorer, from the checkouts named by
    ``env_vars``) into ``tmp_path`` and check it writes the stored ``fixtures`` again."""
    import json
    import os
    import sys

    import pytest

    missing = [name for name in env_vars if not os.environ.get(name)]
    if missing:
        pytest.skip(f"set {', '.join(missing)} to the official scorer checkout(s)")
    module = reference_script(script)
    monkeypatch.setattr(module, "FIXTURES", tmp_path)
    monkeypatch.setattr(sys, "argv", [f"{script}.py"])
    module.main()
    stored_dir = Path(__file__).parents[1] / "fixtures" / "metrics"
    for name in fixtures:
        fresh = json.loads((tmp_path / name).read_text())
        stored = json.loads((stored_dir / name).read_text())
        assert _without_printed(fresh) == _without_printed(stored), name
