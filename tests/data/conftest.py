"""A tiny synthetic set (64x64, a dozen images, a few short videos) shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = dict(
    image_size=64,
    num_train_images=12,
    num_val_images=6,
    num_train_videos=4,
    num_val_videos=2,
    frames=6,
    images_per_shard=4,
    videos_per_shard=2,
    seed=0,
)


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
