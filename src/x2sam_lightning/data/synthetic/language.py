"""The text of the synthetic task datasets: referring expressions, reasoning queries, captions, chat.

Everything is computed from each object's attributes (colour, shape, size class, position in a 3x3 grid)
and the geometry of its visible mask, so every statement can be checked against the image:

- a *description* names attribute values (``the small red circle at the top left``); it refers to the
  objects whose attributes all match. A single-object reference is kept only when exactly one object
  matches, a multi-object one (``all the red shapes``) when two or more do, a no-target one (a shape that
  is not in the image) when none does;
- a *relation* (``the circle left of the red square``) holds when the target's visible box lies entirely
  on that side of the anchor's; it is kept when exactly one object matches the target words and holds it,
  while the target words alone match several (the relation is needed);
- reasoning queries (``Which shape has three corners?``) name a property: a kind, a colour by a riddle,
  or an extreme (largest, nearest the top, ...) that wins by a clear margin;
- captions name every object with its phrase span; chat answers are one word (``Three.``, ``Blue.``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from x2sam_lightning.data.synthetic.scenes import COLORS, SHAPES

Attributes = dict[str, str]
Facts = dict[str, float]

#: Attribute combinations a single-object description may use, short to specific.
_SINGLE_KEYS: tuple[tuple[str, ...], ...] = (
    ("shape",),
    ("color",),
    ("color", "shape"),
    ("size", "shape"),
    ("size", "color", "shape"),
    ("shape", "position"),
    ("color", "shape", "position"),
    ("size", "color", "shape", "position"),
)
_MULTI_KEYS: tuple[tuple[str, ...], ...] = (("color",), ("shape",), ("size",), ("color", "shape"))
_RELATION_TARGET_KEYS: tuple[tuple[str, ...], ...] = (("shape",), ("color",), ("color", "shape"))
RELATIONS = ("left of", "right of", "above", "below")

#: Share of evaluation samples whose (first) reference is a no-target / a multi-object expression, and
#: share of single-object ones that use a relation when the scene has one.
NO_TARGET_SHARE = 0.125
MULTI_SHARE = 0.125
RELATION_SHARE = 1 / 3

_NUMBERS = ("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten")


# ---------------------------------------------------------------------------------------- descriptions
def position_phrase(position: str) -> str:
    return "in the center" if position == "center" else f"at the {position}"


def _words(attrs: Attributes, keys: Sequence[str]) -> str:
    """``size colour shape`` words of a description (``shape`` when the shape is not named)."""
    words = [attrs[k] for k in ("size", "color") if k in keys]
    return " ".join([*words, attrs["shape"] if "shape" in keys else "shape"])


def describe(attrs: Attributes, keys: Sequence[str]) -> str:
    """``the small red circle at the top left`` for keys ``(size, color, shape, position)``."""
    text = f"the {_words(attrs, keys)}"
    return f"{text} {position_phrase(attrs['position'])}" if "position" in keys else text


def describe_all(attrs: Attributes, keys: Sequence[str]) -> str:
    """``all the red shapes`` / ``all the circles``."""
    return f"all the {_words(attrs, keys)}s"


def matching(objects: Sequence[Attributes], attrs: Attributes, keys: Sequence[str]) -> list[int]:
    """Indices of the objects whose attributes ``keys`` equal those of ``attrs``."""
    return [i for i, o in enumerate(objects) if all(o[k] == attrs[k] for k in keys)]


def unique_descriptions(objects: Sequence[Attributes]) -> list[list[str]]:
    """Per object, the descriptions (short to specific) that match it alone."""
    return [
        [describe(attrs, keys) for keys in _SINGLE_KEYS if matching(objects, attrs, keys) == [i]]
        for i, attrs in enumerate(objects)
    ]


def _holds(relation: str, a: Facts, b: Facts) -> bool:
    if relation == "left of":
        return a["x1"] <= b["x0"]
    if relation == "right of":
        return a["x0"] >= b["x1"]
    if relation == "above":
        return a["y1"] <= b["y0"]
    return a["y0"] >= b["y1"]  # below


def relations(objects: Sequence[Attributes], facts: Sequence[Facts]) -> list[tuple[str, int]]:
    """Unambiguous relational expressions ``(text, target index)`` (see the module docstring)."""
    anchors = {}
    for b, attrs in enumerate(objects):
        short = [keys for keys in _SINGLE_KEYS[:5] if matching(objects, attrs, keys) == [b]]
        if short:
            anchors[b] = describe(attrs, short[0])
    found = []
    for x, attrs in enumerate(objects):
        for keys in _RELATION_TARGET_KEYS:
            similar = matching(objects, attrs, keys)
            if len(similar) < 2:
                continue
            for b, anchor in anchors.items():
                for relation in RELATIONS:
                    holders = [y for y in similar if y != b and _holds(relation, facts[y], facts[b])]
                    if holders == [x]:
                        found.append((f"the {_words(attrs, keys)} {relation} {anchor}", x))
    return found


def _absent_description(objects: Sequence[Attributes], rng: np.random.Generator) -> str:
    """A description that matches no object, close to the scene (shares a colour or a shape with it)."""
    colours, shapes = list(COLORS), list(SHAPES)
    present = {(o["color"], o["shape"]) for o in objects}
    seen_colours, seen_shapes = {o["color"] for o in objects}, {o["shape"] for o in objects}
    near = [
        (c, s)
        for c in colours
        for s in shapes
        if (c, s) not in present and (c in seen_colours or s in seen_shapes)
    ]
    absent_shapes = [s for s in shapes if s not in seen_shapes]
    if absent_shapes and rng.random() < 0.25:
        return f"the {absent_shapes[rng.integers(len(absent_shapes))]}"
    colour, shape = near[rng.integers(len(near))]
    return f"the {colour} {shape}"


def _reference(text: str, targets: Sequence[int], ids: Sequence[int]) -> dict[str, Any]:
    return {"text": text, "object_ids": [int(ids[i]) for i in sorted(targets)]}


def referring_references(
    objects: Sequence[Attributes], facts: Sequence[Facts], ids: Sequence[int], rng: np.random.Generator
) -> list[dict[str, Any]]:
    """The references of a referring sample: ``[{"text", "object_ids"}]``, every one unambiguous.

    Up to two plain descriptions per object, up to three relations, up to two multi-object expressions and
    one no-target expression. The first reference is what evaluation uses: a no-target one with
    probability :data:`NO_TARGET_SHARE`, a multi-object one with :data:`MULTI_SHARE` (when the scene has
    one), else a single-object one (a relation with :data:`RELATION_SHARE` when there is one).
    """
    singles: list[tuple[str, list[int]]] = []
    for i, texts in enumerate(unique_descriptions(objects)):
        for j in rng.permutation(len(texts))[:2]:
            singles.append((texts[int(j)], [i]))
    related = [(text, [x]) for text, x in relations(objects, facts)]
    related = [related[int(j)] for j in rng.permutation(len(related))[:3]]
    multis, seen = [], set()
    for attrs in objects:
        for keys in _MULTI_KEYS:
            text = describe_all(attrs, keys)
            targets = matching(objects, attrs, keys)
            if len(targets) >= 2 and text not in seen:
                seen.add(text)
                multis.append((text, targets))
    multis = [multis[int(j)] for j in rng.permutation(len(multis))[:2]]
    no_target = (_absent_description(objects, rng), [])

    u = rng.random()
    if u < NO_TARGET_SHARE:
        first = no_target
    elif u < NO_TARGET_SHARE + MULTI_SHARE and multis:
        first = multis[0]
    elif related and (rng.random() < RELATION_SHARE or not singles):
        first = related[0]
    elif singles:
        first = singles[int(rng.integers(len(singles)))]
    else:  # identical twins only: no single description exists
        first = multis[0] if multis else no_target
    rest = [r for r in [*singles, *related, *multis, no_target] if r is not first]
    ordered = [first, *(rest[int(j)] for j in rng.permutation(len(rest)))]
    return [_reference(text, targets, ids) for text, targets in ordered]


# ------------------------------------------------------------------------------------------ reasoning
_KIND_RIDDLES = {
    "triangle": ("Which shape has three corners?", "Which shapes have three corners?"),
    "square": ("Which shape has four equal sides?", "Which shapes have four equal sides?"),
    "star": ("Which shape has five points?", "Which shapes have five points?"),
    "ring": ("Which shape has a hole in the middle?", "Which shapes have a hole in the middle?"),
    "circle": ("Which shape is perfectly round and solid?", "Which shapes are perfectly round and solid?"),
    "ellipse": ("Which shape looks like a stretched circle?", "Which shapes look like stretched circles?"),
}
_COLOUR_RIDDLES = {
    "red": "a ripe tomato",
    "green": "grass",
    "blue": "a clear sky",
    "yellow": "a banana",
    "purple": "lavender",
    "orange": "a carrot",
    "cyan": "a tropical lagoon",
    "pink": "bubble gum",
}
#: (query, fact, pick the minimum?) of the extreme-position and size queries.
_EXTREMES = (
    ("Which shape is the largest?", "area", False),
    ("Which shape is the smallest?", "area", True),
    ("Which shape is nearest the top of the image?", "y0", True),
    ("Which shape is closest to the bottom of the image?", "y1", False),
    ("Which shape is furthest to the left?", "x0", True),
    ("Which shape is furthest to the right?", "x1", False),
)
#: An extreme must win by this factor (areas) or this share of the image side (positions).
AREA_MARGIN = 1.5
POSITION_MARGIN = 0.05


def reasoning_references(
    objects: Sequence[Attributes],
    facts: Sequence[Facts],
    ids: Sequence[int],
    size: int,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Every reasoning query the scene answers unambiguously, in random order (evaluation uses the first)."""
    found: list[tuple[str, list[int]]] = []
    for shape, (one, many) in _KIND_RIDDLES.items():
        targets = [i for i, o in enumerate(objects) if o["shape"] == shape]
        if targets:
            found.append((one if len(targets) == 1 else many, targets))
    for colour, thing in _COLOUR_RIDDLES.items():
        targets = [i for i, o in enumerate(objects) if o["color"] == colour]
        if targets:
            verb = "Which shape is" if len(targets) == 1 else "Which shapes are"
            found.append((f"{verb} the colour of {thing}?", targets))
    if len(objects) >= 2:
        for query, fact, lowest in _EXTREMES:
            values = sorted((f[fact], i) for i, f in enumerate(facts))
            if not lowest:
                values.reverse()
            (best, winner), (second, _) = values[0], values[1]
            if fact == "area":
                clear = best >= AREA_MARGIN * second if not lowest else second >= AREA_MARGIN * best
            else:
                clear = abs(best - second) >= POSITION_MARGIN * size
            if clear:
                found.append((query, [winner]))
    return [
        _reference(text, targets, ids)
        for text, targets in (found[int(j)] for j in rng.permutation(len(found)))
    ]


# ---------------------------------------------------------------------------------------------- GCG
_BACKGROUND_WORDS = {"gradient": "smoothly shaded", "noise": "blotchy", "stripes": "striped"}
_CAPTIONS = (
    "The image shows {items} on a {background} background.",
    "This picture contains {items}, on a {background} background.",
    "A {background} background with {items}.",
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def grounded_caption(
    objects: Sequence[Attributes],
    facts: Sequence[Facts],
    ids: Sequence[int],
    background: str,
    rng: np.random.Generator,
) -> tuple[str, list[dict[str, Any]]]:
    """A caption naming every object, left to right, and its phrases ``[{"span", "object_ids"}]``.

    Each phrase is ``a [size] colour shape`` (the article included, as GranD-f phrases are); the object's
    place follows it outside the phrase.
    """
    place = lambda attrs: position_phrase(attrs["position"])  # noqa: E731
    return caption_with_phrases(objects, facts, ids, background, rng, _CAPTIONS, place)


def caption_with_phrases(
    objects: Sequence[Attributes],
    facts: Sequence[Facts],
    ids: Sequence[int],
    background: str,
    rng: np.random.Generator,
    patterns: Sequence[str],
    place: Callable[[Attributes], str],
) -> tuple[str, list[dict[str, Any]]]:
    """The GCG caption of a scene: objects left to right (by ``facts``' centres), each ``a [size] colour
    shape`` phrase followed by ``place(attrs)`` outside it, joined into one of ``patterns``."""
    order = sorted(range(len(objects)), key=lambda i: (facts[i]["cx"], facts[i]["cy"]))
    pieces = []
    for i in order:
        attrs = objects[i]
        words = (
            f"{attrs['size']} {attrs['color']} {attrs['shape']}"
            if rng.random() < 0.5
            else f"{attrs['color']} {attrs['shape']}"
        )
        pieces.append((f"{_article(words)} {words}", f" {place(attrs)}", i))
    pattern = patterns[int(rng.integers(len(patterns)))]
    marker = "\x00"
    items = _join([f"{marker}{phrase}{marker}{where}" for phrase, where, _ in pieces])
    text = pattern.format(items=items, background=_BACKGROUND_WORDS[background])
    if text.startswith(marker):  # a sentence starts with its first phrase: capitalise it
        text = marker + text[1].upper() + text[2:]
    caption, spans = "", []
    for n, part in enumerate(text.split(marker)):
        if n % 2 == 1:
            spans.append((len(caption), len(caption) + len(part)))
        caption += part
    phrases = [{"span": [s, e], "object_ids": [int(ids[i])]} for (s, e), (_, _, i) in zip(spans, pieces)]
    return caption, phrases


# --------------------------------------------------------------------------------------------- chat
def _count_answer(n: int) -> str:
    return f"{_NUMBERS[n] if n < len(_NUMBERS) else n}."


def chat_turns(
    objects: Sequence[Attributes], facts: Sequence[Facts], rng: np.random.Generator, turns: int
) -> list[dict[str, str]]:
    """Up to ``turns`` question-answer pairs about the scene, each with a one-word answer."""
    shapes, colours = [o["shape"] for o in objects], [o["color"] for o in objects]
    candidates: list[tuple[str, str]] = [("How many shapes are there?", _count_answer(len(objects)))]
    asked = SHAPES[rng.integers(len(SHAPES))]
    candidates.append((f"How many {asked}s are there?", _count_answer(shapes.count(asked))))
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
    present = rng.random() < 0.5
    pool = sorted(set(shapes)) if present else [s for s in SHAPES if s not in shapes]
    if pool:
        shape = pool[rng.integers(len(pool))]
        candidates.append((f"Is there {_article(shape)} {shape}?", "Yes." if present else "No."))
    pairs = {(o["color"], o["shape"]) for o in objects}
    colour, shape = list(COLORS)[rng.integers(len(COLORS))], SHAPES[rng.integers(len(SHAPES))]
    if rng.random() < 0.5:
        colour, shape = (
            objects[rng.integers(len(objects))]["color"],
            objects[rng.integers(len(objects))]["shape"],
        )
    candidates.append(
        (f"Is there {_article(colour)} {colour} {shape}?", "Yes." if (colour, shape) in pairs else "No.")
    )
    areas = sorted(((f["area"], i) for i, f in enumerate(facts)), reverse=True)
    if len(areas) >= 2 and areas[0][0] >= AREA_MARGIN * areas[1][0]:
        candidates.append(("What colour is the largest shape?", f"{colours[areas[0][1]].capitalize()}."))
    messages = []
    for j in rng.permutation(len(candidates))[:turns]:
        q, a = candidates[int(j)]
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return messages
