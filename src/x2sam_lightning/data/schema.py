"""Versioned validation of the shard sample json and the dataset index json (DESIGN.md section 3).

Validation is by classes of defects, so a broken record from any converter is caught, not a list of known
cases: every key a later stage reads is checked for type, range and consistency with the rest of the
record (``docs/data.md``, "Bad input", lists the checks). A bad sample raises :class:`SampleError`, a bad
index :class:`SourceError`; the message names the file, the sample key and the first problem found, so a
broken record in a terabyte of shards can be found from the log line alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from typing import Any

from x2sam_lightning.data.errors import SampleError, ShardError, SourceError
from x2sam_lightning.data.rle import parse_rles, rle_problems

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MODALITIES",
    "READABLE_SCHEMAS",
    "SCHEMA_VERSION",
    "TASKS",
    "SampleError",
    "ShardError",
    "SourceError",
    "check_mask_runs",
    "check_rle",
    "parse_json",
    "validate_index",
    "validate_sample",
]

#: The schema version this package writes. Version 2 tells an object *absent* on a frame (an empty mask: a
#: real target, predicting anything there is penalised) from a frame *not annotated* (``null``: ignored by
#: losses and metrics). Version 1's ``null`` meant either; it is read as "not annotated" (what the loader
#: always did with it), so a v1 shard trains and scores exactly as before.
SCHEMA_VERSION = 2
#: The versions this package reads.
READABLE_SCHEMAS = (1, 2)

MODALITIES = ("image", "video")
#: Task ids; ``img_*`` tasks are images, ``vid_*`` videos. SA-1B (stage 1, class-agnostic) is img_genseg.
TASKS = (
    "img_genseg",
    "img_ovseg",
    "img_refseg",
    "img_reaseg",
    "img_gcgseg",
    "img_intseg",
    "img_vgdseg",
    "img_chat",
    "vid_genseg",
    "vid_ovseg",
    "vid_refseg",
    "vid_reaseg",
    "vid_gcgseg",
    "vid_objseg",
    "vid_vgdseg",
    "vid_chat",
)
_PREFIX = {"image": "img_", "video": "vid_"}
#: Largest frame (height x width) read by default: a tiny PNG can claim 12000 x 12000.
DEFAULT_MAX_PIXELS = 8192 * 8192
#: Visual prompt types an object's stored ``prompt`` may hold, in the order evaluation reports them.
PROMPT_TYPES = ("point", "scribble", "box", "mask")

_SAMPLE_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": int,
    "task": str,
    "dataset": str,
    "modality": str,
    "height": int,
    "width": int,
    "num_frames": int,
    "objects": list,
}
_SAMPLE_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "frame_times": list,
    "categories": list,
    "query": str,
    "explanation": str,
    "caption": str,
    "phrases": list,
    "references": list,
    "conversation": list,
    "ignore_label": int,
}
_OBJECT_REQUIRED: dict[str, type | tuple[type, ...]] = {"id": int, "masks": list}
_OBJECT_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "category_id": int,
    "iscrowd": bool,
    "expressions": list,
    "prompt": dict,
    "attributes": dict,
}
_INDEX_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": int,
    "dataset": str,
    "split": str,
    "task": str,
    "modality": str,
    "num_samples": int,
    "shards": list,
}


class _Invalid(Exception):
    """A problem found deep in a record; the caller turns it into a SampleError / SourceError."""


def _check_types(
    record: Mapping[str, Any],
    required: Mapping[str, type | tuple[type, ...]],
    optional: Mapping[str, type | tuple[type, ...]],
    what: str,
) -> None:
    for name in required:
        if name not in record:
            raise _Invalid(f"{what} lacks required key {name!r}")
    for name, kind in {**required, **optional}.items():
        value = record.get(name)
        if name in record and value is not None and not _is(value, kind):
            raise _Invalid(f"{what} key {name!r} should be {_name(kind)}, got {type(value).__name__}")


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    # bool is an int in Python; a flag where a count is expected is a schema error.
    if isinstance(value, bool) and kind is int:
        return False
    return isinstance(value, kind)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def _text(value: Any) -> bool:
    """A non-empty string (whitespace alone is empty)."""
    return isinstance(value, str) and bool(value.strip())


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {repeated!r} appears twice in one json object")
    return record


def parse_json(data: bytes, url: str = "", key: str = "", what: str = "json member") -> Any:
    """Strict json: UTF-8 (or UTF-16/32 with a BOM), no NaN or Infinity, no key twice in an object."""
    try:
        return json.loads(data, object_pairs_hook=_unique_keys, parse_constant=_no_constants)
    except UnicodeDecodeError as error:
        raise SampleError(url, key, f"{what} is not UTF-8 text: {error}") from None
    except (json.JSONDecodeError, ValueError, RecursionError) as error:
        raise SampleError(url, key, f"{what} is not valid json: {error}") from None


def check_rle(rle: Any, height: int, width: int) -> str | None:
    """Problem with one COCO RLE mask (compressed or uncompressed counts), or None if it is fine."""
    return rle_problems([rle], height, width)[0]


def _check_task(task: str, modality: str, what: str) -> None:
    if task not in TASKS:
        raise _Invalid(f"{what} task {task!r} is not a known task ({', '.join(TASKS)})")
    if modality not in MODALITIES:
        raise _Invalid(f"{what} modality {modality!r} is not one of {MODALITIES}")
    if not task.startswith(_PREFIX[modality]):
        raise _Invalid(f"{what} task {task!r} does not fit modality {modality!r}")


def _check_categories(categories: list[Any], what: str) -> set[int]:
    ids: set[int] = set()
    for n, category in enumerate(categories):
        if not isinstance(category, Mapping):
            raise _Invalid(f"{what} categories[{n}] should be an object, got {type(category).__name__}")
        if not _is_int(category.get("id")):
            raise _Invalid(f"{what} categories[{n}] needs an int 'id', got {category.get('id')!r}")
        if category["id"] in ids:
            raise _Invalid(f"{what} categories repeat id {category['id']}")
        if not _text(category.get("name")):
            raise _Invalid(f"{what} category {category['id']} needs a non-empty string 'name'")
        if "isthing" in category and category["isthing"] not in (True, False):  # COCO's 0 / 1 too
            raise _Invalid(f"{what} category {category['id']} 'isthing' should be bool")
        ids.add(category["id"])
    return ids


def _check_point(point: Any, height: int, width: int, what: str) -> None:
    if not isinstance(point, list) or len(point) != 2 or not all(_is_number(v) for v in point):
        raise _Invalid(f"{what} should be [x, y] finite numbers, got {point!r}")
    x, y = point
    if not (0 <= x <= width and 0 <= y <= height):
        raise _Invalid(f"{what} {point} is outside the {width}x{height} (width x height) frame")


def _check_prompt(prompt: Mapping[str, Any], sample: Mapping[str, Any], what: str) -> None:
    height, width, frames = sample["height"], sample["width"], sample["num_frames"]
    what = f"{what} prompt"
    frame = prompt.get("frame", 0)
    if not _is_int(frame) or not 0 <= frame < frames:
        raise _Invalid(f"{what} frame {frame!r} is not a frame index in [0, {frames})")
    present = [kind for kind in PROMPT_TYPES if prompt.get(kind) is not None]
    if not present:
        raise _Invalid(f"{what} has none of {PROMPT_TYPES}")
    kind = prompt.get("type")
    if kind is not None and kind not in PROMPT_TYPES:
        raise _Invalid(f"{what} type {kind!r} is not one of {PROMPT_TYPES}")
    if kind is not None and kind not in present:
        raise _Invalid(f"{what} type is {kind!r} but it has no {kind!r} key")
    if "point" in present:
        _check_point(prompt["point"], height, width, f"{what} point")
    if "scribble" in present:
        scribble = prompt["scribble"]
        if not isinstance(scribble, list) or not scribble:
            raise _Invalid(f"{what} scribble should be a non-empty list of [x, y] points")
        for n, point in enumerate(scribble):
            _check_point(point, height, width, f"{what} scribble point {n}")
    if "box" in present:
        box = prompt["box"]
        if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
            raise _Invalid(f"{what} box should be [x0, y0, x1, y1] finite numbers, got {box!r}")
        x0, y0, x1, y1 = box
        if x0 > x1 or y0 > y1:
            raise _Invalid(f"{what} box {box} is inverted (needs x0 <= x1 and y0 <= y1)")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise _Invalid(f"{what} box {box} is outside the {width}x{height} (width x height) frame")
    if "mask" in present and (problem := check_rle(prompt["mask"], height, width)):
        raise _Invalid(f"{what} mask: {problem}")


def _check_object_ids(ids: Any, known: Collection[int], what: str, *, allow_empty: bool) -> None:
    if not isinstance(ids, list) or not all(_is_int(i) for i in ids):
        raise _Invalid(f"{what} 'object_ids' should be a list of ints, got {ids!r}")
    if not ids and not allow_empty:
        raise _Invalid(f"{what} 'object_ids' is empty")
    if len(set(ids)) != len(ids):
        raise _Invalid(f"{what} 'object_ids' repeats an id: {ids}")
    if unknown := sorted(set(ids) - set(known)):
        raise _Invalid(f"{what} names objects {unknown} that the sample does not have")


def _check_text_fields(sample: Mapping[str, Any], object_ids: set[int]) -> None:
    if "query" in sample and sample["query"] is not None and not _text(sample["query"]):
        raise _Invalid("'query' is an empty string")
    for n, reference in enumerate(sample.get("references") or []):
        what = f"references[{n}]"
        if not isinstance(reference, Mapping):
            raise _Invalid(f"{what} should be an object, got {type(reference).__name__}")
        if not _text(reference.get("text")):
            raise _Invalid(f"{what} needs a non-empty string 'text'")
        # No objects = a no-target expression (gRefCOCO).
        _check_object_ids(reference.get("object_ids"), object_ids, what, allow_empty=True)
    phrases = sample.get("phrases")
    if phrases:
        caption = sample.get("caption")
        if not isinstance(caption, str):
            raise _Invalid("'phrases' given without a 'caption' string")
        taken: list[tuple[int, int, int]] = []
        for n, phrase in enumerate(phrases):
            what = f"phrases[{n}]"
            if not isinstance(phrase, Mapping):
                raise _Invalid(f"{what} should be an object, got {type(phrase).__name__}")
            span = phrase.get("span")
            if not isinstance(span, list) or len(span) != 2 or not all(_is_int(v) for v in span):
                raise _Invalid(f"{what} 'span' should be [start, end] ints, got {span!r}")
            start, end = span
            if not 0 <= start < end <= len(caption):
                raise _Invalid(
                    f"{what} span {span} is not inside the caption (needs 0 <= start < end <= {len(caption)})"
                )
            _check_object_ids(phrase.get("object_ids"), object_ids, what, allow_empty=False)
            taken.append((start, end, n))
        taken.sort()
        for (_, end, a), (start, _, b) in zip(taken, taken[1:]):
            if start < end:
                raise _Invalid(f"phrases[{a}] and phrases[{b}] overlap in the caption")
    conversation = sample.get("conversation")
    if conversation:  # [] = none
        for n, turn in enumerate(conversation):
            what = f"conversation[{n}]"
            if not isinstance(turn, Mapping):
                raise _Invalid(f"{what} should be an object, got {type(turn).__name__}")
            expected = "user" if n % 2 == 0 else "assistant"
            if turn.get("role") != expected:
                raise _Invalid(
                    f"{what} role is {turn.get('role')!r}, expected {expected!r} "
                    "(turns alternate, user first)"
                )
            if not isinstance(turn.get("content"), str):
                raise _Invalid(f"{what} 'content' should be a string")


def _check_masks(
    sample: Mapping[str, Any], frames: Collection[int] | None, structure_only: bool = False
) -> dict[tuple[int, int], Any]:
    """The masks' RLE structure and size on every frame; their run sums on ``frames`` (None: all), so
    no mask is decoded whose runs do not cover the frame exactly. Returns the runs of the masks whose
    sums were checked, by (object index, frame)."""
    height, width = sample["height"], sample["width"]
    where, rles = [], []
    for n, obj in enumerate(sample["objects"]):
        for t, rle in enumerate(obj["masks"]):
            if rle is None:
                continue
            if structure_only or (frames is not None and t not in frames):
                # Everything but the run sums (cheap): dict, size, counts type.
                if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
                    problem = "mask is not a COCO RLE dict with 'size' and 'counts'"
                elif rle["size"] != [height, width] or not isinstance(rle["counts"], (str, list)):
                    problem = check_rle(rle, height, width)
                else:
                    continue
                raise _Invalid(f"object {n} (id {obj['id']}) frame {t}: {problem}")
            where.append((n, t))
            rles.append(rle)
    # All masks checked in one call (the compressed counts strings are parsed together).
    problems, runs = parse_rles(rles, height, width)
    for (n, t), problem in zip(where, problems):
        if problem:
            raise _Invalid(f"object {n} (id {sample['objects'][n]['id']}) frame {t}: {problem}")
    return dict(zip(where, runs))


def check_mask_runs(
    sample: Mapping[str, Any], frames: Collection[int], *, url: str = "", key: str = ""
) -> dict[tuple[int, int], Any]:
    """The run sums of the masks on ``frames`` of a sample checked by ``validate_sample(check_runs=False)``.

    Returns:
        Each of those masks' runs by ``(object index, frame)`` (not-annotated ``null`` masks are left
        out), for :func:`~x2sam_lightning.data.rle.decode_runs`: a mask is parsed once.

    Raises:
        SampleError: naming the object and frame whose runs do not cover the frame exactly.
    """
    try:
        return _check_masks(sample, frames)
    except _Invalid as error:
        raise SampleError(url, key, str(error)) from None


def _check_sample(
    sample: Any, vocabulary: list[Any] | None, max_pixels: int | None, check_runs: bool = True
) -> None:
    if not isinstance(sample, Mapping):
        raise _Invalid(f"sample json should be an object, got {type(sample).__name__}")
    if not _is_int(sample.get("schema")) or sample["schema"] not in READABLE_SCHEMAS:
        known = " and ".join(map(str, READABLE_SCHEMAS))
        raise _Invalid(f"unsupported schema {sample.get('schema')!r} (this reader knows {known})")
    _check_types(sample, _SAMPLE_REQUIRED, _SAMPLE_OPTIONAL, "sample json")
    _check_task(sample["task"], sample["modality"], "sample")
    if not _text(sample["dataset"]):
        raise _Invalid("'dataset' is an empty string")
    height, width, frames = sample["height"], sample["width"], sample["num_frames"]
    if height <= 0 or width <= 0 or frames <= 0:
        raise _Invalid(f"height, width and num_frames must be positive, got {height}, {width}, {frames}")
    if max_pixels is not None and height * width > max_pixels:
        raise _Invalid(
            f"frame size {height}x{width} = {height * width} pixels is over the limit of {max_pixels} "
            "(max_pixels)"
        )
    if sample["modality"] == "image" and frames != 1:
        raise _Invalid(f"an image sample must have num_frames 1, got {frames}")
    times = sample.get("frame_times")
    if times is not None:
        if len(times) != frames:
            raise _Invalid(f"frame_times has {len(times)} entries for num_frames {frames}")
        if not all(_is_number(t) for t in times):
            raise _Invalid("frame_times should be finite numbers")
        if times[0] < 0 or any(b <= a for a, b in zip(times, times[1:])):
            raise _Invalid("frame_times should be >= 0 and strictly increasing")
    own = sample.get("categories")
    if own and own == vocabulary:  # the index's (checked once, with the index)
        known = {c["id"] for c in own}
    elif own:
        known = _check_categories(own, "sample")
    else:
        known = {c["id"] for c in vocabulary or ()}
    where = "the sample's categories" if own else "the index vocabulary"
    object_ids: set[int] = set()
    for n, obj in enumerate(sample["objects"]):
        what = f"object {n}"
        if not isinstance(obj, Mapping):
            raise _Invalid(f"{what} should be an object, got {type(obj).__name__}")
        _check_types(obj, _OBJECT_REQUIRED, _OBJECT_OPTIONAL, what)
        what = f"object {n} (id {obj['id']})"
        if obj["id"] in object_ids:
            raise _Invalid(f"object {n} repeats object id {obj['id']}")
        object_ids.add(obj["id"])
        category = obj.get("category_id")
        # Without a category_id the label is 0: unambiguous only for no or a one-category vocabulary.
        if len(known) > 1 and category is None:
            raise _Invalid(f"{what} has no category_id but {where} has {len(known)} categories")
        if known and category is not None and category not in known:
            raise _Invalid(f"{what} has category_id {category}, not in {where}")
        if category is not None and not known:
            raise _Invalid(
                f"{what} has category_id {category} but neither the sample nor the index has categories"
            )
        if len(obj["masks"]) != frames:
            raise _Invalid(f"{what} has {len(obj['masks'])} masks for num_frames {frames}")
        expressions = obj.get("expressions")
        if expressions is not None and not all(_text(e) for e in expressions):
            raise _Invalid(f"{what} expressions should be non-empty strings")
        if obj.get("prompt") is not None:
            _check_prompt(obj["prompt"], sample, what)
    _check_masks(sample, None if check_runs else (), structure_only=not check_runs)
    _check_text_fields(sample, object_ids)


def validate_sample(
    sample: Any,
    *,
    url: str = "",
    key: str = "",
    categories: list[dict[str, Any]] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    check_runs: bool = True,
) -> dict[str, Any]:
    """Check a decoded sample json against schema 1 or 2 (its ``schema`` key says which).

    Args:
        sample: the parsed json.
        url: shard url (for the error message).
        key: sample key (for the error message).
        categories: the index vocabulary, already checked by :func:`validate_index` (used when the
            sample has no ``categories`` of its own).
        max_pixels: largest ``height * width`` accepted (None: no limit).
        check_runs: also check that each mask's runs sum to ``height * width`` (False: only the structure
            of each mask; the reader then checks the frames it decodes with :func:`check_mask_runs`).

    Returns:
        ``sample`` as a dict.

    Raises:
        SampleError: naming ``url``, ``key`` and the first problem found.
    """
    try:
        _check_sample(sample, categories, max_pixels, check_runs)
    except _Invalid as error:
        raise SampleError(url, key, str(error)) from None
    return dict(sample)


def _check_index(index: Any) -> None:
    if not isinstance(index, Mapping):
        raise _Invalid(f"index json should be an object, got {type(index).__name__}")
    if not _is_int(index.get("schema")) or index["schema"] not in READABLE_SCHEMAS:
        raise _Invalid(f"unsupported index schema {index.get('schema')!r}")
    _check_types(index, _INDEX_REQUIRED, {"categories": list, "config": dict}, "index json")
    _check_task(index["task"], index["modality"], "index")
    for name in ("dataset", "split"):
        if not _text(index[name]):
            raise _Invalid(f"index {name!r} is an empty string")
    if index["num_samples"] <= 0:
        raise _Invalid(f"index num_samples is {index['num_samples']} (must be > 0)")
    _check_categories(index.get("categories") or [], "index")
    if not index["shards"]:
        raise _Invalid("index lists no shards")
    total = 0
    seen: dict[str, int] = {}
    for n, shard in enumerate(index["shards"]):
        if not isinstance(shard, Mapping) or not isinstance(shard.get("url"), str) or not shard["url"]:
            raise _Invalid(f"shard entry {n} needs a non-empty string 'url'")
        if not _is_int(shard.get("num_samples")):
            raise _Invalid(f"shard entry {n} ({shard['url']}) needs an int 'num_samples'")
        if shard["num_samples"] <= 0:
            raise _Invalid(
                f"shard entry {n} ({shard['url']}) has num_samples {shard['num_samples']} (must be > 0)"
            )
        if shard["url"] in seen:
            raise _Invalid(f"shard entries {seen[shard['url']]} and {n} are the same shard {shard['url']!r}")
        seen[shard["url"]] = n
        total += shard["num_samples"]
    if total != index["num_samples"]:
        raise _Invalid(f"shards hold {total} samples but num_samples is {index['num_samples']}")


def validate_index(index: Any, *, path: str = "") -> dict[str, Any]:
    """Check a ``<dataset>-<split>.index.json`` against schema 1 or 2.

    Raises:
        SourceError: naming the index ``path`` and the problem.
    """
    try:
        _check_index(index)
    except _Invalid as error:
        raise SourceError(path, str(error)) from None
    return dict(index)
