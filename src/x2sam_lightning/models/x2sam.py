"""X2SAM as one ``nn.Module``: the LLM reads the instruction (and visual prompts) and steers the decoder.

Data flow of one batch (DESIGN.md section 1)::

    frames ──mask encoder──> features ──region sampler (+ region projector)──> region tokens ─┐
    frames ──Qwen3-VL vision──────────────────────────────────────────────────────────────┐  │
    conversation ──chat encoder──> token ids ──────────────────────────────> LLM <────────┴──┘
    LLM hidden states ──MLLM projector──> <SEG> prompts, condition tokens, pooled conditions
    features ──pixel decoder──> mask decoder (one decoding instance per <SEG>) ──> masks, class logits

Decoding instances (see :class:`~x2sam_lightning.types.Conversation`): a ``set`` sample's ``<SEG>`` is
scored against that sample's conditions; a ``per_condition`` ``<SEG>`` belongs to the nearest condition
before it and, in training, is scored against the conditions of every ``per_condition`` sample of the
batch (the others are its negatives, as in the authors' code, except those of the very same words); in
evaluation only against its own sample's, so a score does not depend on the batch it was computed in.

Condition embedding = mean of the projected hidden states over the ``<p> .. </p>`` span (tags included, as
the authors do; or the tokens inside it, ``condition_pooling="inner"``); the ``<SEG>`` prompt = the projected
hidden state at the ``<SEG>`` token (X-SAM's choice: project, then pool).

Images and videos: the mask encoder and decoder read all ``T`` frames of the batch (``[B, T, ...]``). The
LLM reads a *video* when it is given more than one frame: the clip's frames (or ``video_llm_frames`` of
them, spread evenly) as Qwen3-VL ``pixel_values_videos``, the ``<video>`` marker expanded with each
temporal patch's time (``frame_times`` of the sample's meta, else its ``frame_indices`` / 24 fps, as
``Qwen3VLProcessor`` assumes without metadata). One frame (an image, or a one-frame clip) goes the image
path: a Qwen3-VL video of one frame is that frame repeated to fill a temporal patch, the very pixels of
the image path, so the image path only drops the timestamp and the outer vision tokens. Region prompts
are sampled on the mask-encoder features of their prompt frame, whichever frames the LLM reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from x2sam_lightning.models.chat_encoding import IGNORE_INDEX, ChatEncoder, EncodedChat, pad_batch
from x2sam_lightning.models.mask_encoder import MaskEncoderOutput
from x2sam_lightning.models.projector import MLPProjector
from x2sam_lightning.models.region_sampler import RegionSampler
from x2sam_lightning.models.segmentor import Segmentor
from x2sam_lightning.models.vl_backbone import VLBackbone
from x2sam_lightning.special_tokens import P_END, P_START, REGION, SEG
from x2sam_lightning.types import Conversation, SegBatch, TrackTargets

#: Frame rate assumed for a clip whose frames carry no times (``Qwen3VLProcessor``'s assumption too).
DEFAULT_FPS = 24.0


@dataclass
class DecodeInstance:
    """One ``<SEG>`` decoded by the mask decoder.

    Attributes:
        sample: batch index of its sample.
        seg_position: token index of the ``<SEG>`` in the (padded) sequence.
        conditions: the conditions its class logits score, as ``(sample, condition index)`` pairs, in
            logit column order (the no-object column follows them).
        own: column of the ``<SEG>``'s own condition (``per_condition``), or None (``set``: all columns).
    """

    sample: int
    seg_position: int
    conditions: list[tuple[int, int]]
    own: int | None = None


@dataclass
class X2SAMOutput:
    """Everything a step needs from one pass.

    Attributes:
        lm_logits: ``[B, L, V]``.
        lm_loss: mean token cross-entropy over the learned positions (None when nothing is learned).
        input_ids: ``[B, L]`` the sequence the pass read (prompt + reply).
        condition_spans: per sample, ``(first, last)`` token index of every condition found in it.
        instances: the decoding instances, in the order of the segmentation outputs.
        seg: the segmentor's outputs per instance (``pred_logits [I, Q, K+1]``, ``pred_masks [I, Q, T, h, w]``,
            ``aux_outputs``), or None when the batch has no ``<SEG>``.
        reply_starts: after :meth:`X2SAM.generate`, per sample the token index where the generated reply
            starts.
    """

    lm_logits: Tensor
    lm_loss: Tensor | None
    input_ids: Tensor
    condition_spans: list[list[tuple[int, int]]]
    instances: list[DecodeInstance] = field(default_factory=list)
    seg: dict[str, Any] | None = None
    reply_starts: list[int] = field(default_factory=list)


class X2SAM(nn.Module):
    """The whole model.

    Args:
        segmentor: mask encoder + pixel decoder + mask decoder (the decoder built with ``condition_dim``
            and ``class_head="cosine"``).
        vl_backbone: Qwen3-VL wrapper.
        region_sampler: parameter-free visual-prompt sampler.
        projector_depth: layers of the two MLP projectors.
        condition_pooling: ``"span"`` averages the projected hidden states over the whole ``<p> .. </p>``
            span, tags included (the authors' code); ``"inner"`` over the tokens between the tags. A small
            LLM's tag states barely depend on the words between them, so with ``"span"`` the conditions
            of a category list come out nearly parallel (cosine 0.87-0.98 measured on the tiny preset)
            and the cosine classifier cannot tell them apart.
        video_llm_frames: the most frames of a clip the LLM reads (spread evenly over the clip, first and
            last included); None: every frame. The decoder always reads every frame. The paper's clips:
            8 frames for video segmentation, 16 over the whole video for video GCG, up to 64 for video
            chat (the data side cuts them; this caps what the LLM sees of any of them).
    """

    def __init__(
        self,
        segmentor: Segmentor,
        vl_backbone: VLBackbone,
        region_sampler: RegionSampler,
        projector_depth: int = 2,
        condition_pooling: str = "span",
        video_llm_frames: int | None = None,
    ) -> None:
        super().__init__()
        if condition_pooling not in ("span", "inner"):
            raise ValueError(f"condition_pooling must be 'span' or 'inner', not {condition_pooling!r}")
        if video_llm_frames is not None and int(video_llm_frames) < 1:
            raise ValueError(f"video_llm_frames must be at least 1 (or None: all), not {video_llm_frames}")
        self.condition_pooling = condition_pooling
        self.video_llm_frames = None if video_llm_frames is None else int(video_llm_frames)
        self.segmentor = segmentor
        self.vl_backbone = vl_backbone
        self.region_sampler = region_sampler
        encoder = segmentor.mask_encoder
        maps = encoder.out_channels if region_sampler.feature == "fpn" else encoder.backbone_channels
        condition_dim = segmentor.mask_decoder.condition_dim
        if condition_dim is None:
            raise ValueError("X2SAM needs a mask decoder built with condition_dim (and class_head='cosine')")
        self.llm_projector = MLPProjector(vl_backbone.hidden_size, condition_dim, projector_depth)
        self.region_projector = MLPProjector(
            maps[region_sampler.level], vl_backbone.hidden_size, projector_depth
        )
        ids = vl_backbone.token_ids
        self.p_start, self.p_end, self.seg_id, self.region_id = (
            ids[P_START],
            ids[P_END],
            ids[SEG],
            ids[REGION],
        )
        self._encoders: dict[int, ChatEncoder] = {}

    # -- text ------------------------------------------------------------------------------------------

    def chat_encoder(self, image_side: int) -> ChatEncoder:
        """The encoder for frames of ``image_side`` pixels (cached per size)."""
        if image_side not in self._encoders:
            self._encoders[image_side] = ChatEncoder(
                self.vl_backbone.tokenizer,
                self.vl_backbone.image_tokens(image_side),
                self.region_sampler.tokens_per_region,
                self.vl_backbone.vision_spec.temporal_patch_size,
            )
        return self._encoders[image_side]

    def encode_conversations(
        self,
        conversations: list[Conversation],
        image_side: int,
        generation_prompt: bool = False,
        frame_times: Sequence[Sequence[float]] | None = None,
    ) -> list[EncodedChat]:
        """Encode each conversation; ``frame_times`` (per sample, the seconds of the frames the LLM reads,
        see :meth:`llm_frame_times`) makes ``<video>`` a video; None reads the frames as an image."""
        encoder = self.chat_encoder(image_side)
        times = frame_times if frame_times is not None else [None] * len(conversations)
        return [
            encoder.encode(c, generation_prompt=generation_prompt, frame_times=t)
            for c, t in zip(conversations, times, strict=True)
        ]

    # -- frames for the LLM ----------------------------------------------------------------------------

    def llm_frames(self, num_frames: int) -> list[int]:
        """Indices of the clip's frames the LLM reads: all, or ``video_llm_frames`` spread evenly (first
        and last included, as ``Qwen3VLVideoProcessor.sample_frames`` spreads them)."""
        keep = self.video_llm_frames
        if keep is None or num_frames <= keep:
            return list(range(num_frames))
        if keep == 1:
            return [0]
        step = (num_frames - 1) / (keep - 1)
        return [round(i * step) for i in range(keep)]

    def llm_frame_times(self, batch: SegBatch) -> list[list[float]] | None:
        """Per sample, the seconds of the frames the LLM reads; None when it reads one frame (an image).

        From the sample's ``meta["frame_times"]`` (the clip's frames, as the data pipeline keeps them),
        else its ``meta["frame_indices"]`` at :data:`DEFAULT_FPS`, else the frame's place in the clip at
        :data:`DEFAULT_FPS`.
        """
        frames = self.llm_frames(batch.num_frames)
        if len(frames) < 2:
            return None
        out = []
        for b in range(batch.batch_size):
            meta = batch.meta[b] if b < len(batch.meta) else {}
            times = meta.get("frame_times")
            if times is None or len(times) != batch.num_frames:
                indices = meta.get("frame_indices")
                if indices is None or len(indices) != batch.num_frames:
                    indices = range(batch.num_frames)
                times = [float(i) / DEFAULT_FPS for i in indices]
            out.append([float(times[i]) for i in frames])
        return out

    # -- pieces ----------------------------------------------------------------------------------------

    def region_tokens(
        self,
        features: MaskEncoderOutput,
        conversations: list[Conversation],
        num_frames: int,
        generator: torch.Generator | None,
    ) -> Tensor | None:
        """Projected region tokens of every ``<region>`` of the batch, flattened in sequence order
        (``[sum R * tokens_per_region, hidden]``), or None when the batch has no visual prompt."""
        masks, frames = [], []
        for b, conversation in enumerate(conversations):
            if conversation.regions is None:
                continue
            for r, frame in enumerate(conversation.region_frames):
                masks.append(conversation.regions[r, frame])
                frames.append(b * num_frames + frame)
        if not masks:
            return None
        maps = features.fpn if self.region_sampler.feature == "fpn" else features.backbone
        level = maps[self.region_sampler.level]
        index = torch.tensor(frames, dtype=torch.long, device=level.device)
        tokens = self.region_sampler(level, torch.stack(masks).to(level.device), index, generator)
        return self.region_projector(tokens).flatten(0, 1)

    def find_conditions(self, input_ids: Tensor) -> list[list[tuple[int, int]]]:
        """Per row, ``(first, last)`` of every closed ``<p> .. </p>`` span (unclosed or nested ones, which a
        generated reply may hold, are ignored)."""
        spans: list[list[tuple[int, int]]] = []
        for row in input_ids.tolist():
            found, start = [], None
            for i, token in enumerate(row):
                if token == self.p_start:
                    start = i
                elif token == self.p_end and start is not None:
                    found.append((start, i))
                    start = None
            spans.append(found)
        return spans

    def plan_instances(
        self,
        input_ids: Tensor,
        spans: list[list[tuple[int, int]]],
        modes: list[str],
        contrastive: bool,
    ) -> list[DecodeInstance]:
        """One instance per ``<SEG>`` that has a condition to score (see the module docstring).

        A mode ``"auto"`` (free-form inference) is read from the sequence: one ``<SEG>`` after several
        conditions decodes them all (``set``), otherwise each ``<SEG>`` decodes the condition before it.
        """
        seg_rows, seg_cols = (input_ids == self.seg_id).nonzero(as_tuple=True)
        modes = list(modes)
        for b, mode in enumerate(modes):
            if mode == "auto":
                segs = seg_cols[seg_rows == b].tolist()
                before = [s for s in spans[b] if segs and s[1] < segs[0]]
                modes[b] = "set" if len(segs) == 1 and len(before) > 1 else "per_condition"
        shared = [
            (b, k) for b, mode in enumerate(modes) if mode == "per_condition" for k in range(len(spans[b]))
        ]
        # The same words elsewhere in the batch are no negative of a condition: the target would contradict
        # itself ("the red circle" both right and wrong).
        words = {
            (b, k): tuple(input_ids[b, first : last + 1].tolist())
            for b, k in shared
            for first, last in [spans[b][k]]
        }
        instances = []
        for b, position in zip(seg_rows.tolist(), seg_cols.tolist()):
            if modes[b] == "set":
                before = [k for k, (_, last) in enumerate(spans[b]) if last < position]
                if before:
                    instances.append(DecodeInstance(b, position, [(b, k) for k in before]))
            elif modes[b] == "per_condition":
                before = [k for k, (_, last) in enumerate(spans[b]) if last < position]
                if not before:
                    continue
                own = (b, before[-1])
                if contrastive:
                    columns = [c for c in shared if c == own or words[c] != words[own]]
                else:
                    columns = [(b, k) for k in range(len(spans[b]))]
                instances.append(DecodeInstance(b, position, columns, columns.index(own)))
        return instances

    def decode_instances(
        self,
        features: MaskEncoderOutput,
        num_frames: int,
        projected: Tensor,
        spans: list[list[tuple[int, int]]],
        instances: list[DecodeInstance],
    ) -> dict[str, Any]:
        """Run the mask decoder for every instance with its prompt, condition tokens and conditions."""
        device = projected.device
        inner = int(self.condition_pooling == "inner")  # leave out the <p> and </p> tokens
        pooled = {
            (b, k): projected[b, first + inner : last + 1 - inner].mean(0)
            if last - first > 1
            else projected[b, first : last + 1].mean(0)
            for b, sample_spans in enumerate(spans)
            for k, (first, last) in enumerate(sample_spans)
        }
        prompts = torch.stack([projected[i.sample, i.seg_position] for i in instances])
        conditions = [torch.stack([pooled[c] for c in i.conditions]) for i in instances]
        token_lists = []
        for inst in instances:
            own = [inst.conditions[inst.own]] if inst.own is not None else inst.conditions
            token_lists.append(torch.cat([projected[b, spans[b][k][0] : spans[b][k][1] + 1] for b, k in own]))
        condition_pad, condition_padding = _pad(conditions)
        token_pad, token_padding = _pad(token_lists)
        samples = torch.tensor([i.sample for i in instances], dtype=torch.long, device=device)
        return self.segmentor.decode(
            features,
            num_frames,
            instance_samples=samples,
            prompt=prompts,
            condition_tokens=token_pad,
            condition_token_padding=token_padding,
            conditions=condition_pad,
            condition_padding_mask=condition_padding,
        )

    # -- passes ----------------------------------------------------------------------------------------

    def forward(
        self,
        batch: SegBatch,
        chats: list[EncodedChat] | None = None,
        contrastive: bool = True,
        generator: torch.Generator | None = None,
        features: MaskEncoderOutput | None = None,
        decode_from: list[int] | None = None,
    ) -> X2SAMOutput:
        """A teacher-forced pass over the batch's conversations (or the given encoded ``chats``).

        Args:
            batch: the batch (``conversations`` filled by the data pipeline).
            chats: encoded sequences to read instead of the batch's conversations (evaluation passes
                prompt + generated reply here).
            contrastive: score ``per_condition`` instances against the whole batch's conditions.
            generator: drives the region sampler's point draw.
            features: mask-encoder features of the batch, if already computed.
            decode_from: per sample, the first position whose ``<SEG>`` is decoded (evaluation: the
                generated reply's, not those of earlier turns given as context).
        """
        if not batch.conversations:
            raise ValueError(
                f"batch from source {batch.source!r} has no conversations (data.conversations=true?)"
            )
        num_frames, side = batch.num_frames, batch.pixel_values.shape[-1]
        if features is None:
            features = self.segmentor.encode(batch.pixel_values)
        if chats is None:
            chats = self.encode_conversations(
                batch.conversations, side, frame_times=self.llm_frame_times(batch)
            )
        tokens, inputs = self._llm_inputs(batch, chats, features, generator)
        logits, hidden = self.vl_backbone(**inputs)
        labels = tokens["labels"]
        lm_loss = None
        if bool((labels[:, 1:] != IGNORE_INDEX).any()):
            lm_loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
            )
        spans = self.find_conditions(tokens["input_ids"])
        modes = [c.mode for c in batch.conversations]
        instances = self.plan_instances(tokens["input_ids"], spans, modes, contrastive)
        if decode_from is not None:
            instances = [i for i in instances if i.seg_position >= decode_from[i.sample]]
        out = X2SAMOutput(logits, lm_loss, tokens["input_ids"], spans, instances)
        if instances:
            # The LLM may run in bf16 (the 4B preset); the projectors and decoder keep their own dtype.
            projected = self.llm_projector(hidden.to(self.llm_projector.net[0].weight.dtype))
            out.seg = self.decode_instances(features, num_frames, projected, spans, instances)
        return out

    @torch.no_grad()
    def generate(
        self,
        batch: SegBatch,
        max_new_tokens: int = 64,
        generator: torch.Generator | None = None,
    ) -> tuple[X2SAMOutput, list[list[int]]]:
        """Generate every sample's last reply (earlier turns are context), then read prompt + reply in one
        teacher-forced pass (non-contrastive) for the masks of the reply's ``<SEG>`` tokens.

        Returns:
            The pass's output and, per sample, the generated token ids (up to ``<|im_end|>``).
        """
        side = batch.pixel_values.shape[-1]
        features = self.segmentor.encode(batch.pixel_values)
        prompts = self.encode_conversations(
            batch.conversations, side, generation_prompt=True, frame_times=self.llm_frame_times(batch)
        )
        _, inputs = self._llm_inputs(batch, prompts, features, generator, left_padded=True)
        new = self.vl_backbone.generate(**inputs, max_new_tokens=max_new_tokens)
        eos = self.vl_backbone.token_ids["<|im_end|>"]
        replies, starts = [], [len(p) for p in prompts]
        for b, prompt in enumerate(prompts):
            reply = new[b].tolist()
            reply = reply[: reply.index(eos)] if eos in reply else reply
            replies.append(reply)
            full = prompt.input_ids + reply + [eos]
            prompts[b] = EncodedChat(
                input_ids=full,
                labels=[IGNORE_INDEX] * len(full),
                mm_token_type_ids=prompt.mm_token_type_ids + [0] * (len(reply) + 1),
                region_positions=prompt.region_positions,
            )
        if generator is not None:  # the same region points as in the generation pass
            generator = torch.Generator().manual_seed(generator.initial_seed())
        out = self(
            batch,
            chats=prompts,
            contrastive=False,
            generator=generator,
            features=features,
            decode_from=starts,
        )
        out.reply_starts = starts
        return out, replies

    # -- helpers ---------------------------------------------------------------------------------------

    def _llm_inputs(
        self,
        batch: SegBatch,
        chats: list[EncodedChat],
        features: MaskEncoderOutput,
        generator: torch.Generator | None,
        left_padded: bool = False,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | None]]:
        """Padded tokens and the VLM's keyword inputs: ids, masks, Qwen patches (of an image, or of a
        video when the LLM reads several frames) and the region tokens."""
        padded = pad_batch(chats, self.pad_id, left=left_padded)
        tokens = {k: v.to(batch.pixel_values.device) for k, v in padded.items()}
        inputs: dict[str, Tensor | None] = {
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "mm_token_type_ids": tokens["mm_token_type_ids"],
        }
        frames = self.llm_frames(batch.num_frames)
        if len(frames) > 1:
            clip = batch.pixel_values if len(frames) == batch.num_frames else batch.pixel_values[:, frames]
            inputs["pixel_values_videos"], inputs["video_grid_thw"] = self.vl_backbone.video_inputs(clip)
        else:
            inputs["pixel_values"], inputs["image_grid_thw"] = self.vl_backbone.vision_inputs(
                batch.pixel_values[:, frames[0]]
            )
        inputs["region_positions"] = tokens["input_ids"] == self.region_id
        inputs["region_features"] = self.region_tokens(
            features, batch.conversations, batch.num_frames, generator
        )
        return tokens, inputs

    @property
    def pad_id(self) -> int:
        return int(self.vl_backbone.tokenizer.pad_token_id)


def _pad(rows: list[Tensor]) -> tuple[Tensor, Tensor]:
    """``I`` tensors ``[n_i, D]`` -> ``[I, max n, D]`` zero-padded and ``[I, max n]`` bool padding mask."""
    longest = max(r.shape[0] for r in rows)
    out = rows[0].new_zeros(len(rows), longest, rows[0].shape[-1])
    padding = torch.ones(len(rows), longest, dtype=torch.bool, device=rows[0].device)
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row
        padding[i, : row.shape[0]] = False
    return out, padding


def instance_targets(instances: list[DecodeInstance], batch: SegBatch, copies: int = 1) -> list[TrackTargets]:
    """Training targets of each instance from the conversations' ``condition_objects``.

    ``set``: every object of every condition is a target labelled with its condition's column;
    ``per_condition``: one target, the union of the own condition's objects (none for a no-target one),
    repeated ``copies`` times so that as many queries learn it (one-to-many matching; evaluation takes the
    query most confident in the condition). The union is known, and trained, only on the frames annotated
    for every one of its objects: where one is not annotated (schema 2's ``null``) the union is unknown,
    as the video scorers see only frames annotated for every object.
    """
    targets = []
    for inst in instances:
        sample = batch.targets[inst.sample]
        objects = batch.conversations[inst.sample].condition_objects
        masks, labels, valid = [], [], []
        if inst.own is None:
            for column, (_, k) in enumerate(inst.conditions):
                for n in objects[k]:
                    masks.append(sample.masks[n])
                    labels.append(column)
                    valid.append(sample.valid[n])
        else:
            _, k = inst.conditions[inst.own]
            if objects[k]:
                index = torch.as_tensor(objects[k], device=sample.masks.device)
                for _ in range(copies):
                    masks.append(sample.masks[index].any(0))
                    labels.append(inst.own)
                    valid.append(sample.valid[index].all(0))
        t, h, w = sample.masks.shape[1:]
        device = sample.masks.device
        n = len(masks)
        targets.append(
            TrackTargets(
                masks=torch.stack(masks) if n else torch.zeros(0, t, h, w, dtype=torch.bool, device=device),
                labels=torch.tensor(labels, dtype=torch.long, device=device),
                valid=torch.stack(valid) if n else torch.zeros(0, t, dtype=torch.bool, device=device),
                object_ids=torch.arange(n, device=device),
                iscrowd=torch.zeros(n, dtype=torch.bool, device=device),
            )
        )
    return targets
