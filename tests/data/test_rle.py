"""COCO RLE runs: the vectorised parser, the loop and pycocotools agree; bad strings are named."""

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
    vector = rle.compressed_runs(strings * 40)  # > _SHORT characters: the numpy path
    loop = rle._runs_loop(strings)
    sizes = [m.size for m in masks]
    assert [int(r.sum()) for r in vector] == sizes * 40 and [sum(r) for r in loop] == sizes
    assert all(r.min() >= 0 for r in vector)
    for mask, e, parsed in zip(masks, encoded, loop):
        runs = rle.rle_runs(e["counts"])
        assert sum(runs) == mask.size and runs == parsed
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
            loop = rle._runs_loop(strings)
        except rle.RLECountsError:
            with pytest.raises(rle.RLECountsError):
                rle.compressed_runs(strings * 200)
            continue
        vector = rle.compressed_runs(strings * 200)
        assert [list(r) for r in vector[:3]] == loop


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
            rle.compressed_runs(["10", *strings])
        assert info.value.index == 1


def test_masks_decoded_from_their_runs_equal_pycocotools():
    rng = np.random.default_rng(2)
    for count in (3, 80):  # the loop and the numpy parser
        masks = rng.random((count, 23, 31)) < rng.random((count, 1, 1))
        masks[0], masks[1] = False, True  # one background run; an empty run, then one foreground run
        rles = rle.encode_masks(masks)
        assert (sum(len(r["counts"]) for r in rles) > rle._SHORT) == (count == 80)
        decoded = rle.decode_rles(rles, 23, 31)
        assert decoded.shape == masks.shape and np.array_equal(decoded, masks)
        assert all(np.array_equal(decoded[i], rle.decode_rle(r).astype(bool)) for i, r in enumerate(rles))
    with pytest.raises(ValueError, match="mask 1: RLE runs sum to 8 pixels"):
        rle.decode_rles([rles[0], {"size": [23, 31], "counts": [5, 3]}], 23, 31)
