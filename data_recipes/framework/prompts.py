"""Stored evaluation prompts: one generator per object, fixed by the recipe's ``--seed`` and the object's
place in the dataset, so a prompt depends neither on the worker count, the chunking, nor other objects."""

from __future__ import annotations

import argparse
import hashlib

import numpy as np


def prompt_rng(seed: int, *keys: object) -> np.random.Generator:
    """The generator of one object's prompts, e.g. ``prompt_rng(seed, dataset, sample_id, object_id)``."""
    text = "/".join(str(k) for k in (seed, *keys))
    return np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))


def add_seed_argument(parser: argparse.ArgumentParser) -> None:
    """``--seed`` of the stored visual prompts (added once, however many recipes of a module ask)."""
    from data_recipes.framework.cli import add_option

    add_option(parser, "--seed", type=int, default=0, help="seed of the stored visual prompts (default 0)")
