"""The mask encoder: SAM2's Hiera backbone + FPN neck (``transformers.Sam2VisionModel``), frame by frame.

Video clips are flattened to a batch of frames by the caller (``[B*T, 3, H, W]``); this module only sees
images. It returns a :class:`MaskEncoderOutput`: the FPN maps fine to coarse (strides 4, 8, 16 for the
default ``num_feature_levels=3``), their position encodings, and the Hiera stage outputs (which the region
sampler reads), so a new consumer reads a field instead of changing a return type.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from transformers import AutoModel, Sam2HieraDetConfig, Sam2VisionConfig, Sam2VisionModel


def tiny_sam2_vision_config(
    image_size: int = 128,
    embed_dim_per_stage: tuple[int, ...] = (16, 32, 64, 128),
    blocks_per_stage: tuple[int, ...] = (1, 2, 2, 1),
    num_attention_heads_per_stage: tuple[int, ...] = (1, 1, 2, 4),
    window_size_per_stage: tuple[int, ...] = (8, 4, 4, 4),
    global_attention_blocks: tuple[int, ...] = (4,),
    fpn_hidden_size: int = 32,
) -> Sam2VisionConfig:
    """A tiny random Hiera + FPN for tests and the CPU default (0.32M parameters at the defaults).

    Unlike SAM2 (top-down only into the two coarsest levels), the FPN top-down path reaches every level:
    a randomly initialised (trainable) tiny encoder learns much faster when the stride-4 map also sees the
    coarse context.

    Args:
        image_size: Input side length; the stride-4 patch grid must be divisible by the first window size.
        embed_dim_per_stage: Hiera channels per stage (fine to coarse).
        blocks_per_stage: Hiera blocks per stage.
        num_attention_heads_per_stage: Heads per stage.
        window_size_per_stage: Windowed-attention size per stage.
        global_attention_blocks: Block indices with global attention (never the first block of a pooling
            stage, which Hiera does not support).
        fpn_hidden_size: FPN output channels.

    Returns:
        The vision config (``Sam2VisionModel(config)`` builds it).
    """
    backbone = Sam2HieraDetConfig(
        hidden_size=embed_dim_per_stage[0],
        num_attention_heads=num_attention_heads_per_stage[0],
        image_size=[image_size, image_size],
        blocks_per_stage=list(blocks_per_stage),
        embed_dim_per_stage=list(embed_dim_per_stage),
        num_attention_heads_per_stage=list(num_attention_heads_per_stage),
        window_size_per_stage=list(window_size_per_stage),
        global_attention_blocks=list(global_attention_blocks),
    )
    sizes = [[image_size // s, image_size // s] for s in (4, 8, 16)]
    return Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=list(reversed(embed_dim_per_stage)),
        backbone_feature_sizes=sizes,
        fpn_hidden_size=fpn_hidden_size,
        fpn_top_down_levels=list(range(len(embed_dim_per_stage))),
        num_feature_levels=3,
    )


def sam2_hiera_large_config() -> Sam2VisionConfig:
    """The vision part of SAM2.1 Hiera-L (``facebook/sam2.1-hiera-large``), 1024x1024 input, ~212M params.

    Use it to build a randomly initialised encoder of the real size (benchmarks); real weights come from
    ``MaskEncoder(pretrained_path=...)``. FPN levels at 1024 input: 256x256, 128x128, 64x64, 256 channels.
    """
    backbone = Sam2HieraDetConfig(
        hidden_size=144,
        num_attention_heads=2,
        image_size=[1024, 1024],
        blocks_per_stage=[2, 6, 36, 4],
        embed_dim_per_stage=[144, 288, 576, 1152],
        num_attention_heads_per_stage=[2, 4, 8, 16],
        window_size_per_stage=[8, 4, 16, 8],
        global_attention_blocks=[23, 33, 43],
        window_positional_embedding_background_size=[7, 7],
    )
    return Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[1152, 576, 288, 144],
        backbone_feature_sizes=[[256, 256], [128, 128], [64, 64]],
        fpn_hidden_size=256,
        fpn_top_down_levels=[2, 3],
        num_feature_levels=3,
    )


def _plain(value: Any) -> Any:
    """Nested mappings / sequences (e.g. Hydra's DictConfig / ListConfig) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


def vision_config_from_dict(config: Mapping[str, Any]) -> Sam2VisionConfig:
    """A ``Sam2VisionConfig`` from a (possibly Hydra) mapping; ``backbone_config`` may omit its
    ``model_type`` (``sam2_hiera_det_model`` is the only backbone)."""
    fields = _plain(config)
    backbone = fields.get("backbone_config")
    if isinstance(backbone, dict):
        backbone.setdefault("model_type", "sam2_hiera_det_model")
    return Sam2VisionConfig(**fields)


def load_sam2_vision_model(pretrained_path: str | Path) -> Sam2VisionModel:
    """Load the vision part of a local SAM2 checkpoint saved by transformers (never downloads).

    Args:
        pretrained_path: A folder with ``config.json`` + ``model.safetensors`` as written by
            ``save_pretrained`` of a ``Sam2VisionModel`` (``model_type: sam2_vision_model``), a full
            ``Sam2Model`` (``sam2``) or a ``Sam2VideoModel`` (``sam2_video``, the layout of the hub's
            ``facebook/sam2.1-hiera-large``). For full models the ``vision_encoder`` sub-module is kept.

    Returns:
        The vision model with the checkpoint's weights.
    """
    path = Path(pretrained_path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{path} holds no config.json: expected a transformers SAM2 checkpoint folder"
        )
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type == "sam2_vision_model":
        return Sam2VisionModel.from_pretrained(path, local_files_only=True)
    full = AutoModel.from_pretrained(path, local_files_only=True)
    if not isinstance(getattr(full, "vision_encoder", None), Sam2VisionModel):
        raise ValueError(f"{path} (model_type={model_type!r}) has no SAM2 vision encoder")
    return full.vision_encoder


@dataclass
class MaskEncoderOutput:
    """Features of a batch of ``N`` frames.

    Attributes:
        fpn: FPN maps fine to coarse, ``[N, C, H / s, W / s]`` for ``s`` in :attr:`MaskEncoder.strides`.
        fpn_pos: the FPN's sine position encodings, same shapes as ``fpn``.
        backbone: Hiera stage outputs fine to coarse, ``[N, C_stage, H / s, W / s]`` (channels first).
    """

    fpn: list[Tensor]
    fpn_pos: list[Tensor]
    backbone: list[Tensor]

    def select(self, index: Tensor) -> MaskEncoderOutput:
        """The frames ``index`` (``[M]`` long) of every map."""
        pick = lambda maps: [m.index_select(0, index) for m in maps]  # noqa: E731
        return MaskEncoderOutput(pick(self.fpn), pick(self.fpn_pos), pick(self.backbone))


class MaskEncoder(nn.Module):
    """SAM2 Hiera + FPN applied to a batch of frames.

    Args:
        config: A ``Sam2VisionConfig`` or a mapping of its fields (random weights; see
            :func:`vision_config_from_dict`). Ignored when ``pretrained_path`` is given.
        pretrained_path: Local checkpoint folder (see :func:`load_sam2_vision_model`).
        freeze: If True, no parameter is trainable and the module stays in eval mode even under
            ``.train()`` (stage 1 trains only the decoder).
    """

    def __init__(
        self,
        config: Sam2VisionConfig | Mapping[str, Any] | None = None,
        pretrained_path: str | None = None,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        if pretrained_path is not None:
            self.vision = load_sam2_vision_model(pretrained_path)
        else:
            if config is None:
                raise ValueError("MaskEncoder needs a config or a pretrained_path")
            if not isinstance(config, Sam2VisionConfig):
                config = vision_config_from_dict(config)
            self.vision = Sam2VisionModel(config)
        self.freeze = freeze
        if freeze:
            self.requires_grad_(False)
            self.eval()

    @property
    def config(self) -> Sam2VisionConfig:
        return self.vision.config

    @property
    def out_channels(self) -> list[int]:
        """Channels of each returned level (all equal to the FPN width)."""
        return [self.config.fpn_hidden_size] * self.config.num_feature_levels

    @property
    def strides(self) -> list[int]:
        """Stride of each returned level, fine to coarse (e.g. ``[4, 8, 16]``)."""
        backbone = self.config.backbone_config
        patch = backbone.patch_stride[0] if isinstance(backbone.patch_stride, list) else backbone.patch_stride
        pool = backbone.query_stride[0] if isinstance(backbone.query_stride, list) else backbone.query_stride
        return [patch * pool**i for i in range(self.config.num_feature_levels)]

    def train(self, mode: bool = True) -> MaskEncoder:
        # A frozen encoder keeps eval-mode behaviour (no dropout / drop-path) whatever the trainer asks.
        return super().train(mode and not self.freeze)

    @property
    def backbone_channels(self) -> list[int]:
        """Channels of each Hiera stage output, fine to coarse."""
        return list(self.config.backbone_config.embed_dim_per_stage)

    def forward(self, pixel_values: Tensor) -> MaskEncoderOutput:
        """Encode frames.

        ``Sam2VisionModel.forward`` does not return the Hiera stage outputs, so its two steps (backbone,
        neck) are called here; the FPN maps are bit-identical to the plain model's.

        Args:
            pixel_values: ``[N, 3, H, W]`` normalised frames.

        Returns:
            :class:`MaskEncoderOutput`.
        """
        stages = self.vision.backbone(pixel_values).intermediate_hidden_states
        fpn, fpn_pos = self.vision.neck(stages)
        levels = self.config.num_feature_levels
        return MaskEncoderOutput(
            fpn=list(fpn[-levels:][::-1]),
            fpn_pos=list(fpn_pos[-levels:][::-1]),
            backbone=[stage.permute(0, 3, 1, 2) for stage in stages],
        )
