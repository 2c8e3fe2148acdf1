"""Streaming video inference: a video file of any length, segmented frame by frame with bounded memory.

::

    video file ──decord get_batch, one chunk of frames──> uint8 [t, H0, W0, 3]
      ──frames_to_model_input (the data pipeline's resize, normalise, pad)──> [t, 3, S, S]
      ──StreamingDecoder.step (encoder, pixel decoder, memory read, mask decoder, memory write)──>
      per frame [I, Q, ...] ──ObjectSelector──> FrameObjects (ids, scores, masks at the video's size) ──> sink

Nothing here grows with the video's length: one chunk of frames is decoded at a time, the model keeps at
most ``K`` detached frames in its bank (:mod:`~x2sam_lightning.models.streaming`), and each frame's masks
leave through the generator as soon as they exist. The caller writes them (:class:`FrameWriter`) or
scores them and drops them.

Object ids are stable over the video: in stage 1 an object is a decoder query (the memory keeps a query on
its object from frame to frame), in stage 2 a condition of the request (``<p>..</p>``: its id is the
condition's index, whichever query is its best on a frame).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from x2sam_lightning.data.rle import encode_masks
from x2sam_lightning.data.transforms import resized_shape
from x2sam_lightning.imports import require
from x2sam_lightning.models.postprocess import class_probabilities
from x2sam_lightning.models.streaming import DecodeInputs, FrameOutput, StreamingDecoder
from x2sam_lightning.models.x2sam_postprocess import resize_masks
from x2sam_lightning.normalization import frames_to_model_input


class VideoReadError(ValueError):
    """A video file that cannot be read (missing, not a video, corrupt, no frames); names the file."""


class PromptError(ValueError):
    """A request that does not fit the model or the video (a prompt outside the video, text for stage 1)."""


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:200]


class VideoFile:
    """A video read with decord, a chunk of frames at a time (never the whole video).

    Args:
        source: a file path, or the file's bytes.
        name: how errors name it (default: the path).

    Raises:
        VideoReadError: the file is missing, not a decodable video, or has no frames.
    """

    def __init__(self, source: str | Path | bytes, name: str | None = None) -> None:
        self.name = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
        if not isinstance(source, bytes) and not Path(source).is_file():
            raise VideoReadError(f"{self.name}: no such video file")
        decord = require("decord")
        try:
            target = io.BytesIO(source) if isinstance(source, bytes) else str(source)
            self.reader = decord.VideoReader(target, ctx=decord.cpu(0), num_threads=1)
            self.num_frames = len(self.reader)
        except Exception as error:  # decord raises DECORDError / RuntimeError with C++ log text
            raise VideoReadError(f"{self.name}: cannot read the video ({_one_line(error)})") from None
        if self.num_frames == 0:
            raise VideoReadError(f"{self.name}: the video has no frames")
        first = self.frames([0])
        self.height, self.width = int(first.shape[1]), int(first.shape[2])
        self.fps = float(self.reader.get_avg_fps() or 0.0)

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """``[len(indices), H, W, 3]`` uint8 RGB frames.

        Raises:
            VideoReadError: an index outside the video, or frames that do not decode.
        """
        indices = [int(i) for i in indices]
        bad = [i for i in indices if not 0 <= i < self.num_frames]
        if bad:
            raise VideoReadError(
                f"{self.name}: frame {bad[0]} is outside the video's {self.num_frames} frames"
            )
        try:
            return self.reader.get_batch(indices).asnumpy()
        except Exception as error:
            raise VideoReadError(
                f"{self.name}: cannot decode frames {indices[0]}..{indices[-1]} ({_one_line(error)})"
            ) from None

    def chunks(self, chunk_frames: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first frame index, frames [t, H, W, 3])`` over the whole video, ``t <= chunk_frames``."""
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        for start in range(0, self.num_frames, chunk_frames):
            yield start, self.frames(range(start, min(start + chunk_frames, self.num_frames)))


def model_input(frames: np.ndarray | Tensor, image_size: int, device: torch.device | str = "cpu") -> Tensor:
    """``[t, H0, W0, 3]`` uint8 frames -> ``[t, 3, S, S]`` model input on ``device``, as the data pipeline
    makes it (longest side to ``S``, ImageNet-normalised, zero-padded bottom and right)."""
    pixels = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
    h0, w0 = int(pixels.shape[1]), int(pixels.shape[2])
    content = resized_shape(h0, w0, image_size)
    return frames_to_model_input(pixels.to(device)[None], [content], [(h0, w0)], image_size)[0]


@dataclass(frozen=True)
class FrameObjects:
    """The objects segmented on one frame.

    Attributes:
        frame: the frame's index in the video.
        object_ids: ``[O]`` the objects' ids, stable over the video.
        scores: ``[O]`` confidence of each object on this frame.
        masks: ``[O, H, W]`` bool at the video's resolution.
        names: per object, the condition it segments (stage 2), else empty.
    """

    frame: int
    object_ids: list[int]
    scores: Tensor
    masks: Tensor
    names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TrackedObject:
    """One object a request follows (stage 2): the decoding instance and class column it is read from."""

    object_id: int
    instance: int
    column: int
    name: str = ""


class ObjectSelector:
    """Which queries of a frame's predictions are objects, and their ids.

    Args:
        objects: the request's fixed objects (stage 2: each condition of the prompt, its best query on each
            frame), or None for stage 1: every query whose object probability on the frame reaches
            ``score_threshold`` is an object, its id the query's index (``instance * Q + query``).
        score_threshold: the stage-1 threshold.
        class_loss: how the class logits were trained.
    """

    def __init__(
        self,
        objects: Sequence[TrackedObject] | None = None,
        score_threshold: float = 0.5,
        class_loss: Literal["ce", "focal"] = "ce",
    ) -> None:
        self.objects = None if objects is None else list(objects)
        self.score_threshold, self.class_loss = float(score_threshold), class_loss

    def __call__(
        self,
        frame: FrameOutput,
        padded_size: tuple[int, int],
        content_size: tuple[int, int],
        out_size: tuple[int, int],
    ) -> FrameObjects:
        probs = class_probabilities(frame.pred_logits, self.class_loss)  # [I, Q, C]
        num_queries = probs.shape[1]
        if self.objects is None:
            scores, _ = probs.max(-1)
            where = (scores >= self.score_threshold).nonzero()
            ids = [int(i) * num_queries + int(q) for i, q in where.tolist()]
            picked = frame.pred_masks[where[:, 0], where[:, 1]]
            chosen, names = scores[where[:, 0], where[:, 1]], []
        else:
            queries = [int(probs[o.instance, :, o.column].argmax()) for o in self.objects]
            ids = [o.object_id for o in self.objects]
            index = torch.tensor([o.instance for o in self.objects], dtype=torch.long)
            query = torch.tensor(queries, dtype=torch.long)
            column = torch.tensor([o.column for o in self.objects], dtype=torch.long)
            picked = frame.pred_masks[index, query]
            chosen, names = probs[index, query, column], [o.name for o in self.objects]
        masks = resize_masks(picked[:, None], padded_size, content_size, out_size)[:, 0] > 0
        return FrameObjects(frame.frame, ids, chosen.float().cpu(), masks.cpu(), names)


def stream_video(
    segmentor: Any,
    video: VideoFile,
    image_size: int,
    inputs: DecodeInputs | None = None,
    selector: ObjectSelector | None = None,
    chunk_frames: int = 8,
    device: torch.device | str = "cpu",
) -> Iterator[FrameObjects]:
    """Segment every frame of ``video``, a chunk at a time, yielding each frame's objects in order.

    Args:
        segmentor: a :class:`~x2sam_lightning.models.segmentor.Segmentor` (with a mask memory for tracking).
        video: the frames' source.
        image_size: the model input side ``S`` it was trained with.
        inputs: the request's decode inputs (stage 2); None for stage 1.
        selector: turns a frame's predictions into objects (default: stage 1's thresholded queries).
        chunk_frames: frames decoded and run through the model at once (memory grows with it, not with
            the video's length).
        device: where the model runs.
    """
    selector = selector or ObjectSelector()
    stream = StreamingDecoder(segmentor, None if inputs is None else inputs.to(device))
    content = resized_shape(video.height, video.width, image_size)
    padded = (image_size, image_size)
    for _, frames in video.chunks(chunk_frames):
        for frame in stream.step(model_input(frames, image_size, device)):
            yield selector(frame, padded, content, (video.height, video.width))


class FrameWriter:
    """Writes each frame's objects as a JSON line as it comes (the ``predict`` writer's format: masks as
    COCO compressed RLE).

    Each line: ``{"key", "frame", "objects": [{"id", "score", "mask": RLE, "condition"?}]}`` (a frame
    with no object has ``"objects": []``); the first line of a video is a header
    ``{"key", "video", "num_frames", "height", "width", "fps"}``.

    Args:
        path: the ``.jsonl`` file (parent folders are made; an existing file is replaced).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("w")

    def header(self, key: str, video: VideoFile) -> None:
        record = {
            "key": key,
            "video": video.name,
            "num_frames": video.num_frames,
            "height": video.height,
            "width": video.width,
            "fps": video.fps,
        }
        self._write(record)

    def write(self, key: str, frame: FrameObjects) -> None:
        rles = encode_masks(frame.masks.numpy()) if len(frame.object_ids) else []
        objects = [
            {"id": int(i), "score": float(s), "mask": rle}
            for i, s, rle in zip(frame.object_ids, frame.scores.tolist(), rles)
        ]
        for obj, name in zip(objects, frame.names):
            obj["condition"] = name
        self._write({"key": key, "frame": frame.frame, "objects": objects})

    def _write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()  # a frame is on disk when the next one is decoded

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
