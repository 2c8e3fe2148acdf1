"""The mask encodings public datasets use, all turned into the schema's COCO compressed RLE.

COCO-style json holds polygons (several parts per object), uncompressed RLE (``counts`` a list, column
major) or compressed RLE (``counts`` a string, or bytes); panoptic PNGs hold segment ids as
``R + 256 G + 256^2 B``; DAVIS / YouTube-VOS / VIPSeg PNGs hold object ids as palette indices.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from x2sam_lightning.data.rle import decode_rle, encode_mask
from x2sam_lightning.imports import require


class MaskFormatError(ValueError):
    """A segmentation record in none of the known encodings, or of the wrong size."""


def to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) -> ``{"size", "counts": str}``.

    Polygon parts of one object are merged (union), as the COCO API does.

    Raises:
        MaskFormatError: an unknown encoding, a polygon with fewer than 3 points, or an RLE whose size is
            not ``[height, width]``.
    """
    mask_utils = require("pycocotools.mask")
    if isinstance(segmentation, list):
        parts = [p for p in segmentation if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
        if not parts or len(parts) != len(segmentation):
            raise MaskFormatError(
                f"polygon parts need an even number (>= 6) of coordinates: {segmentation!r:.80}"
            )
        rle = mask_utils.merge(mask_utils.frPyObjects(parts, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = [int(v) for v in segmentation["size"]]
        if size != [height, width]:
            raise MaskFormatError(f"RLE size {size} differs from the image size [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        elif isinstance(counts, (str, bytes)):
            rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
            rle = mask_utils.encode(np.asfortranarray(mask_utils.decode(rle)))  # re-encode: canonical form
        else:
            raise MaskFormatError(f"RLE counts should be a list or a string, got {type(counts).__name__}")
    else:
        raise MaskFormatError(f"unknown segmentation encoding: {segmentation!r:.80}")
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_area(rle: dict[str, Any]) -> int:
    """Foreground pixels of an RLE."""
    return int(decode_rle(rle).sum())


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """``[H, W]`` bool -> compressed RLE."""
    return encode_mask(np.asarray(mask, dtype=bool))


def read_png_array(data: bytes) -> np.ndarray:
    """A PNG's stored values without colour conversion: palette indices for ``P`` images, ``[H, W, 3]``
    for RGB, ``[H, W]`` for greyscale."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if image.mode in ("RGBA", "LA"):
            image = image.convert(image.mode[:-1])
        return np.array(image)


def panoptic_ids(data: bytes) -> np.ndarray:
    """A COCO-panoptic PNG -> ``[H, W]`` int64 segment ids (``R + 256 G + 256^2 B``)."""
    rgb = read_png_array(data)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise MaskFormatError(f"panoptic PNG should be RGB, got array of shape {list(rgb.shape)}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def index_png(data: bytes) -> np.ndarray:
    """A palette (or greyscale) PNG -> ``[H, W]`` int64 indices (DAVIS, YouTube-VOS, VIPSeg, VSPW)."""
    values = read_png_array(data)
    if values.ndim != 2:
        raise MaskFormatError(f"expected a palette or greyscale PNG, got array of shape {list(values.shape)}")
    return values.astype(np.int64)
