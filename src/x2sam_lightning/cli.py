"""Command line: a verb, then Hydra overrides.

``python -m x2sam_lightning fit +experiment=agnostic trainer.max_steps=100 logger=tensorboard``

Hydra rejects a bare positional word, so :func:`main` checks the verb and rewrites it into the override
``verb=fit`` before Hydra parses the command line. The verb table is data (:data:`VERBS`); each entry
builds the run from the composed config with ``hydra.utils.instantiate`` and calls one Trainer method.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from x2sam_lightning.config import CONF_DIR
from x2sam_lightning.lightning.checkpoint_files import (  # noqa: F401 (check_checkpoint: a public helper)
    CheckpointError,
    check_checkpoint,
    checkpoint_shapes,
    compare_state,
)

log = logging.getLogger("x2sam_lightning")

USAGE = """\
usage: python -m x2sam_lightning VERB [+experiment=NAME] [HYDRA OVERRIDES ...]

verbs:
  fit        train (stage 1: +experiment=agnostic; stage 2: +experiment=joint_image)
  validate   evaluate on the validation sources (ckpt_path=... to load a checkpoint)
  test       evaluate a checkpoint on the test sources and write a results table (markdown + JSON)
  predict    write predicted masks (COCO RLE, JSON lines) for the predict sources, or for one video file
             of any length (predict.video=clip.mp4: streamed, one line per frame)

experiments: {experiments}

examples:
  python -m x2sam_lightning fit +experiment=agnostic
  python -m x2sam_lightning fit +experiment=agnostic trainer.max_steps=50 logger=tensorboard
  python -m x2sam_lightning test +experiment=agnostic ckpt_path=runs/.../checkpoints/last.ckpt
  python -m x2sam_lightning fit --help        (Hydra's help: config groups and their options)
  python -m x2sam_lightning fit +experiment=agnostic --cfg job   (print the composed config)
"""


def available_experiments() -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))


class UsageError(ValueError):
    """A command line that names an unknown verb or experiment."""


def _checkpoint_of(cfg: Any) -> dict[str, list[int]] | None:
    """The ``ckpt_path`` of the config checked as a file (before the model is built)."""
    return checkpoint_shapes(cfg.ckpt_path, cfg.get("verb", "validate")) if cfg.get("ckpt_path") else None


def _check_fits(cfg: Any, shapes: dict[str, list[int]] | None, module: Any) -> None:
    """The checkpoint's parameters against the model, before its weights are loaded: now, or for a module
    whose large parts ``configure_model`` builds (under the Trainer's strategy) as soon as they exist."""
    if shapes is None:
        return
    path = Path(cfg.ckpt_path)
    if hasattr(module, "after_build"):
        module.after_build(lambda built: compare_state(path, shapes, built))
    else:
        compare_state(path, shapes, module)


def _check_experiments(overrides: Sequence[str]) -> None:
    known = available_experiments()
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key.lstrip("+~") == "experiment" and value not in known:
            raise UsageError(f"unknown experiment '{value}'; known experiments: {', '.join(known)}")


def _instantiate_all(node: Any) -> list[Any]:
    """Instantiate every ``_target_`` entry of a dict-like config group (callbacks, loggers)."""
    from hydra.utils import instantiate
    from omegaconf import DictConfig

    if node is None:
        return []
    if isinstance(node, DictConfig) and "_target_" in node:
        return [instantiate(node)]
    return [instantiate(child) for child in node.values() if child is not None and "_target_" in child]


def build_run(cfg: Any) -> tuple[Any, Any, Any]:
    """Seed, then build the datamodule, the LightningModule and the Trainer from the config."""
    import lightning as L
    from hydra.utils import instantiate

    from x2sam_lightning.lightning.deferred import instantiate_deferred

    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    # The large parts are built by the module's configure_model, under the strategy (FSDP, ZeRO-3).
    module = instantiate_deferred(cfg.model)
    if hasattr(module, "model_config"):  # recorded in stage-2 checkpoints: what rebuilds the model
        from omegaconf import OmegaConf

        model = OmegaConf.to_container(cfg.model, resolve=True)
        module.model_config = {"model": model, "image_size": int(cfg.data.image_size)}
    if not getattr(module, "automatic_optimization", True):  # it clips and accumulates itself
        from x2sam_lightning.lightning.accumulation import check_trainer_config

        check_trainer_config(cfg.trainer)
    callbacks = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(cfg.get("logger"))
    if not loggers:  # logger=none: a learning-rate monitor has nowhere to log (Lightning refuses it)
        from lightning.pytorch.callbacks import LearningRateMonitor

        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if cfg.trainer.get("enable_progress_bar", True):
        from lightning.pytorch.callbacks import ProgressBar

        from x2sam_lightning.lightning.progress import progress_bar

        if not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(progress_bar())
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, module, trainer


def _print_metrics(title: str, metrics: dict[str, Any], tasks: dict[str, str] | None = None) -> None:
    """Held-out metrics: every value, or with ``tasks`` (source -> task) each source's headline columns
    (the results table's, in percent; every value is in the metrics JSON of the run). First process only."""
    if not _is_first_process():
        return
    from x2sam_lightning.metrics.report import headline_row

    rows = {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(("val/", "test/"))}
    if not rows:
        return
    print(f"\n{title}")
    if not tasks:
        width = max(len(k) for k in rows)
        for key, value in rows.items():
            print(f"  {key:<{width}}  {value:.4f}")
        return
    width = max(len(s) for s in tasks)
    for source, task in tasks.items():
        values = {k.split("/", 2)[2]: v for k, v in rows.items() if k.split("/")[1:2] == [source]}
        cells = ", ".join(
            f"{label} {'-' if v is None else f'{v:.1f}'}" for label, v in headline_row(task, values).items()
        )
        print(f"  {source:<{width}}  {task:<11} {cells}")


def resolve_stage1_checkpoint(cfg: Any) -> None:
    """``model.stage1_checkpoint: auto``: the newest checkpoint of the stage-1 experiment under
    ``paths.output_dir``; if there is none, train stage 1 first (its own experiment with
    ``stage1_overrides``, same data and output folders; nothing else of this command line applies to it).
    The resolved path replaces ``auto`` in the config and in the run's saved ``config.yaml``. A fit that
    resumes (``ckpt_path``) needs no stage 1: the restored checkpoint holds those weights."""
    from omegaconf import OmegaConf, open_dict

    from x2sam_lightning.config import compose_config

    if cfg.get("ckpt_path") and cfg.model.get("stage1_checkpoint"):
        with open_dict(cfg):
            cfg.model.stage1_checkpoint = None
        return
    if cfg.model.get("stage1_checkpoint") != "auto":
        return
    experiment = cfg.get("stage1_experiment") or "agnostic"
    runs = Path(cfg.paths.output_dir) / experiment / "fit"
    found = sorted(runs.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        print(f"stage 1: no checkpoint under {runs}; training `fit +experiment={experiment}` first")
        paths = [f"paths.data_dir={cfg.paths.data_dir}", f"paths.output_dir={cfg.paths.output_dir}"]
        stage1 = compose_config(experiment, [*paths, *(cfg.get("stage1_overrides") or [])])
        Path(stage1.paths.run_dir).mkdir(parents=True, exist_ok=True)
        run_fit(stage1)
        found = sorted(runs.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(f"stage 1 wrote no checkpoint under {runs}")
    print(f"stage 2 starts from the stage-1 checkpoint {found[-1]}")
    with open_dict(cfg):
        cfg.model.stage1_checkpoint = str(found[-1])
    if _is_first_process():
        OmegaConf.save(cfg, Path(cfg.paths.run_dir) / "config.yaml", resolve=False)


def run_fit(cfg: Any) -> dict[str, float]:
    shapes = _checkpoint_of(cfg)  # a bad ckpt_path is reported before stage 1 may be trained
    resolve_stage1_checkpoint(cfg)
    datamodule, module, trainer = build_run(cfg)
    _check_fits(cfg, shapes, module)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    tasks = getattr(module, "evaluated_tasks", lambda stage: None)
    _print_metrics("held-out metrics at the last validation (validation split):", metrics, tasks("val"))
    if cfg.get("test_after_fit"):
        metrics.update(_test_and_report(cfg, module, datamodule, trainer))
    return metrics


def run_validate(cfg: Any) -> dict[str, float]:
    shapes = _checkpoint_of(cfg)
    datamodule, module, trainer = build_run(cfg)
    _warn_without_checkpoint(cfg)
    _check_fits(cfg, shapes, module)
    results = trainer.validate(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    return _merge(results)


def _test_and_report(
    cfg: Any, module: Any, datamodule: Any, trainer: Any, ckpt_path: str | None = None
) -> dict:
    """``trainer.test`` on the test sources, the results table (markdown + JSON) and the headline print."""
    from x2sam_lightning.lightning.results import write_test_results

    results = _merge(trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False))
    templates = getattr(module, "evaluated_templates", lambda stage: None)("test")
    paths = write_test_results(results, Path(cfg.paths.run_dir), module.test_tasks(), templates)
    tasks = getattr(module, "evaluated_tasks", lambda stage: None)("test")
    _print_metrics("test split (held out; never used to choose a setting):", results, tasks)
    print("results table: " + ", ".join(str(p) for p in paths))
    return results


def run_test(cfg: Any) -> dict[str, float]:
    shapes = _checkpoint_of(cfg)
    datamodule, module, trainer = build_run(cfg)
    _warn_without_checkpoint(cfg)
    _check_fits(cfg, shapes, module)
    return _test_and_report(cfg, module, datamodule, trainer, ckpt_path=cfg.get("ckpt_path"))


def run_predict(cfg: Any) -> dict[str, float]:
    if cfg.get("predict") and cfg.predict.get("video"):
        return predict_video(cfg)
    shapes = _checkpoint_of(cfg)
    datamodule, module, trainer = build_run(cfg)
    _warn_without_checkpoint(cfg)
    _check_fits(cfg, shapes, module)
    trainer.predict(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), return_predictions=False)
    return {}


def predict_video(cfg: Any) -> dict[str, float]:
    """``predict predict.video=PATH``: stream one video file through the model (stage 1 or stage 2), one
    JSON line per frame written as it is segmented (``inference/video_predictor.py``)."""
    import lightning as L
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from x2sam_lightning.inference.video_predictor import VideoPredictor
    from x2sam_lightning.lightning.checkpoints import load_checkpoint

    options = cfg.predict
    shapes = _checkpoint_of(cfg)
    L.seed_everything(cfg.seed, workers=True)
    module = instantiate(cfg.model)
    _warn_without_checkpoint(cfg)
    _check_fits(cfg, shapes, module)
    if cfg.get("ckpt_path"):
        checkpoint = load_checkpoint(cfg.ckpt_path)
        if hasattr(module, "load_trained"):  # stage 2 saves its trained parts only
            module.load_trained(checkpoint)
        else:
            module.load_state_dict(checkpoint["state_dict"])
    device = "cuda" if cfg.trainer.get("accelerator") == "gpu" else "cpu"
    predictor = VideoPredictor(
        module,
        int(cfg.data.image_size),
        device=device,
        score_threshold=float(options.score_threshold),
        language_frames=int(options.language_frames),
    )
    video = Path(options.video)
    output = Path(options.output or Path(cfg.paths.run_dir) / "predictions" / f"{video.stem}.frames.jsonl")
    prompts = OmegaConf.to_container(options.prompts, resolve=True) if options.get("prompts") else []
    frames = predictor.write_video(
        video, output, text=options.get("text"), prompts=prompts, chunk_frames=int(options.chunk_frames)
    )
    if _is_first_process():
        print(f"{frames} frames of {video} segmented: {output}")
    return {"predict/frames": float(frames)}


VERBS: dict[str, Callable[[Any], dict[str, float]]] = {
    "fit": run_fit,
    "validate": run_validate,
    "test": run_test,
    "predict": run_predict,
}


def _merge(results: list[dict[str, float]] | None) -> dict[str, float]:
    merged: dict[str, float] = {}
    for result in results or []:
        merged.update({k: float(v) for k, v in result.items()})
    return merged


def _warn_without_checkpoint(cfg: Any) -> None:
    if not cfg.get("ckpt_path"):
        log.warning("no ckpt_path given: evaluating the randomly initialised model")


def _one_line_code(error: BaseException) -> int | None:
    """Exit code of an error reported as one line (no traceback unless ``HYDRA_FULL_ERROR=1``), else None:
    2 for a checkpoint that cannot be used, 1 for bad data (``SampleError`` and its subclasses, a video file
    that cannot be read, a prompt that does not fit the video)."""
    if isinstance(error, CheckpointError):
        return 2
    video = sys.modules.get("x2sam_lightning.inference.video_stream")  # imported by predict on a video
    if video is not None and isinstance(error, (video.VideoReadError, video.PromptError)):
        return 1
    data = sys.modules.get("x2sam_lightning.data.errors")  # not imported: no data error was raised
    if data is not None and isinstance(error, data.SampleError):
        return 1
    return None


def _is_first_process() -> bool:
    """False in the processes Lightning's DDP launcher starts beside the first (``LOCAL_RANK`` > 0)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def _hydra_entry() -> int:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    status = {"code": 0}

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def _run(cfg: DictConfig) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if _is_first_process():
            Path(cfg.paths.run_dir).mkdir(parents=True, exist_ok=True)
            OmegaConf.save(cfg, Path(cfg.paths.run_dir) / "config.yaml", resolve=False)
        else:  # a DDP worker: its own timestamp would name another folder; share the first process's
            from hydra.core.hydra_config import HydraConfig
            from omegaconf import open_dict

            with open_dict(cfg):
                cfg.paths.run_dir = HydraConfig.get().run.dir
        try:
            metrics = VERBS[cfg.verb](cfg)
        except Exception as error:
            code = _one_line_code(error)
            if code is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise  # Hydra prints the traceback
            print(f"error: {error}", file=sys.stderr)
            status["code"] = code
            return
        if metrics and _is_first_process():
            (Path(cfg.paths.run_dir) / f"{cfg.verb}_metrics.json").write_text(json.dumps(metrics, indent=2))

    _run()
    return status["code"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m x2sam_lightning`` and the ``x2sam`` script."""
    args = list(sys.argv[1:] if argv is None else argv)
    experiments = ", ".join(available_experiments())
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE.format(experiments=experiments))
        return 0 if args else 2
    verb, overrides = args[0], args[1:]
    if verb.startswith("verb="):  # a DDP worker: Lightning relaunches the rewritten command line below
        verb = verb.partition("=")[2]
    hydra_help = any(o in {"--help", "-h", "--hydra-help"} for o in overrides)
    try:
        if verb not in VERBS:
            raise UsageError(f"unknown verb '{verb}'; expected one of: {', '.join(VERBS)}")
        _check_experiments(overrides)
        if not hydra_help and not any(o.partition("=")[0].lstrip("+") == "experiment" for o in overrides):
            raise UsageError(f"no experiment selected: add +experiment=NAME ({experiments})")
    except UsageError as error:
        print(f"error: {error}\n\n" + USAGE.format(experiments=experiments), file=sys.stderr)
        return 2
    sys.argv = [sys.argv[0], f"verb={verb}", *overrides]
    return _hydra_entry()
