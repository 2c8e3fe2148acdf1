"""The segmentor: mask encoder -> pixel decoder -> mask decoder, over clips ``[B, T, ...]``.

Images are clips with ``T == 1``. The ``B * T`` frames go through every part as one batch and the
predictions are re-assembled along ``T``: a query's masks over the clip form a track, its class logits are
the mean of its per-frame logits. Without mask memory (a later stage) nothing ties a query's identity
across frames other than sharing the same learned query; for stage-1 images ``T == 1`` and the mean is the
identity.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from x2sam_lightning.models.mask_decoder import MaskDecoder
from x2sam_lightning.models.mask_encoder import MaskEncoder, tiny_sam2_vision_config
from x2sam_lightning.models.pixel_decoder import PixelDecoder, PixelDecoderOutput


class Segmentor(nn.Module):
    """Composes the three injected parts (built by Hydra or by :func:`tiny_segmentor`).

    Args:
        mask_encoder: Frames ``[N, 3, H, W]`` -> FPN maps, fine to coarse.
        pixel_decoder: FPN maps -> :class:`PixelDecoderOutput`.
        mask_decoder: Multi-scale features + mask features -> per-frame predictions.
    """

    def __init__(
        self, mask_encoder: MaskEncoder, pixel_decoder: PixelDecoder, mask_decoder: MaskDecoder
    ) -> None:
        super().__init__()
        self.mask_encoder = mask_encoder
        self.pixel_decoder = pixel_decoder
        self.mask_decoder = mask_decoder

    def encode(self, pixel_values: Tensor) -> list[Tensor]:
        """Mask-encoder features of every frame.

        Args:
            pixel_values: ``[B, T, 3, H, W]``.

        Returns:
            FPN maps fine to coarse, ``[B * T, C, h_l, w_l]`` (frame-major within each sample).
        """
        return self.mask_encoder(pixel_values.flatten(0, 1))

    def decode(
        self,
        features: list[Tensor],
        num_frames: int,
        conditions: Tensor | None = None,
        condition_padding_mask: Tensor | None = None,
    ) -> dict[str, Any]:
        """Pixel decoder + mask decoder on encoded frames, predictions re-assembled as tracks.

        Args:
            features: Output of :meth:`encode`.
            num_frames: ``T``.
            conditions: Optional ``[B, K, D]`` per-sample condition embeddings (shared by the frames).
            condition_padding_mask: Optional ``[B, K]`` bool, True where padded.

        Returns:
            See :meth:`forward`.
        """
        pixels: PixelDecoderOutput = self.pixel_decoder(features)
        if conditions is not None:
            conditions = conditions.repeat_interleave(num_frames, dim=0)
            if condition_padding_mask is not None:
                condition_padding_mask = condition_padding_mask.repeat_interleave(num_frames, dim=0)
        frames = self.mask_decoder(
            pixels.multi_scale_features, pixels.mask_features, conditions, condition_padding_mask
        )
        out = _to_tracks(frames, num_frames)
        out["aux_outputs"] = [_to_tracks(aux, num_frames) for aux in frames["aux_outputs"]]
        return out

    def forward(
        self,
        pixel_values: Tensor,
        conditions: Tensor | None = None,
        condition_padding_mask: Tensor | None = None,
    ) -> dict[str, Any]:
        """Segment clips.

        Args:
            pixel_values: ``[B, T, 3, H, W]``.
            conditions: Optional ``[B, K, D]`` condition embeddings (stage 2).
            condition_padding_mask: Optional ``[B, K]`` bool, True where padded.

        Returns:
            ``pred_logits [B, Q, C+1]`` (mean over frames), ``pred_masks [B, Q, T, h, w]`` (mask logits at
            stride 4) and ``aux_outputs``, a list of dicts with the same keys and shapes.
        """
        features = self.encode(pixel_values)
        return self.decode(features, pixel_values.shape[1], conditions, condition_padding_mask)


def _to_tracks(frames: dict[str, Any], num_frames: int) -> dict[str, Any]:
    """``[B*T, Q, ...]`` per-frame predictions -> logits ``[B, Q, C+1]``, masks ``[B, Q, T, h, w]``."""
    logits, masks = frames["pred_logits"], frames["pred_masks"]
    b = logits.shape[0] // num_frames
    logits = logits.unflatten(0, (b, num_frames)).mean(1)
    masks = masks.unflatten(0, (b, num_frames)).transpose(1, 2)
    return {"pred_logits": logits, "pred_masks": masks}


def tiny_segmentor(
    image_size: int = 128,
    hidden_dim: int = 64,
    num_queries: int = 16,
    num_decoder_layers: int = 3,
    num_pixel_decoder_layers: int = 1,
    num_transformer_levels: int = 2,
    num_classes: int = 1,
    freeze_encoder: bool = False,
) -> Segmentor:
    """The CPU preset of stage 1 (the embedded default): tiny trainable Hiera, 128x128, 16 queries.

    The pixel decoder runs deformable attention over the stride-8 and stride-16 levels only (the
    stride-4 level joins through the FPN path, as in the original Mask2Former): over all three levels a
    CPU step is ~3x slower (see ``benchmarks/results/model.md``). Its Hydra twin lives in ``conf/model``;
    this factory serves tests and benchmarks.
    """
    encoder = MaskEncoder(tiny_sam2_vision_config(image_size=image_size), freeze=freeze_encoder)
    pixel_decoder = PixelDecoder(
        in_channels=encoder.out_channels,
        num_transformer_levels=num_transformer_levels,
        hidden_dim=hidden_dim,
        mask_dim=hidden_dim,
        num_layers=num_pixel_decoder_layers,
        num_heads=4,
        num_points=2,
        ffn_dim=2 * hidden_dim,
        num_groups=8,
    )
    mask_decoder = MaskDecoder(
        in_channels=hidden_dim,
        hidden_dim=hidden_dim,
        mask_dim=hidden_dim,
        num_queries=num_queries,
        num_classes=num_classes,
        num_layers=num_decoder_layers,
        num_heads=4,
        ffn_dim=2 * hidden_dim,
    )
    return Segmentor(encoder, pixel_decoder, mask_decoder)
