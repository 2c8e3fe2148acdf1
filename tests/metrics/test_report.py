"""Results table writer: paper-style rows in markdown and JSON."""

from __future__ import annotations

import json

from x2sam_lightning.metrics.factory import known_tasks
from x2sam_lightning.metrics.report import HEADLINE_METRICS, headline_row, write_results_table


def test_every_task_has_headline_metrics():
    # every benchmark task, plus stage 1's class-agnostic rows (images, videos)
    assert set(HEADLINE_METRICS) == set(known_tasks()) | {"agnostic_seg", "agnostic_vid"}


def test_headline_row_percent_one_decimal_and_key_matching():
    row = headline_row(
        "img_gcgseg", {"gcg/meteor": 0.16234, "CIDEr": 0.5912, "ap50": 0.30449, "miou": 0.6666}
    )
    assert row == {"METEOR": 16.2, "CIDEr": 59.1, "AP50": 30.4, "mIoU": 66.7, "Recall": None}


def test_write_results_table(tmp_path):
    results = {
        "img_refseg": {"ciou": 0.8012, "giou": 0.8234},
        "img_genseg": {"pq": 0.5551, "miou": float("nan"), "map": 0.46, "pq_th": 0.6},
    }
    md_path, json_path = write_results_table(results, tmp_path / "out", {"img_refseg": "RefCOCO val"})
    lines = md_path.read_text().splitlines()
    assert lines[0] == "| Task | Benchmark | Metric 1 | Metric 2 | Metric 3 |"
    assert lines[2] == "| img_refseg | RefCOCO val | cIoU 80.1 | gIoU 82.3 |  |"
    assert lines[3] == "| img_genseg | img_genseg | PQ 55.5 | mIoU - | mAP 46.0 |"
    data = json.loads(json_path.read_text())
    assert [row["task"] for row in data["rows"]] == ["img_refseg", "img_genseg"]
    assert data["rows"][1]["metrics"] == {"PQ": 55.5, "mIoU": None, "mAP": 46.0}
    assert data["rows"][1]["raw"]["pq_th"] == 0.6
    assert data["rows"][1]["raw"]["miou"] is None


def test_unknown_task_shows_all_scalars(tmp_path):
    md_path, _ = write_results_table({"custom": {"score": 0.5}}, tmp_path)
    assert "| custom | custom | score 50.0 |" in md_path.read_text()
