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


def compressed_runs(counts: list[str]) -> list[list[int]] | list[np.ndarray]:
    """The runs of each COCO compressed RLE string (pycocotools' ``rleFrString``).

    Up to :data:`_SHORT` characters in all, one string at a time in a plain loop, as int lists (a few
    short masks cost more in numpy calls than in Python); above, vectorised over all strings at once, as
    int64 arrays (a sample's masks are parsed in a few numpy calls). Each run is a little-endian group of
    5-bit chunks (``char - 48``; bit 5 = more chunks follow, bit 4 of the last chunk =
    negative); from the fourth run on, a run is stored as the difference to the run two before it.

    Raises:
        RLECountsError: naming the first string with a character outside the alphabet, a run cut off at
            the end, or a run longer than 7 characters.
    """
    if sum(map(len, counts)) <= _SHORT:
        return _runs_loop(counts)
    n = len(counts)
    lens = np.fromiter((len(c) for c in counts), dtype=np.int64, count=n)
    try:
        joined = "".join(counts).encode("ascii")
    except UnicodeEncodeError as error:
        raise RLECountsError(_string_at(lens, error.start), "non-ASCII character in RLE counts") from None
    chars = np.frombuffer(joined, dtype=np.uint8).astype(np.int64) - 48
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
    per_string = np.bincount(owner, minlength=n)
    first = np.cumsum(per_string) - per_string
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
        new = index[at] < 3
        segment = np.cumsum(new) - 1
        runs[at] = total - (total - part)[new][segment]
    return np.split(runs, np.cumsum(per_string)[:-1])


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


def _runs_loop(counts: list[str]) -> list[list[int]]:
    """:func:`compressed_runs` one character at a time (the same checks)."""
    out = []
    for i, string in enumerate(counts):
        try:
            data = string.encode("ascii")
        except UnicodeEncodeError:
            raise RLECountsError(i, "non-ASCII character in RLE counts") from None
        if data.translate(None, _ALPHABET):
            raise RLECountsError(i, "RLE counts has characters outside the COCO alphabet ('0' to 'o')")
        runs: list[int] = []
        append = runs.append
        value = shift = count = 0
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
            if count > 2:
                value += before
            append(value)
            before, last = last, value
            count += 1
            value = shift = 0
        if shift:
            raise RLECountsError(i, "RLE counts string ends inside a run")
        out.append(runs)
    return out


_ALPHABET = bytes(range(48, 48 + 64))


def _string_at(lens: np.ndarray, char: int) -> int:
    return int(np.searchsorted(np.cumsum(lens), char, side="right"))


def rle_problems(rles: list[Any], height: int, width: int) -> list[str | None]:
    """What is wrong with each COCO RLE mask of an ``height x width`` frame (None where it is fine).

    Accepts ``{"size": [h, w], "counts": str}`` (compressed) and ``{"size": [h, w], "counts": [int, ...]}``
    (uncompressed, also valid COCO). The runs must be non-negative and sum exactly to ``h * w``:
    pycocotools decodes other sums into uninitialised or overrun memory.
    """
    return parse_rles(rles, height, width)[0]


def parse_rles(rles: list[Any], height: int, width: int) -> tuple[list[str | None], list[Any]]:
    """Check and parse COCO RLE masks of an ``height x width`` frame in one pass.

    Returns:
        ``problems``: per mask, what is wrong with it (None where it is fine; see :func:`rle_problems`),
        and ``runs``: per mask, its runs (an int list or int64 array; None where it has a problem), for
        :func:`decode_runs`, so a mask checked is decoded without being parsed again.
    """
    problems: list[str | None] = [None] * len(rles)
    runs: list[Any] = [None] * len(rles)
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
                runs[i] = counts
        else:
            kind = type(counts).__name__
            problems[i] = f"RLE counts should be str (compressed) or list (uncompressed), got {kind}"
    while compressed:
        try:
            parsed = compressed_runs([rles[i]["counts"] for i in compressed])
        except RLECountsError as error:
            # Name the malformed one, then check the rest.
            problems[compressed[error.index]] = f"bad compressed RLE counts: {error.problem}"
            del compressed[error.index]
            continue
        for i, mask_runs in zip(compressed, parsed):
            vector = isinstance(mask_runs, np.ndarray)
            total = int(mask_runs.sum()) if vector else sum(mask_runs)
            low = (mask_runs.min() if vector else min(mask_runs)) if len(mask_runs) else 0
            if low < 0:
                problems[i] = "RLE counts has a negative run"
            elif total != height * width:
                problems[i] = f"RLE runs sum to {total} pixels, not height x width = {height * width}"
            else:
                runs[i] = mask_runs
        break
    return problems, runs


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_rles(rles: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """RLE dicts of one ``height x width`` size (either counts form) -> ``[K, H, W]`` bool.

    Raises:
        ValueError: naming the first mask :func:`rle_problems` finds fault with.
    """
    problems, runs = parse_rles(rles, height, width)
    for i, problem in enumerate(problems):
        if problem:
            raise ValueError(f"mask {i}: {problem}")
    return decode_runs(runs, height, width)  # type: ignore[arg-type]


#: A zero-length run: keeps the runs of consecutive masks alternating background / foreground.
_NO_RUN = np.zeros(1, dtype=np.int64)


def decode_runs(runs: list[Any], height: int, width: int) -> np.ndarray:
    """The runs of masks checked by :func:`parse_rles` -> ``[K, H, W]`` bool, all masks in one
    ``np.repeat`` (pycocotools fills pixel by pixel after parsing each string again: ~25x slower on an
    8-frame clip's masks).

    The result is a view of the column-major (COCO) pixels: the caller's one copy (into its mask stack,
    or the resize) lays it out.
    """
    if not runs:
        return np.zeros((0, height, width), dtype=bool)
    if all(isinstance(mask_runs, list) for mask_runs in runs):  # short masks: one conversion for all
        flat: list[int] = []
        for mask_runs in runs:  # every mask starts with a background run
            flat += mask_runs
            if len(mask_runs) % 2:
                flat.append(0)
        counts = np.array(flat, dtype=np.int64)
    else:
        parts = []
        for mask_runs in runs:
            parts.append(np.asarray(mask_runs, dtype=np.int64))
            if len(mask_runs) % 2:
                parts.append(_NO_RUN)
        counts = np.concatenate(parts)
    values = (np.arange(counts.size) % 2).astype(bool)
    return np.repeat(values, counts).reshape(len(runs), width, height).transpose(0, 2, 1)


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """An RLE dict checked by :func:`rle_problems` -> ``[H, W]`` uint8 mask (either counts form)."""
    height, width = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, list):
        values = np.arange(len(counts), dtype=np.uint8) & 1
        return np.repeat(values, counts).reshape(width, height).T
    return require("pycocotools.mask").decode(rle)
