"""Referring segmentation run to run, and by the kind of expression: where stage 2 loses cIoU.

Scores stage-2 runs of ``fit +experiment=joint_image`` (e.g. the same stage-1 checkpoint, ``seed=0|1|2``) on
the held-out synthetic referring test set, each sample by its (first) expression's kind: one object by
its own words, one object by a relation to another ("the circle left of the square"), several objects, no
target. Per kind: cIoU (gRefCOCO's: sums of intersections over sums of unions, a no-target expression
answered with a mask adds that mask to the union) and the kind's share of the whole union, so the kinds'
weight in the overall cIoU shows. Same generated replies and mask choice as the runs' own ``test``.

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
    """``kind -> {samples, intersection, union}`` of one run's last checkpoint."""
    cfg = compose_config("joint_image", [f"paths.data_dir={data_dir}", "model.stage1_checkpoint=null"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    module = instantiate(cfg.model)
    module.configure_model()
    module.eval().load_trained(load_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    evaluator = module.evaluator
    sums = {kind: {"samples": 0, "intersection": 0, "union": 0} for kind in KINDS}
    loader = dict(zip(datamodule.test_source_names, datamodule.test_dataloader()))[SOURCE]
    for batch in loader:
        batch = batch.to(module.device)
        generator = torch.Generator().manual_seed(module.hparams.eval_seed)
        with torch.no_grad():
            out, replies = module.net.generate(batch, module.hparams.max_new_tokens, generator)
        own = evaluator._own_masks(batch, out)
        for b, conversation in enumerate(batch.conversations):
            objects = conversation.condition_objects[0]
            text = next(m["content"] for m in conversation.messages if m["role"] == "user")
            target = evaluator._union(batch, b, objects)
            pred = own.get((b, 0), evaluator._empty(batch, b))
            target, pred = evaluator._scored(batch, b, target), evaluator._scored(batch, b, pred)
            kind = sums[expression_kind(objects, text)]
            kind["samples"] += 1
            kind["intersection"] += int((pred & target).sum())
            kind["union"] += int((pred | target).sum())
    return sums


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
        sums = score(run, args.data_dir)
        total_i = sum(s["intersection"] for s in sums.values())
        total_u = sum(s["union"] for s in sums.values())
        kinds = {
            kind: {
                "samples": s["samples"],
                "ciou": s["intersection"] / s["union"] if s["union"] else None,
                "union_share": s["union"] / total_u if total_u else None,
            }
            for kind, s in sums.items()
        }
        runs.append(
            {
                "label": label,
                "run": str(run),
                "ciou": total_i / total_u,
                "kinds": kinds,
                "test": _own_test(run),
            }
        )
        print(label, round(total_i / total_u, 4), {k: v["ciou"] for k, v in kinds.items()}, flush=True)
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
