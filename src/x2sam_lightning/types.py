"""Typed samples and batches that cross module boundaries.

Images are videos with ``T == 1`` everywhere: every pixel tensor carries a time axis, and every object is
a *track* with one mask per frame. Shapes use ``B`` batch, ``T`` frames, ``N`` objects, ``Q`` queries,
``H, W`` model input size, ``h, w`` mask-prediction size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from x2sam_lightning.normalization import frames_to_model_input

#: Tensors up to this size (bool ones: packed) are pickled as bytes inside the message (see
#: :func:`_reduce_inline`).
INLINE_PICKLE_BYTES = 1 << 20
_INLINE_DTYPES = frozenset({torch.bool, torch.uint8, torch.int32, torch.int64, torch.float16, torch.float32})
#: Bool tensors of more elements than this cross as packed bits (smaller ones: the packing call costs more
#: than the bytes it saves).
_PACK_BOOL_ELEMENTS = 1024


class _Inline:
    """A small CPU tensor carried as a numpy array (whose bytes pickle inline)."""

    __slots__ = ("array",)

    def __init__(self, array: Any) -> None:
        self.array = array

    def __reduce__(self):
        if self.array.dtype == np.bool_ and self.array.size > _PACK_BOOL_ELEMENTS:
            return (_unpack_bits, (np.packbits(self.array, axis=None), self.array.shape))
        return (_Inline, (self.array,))


def _unpack_bits(packed: np.ndarray, shape: tuple[int, ...]) -> _Inline:
    return _Inline(np.unpackbits(packed, count=math.prod(shape)).view(np.bool_).reshape(shape))


def _pack(value: Any) -> Any:
    if (
        isinstance(value, Tensor)
        and type(value) is Tensor
        and value.device.type == "cpu"
        and not value.requires_grad
        and value.dtype in _INLINE_DTYPES
        and value.numel() * value.element_size() // (8 if value.dtype == torch.bool else 1)
        <= INLINE_PICKLE_BYTES
    ):
        return _Inline(value.numpy())
    return value


def _rebuild_inline(cls: type, values: dict[str, Any]) -> Any:
    return cls(**{k: torch.from_numpy(v.array) if isinstance(v, _Inline) else v for k, v in values.items()})


def _reduce_inline(self: Any) -> tuple[Any, tuple[type, dict[str, Any]]]:
    """Pickle a record with its small tensors as bytes in the message, not in shared memory.

    A DataLoader worker hands every tensor of a batch to the main process through a shared-memory file
    of its own, which costs about half a millisecond per tensor whatever its size; a batch holds five
    small target tensors per sample, so a batch of 8 images took ~35 ms to cross, more than decoding it.
    Inlined (a copy of a few KB), it takes ~1 ms; large tensors (pixels, big mask stacks) still go
    through shared memory. Bool masks cross as packed bits: the bytes of the message are pickled, piped
    and unpickled, so an 8-frame clip's 0.5 MB of masks cost more to cross than their decoding did.
    """
    return (_rebuild_inline, (type(self), {f.name: _pack(getattr(self, f.name)) for f in fields(self)}))


_TARGET_FIELDS = ("masks", "labels", "valid", "object_ids", "iscrowd")


class _StackedTargets:
    """A batch's :class:`TrackTargets` crossing the worker queue as one tensor per field (the objects of
    all samples concatenated, then split again into views): five tensors to pickle instead of five per
    sample, each with its own fixed cost on both sides."""

    __slots__ = ("targets",)

    def __init__(self, targets: list[TrackTargets]) -> None:
        self.targets = targets

    @staticmethod
    def fits(targets: list[Any]) -> bool:
        """Worth stacking (more than one) and stackable: plain targets without source-resolution masks,
        sharing ``T, H, W`` and dtypes."""
        return (
            len(targets) > 1
            and all(type(t) is TrackTargets and t.original_masks is None for t in targets)
            and len({(t.masks.shape[1:], t.masks.dtype, t.masks.device, t.valid.shape[1:]) for t in targets})
            == 1
        )

    def __reduce__(self):
        counts = [len(t) for t in self.targets]
        stacked = [_pack(torch.cat([getattr(t, name) for t in self.targets])) for name in _TARGET_FIELDS]
        return (_unstack_targets, (counts, *stacked))


def _unstack_targets(counts: list[int], *stacked: Any) -> list[TrackTargets]:
    tensors = [torch.from_numpy(v.array) if isinstance(v, _Inline) else v for v in stacked]
    return [TrackTargets(*parts) for parts in zip(*(t.split(counts) for t in tensors))]


def _reduce_batch(self: SegBatch) -> tuple[Any, tuple[type, dict[str, Any]]]:
    """:func:`_reduce_inline`, with the targets stacked when they fit (:class:`_StackedTargets`)."""
    rebuild, (cls, values) = _reduce_inline(self)
    if _StackedTargets.fits(self.targets):
        values["targets"] = _StackedTargets(self.targets)
    return rebuild, (cls, values)


def _move(value: Any, device: torch.device | str) -> Any:
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (TrackTargets, Conversation)):
        return value.to(device)
    # Lists are homogeneous: per-sample records or tensors are moved, metadata lists are left alone.
    if isinstance(value, list) and value and isinstance(value[0], (Tensor, TrackTargets, Conversation, list)):
        return [_move(v, device) for v in value]
    return value


@dataclass
class TrackTargets:
    """Ground truth of one sample: ``N`` object tracks over ``T`` frames.

    Attributes:
        masks: ``[N, T, H, W]`` bool, at the model input size (padding is False).
        labels: ``[N]`` long, index into the sample's ``categories`` (0 for class-agnostic data).
        valid: ``[N, T]`` bool, whether the frame is *annotated* for the object (also :attr:`annotated`).
            True with an empty mask: the object is absent there (schema 2's empty RLE), a real target
            that penalises any prediction; False: not annotated (``null``), ignored by the losses and
            left out of scoring. Schema 1's ``null`` meant absent or not annotated; it reads as False.
        object_ids: ``[N]`` long, the ``id`` of each object in the shard json.
        iscrowd: ``[N]`` bool.
        original_masks: ``[N, T, H0, W0]`` bool at the source media's resolution, or None. Evaluation
            streams carry them so benchmarks are scored at the original resolution, as the official
            scorers do; training leaves them out.
    """

    masks: Tensor
    labels: Tensor
    valid: Tensor
    object_ids: Tensor
    iscrowd: Tensor
    original_masks: Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def annotated(self) -> Tensor:
        """``[N, T]`` bool: the frame is annotated for the object (the ``valid`` field)."""
        return self.valid

    @property
    def present(self) -> Tensor:
        """``[N, T]`` bool: annotated and non-empty (annotated and not present = absent)."""
        return self.valid & self.masks.flatten(2).any(-1)

    def annotated_frames(self) -> Tensor:
        """``[T]`` bool: the frames annotated for every object, the frames a video benchmark scores.

        The official scorers see annotated frames only; an evaluator passes a metric ``preds[:, keep]``
        and ``target[:, keep]`` with ``keep = targets.annotated_frames()`` (every frame for images and
        for fully annotated videos, so scores there do not change).
        """
        return self.valid.all(0) if len(self) else self.valid.new_ones(self.valid.shape[1])

    __reduce__ = _reduce_inline

    def to(self, device: torch.device | str) -> TrackTargets:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: v.to(device) for k, v in moved.items() if v is not None})


@dataclass
class Conversation:
    """The text side of one sample, model-agnostic: what the LLM reads and what it must answer.

    ``messages`` are plain text with the markers of :mod:`x2sam_lightning.special_tokens`: ``<image>`` or
    ``<video>`` once in the first user turn, ``<p>..</p>`` around every *condition* (category, referring
    expression, reasoning query, GCG phrase, or ``<region>`` visual prompt), ``<SEG>`` in assistant turns
    for every segmentation output. Conditions are numbered in their order of appearance over all messages.

    Two ways a ``<SEG>`` relates to conditions (``mode``):

    - ``"set"`` (generic, open-vocabulary, interactive, visual grounded): the one ``<SEG>`` (after every
      condition) decodes all conditions at once; every object of ``condition_objects[k]`` is its own
      target mask labelled ``k``.
    - ``"per_condition"`` (referring, reasoning, GCG): each ``<SEG>`` belongs to the nearest condition
      before it; its target is one mask, the union of that condition's objects. A condition with no
      objects (a no-target expression) has no ``<SEG>``: the answer says so. The decoder scores each such
      ``<SEG>`` against the conditions of the whole batch (the others are negatives).
    - ``"chat"``: text only, no condition, no ``<SEG>``.

    Attributes:
        messages: ``[{"role": "user" | "assistant", "content": str}]``, alternating, user first.
        mode: ``"set"``, ``"per_condition"`` or ``"chat"``.
        condition_objects: per condition, the indices (into the sample's ``TrackTargets``) of the objects
            it refers to; empty for a category absent from the image or a no-target expression.
        condition_labels: per condition, the index into the sample's ``categories`` it names (generic /
            open-vocabulary / visual-grounded: the prompted object's category), else -1.
        regions: ``[R, T, H, W]`` bool visual prompts at the model input size, in ``<region>`` order (drawn
            on ``region_frames``; other frames False), or None.
        region_frames: the frame each region prompt is drawn on.
        prompt_type: ``"point"``, ``"scribble"``, ``"box"`` or ``"mask"`` when every region is of one type
            (evaluation), else None.
        template: which wording was used, e.g. ``"img_refseg/q3/a1"`` (evaluation logs it).
        answer: the reference answer of a chat sample for scoring (exact match), else None.
    """

    messages: list[dict[str, str]]
    mode: str = "set"
    condition_objects: list[list[int]] = field(default_factory=list)
    condition_labels: list[int] = field(default_factory=list)
    regions: Tensor | None = None
    region_frames: list[int] = field(default_factory=list)
    prompt_type: str | None = None
    template: str = ""
    answer: str | None = None

    __reduce__ = _reduce_inline

    def to(self, device: torch.device | str) -> Conversation:
        return self if self.regions is None else replace(self, regions=self.regions.to(device))


@dataclass
class SegSample:
    """One decoded training example (before collation).

    Attributes:
        pixel_values: ``[T, h0, w0, 3]`` uint8, the frames at the source resolution, as the data
            pipeline makes them (``input_size`` set; resizing, normalising and padding happen on the
            device, :meth:`SegBatch.to`); or, in a sample built by hand, model input ``[T, 3, H, W]``
            float32 (``input_size`` None).
        targets: the object tracks of this sample (masks already at the model input size).
        image_size: ``(h, w)`` of the un-padded content inside ``H x W``.
        original_size: ``(height, width)`` of the source media.
        key: ``<dataset>/<original id>``, the WebDataset sample key.
        source: name of the data source (as in ``conf/data``) the sample came from.
        task: task id, e.g. ``img_genseg`` or ``vid_refseg``.
        categories: the sample's vocabulary, ``[{"id", "name", "isthing"}]``.
        shard: url of the shard the sample was read from (for error messages).
        meta: the rest of the sample json (expressions, captions, prompts) for later stages.
        conversation: the instruction and answer (stage 2), built in the data pipeline; None for stage 1.
        input_size: the side ``S`` of the square model input the uint8 frames become, or None when
            ``pixel_values`` is model input already.
        hflip: the sample is mirrored: its masks already are, its frames will be after the resize.
    """

    pixel_values: Tensor
    targets: TrackTargets
    image_size: tuple[int, int]
    original_size: tuple[int, int]
    key: str
    source: str
    task: str
    categories: list[dict[str, Any]] = field(default_factory=list)
    shard: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    conversation: Conversation | None = None
    input_size: int | None = None
    hflip: bool = False


@dataclass
class SegBatch:
    """A collated batch: always one source and one clip length (so ``T`` is shared).

    The pixels exist in two states. The data pipeline ships **frames**: ``pixel_values`` uint8
    ``[B, T, H0, W0, 3]`` (channels last, as decoded), each sample's source frames in its top-left ``original_sizes[b]`` corner (the
    batch padded to its largest source size), with ``input_size = S``: 1 byte a pixel through the
    DataLoader's worker queue and the host-to-device copy instead of float32's 4. :meth:`to` (what
    ``SegDataModule.transfer_batch_to_device``, Lightning's default transfer and the ``Predictor`` call)
    turns them into the **model input** on the target device, exactly once: resized to ``image_sizes``
    (bilinear, antialiased, float32), mirrored where ``hflip``, ImageNet-normalised, zero-padded to
    ``S x S`` (:func:`~x2sam_lightning.normalization.frames_to_model_input`), ``input_size`` None. Models
    take model input only (they refuse uint8 pixels). A batch built by hand may hold model input at once.

    Attributes:
        pixel_values: model input ``[B, T, 3, S, S]`` float32 (``input_size`` None), or frames (above).
        targets: ``B`` :class:`TrackTargets` (``N`` differs per sample).
        image_sizes: ``[B, 2]`` long, un-padded ``(h, w)`` per sample.
        original_sizes: ``[B, 2]`` long, source ``(height, width)`` per sample.
        keys, tasks, categories, meta, conversations: per-sample lists (see :class:`SegSample`);
            ``conversations`` is empty when the pipeline builds none (stage 1).
        source: the one source every sample of the batch came from.
        input_size: ``S`` while ``pixel_values`` holds uint8 frames; None once it is model input.
        hflip: per sample, whether its frames are to be mirrored with them (empty: none is).
    """

    pixel_values: Tensor
    targets: list[TrackTargets]
    image_sizes: Tensor
    original_sizes: Tensor
    keys: list[str]
    tasks: list[str]
    source: str
    categories: list[list[dict[str, Any]]] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)
    conversations: list[Conversation] = field(default_factory=list)
    input_size: int | None = None
    hflip: list[bool] = field(default_factory=list)

    __reduce__ = _reduce_batch

    @property
    def batch_size(self) -> int:
        return int(self.pixel_values.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.pixel_values.shape[1])

    @property
    def modality(self) -> str:
        """``"video"`` or ``"image"``, read from the task prefix as the authors' sampler does."""
        return "video" if self.tasks and self.tasks[0].startswith("vid_") else "image"

    def to(self, device: torch.device | str) -> SegBatch:
        """The batch on ``device``, its pixels model input there (uint8 frames are resized, normalised
        and padded after the copy; model input is moved as it is)."""
        moved = replace(self, **{f.name: _move(getattr(self, f.name), device) for f in fields(self)})
        if self.input_size is None:
            return moved
        # Sizes are read from this (host) batch, so the device needs no synchronisation for them.
        moved.pixel_values = frames_to_model_input(
            moved.pixel_values,
            self.image_sizes.tolist(),
            self.original_sizes.tolist(),
            self.input_size,
            hflip=self.hflip or None,
        )
        moved.input_size, moved.hflip = None, []
        return moved
