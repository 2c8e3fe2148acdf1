"""COCO RLE run checks: the vectorised parser, the loop and pycocotools agree; bad strings are named."""

from __future__ import annotations

import numpy as np
import pytest

from x2sam_lightning.data import rle


def _masks(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        h, w = rng.integers(1, 40, 2)
        mask = rng.random((h, w)) < rng.random()
        if i % 3 == 0:  # large runs: multi-character, negative deltas
            mask = np.zeros((h, w), bool)
            mask[rng.integers(0, h) :, rng.integers(0, w) :] = True
        out.append(mask)
    return out


def test_runs_match_the_masks_pycocotools_encodes():
    rng = np.random.default_rng(0)
    masks = _masks(rng, 60)
    encoded = [rle.encode_mask(m) for m in masks]
    strings = [e["counts"] for e in encoded]
    vector, smallest = rle.compressed_run_totals(strings * 40)  # > _SHORT characters: the numpy path
    loop, _ = rle._run_totals_loop(strings)
    sizes = [m.size for m in masks]
    assert vector.tolist() == sizes * 40 and loop == sizes and smallest.min() >= 0
    for mask, e in zip(masks, encoded):
        runs = rle.rle_runs(e["counts"])
        assert sum(runs) == mask.size
        listed = {"size": e["size"], "counts": runs}
        assert rle.rle_problems([listed], *mask.shape) == [None]
        assert np.array_equal(rle.decode_rle(listed), mask.astype(np.uint8))
        assert np.array_equal(rle.decode_rle(e), mask.astype(np.uint8))


def test_vectorised_and_loop_parsers_agree_on_random_strings():
    rng = np.random.default_rng(1)
    for _ in range(300):
        strings = [
            "".join(chr(48 + int(c)) for c in rng.integers(0, 64, rng.integers(0, 9))) for _ in range(3)
        ]
        strings = [s + "0" if s and (ord(s[-1]) - 48) & 0x20 else s for s in strings]
        try:
            loop = rle._run_totals_loop(strings)
        except rle.RLECountsError:
            with pytest.raises(rle.RLECountsError):
                rle.compressed_run_totals(strings * 200)
            continue
        totals, smallest = rle.compressed_run_totals(strings * 200)
        assert totals.tolist()[:3] == loop[0] and smallest.tolist()[:3] == loop[1]


@pytest.mark.parametrize(
    ("counts", "problem"),
    [
        ("0P", "ends inside a run"),
        ("~", "alphabet"),
        ("PPPPPPPP0", "longer than 7"),
        ("0\u00e9", "non-ASCII"),
    ],
)
def test_malformed_strings_are_named(counts, problem):
    for strings in ([counts], [counts] * 400):  # the loop and the numpy path
        with pytest.raises(rle.RLECountsError, match=problem) as info:
            rle.compressed_run_totals(["10", *strings])
        assert info.value.index == 1
