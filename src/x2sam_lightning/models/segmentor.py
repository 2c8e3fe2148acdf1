"""The segmentor: mask encoder -> pixel decoder -> mask decoder, over clips ``[B, T, ...]``.

Images are clips with ``T == 1``. The ``B * T`` frames go through the encoder and the pixel decoder as one
batch; the mask decoder then runs once per *decoding instance*: in stage 1 an instance is a sample, in
stage 2 it is one ``<SEG>`` of a sample's answer (a sample may have several), so ``decode`` takes the
sample of each instance and the instance's language inputs. Predictions are re-assembled along ``T``: a
query's masks over the clip form a track, its class logits are the mean of its per-frame logits. Without
mask memory (the video issue) nothing ties a query's identity across frames other than sharing the same
learned query; for images ``T == 1`` and the mean is the identity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from x2sam_lightning.models.mask_decoder import MaskDecoder
from x2sam_lightning.models.mask_encoder import MaskEncoder, MaskEncoderOutput
from x2sam_lightning.models.pixel_decoder import PixelDecoder, PixelDecoderOutput
from x2sam_lightning.normalization import require_model_input


class Segmentor(nn.Module):
    """Composes the three injected parts (each built by Hydra from ``conf/model/<part>``).

    The decoders may be given as partials (Hydra ``_partial_: true``): their input widths then follow the
    part before them (``pixel_decoder(in_channels=encoder FPN widths)``, ``mask_decoder(in_channels=...,
    mask_dim=...)`` from the pixel decoder), so swapping the encoder never leaves a stale width behind.

    Args:
        mask_encoder: Frames ``[N, 3, H, W]`` -> :class:`MaskEncoderOutput`.
        pixel_decoder: FPN maps -> :class:`PixelDecoderOutput` (module or partial).
        mask_decoder: Multi-scale features + mask features (+ stage-2 language inputs) -> predictions
            (module or partial).
    """

    def __init__(
        self,
        mask_encoder: MaskEncoder,
        pixel_decoder: PixelDecoder | Callable[..., PixelDecoder],
        mask_decoder: MaskDecoder | Callable[..., MaskDecoder],
    ) -> None:
        super().__init__()
        if not isinstance(pixel_decoder, nn.Module):
            pixel_decoder = pixel_decoder(in_channels=mask_encoder.out_channels)
        if not isinstance(mask_decoder, nn.Module):
            mask_decoder = mask_decoder(in_channels=pixel_decoder.hidden_dim, mask_dim=pixel_decoder.mask_dim)
        self.mask_encoder = mask_encoder
        self.pixel_decoder = pixel_decoder
        self.mask_decoder = mask_decoder

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
        """Pixel decoder + mask decoder on encoded frames, predictions re-assembled as tracks.

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
        per_frame = {
            name: value.repeat_interleave(num_frames, dim=0)
            for name, value in language.items()
            if value is not None
        }
        out = self.mask_decoder(pixels.multi_scale_features, pixels.mask_features, **per_frame)
        tracks = _to_tracks(out, num_frames)
        tracks["aux_outputs"] = [_to_tracks(aux, num_frames) for aux in out["aux_outputs"]]
        return tracks

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


def _to_tracks(frames: dict[str, Any], num_frames: int) -> dict[str, Any]:
    """``[I*T, Q, ...]`` per-frame predictions -> logits ``[I, Q, C+1]``, masks ``[I, Q, T, h, w]``."""
    logits, masks = frames["pred_logits"], frames["pred_masks"]
    n = logits.shape[0] // num_frames
    logits = logits.unflatten(0, (n, num_frames)).mean(1)
    masks = masks.unflatten(0, (n, num_frames)).transpose(1, 2)
    return {"pred_logits": logits, "pred_masks": masks}
