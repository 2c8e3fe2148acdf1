"""Bad input, class by class: a named error (raise) or one counted, logged skip (skip); never a hang.

The broken inputs are built by ``tests/helpers/bad_data.py`` from small valid synthetic samples.
"""

from __future__ import annotations

import copy
import json
import logging
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import bad_data as bd

from x2sam_lightning.data.errors import SampleError, ShardError, SkipStats, SourceError
from x2sam_lightning.data.mixing import EvalBatchStream, MixedBatchLoader, MixedBatchStream, eval_loader
from x2sam_lightning.data.schema import validate_index
from x2sam_lightning.data.shards import ClipSampler, decode_sample, iter_source
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.transforms import ResizePadNormalize

TASK = {"image": "img_genseg", "video": "vid_genseg"}


def _source(urls: list[str], modality: str = "image", **kwargs) -> ShardSource:
    return ShardSource(
        "src", urls=urls, num_samples=max(1, len(urls)), task=TASK[modality], modality=modality, **kwargs
    )


def _read(source: ShardSource, on_error: str, train: bool = False, limit: int | None = None) -> list:
    stream = iter_source(
        source, ResizePadNormalize(32), ClipSampler(4, mode="first"), train=train, on_error=on_error
    )
    if limit is None:
        return bd.within(60, lambda: list(stream))
    return bd.within(60, lambda: [next(stream) for _ in range(limit)])


# ------------------------------------------------------------------------------------------ sample level
SAMPLE_CASES = sorted(bd.SAMPLE_JSON_DEFECTS) + sorted(bd.SAMPLE_MEMBER_DEFECTS)


def _bad_sample(case: str) -> tuple[dict[str, bytes], str, str]:
    if case in bd.SAMPLE_JSON_DEFECTS:
        return (
            bd.broken_json_sample(case),
            bd.SAMPLE_JSON_DEFECTS[case][1],
            "video" if "video" in case else "image",
        )
    build, problem = bd.SAMPLE_MEMBER_DEFECTS[case]
    return build(), problem, "video" if "video" in case else "image"


@pytest.mark.parametrize("case", SAMPLE_CASES)
def test_bad_sample_is_a_named_error_or_one_counted_skip(tmp_path, caplog, case):
    members, problem, modality = _bad_sample(case)
    good = bd.video_members if modality == "video" else bd.image_members
    keys = ["s/0000000", "s/0000001", "s/0000002"]
    url = bd.write_shard(
        tmp_path / "s-000000.tar", [(keys[0], good(0)), (keys[1], members), (keys[2], good(1))]
    )

    with pytest.raises(SampleError) as info:
        _read(_source([url], modality), "raise")
    error = info.value
    assert type(error) is SampleError, f"{type(error).__name__}: {error}"
    assert (error.url, error.key) == (url, keys[1])
    assert problem in error.problem, error.problem
    assert url in str(error) and keys[1] in str(error)

    source = _source([url], modality)
    with caplog.at_level(logging.WARNING):
        out = _read(source, "skip")
    assert [s.key for s in out] == [keys[0], keys[2]]
    assert source.stats.as_dict() == {"samples_skipped": 1, "shards_skipped": 0}
    assert len(bd.warnings_with(caplog, keys[1])) == 1


# ------------------------------------------------------------------------------------------- shard level
@pytest.mark.parametrize("case", sorted(bd.SHARD_DEFECTS))
def test_bad_shard_is_a_named_error_or_one_counted_skip(tmp_path, caplog, case):
    build, problem = bd.SHARD_DEFECTS[case]
    before = bd.good_image_shard(tmp_path / "a-000000.tar", 0, 2, "a")
    after = bd.good_image_shard(tmp_path / "a-000002.tar", 2, 2, "a")
    bad = tmp_path / "a-000001.tar"
    bad.write_bytes(build())
    urls = [str(tmp_path / f"a-00000{i}.tar") for i in range(3)]

    with pytest.raises(ShardError) as info:
        _read(_source(urls), "raise")
    assert info.value.url == str(bad) and problem in str(info.value), str(info.value)
    assert str(bad) in str(info.value)

    source = _source(urls)
    with caplog.at_level(logging.WARNING):
        out = _read(source, "skip")
    assert [s.key for s in out] == before + after  # a bad local shard gives nothing, the rest is intact
    assert source.stats.as_dict() == {"samples_skipped": 0, "shards_skipped": 1}
    assert len(bd.warnings_with(caplog, str(bad))) == 1


def test_missing_shard_and_index_count_mismatch(tmp_path):
    keys = bd.good_image_shard(tmp_path / "c-000000.tar", 0, 2, "c")
    index = bd.write_index(tmp_path, "c", [("c-000000.tar", 3)])
    with pytest.raises(ShardError, match="holds 2 samples but the index says 3"):
        _read(ShardSource("c", index), "raise")
    missing = _source([str(tmp_path / "c-000000.tar"), str(tmp_path / "nope.tar")])
    with pytest.raises(ShardError, match="nope.tar.*cannot be opened"):
        _read(missing, "raise")
    assert [s.key for s in _read(missing, "skip")] == keys and missing.stats.as_dict()["shards_skipped"] == 1


def _repeated_key_after_two_samples() -> bytes:
    samples = [(f"bad/{i:07d}", bd.image_members(i)) for i in range(2)]
    return bd.tar_bytes([*samples, ("bad/0000000", {"txt": b"again"})])


#: name -> (tar bytes, problem, samples used before the defect: the last sample read before it is dropped,
#: as its members may have been cut off).
STREAMED = {
    "cut at a sample boundary": (bd.SHARD_DEFECTS["cut at a sample boundary"][0], "is truncated: it ends", 1),
    "corrupt header": (bd.SHARD_DEFECTS["corrupt header"][0], "has a corrupt member header", 0),
    "zeroed header": (bd.SHARD_DEFECTS["zeroed header"][0], "has data after the end-of-archive marker", 0),
    "gzipped tar cut short": (bd.SHARD_DEFECTS["gzipped tar cut short"][0], "is truncated", 1),
    "key repeated": (_repeated_key_after_two_samples, "sample 'bad/0000000': key appears again", 1),
}


@pytest.mark.parametrize("case", sorted(STREAMED))
def test_streamed_shard_is_checked_as_it_is_read(tmp_path, caplog, case):
    """Remote shards (here ``pipe:cat``) cannot be checked ahead: the samples before the defect are used,
    then the shard is an error (raise) or skipped (skip)."""
    build, problem, before = STREAMED[case]
    (tmp_path / "bad.tar").write_bytes(build())
    url = f"pipe:cat {tmp_path / 'bad.tar'}"
    with pytest.raises(ShardError) as info:
        _read(_source([url]), "raise")
    assert info.value.url == url and problem in str(info.value)
    source = _source([url])
    with caplog.at_level(logging.WARNING):
        out = _read(source, "skip")
    assert len(out) == before
    assert source.stats.as_dict() == {"samples_skipped": 0, "shards_skipped": 1}
    assert len(bd.warnings_with(caplog, url)) == 1


def test_a_failing_stream_command_is_a_shard_error(tmp_path):
    with pytest.raises(ShardError, match="cannot be read: the command exited with status 1"):
        _read(_source(["pipe:false"]), "raise")


def test_hidden_members_and_directories_are_not_samples(tmp_path):
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folder = tarfile.TarInfo("s")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        members = {"__meta__/x": b"", "__index__": b"", ".DS_Store": b"x", "s/._0000000.json": b"\0\5"}
        members |= {f"s/0000000.{ext}": data for ext, data in bd.image_members().items()}
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    url = tmp_path / "h.tar"
    url.write_bytes(buffer.getvalue())
    assert [s.key for s in _read(_source([str(url)]), "raise")] == ["s/0000000"]


def test_streamed_shard_count_is_checked(tmp_path):
    bd.good_image_shard(tmp_path / "r-000000.tar", 0, 2, "r")
    index = bd.write_index(tmp_path, "r", [(f"pipe:cat {tmp_path / 'r-000000.tar'}", 1)])
    with pytest.raises(ShardError, match="holds 2 samples but the index says 1"):
        _read(ShardSource("r", index), "raise")


# ------------------------------------------------------------------------------------------- index level
def _index(**changes) -> dict:
    index = {
        "schema": 1,
        "dataset": "d",
        "split": "train",
        "task": "img_genseg",
        "modality": "image",
        "num_samples": 3,
        "shards": [{"url": "d-000000.tar", "num_samples": 2}, {"url": "d-000001.tar", "num_samples": 1}],
    }
    index.update(changes)
    return index


INDEX_DEFECTS = {
    "not an object": ([], "index json should be an object"),
    "schema 3": (_index(schema=3), "unsupported index schema 3"),
    "missing task": ({k: v for k, v in _index().items() if k != "task"}, "lacks required key 'task'"),
    "unknown task": (_index(task="img_pose"), "is not a known task"),
    "task of another modality": (_index(task="vid_refseg"), "does not fit modality 'image'"),
    "no shards": (_index(shards=[]), "index lists no shards"),
    "no samples": (_index(shards=[], num_samples=0), "num_samples is 0"),
    "empty split": (_index(split=""), "index 'split' is an empty string"),
    "shard without url": (_index(shards=[{"num_samples": 3}]), "needs a non-empty string 'url'"),
    "zero count": (
        _index(shards=[{"url": "a.tar", "num_samples": 3}, {"url": "b.tar", "num_samples": 0}]),
        "has num_samples 0",
    ),
    "negative count": (
        _index(shards=[{"url": "a.tar", "num_samples": 4}, {"url": "b.tar", "num_samples": -1}]),
        "has num_samples -1",
    ),
    "count as string": (_index(shards=[{"url": "a.tar", "num_samples": "3"}]), "needs an int 'num_samples'"),
    "shard listed twice": (
        _index(shards=[{"url": "a.tar", "num_samples": 2}, {"url": "a.tar", "num_samples": 1}]),
        "are the same shard 'a.tar'",
    ),
    "total differs": (_index(num_samples=4), "shards hold 3 samples but num_samples is 4"),
    "category id repeated": (_index(categories=[{"id": 1, "name": "a"}] * 2), "categories repeat id 1"),
}


@pytest.mark.parametrize("case", sorted(INDEX_DEFECTS))
def test_bad_index_names_the_file(tmp_path, case):
    index, problem = INDEX_DEFECTS[case]
    path = tmp_path / "d-train.index.json"
    path.write_text(json.dumps(index))
    with pytest.raises(SourceError) as info:
        _ = ShardSource("d", path).urls
    assert info.value.url == str(path) and problem in str(info.value), str(info.value)
    with pytest.raises(SourceError, match=problem.replace("[", r"\[")):
        validate_index(index, path="x.json")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"schema": 1, "dataset": "caf\xe9"}', "is not UTF-8 text"),
        (b"{not json", "is not valid json"),
        (b'{"schema": 1, "num_samples": Infinity}', "Infinity is not a JSON number"),
        (b'{"schema": 1, "schema": 1}', "appears twice"),
    ],
)
def test_unreadable_index_names_the_file(tmp_path, content, problem):
    path = tmp_path / "d-train.index.json"
    path.write_bytes(content)
    with pytest.raises(SourceError) as info:
        _ = ShardSource("d", path).num_samples
    assert info.value.url == str(path) and problem in info.value.problem


def test_index_path_problems(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _ = ShardSource("d", tmp_path / "none.index.json").index
    (tmp_path / "dir.index.json").mkdir()
    with pytest.raises(SourceError, match="is not a file"):
        _ = ShardSource("d", tmp_path / "dir.index.json").index
    path = tmp_path / "d-train.index.json"
    path.write_text(
        json.dumps(_index(shards=[{"url": "a.tar", "num_samples": 2}, {"url": "./a.tar", "num_samples": 1}]))
    )
    with pytest.raises(SourceError, match="lists shard '.*a.tar' twice"):
        _ = ShardSource("d", path).urls
    with pytest.raises(ValueError, match="'urls' is empty"):
        ShardSource("d", urls=[])
    with pytest.raises(ValueError, match="unknown task"):
        ShardSource("d", urls=["a.tar"], task="img_pose")


def test_samples_must_match_the_index_modality(tmp_path):
    bd.write_shard(tmp_path / "v-000000.tar", [("v/0000000", bd.video_members())])
    index = bd.write_index(tmp_path, "v", [("v-000000.tar", 1)], task="img_genseg", modality="image")
    with pytest.raises(SampleError, match="sample task 'vid_genseg' differs from the index's 'img_genseg'"):
        _read(ShardSource("v", index), "raise")


# ------------------------------------------------------------------------------------ decoding and values
@pytest.mark.parametrize("case", sorted(bd.unusual_images()))
def test_unusual_images_decode_to_the_displayed_rgb(case):
    ext, data, expected, tolerance = bd.unusual_images()[case]
    sample, _ = bd.good_image()
    sample.update(height=expected.shape[0], width=expected.shape[1], objects=[])
    raw = {"__key__": "u/1", "__url__": "mem", "json": json.dumps(sample).encode(), ext: data}
    frames = decode_sample(raw, ClipSampler()).frames
    assert frames.shape == (1, *expected.shape) and frames.dtype == np.uint8
    difference = np.abs(frames[0].astype(int) - expected.astype(int)).max()
    assert difference <= tolerance, difference


def _single_category(sample: dict) -> dict:
    sample["categories"] = [{"id": 1, "name": "object"}]
    for obj in sample["objects"]:
        del obj["category_id"]
    return sample


#: Valid samples that look unusual: each must be read (name -> mutation of a good image sample json).
UNUSUAL_SAMPLES = {
    "isthing as 0 / 1": lambda s: (
        s | {"categories": [c | {"isthing": int(c["isthing"])} for c in s["categories"]]}
    ),
    "empty conversation": lambda s: s | {"conversation": []},
    "class-agnostic objects": _single_category,
    "prompts on the frame border": lambda s: bd._prompt(point=[32, 32.0], box=[0, 0, 32, 32], type="box")(s),
    "no-target reference": lambda s: s | {"references": [{"text": "the green cow", "object_ids": []}]},
    "touching phrases": lambda s: bd._phrases([0, 5], [5, 9])(s),
    "unknown extra keys": lambda s: (
        s | {"source_url": "x", "objects": [o | {"score": 1.0} for o in s["objects"]]}
    ),
    "integer frame times": lambda s: s | {"frame_times": [0]},
    "query and explanation": lambda s: s | {"query": "what is round?", "explanation": ""},
    "chat with turns": lambda s: (
        s | {"conversation": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}
    ),
}


@pytest.mark.parametrize("case", sorted(UNUSUAL_SAMPLES))
def test_unusual_but_valid_samples_are_read(case):
    """Each is read as the plain sample is: the same pixels, masks and (but for class-agnostic) labels."""
    sample, image = bd.good_image(1)

    def read(json_sample: dict):
        raw = {"__key__": "u/1", "__url__": "mem", "json": json.dumps(json_sample).encode(), "png": image}
        return decode_sample(raw, ClipSampler())

    plain, clip = read(copy.deepcopy(sample)), read(UNUSUAL_SAMPLES[case](sample))
    assert np.array_equal(clip.frames, plain.frames) and np.array_equal(clip.masks, plain.masks)
    assert clip.masks.any()
    if case == "class-agnostic objects":
        assert clip.labels.tolist() == [0] * len(sample["objects"])
    else:
        assert np.array_equal(clip.labels, plain.labels)


def test_member_extensions_are_case_insensitive(tmp_path):
    members = {ext.upper(): data for ext, data in bd.image_members().items()}
    url = bd.write_shard(tmp_path / "u.tar", [("u/0000000", members)])
    assert [s.key for s in _read(_source([url]), "raise")] == ["u/0000000"]


def test_pixel_limit_is_configurable(tmp_path):
    url = bd.write_shard(tmp_path / "p.tar", [("p/0000000", bd.image_members())])
    with pytest.raises(SampleError, match="over the limit of 1000"):
        _read(_source([url], max_pixels=1000), "raise")
    assert len(_read(_source([url], max_pixels=None), "raise")) == 1


def test_uncompressed_rle_decodes_like_compressed():
    from x2sam_lightning.data.rle import rle_runs

    sample, image = bd.good_image(0)
    raw = {"__key__": "r/1", "__url__": "mem", "png": image}
    expected = decode_sample({**raw, "json": json.dumps(sample).encode()}, ClipSampler())
    for obj in sample["objects"]:
        obj["masks"] = [{"size": m["size"], "counts": rle_runs(m["counts"])} for m in obj["masks"]]
    clip = decode_sample({**raw, "json": json.dumps(sample).encode()}, ClipSampler())
    assert np.array_equal(clip.masks, expected.masks) and clip.masks.any()


def test_reader_checks_the_runs_of_the_frames_it_decodes():
    """``validate_sample`` checks every mask; the reader checks the masks of the clip it decodes."""
    from x2sam_lightning.data.schema import validate_sample

    sample, mp4 = bd.good_video()
    obj = next(o for o in sample["objects"] if o["masks"][3] is not None)
    obj["masks"][3] = {"size": [bd.SIZE, bd.SIZE], "counts": [5]}
    raw = {"__key__": "v/1", "__url__": "mem", "json": json.dumps(sample).encode(), "mp4": mp4}
    with pytest.raises(SampleError, match="frame 3: RLE runs sum to 5 pixels"):
        validate_sample(sample, url="mem", key="v/1")
    assert decode_sample(raw, ClipSampler(2, mode="first")).frame_indices == [0, 1]
    with pytest.raises(SampleError, match="frame 3: RLE runs sum to 5 pixels"):
        decode_sample(raw, ClipSampler(4, mode="first"))


def test_labels_come_from_the_index_vocabulary_never_from_a_guess():
    sample, image = bd.good_image(0)
    categories = sample.pop("categories")
    raw = {"__key__": "c/1", "__url__": "mem", "png": image, "json": json.dumps(sample).encode()}
    clip = decode_sample(raw, ClipSampler(), default_categories=categories)
    ids = [c["id"] for c in categories]
    assert clip.labels.tolist() == [ids.index(o["category_id"]) for o in sample["objects"]]
    assert clip.categories == categories
    with pytest.raises(SampleError, match="not in the index vocabulary"):
        decode_sample(raw, ClipSampler(), default_categories=categories[:1])
    with pytest.raises(SampleError, match="neither the sample nor the index has categories"):
        decode_sample(raw, ClipSampler())


# ------------------------------------------------------------------------------------- errors and workers
def test_errors_pickle_and_survive_the_dataloader_rewrap():
    from torch._utils import ExceptionWrapper

    errors = [
        SampleError("a 'b'.tar", "k/1", "bad thing: x"),
        ShardError("s.tar", "is truncated", "k/2"),
        ShardError("s.tar", "is not a tar file"),
        SourceError("d.index.json", "index lists no shards"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert (copy.url, copy.key, copy.problem) == (error.url, error.key, error.problem)
        try:
            raise error
        except SampleError:
            wrapped = ExceptionWrapper(sys.exc_info(), where="in DataLoader worker process 1")
        with pytest.raises(type(error)) as info:
            wrapped.reraise()
        again = info.value
        assert (again.url, again.key, again.problem) == (error.url, error.key, error.problem)
        assert str(again) == str(error)


def _good_and_bad_shards(
    tmp_path: Path, good: int, per_shard: int, bad_at: int
) -> tuple[list[str], list[str]]:
    urls, keys = [], []
    for n in range(good + 1):
        path = tmp_path / f"m-{n:06d}.tar"
        if n == bad_at:
            path.write_bytes(bd.SHARD_DEFECTS["cut at a sample boundary"][0]())
        else:
            keys += bd.good_image_shard(path, n * per_shard, per_shard, "m")
        urls.append(str(path))
    return urls, keys


@pytest.mark.parametrize("workers", [0, 2])
def test_twenty_good_shards_and_one_bad_give_every_good_sample_once(tmp_path, workers):
    from x2sam_lightning.data.datamodule import SegDataModule

    urls, keys = _good_and_bad_shards(tmp_path, good=20, per_shard=2, bad_at=7)
    source = ShardSource("m", urls=urls, num_samples=40, task="img_genseg", modality="image")
    dm = SegDataModule(
        val_sources={"m": source}, batch_size=4, image_size=32, num_workers=workers, eval_on_error="skip"
    )
    loader = dm.val_dataloader()[0]
    if workers:
        loader.timeout = bd.WORKER_TIMEOUT
    seen = [key for batch in bd.within(120, lambda: list(loader)) for key in batch.keys]
    assert sorted(seen) == sorted(keys) and len(seen) == len(set(seen)) == 40
    assert dm.skip_stats() == {"m": {"samples_skipped": 0, "shards_skipped": 1}}


def test_errors_reach_the_main_process_with_type_and_fields(tmp_path):
    shard = bd.write_shard(
        tmp_path / "w-000000.tar",
        [("w/0000000", bd.image_members()), ("w/0000001", bd.broken_json_sample("schema 3"))],
    )
    (tmp_path / "w-000001.tar").write_bytes(bd.SHARD_DEFECTS["corrupt header"][0]())
    for urls, kind in (([shard], SampleError), ([str(tmp_path / "w-000001.tar")], ShardError)):
        direct = bd.raised(lambda urls=urls: _read(_source(urls), "raise"))
        stream = EvalBatchStream(_source(urls), batch_size=1, image_size=32)
        loader = eval_loader(stream, num_workers=2, timeout=bd.WORKER_TIMEOUT, persistent_workers=False)
        crossed = bd.raised(lambda loader=loader: list(loader))
        assert type(direct) is kind
        bd.same_error_across_workers(direct, crossed)


def _all_bad_source(tmp_path: Path, kind: str) -> ShardSource:
    urls = []
    for n in range(2):
        path = tmp_path / f"x-{n:06d}.tar"
        if kind == "shards":
            path.write_bytes(bd.SHARD_DEFECTS["corrupt header"][0]())
        else:
            bd.write_shard(path, [(f"x/{n}{i}", bd.broken_json_sample("schema 3")) for i in range(3)])
        urls.append(str(path))
    return ShardSource(
        "x", urls=urls, num_samples=6, task="img_genseg", modality="image", max_consecutive_failures=5
    )


@pytest.mark.parametrize(
    ("kind", "on_error", "workers", "expected"),
    [
        ("samples", "skip", 0, SourceError),
        ("shards", "skip", 0, SourceError),
        ("samples", "raise", 0, SampleError),
        ("shards", "skip", 2, SourceError),
        ("shards", "raise", 2, ShardError),
    ],
)
def test_training_on_a_source_with_nothing_usable_stops(tmp_path, kind, on_error, workers, expected):
    stream = MixedBatchStream(
        {"x": _all_bad_source(tmp_path, kind)},
        batch_size=2,
        image_size=32,
        shuffle_buffer=0,
        on_error=on_error,
    )
    loader = MixedBatchLoader(
        stream, num_workers=workers, **({"timeout": bd.WORKER_TIMEOUT} if workers else {})
    )
    error = bd.raised(lambda: next(iter(loader)))
    assert type(error) is expected
    if expected is SourceError and kind == "shards":
        # A source given only urls is counted at start-up: with every shard bad there is nothing to mix.
        assert "source 'x': no readable shard (all 2 skipped" in str(error)
    elif expected is SourceError:
        assert "source 'x': the last 5 reads" in str(error)


def test_no_urls_is_an_error_not_an_endless_loop():
    from x2sam_lightning.data.shards import iter_raw_samples

    with pytest.raises(SourceError, match="no shard urls"):
        bd.within(10, lambda: next(iter_raw_samples([], train=True)))


def test_skip_stats_are_shared_by_workers():
    stats = SkipStats()
    copy = pickle.loads(pickle.dumps(stats))  # a plain pickle copies; DataLoader workers share the memory
    stats.add("samples_skipped", 2)
    stats.add("shards_skipped")
    assert stats.as_dict() == {"samples_skipped": 2, "shards_skipped": 1}
    assert copy.as_dict() == {"samples_skipped": 0, "shards_skipped": 0}
    stats.reset()
    assert stats.as_dict() == {"samples_skipped": 0, "shards_skipped": 0}
