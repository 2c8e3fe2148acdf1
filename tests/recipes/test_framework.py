"""The shard-set writer every recipe shares: determinism, resume after kill -9, errors, safe pickles."""

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.recipes import convert, read_back

from data_recipes.__main__ import all_recipes
from data_recipes.__main__ import main as recipes_main
from data_recipes.fixtures.sa1b import write_sa1b
from data_recipes.framework.layout import LayoutError
from data_recipes.framework.safe_pickle import load_plain_pickle
from data_recipes.framework.writer import ConversionError
from data_recipes.sa1b import SA1B

ROOT = Path(__file__).resolve().parents[2]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _shards_and_index(folder: Path) -> dict[str, bytes]:
    files = _files(folder)
    index = json.loads(files.pop("sa1b-train.index.json"))
    index["summary"].pop("seconds")
    index["summary"].pop("resumed_chunks")
    return {**files, "index": json.dumps(index, sort_keys=True).encode()}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sa1b")
    write_sa1b(root, scale=3)
    return root


def test_shard_bytes_do_not_depend_on_the_worker_count(raw, tmp_path):
    convert(SA1B(), raw, tmp_path / "one", "train", items_per_shard=3, workers=1)
    convert(SA1B(), raw, tmp_path / "two", "train", items_per_shard=3, workers=2)
    one, two = _shards_and_index(tmp_path / "one"), _shards_and_index(tmp_path / "two")
    assert len([n for n in one if n.endswith(".tar")]) >= 4
    assert one == two


def test_a_conversion_killed_mid_way_resumes_to_the_same_shards(raw, tmp_path):
    names = sorted(
        p.name for folder in sorted(raw.iterdir()) if folder.is_dir() for p in folder.glob("*.json")
    )
    kill_at = names[len(names) // 2]
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(ROOT / "tests")!r}, {str(ROOT)!r}]
        from helpers.recipes import SA1BKilledAt, convert
        convert(SA1BKilledAt.recipe({kill_at!r}), __import__('pathlib').Path({str(raw)!r}),
                __import__('pathlib').Path({str(tmp_path / "killed")!r}), 'train', items_per_shard=3)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    killed = tmp_path / "killed"
    assert not (killed / "sa1b-train.index.json").exists()  # no index: the split is not complete
    finished_before = sorted(killed.glob("sa1b-train-*.tar"))
    assert finished_before  # some chunks finished before the kill
    summary = convert(SA1B(), raw, killed, "train", items_per_shard=3)
    assert summary.resumed_chunks == len(finished_before)
    convert(SA1B(), raw, tmp_path / "clean", "train", items_per_shard=3)
    assert _shards_and_index(killed) == _shards_and_index(tmp_path / "clean")
    assert not any(p.name.startswith(".") for p in killed.iterdir())  # no temp or progress file left


def test_a_complete_split_is_kept_and_other_settings_redo_it(raw, tmp_path):
    first = convert(SA1B(), raw, tmp_path, "train", items_per_shard=3)
    again = convert(SA1B(), raw, tmp_path, "train", items_per_shard=3)
    assert again.seconds == first.seconds  # read from the index, nothing converted
    convert(SA1B(), raw, tmp_path, "train", items_per_shard=100)
    assert len(list(tmp_path.glob("sa1b-train-*.tar"))) == 1  # the old shards are gone
    assert len(read_back(tmp_path, "sa1b", "train")) == first.samples


def test_a_wrong_layout_names_what_was_expected_and_where(tmp_path):
    with pytest.raises(LayoutError, match=r"expected the SA-1B folder .* at .*nothing"):
        convert(SA1B(), tmp_path / "missing", tmp_path / "out", "train")
    (tmp_path / "empty").mkdir()
    assert recipes_main(["sa1b", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2


def test_a_bad_item_raises_naming_its_file_or_is_counted_when_skipping(raw, tmp_path):
    broken = tmp_path / "raw"
    write_sa1b(broken)
    victim = next(
        p for p in sorted((broken / "sa_000001").glob("sa_*.json")) if 'annotations": [{' in p.read_text()
    )
    record = json.loads(victim.read_text())
    record["annotations"][0]["segmentation"]["size"] = [3, 3]
    victim.write_text(json.dumps(record))
    for workers in (1, 2):
        with pytest.raises(ConversionError, match=rf"{victim.name}.*RLE size \[3, 3\]"):
            convert(SA1B(), broken, tmp_path / "out", "train", workers=workers, items_per_shard=2)
    summary = convert(SA1B(), broken, tmp_path / "out", "train", on_error="skip")
    assert summary.skipped["invalid: MaskFormatError"] == 1


def test_every_recipe_is_listed_by_the_entry_point(capsys):
    recipes = all_recipes()
    assert "sa1b" in recipes
    assert recipes_main([]) == 0
    assert "sa1b" in capsys.readouterr().out
    assert recipes_main(["no_such_dataset"]) == 2


def test_the_module_command_line_converts(raw, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_recipes.sa1b",
            "--root",
            str(raw),
            "--out",
            str(tmp_path),
            "--quiet",
            "--workers",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert "sa1b-train:" in result.stdout and "sa1b-val:" in result.stdout
    assert "skipped: 1 image file missing, 1 no annotations" in result.stdout


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo owned",))


def test_annotation_pickles_load_plain_data_and_refuse_code(tmp_path):
    refs = [{"ref_id": 1, "sentences": [{"sent": "the man"}], "split": "train", "ids": {1, 2}}]
    for protocol in (0, 2, 5):
        path = tmp_path / f"refs{protocol}.p"
        path.write_bytes(pickle.dumps(refs, protocol=protocol))
        assert load_plain_pickle(path) == refs
    evil = tmp_path / "evil.p"
    evil.write_bytes(pickle.dumps([_Exploit()]))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global (posix|nt).system"):
        load_plain_pickle(evil)
    (tmp_path / "junk.p").write_bytes(b"not a pickle")
    with pytest.raises(pickle.UnpicklingError, match="junk.p"):
        load_plain_pickle(tmp_path / "junk.p")


class _Twice(SA1B):
    """Yields each sample twice under the same id: a recipe bug the writer must name."""

    def convert(self, item):
        for sample in super().convert(item):
            yield sample
            yield sample


def test_two_samples_with_one_key_are_an_error_naming_the_key(raw, tmp_path):
    with pytest.raises(ConversionError, match=r"sa1b/\d+.*same key"):
        convert(_Twice(), raw, tmp_path, "train")
