"""Media as the reader will see it: image sizes after EXIF orientation, video frames as members."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path


def image_size(data: bytes) -> tuple[int, int]:
    """``(height, width)`` of an image file's bytes as displayed (EXIF orientation 5-8 swaps the sides),
    read from the header only: the size the shard reader checks the sample json against."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def image_extension(data: bytes) -> str:
    """``jpg`` or ``png`` from the file's magic bytes (file names lie: ``.jpg`` PNGs exist)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    raise ValueError("neither a JPEG nor a PNG file")


def image_media(path: Path) -> tuple[dict[str, bytes], tuple[int, int]]:
    """An image file as a sample's media member (its bytes as they are) and its displayed size."""
    data = path.read_bytes()
    return {image_extension(data): data}, image_size(data)


def frame_media(paths: Sequence[Path]) -> tuple[dict[str, bytes], tuple[int, int]]:
    """Video frame files as members ``0000.jpg``, ``0001.png``, ... (in the given order, bytes as they
    are) and the frame size, which every frame must share.

    Raises:
        ValueError: no frames, or frames of different sizes (naming the first one that differs).
    """
    if not paths:
        raise ValueError("a video needs at least one frame")
    media: dict[str, bytes] = {}
    size: tuple[int, int] | None = None
    for n, path in enumerate(paths):
        data = path.read_bytes()
        this = image_size(data)
        if size is None:
            size = this
        elif this != size:
            raise ValueError(
                f"frame {path} is {this[1]}x{this[0]} but the first frame is {size[1]}x{size[0]}"
            )
        media[f"{n:04d}.{image_extension(data)}"] = data
    assert size is not None
    return media, size
