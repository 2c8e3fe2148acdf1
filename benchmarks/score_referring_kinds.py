"""Referring segmentation run to run, and by the kind of expression: where stage 2 loses cIoU.

Scores stage-2 runs of ``fit +experiment=joint_image`` (e.g. the same stage-1 checkpoint, ``seed=0|1|2``) on
the held-out synthetic referring test set, each sample by its (first) expression's kind: one object by
its own words, one object by a relation to another ("the circle left of the square"), several objects, no
target. Per kind: cIoU (gRefCOCO's: sums of intersections over sums of unions, a no-target expression
answered with a mask adds that mask to the union) and the kind's share of the whole union, so the kinds'
weight in the overall cIoU shows. Each sample (a batch of one) is generated and scored by the module's own
evaluator into its kind's gRefCOCO metric, as the runs' own ``test`` scores the split.

    python benchmarks/score_referring_kinds.py --runs RUN_DIR [RUN_DIR ...] --data-dir DATA

``RUN_DIR`` is a stage-2 run folder (``<output_dir>/joint_image/fit/<date>``, holding
``checkpoints/last.ckpt`` and the ``results.json`` its test pass wrote). Writes
``benchmarks/results/referring_kinds.{json,md}``. Not a ``bench_*`` script: it scores runs made
beforehand. The split by kind is defined here (a diagnosis: no setting is chosen on it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
from pathlib import Path

import torch
from hydra.utils import instantiate

from x2sam_lightning.config import compose_config
from x2sam_lightning.data.synthetic.language import RELATIONS
from x2sam_lightning.lightning.checkpoints import load_checkpoint
from x2sam_lightning.metrics.grefcoco import GRefCOCOIoU

HERE = Path(__file__).parent
SOURCE = "synthetic_img_refseg_test"
KINDS = ("own words", "relation", "several objects", "no target")
#: Other tasks of the runs' own test pass shown beside referring (task, metric).
BESIDE = [("img_reaseg", "cIoU"), ("img_genseg", "PQ"), ("img_gcgseg", "AP50"), ("img_vgdseg", "AP50 point")]
_RELATION = re.compile("|".join(rf"\b{r}\b" for r in RELATIONS))


def expression_kind(objects: list[int], text: str) -> str:
    if not objects:
        return "no target"
    if len(objects) > 1:
        return "several objects"
    return "relation" if _RELATION.search(text) else "own words"


def score(run_dir: Path, data_dir: str) -> dict[str, dict[str, float]]:
    """``kind -> {samples, ciou, union}`` of one run's last checkpoint: each sample (a batch of one) goes
    through the module's own evaluator into its kind's metric collection (gRefCOCO's)."""
    overrides = [f"paths.data_dir={data_dir}", "model.stage1_checkpoint=null"]
    overrides += ["data.batch_size=1", "data.image_batch_multiplier=1"]  # a batch: one sample
    cfg = compose_config("joint_image", overrides)
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    module = instantiate(cfg.model)
    module.configure_model()
    module.eval().load_trained(load_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    source = datamodule.test_sources[SOURCE]
    metrics = {kind: module.source_metrics(source.task, source) for kind in KINDS}
    counts = dict.fromkeys(KINDS, 0)
    loader = dict(zip(datamodule.test_source_names, datamodule.test_dataloader()))[SOURCE]
    for batch in loader:
        batch = batch.to(module.device)
        generator = torch.Generator().manual_seed(module.hparams.eval_seed)
        with torch.no_grad():
            out, replies = module.net.generate(batch, module.hparams.max_new_tokens, generator)
        if batch.batch_size != 1:
            raise RuntimeError(f"expected batches of one sample, got {batch.batch_size}")
        conversation = batch.conversations[0]
        text = next(m["content"] for m in conversation.messages if m["role"] == "user")
        kind = expression_kind(conversation.condition_objects[0], text)
        module.evaluator(batch, out, replies, metrics[kind])
        counts[kind] += 1
    results = {}
    for kind, collection in metrics.items():
        grefcoco = next(m for m in collection.values() if isinstance(m, GRefCOCOIoU))
        results[kind] = {
            "samples": counts[kind],
            "ciou": float(grefcoco.compute()["ciou"]) if counts[kind] else None,
            "union": float(grefcoco.union),
        }
    return results


def _own_test(run_dir: Path) -> dict[str, float | None]:
    rows = json.loads((run_dir / "results.json").read_text())["rows"]
    found = {(r["task"], name): value for r in rows for name, value in r["metrics"].items()}
    keys = [("img_refseg", "cIoU"), ("img_refseg", "gIoU"), *BESIDE]
    return {f"{task} {metric}": found.get((task, metric)) for task, metric in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, nargs="+", type=Path, help="stage-2 run folders")
    parser.add_argument("--labels", nargs="+", help="a label per run (default: the folder names)")
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()
    labels = args.labels or [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        parser.error("give one label per run")
    runs = []
    for label, run in zip(labels, args.runs):
        kinds = score(run, args.data_dir)
        total_u = sum(k["union"] for k in kinds.values())
        for k in kinds.values():
            k["union_share"] = k.pop("union") / total_u if total_u else None
        # The kinds' sums make the whole split's cIoU (each kind's = its intersection / its union).
        ciou = sum((k["ciou"] or 0.0) * k["union_share"] for k in kinds.values() if k["union_share"])
        runs.append(
            {
                "label": label,
                "run": str(run),
                "ciou": ciou,
                "kinds": kinds,
                "test": _own_test(run),
            }
        )
        print(label, round(ciou, 4), {k: v["ciou"] for k, v in kinds.items()}, flush=True)
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "source": SOURCE,
        "runs": runs,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "referring_kinds.json").write_text(json.dumps(result, indent=2) + "\n")
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    own_keys = list(runs[0]["test"])
    lines = [
        "# Referring segmentation run to run and by kind of expression (experiment joint_image)",
        "",
        f"{result['date']}; {result['machine']}; `benchmarks/score_referring_kinds.py`. Stage-2 runs of "
        "`fit +experiment=joint_image`, test split (held out). First the runs' own test pass (percent), then "
        f"`{SOURCE}` by the kind of each sample's expression: samples, cIoU (percent; gRefCOCO's sums) and "
        "the kind's share of the whole union (percent); its `all` rows, from the same sums, recompute each "
        "run's own test cIoU. The split by kind is defined here.",
        "",
        "| run | " + " | ".join(own_keys) + " |",
        "|---|" + "---:|" * len(own_keys),
    ]
    for r in runs:
        values = [r["test"][k] for k in own_keys]
        lines.append(
            f"| {r['label']} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in values) + " |"
        )
    lines += ["", "| run | kind | samples | cIoU | share of the union |", "|---|---|---:|---:|---:|"]
    for r in runs:
        for kind, k in r["kinds"].items():
            lines.append(
                f"| {r['label']} | {kind} | {k['samples']} | {pct(k['ciou'])} | {pct(k['union_share'])} |"
            )
        lines.append(
            f"| {r['label']} | all | {sum(k['samples'] for k in r['kinds'].values())} | {pct(r['ciou'])} | 100 |"
        )
    (HERE / "results" / "referring_kinds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
