"""Broken and unusual inputs for the data-hardening tests, one builder per class of defect.

Every builder starts from a small valid sample of the synthetic recipe (32x32 images, 4-frame videos) and
breaks one thing, so a test can check that exactly that thing is reported. The tables map a case name to
``(builder, expected words of the problem)``:

- :data:`SAMPLE_JSON_DEFECTS`: the sample json breaks the schema (image sample unless the name says video).
- :data:`SAMPLE_MEMBER_DEFECTS`: the members (json bytes, media) of one sample are wrong.
- :data:`SHARD_DEFECTS`: the tar file itself is wrong.
- :func:`unusual_images`: valid images in unusual encodings, with the RGB pixels they must decode to.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import struct
import tarfile
import threading
import zlib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from x2sam_lightning.data import synthetic
from x2sam_lightning.data.rle import encode_mask

SIZE = 32
IMAGE_CFG = synthetic.SyntheticConfig(image_size=SIZE)
VIDEO_CFG = synthetic.SyntheticConfig(image_size=SIZE, frames=4, fps=4.0)


# ------------------------------------------------------------------------------------------ good samples
@cache
def _image(index: int) -> tuple[str, bytes]:
    sample, png, _ = synthetic.make_image_sample(index, "train", IMAGE_CFG)
    return json.dumps(sample), png


@cache
def _video(index: int) -> tuple[str, bytes]:
    sample, mp4, _ = synthetic.make_video_sample(index, "train", VIDEO_CFG)
    return json.dumps(sample), mp4


def good_image(index: int = 0) -> tuple[dict[str, Any], bytes]:
    """A valid image sample json (a fresh copy) and its png."""
    text, png = _image(index)
    return json.loads(text), png


def good_video(index: int = 0) -> tuple[dict[str, Any], bytes]:
    """A valid video sample json (a fresh copy) and its mp4."""
    text, mp4 = _video(index)
    return json.loads(text), mp4


def image_members(index: int = 0) -> dict[str, bytes]:
    sample, png = good_image(index)
    return {"json": json.dumps(sample).encode(), "png": png}


def video_members(index: int = 0) -> dict[str, bytes]:
    sample, mp4 = good_video(index)
    return {"json": json.dumps(sample).encode(), "mp4": mp4}


# --------------------------------------------------------------------------------------- writing shards
def tar_bytes(samples: list[tuple[str, dict[str, bytes]]], **open_kwargs: Any) -> bytes:
    """A tar of ``(key, {ext: bytes})`` samples, members ``<key>.<ext>`` in order (mtime 0)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", **open_kwargs) as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_shard(path: str | os.PathLike, samples: list[tuple[str, dict[str, bytes]]]) -> str:
    Path(path).write_bytes(tar_bytes(samples))
    return str(path)


def write_index(
    folder: str | os.PathLike,
    dataset: str,
    shards: list[tuple[str, int]],
    task: str = "img_genseg",
    modality: str = "image",
    categories: list[dict[str, Any]] | None = None,
) -> str:
    """``<folder>/<dataset>-train.index.json`` for ``(shard file name, num_samples)`` entries."""
    index = {
        "schema": 1,
        "dataset": dataset,
        "split": "train",
        "task": task,
        "modality": modality,
        "num_samples": sum(n for _, n in shards),
        "shards": [{"url": url, "num_samples": n} for url, n in shards],
        "categories": synthetic.CATEGORIES if categories is None else categories,
    }
    path = Path(folder) / f"{dataset}-train.index.json"
    path.write_text(json.dumps(index))
    return str(path)


def good_image_shard(path: str | os.PathLike, first: int, count: int, dataset: str = "good") -> list[str]:
    """Write ``count`` good image samples keyed ``<dataset>/<first + i>``; returns their keys."""
    keys = [f"{dataset}/{first + i:07d}" for i in range(count)]
    write_shard(path, [(key, image_members(i % 8)) for i, key in enumerate(keys)])
    return keys


# ----------------------------------------------------------------------------------------- media makers
def png(image: Image.Image, **save: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def jpeg(image: Image.Image, **save: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, **save)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_claiming(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header claims ``width x height`` (a decompression bomb's calling card)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


def mp4_without_frames(mp4: bytes) -> bytes:
    """The same mp4 with its media data zeroed: the container is intact, no frame decodes."""
    at = mp4.find(b"mdat")
    size = struct.unpack(">I", mp4[at - 4 : at])[0]
    return mp4[: at + 4] + b"\0" * (size - 8) + mp4[at - 4 + size :]


def audio_only_mp4() -> bytes:
    """A valid mp4 with one audio stream and no video stream."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------ sample json defects
def _first_rle(sample: dict[str, Any]) -> dict[str, Any]:
    return next(m for m in sample["objects"][0]["masks"] if m is not None)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A mutation that sets ``sample[a][b]...`` (dotted path, ints index lists) to ``value``."""

    def mutate(sample: dict[str, Any]) -> dict[str, Any]:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = sample
        for part in parents:
            node = node[part]
        node[last] = copy.deepcopy(value)
        return sample

    return mutate


def _drop(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def mutate(sample: dict[str, Any]) -> dict[str, Any]:
        del sample[name]
        return sample

    return mutate


def _with(**keys: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def mutate(sample: dict[str, Any]) -> dict[str, Any]:
        sample.update(copy.deepcopy(keys))
        return sample

    return mutate


def _prompt(**prompt: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return _set("objects.0.prompt", prompt)


def _rle(counts: Any, size: list[int] | None = None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def mutate(sample: dict[str, Any]) -> dict[str, Any]:
        sample["objects"][0]["masks"][0] = {"size": size or [SIZE, SIZE], "counts": counts}
        return sample

    return mutate


def _compressed_counts(height: int, width: int) -> str:
    mask = np.zeros((height, width), bool)
    mask[2:5, 3:9] = True
    return encode_mask(mask)["counts"]


def _second_object_id(sample: dict[str, Any]) -> dict[str, Any]:
    sample["objects"][1]["id"] = sample["objects"][0]["id"]
    return sample


def _unknown_category(sample: dict[str, Any]) -> dict[str, Any]:
    sample["objects"][0]["category_id"] = 99
    return sample


def _no_category(sample: dict[str, Any]) -> dict[str, Any]:
    del sample["objects"][0]["category_id"]
    return sample


def _objects_ids(sample: dict[str, Any]) -> list[int]:
    return [o["id"] for o in sample["objects"]]


def _references(text: Any = "the shape", ids: Any = None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def mutate(sample: dict[str, Any]) -> dict[str, Any]:
        sample["references"] = [
            {"text": text, "object_ids": _objects_ids(sample)[:1] if ids is None else ids}
        ]
        return sample

    return mutate


def _phrases(*spans: list[int], caption: Any = "a red circle and a blue star", ids: Any = None):
    def mutate(sample: dict[str, Any]) -> dict[str, Any]:
        if caption is not None:
            sample["caption"] = caption
        first = _objects_ids(sample)[:1]
        sample["phrases"] = [{"span": list(s), "object_ids": first if ids is None else ids} for s in spans]
        return sample

    return mutate


def _video_frame_times(times: list[float]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return _set("frame_times", times)


def _video_masks(n: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def mutate(sample: dict[str, Any]) -> dict[str, Any]:
        sample["objects"][0]["masks"] = sample["objects"][0]["masks"][:n]
        return sample

    return mutate


#: name -> (mutation of a good sample json, words the problem must contain). Names starting with
#: ``video`` break the video sample, the others the image sample.
SAMPLE_JSON_DEFECTS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "not an object": (lambda s: [s], "sample json should be an object"),
    "schema 3": (_with(schema=3), "unsupported schema 3"),
    "schema true": (_with(schema=True), "unsupported schema True"),
    "missing height": (_drop("height"), "lacks required key 'height'"),
    "height as string": (_with(height="32"), "'height' should be int"),
    "objects not a list": (_with(objects={}), "'objects' should be list"),
    "object not an object": (_with(objects=[3]), "object 0 should be an object"),
    "caption not a string": (_with(caption=5), "'caption' should be str"),
    "unknown task": (_with(task="img_depth"), "task 'img_depth' is not a known task"),
    "task of another modality": (_with(task="vid_genseg"), "does not fit modality 'image'"),
    "unknown modality": (_with(modality="audio"), "modality 'audio' is not one of"),
    "empty dataset": (_with(dataset=" "), "'dataset' is an empty string"),
    "zero width": (_with(width=0), "must be positive"),
    "over the pixel limit": (_with(height=20000, width=20000), "over the limit of"),
    "image with two frames": (_with(num_frames=2), "an image sample must have num_frames 1"),
    "frame_times length": (_with(frame_times=[0.0, 1.0]), "frame_times has 2 entries"),
    "frame_times not numbers": (_with(frame_times=["0"]), "frame_times should be finite numbers"),
    "frame_times negative": (_with(frame_times=[-1.0]), "strictly increasing"),
    "category id repeated": (
        _with(categories=[{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]),
        "categories repeat id 1",
    ),
    "category without name": (_with(categories=[{"id": 1}]), "needs a non-empty string 'name'"),
    "category isthing a string": (
        _with(categories=[{"id": 1, "name": "a", "isthing": "yes"}]),
        "'isthing' should be",
    ),
    "object id repeated": (_second_object_id, "repeats object id"),
    "unknown category id": (_unknown_category, "category_id 99, not in the sample's categories"),
    "object without category": (_no_category, "has no category_id but the sample's categories has 6"),
    "iscrowd as int": (_set("objects.0.iscrowd", 1), "'iscrowd' should be bool"),
    "mask count": (_set("objects.0.masks", [None, None]), "2 masks for num_frames 1"),
    "mask not rle": (_set("objects.0.masks", [[1, 2]]), "not a COCO RLE dict"),
    "rle size": (_rle(_compressed_counts(16, 16), [16, 16]), "RLE size [16, 16] does not match"),
    "rle size not ints": (_rle("00", ["32", 32]), "RLE size should be [height, width] ints"),
    "rle counts an int": (_rle(1024), "RLE counts should be str (compressed) or list"),
    "rle string sums short": (_rle(_compressed_counts(31, 32)), "runs sum to 992 pixels"),
    "rle string sums long": (_rle(_compressed_counts(33, 32)), "runs sum to 1056 pixels"),
    "rle list sums long": (_rle([1000, 25]), "runs sum to 1025 pixels"),
    "rle list negative": (_rle([1030, -6]), "negative run"),
    "rle list not ints": (_rle([1024.0]), "list of ints"),
    "rle string alphabet": (_rle("~~~~"), "outside the COCO alphabet"),
    "rle string cut in a run": (_rle("0P"), "ends inside a run"),
    "rle string non-ascii": (_rle("0\u00e9"), "non-ASCII"),
    "expression empty": (_set("objects.0.expressions", ["  "]), "expressions should be non-empty strings"),
    "expression not a string": (_set("objects.0.expressions", [3]), "expressions should be non-empty"),
    "prompt point outside": (_prompt(point=[40, 3]), "outside the 32x32"),
    "prompt point not numbers": (_prompt(point=["1", 2]), "should be [x, y] finite numbers"),
    "prompt point three values": (_prompt(point=[1, 2, 3]), "should be [x, y]"),
    "prompt box inverted": (_prompt(box=[10, 2, 4, 8]), "is inverted"),
    "prompt box outside": (_prompt(box=[-1, 2, 4, 8]), "outside the 32x32"),
    "prompt box short": (_prompt(box=[1, 2, 4]), "should be [x0, y0, x1, y1]"),
    "prompt scribble empty": (_prompt(scribble=[]), "non-empty list"),
    "prompt scribble point outside": (_prompt(scribble=[[1, 1], [1, 33]]), "scribble point 1"),
    "prompt frame outside": (_prompt(frame=1, point=[1, 1]), "frame 1 is not a frame index in [0, 1)"),
    "prompt frame negative": (_prompt(frame=-1, point=[1, 1]), "frame -1 is not a frame index"),
    "prompt type without its key": (_prompt(type="box", point=[1, 1]), "type is 'box' but it has no 'box'"),
    "prompt unknown type": (_prompt(type="lasso", point=[1, 1]), "type 'lasso' is not one of"),
    "prompt without geometry": (_prompt(frame=0), "has none of"),
    "prompt bad mask": (_prompt(mask={"size": [SIZE, SIZE], "counts": [5]}), "prompt mask: RLE runs sum"),
    "reference empty text": (_references(text=""), "needs a non-empty string 'text'"),
    "reference unknown object": (_references(ids=[99]), "names objects [99]"),
    "reference ids not ints": (_references(ids=["1"]), "'object_ids' should be a list of ints"),
    "phrases without caption": (_phrases([0, 5], caption=None), "without a 'caption'"),
    "phrase outside caption": (_phrases([20, 40]), "is not inside the caption"),
    "phrase empty span": (_phrases([3, 3]), "is not inside the caption"),
    "phrases overlap": (_phrases([0, 6], [4, 10]), "overlap in the caption"),
    "phrase unknown object": (_phrases([0, 5], ids=[99]), "names objects [99]"),
    "phrase without objects": (_phrases([0, 5], ids=[]), "'object_ids' is empty"),
    "conversation assistant first": (
        _with(conversation=[{"role": "assistant", "content": "hi"}]),
        "role is 'assistant', expected 'user'",
    ),
    "conversation roles repeat": (
        _with(conversation=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
        "conversation[1] role is 'user', expected 'assistant'",
    ),
    "conversation content not a string": (
        _with(conversation=[{"role": "user", "content": ["a"]}]),
        "'content' should be a string",
    ),
    "query empty": (_with(query=""), "'query' is an empty string"),
    "video frame_times not increasing": (_video_frame_times([0.0, 0.5, 0.5, 1.0]), "strictly increasing"),
    "video mask count": (_video_masks(3), "3 masks for num_frames 4"),
    "video prompt frame outside": (_prompt(frame=4, point=[1, 1]), "frame 4 is not a frame index in [0, 4)"),
}


def broken_json_sample(name: str) -> dict[str, bytes]:
    """The members of a sample whose json has the defect ``name`` of :data:`SAMPLE_JSON_DEFECTS`."""
    mutate, _ = SAMPLE_JSON_DEFECTS[name]
    if name.startswith("video"):
        sample, mp4 = good_video()
        return {"json": json.dumps(mutate(sample)).encode(), "mp4": mp4}
    sample, image = good_image(1)
    return {"json": json.dumps(mutate(sample)).encode(), "png": image}


# ----------------------------------------------------------------------------------- sample member defects
def _json_text(text: bytes) -> Callable[[], dict[str, bytes]]:
    return lambda: {"json": text, "png": good_image()[1]}


def _image_sample(**changes: Any) -> dict[str, Any]:
    sample, _ = good_image()
    sample.update(changes)
    return sample


def _image_with(media: dict[str, bytes], **changes: Any) -> Callable[[], dict[str, bytes]]:
    return lambda: {"json": json.dumps(_image_sample(**changes)).encode(), **media}


def _video_with(mp4: Callable[[bytes], bytes] | None = None, frames: int | None = None):
    def build() -> dict[str, bytes]:
        sample, data = good_video()
        if frames is not None:
            sample["num_frames"] = frames
            sample["frame_times"] = [i / 4 for i in range(frames)]
            for obj in sample["objects"]:
                obj["masks"] = (obj["masks"] + [None] * frames)[:frames]
        return {"json": json.dumps(sample).encode(), "mp4": data if mp4 is None else mp4(data)}

    return build


def _rotated_png() -> bytes:
    return png(Image.new("RGB", (SIZE, SIZE - 8)))


#: name -> (members of the sample, words the problem must contain).
SAMPLE_MEMBER_DEFECTS: dict[str, tuple[Callable[[], dict[str, bytes]], str]] = {
    "missing json": (lambda: {"png": good_image()[1]}, "missing the 'json' member"),
    "missing media": (lambda: {"json": image_members()["json"]}, "missing image media"),
    "two media": (
        lambda: {**image_members(), "jpg": jpeg(Image.new("RGB", (SIZE, SIZE)))},
        "more than one media",
    ),
    "video frames too few": (
        lambda: {"json": video_members()["json"], "0000.jpg": b"x", "0001.jpg": b"y"},
        "video frame members are numbered [0, 1]",
    ),
    "video frames not decodable": (
        lambda: {
            "json": video_members()["json"],
            **{f"{n:04d}.jpg": b"x" for n in range(json.loads(video_members()["json"])["num_frames"])},
        },
        "cannot decode 0000.jpg image",
    ),
    "image frames on an image": (
        lambda: {"json": image_members()["json"], "0000.jpg": b"x", "0001.jpg": b"y"},
        "more than one media",
    ),
    "video sample with an image": (
        lambda: {"json": video_members()["json"], "png": b"x"},
        "missing video media",
    ),
    "json not json": (_json_text(b"{not json"), "is not valid json"),
    "json with NaN": (_json_text(b'{"schema": NaN}'), "NaN is not a JSON number"),
    "json key twice": (_json_text(b'{"schema": 1, "schema": 1}'), "key 'schema' appears twice"),
    "json not utf-8": (_json_text(b'{"dataset": "caf\xe9"}'), "is not UTF-8 text"),
    "png garbage": (_image_with({"png": b"\x89PNG garbage" * 10}), "cannot decode png image"),
    "png truncated": (_image_with({"png": good_image()[1][:200]}), "cannot decode png image"),
    "png header claims 12000x12000": (_image_with({"png": png_claiming(12000, 12000)}), "over the limit"),
    "png over PIL's own guard": (_image_with({"png": png_claiming(20000, 20000)}), "too large"),
    "jpeg named png is fine but size differs": (
        _image_with({"png": jpeg(Image.new("RGB", (SIZE, SIZE // 2)))}),
        "media size [16, 32] does not match json size [32, 32]",
    ),
    "image of the same area, other shape": (
        _image_with({"png": png(Image.new("RGB", (64, 16)))}),
        "media size [16, 64] (after EXIF orientation) does not match",
    ),
    "index task differs": (_image_with({"png": good_image()[1]}, task="img_ovseg"), "differs from the index"),
    "video garbage": (
        _video_with(lambda _: b"\0\0\0\x18ftypmp42" + b"\x01" * 300),
        "cannot decode mp4 video",
    ),
    "video without frames": (_video_with(mp4_without_frames), "no decodable video frames"),
    "video audio only": (_video_with(lambda _: audio_only_mp4()), "no decodable video frames"),
    "video shorter than json": (_video_with(frames=6), "video has 4 frames but json num_frames is 6"),
    "video longer than json": (_video_with(frames=3), "video has 4 frames but json num_frames is 3"),
}


# ----------------------------------------------------------------------------------------- shard defects
def _good_tar(count: int = 3) -> bytes:
    return tar_bytes([(f"bad/{i:07d}", image_members(i)) for i in range(count)])


def _member_offsets(data: bytes) -> list[int]:
    """Header offsets of the members of an uncompressed tar."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [m.offset for m in tar.getmembers()]


def _cut_at_sample(_: Any = None) -> bytes:
    data = _good_tar()
    return data[: _member_offsets(data)[4]]  # after the second sample's two members


def _cut_in_header() -> bytes:
    data = _good_tar()
    return data[: _member_offsets(data)[3] + 100]


def _cut_in_data() -> bytes:
    data = _good_tar()
    return data[: _member_offsets(data)[3] + 512 + 40]


def _overwrite_header(fill: bytes) -> Callable[[], bytes]:
    def build() -> bytes:
        data = bytearray(_good_tar())
        at = _member_offsets(bytes(data))[2]
        data[at : at + 512] = (fill * 512)[:512]
        return bytes(data)

    return build


def _flip_header_byte() -> bytes:
    data = bytearray(_good_tar())
    at = _member_offsets(bytes(data))[2]
    data[at + 110] ^= 0x5A  # inside the uid field: the checksum no longer matches
    return bytes(data)


def _named(*names: str, link: bool = False) -> Callable[[], bytes]:
    def build() -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
            for n, name in enumerate(names):
                info = tarfile.TarInfo(name)
                data = image_members()["json" if name.endswith("json") else "png"]
                if link and n == len(names) - 1:
                    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                    tar.addfile(info)
                    continue
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    return build


#: name -> (tar bytes, words the problem must contain). The good samples of these shards, if any, are
#: keyed ``bad/...``.
SHARD_DEFECTS: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty file": (lambda: b"", "is an empty file"),
    "not a tar": (lambda: b"this is not a tar archive\n" * 40, "is not a tar file"),
    "random bytes": (
        lambda: bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        "not a tar",
    ),
    "gzip of garbage": (lambda: gzip.compress(b"x" * 1000, mtime=0), "is not a tar file"),
    "gzipped tar cut short": (
        lambda: (lambda z: z[: len(z) * 2 // 3])(gzip.compress(_good_tar(), mtime=0)),
        "cannot be read after member",
    ),
    "tar without members": (lambda: tar_bytes([]), "holds no samples"),
    "only zeros": (lambda: b"\0" * 10240, "holds no samples"),
    "cut at a sample boundary": (_cut_at_sample, "is truncated: it ends after member 'bad/0000001.png'"),
    "cut inside a header": (_cut_in_header, "is truncated inside a member header"),
    "cut inside member data": (_cut_in_data, "is truncated inside the data of member"),
    "corrupt header": (_overwrite_header(b"\xa7"), "has a corrupt member header"),
    "header checksum": (_flip_header_byte, "has a corrupt member header"),
    "zeroed header": (_overwrite_header(b"\0"), "has data after the end-of-archive marker"),
    "absolute name": (
        _named("/bad/0000000.json", "/bad/0000000.png"),
        "member name '/bad/0000000.json' is absolute",
    ),
    "dot-dot name": (_named("bad/../../0000000.json"), "has a '..' component"),
    "key repeated": (
        _named("bad/0000000.json", "bad/0000001.json", "bad/0000000.png"),
        "sample 'bad/0000000': key appears again",
    ),
    "member twice": (
        _named("bad/0000000.json", "bad/0000000.json"),
        "member 'bad/0000000.json' appears twice",
    ),
    "symlink member": (_named("bad/0000000.json", "bad/0000000.png", link=True), "is a link"),
    "member without extension": (_named("bad/0000000"), "is not '<key>.<extension>'"),
    "member name not utf-8": (_named("bad/caf\xe9.json"), "is not valid UTF-8"),
}


# ----------------------------------------------------------------------------------------- unusual images
def unusual_images() -> dict[str, tuple[str, bytes, np.ndarray, int]]:
    """name -> (extension, bytes, expected ``[H, W, 3]`` uint8 RGB, tolerance): valid images in unusual
    encodings (EXIF-rotated, 16-bit, palette with transparency, alpha, CMYK, grayscale, bilevel)."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (SIZE, SIZE), dtype=np.uint16)
    gray = (gray16 >> 8).astype(np.uint8)
    ramp = np.add.outer(np.arange(SIZE), np.arange(SIZE)).astype(np.uint8) * 4
    # Stored 24 wide x 32 high with EXIF orientation 6 (rotate 90 clockwise to display): displayed 32 x 24.
    stored = rng.integers(0, 256, (SIZE, SIZE - 8, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    palette = Image.fromarray(gray).convert("P")
    palette.info["transparency"] = 0
    cmyk = Image.new("CMYK", (SIZE, SIZE), (0, 255, 255, 0))  # pure red
    bilevel = Image.fromarray(gray > 127)
    return {
        "exif rotated png": (
            "png",
            png(Image.fromarray(stored), exif=exif.tobytes()),
            np.rot90(stored, k=-1),
            0,
        ),
        "16-bit gray png": ("png", png(Image.fromarray(gray16)), np.repeat(gray[..., None], 3, 2), 0),
        "palette with transparency": (
            "png",
            png(palette),
            np.asarray(palette.convert("RGB")),
            0,
        ),
        "gray with alpha": (
            "png",
            png(Image.fromarray(gray).convert("LA")),
            np.repeat(gray[..., None], 3, 2),
            0,
        ),
        "rgba": ("png", png(Image.fromarray(rgb).convert("RGBA")), rgb, 0),
        "gray png": ("png", png(Image.fromarray(gray)), np.repeat(gray[..., None], 3, 2), 0),
        "bilevel png": ("png", png(bilevel), np.repeat((gray > 127)[..., None] * np.uint8(255), 3, 2), 0),
        "cmyk jpeg": (
            "jpg",
            jpeg(cmyk),
            np.broadcast_to(np.array([255, 0, 0], np.uint8), (SIZE, SIZE, 3)),
            8,
        ),
        "gray jpeg": ("jpg", jpeg(Image.fromarray(ramp)), np.repeat(ramp[..., None], 3, 2), 6),
    }


# ------------------------------------------------------------------------------------------------ deadline
def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()`` in a daemon thread; fail (instead of hanging the suite) if it runs past ``seconds``."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"still running after {seconds} s: a hang")
    if "error" in result:
        raise result["error"]
    return result.get("value")


#: DataLoader worker deadline (s): a hang fails the test instead of the suite.
WORKER_TIMEOUT = 60


def warnings_with(caplog: Any, needle: str) -> list[str]:
    """The WARNING messages captured by ``caplog`` that contain ``needle`` (one per skipped sample)."""
    import logging

    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and needle in r.getMessage()
    ]


def same_error_across_workers(direct: Any, crossed: Any) -> None:
    """An error raised in a DataLoader worker reaches the main process with its type and fields."""
    assert type(crossed) is type(direct)
    assert (crossed.url, crossed.key, crossed.problem) == (direct.url, direct.key, direct.problem)
    assert str(crossed) == str(direct)


def raised(fn: Callable[[], Any], seconds: float = 120) -> Any:
    """The data error ``fn`` raises (within ``seconds``), without its traceback (which would keep a
    DataLoader iterator and its worker processes alive into the next test)."""
    from x2sam_lightning.data.errors import SampleError

    try:
        within(seconds, fn)
    except SampleError as error:
        error.__traceback__ = None
        return error
    raise AssertionError("no error raised")
