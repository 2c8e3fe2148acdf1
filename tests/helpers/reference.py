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
