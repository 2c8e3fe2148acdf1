"""The mask memory against none on the held-out synthetic videos, overall and on the clips where it should
matter (an object passes behind another or leaves the frame and comes back).

Scores two stage-2 runs of ``fit +experiment=joint`` that differ only in ``model/mask_memory`` (``tiny`` and
``none``) and their step count is the same: every video test set of referring, reasoning and object
segmentation, one video per batch, each video's metric update routed by the clip's ``tags`` (written by the
synthetic recipe from the masks): ``occluded or re-appearing`` (``occlusion`` or ``reappearance``) and
``neither``. Same evaluation code as the runs' own ``test`` (generated replies, the metrics factory).

    python benchmarks/score_memory_ablation.py --memory RUN_DIR --none RUN_DIR --data-dir DATA

``RUN_DIR`` is a stage-2 run folder (``<output_dir>/joint/fit/<date>``, holding ``checkpoints/last.ckpt``).
Writes ``benchmarks/results/memory_ablation.{json,md}``. Not a ``bench_*`` script: it scores two runs made
beforehand, so ``nox -s bench`` does not run it. Protocols: J&F as DAVIS (object segmentation) and
Ref-YouTube-VOS (referring, reasoning) score it; the split by tags is defined here.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from x2sam_lightning.config import compose_config
from x2sam_lightning.lightning.checkpoints import load_checkpoint
from x2sam_lightning.metrics.factory import to_floats

HERE = Path(__file__).parent
SOURCES = ("synthetic_vid_refseg_test", "synthetic_vid_reaseg_test", "synthetic_vid_objseg_test")
SUBSETS = ("all", "occluded or re-appearing", "neither")
HEADLINE = {"vid_refseg": "J&F", "vid_reaseg": "J&F", "vid_objseg": "J&F-Mean"}


def _subset(tags: list[str]) -> str:
    return "occluded or re-appearing" if {"occlusion", "reappearance"} & set(tags) else "neither"


def score(
    run_dir: Path, memory: str, data_dir: str, limit: int | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """``source -> subset -> metrics`` of one run's last checkpoint on the video test sets (``limit``: the
    first videos of each only, for a plumbing check)."""
    overrides = [f"paths.data_dir={data_dir}", "model.stage1_checkpoint=null", f"model/mask_memory={memory}"]
    cfg = compose_config("joint", overrides + ["data.batch_size=1"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    module = instantiate(cfg.model).eval()
    module.load_trained(load_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    results = {}
    for name, loader in zip(datamodule.test_source_names, datamodule.test_dataloader()):
        if name not in SOURCES:
            continue
        source = datamodule.test_sources[name]
        metrics = {subset: module.source_metrics(source.task, source) for subset in SUBSETS}
        counts = dict.fromkeys(SUBSETS, 0)
        for batch in itertools.islice(loader, limit):
            batch = batch.to(module.device)
            generator = torch.Generator().manual_seed(module.hparams.eval_seed)
            with torch.no_grad():
                out, replies = module.net.generate(batch, module.hparams.max_new_tokens, generator)
            for subset in ("all", _subset(batch.meta[0].get("tags", []))):
                module.evaluator(batch, out, replies, metrics[subset])
                counts[subset] += 1
        results[name] = {
            subset: {"videos": counts[subset], **to_floats(metrics[subset].compute())} for subset in SUBSETS
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", required=True, type=Path, help="run folder trained with the memory")
    parser.add_argument("--none", required=True, type=Path, help="run folder trained without it")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--limit", type=int, default=None, help="videos per source (plumbing only)")
    args = parser.parse_args()
    start = time.perf_counter()
    runs = {
        "tiny": score(args.memory, "tiny", args.data_dir, args.limit),
        "none": score(args.none, "none", args.data_dir, args.limit),
    }
    steps = {
        name: int(
            torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
                "global_step"
            ]
        )
        for name, run in (("tiny", args.memory), ("none", args.none))
    }
    rows = []
    for source in SOURCES:
        task = source.replace("synthetic_", "").replace("_test", "")
        key = HEADLINE[task]
        for subset in SUBSETS:
            memory, none = runs["tiny"][source][subset], runs["none"][source][subset]
            rows.append(
                {
                    "source": source,
                    "subset": subset,
                    "videos": memory["videos"],
                    "memory": memory.get(key),
                    "none": none.get(key),
                }
            )
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "runs": {"tiny": str(args.memory), "none": str(args.none)},
        "steps": steps,
        "seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
        "all_metrics": runs,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "memory_ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    fmt = lambda v: "-" if v is None or v != v else f"{100 * v:.1f}"  # noqa: E731
    lines = [
        "# Mask memory ablation on the held-out synthetic videos (experiment joint)",
        "",
        f"{result['date']}; {result['machine']}; `benchmarks/score_memory_ablation.py`. Two stage-2 runs of "
        f"`fit +experiment=joint` from the same stage-1 checkpoint and the same `trainer.max_steps` (the "
        f"checkpoints' global_step {steps['tiny']} and {steps['none']}): `model/mask_memory=tiny` (the "
        "experiment's default) and `none`. J&F (percent) on the test "
        "split's videos, all of them and split by what the clip shows (the synthetic recipe's tags, "
        "computed from the masks; the split is defined here).",
        "",
        "| source | clips | videos | memory (tiny) | none | difference |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        diff = None if r["memory"] is None or r["none"] is None else r["memory"] - r["none"]
        lines.append(
            f"| {r['source']} | {r['subset']} | {r['videos']} | {fmt(r['memory'])} | {fmt(r['none'])} | "
            f"{'-' if diff is None else f'{100 * diff:+.1f}'} |"
        )
    (HERE / "results" / "memory_ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
