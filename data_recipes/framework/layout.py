"""Checking a raw dataset's layout early, with errors that say what was expected and where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data_recipes.framework.recipe import LayoutError


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a :class:`LayoutError` naming ``what`` should be there."""
    if not path.is_file():
        found = "a folder" if path.is_dir() else "nothing"
        raise LayoutError(f"expected {what} at {path}, found {found}")
    return path


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else a :class:`LayoutError` naming ``what`` should be there."""
    if not path.is_dir():
        found = "a file" if path.exists() else "nothing"
        raise LayoutError(f"expected {what} (a folder) at {path}, found {found}")
    return path


def load_json(path: Path, what: str) -> Any:
    """Parse a json annotation file; a missing or unparsable one is a :class:`LayoutError` naming it."""
    require_file(path, what)
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LayoutError(f"{what} at {path} is not valid json: {error}") from None


def require_keys(record: Any, keys: tuple[str, ...], what: str, path: Path) -> None:
    """A json object must hold ``keys``: else a :class:`LayoutError` naming the file and the missing key."""
    if not isinstance(record, dict):
        raise LayoutError(f"{what} in {path} should be a json object, got {type(record).__name__}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise LayoutError(f"{what} in {path} lacks key(s) {missing} (has {sorted(record)[:12]})")
