"""Stored evaluation prompts: one generator per object, fixed by the recipe's ``--seed`` and the object's
place in the dataset, so a prompt depends neither on the worker count, the chunking, nor other objects."""

from __future__ import annotations

import argparse
import hashlib
from typing import Any

import numpy as np


def prompt_rng(seed: int, *keys: object) -> np.random.Generator:
    """The generator of one object's prompts, e.g. ``prompt_rng(seed, dataset, sample_id, object_id)``."""
    text = "/".join(str(k) for k in (seed, *keys))
    return np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))


class SeededPrompts:
    """Mixed into a recipe that stores visual prompts: its ``--seed`` option (added once, however many
    recipes of a module ask), read into ``seed`` and part of the output's settings."""

    seed: int = 0

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from data_recipes.framework.cli import add_option

        add_option(
            parser, "--seed", type=int, default=0, help="seed of the stored visual prompts (default 0)"
        )

    def configure(self, args: argparse.Namespace) -> None:
        self.seed = int(getattr(args, "seed", 0))

    def options(self) -> dict[str, Any]:
        return {"seed": self.seed}
