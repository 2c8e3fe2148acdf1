"""Stage 2 on the embedded default: the README's first command, every task's held-out numbers beside
their value at initialisation and a trivial baseline, and whether language is really used.

``--experiment joint`` (images and videos, the README's first command) or ``joint_image`` (images only,
the default of this script).

1. Runs ``python -m x2sam_lightning fit +experiment=<experiment>`` in a fresh output folder: stage 1 is
   trained first (``fit +experiment=agnostic``), then stage 2, then the test split is scored (wall time
   of the whole command, step counts of both stages).
2. Scores the test split with the trained model, with the stage-2 model at its initialisation (decoder
   and mask encoder from the stage-1 checkpoint, everything else untrained) and with the baselines of
   ``joint_baselines.py`` (trivial: inputs only; oracle masks: ground-truth masks, trivial labels),
   through the same evaluation code, and checks the trained scores against the command's own test pass.
3. Referring: cIoU with each sample's own expression and with expressions shuffled across the samples
   (each image paired with another sample's expression, scored against its own target).

Writes ``benchmarks/results/<experiment>.{json,md}``. ``--quick`` trains 60 + 60 steps (plumbing only);
``--reuse-fit`` scores the run already in ``--out-dir`` again (after an evaluation change);
``--trained-from-command`` takes the trained column from the command's own test pass instead of scoring
the trained model again (the same evaluation code; it saves one pass over every test set).
The test split is held out: no default, preset or step count was chosen on it.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from hydra.utils import instantiate

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from joint_baselines import Baseline, majority_answer  # noqa: E402

from x2sam_lightning.config import compose_config  # noqa: E402
from x2sam_lightning.lightning.checkpoints import load_checkpoint, load_stage1_into  # noqa: E402
from x2sam_lightning.metrics.factory import to_floats  # noqa: E402
from x2sam_lightning.metrics.report import headline_row  # noqa: E402


def _fit(experiment: str, data_dir: str, out_dir: str, extra: list[str]) -> tuple[float, str]:
    args = [sys.executable, "-m", "x2sam_lightning", "fit", f"+experiment={experiment}"]
    args += [f"paths.data_dir={data_dir}", f"paths.output_dir={out_dir}", "trainer.enable_progress_bar=false"]
    start = time.perf_counter()
    result = subprocess.run(args + extra, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"fit failed:\n{result.stderr[-4000:]}")
    return time.perf_counter() - start, result.stdout


def _score(module, datamodule, generate, transform=None, limit=None) -> dict[str, dict[str, float]]:
    """Every test source through ``generate(batch) -> (out, replies)`` and the module's evaluator, with
    the metrics (and benchmark variant) the trained run's ``test`` used; ``limit``: batches per source."""
    results = {}
    for name, loader in zip(datamodule.test_source_names, datamodule.test_dataloader()):
        source = datamodule.test_sources[name]
        metrics = module.source_metrics(source.task, source)
        # Model input as Lightning's transfer hook makes it (the loader ships uint8 frames).
        batches = [batch.to(module.device) for batch in itertools.islice(loader, limit)]
        if transform is not None:
            batches = transform(name, batches)
            if batches is None:
                continue
        for batch in batches:
            out, replies = generate(batch)
            module.evaluator(batch, out, replies, metrics)
        results[name] = to_floats(metrics.compute())
    return results


def _shuffled_expressions(name: str, batches: list):
    """Referring sources only: each sample gets another sample's conversation text (a derangement)."""
    if not name.startswith("synthetic_img_refseg"):
        return None
    conversations = [c for b in batches for c in b.conversations]
    if len(conversations) < 2:
        return None
    order = list(range(len(conversations)))
    rng = random.Random(0)
    while any(i == j for i, j in enumerate(order)):
        rng.shuffle(order)
    swapped, n = [], 0
    for batch in batches:
        mine = []
        for conversation in batch.conversations:
            mine.append(replace(conversation, messages=conversations[order[n]].messages))
            n += 1
        swapped.append(replace(batch, conversations=mine))
    return swapped


def _run_fit(args, extra: list[str], out_dir: str) -> dict:
    """The README's command, or (``--reuse-fit``) the record of an earlier run in ``out_dir``."""
    record_file = Path(out_dir) / "bench_fit.json"
    if args.reuse_fit:
        if not record_file.is_file():
            raise SystemExit(f"--reuse-fit: {record_file} is missing (run once without --reuse-fit)")
        return json.loads(record_file.read_text())
    data_existed = (Path(args.data_dir) / "synthetic").is_dir()
    wall, _ = _fit(args.experiment, args.data_dir, out_dir, extra)
    record = {"wall_seconds": round(wall, 1), "data_existed": data_existed, "extra": extra}
    record["date"] = datetime.date.today().isoformat()
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="joint_image", choices=("joint_image", "joint"))
    parser.add_argument("--quick", action="store_true", help="60 + 60 training steps (plumbing only)")
    parser.add_argument(
        "--trained-from-command",
        action="store_true",
        help="the trained column from the command's own test pass (no second scoring of the trained model)",
    )
    parser.add_argument(
        "--data-dir", default="data", help="where the synthetic data is (generated if absent)"
    )
    parser.add_argument("--out-dir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument(
        "--reuse-fit",
        action="store_true",
        help="score the run already in --out-dir again (evaluation or baselines changed, training did not)",
    )
    args = parser.parse_args()
    if args.reuse_fit and not args.out_dir:
        parser.error("--reuse-fit needs --out-dir")
    extra, limit = [], None
    if args.quick:
        stage1 = ["trainer.max_steps=60", "trainer.val_check_interval=60"]
        limit = 2
        extra = [
            "trainer.max_steps=60",
            "trainer.val_check_interval=60",
            f"trainer.limit_test_batches={limit}",
        ]
        extra.append("stage1_overrides=[" + ",".join(f"'{o}'" for o in stage1) + "]")
    experiment = args.experiment
    out_dir = args.out_dir or tempfile.mkdtemp(prefix=f"{experiment}_")
    fit = _run_fit(args, extra, out_dir)
    (stage2_dir,) = Path(out_dir, experiment, "fit").glob("*")
    command_test = json.loads((stage2_dir / "fit_metrics.json").read_text())
    checkpoint = load_checkpoint(stage2_dir / "checkpoints" / "last.ckpt")
    stage1_ckpt = checkpoint["x2sam_stage2"]["model_config"]["model"]["stage1_checkpoint"]
    cfg = compose_config(experiment, [f"paths.data_dir={args.data_dir}", "model.stage1_checkpoint=null"])
    stage1_cfg = compose_config("agnostic", list(cfg.get("stage1_overrides") or []))
    steps = {"stage 1": stage1_cfg.trainer.max_steps, "stage 2": cfg.trainer.max_steps}
    if args.quick:
        steps = {"stage 1": 60, "stage 2": 60}
    datamodule = instantiate(cfg.data)
    torch.manual_seed(cfg.seed)
    initial = instantiate(cfg.model).eval()
    load_stage1_into(initial.net.segmentor, stage1_ckpt, initial.hparams.stage1_parts)

    def generate_with(module):
        return lambda batch: module.net.generate(
            batch, module.hparams.max_new_tokens, torch.Generator().manual_seed(module.hparams.eval_seed)
        )

    with torch.no_grad():
        at_init = _score(initial, datamodule, generate_with(initial), limit=limit)
        answers = {
            task: majority_answer(_training_chat_answers(cfg, args.data_dir, task))
            for task in {s.task for s in datamodule.test_sources.values()} & {"img_chat", "vid_chat"}
        }
        trivial = _score(initial, datamodule, Baseline(initial.net, answers, "input"), limit=limit)
        oracle = _score(initial, datamodule, Baseline(initial.net, answers, "oracle"), limit=limit)
        model = instantiate(cfg.model).eval()
        model.load_trained(checkpoint)
        if args.trained_from_command:
            trained = {
                name: {
                    k.split("/", 2)[2]: v for k, v in command_test.items() if k.startswith(f"test/{name}/")
                }
                for name in datamodule.test_sources
            }
        else:
            trained = _score(model, datamodule, generate_with(model), limit=limit)
        shuffled = _score(model, datamodule, generate_with(model), _shuffled_expressions, limit)

    tasks = {name: s.task for name, s in datamodule.test_sources.items()}
    columns = {"init": at_init, "trivial": trivial, "oracle masks": oracle, "trained": trained}
    rows = []
    for name, task in tasks.items():
        cells = {column: headline_row(task, scores.get(name, {})) for column, scores in columns.items()}
        for label in cells["trained"]:
            rows.append(
                {"source": name, "task": task, "metric": label} | {c: cells[c].get(label) for c in columns}
            )
    # The command's own test pass against the re-scoring (the same evaluation code, unless --reuse-fit
    # follows a change of it): the metrics that differ by more than rounding.
    differing = sorted(
        f"{name}/{key}"
        for name in tasks
        for key, value in {
            k.split("/", 2)[2]: v for k, v in command_test.items() if k.startswith(f"test/{name}/")
        }.items()
        if key in trained.get(name, {})
        and not (value != value and trained[name][key] != trained[name][key])  # both NaN: equal
        and not abs(value - trained[name][key]) <= 1e-4
    )
    refseg = next(n for n in tasks if n.startswith("synthetic_img_refseg"))
    language = {"own": trained[refseg]["ciou"], "shuffled": shuffled[refseg]["ciou"]}
    result = {
        "date": fit["date"],
        "scored": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "command": f"python -m x2sam_lightning fit +experiment={experiment}"
        + (" " + " ".join(fit["extra"]) if fit["extra"] else ""),
        "wall_seconds": fit["wall_seconds"],
        "steps": steps,
        "rows": rows,
        "referring_ciou_language": language,
        "differs_from_command_test": differing,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{experiment}.json").write_text(json.dumps(result, indent=2) + "\n")
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    data = (
        "the synthetic data already existed"
        if fit["data_existed"]
        else "the synthetic data generated on the way"
    )
    lines = [
        "# Stage-2 (image tasks) training on the embedded default"
        if experiment == "joint_image"
        else "# Stage-2 training on the embedded default: images and videos (experiment joint)",
        "",
        f"Trained {result['date']}, scored {result['scored']}; machine: {result['machine']}. Command: "
        f"`{result['command']}` on a fresh output folder (stage 1 trained first, then stage 2, then the test "
        f"split; {data}). Script: `python benchmarks/bench_joint_image.py --experiment {experiment}`.",
        "",
        f"Wall time of the whole command: **{fit['wall_seconds'] / 60:.1f} min** for {steps['stage 1']} "
        f"stage-1 and {steps['stage 2']} stage-2 steps, the test split's scoring included.",
        "",
        "Test split (held out), percent, every column through the same evaluation code. *init*: the stage-2 "
        "model before its training (decoder and mask encoder from stage 1); *trivial*: a baseline from the "
        "model's inputs only; *oracle masks*: ground-truth masks with trivial labels (both defined in "
        "`benchmarks/joint_baselines.py`).",
        "",
        "| source | task | metric | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
        *[
            f"| {r['source']} | {r['task']} | {r['metric']} | {fmt(r['init'])} | {fmt(r['trivial'])} | "
            f"{fmt(r['oracle masks'])} | **{fmt(r['trained'])}** |"
            for r in rows
        ],
        "",
        f"Language is used: referring cIoU with each sample's own expression {100 * language['own']:.1f}, with "
        f"expressions shuffled across samples {100 * language['shuffled']:.1f} "
        f"(difference {100 * (language['own'] - language['shuffled']):.1f}).",
    ]
    agreement = (
        "agree to 1e-4 on every metric"
        if not differing
        else f"agree to 1e-4 except on {', '.join(differing)}"
    )
    reason = " (scored again with --reuse-fit after an evaluation change)" if args.reuse_fit else ""
    if args.trained_from_command:
        lines += ["", "The trained column is the command's own test pass (--trained-from-command)."]
    else:
        lines += ["", f"The command's own test pass and this scoring{reason} {agreement}."]
    (HERE / "results" / f"{experiment}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _training_chat_answers(cfg, data_dir: str, task: str = "img_chat") -> list:
    """The chat baseline's answer comes from the training split (never from test)."""
    from x2sam_lightning.data.conversations import build_conversation
    from x2sam_lightning.data.shards import ClipSampler, iter_source
    from x2sam_lightning.data.sources import ShardSource
    from x2sam_lightning.data.transforms import ResizePadNormalize

    root = Path(data_dir) / "synthetic"
    dataset = {"img_chat": "synthetic_img_chat", "vid_chat": "synthetic_vid_chat"}[task]
    source = ShardSource("chat", root / f"{dataset}-train.index.json")
    samples = iter_source(
        source, ResizePadNormalize(cfg.data.image_size), ClipSampler(mode="all"), train=False
    )
    return [build_conversation(s, task, train=False) for _, s in zip(range(500), samples)]


if __name__ == "__main__":
    main()
