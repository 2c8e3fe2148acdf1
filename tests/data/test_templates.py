"""Templates: several wordings per task, conditions wrapped, one <SEG> per answer, none in no-target replies."""

from __future__ import annotations

import re

import pytest

from x2sam_lightning.data.templates import (
    TEMPLATES,
    answer,
    question,
    task_kind,
    template_id,
    templates_for,
    wrap,
)
from x2sam_lightning.special_tokens import IMAGE, P_END, P_START, REGION, SEG, VIDEO

SET_KINDS = ("genseg", "ovseg", "intseg", "objseg", "vgdseg")
ONE_KINDS = ("refseg", "reaseg")


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_every_task_has_several_wordings_without_stray_markers(kind):
    table = TEMPLATES[kind]
    assert len(table.questions) >= 4 and len(set(table.questions)) == len(table.questions)
    for wording in table.questions:
        assert "image" not in wording and "video" not in wording  # "{media}": one table for both
        assert not any(m in wording for m in (P_START, P_END, SEG, REGION, IMAGE, VIDEO))
        assert ("{conditions}" in wording) == (kind in SET_KINDS)
        assert ("{condition}" in wording) == (kind in ONE_KINDS)
    if kind == "gcgseg":
        assert not table.answers  # the caption is the answer
        return
    assert len(table.answers) >= 4
    assert all(a.count(SEG) == 1 and P_START not in a for a in table.answers)
    if kind in ONE_KINDS:
        assert len(table.no_target) >= 4 and all(SEG not in a for a in table.no_target)


@pytest.mark.parametrize("task", ["img_genseg", "img_ovseg", "img_intseg", "img_vgdseg", "vid_vgdseg"])
def test_set_questions_wrap_every_condition(task):
    conditions = [
        wrap(REGION if task.endswith(("intseg", "vgdseg")) else name) for name in ("person", "tree")
    ]
    for index in range(len(templates_for(task).questions)):
        text = question(task, index, conditions=conditions)
        assert re.findall(f"{re.escape(P_START)}(.*?){re.escape(P_END)}", text) == [
            c[len(P_START) : -len(P_END)] for c in conditions
        ]
        assert ("image" if task.startswith("vid_") else "video") not in text


def test_referring_and_reasoning_questions_and_answers():
    text = question("img_refseg", 0, condition=wrap("the right man"))
    assert text == "Please identify and segment <p>the right man</p> in this image."
    # Videos open with the paper's video example (Table 10), the wording evaluation uses; the image one
    # follows it.
    assert question("vid_refseg", 0, condition=wrap("the right man")) == (
        "What is <p>the right man</p> in this video? Please output the corresponding segmentation mask."
    )
    assert question("vid_refseg", 1, condition=wrap("the right man")) == (
        "Please identify and segment <p>the right man</p> in this video."
    )
    assert len(templates_for("vid_refseg").questions) == len(templates_for("img_refseg").questions)
    assert question("img_reaseg", 0, condition=wrap("What can be used to contact others") + "?") == (
        "<p>What can be used to contact others</p>? Please segment the image."
    )
    assert answer("img_refseg", 1) == "It is <SEG>."
    assert SEG not in answer("img_refseg", 1, no_target=True) and "image" in answer(
        "img_refseg", 0, no_target=True
    )
    assert answer("img_genseg", 5) == answer("img_genseg", 1)  # indices wrap around
    with pytest.raises(ValueError, match="no-target"):
        answer("img_genseg", 0, no_target=True)
    assert (
        template_id("img_refseg", 3, 1) == "img_refseg/q3/a1"
        and template_id("img_gcgseg", 2) == "img_gcgseg/q2"
    )
    assert task_kind("vid_gcgseg") == "gcgseg"
    with pytest.raises(KeyError, match="no templates"):
        templates_for("vid_pose")
