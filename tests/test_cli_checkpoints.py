"""``ckpt_path`` problems: one line naming the path and the problem, exit code 2, checked before the Trainer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from x2sam_lightning import cli


def _overrides(tmp: Path, verb: str, *extra: str) -> list[str]:
    return [
        "+experiment=agnostic",
        f"paths.data_dir={tmp / 'data'}",
        f"paths.output_dir={tmp / 'runs'}",
        "logger=none",
        "callbacks=none",
        *extra,
    ]


@pytest.fixture(scope="module")
def model_and_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    with initialize_config_dir(str(cli.CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["verb=validate", *_overrides(tmp, "validate")])
    return instantiate(cfg.model), tmp


def _lightning_checkpoint(module, path: Path, **changes) -> Path:
    import lightning

    checkpoint = {
        "epoch": 0,
        "global_step": 1,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": module.state_dict(),
        "loops": {},
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
        "hyper_parameters": {"top_k": 100},
    }
    checkpoint.update(changes)
    torch.save({k: v for k, v in checkpoint.items() if v is not None}, path)
    return path


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


class _NotAllowed:
    pass


def _cases(module, tmp: Path) -> dict[str, tuple[Path, str]]:
    good = _lightning_checkpoint(module, tmp / "good.ckpt")
    data = good.read_bytes()
    cases: dict[str, tuple[bytes | None, str]] = {}
    state = dict(module.state_dict())
    first, second = list(state)[:2]
    other = {k: v for k, v in state.items() if k != first}
    other[second] = torch.zeros(3, 3)
    other["head.extra.weight"] = torch.zeros(1)
    write = {
        "missing": (None, "does not exist"),
        "empty": (b"", "is an empty file"),
        "truncated": (data[: len(data) // 2], "is truncated or corrupt"),
        "bit flip": (_flip(data, len(data) // 2), "fails its CRC check"),
        "garbage": (b"not a checkpoint at all" * 50, "is not a torch checkpoint"),
    }
    for name, (content, _) in write.items():
        if content is not None:
            (tmp / f"{name}.ckpt").write_bytes(content)
    cases = {name: (tmp / f"{name}.ckpt", problem) for name, (_, problem) in write.items()}
    torch.save([1, 2, 3], tmp / "list.ckpt")
    torch.save(state, tmp / "bare.ckpt")
    torch.save({"model": state}, tmp / "other_dict.ckpt")
    torch.save({"state_dict": state, "object": _NotAllowed()}, tmp / "unsafe.ckpt")
    cases |= {
        "not a dict": (tmp / "list.ckpt", "is not a Lightning checkpoint (it holds a list)"),
        "bare state dict": (tmp / "bare.ckpt", "is a bare state dict"),
        "other dict": (tmp / "other_dict.ckpt", "no 'state_dict' or 'pytorch-lightning_version'"),
        "python object": (tmp / "unsafe.ckpt", "torch.load(weights_only=True) refuses (Unsupported global"),
        "other config": (
            _lightning_checkpoint(module, tmp / "other.ckpt", state_dict=other),
            f"does not fit the configured model (another config?): 1 model keys missing from the checkpoint "
            f"({first}); 1 checkpoint keys not in the model (head.extra.weight); 1 shapes differ ({second}: "
            f"checkpoint [3, 3], model {list(state[second].shape)})",
        ),
    }
    return cases


def test_each_checkpoint_problem_is_named(model_and_dir):
    module, tmp = model_and_dir
    cli.check_checkpoint(_lightning_checkpoint(module, tmp / "ok.ckpt"), module, "validate")
    for name, (path, problem) in _cases(module, tmp).items():
        with pytest.raises(cli.CheckpointError) as info:
            cli.check_checkpoint(path, module, "validate")
        assert info.value.path == str(path) and problem in info.value.problem, (name, str(info.value))
        assert str(info.value).startswith(f"checkpoint {path}: ") and "\n" not in str(info.value)
    weights_only = _lightning_checkpoint(module, tmp / "weights.ckpt", optimizer_states=None)
    cli.check_checkpoint(weights_only, module, "test")
    with pytest.raises(cli.CheckpointError, match="only the model weights"):
        cli.check_checkpoint(weights_only, module, "fit")


def test_cli_prints_one_line_and_exits_2(model_and_dir, capsys, monkeypatch):
    _, tmp = model_and_dir
    bad = tmp / "cli-garbage.ckpt"
    bad.write_bytes(b"garbage" * 100)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    for verb in ("validate", "fit"):
        assert cli.main([verb, *_overrides(tmp, verb, f"ckpt_path={bad}")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"error: checkpoint {bad}: is not a torch checkpoint (unreadable pickle: Unsupported operand 103)"
        ]
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(cli.CheckpointError):
        cli.main(["test", *_overrides(tmp, "test", f"ckpt_path={tmp / 'nope.ckpt'}")])


def test_cli_subprocess_has_no_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    args = [
        sys.executable,
        "-m",
        "x2sam_lightning",
        "test",
        *_overrides(tmp_path, "test", f"ckpt_path={tmp_path / 'x.ckpt'}"),
    ]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1] == f"error: checkpoint {tmp_path / 'x.ckpt'}: does not exist"
    )
    assert "Traceback" not in result.stderr


def test_data_errors_are_one_line_with_exit_code_1():
    from x2sam_lightning.data.errors import ShardError

    assert cli._one_line_code(ShardError("a.tar", "is truncated")) == 1
    assert cli._one_line_code(cli.CheckpointError("x.ckpt", "does not exist")) == 2
    assert cli._one_line_code(RuntimeError("a bug")) is None  # a traceback: not ours to summarise
