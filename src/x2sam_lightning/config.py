"""Compose the package's Hydra configs from Python (tests, benchmarks, notebooks, the predictor).

``python -m x2sam_lightning VERB +experiment=NAME ...`` composes the same tree; this gives the identical
config without a command line, so one preset lives in one place (``conf/``) for every caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

CONF_DIR = Path(__file__).parent / "conf"


def compose_config(
    experiment: str | None = None, overrides: Sequence[str] = (), verb: str = "fit"
) -> DictConfig:
    """The composed run config of ``experiment`` with Hydra ``overrides`` (e.g. ``["data.image_size=64"]``).

    Run-time interpolations (``${now:...}`` in ``paths.run_dir``) stay unresolved until read.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    args = [f"verb={verb}", *([f"+experiment={experiment}"] if experiment else []), *overrides]
    if GlobalHydra.instance().is_initialized():  # inside the CLI's Hydra app (e.g. stage 1 made for stage 2)
        return compose("config", overrides=args)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=args)
