"""Shared test set-up: offline hub, few threads (CI has 2 cores), tests/ importable for helpers and the
repository root for data_recipes."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parent.parent))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def stage2_dir(tmp_path_factory) -> Path:
    """A data folder shared by the stage-2 tests (the tiny Qwen3-VL is built there on first use)."""
    return tmp_path_factory.mktemp("stage2")
