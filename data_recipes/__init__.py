"""Converters from the public datasets' own on-disk formats to the package's WebDataset shards.

Run one as ``python -m data_recipes.<name> --root RAW --out SHARDS [--split ...]`` or list them with
``python -m data_recipes``. ``framework/`` holds what every converter shares (resumable parallel writing,
validation, layout checks, mask formats, a safe unpickler); ``fixtures/`` writes tiny datasets in each
real format for the tests and the benchmark. See docs/datasets.md.
"""
