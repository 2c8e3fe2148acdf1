"""A :class:`~x2sam_lightning.types.Conversation` as the token ids the LLM reads, and where things are.

The turns are Qwen's ChatML (``<|im_start|>role\\n ... <|im_end|>\\n``), the same bytes as the
tokenizer's chat template with the image as the first content item (a test checks it). Markers are
mapped to tokens here:

- ``<image>`` -> ``<|vision_start|>`` + one ``<|image_pad|>`` per vision token + ``<|vision_end|>``;
- ``<video>`` -> what ``Qwen3VLProcessor`` makes of the chat template's video item: inside an outer
  ``<|vision_start|> .. <|vision_end|>``, per temporal patch its time as text (``<1.2 seconds>``, the mean
  of the patch's first and last frame times) + ``<|vision_start|>`` + one ``<|video_pad|>`` per vision
  token of the patch + ``<|vision_end|>`` (checked against the processor's own output on a fixture). A
  video of one frame is read as an image (``<image>``'s tokens; its pixels go the image path too);
- ``<region>`` -> ``tokens_per_region`` ``<region>`` tokens (the region sampler's features replace them);
- ``<p>``, ``</p>``, ``<SEG>`` -> their added special tokens.

Text between markers is tokenised on its own, as a special token splits text anyway.

Only the assistant turns are learned: their content tokens and their ``<|im_end|>`` carry labels; every
other position (and padding) is ``-100``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from x2sam_lightning.models.vision_inputs import video_timestamps
from x2sam_lightning.special_tokens import IMAGE, P_END, P_START, REGION, SEG, VIDEO
from x2sam_lightning.types import Conversation

IGNORE_INDEX = -100
_MARKERS = re.compile("(" + "|".join(re.escape(m) for m in (IMAGE, VIDEO, P_START, P_END, SEG, REGION)) + ")")
_TEXT_CACHE_SIZE = 4096


@dataclass
class EncodedChat:
    """One conversation as tokens.

    Attributes:
        input_ids: token ids.
        labels: the id where the token is learned, else ``-100``.
        mm_token_type_ids: 1 at image tokens, 2 at video tokens, 0 elsewhere (Qwen3-VL's M-RoPE needs
            it; timestamps and vision start / end tokens are text, as the processor marks them).
        region_positions: token indices of every ``<region>`` token (all regions, in order).

    Conditions and ``<SEG>`` are found again in the ids (``X2SAM.find_conditions``): a generated reply
    is read the same way as an encoded one.
    """

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    mm_token_type_ids: list[int] = field(default_factory=list)
    region_positions: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


class ChatEncoder:
    """Turns conversations into :class:`EncodedChat` for one tokenizer.

    Args:
        tokenizer: A Qwen-style tokenizer with the added tokens of ``special_tokens``.
        image_tokens: ``<|image_pad|>`` tokens per image, and ``<|video_pad|>`` tokens per temporal patch
            of a video (frames of the same size).
        tokens_per_region: tokens one ``<region>`` becomes (the region sampler's output length).
        temporal_patch_size: video frames per temporal patch (the vision tower's).
    """

    def __init__(
        self, tokenizer, image_tokens: int, tokens_per_region: int, temporal_patch_size: int = 2
    ) -> None:
        self.tokenizer = tokenizer
        self.image_tokens, self.tokens_per_region = int(image_tokens), int(tokens_per_region)
        self.temporal_patch_size = int(temporal_patch_size)
        ids = tokenizer.convert_tokens_to_ids
        self.ids = {
            name: ids(name)
            for name in (
                "<|im_start|>",
                "<|im_end|>",
                "<|vision_start|>",
                "<|vision_end|>",
                "<|image_pad|>",
                "<|video_pad|>",
                P_START,
                P_END,
                SEG,
                REGION,
            )
        }
        self._text_cache: dict[str, list[int]] = {}

    def _text(self, text: str) -> list[int]:
        if len(self._text_cache) >= _TEXT_CACHE_SIZE:  # captions and expressions rarely repeat: stay bounded
            self._text_cache.clear()
        if text not in self._text_cache:
            self._text_cache[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._text_cache[text]

    def encode(
        self,
        conversation: Conversation,
        generation_prompt: bool = False,
        frame_times: Sequence[float] | None = None,
    ) -> EncodedChat:
        """Encode every turn; with ``generation_prompt`` stop before the last reply (the one evaluation
        scores: ``Conversation.answer``; earlier turns stay as context) and open it.

        Args:
            conversation: the sample's conversation.
            generation_prompt: end with an open assistant turn instead of the last reply.
            frame_times: seconds of each frame the LLM reads, for a video of more than one frame; None
                for an image or a one-frame video (both read as an image).

        Raises:
            ValueError: an ``<image>`` conversation given several frames.
        """
        if frame_times is not None and len(frame_times) < 2:
            frame_times = None  # a one-frame video is read as an image
        video = None if frame_times is None else self._video_ids(frame_times)
        out = EncodedChat()
        open_span: int | None = None
        messages = conversation.messages
        if generation_prompt:
            replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
            messages = messages[: replies[-1]] if replies else messages
        for message in messages:
            role, learned = message["role"], message["role"] == "assistant"
            self._append(out, [self.ids["<|im_start|>"], *self._text(f"{role}\n")], learned=False)
            for piece in _MARKERS.split(message["content"]):
                if not piece:
                    continue
                if piece in (IMAGE, VIDEO):
                    if video is None:
                        self._append(out, [self.ids["<|vision_start|>"]], learned)
                        self._append(out, [self.ids["<|image_pad|>"]] * self.image_tokens, learned, kind=1)
                        self._append(out, [self.ids["<|vision_end|>"]], learned)
                    elif piece == IMAGE:
                        raise ValueError(
                            f"an {IMAGE} conversation ({conversation.template!r}) was given {len(frame_times)} "
                            f"frames: a clip's conversation says {VIDEO}"
                        )
                    else:
                        for ids, kind in video:
                            self._append(out, ids, learned, kind=kind)
                elif piece == REGION:
                    out.region_positions.extend(range(len(out), len(out) + self.tokens_per_region))
                    self._append(out, [self.ids[REGION]] * self.tokens_per_region, learned)
                elif piece == P_START:
                    if open_span is not None:
                        raise ValueError(f"nested {P_START} in {message['content']!r}")
                    open_span = len(out)
                    self._append(out, [self.ids[P_START]], learned)
                elif piece == P_END:
                    if open_span is None:
                        raise ValueError(f"{P_END} without {P_START} in {message['content']!r}")
                    self._append(out, [self.ids[P_END]], learned)
                    open_span = None
                elif piece == SEG:
                    self._append(out, [self.ids[SEG]], learned)
                else:
                    self._append(out, self._text(piece), learned)
            self._append(out, [self.ids["<|im_end|>"]], learned)
            self._append(out, self._text("\n"), learned=False)
        if open_span is not None:
            raise ValueError(f"unclosed {P_START} in conversation {conversation.template!r}")
        if generation_prompt:
            self._append(out, [self.ids["<|im_start|>"], *self._text("assistant\n")], learned=False)
        return out

    def _video_ids(self, frame_times: Sequence[float]) -> list[tuple[list[int], int]]:
        """The placeholder of one video as ``(ids, mm token type)`` runs (see the module docstring)."""
        start, end = self.ids["<|vision_start|>"], self.ids["<|vision_end|>"]
        runs: list[tuple[list[int], int]] = [([start], 0)]
        for seconds in video_timestamps(frame_times, self.temporal_patch_size):
            runs.append(([*self._text(f"<{seconds:.1f} seconds>"), start], 0))
            runs.append(([self.ids["<|video_pad|>"]] * self.image_tokens, 2))
            runs.append(([end], 0))
        runs.append(([end], 0))
        return runs

    @staticmethod
    def _append(out: EncodedChat, ids: Sequence[int], learned: bool, kind: int = 0) -> None:
        out.input_ids.extend(ids)
        out.labels.extend(ids if learned else [IGNORE_INDEX] * len(ids))
        out.mm_token_type_ids.extend([kind] * len(ids))


def pad_batch(chats: Sequence[EncodedChat], pad_id: int, left: bool = False) -> dict[str, Tensor]:
    """Stack encoded chats: ``input_ids``, ``labels``, ``mm_token_type_ids``, ``attention_mask`` ``[B, L]``
    (right padded, or left padded for generation)."""
    length = max(len(c) for c in chats)
    batch = {
        "input_ids": torch.full((len(chats), length), pad_id, dtype=torch.long),
        "labels": torch.full((len(chats), length), IGNORE_INDEX, dtype=torch.long),
        "mm_token_type_ids": torch.zeros(len(chats), length, dtype=torch.long),
        "attention_mask": torch.zeros(len(chats), length, dtype=torch.long),
    }
    for b, chat in enumerate(chats):
        start = length - len(chat) if left else 0
        span = slice(start, start + len(chat))
        batch["input_ids"][b, span] = torch.tensor(chat.input_ids)
        batch["labels"][b, span] = torch.tensor(chat.labels)
        batch["mm_token_type_ids"][b, span] = torch.tensor(chat.mm_token_type_ids)
        batch["attention_mask"][b, span] = 1
    return batch
