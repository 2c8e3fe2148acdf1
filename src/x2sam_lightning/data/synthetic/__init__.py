"""Synthetic coloured-shape images and videos for every task, written as WebDataset shards.

The embedded default data of the project: small, deterministic and generated on first use, so every
recipe runs without downloads. Each sample ``i`` is drawn from its own ``numpy`` generator seeded with
``(seed, dataset, split, i)``, so a sample does not depend on how many processes generate or read the set,
and no two splits share a seed. ``val`` is held out of training and is where defaults are chosen; ``test``
is held out of everything but the final numbers.

Datasets (:data:`DATASETS`; the modules say what each holds):

- ``synthetic_img`` (``img_genseg``) and ``synthetic_vid`` (``vid_genseg``): the stage-1 scenes
  (:mod:`.scenes`), 4,000 / 200 / 200 images and 100 / 20 / 20 clips by default;
- one dataset per stage-2 image task (:mod:`.tasks`, text from :mod:`.language`): ``synthetic_img_ovseg``
  (val and test only), ``_refseg``, ``_reaseg``, ``_gcgseg``, ``_intseg``, ``_vgdseg``, ``_chat``,
  2,000 / 50 / 200 images each by default;
- one dataset per stage-2 video task (:mod:`.video_tasks`, scenes with occlusions, exits and
  re-appearances from :mod:`.video_scenes`, text from :mod:`.video_language`): ``synthetic_vid_ovseg``
  (val and test only), ``_refseg``, ``_reaseg``, ``_gcgseg``, ``_objseg``, ``_vgdseg``, ``_chat``,
  200 / 20 / 50 clips each by default, absent frames as empty masks (schema 2).

Layout written under ``root`` (every dataset and split)::

    root/<dataset>-<split>-000000.tar ...  root/<dataset>-<split>.index.json

Shard urls in an index are relative to the index file's folder, so a generated set can be moved.
"""

from x2sam_lightning.data.synthetic.config import (
    DATASETS,
    EVAL_ONLY_DATASETS,
    GENERATOR_VERSION,
    GENERATOR_VERSIONS,
    IMAGE_TASK_DATASETS,
    SPLITS,
    STAGE1_DATASETS,
    VIDEO_TASK_DATASETS,
    SyntheticConfig,
)
from x2sam_lightning.data.synthetic.scenes import (
    BACKGROUNDS,
    CATEGORIES,
    COLORS,
    MIN_VISIBLE_FRACTION,
    MIN_VISIBLE_PIXELS,
    SHAPES,
    SIZES,
    encode_mp4,
    make_image_sample,
    make_video_sample,
)
from x2sam_lightning.data.synthetic.tasks import OV_CATEGORIES, OV_PAIRS, make_task_sample
from x2sam_lightning.data.synthetic.video_scenes import EXIT_SHARE, OCCLUSION_SHARE
from x2sam_lightning.data.synthetic.video_tasks import make_video_task_sample
from x2sam_lightning.data.synthetic.writer import (
    dataset_categories,
    default_config,
    ensure_synthetic,
    generate_synthetic,
    index_path,
    iter_samples,
    make_sample,
    remove_synthetic,
    sample_key,
)

__all__ = [
    "BACKGROUNDS",
    "CATEGORIES",
    "COLORS",
    "DATASETS",
    "EVAL_ONLY_DATASETS",
    "EXIT_SHARE",
    "GENERATOR_VERSION",
    "GENERATOR_VERSIONS",
    "IMAGE_TASK_DATASETS",
    "MIN_VISIBLE_FRACTION",
    "MIN_VISIBLE_PIXELS",
    "OCCLUSION_SHARE",
    "OV_CATEGORIES",
    "OV_PAIRS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "STAGE1_DATASETS",
    "VIDEO_TASK_DATASETS",
    "SyntheticConfig",
    "dataset_categories",
    "default_config",
    "encode_mp4",
    "ensure_synthetic",
    "generate_synthetic",
    "index_path",
    "iter_samples",
    "make_image_sample",
    "make_sample",
    "make_task_sample",
    "make_video_sample",
    "make_video_task_sample",
    "remove_synthetic",
    "sample_key",
]
