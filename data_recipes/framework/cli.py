"""The command line every recipe shares: ``python -m data_recipes.<module> --root RAW --out SHARDS``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data_recipes.framework.recipe import LayoutError, Recipe
from data_recipes.framework.writer import ConversionError, SplitSummary, convert_split


def add_option(parser: argparse.ArgumentParser, flag: str, **kwargs: Any) -> None:
    """Add ``flag`` unless another recipe of the same command line already did (a module's recipes share
    one parser: ``--seed``, ``--fps``)."""
    if not any(flag in action.option_strings for action in parser._actions):
        parser.add_argument(flag, **kwargs)


def build_parser(recipes: Sequence[Recipe], prog: str | None = None) -> argparse.ArgumentParser:
    first = recipes[0]
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"Convert {', '.join(r.name for r in recipes)} into shards (docs/datasets.md).",
        epilog="Expected layout below --root:\n" + "\n".join(f"  {r.name}: {r.layout}" for r in recipes),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if len(recipes) > 1:
        parser.add_argument("--dataset", required=True, choices=[r.name for r in recipes])
    parser.add_argument("--root", required=True, type=Path, help="the raw dataset folder")
    parser.add_argument("--out", required=True, type=Path, help="output folder for shards and index")
    splits = sorted({s for r in recipes for s in r.splits})
    parser.add_argument(
        "--split", action="append", choices=splits, help="split(s) to convert (default: every split present)"
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)"
    )
    parser.add_argument("--items-per-shard", type=int, default=None, help=f"default {first.items_per_shard}")
    parser.add_argument("--max-items", type=int, default=None, help="convert only the first N items")
    parser.add_argument("--on-error", choices=("raise", "skip"), default="raise")
    parser.add_argument("--force", action="store_true", help="convert again even if complete")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    for recipe in recipes:
        recipe.add_arguments(parser)
    return parser


def run(recipe: Recipe, args: argparse.Namespace) -> list[SplitSummary]:
    """Convert the requested splits (or every split whose layout is present) of one dataset."""
    recipe.configure(args)
    splits = args.split
    if not splits:
        problems = {}
        for split in recipe.splits:
            try:
                recipe.check_layout(args.root, split)
            except LayoutError as error:
                problems[split] = str(error)
        splits = [s for s in recipe.splits if s not in problems]
        if not splits:
            details = "\n".join(f"  {split}: {problem}" for split, problem in problems.items())
            raise LayoutError(f"no split of {recipe.name} found under {args.root}:\n{details}")
        for split, problem in problems.items():
            logging.getLogger(__name__).info("%s: skipping split %s (%s)", recipe.name, split, problem)
    return [
        convert_split(
            recipe,
            args.root,
            args.out,
            split,
            workers=args.workers,
            items_per_shard=args.items_per_shard,
            max_items=args.max_items,
            on_error=args.on_error,
            force=args.force,
            progress=not args.quiet,
        )
        for split in splits
    ]


def main(recipes: Sequence[Recipe], argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv``, convert, print one summary line per split; errors end with a one-line message."""
    parser = build_parser(recipes, prog)
    args = parser.parse_args(argv)
    recipe = recipes[0] if len(recipes) == 1 else next(r for r in recipes if r.name == args.dataset)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summaries = run(recipe, args)
    except (LayoutError, ConversionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for summary in summaries:
        print(summary.line())
    return 0
