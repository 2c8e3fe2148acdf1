"""Segment a video file of any length: the Python call behind ``predict`` on a video.

::

    from x2sam_lightning.inference.video_predictor import VideoPredictor

    predictor = VideoPredictor(module, image_size=128)          # an AgnosticSegmentor or an X2SAMJoint
    for frame in predictor.segment_video("clip.mp4", chunk_frames=8):
        frame.frame, frame.object_ids, frame.masks              # [O, H, W] bool at the video's size
    predictor.write_video("clip.mp4", "clip.frames.jsonl")      # the same, one JSON line per frame

    # stage 2: the LLM reads the instruction on frames sampled over the video, once; every frame is then
    # segmented through the mask memory with the decode inputs it produced (one object per condition)
    predictor.segment_video("clip.mp4", text="Please segment <p>the red circle</p> in this video.")
    predictor.segment_video("clip.mp4", text="... <p><region></p> ...", prompts=[{"box": [..], "frame": 3}])

Stage 1 (``AgnosticSegmentor``): no language; every decoder query whose object probability on a frame
reaches ``score_threshold`` is an object, its id the query's index.

Stage 2 (``X2SAMJoint``): :func:`x2sam_request` runs ``X2SAM.generate`` once on ``language_frames`` frames
sampled evenly over the video (plus each visual prompt's frame) and records the ``Segmentor.decode``
inputs the reply's ``<SEG>`` tokens produced; the streaming engine reuses them for every chunk. More than
one sampled frame needs Qwen3-VL video input (``<video>``, built on the ``qwen-video`` branch: until it
lands ``ChatEncoder`` raises NotImplementedError for it); ``language_frames=1`` reads one frame as an image
and works today.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from x2sam_lightning.data.transforms import resized_shape
from x2sam_lightning.data.visual_prompts import PROMPT_TYPES, render_prompt
from x2sam_lightning.inference.video_stream import (
    FrameObjects,
    FrameWriter,
    ObjectSelector,
    PromptError,
    TrackedObject,
    VideoFile,
    model_input,
    stream_video,
)
from x2sam_lightning.models.streaming import DecodeInputs, generate_decode_inputs
from x2sam_lightning.special_tokens import IMAGE, P_END, P_START, REGION, SEG, VIDEO


@dataclass
class VideoRequest:
    """What stage 2's language side decided for one video: the decode inputs and the objects to follow.

    Attributes:
        inputs: the ``Segmentor.decode`` inputs of the reply's ``<SEG>`` instances (None: the reply has no
            ``<SEG>``, so every frame has no object).
        objects: the objects (one per condition the reply segments).
        reply: the generated reply, markers included.
        sampled_frames: the frames the LLM read.
    """

    inputs: DecodeInputs | None
    objects: list[TrackedObject] = field(default_factory=list)
    reply: str = ""
    sampled_frames: list[int] = field(default_factory=list)


#: ``(video, text, prompts) -> VideoRequest``: the language side of a stage-2 request.
RequestFn = Callable[[VideoFile, str, list[dict[str, Any]]], VideoRequest]


def sample_frames(num_frames: int, count: int, required: Sequence[int] = ()) -> list[int]:
    """``count`` frame indices spread evenly over the video (first and last included), plus ``required``."""
    if count < 1:
        raise ValueError(f"the language side reads at least one frame, not {count}")
    even = np.linspace(0, num_frames - 1, min(count, num_frames)).round().astype(int).tolist()
    return sorted(set(even) | {int(f) for f in required})


def check_prompts(prompts: Sequence[dict[str, Any]], num_frames: int, name: str) -> None:
    """Each visual prompt has one geometry and a ``frame`` inside the video.

    Raises:
        PromptError: naming the prompt and the video.
    """
    for n, prompt in enumerate(prompts):
        kinds = [k for k in PROMPT_TYPES if k in prompt]
        if len(kinds) != 1:
            raise PromptError(f"prompt {n} needs exactly one of {PROMPT_TYPES}, got keys {sorted(prompt)}")
        frame = int(prompt.get("frame", 0))
        if not 0 <= frame < num_frames:
            raise PromptError(
                f"prompt {n} is on frame {frame}, but {name} has {num_frames} frames (0..{num_frames - 1})"
            )


def x2sam_request(
    module: Any,
    image_size: int,
    language_frames: int = 16,
    max_new_tokens: int | None = None,
    device: torch.device | str = "cpu",
) -> RequestFn:
    """The stage-2 language side for an ``X2SAMJoint`` module (see the module docstring).

    Args:
        module: the stage-2 LightningModule (``module.net`` is the ``X2SAM``).
        image_size: the segmentation input side.
        language_frames: frames sampled evenly over the video for the LLM (the paper's demo: 16).
        max_new_tokens: reply length limit (default: the module's).
        device: where the model runs.
    """
    from x2sam_lightning.types import Conversation, SegBatch, TrackTargets

    net = module.net

    def request(video: VideoFile, text: str, prompts: list[dict[str, Any]]) -> VideoRequest:
        check_prompts(prompts, video.num_frames, video.name)
        if text.count(REGION) != len(prompts):
            raise PromptError(
                f"the text has {text.count(REGION)} {REGION} markers for {len(prompts)} prompts"
            )
        frames = sample_frames(video.num_frames, language_frames, [int(p.get("frame", 0)) for p in prompts])
        pixels = model_input(video.frames(frames), image_size, device)[None]  # [1, F, 3, S, S]
        content = resized_shape(video.height, video.width, image_size)
        position = {f: i for i, f in enumerate(frames)}
        regions = None
        if prompts:
            regions = torch.zeros(len(prompts), len(frames), image_size, image_size, dtype=torch.bool)
            for n, prompt in enumerate(prompts):
                kind = next(k for k in PROMPT_TYPES if k in prompt)
                drawn = render_prompt(
                    kind,
                    prompt[kind],
                    source_size=(video.height, video.width),
                    content_size=content,
                    canvas_size=(image_size, image_size),
                )
                regions[n, position[int(prompt.get("frame", 0))]] = torch.from_numpy(drawn)
        marker = IMAGE if len(frames) == 1 else VIDEO
        conversation = Conversation(
            messages=[{"role": "user", "content": text if marker in text else f"{marker}\n{text}"}],
            mode="auto",
            regions=regions,
            region_frames=[position[int(p.get("frame", 0))] for p in prompts],
        )
        t = len(frames)
        empty = TrackTargets(
            torch.zeros(0, t, image_size, image_size, dtype=torch.bool),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, t, dtype=torch.bool),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, dtype=torch.bool),
        )
        batch = SegBatch(
            pixel_values=pixels,
            targets=[empty],
            image_sizes=torch.tensor([content]),
            original_sizes=torch.tensor([[video.height, video.width]]),
            keys=[video.name],
            tasks=["inference"],
            source="predictor",
            conversations=[conversation],
        ).to(device)
        limit = max_new_tokens or module.hparams.max_new_tokens
        generator = torch.Generator().manual_seed(module.hparams.eval_seed)
        out, replies, inputs = generate_decode_inputs(net, batch, limit, generator)
        tokenizer = net.vl_backbone.tokenizer
        reply = tokenizer.decode(replies[0], skip_special_tokens=False)
        if inputs is None:
            return VideoRequest(None, [], reply, frames)

        def name(k: int) -> str:
            first, last = out.condition_spans[0][k]
            words = tokenizer.decode(out.input_ids[0, first : last + 1].tolist(), skip_special_tokens=False)
            for marker in (P_START, P_END, SEG):
                words = words.replace(marker, "")
            return " ".join(words.split())

        objects = []
        for i, inst in enumerate(out.instances):
            columns = [inst.own] if inst.own is not None else range(len(inst.conditions))
            for column in columns:
                k = inst.conditions[column][1]
                objects.append(TrackedObject(k, i, column, name(k)))
        return VideoRequest(inputs, objects, reply, frames)

    return request


class VideoPredictor:
    """Streams videos through a trained module, stage 1 or stage 2.

    Args:
        module: an ``AgnosticSegmentor`` (``module.segmentor``) or an ``X2SAMJoint`` (``module.net``).
        image_size: the segmentation input side it was trained with.
        device: where to run.
        score_threshold: stage 1: the object probability a query needs on a frame to be reported.
        language_frames: stage 2: frames the LLM reads (sampled evenly over the video).
        request: stage 2's language side (default: :func:`x2sam_request` for a module with ``net``).
    """

    def __init__(
        self,
        module: Any,
        image_size: int,
        device: str | torch.device = "cpu",
        score_threshold: float = 0.5,
        language_frames: int = 16,
        request: RequestFn | None = None,
    ) -> None:
        self.module = module.to(device).eval()
        self.image_size, self.device = int(image_size), torch.device(device)
        self.score_threshold = float(score_threshold)
        net = getattr(module, "net", None)
        self.segmentor = net.segmentor if net is not None else module.segmentor
        self.stage2 = net is not None
        if self.stage2:
            self.class_loss = module.evaluator.class_loss
            self.request = request or x2sam_request(module, self.image_size, language_frames, device=device)
        else:
            self.class_loss = getattr(module.postprocess, "class_loss", "ce")
            self.request = request

    def segment_video(
        self,
        video: str | Path | bytes | VideoFile,
        text: str | None = None,
        prompts: Sequence[dict[str, Any]] | None = None,
        chunk_frames: int = 8,
    ) -> Iterator[FrameObjects]:
        """Every frame's objects, in order, as they are produced (a generator: consume and drop them).

        Args:
            video: a file path (or its bytes, or an open :class:`VideoFile`).
            text: stage 2: the instruction (conditions in ``<p>..</p>``, ``<region>`` for visual prompts).
            prompts: stage 2: one per ``<region>``: ``{"point" | "scribble" | "box" | "mask": ..., "frame": t}``
                in the video's pixels (``frame`` defaults to 0).
            chunk_frames: frames decoded and run through the model at once.

        Raises:
            VideoReadError: the file cannot be read (named in the message).
            PromptError: stage 1 given text or prompts, stage 2 without text, a prompt on a frame outside
                the video.
        """
        video = video if isinstance(video, VideoFile) else VideoFile(video)
        prompts = list(prompts or [])
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        if not self.stage2 and self.request is None:
            if text is not None or prompts:
                raise PromptError(
                    "a stage-1 (agnostic) segmentor takes no text or visual prompt: it proposes every object"
                )
            return self._stream(
                video, None, ObjectSelector(None, self.score_threshold, self.class_loss), chunk_frames
            )
        if text is None:
            raise PromptError("a stage-2 model needs the instruction (text=...)")
        check_prompts(prompts, video.num_frames, video.name)
        request = self.request(video, text, prompts)
        if request.inputs is None:  # the reply segments nothing: every frame has no object
            return (FrameObjects(t, [], torch.zeros(0), _no_masks(video)) for t in range(video.num_frames))
        selector = ObjectSelector(request.objects, class_loss=self.class_loss)
        return self._stream(video, request.inputs, selector, chunk_frames)

    def _stream(
        self, video: VideoFile, inputs: DecodeInputs | None, selector: ObjectSelector, chunk_frames: int
    ) -> Iterator[FrameObjects]:
        return stream_video(
            self.segmentor, video, self.image_size, inputs, selector, chunk_frames, device=self.device
        )

    def write_video(
        self,
        video: str | Path | bytes | VideoFile,
        output: str | Path,
        key: str | None = None,
        text: str | None = None,
        prompts: Sequence[dict[str, Any]] | None = None,
        chunk_frames: int = 8,
    ) -> int:
        """Segment ``video`` and append one JSON line per frame to ``output`` as each frame is done
        (:class:`~x2sam_lightning.inference.video_stream.FrameWriter`). Returns the frames written."""
        video = video if isinstance(video, VideoFile) else VideoFile(video)
        key = key or Path(video.name).stem
        written = 0
        frames = self.segment_video(video, text=text, prompts=prompts, chunk_frames=chunk_frames)
        with FrameWriter(output) as writer:
            writer.header(key, video)
            for frame in frames:
                writer.write(key, frame)
                written += 1
        return written


def _no_masks(video: VideoFile) -> torch.Tensor:
    return torch.zeros(0, video.height, video.width, dtype=torch.bool)
