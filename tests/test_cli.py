"""The command line: usage, verb and experiment errors (composition and runs are in test_experiments)."""

import subprocess
import sys

import pytest

from x2sam_lightning import cli


def test_help_lists_verbs_and_experiments(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in cli.VERBS:
        assert verb in out
    for experiment in cli.available_experiments():
        assert experiment in out


def test_unknown_verb_is_a_clear_error(capsys):
    assert cli.main(["train", "+experiment=agnostic"]) == 2
    err = capsys.readouterr().err
    assert "unknown verb 'train'" in err and "fit, validate, test, predict" in err


def test_unknown_experiment_is_a_clear_error(capsys):
    assert cli.main(["fit", "+experiment=nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'nope'" in err and "agnostic" in err


def test_missing_experiment_is_a_clear_error(capsys):
    assert cli.main(["fit"]) == 2
    assert "+experiment=NAME" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--help"], "usage"),
        (["fit", "+experiment=agnostic", "--cfg", "job"], "_target_"),
        (["fit", "--help"], "Configuration groups"),  # Hydra's help needs no experiment
    ],
)
def test_module_entry_point(args, expected):
    result = subprocess.run([sys.executable, "-m", "x2sam_lightning", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
