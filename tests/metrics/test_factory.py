"""Task -> MetricCollection factory: every registry entry whose module exists builds and computes."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from x2sam_lightning.metrics.factory import (
    TaskMetricCollection,
    build_task_metrics,
    known_tasks,
    registry,
    to_floats,
)

PAPER_TASKS = [
    "img_genseg", "img_ovseg", "img_refseg", "img_reaseg", "img_gcgseg", "img_intseg", "img_vgdseg",
    "img_chat", "vid_genseg", "vid_ovseg", "vid_refseg", "vid_reaseg", "vid_gcgseg", "vid_objseg",
    "vid_vgdseg", "vid_chat",
]  # fmt: skip

# constructor arguments the members need in a test (categories of a toy dataset)
TEST_KWARGS = {
    "panoptic": {"things": [1, 2], "stuffs": [3]},
    "vpq": {"things": [1, 2], "stuffs": [3]},
    "semantic": {"num_classes": 4},
}

ENTRIES = [(task, name, node) for task, members in registry().items() for name, node in members.items()]


def test_every_paper_task_is_registered():
    assert known_tasks() == PAPER_TASKS


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(KeyError, match="img_refseg"):
        build_task_metrics("img_nothing")
    with pytest.raises(KeyError, match="grefcoco"):
        build_task_metrics("img_refseg", variant="nope")
    with pytest.raises(KeyError, match="no metric named"):
        build_task_metrics("img_refseg", panoptic={})


@pytest.mark.parametrize(("task", "name", "node"), ENTRIES, ids=[f"{t}-{n}" for t, n, _ in ENTRIES])
def test_registry_entry_imports_and_builds(task, name, node):
    kwargs = TEST_KWARGS.get(name, {})
    metric = instantiate(node)(**kwargs)
    assert metric.higher_is_better is True
    assert metric.full_state_update is False


def test_referring_collection_computes_with_prefixes():
    collection = build_task_metrics("img_refseg")
    assert isinstance(collection, TaskMetricCollection)
    pred = torch.zeros(2, 4, 4, dtype=torch.bool)
    pred[0, :2] = True
    collection["referring"].update(pred, pred.long())
    out = to_floats(collection.compute())
    assert set(out) == {"ciou", "giou"}
    assert out["ciou"] == pytest.approx(1.0)

    gref = build_task_metrics("img_refseg", variant="grefcoco")
    gref["referring"].update(pred, pred)
    assert to_floats(gref.compute())["n_acc"] == 1.0


def test_member_kwargs_reach_the_constructor():
    collection = build_task_metrics("img_reaseg", reasoning={"exact": True})
    assert collection["reasoning"].exact is True
