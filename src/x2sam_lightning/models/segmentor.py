"""The segmentor: mask encoder -> pixel decoder -> [mask memory] -> mask decoder, over clips ``[B, T, ...]``.

Images are clips with ``T == 1``. The ``B * T`` frames go through the encoder and the pixel decoder as one
batch; the mask decoder then runs once per *decoding instance*: in stage 1 an instance is a sample, in
stage 2 it is one ``<SEG>`` of a sample's answer (a sample may have several), so ``decode`` takes the
sample of each instance and the instance's language inputs. Predictions are re-assembled along ``T``: a
query's masks over the clip form a track, its class logits are the mean of its per-frame logits.

Without a mask memory (``model/mask_memory=none``) all ``I * T`` frames are decoded in one call and nothing
ties a query's identity across frames but sharing the same learned query. With one, the frames of each
instance are decoded in order, each reading the guided features of up to ``K`` earlier frames and
writing its own (:class:`~x2sam_lightning.models.mask_memory.MaskMemory`); the outputs have the same
shapes. For images ``T == 1`` either way (the first frame reads a learned no-memory embedding).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from x2sam_lightning.models.mask_decoder import MaskDecoder
from x2sam_lightning.models.mask_encoder import MaskEncoder, MaskEncoderOutput
from x2sam_lightning.models.mask_memory import MaskMemory
from x2sam_lightning.models.memory_bank import MemoryBank
from x2sam_lightning.models.pixel_decoder import PixelDecoder, PixelDecoderOutput
from x2sam_lightning.normalization import require_model_input


class Segmentor(nn.Module):
    """Composes the injected parts (each built by Hydra from ``conf/model/<part>``).

    The decoders and the memory may be given as partials (Hydra ``_partial_: true``): their input widths
    then follow the part before them (``pixel_decoder(in_channels=encoder FPN widths)``,
    ``mask_decoder(in_channels=..., mask_dim=...)`` from the pixel decoder, ``mask_memory(dim, mask_dim,
    num_levels)`` from both decoders), so swapping the encoder never leaves a stale width behind.

    Args:
        mask_encoder: Frames ``[N, 3, H, W]`` -> :class:`MaskEncoderOutput`.
        pixel_decoder: FPN maps -> :class:`PixelDecoderOutput` (module or partial).
        mask_decoder: Multi-scale features + mask features (+ stage-2 language inputs) -> predictions
            (module or partial).
        mask_memory: Optional video memory between the pixel and mask decoders (module or partial);
            ``None`` decodes every frame independently (the ablation baseline).
    """

    def __init__(
        self,
        mask_encoder: MaskEncoder,
        pixel_decoder: PixelDecoder | Callable[..., PixelDecoder],
        mask_decoder: MaskDecoder | Callable[..., MaskDecoder],
        mask_memory: MaskMemory | Callable[..., MaskMemory] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(pixel_decoder, nn.Module):
            pixel_decoder = pixel_decoder(in_channels=mask_encoder.out_channels)
        if not isinstance(mask_decoder, nn.Module):
            mask_decoder = mask_decoder(in_channels=pixel_decoder.hidden_dim, mask_dim=pixel_decoder.mask_dim)
        if mask_memory is not None and not isinstance(mask_memory, nn.Module):
            mask_memory = mask_memory(
                dim=pixel_decoder.hidden_dim,
                mask_dim=pixel_decoder.mask_dim,
                num_levels=mask_decoder.num_feature_levels,
            )
        self.mask_encoder = mask_encoder
        self.pixel_decoder = pixel_decoder
        self.mask_decoder = mask_decoder
        self.mask_memory = mask_memory

    def encode(self, pixel_values: Tensor) -> MaskEncoderOutput:
        """Mask-encoder features of every frame.

        Args:
            pixel_values: ``[B, T, 3, H, W]``.

        Returns:
            Features of the ``B * T`` frames (frame-major within each sample).
        """
        require_model_input(pixel_values)
        return self.mask_encoder(pixel_values.flatten(0, 1))

    def decode(
        self,
        features: MaskEncoderOutput,
        num_frames: int,
        instance_samples: Tensor | None = None,
        **language: Tensor | None,
    ) -> dict[str, Any]:
        """Pixel decoder + [mask memory] + mask decoder on encoded frames, predictions re-assembled as tracks.

        With a mask memory the frames of each instance are decoded in order from an empty bank
        (:meth:`decode_with_memory`); without one, all at once.

        Args:
            features: Output of :meth:`encode` for ``B`` samples of ``T`` frames.
            num_frames: ``T``.
            instance_samples: ``[I]`` long, the sample each decoding instance reads (default: one
                instance per sample).
            **language: The mask decoder's stage-2 inputs per instance (``prompt [I, D]``,
                ``condition_tokens [I, L, D]``, ``condition_token_padding [I, L]``, ``conditions [I, K, D]``,
                ``condition_padding_mask [I, K]``); the frames of an instance share them.

        Returns:
            See :meth:`forward` (``B`` replaced by ``I``).
        """
        if self.mask_memory is not None:
            return self.decode_with_memory(
                features, num_frames, instance_samples=instance_samples, **language
            )[0]
        pixels = self._instance_pixels(features, num_frames, instance_samples)
        per_frame = {
            name: value.repeat_interleave(num_frames, dim=0)
            for name, value in language.items()
            if value is not None
        }
        out = self.mask_decoder(pixels.multi_scale_features, pixels.mask_features, **per_frame)
        tracks = _to_tracks(out, num_frames)
        tracks["aux_outputs"] = [_to_tracks(aux, num_frames) for aux in out["aux_outputs"]]
        return tracks

    def decode_with_memory(
        self,
        features: MaskEncoderOutput,
        num_frames: int,
        memory: MemoryBank | None = None,
        instance_samples: Tensor | None = None,
        **language: Tensor | None,
    ) -> tuple[dict[str, Any], MemoryBank]:
        """Decode each instance's frames in order through the mask memory.

        Args:
            features, num_frames, instance_samples, **language: as for :meth:`decode`.
            memory: the bank to start from: ``None`` starts a new clip; the bank returned for the previous
                chunk of the same instances continues a video (streaming).

        Returns:
            The outputs of :meth:`decode` and the bank after the last frame.

        Raises:
            ValueError: the segmentor has no mask memory, or ``memory`` holds other instances.
        """
        if self.mask_memory is None:
            raise ValueError("this segmentor has no mask memory (model/mask_memory=none)")
        decoded, bank = self.decode_frames(
            features, num_frames, memory=memory, instance_samples=instance_samples, **language
        )
        tracks = _to_tracks(_frames_in_order(decoded), num_frames)
        tracks["aux_outputs"] = [
            _to_tracks(_frames_in_order([out["aux_outputs"][layer] for out in decoded]), num_frames)
            for layer in range(len(decoded[0]["aux_outputs"]))
        ]
        return tracks, bank

    def decode_frames(
        self,
        features: MaskEncoderOutput,
        num_frames: int,
        memory: MemoryBank | None = None,
        instance_samples: Tensor | None = None,
        **language: Tensor | None,
    ) -> tuple[list[dict[str, Any]], MemoryBank | None]:
        """The mask decoder's outputs frame by frame, not re-assembled into tracks (streaming reads them).

        With a mask memory the frames are decoded in order through the bank (the loop of
        :meth:`decode_with_memory`); without one, all ``I * T`` frames in one call, then split per frame.

        Args:
            features, num_frames, instance_samples, **language: as for :meth:`decode`.
            memory: the bank to start from (``None``: a new clip); ignored without a mask memory.

        Returns:
            Per frame ``pred_logits [I, Q, C+1]``, ``pred_masks [I, Q, h, w]`` and ``aux_outputs``, and the
            bank after the last frame (None without a mask memory).
        """
        pixels = self._instance_pixels(features, num_frames, instance_samples)
        if self.mask_memory is None:
            per_frame = {
                name: value.repeat_interleave(num_frames, dim=0)
                for name, value in language.items()
                if value is not None
            }
            out = self.mask_decoder(pixels.multi_scale_features, pixels.mask_features, **per_frame)
            return [_frame(out, num_frames, t) for t in range(num_frames)], None
        clips = [f.unflatten(0, (-1, num_frames)) for f in pixels.multi_scale_features]  # [I, T, C, h, w]
        mask_features = pixels.mask_features.unflatten(0, (-1, num_frames))
        bank = self.mask_memory.empty() if memory is None else memory
        decoded = []
        for t in range(num_frames):
            frame = [clip[:, t] for clip in clips]
            levels, frame_mask_features = self.mask_memory.read(frame, mask_features[:, t], bank)
            out = self.mask_decoder(levels, frame_mask_features, **language)
            bank = self.mask_memory.write(frame, out["pred_masks"], out["pred_logits"], bank)
            decoded.append(out)
        return decoded, bank

    def _instance_pixels(
        self, features: MaskEncoderOutput, num_frames: int, instance_samples: Tensor | None
    ) -> PixelDecoderOutput:
        """Pixel-decoder maps of every instance's frames, ``[I * T, ...]`` (frame-major per instance)."""
        pixels: PixelDecoderOutput = self.pixel_decoder(features.fpn)
        if instance_samples is not None:
            frames = instance_samples[:, None] * num_frames + torch.arange(
                num_frames, device=instance_samples.device
            )
            frames = frames.flatten()
            pixels = PixelDecoderOutput(
                mask_features=pixels.mask_features.index_select(0, frames),
                multi_scale_features=[f.index_select(0, frames) for f in pixels.multi_scale_features],
            )
        return pixels

    def forward(self, pixel_values: Tensor, **language: Tensor | None) -> dict[str, Any]:
        """Segment clips (one decoding instance per sample).

        Args:
            pixel_values: ``[B, T, 3, H, W]``.
            **language: Optional stage-2 decoder inputs per sample (see :meth:`decode`).

        Returns:
            ``pred_logits [B, Q, C+1]`` (mean over frames), ``pred_masks [B, Q, T, h, w]`` (mask logits at
            stride 4) and ``aux_outputs``, a list of dicts with the same keys and shapes.
        """
        return self.decode(self.encode(pixel_values), pixel_values.shape[1], **language)


def _frame(out: dict[str, Any], num_frames: int, t: int) -> dict[str, Any]:
    """Frame ``t`` of every instance from one decoder call over ``[I*T, ...]`` (frame-major per instance)."""

    def pick(frames: dict[str, Any]) -> dict[str, Tensor]:
        return {
            key: frames[key].unflatten(0, (-1, num_frames))[:, t] for key in ("pred_logits", "pred_masks")
        }

    picked = pick(out)
    picked["aux_outputs"] = [pick(aux) for aux in out["aux_outputs"]]
    return picked


def _frames_in_order(decoded: list[dict[str, Any]]) -> dict[str, Tensor]:
    """``T`` per-frame outputs ``[I, Q, ...]`` -> ``[I*T, Q, ...]``, an instance's frames in a row (as
    :func:`_to_tracks` reads them)."""
    return {
        key: torch.stack([out[key] for out in decoded], 1).flatten(0, 1)
        for key in ("pred_logits", "pred_masks")
    }


def _to_tracks(frames: dict[str, Any], num_frames: int) -> dict[str, Any]:
    """``[I*T, Q, ...]`` per-frame predictions -> logits ``[I, Q, C+1]``, masks ``[I, Q, T, h, w]``."""
    logits, masks = frames["pred_logits"], frames["pred_masks"]
    n = logits.shape[0] // num_frames
    logits = logits.unflatten(0, (n, num_frames)).mean(1)
    masks = masks.unflatten(0, (n, num_frames)).transpose(1, 2)
    return {"pred_logits": logits, "pred_masks": masks}
