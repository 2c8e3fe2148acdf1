"""Python inference: an image, an instruction and optional visual prompts in; the reply and masks out.

::

    from x2sam_lightning.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint("runs/joint_image/fit/<date>/checkpoints/last.ckpt")
    result = predictor("photo.jpg", "Please segment <p>the red circle</p> in this image.")
    result.reply, result.masks  # [K, H, W] bool at the image's size, one per segmented condition
    predictor("photo.jpg", "Can you segment the image based on the following regions: <p><region></p>?",
              prompts=[{"box": [10, 20, 60, 90]}])

Conditions are wrapped in ``<p>..</p>`` as in training; every ``<region>`` takes the next entry of
``prompts`` (one of ``point [x, y]``, ``scribble [[x, y], ...]``, ``box [x0, y0, x1, y1]``, ``mask`` bool
``[H, W]``, in pixels of the image). The image marker is added when the text has none. Whether one ``<SEG>``
decodes every condition (generic, interactive, visual-grounded prompts) or each ``<SEG>`` its own
(referring, reasoning, GCG) is read from the reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from x2sam_lightning.data.shards import DecodedClip
from x2sam_lightning.data.transforms import ResizePadNormalize
from x2sam_lightning.data.visual_prompts import PROMPT_TYPES, render_prompt
from x2sam_lightning.models.x2sam_postprocess import reply_predictions
from x2sam_lightning.special_tokens import IMAGE, REGION
from x2sam_lightning.types import Conversation, SegBatch, TrackTargets


@dataclass
class Prediction:
    """What the model answered.

    Attributes:
        reply: the generated text, markers included (``<p>``, ``</p>``, ``<SEG>``).
        masks: ``[K, H, W]`` bool at the input image's size, one per segmented condition.
        scores: ``[K]`` confidence of each mask's query in its condition.
        conditions: the text of the condition each mask segments (``<region>`` for visual prompts).
    """

    reply: str
    masks: Tensor
    scores: Tensor
    conditions: list[str]


def _load_image(image: Any) -> np.ndarray:
    from PIL import Image, ImageOps

    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"an image array must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
        return image
    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            return np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    if isinstance(image, Image.Image):
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    raise TypeError(f"unsupported image type {type(image).__name__}: give a path, a PIL image or an array")


class Predictor:
    """Wraps a trained :class:`~x2sam_lightning.lightning.x2sam_joint.X2SAMJoint` for single-image calls.

    Args:
        module: the stage-2 LightningModule (weights loaded).
        image_size: the segmentation input side it was trained with.
        device: where to run.
    """

    def __init__(self, module: Any, image_size: int, device: str | torch.device = "cpu") -> None:
        self.module = module.to(device).eval()
        self.transform = ResizePadNormalize(image_size)
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> Predictor:
        """Rebuild the model a ``fit`` checkpoint records (its config, base model folder) and load it."""
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        from x2sam_lightning.lightning.checkpoints import load_checkpoint
        from x2sam_lightning.lightning.x2sam_joint import STAGE2_FORMAT

        checkpoint = load_checkpoint(path)
        record = checkpoint.get(STAGE2_FORMAT) or {}
        config = record.get("model_config")
        if not config:
            raise ValueError(
                f"{path}: no model config recorded (a stage-2 checkpoint written by the CLI has one)"
            )
        model_cfg = OmegaConf.create(config["model"])
        model_cfg.stage1_checkpoint = None
        module = instantiate(model_cfg)
        module.load_trained(checkpoint)
        return cls(module, int(config["image_size"]), device)

    def _regions(
        self, prompts: list[dict[str, Any]], source: tuple[int, int], content: tuple[int, int]
    ) -> Tensor:
        side = self.transform.image_size
        masks = []
        for n, prompt in enumerate(prompts):
            kinds = [k for k in PROMPT_TYPES if k in prompt]
            if len(kinds) != 1:
                raise ValueError(f"prompt {n} needs exactly one of {PROMPT_TYPES}, got keys {sorted(prompt)}")
            kind = kinds[0]
            drawn = render_prompt(
                kind, prompt[kind], source_size=source, content_size=content, canvas_size=(side, side)
            )
            masks.append(torch.from_numpy(drawn))
        return torch.stack(masks)[:, None]  # [R, T=1, S, S]

    @torch.no_grad()
    def __call__(
        self,
        image: Any,
        text: str,
        prompts: list[dict[str, Any]] | None = None,
        max_new_tokens: int | None = None,
    ) -> Prediction:
        pixels = _load_image(image)
        height, width = pixels.shape[:2]
        prompts = list(prompts or [])
        if text.count(REGION) != len(prompts):
            raise ValueError(f"the text has {text.count(REGION)} {REGION} markers for {len(prompts)} prompts")
        clip = DecodedClip(
            frames=pixels[None],
            masks=np.zeros((0, 1, height, width), dtype=bool),
            valid=np.zeros((0, 1), dtype=bool),
            labels=np.zeros(0, dtype=np.int64),
            object_ids=np.zeros(0, dtype=np.int64),
            iscrowd=np.zeros(0, dtype=bool),
            frame_indices=[0],
            sample={"task": "inference", "objects": []},
            categories=[],
            key="input",
            url="",
        )
        sample = self.transform(clip)
        content = sample.image_size
        regions = self._regions(prompts, (height, width), content) if prompts else None
        content_text = text if IMAGE in text else f"{IMAGE}\n{text}"
        conversation = Conversation(
            messages=[{"role": "user", "content": content_text}],
            mode="auto",
            condition_objects=[],
            regions=regions,
            region_frames=[0] * len(prompts),
        )
        empty = TrackTargets(
            torch.zeros(0, 1, *sample.targets.masks.shape[-2:], dtype=torch.bool),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, 1, dtype=torch.bool),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, dtype=torch.bool),
        )
        batch = SegBatch(
            pixel_values=sample.pixel_values[None],  # uint8 frames: the model input is made on the device
            targets=[empty],
            image_sizes=torch.tensor([content]),
            original_sizes=torch.tensor([[height, width]]),
            keys=["input"],
            tasks=["inference"],
            source="predictor",
            conversations=[conversation],
            input_size=sample.input_size,
        ).to(self.device)
        module = self.module
        limit = max_new_tokens or module.hparams.max_new_tokens
        generator = torch.Generator().manual_seed(module.hparams.eval_seed)
        out, replies = module.net.generate(batch, limit, generator)
        tokenizer = module.net.vl_backbone.tokenizer
        result = reply_predictions(batch, out, replies, tokenizer, module.evaluator.class_loss)[0]
        return Prediction(
            result["reply"], result["masks"][:, 0].cpu(), result["scores"], result["conditions"]
        )
