"""ADE20K panoptic (A150), the open-vocabulary evaluation set: task ``img_ovseg``, split ``val``.

Read in the panoptic format detectron2 / Mask2Former's ``datasets/prepare_ade20k_pan_seg.py`` writes
from ADEChallengeData2016: ``ade20k_panoptic_val.json`` (image ids are the file stems, strings such as
``ADE_val_00000001``; the 150 categories have 0-based ids, ``isthing`` 0 / 1), ``ade20k_panoptic_val/``
(RGB PNGs of segment ids) and ``images/validation/``. The same reader as COCO panoptic
(:class:`data_recipes.coco.PanopticRecipe`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from data_recipes.coco import PanopticRecipe
from data_recipes.framework.cli import main

_FOLDER = "ADEChallengeData2016"
_SPLIT_FOLDERS = {"train": "training", "val": "validation"}


class ADE20KPanoptic(PanopticRecipe):
    name = "ade20k_panoptic"
    task = "img_ovseg"
    splits = ("val",)
    layout = (
        "ADEChallengeData2016/ (or --root pointing at it) holding ade20k_panoptic_val.json, "
        "ade20k_panoptic_val/*.png (detectron2's prepare_ade20k_pan_seg.py) and images/validation/*.jpg"
    )

    def files(self, root: Path, split: str) -> tuple[Path, Path, Path]:
        base = root / _FOLDER if (root / _FOLDER).is_dir() else root
        return (
            base / f"ade20k_panoptic_{split}.json",
            base / f"ade20k_panoptic_{split}",
            base / "images" / _SPLIT_FOLDERS[split],
        )


RECIPES = [ADE20KPanoptic()]

if __name__ == "__main__":
    sys.exit(main(RECIPES))
