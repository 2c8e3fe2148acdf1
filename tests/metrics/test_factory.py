"""Task -> MetricCollection factory: every registry entry whose module exists builds and computes."""

from __future__ import annotations

import importlib

import pytest
import torch

from x2sam_lightning.metrics.factory import (
    TASK_METRICS,
    VARIANTS,
    TaskMetricCollection,
    build_task_metrics,
    known_tasks,
    to_floats,
)

PAPER_TASKS = [
    "img_genseg", "img_ovseg", "img_refseg", "img_reaseg", "img_gcgseg", "img_intseg", "img_vgdseg",
    "vid_genseg", "vid_ovseg", "vid_refseg", "vid_reaseg", "vid_gcgseg", "vid_objseg", "vid_vgdseg",
]  # fmt: skip

# constructor arguments the members need in a test (categories of a toy dataset)
TEST_KWARGS = {
    "panoptic": {"things": [1, 2], "stuffs": [3]},
    "vpq": {"things": [1, 2], "stuffs": [3]},
    "semantic": {"num_classes": 4},
    "gcg": {"on_missing_java": "nan"},  # builds without Java too (METEOR / CIDEr then NaN)
}

ENTRIES = [(task, spec) for task, specs in TASK_METRICS.items() for spec in specs]
ENTRIES += [(f"{task}:{variant}", spec) for (task, variant), specs in VARIANTS.items() for spec in specs]


def test_every_paper_task_is_registered():
    assert known_tasks() == PAPER_TASKS


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(KeyError, match="img_refseg"):
        build_task_metrics("img_nothing")
    with pytest.raises(KeyError, match="grefcoco"):
        build_task_metrics("img_refseg", variant="nope")
    with pytest.raises(KeyError, match="no metric named"):
        build_task_metrics("img_refseg", panoptic={})


@pytest.mark.parametrize(("task", "spec"), ENTRIES, ids=[f"{t}-{s.name}" for t, s in ENTRIES])
def test_registry_entry_imports_and_builds(task, spec):
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError as error:
        if error.name != spec.module:
            raise
        pytest.skip(f"{spec.module} not written yet")
    if not hasattr(module, spec.cls):
        pytest.fail(f"{spec.module} has no class {spec.cls} (update the registry)")
    metric = spec.load()(**{**spec.kwargs, **TEST_KWARGS.get(spec.name, {})})
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
