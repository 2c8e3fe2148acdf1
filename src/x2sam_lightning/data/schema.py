"""Versioned validation of the shard sample json and the dataset index json (DESIGN.md section 3).

A bad sample raises :class:`SampleError`, whose message names the shard url, the sample key and the
problem, so a broken record in a terabyte of shards can be found from the log line alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The schema version this package reads and writes.
SCHEMA_VERSION = 1

MODALITIES = ("image", "video")
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
    "caption": str,
    "phrases": list,
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


class SampleError(ValueError):
    """A sample (or index) that cannot be used, with where it is and what is wrong.

    Attributes:
        url: the shard (or index file) the record came from.
        key: the WebDataset sample key (``""`` for an index).
        problem: what is wrong.
    """

    def __init__(self, url: str, key: str, problem: str) -> None:
        self.url, self.key, self.problem = url, key, problem
        where = f"shard {url!r}, sample {key!r}" if key else f"{url!r}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # keeps the three fields when the error crosses a DataLoader worker boundary
        return (type(self), (self.url, self.key, self.problem))


def _check_types(
    record: Mapping[str, Any],
    required: Mapping[str, type | tuple[type, ...]],
    optional: Mapping[str, type | tuple[type, ...]],
    what: str,
) -> str | None:
    for name in required:
        if name not in record:
            return f"{what} lacks required key {name!r}"
    for name, kind in {**required, **optional}.items():
        value = record.get(name)
        if name in record and value is not None and not _is(value, kind):
            return f"{what} key {name!r} should be {_name(kind)}, got {type(value).__name__}"
    return None


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    # bool is an int in Python; a flag where a count is expected is a schema error.
    if isinstance(value, bool) and kind is int:
        return False
    return isinstance(value, kind)


def _name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def check_rle(rle: Any, height: int, width: int) -> str | None:
    """Problem with one COCO RLE mask (``{"size": [h, w], "counts": str}``), or None if it is fine."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        return "mask is not a COCO RLE dict with 'size' and 'counts'"
    if not isinstance(rle["counts"], (str, list)):
        return f"RLE counts should be str (compressed) or list, got {type(rle['counts']).__name__}"
    if list(rle["size"]) != [height, width]:
        return f"RLE size {list(rle['size'])} does not match the sample size [{height}, {width}]"
    return None


def validate_sample(sample: Any, *, url: str = "", key: str = "") -> dict[str, Any]:
    """Check a decoded sample json against schema 1.

    Args:
        sample: the parsed json.
        url: shard url (for the error message).
        key: sample key (for the error message).

    Returns:
        ``sample`` unchanged.

    Raises:
        SampleError: naming ``url``, ``key`` and the first problem found.
    """

    def fail(problem: str) -> SampleError:
        return SampleError(url, key, problem)

    if not isinstance(sample, Mapping):
        raise fail(f"sample json should be an object, got {type(sample).__name__}")
    if sample.get("schema") != SCHEMA_VERSION:
        raise fail(f"unsupported schema {sample.get('schema')!r} (this reader knows {SCHEMA_VERSION})")
    if problem := _check_types(sample, _SAMPLE_REQUIRED, _SAMPLE_OPTIONAL, "sample json"):
        raise fail(problem)
    if sample["modality"] not in MODALITIES:
        raise fail(f"modality {sample['modality']!r} is not one of {MODALITIES}")
    height, width, frames = sample["height"], sample["width"], sample["num_frames"]
    if height <= 0 or width <= 0 or frames <= 0:
        raise fail(f"height, width and num_frames must be positive, got {height}, {width}, {frames}")
    if sample["modality"] == "image" and frames != 1:
        raise fail(f"an image sample must have num_frames 1, got {frames}")
    times = sample.get("frame_times")
    if times is not None and len(times) != frames:
        raise fail(f"frame_times has {len(times)} entries for num_frames {frames}")
    category_ids = {c.get("id") for c in sample.get("categories") or [] if isinstance(c, Mapping)}
    seen_ids = set()
    for n, obj in enumerate(sample["objects"]):
        what = f"object {n}"
        if not isinstance(obj, Mapping):
            raise fail(f"{what} should be an object, got {type(obj).__name__}")
        if problem := _check_types(obj, _OBJECT_REQUIRED, _OBJECT_OPTIONAL, what):
            raise fail(problem)
        if obj["id"] in seen_ids:
            raise fail(f"{what} repeats object id {obj['id']}")
        seen_ids.add(obj["id"])
        if category_ids and obj.get("category_id") is not None and obj["category_id"] not in category_ids:
            raise fail(f"{what} has category_id {obj['category_id']} not in the sample's categories")
        if len(obj["masks"]) != frames:
            raise fail(f"{what} (id {obj['id']}) has {len(obj['masks'])} masks for num_frames {frames}")
        for t, rle in enumerate(obj["masks"]):
            if rle is not None and (problem := check_rle(rle, height, width)):
                raise fail(f"{what} (id {obj['id']}) frame {t}: {problem}")
    return dict(sample)


def validate_index(index: Any, *, path: str = "") -> dict[str, Any]:
    """Check a ``<dataset>-<split>.index.json`` against schema 1.

    Raises:
        SampleError: naming the index ``path`` and the problem (``key`` is empty).
    """
    if not isinstance(index, Mapping):
        raise SampleError(path, "", f"index json should be an object, got {type(index).__name__}")
    if index.get("schema") != SCHEMA_VERSION:
        raise SampleError(path, "", f"unsupported index schema {index.get('schema')!r}")
    if problem := _check_types(index, _INDEX_REQUIRED, {"categories": list, "config": dict}, "index json"):
        raise SampleError(path, "", problem)
    if index["modality"] not in MODALITIES:
        raise SampleError(path, "", f"modality {index['modality']!r} is not one of {MODALITIES}")
    total = 0
    for n, shard in enumerate(index["shards"]):
        if not isinstance(shard, Mapping) or not isinstance(shard.get("url"), str):
            raise SampleError(path, "", f"shard entry {n} needs a string 'url'")
        if not _is(shard.get("num_samples"), int):
            raise SampleError(path, "", f"shard entry {n} ({shard['url']}) needs an int 'num_samples'")
        total += shard["num_samples"]
    if total != index["num_samples"]:
        raise SampleError(path, "", f"shards hold {total} samples but num_samples is {index['num_samples']}")
    return dict(index)
