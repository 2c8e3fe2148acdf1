"""The text of the synthetic video task sets, built on the image sets' language (:mod:`.language`).

A video object's attributes are its colour, shape, size class and ``motion`` (``moving left``, ...,
``standing still``, ``leaving and coming back``): one value for the whole video, so a description holds on
every frame. Positions (which change) are not used; relations neither. The rules of :mod:`.language`
apply: a single-object description is kept only when exactly one object matches it, a multi-object one
when two or more do, a no-target one when none does; reasoning extremes must win by a clear margin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from x2sam_lightning.data.synthetic.language import (
    _COLOUR_RIDDLES,
    _KIND_RIDDLES,
    _MULTI_KEYS,
    AREA_MARGIN,
    MULTI_SHARE,
    NO_TARGET_SHARE,
    Attributes,
    Facts,
    _absent_description,
    _article,
    _count_answer,
    _reference,
    _words,
    caption_with_phrases,
    describe_all,
    matching,
)
from x2sam_lightning.data.synthetic.scenes import COLORS, SHAPES
from x2sam_lightning.data.synthetic.video_scenes import COMEBACK, STILL

#: Attribute combinations a single-object video description may use, short to specific.
VIDEO_SINGLE_KEYS: tuple[tuple[str, ...], ...] = (
    ("shape",),
    ("color",),
    ("color", "shape"),
    ("size", "shape"),
    ("size", "color", "shape"),
    ("shape", "motion"),
    ("color", "shape", "motion"),
    ("size", "color", "shape", "motion"),
)


def motion_phrase(motion: str) -> str:
    """``moving left`` / ``standing still`` stay; ``leaving and coming back`` reads as a clause."""
    return "that leaves the video and comes back" if motion == COMEBACK else motion


def describe_video(attrs: Attributes, keys: Sequence[str]) -> str:
    """``the small red circle moving left`` for keys ``(size, color, shape, motion)``."""
    text = f"the {_words(attrs, keys)}"
    return f"{text} {motion_phrase(attrs['motion'])}" if "motion" in keys else text


def unique_video_descriptions(objects: Sequence[Attributes]) -> list[list[str]]:
    """Per object, the descriptions (short to specific) that match it alone."""
    return [
        [describe_video(attrs, keys) for keys in VIDEO_SINGLE_KEYS if matching(objects, attrs, keys) == [i]]
        for i, attrs in enumerate(objects)
    ]


def video_referring_references(
    objects: Sequence[Attributes], ids: Sequence[int], rng: np.random.Generator
) -> list[dict[str, Any]]:
    """``[{"text", "object_ids"}]``: up to two descriptions per object, up to two multi-object ones and a
    no-target one. The first (what evaluation uses) is a no-target one with :data:`NO_TARGET_SHARE`, a
    multi-object one with :data:`MULTI_SHARE` (when the video has one), else a single-object one."""
    singles = []
    for i, texts in enumerate(unique_video_descriptions(objects)):
        for j in rng.permutation(len(texts))[:2]:
            singles.append((texts[int(j)], [i]))
    multis, seen = [], set()
    for attrs in objects:
        for keys in _MULTI_KEYS:
            text, targets = describe_all(attrs, keys), matching(objects, attrs, keys)
            if len(targets) >= 2 and text not in seen:
                seen.add(text)
                multis.append((text, targets))
    multis = [multis[int(j)] for j in rng.permutation(len(multis))[:2]]
    no_target = (_absent_description(objects, rng), [])
    u = rng.random()
    if u < NO_TARGET_SHARE or not (singles or multis):
        first = no_target
    elif (u < NO_TARGET_SHARE + MULTI_SHARE and multis) or not singles:
        first = multis[0]
    else:
        first = singles[int(rng.integers(len(singles)))]
    rest = [r for r in [*singles, *multis, no_target] if r is not first]
    ordered = [first, *(rest[int(j)] for j in rng.permutation(len(rest)))]
    return [_reference(text, targets, ids) for text, targets in ordered]


#: Reasoning queries about how shapes move (one / several targets).
_MOTION_RIDDLES = {
    "moving left": (
        "Which shape is heading for the left edge?",
        "Which shapes are heading for the left edge?",
    ),
    "moving right": (
        "Which shape is heading for the right edge?",
        "Which shapes are heading for the right edge?",
    ),
    "moving up": ("Which shape is rising?", "Which shapes are rising?"),
    "moving down": ("Which shape is falling?", "Which shapes are falling?"),
    STILL: ("Which shape never moves?", "Which shapes never move?"),
    COMEBACK: (
        "Which shape leaves the video and then comes back?",
        "Which shapes leave the video and then come back?",
    ),
}
_HIDDEN_RIDDLE = (
    "Which shape disappears behind another shape and then reappears?",
    "Which shapes disappear behind another shape and then reappear?",
)


def video_reasoning_references(
    objects: Sequence[Attributes], facts: Sequence[Facts], ids: Sequence[int], rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Every reasoning query the video answers unambiguously, in random order (evaluation: the first):
    kind and colour riddles, motion riddles, the shape that hides behind another, the largest."""
    found: list[tuple[str, list[int]]] = []

    def add(options: tuple[str, str], targets: list[int]) -> None:
        if targets:
            found.append((options[0] if len(targets) == 1 else options[1], targets))

    for shape, options in _KIND_RIDDLES.items():
        add(options, [i for i, o in enumerate(objects) if o["shape"] == shape])
    for colour, thing in _COLOUR_RIDDLES.items():
        add(
            (f"Which shape is the colour of {thing}?", f"Which shapes are the colour of {thing}?"),
            [i for i, o in enumerate(objects) if o["color"] == colour],
        )
    for motion, options in _MOTION_RIDDLES.items():
        add(options, [i for i, o in enumerate(objects) if o["motion"] == motion])
    add(_HIDDEN_RIDDLE, [i for i, o in enumerate(objects) if "occlusion" in o.get("events", ())])
    if len(objects) >= 2:
        radii = sorted(((f["radius"], i) for i, f in enumerate(facts)), reverse=True)
        if radii[0][0] >= AREA_MARGIN * radii[1][0]:
            found.append(("Which shape is the largest?", [radii[0][1]]))
    return [
        _reference(text, targets, ids)
        for text, targets in (found[int(j)] for j in rng.permutation(len(found)))
    ]


_VIDEO_CAPTIONS = (
    "The video shows {items} on a {background} background.",
    "In this video there are {items}, on a {background} background.",
    "A {background} background with {items}.",
)


def video_grounded_caption(
    objects: Sequence[Attributes],
    facts: Sequence[Facts],
    ids: Sequence[int],
    background: str,
    rng: np.random.Generator,
) -> tuple[str, list[dict[str, Any]]]:
    """A caption naming every object (left to right where first seen) with how it moves, and its phrases
    ``[{"span", "object_ids"}]`` (``a [size] colour shape``; the motion follows outside the phrase)."""
    place = lambda attrs: motion_phrase(attrs["motion"])  # noqa: E731
    return caption_with_phrases(objects, facts, ids, background, rng, _VIDEO_CAPTIONS, place)


def video_chat_turns(
    objects: Sequence[Attributes], tags: Sequence[str], rng: np.random.Generator, turns: int
) -> list[dict[str, str]]:
    """Up to ``turns`` question-answer pairs about the video, each answered in one word."""
    shapes, colours = [o["shape"] for o in objects], [o["color"] for o in objects]
    candidates: list[tuple[str, str]] = [
        ("How many shapes are there in the video?", _count_answer(len(objects)))
    ]
    for shape in SHAPES:
        if shapes.count(shape) == 1:
            candidates.append(
                (f"What colour is the {shape}?", f"{colours[shapes.index(shape)].capitalize()}.")
            )
    for colour in COLORS:
        if colours.count(colour) == 1:
            candidates.append(
                (f"What shape is the {colour} object?", f"{shapes[colours.index(colour)].capitalize()}.")
            )
    pairs = [(o["color"], o["shape"]) for o in objects]
    for obj, pair in zip(objects, pairs):
        if pairs.count(pair) == 1 and obj["motion"].startswith("moving "):
            direction = obj["motion"].removeprefix("moving ")
            candidates.append((f"Which way is the {pair[0]} {pair[1]} moving?", f"{direction.capitalize()}."))
    present = rng.random() < 0.5
    pool = sorted(set(shapes)) if present else [s for s in SHAPES if s not in shapes]
    if pool:
        shape = pool[rng.integers(len(pool))]
        candidates.append((f"Is there {_article(shape)} {shape} in the video?", "Yes." if present else "No."))
    candidates.append(
        ("Does any shape leave the video and come back?", "Yes." if "exit" in tags else "No."),
    )
    candidates.append(
        ("Does any shape disappear behind another one?", "Yes." if "occlusion" in tags else "No."),
    )
    messages = []
    for j in rng.permutation(len(candidates))[:turns]:
        q, a = candidates[int(j)]
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return messages
