"""A tiny synthetic set (64x64, a dozen images, a few short videos) shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.synthetic import TINY


@pytest.fixture(scope="session")
def tiny_kwargs() -> dict:
    """generate_synthetic keyword arguments of the tiny set."""
    return dict(TINY)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from x2sam_lightning.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, **TINY)
    return root
