"""Build the :class:`~x2sam_lightning.types.Conversation` of a sample for its task (stage 2).

:func:`build_conversation` turns a decoded, resized :class:`~x2sam_lightning.types.SegSample` into the
text the LLM reads and must answer, with the bookkeeping that ties every ``<p>..</p>`` condition and
``<SEG>`` to the sample's objects (read the ``Conversation`` docstring first; this module follows it).
What each task does:

=============  ================  ==========================================================================
task           mode              conditions (training / evaluation)
=============  ================  ==========================================================================
genseg, ovseg  set               category names: the present ones plus a random subset of absent ones,
                                 shuffled / the whole vocabulary in its order
refseg         per_condition     1-3 references as a multi-turn chat, no-target ones included (reply
                                 without ``<SEG>``) / exactly the sample's first reference
reaseg         per_condition     as refseg, with reasoning queries
gcgseg         per_condition     the phrases of the caption, in the answer: ``<p>phrase</p><SEG>``
intseg         set               one ``<p><region></p>`` per prompted object: 1..N objects, a random prompt
                                 type each, drawn from the masks / every object, the stored prompt of the
                                 requested type
objseg         set               (video) one ``<p><region></p>`` per object: its mask on its first visible
                                 frame of the clip (frame 0 when it shows there), exactly; the target is
                                 the whole track / every object, its stored ``mask`` prompt
vgdseg         set               one region per category present, on one of its objects (on the object's
                                 first visible frame of the clip, or its stored prompt's frame); the
                                 targets are all objects of that category, whole tracks for videos
chat           chat              the sample's own conversation; ``answer`` = the last reply
=============  ================  ==========================================================================

Sources of the text, in the sample json (``SegSample.meta``): ``references: [{"text", "object_ids"}]``
(referring and reasoning; when absent, each object's ``expressions`` refer to that object, and a
sample-level ``query`` refers to every object); ``caption`` and ``phrases: [{"span", "object_ids"}]``;
``conversation: [{"role", "content"}]``; object ``prompt``: ``{"frame", "point", "scribble", "box",
"mask"}`` (see :mod:`x2sam_lightning.data.visual_prompts`).

Rules a consumer may rely on beyond the ``Conversation`` docstring:

- ``iscrowd`` objects are never targets (as Mask2Former's COCO mapper drops them).
- The media marker (``<image>`` or ``<video>``) and a newline open the first user turn.
- A per-condition answer has its ``<SEG>`` right after the condition in GCG, and in the reply that follows
  the question of a referring or reasoning turn; a chat conversation ends with the assistant's reply.
- ``regions`` are drawn at the model input size on the prompt's frame of the clip; the objects a region
  prompts always have a mask on that frame.
- :func:`seg_conditions` lists, per ``<SEG>``, the conditions it decodes; :func:`check_conversation`
  checks a conversation against the contract (tests use it; a model may assert with it).

Randomness comes only from the ``rng`` argument: training passes the stream's counter-based generator
(see ``mixing.py``), evaluation :func:`eval_generator` of the sample key, which fixes templates and any
prompt drawn from a mask.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from x2sam_lightning.data.errors import SampleError
from x2sam_lightning.data.templates import (
    EVAL_TEMPLATE,
    answer,
    media_word,
    question,
    task_kind,
    template_id,
    templates_for,
    wrap,
)
from x2sam_lightning.data.visual_prompts import PROMPT_TYPES, prompt_geometry, render_prompt
from x2sam_lightning.special_tokens import IMAGE, P_END, P_START, REGION, SEG, VIDEO
from x2sam_lightning.types import Conversation, SegSample

#: Prompt types each prompted task is evaluated with; the evaluation stream yields such a sample once per
#: type (``Conversation.prompt_type`` says which). Paper: VGD reports point and box, interactive all four.
EVAL_PROMPT_TYPES: dict[str, tuple[str, ...]] = {
    "img_intseg": PROMPT_TYPES,
    "img_vgdseg": ("point", "box"),
    "vid_vgdseg": ("point", "box"),
    "vid_objseg": ("mask",),  # the first-frame mask (semi-supervised VOS)
}
#: Most references (referring / reasoning turns) one training conversation holds.
MAX_TRAIN_REFERENCES = 3
#: Most regions one interactive training conversation prompts.
MAX_TRAIN_REGIONS = 8

_MARKERS = re.compile("|".join(re.escape(m) for m in (P_START, P_END, SEG, REGION, IMAGE, VIDEO)))


class ConversationError(SampleError):
    """A sample whose annotations cannot make a conversation of its source's task.

    A :class:`~x2sam_lightning.data.errors.SampleError` (``ConversationError(shard, key, problem)``), so the
    data path treats it like any bad sample: ``on_error`` raises or skips and counts it, the source's
    failure guard ends a source none of whose samples can be used, and the CLI reports it as one line.
    """

    def _format(self) -> str:
        if not self.url and self.key:  # a sample built in memory (tests, the predictor): no shard to name
            return f"sample {self.key!r}: {self.problem}"
        return super()._format()


def eval_generator(key: str, *parts: Any) -> np.random.Generator:
    """A generator fixed by the sample key (and e.g. the prompt type): the same in every process."""
    digest = hashlib.sha256("/".join([key, *map(str, parts)]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def build_conversation(
    sample: SegSample,
    task: str | None = None,
    rng: np.random.Generator | None = None,
    *,
    train: bool,
    prompt_type: str | None = None,
) -> Conversation:
    """The conversation of ``sample`` for ``task`` (see the module docstring for each task).

    Args:
        sample: a decoded, resized sample (``targets`` at the model input size; ``meta`` holds the json).
        task: task id (``img_refseg`` ...); default ``sample.task``. The source's task decides.
        rng: randomness for wordings, choices and prompts; default :func:`eval_generator` of the key.
        train: training (random wordings and choices) or evaluation (wording 0, fixed choices).
        prompt_type: interactive / visual grounded: the prompt type of every region (evaluation: default
            the first of :data:`EVAL_PROMPT_TYPES`; training: default a random type per region).

    Raises:
        ConversationError: naming the shard and key: the task has no builder, the sample lacks what the
            task needs (no references, caption, prompted object), or its annotations are unusable.
    """
    task = task or sample.task
    rng = rng if rng is not None else eval_generator(sample.key, prompt_type)
    try:
        builder = _BUILDERS.get(task_kind(task))
    except ValueError as error:  # a malformed task id (e.g. a source whose task is "unknown")
        raise ConversationError(sample.shard, sample.key, str(error)) from None
    if builder is None:
        raise ConversationError(sample.shard, sample.key, f"no conversation builder for task {task!r}")
    if prompt_type is not None and prompt_type not in PROMPT_TYPES:
        raise ValueError(f"unknown prompt type {prompt_type!r}; expected one of {PROMPT_TYPES}")
    try:
        return builder(_Context(sample, task, rng, train, prompt_type))
    except ConversationError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        # Annotations the schema let through but the builder cannot use: a bad sample, not a crash.
        problem = f"{task} conversation: unusable annotations ({type(error).__name__}: {error})"
        raise ConversationError(sample.shard, sample.key, problem) from error


class _Context:
    """What every builder reads: the sample, its objects by id, and the wording choice."""

    def __init__(
        self, sample: SegSample, task: str, rng: np.random.Generator, train: bool, prompt_type: str | None
    ) -> None:
        self.sample, self.task, self.rng, self.train, self.prompt_type = sample, task, rng, train, prompt_type
        targets = sample.targets
        self.ids = targets.object_ids.tolist()
        self.labels = targets.labels.tolist()
        crowd = targets.iscrowd.tolist()
        self.index = {obj_id: n for n, obj_id in enumerate(self.ids) if not crowd[n]}
        self.usable = [n for n in range(len(self.ids)) if not crowd[n]]
        by_id = {obj.get("id"): obj for obj in sample.meta.get("objects", [])}
        self.objects = [by_id.get(obj_id, {}) for obj_id in self.ids]

    def fail(self, problem: str) -> ConversationError:
        return ConversationError(self.sample.shard, self.sample.key, f"{self.task} conversation: {problem}")

    def pick(self, options: Sequence[Any]) -> int:
        """Wording index: random in training, :data:`EVAL_TEMPLATE` in evaluation."""
        return int(self.rng.integers(len(options))) if self.train else EVAL_TEMPLATE

    def targets_of(self, object_ids: Sequence[int]) -> list[int]:
        """Indices into the targets of the given object ids (absent or crowd ids are left out)."""
        return sorted({self.index[i] for i in object_ids if i in self.index})

    def first_user(self, text: str) -> dict[str, str]:
        marker = VIDEO if media_word(self.task) == "video" else IMAGE
        return {"role": "user", "content": f"{marker}\n{text}"}


def _set_conversation(
    ctx: _Context,
    conditions: list[str],
    objects: list[list[int]],
    labels: list[int],
    regions: tuple[torch.Tensor | None, list[int], str | None] = (None, [], None),
) -> Conversation:
    table = templates_for(ctx.task)
    q, a = ctx.pick(table.questions), ctx.pick(table.answers)
    region_masks, region_frames, prompt_type = regions
    return Conversation(
        messages=[
            ctx.first_user(question(ctx.task, q, conditions=conditions)),
            {"role": "assistant", "content": answer(ctx.task, a)},
        ],
        mode="set",
        condition_objects=objects,
        condition_labels=labels,
        regions=region_masks,
        region_frames=region_frames,
        prompt_type=prompt_type,
        template=template_id(ctx.task, q, a),
    )


# ------------------------------------------------------------------------------- generic, open-vocabulary
def _categories(ctx: _Context) -> Conversation:
    vocabulary = ctx.sample.categories
    if not vocabulary:
        raise ctx.fail("the sample has no category vocabulary")
    present = sorted({ctx.labels[n] for n in ctx.usable})
    if ctx.train:
        absent = [k for k in range(len(vocabulary)) if k not in present]
        # At least one condition: an image without objects still asks for some (absent) category.
        least = 0 if present else 1
        extra = ctx.rng.choice(absent, int(ctx.rng.integers(least, len(absent) + 1)), replace=False).tolist()
        order = [int(k) for k in ctx.rng.permutation(present + extra)]
    else:
        order = list(range(len(vocabulary)))
    conditions = [wrap(vocabulary[k]["name"]) for k in order]
    objects = [[n for n in ctx.usable if ctx.labels[n] == k] for k in order]
    return _set_conversation(ctx, conditions, objects, order)


# ---------------------------------------------------------------------------------- referring, reasoning
def _references(ctx: _Context) -> list[tuple[str, list[int]]]:
    meta = ctx.sample.meta
    if meta.get("references"):
        return [(r["text"], ctx.targets_of(r.get("object_ids", []))) for r in meta["references"]]
    if meta.get("query"):
        return [(meta["query"], list(ctx.usable))]
    refs = [(e, [n]) for n in ctx.usable for e in ctx.objects[n].get("expressions", [])]
    if not refs:
        raise ctx.fail("no references, query or object expressions to refer with")
    return refs


def _reasoning_condition(text: str) -> str:
    """``"Which shape has three corners?"`` -> ``"<p>Which shape has three corners</p>?"``."""
    text = text.strip()
    end = "?" if text.endswith("?") else "."
    return wrap(text.rstrip("?.! ")) + end


def _referring(ctx: _Context) -> Conversation:
    refs = _references(ctx)
    if ctx.train:
        count = int(ctx.rng.integers(1, min(MAX_TRAIN_REFERENCES, len(refs)) + 1))
        chosen = [int(i) for i in ctx.rng.choice(len(refs), count, replace=False)]
    else:
        chosen = [0]
    table = templates_for(ctx.task)
    q, a = ctx.pick(table.questions), ctx.pick(table.answers)
    reasoning = task_kind(ctx.task) == "reaseg"
    messages, objects = [], []
    for turn, i in enumerate(chosen):
        text, targets = refs[i]
        condition = _reasoning_condition(text) if reasoning else wrap(text.strip())
        asked = question(ctx.task, q, condition=condition)
        messages.append(ctx.first_user(asked) if turn == 0 else {"role": "user", "content": asked})
        messages.append({"role": "assistant", "content": answer(ctx.task, a, no_target=not targets)})
        objects.append(targets)
    return Conversation(
        messages=messages,
        mode="per_condition",
        condition_objects=objects,
        condition_labels=[-1] * len(objects),
        template=template_id(ctx.task, q, a),
    )


# -------------------------------------------------------------------------------------------------- GCG
def _grounded_caption(ctx: _Context) -> Conversation:
    meta = ctx.sample.meta
    caption, phrases = meta.get("caption"), meta.get("phrases") or []
    if not caption:
        raise ctx.fail("no caption")
    reply, objects, position = [], [], 0
    for phrase in sorted(phrases, key=lambda p: p["span"][0]):
        start, end = phrase["span"]
        if start < position:
            raise ctx.fail(f"phrase spans overlap at {phrase['span']}")
        targets = ctx.targets_of(phrase.get("object_ids", []))
        reply.append(caption[position:start])
        # A phrase none of whose objects is in the clip stays plain text: nothing to ground.
        reply.append(wrap(caption[start:end]) + SEG if targets else caption[start:end])
        if targets:
            objects.append(targets)
        position = end
    reply.append(caption[position:])
    q = ctx.pick(templates_for(ctx.task).questions)
    return Conversation(
        messages=[ctx.first_user(question(ctx.task, q)), {"role": "assistant", "content": "".join(reply)}],
        mode="per_condition",
        condition_objects=objects,
        condition_labels=[-1] * len(objects),
        template=template_id(ctx.task, q),
    )


# ---------------------------------------------------------------------------- interactive, visual grounded
def _prompt_frame(ctx: _Context, n: int) -> int | None:
    """First clip frame where object ``n`` has a mask (the frame its prompt is drawn on)."""
    targets = ctx.sample.targets
    for t in range(targets.masks.shape[1]):
        if targets.valid[n, t] and targets.masks[n, t].any():
            return t
    return None


def _region(ctx: _Context, n: int, kind: str) -> tuple[np.ndarray, int]:
    """Object ``n``'s prompt of type ``kind`` at the model input size, and its clip frame.

    Evaluation renders the stored prompt when the sample has one of that type on a frame of the clip;
    otherwise (training, or a source without stored prompts) the prompt is drawn from the target mask.
    """
    sample = ctx.sample
    canvas = tuple(sample.targets.masks.shape[-2:])  # the model input size (pixels may be source frames)
    stored = ctx.objects[n].get("prompt") or {}
    frames = sample.meta.get("frame_indices", [0])
    if not ctx.train and kind in stored and stored.get("frame", 0) in frames:
        t = frames.index(stored.get("frame", 0))
        drawn = render_prompt(
            kind,
            stored[kind],
            source_size=tuple(sample.original_size),
            content_size=tuple(sample.image_size),
            canvas_size=canvas,
        )
        return drawn, t
    t = _prompt_frame(ctx, n)
    h, w = sample.image_size
    mask = sample.targets.masks[n, t, :h, :w].numpy()
    geometry = prompt_geometry(mask, kind, ctx.rng)
    return render_prompt(kind, geometry, source_size=(h, w), canvas_size=canvas), t


def _regions(
    ctx: _Context, prompted: list[int], kinds: list[str]
) -> tuple[torch.Tensor, list[int], str | None]:
    masks = ctx.sample.targets.masks
    num_frames, height, width = masks.shape[1:]
    regions = torch.zeros(len(prompted), num_frames, height, width, dtype=torch.bool)
    frames = []
    for r, (n, kind) in enumerate(zip(prompted, kinds)):
        drawn, t = _region(ctx, n, kind)
        regions[r, t] = torch.from_numpy(drawn)
        frames.append(t)
    single = ctx.prompt_type if ctx.prompt_type is not None else (None if ctx.train else kinds[0])
    return regions, frames, single


def _kinds(ctx: _Context, count: int) -> list[str]:
    if ctx.prompt_type is not None:
        return [ctx.prompt_type] * count
    if ctx.train:
        return [PROMPT_TYPES[int(i)] for i in ctx.rng.integers(len(PROMPT_TYPES), size=count)]
    return [EVAL_PROMPT_TYPES.get(ctx.task, PROMPT_TYPES)[0]] * count


def _promptable(ctx: _Context) -> list[int]:
    candidates = [n for n in ctx.usable if _prompt_frame(ctx, n) is not None]
    if not candidates:
        raise ctx.fail("no object with a mask to prompt")
    return candidates


def _interactive(ctx: _Context) -> Conversation:
    candidates = _promptable(ctx)
    if ctx.train:
        count = int(ctx.rng.integers(1, min(MAX_TRAIN_REGIONS, len(candidates)) + 1))
        prompted = [int(n) for n in ctx.rng.choice(candidates, count, replace=False)]
    else:
        prompted = candidates
    regions = _regions(ctx, prompted, _kinds(ctx, len(prompted)))
    conditions = [wrap(REGION)] * len(prompted)
    return _set_conversation(ctx, conditions, [[n] for n in prompted], [-1] * len(prompted), regions)


def _object_tracks(ctx: _Context) -> Conversation:
    """Video object segmentation: every object is prompted by its own mask on its first visible frame of
    the clip (the first-frame mask of semi-supervised VOS), and its target is the whole track.

    The mask is the object's exact mask, not a blurred one: the benchmark gives the annotation itself.
    Evaluation renders the stored ``mask`` prompt when its frame is in the clip.
    """
    prompted = _promptable(ctx)
    sample = ctx.sample
    masks = sample.targets.masks
    regions = torch.zeros(len(prompted), *masks.shape[1:], dtype=torch.bool)
    frames = []
    for r, n in enumerate(prompted):
        stored = ctx.objects[n].get("prompt") or {}
        if not ctx.train and "mask" in stored:
            drawn, t = _region(ctx, n, "mask")
            regions[r, t] = torch.from_numpy(drawn)
        else:
            t = _prompt_frame(ctx, n)
            regions[r, t] = masks[n, t]
        frames.append(t)
    if ctx.prompt_type not in (None, "mask"):
        raise ctx.fail(f"object segmentation is prompted by masks, not {ctx.prompt_type!r}")
    conditions = [wrap(REGION)] * len(prompted)
    objects, labels = [[n] for n in prompted], [-1] * len(prompted)
    return _set_conversation(ctx, conditions, objects, labels, (regions, frames, "mask"))


def _visual_grounded(ctx: _Context) -> Conversation:
    candidates = _promptable(ctx)
    categories = sorted({ctx.labels[n] for n in candidates})
    if ctx.train:
        categories = [int(k) for k in ctx.rng.permutation(categories)]
    kinds = _kinds(ctx, len(categories))
    prompted = []
    for k, kind in zip(categories, kinds):
        members = [n for n in candidates if ctx.labels[n] == k]
        if ctx.train:
            prompted.append(int(ctx.rng.choice(members)))
        else:  # the first object that stores a prompt of this type, else the first object
            stored = [n for n in members if kind in (ctx.objects[n].get("prompt") or {})]
            prompted.append((stored or members)[0])
    regions = _regions(ctx, prompted, kinds)
    objects = [[n for n in ctx.usable if ctx.labels[n] == k] for k in categories]
    return _set_conversation(ctx, [wrap(REGION)] * len(categories), objects, categories, regions)


# ------------------------------------------------------------------------------------------------- chat
def _chat(ctx: _Context) -> Conversation:
    turns = ctx.sample.meta.get("conversation") or []
    roles = [t.get("role") for t in turns]
    if not turns or roles != ["user", "assistant"] * (len(turns) // 2) or len(turns) % 2:
        raise ctx.fail(
            f"a chat needs alternating user/assistant turns ending with a reply, got roles {roles}"
        )
    messages = [{"role": t["role"], "content": t["content"]} for t in turns]
    if IMAGE not in messages[0]["content"] and VIDEO not in messages[0]["content"]:
        messages[0] = ctx.first_user(messages[0]["content"])
    return Conversation(
        messages=messages, mode="chat", template=f"{ctx.task}/own", answer=messages[-1]["content"]
    )


_BUILDERS = {
    "genseg": _categories,
    "ovseg": _categories,
    "refseg": _referring,
    "reaseg": _referring,
    "gcgseg": _grounded_caption,
    "intseg": _interactive,
    "objseg": _object_tracks,
    "vgdseg": _visual_grounded,
    "chat": _chat,
}


# ---------------------------------------------------------------------------------------------- reading
def seg_conditions(conversation: Conversation) -> list[list[int]]:
    """Per ``<SEG>`` (in order over all messages), the indices of the conditions it decodes.

    ``"set"``: every condition so far (the one ``<SEG>`` comes after all of them); ``"per_condition"``:
    the nearest condition before it.
    """
    result, seen = [], 0
    for message in conversation.messages:
        for marker in _MARKERS.finditer(message["content"]):
            if marker.group() == P_START:
                seen += 1
            elif marker.group() == SEG:
                result.append(list(range(seen)) if conversation.mode == "set" else [seen - 1])
    return result


def check_conversation(conversation: Conversation) -> None:
    """Check a conversation against the ``Conversation`` contract.

    Raises:
        ValueError: naming the first problem (marker misuse, counts that disagree, ``<SEG>`` placement).
    """
    conv, problems = conversation, []
    roles = [m["role"] for m in conv.messages]
    if not roles or roles != (["user", "assistant"] * len(roles))[: len(roles)]:
        raise ValueError(f"messages must alternate user/assistant, user first; got {roles}")
    media = [
        (i, m.group()) for i, msg in enumerate(conv.messages) for m in _MARKERS.finditer(msg["content"])
        if m.group() in (IMAGE, VIDEO)
    ]  # fmt: skip
    if len(media) != 1 or media[0][0] != 0:
        problems.append(f"the media marker must appear once, in the first user turn; found {media}")
    spans, regions, segs_after, inside = 0, 0, [], False
    for msg in conv.messages:
        for marker in _MARKERS.finditer(msg["content"]):
            token = marker.group()
            if token == P_START:
                if inside:
                    problems.append("nested <p>")
                inside, spans = True, spans + 1
                segs_after.append(0)
            elif token == P_END:
                if not inside:
                    problems.append("</p> without <p>")
                inside = False
            elif token == REGION:
                regions += 1
                if not inside:
                    problems.append("<region> outside <p>..</p>")
            elif token == SEG:
                if msg["role"] != "assistant" or inside:
                    problems.append("<SEG> outside an assistant turn or inside <p>..</p>")
                if segs_after:
                    segs_after[-1] += 1
                elif conv.mode != "chat":
                    problems.append("<SEG> before any condition")
    if inside:
        problems.append("unclosed <p>")
    if not spans == len(conv.condition_objects) == len(conv.condition_labels):
        problems.append(
            f"{spans} conditions in the text, {len(conv.condition_objects)} condition_objects, "
            f"{len(conv.condition_labels)} condition_labels"
        )
    num_regions = 0 if conv.regions is None else int(conv.regions.shape[0])
    if not regions == num_regions == len(conv.region_frames):
        problems.append(
            f"{regions} <region> markers, {num_regions} regions, {len(conv.region_frames)} frames"
        )
    if conv.regions is not None:
        for r, t in enumerate(conv.region_frames):
            if not conv.regions[r, t].any():
                problems.append(f"region {r} is empty on its frame {t}")
    total = sum(segs_after)
    if conv.mode == "chat":
        if spans or total or num_regions:
            problems.append("a chat conversation has no conditions, <SEG> or regions")
        if conv.answer != conv.messages[-1]["content"]:
            problems.append("a chat conversation's answer is its last reply")
    elif conv.mode == "set":
        if not spans or total != 1 or segs_after[-1] != 1:
            problems.append(f"set mode needs one <SEG> after the last of >= 1 conditions, got {segs_after}")
    elif conv.mode == "per_condition":
        expected = [1 if objects else 0 for objects in conv.condition_objects]
        if segs_after != expected[: len(segs_after)] or len(segs_after) != len(expected):
            problems.append(
                f"<SEG> per condition {segs_after}, expected {expected} (one per condition with objects)"
            )
    else:
        problems.append(f"unknown mode {conv.mode!r}")
    if problems:
        raise ValueError("; ".join(problems))


__all__ = [
    "EVAL_PROMPT_TYPES",
    "ConversationError",
    "build_conversation",
    "check_conversation",
    "eval_generator",
    "seg_conditions",
]
