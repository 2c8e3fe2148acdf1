"""Pixel normalisation shared by the data pipeline (which applies it) and the models (which undo it).

The segmentation input is normalised with the ImageNet statistics SAM2 was trained with; the Qwen3-VL
vision tower wants its own statistics, so the vision-language backbone maps one to the other.
"""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
