"""Instruction and answer wordings per task (paper Table 10 and X-SAM-style variants).

One table serves images and videos: a wording says ``{media}``, which becomes ``image`` for ``img_*``
tasks and ``video`` for ``vid_*`` tasks, and the table is keyed by the task's kind (the part after the
prefix: ``refseg``, ``gcgseg``, ...). Index 0 of every list is the paper's wording and the one evaluation
uses (:data:`EVAL_TEMPLATE`), so scores are reproducible; training draws any. Where the paper's video
example differs from its image one (referring: "What is <p>..</p> in this video? ..."), the video table
opens with it (:data:`VIDEO_EVAL_QUESTION`). ``objseg`` (video object segmentation, first-frame masks as
regions) has the paper's region wording first, as interactive segmentation has.

Placeholders (filled by :func:`question`):

- ``{conditions}``: the conditions, each already wrapped ``<p>..</p>``, joined with ", " (set tasks:
  generic, open-vocabulary, interactive, visual grounded);
- ``{condition}``: one wrapped condition (referring; reasoning, where it carries its own final "?" or "."
  after ``</p>``, as the paper writes ``<p>What can be used ...</p>?``);
- ``{media}``: "image" or "video".

Answers carry the ``<SEG>`` markers (one per answer: a set answer decodes every condition, a referring
answer its one condition); ``no_target`` answers (referring, reasoning) carry none. GCG has no answer
wordings: its answer is the caption with the phrases marked (see ``conversations.py``). Chat uses each
sample's own question and answer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from x2sam_lightning.special_tokens import P_END, P_START, SEG

#: The wording index evaluation uses for every task.
EVAL_TEMPLATE = 0


@dataclass(frozen=True)
class TaskTemplates:
    """The wordings of one task kind.

    Attributes:
        questions: user turns with ``{media}`` and ``{conditions}`` or ``{condition}``.
        answers: assistant turns with ``<SEG>`` (empty for GCG: the caption is the answer).
        no_target: replies to a condition that matches nothing (no ``<SEG>``).
    """

    questions: tuple[str, ...]
    answers: tuple[str, ...] = ()
    no_target: tuple[str, ...] = ()


_SET_ANSWERS = (
    f"Sure, {SEG}.",
    f"Sure, here are the segmentation masks: {SEG}.",
    f"Here is the segmentation: {SEG}.",
    f"{SEG}.",
)
_ONE_ANSWERS = (
    f"Sure, {SEG}.",
    f"It is {SEG}.",
    f"Sure, it is {SEG}.",
    f"Sure, the segmentation result is {SEG}.",
)
_NO_TARGET = (
    "There is no such object in the {media}.",
    "Sorry, nothing in this {media} matches that description.",
    "I cannot find it in the {media}.",
    "No object in the {media} fits that description.",
)

TEMPLATES: dict[str, TaskTemplates] = {
    "genseg": TaskTemplates(
        questions=(
            "Can you segment the {media} based on the following categories: {conditions}? "
            "Please output the segmentation masks.",
            "Please segment the {media} according to these categories: {conditions}.",
            "Segment every region of the {media} that belongs to one of these categories: {conditions}.",
            "What are the segmentation masks of {conditions} in this {media}?",
            "Could you output segmentation masks for the {media} with the categories {conditions}?",
        ),
        answers=_SET_ANSWERS,
    ),
    "ovseg": TaskTemplates(
        questions=(
            "Can you provide segmentation masks for this {media} based on these categories: {conditions}? "
            "Please provide the segmentation masks.",
            "Could you create segmentation masks for this {media} according to the specified categories: "
            "{conditions}? Please create the segmentation masks.",
            "Please find and segment the following categories in the {media}: {conditions}.",
            "Which regions of the {media} show {conditions}? Please output the segmentation masks.",
        ),
        answers=_SET_ANSWERS,
    ),
    "refseg": TaskTemplates(
        questions=(
            "Please identify and segment {condition} in this {media}.",
            "What is {condition} in this {media}? Please output the corresponding segmentation mask.",
            "Can you segment {condition} in this {media}?",
            "Please output the segmentation mask of {condition}.",
            "Where is {condition} in the {media}? Please respond with a segmentation mask.",
        ),
        answers=_ONE_ANSWERS,
        no_target=_NO_TARGET,
    ),
    "reaseg": TaskTemplates(
        questions=(
            "{condition} Please segment the {media}.",
            "{condition} Please output the segmentation mask.",
            "{condition} Please respond with the segmentation mask.",
            "Look at the {media}. {condition} Please segment the answer.",
        ),
        answers=_ONE_ANSWERS,
        no_target=_NO_TARGET,
    ),
    "gcgseg": TaskTemplates(
        questions=(
            "Can you provide a brief description of this {media}? Please output interleaved segmentation "
            "masks for the corresponding phrases.",
            "Could you give me a brief explanation of this {media}? Please respond with interleaved "
            "segmentation masks for the corresponding phrases.",
            "Please describe the {media} briefly, with a segmentation mask for each object you mention.",
            "Briefly, what is in this {media}? Please ground the phrases of your answer with "
            "segmentation masks.",
        ),
    ),
    "intseg": TaskTemplates(
        questions=(
            "Can you segment the {media} based on the following regions: {conditions}? "
            "Please output the corresponding segmentation mask.",
            "Could you create segmentation masks for this {media} according to the specified regions: "
            "{conditions}? Please create the segmentation masks.",
            "Please segment the objects marked by these regions: {conditions}.",
            "Which objects do the regions {conditions} point at? Please output their segmentation masks.",
        ),
        answers=_SET_ANSWERS,
    ),
    "objseg": TaskTemplates(
        questions=(
            "Can you segment the {media} based on the following regions: {conditions}? "
            "Please output the corresponding segmentation mask.",
            "Please track the objects marked by these regions through the {media}: {conditions}.",
            "Could you segment the objects given by {conditions} in every frame of the {media}?",
            "Follow the objects in the regions {conditions} through the {media} and output their "
            "segmentation masks.",
        ),
        answers=_SET_ANSWERS,
    ),
    "vgdseg": TaskTemplates(
        questions=(
            "Can you provide segmentation masks for this {media} based on these regions: {conditions}? "
            "Please provide the segmentation masks.",
            "Could you output segmentation masks for this {media} that highlight the following regions: "
            "{conditions}? Please output the segmentation masks.",
            "Please segment every object in the {media} of the same kind as the objects in these regions: "
            "{conditions}.",
            "Find all objects like the ones marked by {conditions} in this {media} and segment them.",
        ),
        answers=_SET_ANSWERS,
    ),
}


#: Where the paper's video example (Table 10) differs from its image one: the index of the question
#: wording that opens the table for ``vid_*`` tasks (and so is the one evaluation uses for videos).
VIDEO_EVAL_QUESTION = {"refseg": 1}  # "What is <p>the right man</p> in this video? Please output ..."


def task_kind(task: str) -> str:
    """``"img_refseg"`` -> ``"refseg"`` (the table key)."""
    prefix, _, kind = task.partition("_")
    if prefix not in ("img", "vid") or not kind:
        raise ValueError(f"task id {task!r} is not of the form img_<kind> or vid_<kind>")
    return kind


def media_word(task: str) -> str:
    """``"image"`` for ``img_*`` tasks, ``"video"`` for ``vid_*`` tasks."""
    return "video" if task.startswith("vid_") else "image"


def templates_for(task: str) -> TaskTemplates:
    """The wordings of a task id such as ``img_refseg`` or ``vid_refseg``."""
    kind = task_kind(task)
    if kind not in TEMPLATES:
        raise KeyError(f"no templates for task {task!r} (kinds with templates: {', '.join(TEMPLATES)})")
    table = TEMPLATES[kind]
    first = VIDEO_EVAL_QUESTION.get(kind) if media_word(task) == "video" else None
    if first:  # the paper's video wording first; the others keep their order
        questions = (table.questions[first], *table.questions[:first], *table.questions[first + 1 :])
        table = replace(table, questions=questions)
    return table


def wrap(condition: str) -> str:
    """``"red circle"`` -> ``"<p>red circle</p>"``."""
    return f"{P_START}{condition}{P_END}"


def question(
    task: str, index: int, *, conditions: list[str] | None = None, condition: str | None = None
) -> str:
    """Fill question wording ``index`` of ``task``.

    Args:
        task: task id.
        index: wording index.
        conditions: already wrapped conditions (set tasks).
        condition: one already wrapped condition (referring / reasoning).
    """
    wording = templates_for(task).questions[index]
    return wording.format(
        media=media_word(task), conditions=", ".join(conditions or []), condition=condition or ""
    )


def answer(task: str, index: int, *, no_target: bool = False) -> str:
    """Answer wording ``index`` of ``task`` (a no-target reply when ``no_target``)."""
    table = templates_for(task)
    options = table.no_target if no_target else table.answers
    if not options:
        raise ValueError(f"task {task!r} has no {'no-target ' if no_target else ''}answer wordings")
    return options[index % len(options)].format(media=media_word(task))


def template_id(task: str, q: int, a: int | None = None) -> str:
    """``"img_refseg/q3/a1"``: what :attr:`Conversation.template` records."""
    return f"{task}/q{q}" + ("" if a is None else f"/a{a}")


__all__ = [
    "EVAL_TEMPLATE",
    "TEMPLATES",
    "VIDEO_EVAL_QUESTION",
    "TaskTemplates",
    "answer",
    "media_word",
    "question",
    "task_kind",
    "template_id",
    "templates_for",
    "wrap",
]
