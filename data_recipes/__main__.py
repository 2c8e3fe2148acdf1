"""``python -m data_recipes``: list the converters; ``python -m data_recipes <dataset> --root ... --out ...``
runs the one that writes ``<dataset>``."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from data_recipes.framework.cli import main as run_recipe
from data_recipes.framework.recipe import Recipe


def all_recipes() -> dict[str, tuple[str, Recipe]]:
    """Every recipe of every module in ``data_recipes`` (a module lists its own in ``RECIPES``)."""
    found: dict[str, tuple[str, Recipe]] = {}
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module.ispkg or module.name.startswith("_"):
            continue
        loaded = importlib.import_module(f"data_recipes.{module.name}")
        for recipe in getattr(loaded, "RECIPES", ()):
            found[recipe.name] = (module.name, recipe)
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    recipes = all_recipes()
    if not argv or argv[0] in ("-h", "--help", "list"):
        print("usage: python -m data_recipes <dataset> --root RAW --out SHARDS [--split ...]\n\ndatasets:")
        for name, (module, recipe) in sorted(recipes.items()):
            print(f"  {name:<24} {recipe.task:<11} (python -m data_recipes.{module})")
        return 0
    name = argv[0]
    if name not in recipes:
        print(f"error: no recipe writes {name!r}; known: {', '.join(sorted(recipes))}", file=sys.stderr)
        return 2
    return run_recipe([recipes[name][1]], argv[1:], prog=f"python -m data_recipes {name}")


if __name__ == "__main__":
    sys.exit(main())
