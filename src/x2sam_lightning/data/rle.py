"""COCO compressed RLE for the shard schema and for predictions (``counts`` as str, so it is JSON)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np

from x2sam_lightning.imports import require


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """``[N, H, W]`` bool masks -> ``N`` RLE dicts ``{"size": [H, W], "counts": str}``."""
    mask_utils = require("pycocotools.mask")
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(np.asarray(masks).transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """One ``[H, W]`` bool mask -> an RLE dict."""
    return encode_masks(np.asarray(mask)[None])[0]


class RLECountsError(ValueError):
    """A malformed compressed RLE string; ``index`` is its position in the list given."""

    def __init__(self, index: int, problem: str) -> None:
        self.index, self.problem = index, problem
        super().__init__(problem)


def compressed_run_totals(counts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Sum and smallest run of each COCO compressed RLE string (pycocotools' ``rleFrString``, vectorised
    over all strings at once: a sample's masks are checked in a few numpy calls).

    Each run is a little-endian group of 5-bit chunks (``char - 48``; bit 5 = more chunks follow, bit 4
    of the last chunk = negative); from the fourth run on, a run is stored as the difference to the run
    two before it.

    Returns:
        ``totals [n]`` int64 and ``smallest [n]`` int64 (0 for an empty string).

    Raises:
        RLECountsError: naming the first string with a character outside the alphabet, a run cut off at
            the end, or a run longer than 7 characters.
    """
    if sum(map(len, counts)) <= _SHORT:
        totals, smallest = _run_totals_loop(counts)
        return np.asarray(totals, dtype=np.int64), np.asarray(smallest, dtype=np.int64)
    n = len(counts)
    lens = np.fromiter((len(c) for c in counts), dtype=np.int64, count=n)
    try:
        joined = "".join(counts).encode("ascii")
    except UnicodeEncodeError as error:
        raise RLECountsError(_string_at(lens, error.start), "non-ASCII character in RLE counts") from None
    chars = np.frombuffer(joined, dtype=np.uint8).astype(np.int64) - 48
    totals, smallest = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    if chars.size == 0:
        return totals, smallest
    bad = np.flatnonzero((chars < 0) | (chars > 63))
    if bad.size:
        problem = "RLE counts has characters outside the COCO alphabet ('0' to 'o')"
        raise RLECountsError(_string_at(lens, bad[0]), problem)
    more = (chars & 0x20) != 0
    last = (np.cumsum(lens) - 1)[lens > 0]
    cut = np.flatnonzero(more[last])
    if cut.size:
        raise RLECountsError(_string_at(lens, last[cut[0]]), "RLE counts string ends inside a run")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 7:  # 7 chunks = 35 bits, more than any image holds
        raise RLECountsError(
            _string_at(lens, starts[np.argmax(lengths)]), "RLE counts has a run longer than 7 characters"
        )
    position = np.arange(chars.size) - np.repeat(starts, lengths)
    values = np.add.reduceat((chars & 0x1F) << (5 * position), starts)
    values -= ((chars[ends] & 0x10) != 0) * (np.int64(1) << (5 * lengths))
    # The run of each token, and its index within its string.
    owner = np.repeat(np.arange(n), lens)[ends]
    first = np.searchsorted(owner, np.arange(n))
    index = np.arange(owner.size) - first[owner]
    # Runs 3, 4, ... are deltas to the run two before: a cumulative sum per string and parity (runs 0 and
    # 2 start the even chain at 2, run 1 the odd chain).
    runs = values.copy()
    for chain in ((index % 2 == 1), (index % 2 == 0) & (index >= 2)):
        at = np.flatnonzero(chain)
        if at.size == 0:
            continue
        part = values[at]
        total = np.cumsum(part)
        new = np.concatenate(([True], owner[at][1:] != owner[at][:-1]))
        segment = np.cumsum(new) - 1
        runs[at] = total - (total - part)[new][segment]
    nonempty = np.flatnonzero(lens > 0)
    totals[nonempty] = np.add.reduceat(runs, first[nonempty])
    smallest[nonempty] = np.minimum.reduceat(runs, first[nonempty])
    return totals, smallest


def _iter_runs(counts: str) -> Iterator[int]:
    """The runs of one compressed COCO RLE string, decoded lazily (pycocotools' LEB128-like code: from the
    third run on, each is stored as the difference to the run two before)."""
    value = shift = count = 0
    two_before = one_before = 0
    for c in counts.encode("ascii"):
        c -= 48
        value |= (c & 0x1F) << shift
        shift += 5
        if c & 0x20:
            continue
        if c & 0x10:
            value -= 1 << shift
        if count > 2:
            value += two_before
        yield value
        two_before, one_before = one_before, value
        count += 1
        value = shift = 0


def rle_runs(counts: str) -> list[int]:
    """The runs of one compressed COCO RLE string, as the uncompressed ``counts`` list (unchecked sums)."""
    return list(_iter_runs(counts))


def rle_has_foreground(rle: dict[str, Any]) -> bool:
    """Whether an RLE checked by :func:`rle_problems` has a foreground pixel (schema 2: an empty mask is
    an object absent on that frame). Reads runs only up to the first non-empty foreground run, so an
    object's mask is usually decided by its first two runs."""
    counts = rle["counts"]
    runs = counts[1::2] if isinstance(counts, list) else itertools.islice(_iter_runs(counts), 1, None, 2)
    return any(v > 0 for v in runs)


#: Up to this many characters in all, a plain loop beats the numpy calls' fixed cost.
_SHORT = 1500


def _run_totals_loop(counts: list[str]) -> tuple[list[int], list[int]]:
    """:func:`compressed_run_totals` one character at a time (the same checks)."""
    totals, smallest = [], []
    for i, string in enumerate(counts):
        try:
            data = string.encode("ascii")
        except UnicodeEncodeError:
            raise RLECountsError(i, "non-ASCII character in RLE counts") from None
        if data.translate(None, _ALPHABET):
            raise RLECountsError(i, "RLE counts has characters outside the COCO alphabet ('0' to 'o')")
        total = runs = value = shift = 0
        low = 1 << 62
        before = last = 0  # the runs two and one before this one
        for c in data:
            c -= 48
            value |= (c & 0x1F) << shift
            shift += 5
            if c & 0x20:
                continue
            if shift > 35:
                raise RLECountsError(i, "RLE counts has a run longer than 7 characters")
            if c & 0x10:
                value -= 1 << shift
            if runs > 2:
                value += before
            before, last = last, value
            total += value
            if value < low:
                low = value
            runs += 1
            value = shift = 0
        if shift:
            raise RLECountsError(i, "RLE counts string ends inside a run")
        totals.append(total)
        smallest.append(low if runs else 0)
    return totals, smallest


_ALPHABET = bytes(range(48, 48 + 64))


def _string_at(lens: np.ndarray, char: int) -> int:
    return int(np.searchsorted(np.cumsum(lens), char, side="right"))


def rle_problems(rles: list[Any], height: int, width: int) -> list[str | None]:
    """What is wrong with each COCO RLE mask of an ``height x width`` frame (None where it is fine).

    Accepts ``{"size": [h, w], "counts": str}`` (compressed) and ``{"size": [h, w], "counts": [int, ...]}``
    (uncompressed, also valid COCO). The runs must be non-negative and sum exactly to ``h * w``:
    pycocotools decodes other sums into uninitialised or overrun memory.
    """
    problems: list[str | None] = [None] * len(rles)
    compressed: list[int] = []
    for i, rle in enumerate(rles):
        if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
            problems[i] = "mask is not a COCO RLE dict with 'size' and 'counts'"
            continue
        size, counts = rle["size"], rle["counts"]
        if not isinstance(size, list) or len(size) != 2 or not all(_is_int(v) for v in size):
            problems[i] = f"RLE size should be [height, width] ints, got {size!r}"
        elif size != [height, width]:
            problems[i] = f"RLE size {size} does not match the sample size [{height}, {width}]"
        elif isinstance(counts, str):
            compressed.append(i)
        elif isinstance(counts, list):
            if not all(_is_int(v) for v in counts):
                problems[i] = "uncompressed RLE counts should be a list of ints"
            elif any(v < 0 for v in counts):
                problems[i] = "RLE counts has a negative run"
            elif sum(counts) != height * width:
                problems[i] = f"RLE runs sum to {sum(counts)} pixels, not height x width = {height * width}"
        else:
            kind = type(counts).__name__
            problems[i] = f"RLE counts should be str (compressed) or list (uncompressed), got {kind}"
    while compressed:
        try:
            strings = [rles[i]["counts"] for i in compressed]
            if sum(map(len, strings)) <= _SHORT:
                totals, smallest = _run_totals_loop(strings)
            else:
                totals, smallest = (a.tolist() for a in compressed_run_totals(strings))
        except RLECountsError as error:
            # Name the malformed one, then check the rest.
            problems[compressed[error.index]] = f"bad compressed RLE counts: {error.problem}"
            del compressed[error.index]
            continue
        for i, total, low in zip(compressed, totals, smallest):
            if low < 0:
                problems[i] = "RLE counts has a negative run"
            elif total != height * width:
                problems[i] = f"RLE runs sum to {total} pixels, not height x width = {height * width}"
        break
    return problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_rles(rles: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """RLE dicts of one ``height x width`` size, checked by :func:`rle_problems` -> ``[K, H, W]`` bool.

    Compressed ones are decoded in one pycocotools call (its per-call cost, ~0.1 ms, exceeds the decoding
    of a small mask), uncompressed ones one by one.
    """
    out = np.empty((len(rles), height, width), dtype=bool)
    compressed = [i for i, rle in enumerate(rles) if isinstance(rle["counts"], str)]
    if compressed:
        decoded = require("pycocotools.mask").decode([rles[i] for i in compressed])  # [H, W, K], Fortran
        out[compressed] = decoded.transpose(2, 0, 1).view(bool)
    for i, rle in enumerate(rles):
        if not isinstance(rle["counts"], str):
            out[i] = decode_rle(rle)
    return out


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """An RLE dict checked by :func:`rle_problems` -> ``[H, W]`` uint8 mask (either counts form)."""
    height, width = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, list):
        values = np.arange(len(counts), dtype=np.uint8) & 1
        return np.repeat(values, counts).reshape(width, height).T
    return require("pycocotools.mask").decode(rle)
