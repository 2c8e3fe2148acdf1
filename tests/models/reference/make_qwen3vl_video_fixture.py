"""Write the Qwen3-VL video fixture with transformers' own ``Qwen3VLVideoProcessor`` and ``Qwen3VLProcessor``.

What it records (``tests/fixtures/models/qwen3vl_video.npz``), for small deterministic uint8 clips (a
square 4-frame clip, an odd 3-frame clip with non-square frames, and a 2-frame clip):

- ``pixel_values_videos`` and ``video_grid_thw`` from ``Qwen3VLVideoProcessor`` (patch 8, merge 2,
  temporal patch 2: the tiny preset's geometry; mean / std 0.5), one call per clip;
- the prompt ``Qwen3VLProcessor`` expands for each clip (``<t seconds><|vision_start|><|video_pad|>...``
  per temporal patch, inside the chat template's own vision_start / vision_end), with the clip's frame
  indices and fps as video metadata, and its ``input_ids`` / ``mm_token_type_ids`` under the package's
  tiny tokenizer (:func:`x2sam_lightning.models.tiny_qwen3vl.build_tokenizer`);
- ``smart_resize``'s size for each clip (it keeps the frames' size: the fixture needs no resize).

The patch ordering, temporal grouping and padding, normalisation, grid, timestamps and token expansion
all come from transformers' code. ``tests/models/test_video_inputs.py`` compares the package's hand-written
patchify and chat encoding against it.

**Stand-in where torchvision is absent.** transformers' video processors need torchvision, which cannot be
installed beside this project's CPU torch (see ``docs/install.md``). Where torchvision imports, the script
uses it as it is. Where it does not, the script puts a stand-in for exactly two torchvision functions into
the two transformers modules that call them on this path, for the duration of the run, and nothing else:

- ``torchvision.transforms.v2.functional.grayscale_to_rgb`` (``BaseVideoProcessor.convert_to_rgb``):
  torchvision returns an image with 3 channels unchanged; the clips are RGB, so the stand-in returns its
  input (and refuses anything that is not 3-channel).
- ``torchvision.transforms.v2.functional.normalize`` (``TorchvisionBackend.normalize``, called by
  ``rescale_and_normalize`` with the mean / std that transformers has already fused with the 1/255
  rescale): torchvision computes ``image.sub(mean[:, None, None]).div_(std[:, None, None])``; the
  stand-in does the same two float32 operations.

Without torchvision, transformers' top-level namespace has no ``BaseVideoProcessor`` (only a placeholder),
so ``ProcessorMixin``'s argument check cannot resolve the class it checks the video processor against;
the script's ``Qwen3VLProcessor`` subclass makes that one check against the real ``BaseVideoProcessor``
imported from its module, and changes nothing else.

Resizing would also need torchvision (``tvF.resize``); the clips are made at a size that is a multiple of
``patch_size * merge_size`` and within the processor's pixel bounds, so the processor is called with
``do_resize=False``, and the script records that transformers' own ``smart_resize`` keeps that size.
Frame sampling is off (``do_sample_frames=False``): the clips are already the sampled frames, their
indices are given as metadata (as a data pipeline that cuts clips would).

Regenerate (the output is identical with or without torchvision)::

    PYTHONPATH=src python tests/models/reference/make_qwen3vl_video_fixture.py
"""

from __future__ import annotations

import argparse
import contextlib
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[2] / "fixtures" / "models" / "qwen3vl_video.npz"
PATCH, MERGE, TEMPORAL = 8, 2, 2

#: (frames, height, width, fps, first frame index, index step): a square even clip, an odd non-square
#: clip (the processor pads it with its last frame), a clip of exactly one temporal patch.
CLIPS = ((4, 32, 32, 8.0, 3, 1), (3, 16, 32, 5.0, 10, 2), (2, 32, 32, 30.0, 45, 15))
PROMPT = "Describe the video."


def _grayscale_to_rgb(image: torch.Tensor) -> torch.Tensor:
    if image.shape[-3] != 3:
        raise ValueError("the stand-in only passes 3-channel frames through (torchvision: unchanged)")
    return image


def _normalize(image: torch.Tensor, mean, std, inplace: bool = False) -> torch.Tensor:
    mean = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    image = image.sub_(mean) if inplace else image.sub(mean)
    return image.div_(std)


@contextlib.contextmanager
def torchvision_or_stand_in() -> Iterator[bool]:
    """Within the block the two transformers modules have their torchvision functions (the stand-in where
    torchvision is absent, removed again afterwards); yields whether the stand-in is in use."""
    from transformers import image_processing_backends, video_processing_utils
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        yield False
        return
    modules = (video_processing_utils, image_processing_backends)
    stand_ins = (
        types.SimpleNamespace(grayscale_to_rgb=_grayscale_to_rgb),
        types.SimpleNamespace(normalize=_normalize),
    )
    for module, stand_in in zip(modules, stand_ins):
        assert not hasattr(module, "tvF"), f"{module.__name__} already has a tvF"
        module.tvF = stand_in
    try:
        yield True
    finally:
        for module in modules:
            del module.tvF


def make_clip(index: int, frames: int, height: int, width: int) -> np.ndarray:
    """A deterministic ``[T, 3, H, W]`` uint8 clip."""
    return np.random.default_rng(100 + index).integers(0, 256, (frames, 3, height, width), dtype=np.uint8)


def video_processor():
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    return Qwen3VLVideoProcessor(
        patch_size=PATCH,
        merge_size=MERGE,
        temporal_patch_size=TEMPORAL,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        cap_pixels_per_frame=False,
        size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64 * 64},
    )


def full_processor(videos, stand_in: bool):
    """``Qwen3VLProcessor`` over the tiny tokenizer, the image processor the tiny folder saves and the
    video processor above."""
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLProcessor
    from transformers.video_processing_utils import BaseVideoProcessor

    from x2sam_lightning.models.tiny_qwen3vl import build_tokenizer

    class Processor(Qwen3VLProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor":  # the real base class, from its module
                if not isinstance(argument, BaseVideoProcessor):
                    raise TypeError(f"{type(argument).__name__} is no BaseVideoProcessor")
                return BaseVideoProcessor
            return super().check_argument_for_proper_class(argument_name, argument)

    image = Qwen2VLImageProcessorPil(patch_size=PATCH, merge_size=MERGE, temporal_patch_size=TEMPORAL)
    cls = Processor if stand_in else Qwen3VLProcessor
    return cls(image_processor=image, tokenizer=build_tokenizer(), video_processor=videos)


def compute() -> dict[str, np.ndarray]:
    """Every array of the fixture."""
    with torchvision_or_stand_in() as stand_in:
        return _compute(stand_in)


def _compute(stand_in: bool) -> dict[str, np.ndarray]:
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize
    from transformers.video_utils import VideoMetadata

    videos = video_processor()
    processor = full_processor(videos, stand_in)
    template = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    out: dict[str, np.ndarray] = {"stand_in": np.array(stand_in), "prompt": np.array(PROMPT)}
    for i, (frames, height, width, fps, first, step) in enumerate(CLIPS):
        clip = make_clip(i, frames, height, width)
        indices = [first + step * k for k in range(frames)]
        kept = smart_resize(
            frames,
            height,
            width,
            temporal_factor=TEMPORAL,
            factor=PATCH * MERGE,
            min_pixels=videos.size["shortest_edge"],
            max_pixels=videos.size["longest_edge"],
        )
        assert tuple(kept) == (height, width), f"smart_resize would resize clip {i} to {kept}"
        metadata = VideoMetadata(total_num_frames=frames, fps=fps, frames_indices=indices)
        kwargs = {"do_resize": False, "do_sample_frames": False, "video_metadata": [metadata]}
        patches = videos(videos=[torch.from_numpy(clip)], return_tensors="pt", **kwargs)
        encoded = processor(
            text=[template],
            videos=[torch.from_numpy(clip)],
            return_tensors="pt",
            return_metadata=True,
            **kwargs,
        )
        assert torch.equal(encoded["pixel_values_videos"], patches["pixel_values_videos"])
        expanded = processor.tokenizer.decode(encoded["input_ids"][0])
        out |= {
            f"clip{i}/frames": clip,
            f"clip{i}/fps": np.array(fps),
            f"clip{i}/frame_indices": np.array(indices),
            f"clip{i}/pixel_values_videos": patches["pixel_values_videos"].numpy(),
            f"clip{i}/video_grid_thw": patches["video_grid_thw"].numpy(),
            f"clip{i}/text": np.array(expanded),
            f"clip{i}/input_ids": encoded["input_ids"][0].numpy(),
            f"clip{i}/mm_token_type_ids": encoded["mm_token_type_ids"][0].numpy(),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    arrays = compute()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(
        f"wrote {args.out} ({args.out.stat().st_size} bytes; torchvision stand-in: {bool(arrays['stand_in'])})"
    )


if __name__ == "__main__":
    main()
