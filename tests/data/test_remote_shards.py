"""Shards and indexes read over HTTP (a real local server) and fsspec urls: the same samples as from disk;
missing, unreachable and silent servers named at start-up or skipped by policy, never a hang; bad data
served remotely handled like local bad data."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import bad_data as bd
from helpers.http_server import closed_port, serve_folder, serve_folder_without_head, silent_server

from x2sam_lightning.data.datamodule import SegDataModule
from x2sam_lightning.data.errors import SampleError, ShardError, SourceError
from x2sam_lightning.data.remote import RemoteOptions, join, probe, read_bytes
from x2sam_lightning.data.shards import ClipSampler, iter_source
from x2sam_lightning.data.sources import ShardSource, expand_urls
from x2sam_lightning.data.tars import read_shard
from x2sam_lightning.data.transforms import ResizePadNormalize

FAST = dict(timeout=2.0, retries=1)


@pytest.fixture(scope="module")
def http_root(tiny_root):
    with serve_folder(tiny_root) as url:
        yield url


def _eval(source: ShardSource, on_error: str = "raise") -> list:
    transform = ResizePadNormalize(64, keep_original=True)
    stream = iter_source(
        source, transform, ClipSampler(3, mode="all", max_frames=64), train=False, on_error=on_error
    )
    return bd.within(60, lambda: list(stream))


def _assert_same_samples(remote: list, local: list) -> None:
    assert [s.key for s in remote] == [s.key for s in local] and local
    for a, b in zip(remote, local):
        assert torch.equal(a.pixel_values, b.pixel_values)
        assert torch.equal(a.targets.masks, b.targets.masks)
        assert torch.equal(a.targets.original_masks, b.targets.original_masks)
        assert torch.equal(a.targets.labels, b.targets.labels) and torch.equal(
            a.targets.valid, b.targets.valid
        )
        assert a.meta == b.meta and a.categories == b.categories


@pytest.mark.parametrize("dataset", ["synthetic_img", "synthetic_vid"])
def test_http_index_and_shards_give_the_same_samples_as_disk(tiny_root, http_root, dataset):
    local = ShardSource("local", tiny_root / f"{dataset}-val.index.json")
    remote = ShardSource("remote", f"{http_root}/{dataset}-val.index.json", **FAST)
    assert remote.urls == [
        f"{http_root}/{u.rsplit('/', 1)[1]}" for u in local.urls
    ]  # relative to the index url
    assert remote.check_shards() == {}
    samples = _eval(remote)
    assert all(s.shard.startswith(http_root) for s in samples)
    _assert_same_samples(samples, _eval(local))


def test_brace_pattern_and_file_urls_read_the_same_shards(tiny_root, http_root):
    local = ShardSource("local", tiny_root / "synthetic_img-train.index.json")
    names = sorted(u.rsplit("/", 1)[1] for u in local.urls)
    assert names == [f"synthetic_img-train-{i:06d}.tar" for i in range(3)]
    pattern = f"{http_root}/synthetic_img-train-{{000000..000002}}.tar"
    assert expand_urls(pattern) == [f"{http_root}/{n}" for n in names]
    meta = dict(num_samples=local.num_samples, task="img_genseg", modality="image")
    over_http = ShardSource("http", urls=pattern, **meta, **FAST)
    as_file_urls = ShardSource("file", urls=[f"file://{tiny_root}/{n}" for n in names], **meta)
    reference = _eval(ShardSource("disk", urls=sorted(local.urls), **meta))
    _assert_same_samples(_eval(over_http), reference)
    _assert_same_samples(_eval(as_file_urls), reference)
    assert as_file_urls.check_shards() == {}


def test_datamodule_over_http_matches_disk_in_training_and_with_workers(tiny_root, http_root, tiny_kwargs):
    def datamodule(base: str, **kwargs) -> SegDataModule:
        train = {n: ShardSource(n, f"{base}/synthetic_{n}-train.index.json", **FAST) for n in ("img", "vid")}
        val = {"img_val": ShardSource("img_val", f"{base}/synthetic_img-val.index.json", **FAST)}
        options = dict(batch_size=2, image_size=64, clip_length=3, seed=3, shuffle_buffer=4)
        dm = SegDataModule(train, val, **options, **kwargs)
        dm.setup("fit")
        return dm

    def first_batches(dm: SegDataModule, n: int) -> list:
        loader = iter(dm.train_dataloader())
        return [next(loader) for _ in range(n)]

    remote, local = datamodule(http_root), datamodule(str(tiny_root))
    for a, b in zip(bd.within(60, lambda: first_batches(remote, 6)), first_batches(local, 6)):
        assert a.source == b.source and a.keys == b.keys
        assert torch.equal(a.pixel_values, b.pixel_values)
        assert all(torch.equal(x.masks, y.masks) for x, y in zip(a.targets, b.targets))
    workers = datamodule(http_root, num_workers=2)
    keys = bd.within(60, lambda: [k for batch in workers.val_dataloader()[0] for k in batch.keys])
    assert sorted(keys) == [f"synthetic_img/{i:07d}" for i in range(tiny_kwargs["num_val_images"])]


def _index_with_a_missing_shard(tiny_root, folder):
    """A copy of the image train set whose index lists one more shard, which is not there."""
    for path in tiny_root.glob("synthetic_img-train-*.tar"):
        shutil.copy(path, folder / path.name)
    index = json.loads((tiny_root / "synthetic_img-train.index.json").read_text())
    index["shards"].append({"url": "synthetic_img-train-000099.tar", "num_samples": 5})
    index["num_samples"] += 5
    (folder / "synthetic_img-train.index.json").write_text(json.dumps(index))
    return index


def test_a_missing_http_shard_is_named_at_startup_or_skipped_by_policy(tiny_root, tmp_path, caplog):
    index = _index_with_a_missing_shard(tiny_root, tmp_path)
    with serve_folder(tmp_path) as base:
        url, missing = f"{base}/synthetic_img-train.index.json", f"{base}/synthetic_img-train-000099.tar"
        strict = ShardSource("imgs", url, **FAST)
        with pytest.raises(ShardError) as info:
            bd.within(30, strict.check_shards)
        assert info.value.url == missing and "source 'imgs'" in str(info.value)
        assert "HTTP 404" in info.value.problem and "missing_shards=skip" in info.value.problem

        lenient = ShardSource("imgs", url, missing_shards="skip", **FAST)
        with caplog.at_level(logging.WARNING):
            assert set(bd.within(30, lenient.check_shards)) == {missing}
        assert bd.warnings_with(caplog, missing) and "HTTP 404" in bd.warnings_with(caplog, missing)[0]
        assert missing not in lenient.urls and len(lenient.urls) == 3 and missing not in lenient.shard_sizes
        assert lenient.num_samples == index["num_samples"] - 5
        assert lenient.stats.as_dict() == {"samples_skipped": 0, "shards_skipped": 1}
        keys = sorted(s.key for s in _eval(lenient))
    assert keys == [f"synthetic_img/{i:07d}" for i in range(12)]


def test_a_server_that_refuses_head_is_probed_with_get(tiny_root):
    with serve_folder_without_head(tiny_root) as base:
        assert probe(f"{base}/synthetic_img-train-000000.tar", RemoteOptions(**FAST)) is None
        assert probe(f"{base}/nothing.tar", RemoteOptions(**FAST)) == "HTTP 404 File not found"


def test_a_source_whose_shards_are_all_missing_is_a_startup_error(tiny_root, tmp_path, tiny_kwargs):
    index = json.loads((tiny_root / "synthetic_img-train.index.json").read_text())
    (tmp_path / "gone-train.index.json").write_text(json.dumps(index))  # lists shards that are not there
    with serve_folder(tmp_path) as base:
        for where in (str(tmp_path / "gone-train.index.json"), f"{base}/gone-train.index.json"):
            source = ShardSource("gone", where, missing_shards="skip", **FAST)
            dm = SegDataModule({"gone": source}, {}, image_size=64)
            with pytest.raises(SourceError, match=r"source 'gone': none of its 3 shards can be opened"):
                bd.within(30, lambda dm=dm: dm.setup("fit"))
        with pytest.raises(SourceError, match=r"source 'x': index cannot be read: HTTP 404"):
            bd.within(30, lambda: ShardSource("x", f"{base}/nothing.index.json", **FAST).index)


def test_an_unreachable_port_fails_fast_with_a_named_error():
    url = f"http://127.0.0.1:{closed_port()}/data-000000.tar"
    options = RemoteOptions(timeout=2.0, retries=2, backoff=0.05)
    start = time.perf_counter()
    assert probe(url, options) == "connection refused (3 attempts, timeout 2 s each)"
    with pytest.raises(ShardError, match=r"cannot be opened: connection refused \(3 attempts") as info:
        bd.within(30, lambda: list(read_shard(url, remote=options)))
    assert info.value.url == url and time.perf_counter() - start < 10
    source = ShardSource("dead", urls=[url], num_samples=1, task="img_genseg", retries=0, timeout=2.0)
    with pytest.raises(SourceError, match=r"source 'dead': none of its 1 shards .*connection refused"):
        bd.within(30, source.check_shards)


def test_a_server_that_never_answers_times_out_instead_of_hanging():
    options = RemoteOptions(timeout=0.5, retries=1, backoff=0.05)
    with silent_server() as base:
        url = f"{base}/data-000000.tar"
        start = time.perf_counter()
        assert probe(url, options) == "no answer (timed out) (2 attempts, timeout 0.5 s each)"
        with pytest.raises(ShardError, match=r"cannot be opened: no answer \(timed out\)"):
            bd.within(30, lambda: list(read_shard(url, remote=options)))
        assert time.perf_counter() - start < 10


#: name -> (problem, samples used before the defect), as for streamed shards in test_bad_input.py.
SERVED_DEFECTS = {
    "cut at a sample boundary": ("is truncated: it ends", 1),
    "corrupt header": ("has a corrupt member header", 0),
    "gzipped tar cut short": ("is truncated", 1),
}


@pytest.mark.parametrize("case", sorted(SERVED_DEFECTS))
def test_a_corrupt_shard_served_over_http_raises_or_is_skipped(tmp_path, caplog, case):
    problem, before = SERVED_DEFECTS[case]
    good = bd.good_image_shard(tmp_path / "good-000000.tar", 0, 3, "good")
    (tmp_path / "bad-000000.tar").write_bytes(bd.SHARD_DEFECTS[case][0]())
    with serve_folder(tmp_path) as base:
        urls, bad = [f"{base}/good-000000.tar", f"{base}/bad-000000.tar"], f"{base}/bad-000000.tar"

        def source() -> ShardSource:
            return ShardSource("src", urls=urls, num_samples=4, task="img_genseg", modality="image", **FAST)

        with pytest.raises(ShardError) as info:
            _eval(source())
        assert info.value.url == bad and problem in info.value.problem
        skipping = source()
        with caplog.at_level(logging.WARNING):
            out = _eval(skipping, on_error="skip")
    assert [s.key for s in out][:3] == good and len(out) == 3 + before
    assert skipping.stats.as_dict() == {"samples_skipped": 0, "shards_skipped": 1}
    assert len(bd.warnings_with(caplog, bad)) == 1


def test_a_bad_sample_served_over_http_is_named_or_counted(tmp_path, caplog):
    samples = [(f"s/{i:07d}", bd.image_members(i)) for i in range(3)]
    samples[1] = ("s/0000001", bd.broken_json_sample("missing height"))
    bd.write_shard(tmp_path / "s-000000.tar", samples)
    with serve_folder(tmp_path) as base:
        url = f"{base}/s-000000.tar"

        def source() -> ShardSource:
            return ShardSource("src", urls=[url], num_samples=3, task="img_genseg", modality="image", **FAST)

        with pytest.raises(SampleError) as info:
            _eval(source())
        assert (info.value.url, info.value.key) == (url, "s/0000001")
        skipping = source()
        with caplog.at_level(logging.WARNING):
            keys = [s.key for s in _eval(skipping, on_error="skip")]
    assert keys == ["s/0000000", "s/0000002"]
    assert skipping.stats.as_dict() == {"samples_skipped": 1, "shards_skipped": 0}
    assert len(bd.warnings_with(caplog, "s/0000001")) == 1


def test_fsspec_urls_read_the_same_samples(tiny_root):
    fsspec = pytest.importorskip("fsspec")
    local = ShardSource("local", tiny_root / "synthetic_vid-val.index.json")
    memory = fsspec.filesystem("memory")
    folder = f"memory://x2sam-test-{id(local)}"
    for path in [local.index_path, *local.urls]:
        memory.pipe(f"{folder}/{path.rsplit('/', 1)[1]}", Path(path).read_bytes())
    try:
        remote = ShardSource("memory", f"{folder}/synthetic_vid-val.index.json")
        assert remote.check_shards() == {}
        _assert_same_samples(_eval(remote), _eval(local))
        assert probe(f"{folder}/nothing.tar") == "not found"
        with pytest.raises(ShardError, match="nothing.tar.*cannot be opened: not found"):
            list(read_shard(f"{folder}/nothing.tar"))
        assert read_bytes(remote.index_path) == Path(local.index_path).read_bytes()
    finally:
        memory.rm(folder, recursive=True)


def test_shard_urls_resolve_against_the_index_location():
    assert join("/data/coco/coco-train.index.json", "coco-000.tar") == "/data/coco/coco-000.tar"
    assert join("https://h/d/c.index.json?sig=1", "c-000.tar") == "https://h/d/c-000.tar"
    assert join("s3://bucket/d/c.index.json", "c-000.tar") == "s3://bucket/d/c-000.tar"
    assert join("s3://bucket/d/c.index.json", "https://mirror/c-000.tar") == "https://mirror/c-000.tar"
    assert join("https://h/d/c.index.json", "/abs/c-000.tar") == "/abs/c-000.tar"


def test_an_fsspec_scheme_without_its_backend_says_what_to_install():
    pytest.importorskip("fsspec")
    try:
        import s3fs  # noqa: F401
    except ImportError:
        reason = probe("s3://bucket/x-000000.tar", RemoteOptions(retries=0))
        assert reason is not None and "s3://" in reason and "s3fs" in reason
    else:
        pytest.skip("s3fs is installed: nothing is missing")


def test_one_override_adds_drops_or_reweights_a_source(tmp_path, http_root):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from x2sam_lightning import cli

    def mix(*overrides: str) -> SegDataModule:
        with initialize_config_dir(str(cli.CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=["data=synthetic", f"paths.data_dir={tmp_path}", *overrides])
        return instantiate(cfg.data)

    base = mix()
    assert set(base.train_sources) == {"synthetic_img", "synthetic_vid"}
    assert set(mix("~data.train_sources.synthetic_vid").train_sources) == {"synthetic_img"}
    assert mix("data.train_sources.synthetic_vid.weight=3").train_sources["synthetic_vid"].weight == 3
    added = mix("+data/sources@data.train_sources.synthetic_img_refseg=synthetic_img_refseg")
    assert added.train_sources["synthetic_img_refseg"].index_path.endswith(
        "synthetic_img_refseg-train.index.json"
    )
    remote = mix(
        "+data.train_sources.web={_target_: x2sam_lightning.data.sources.ShardSource, name: web, "
        f"index: '{http_root}/synthetic_img-train.index.json', weight: 2, missing_shards: skip, timeout: 5}}"
    )
    web = remote.train_sources["web"]
    assert (web.weight, web.missing_shards, web.remote.timeout) == (2.0, "skip", 5.0)
    assert web.num_samples == 12 and web.check_shards() == {}


def test_remote_options_are_checked():
    with pytest.raises(ValueError, match="timeout must be > 0"):
        ShardSource("x", urls=["a.tar"], timeout=0)
    with pytest.raises(ValueError, match="missing_shards must be 'raise' or 'skip'"):
        ShardSource("x", urls=["a.tar"], missing_shards="ignore")
    assert np.isclose(RemoteOptions().timeout, 60.0)
