"""LLaVA-1.5's instruction data (``llava_v1_5_mix665k.json``): image chat, task ``img_chat``, split ``train``.

The json is a list of ``{"id", "image"?, "conversations": [{"from": "human" | "gpt", "value"}, ...]}``;
``image`` is a path relative to the image root (``coco/train2017/...``, ``gqa/images/...``,
``ocr_vqa/images/...``, ``textvqa/train_images/...``, ``vg/VG_100K/...``, ``vg/VG_100K_2/...``). ``id`` is a
string or an int, and not unique across the mix: a repeated id gets ``_2``, ``_3``, ... in file order.

Each item becomes one sample without objects whose ``conversation`` is the item's turns (``human`` ->
``user``, ``gpt`` -> ``assistant``). The dataset's ``<image>`` token (at the start or the end of the first
question) is removed with the whitespace around it: the conversation builder opens the first user turn
with ``<image>\\n`` itself, as LLaVA's own preprocessing moves the token there.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_recipes.framework import ConvertedSample, LayoutError, Recipe, SkipItem
from data_recipes.framework.cli import main
from data_recipes.framework.layout import load_json, require_keys
from data_recipes.framework.media import image_extension, image_size
from data_recipes.framework.recipe import Plan
from x2sam_lightning.special_tokens import ADDED_TOKENS, IMAGE, VIDEO

ANNOTATION = "llava_v1_5_mix665k.json"
ROLES = {"human": "user", "gpt": "assistant"}


def unique_ids(ids: list[Any]) -> list[str]:
    """The dataset's ids as strings; the n-th repeat of an id (n >= 2) gets ``_n``."""
    seen: Counter[str] = Counter()
    result = []
    for raw in ids:
        text = str(raw)
        seen[text] += 1
        result.append(text if seen[text] == 1 else f"{text}_{seen[text]}")
    return result


def conversation_turns(turns: list[dict[str, Any]]) -> list[dict[str, str]]:
    """LLaVA turns -> ``[{"role", "content"}]`` without the ``<image>`` token.

    Raises:
        SkipItem: turns that do not alternate human / gpt starting with a question and ending with an
            answer, or text holding one of the conversation markers (``<p>``, ``<SEG>``, ...).
        ValueError: a turn of another ``from`` than human / gpt (a format this recipe does not know).
    """
    result = []
    for n, turn in enumerate(turns):
        speaker = turn.get("from")
        if speaker not in ROLES:
            raise ValueError(f"turn {n} is from {speaker!r}, expected 'human' or 'gpt'")
        text = str(turn.get("value", ""))
        if IMAGE in text:
            text = text.replace(IMAGE, "").strip()
        if VIDEO in text or any(token in text for token in ADDED_TOKENS):
            raise SkipItem("text holds a conversation marker")
        result.append({"role": ROLES[speaker], "content": text})
    roles = [t["role"] for t in result]
    if not roles or len(roles) % 2 or roles != ["user", "assistant"] * (len(roles) // 2):
        raise SkipItem("turns not human/gpt alternating")
    return result


class LLaVA665K(Recipe):
    name = "llava_665k"
    task = "img_chat"
    splits = ("train",)
    layout = (
        f"{ANNOTATION} at the top, the images below it as the json names them: coco/train2017/, "
        "gqa/images/, ocr_vqa/images/, textvqa/train_images/, vg/VG_100K/, vg/VG_100K_2/"
    )

    def check_layout(self, root: Path, split: str) -> None:
        path = root / ANNOTATION
        if not path.is_file():
            raise LayoutError(
                f"expected the LLaVA-1.5 instruction json {ANNOTATION} at {path}, found nothing"
            )

    def plan(self, root: Path, split: str) -> Plan:
        path = root / ANNOTATION
        data = load_json(path, "the LLaVA-1.5 instruction json")
        if not isinstance(data, list):
            raise LayoutError(f"{path} should be a list of conversations, got {type(data).__name__}")
        for entry in data:
            require_keys(entry, ("id", "conversations"), "an item", path)
        ids = unique_ids([entry["id"] for entry in data])
        items = [
            {
                "id": sample_id,
                "image": str(root / entry["image"]) if entry.get("image") else None,
                "conversations": entry["conversations"],
            }
            for sample_id, entry in zip(ids, data)
        ]
        return Plan(items=items, num_items=len(items))

    def describe(self, item: Any) -> str:
        return f"id {item['id']} ({item['image']})"

    def convert(self, item: dict[str, Any]) -> Iterator[ConvertedSample]:
        if item["image"] is None:
            raise SkipItem("text only (no image)")
        conversation = conversation_turns(item["conversations"])
        path = Path(item["image"])
        if not path.is_file():
            raise SkipItem("image file missing")
        data = path.read_bytes()
        try:
            extension = image_extension(data)
        except ValueError:
            raise SkipItem("image not JPEG or PNG") from None
        height, width = image_size(data)
        sample = {
            "height": height,
            "width": width,
            "num_frames": 1,
            "objects": [],
            "conversation": conversation,
        }
        yield ConvertedSample(id=item["id"], json=sample, media={extension: data})


RECIPES = [LLaVA665K()]

if __name__ == "__main__":
    sys.exit(main(RECIPES))
