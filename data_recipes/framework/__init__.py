"""What every dataset converter shares: the :class:`Recipe` contract, the resumable parallel shard-set
writer, the command line, layout checks, mask formats and a restricted unpickler."""

from data_recipes.framework.recipe import ConvertedSample, LayoutError, Recipe, SkipItem

__all__ = ["ConvertedSample", "LayoutError", "Recipe", "SkipItem"]
