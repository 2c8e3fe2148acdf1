"""COCO compressed RLE for the shard schema and for predictions (``counts`` as str, so it is JSON)."""

from __future__ import annotations

from typing import Any

import numpy as np

from x2sam_lightning.imports import require


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """``[N, H, W]`` bool masks -> ``N`` RLE dicts ``{"size": [H, W], "counts": str}``."""
    mask_utils = require("pycocotools.mask")
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(np.asarray(masks).transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """One ``[H, W]`` bool mask -> an RLE dict."""
    return encode_masks(np.asarray(mask)[None])[0]
