"""Streaming a video of any length through the segmentor, a chunk of frames at a time.

:class:`StreamingDecoder` holds what one request carries from chunk to chunk, and nothing else: the
mask memory's bank (at most ``K`` detached frames, :mod:`~x2sam_lightning.models.memory_bank`), the
request's decode inputs and the next frame's index. Each :meth:`StreamingDecoder.step` runs one chunk
through mask encoder -> pixel decoder -> memory read -> mask decoder -> memory write
(:meth:`Segmentor.decode_frames`) under ``no_grad`` and returns that chunk's per-frame outputs; the caller
consumes them (a writer, a metric accumulator) and drops them. So time per frame and memory do not depend on
the video's length, and the frames of a chunked video get the masks the whole clip decoded at once gets
(``Segmentor.decode``; up to float rounding: the encoder and pixel decoder see other batch sizes).

Both stages use it: stage 1 (``AgnosticSegmentor``) streams with no language inputs, one decoding instance
per video; stage 2 (``X2SAM``) passes the ``Segmentor.decode`` keyword arguments its LLM produced for the
request (one row per ``<SEG>`` instance: ``prompt``, ``condition_tokens``, ``conditions``, ...), computed
once (:func:`generate_decode_inputs`: the predictor on sampled frames, evaluation on a video's first
chunk) and reused for every chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from x2sam_lightning.models.memory_bank import MemoryBank
from x2sam_lightning.models.segmentor import Segmentor


@dataclass(frozen=True)
class DecodeInputs:
    """What the mask decoder reads for one request, shared by every frame.

    Attributes:
        language: the :meth:`Segmentor.decode` keyword arguments of stage 2, one row per decoding
            instance (``prompt [I, D]``, ``condition_tokens [I, L, D]``, ``condition_token_padding [I, L]``,
            ``conditions [I, K, D]``, ``condition_padding_mask [I, K]``); empty for stage 1.
        num_instances: ``I``; stage 1 decodes one instance per video.
    """

    language: Mapping[str, Tensor] = field(default_factory=dict)
    num_instances: int = 1

    def __post_init__(self) -> None:
        rows = {name: int(value.shape[0]) for name, value in self.language.items()}
        if self.num_instances < 1 or any(n != self.num_instances for n in rows.values()):
            raise ValueError(
                f"decode inputs for {self.num_instances} instances have rows {rows} (one row per instance)"
            )

    @classmethod
    def from_language(cls, language: Mapping[str, Tensor | None]) -> DecodeInputs:
        """From ``Segmentor.decode`` keyword arguments (None values dropped), ``I`` read from them."""
        kept = {k: v for k, v in language.items() if v is not None}
        return cls(kept, int(next(iter(kept.values())).shape[0]) if kept else 1)

    def to(self, device: torch.device | str) -> DecodeInputs:
        return DecodeInputs({k: v.to(device) for k, v in self.language.items()}, self.num_instances)


@dataclass(frozen=True)
class FrameOutput:
    """The decoder's predictions for one frame of the video.

    Attributes:
        frame: the frame's index in the video (absolute, counted from the first streamed frame).
        pred_logits: ``[I, Q, C+1]`` class logits of every instance's queries.
        pred_masks: ``[I, Q, h, w]`` mask logits (stride 4 of the padded model input).
    """

    frame: int
    pred_logits: Tensor
    pred_masks: Tensor


class StreamingDecoder:
    """The state of one streamed request: the bank, the decode inputs and the frame counter.

    Args:
        segmentor: the segmentor (with or without a mask memory; without one, frames are independent and
            only the frame counter carries over).
        inputs: the request's decode inputs (default: stage 1, one instance, no language).

    Example:
        >>> stream = StreamingDecoder(model.segmentor)
        >>> for chunk in chunks:                     # [t, 3, S, S] model input
        ...     for frame in stream.step(chunk):     # t FrameOutputs, in order
        ...         sink(frame)
    """

    def __init__(self, segmentor: Segmentor, inputs: DecodeInputs | None = None) -> None:
        self.segmentor = segmentor
        self.inputs = inputs or DecodeInputs()
        memory = segmentor.mask_memory
        self.bank: MemoryBank | None = None if memory is None else memory.empty(detach=True)
        self.next_frame = 0

    @torch.no_grad()
    def step(self, pixel_values: Tensor) -> list[FrameOutput]:
        """Decode the next chunk of frames.

        Args:
            pixel_values: ``[t, 3, S, S]`` (or ``[1, t, 3, S, S]``) model input of the next ``t`` frames.

        Returns:
            ``t`` per-frame outputs, in order.
        """
        if pixel_values.dim() == 4:
            pixel_values = pixel_values[None]
        if pixel_values.dim() != 5 or pixel_values.shape[0] != 1:
            raise ValueError(f"a chunk is [t, 3, S, S] frames of one video, got {list(pixel_values.shape)}")
        t = int(pixel_values.shape[1])
        if t == 0:
            return []
        inputs = self.inputs
        samples = torch.zeros(inputs.num_instances, dtype=torch.long, device=pixel_values.device)
        features = self.segmentor.encode(pixel_values)
        decoded, bank = self.segmentor.decode_frames(
            features, t, memory=self.bank, instance_samples=samples, **inputs.language
        )
        if self.bank is not None:
            self.bank = bank
        first, self.next_frame = self.next_frame, self.next_frame + t
        # Only the final layer's outputs leave: the auxiliary layers' are dropped with the chunk.
        return [
            FrameOutput(first + i, out["pred_logits"], out["pred_masks"]) for i, out in enumerate(decoded)
        ]


@contextmanager
def capture_decode(segmentor: torch.nn.Module) -> Iterator[list[dict[str, Tensor]]]:
    """Record the language keyword arguments of every ``segmentor.decode`` call made inside the block.

    This is the seam between stage 2's language side and the streaming engine: whatever ``X2SAM`` computes
    for its ``<SEG>`` instances (prompt, condition tokens, conditions and their padding) is exactly what
    it hands the segmentor, so it is read there, without a second code path that could drift from it.
    """
    calls: list[dict[str, Tensor]] = []
    original = segmentor.decode

    def recording(features: Any, num_frames: int, instance_samples: Any = None, **language: Any) -> Any:
        calls.append({k: v.detach() for k, v in language.items() if v is not None})
        return original(features, num_frames, instance_samples=instance_samples, **language)

    segmentor.decode = recording  # an instance attribute: shadows the method until deleted
    try:
        yield calls
    finally:
        del segmentor.decode


def generate_decode_inputs(
    net: Any, batch: Any, max_new_tokens: int, generator: torch.Generator | None = None
) -> tuple[Any, list[list[int]], DecodeInputs | None]:
    """``X2SAM.generate`` on a one-sample ``batch`` and the decode inputs its reply's ``<SEG>`` instances
    handed the segmentor (:func:`capture_decode`), to stream the rest of the video with.

    Returns:
        The pass's ``X2SAMOutput``, the generated replies and the decode inputs (None: no ``<SEG>``).
    """
    with capture_decode(net.segmentor) as calls, torch.no_grad():
        out, replies = net.generate(batch, max_new_tokens, generator)
    inputs = DecodeInputs.from_language(calls[-1]) if out.instances and calls else None
    return out, replies, inputs
