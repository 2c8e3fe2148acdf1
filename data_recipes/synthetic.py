"""Generate the synthetic datasets (train, val and test splits) as shards.

Thin command line around :func:`x2sam_lightning.data.synthetic.generate_synthetic`, e.g.::

    python data_recipes/synthetic.py data/synthetic                       # every dataset, default sizes
    python data_recipes/synthetic.py data/synthetic --datasets synthetic_img synthetic_vid   # stage 1 only
    python data_recipes/synthetic.py /tmp/tiny --image-size 64 --train-images 12 --val-images 6 \\
        --test-images 6 --train-videos 4 --val-videos 2 --test-videos 2 --frames 6 \\
        --train-task-images 8 --val-task-images 4 --test-task-images 4 --workers 2

Datasets: synthetic_img and synthetic_vid (stage 1) and one per stage-2 image task (synthetic_img_refseg,
...); see docs/data.md. Skips every dataset split already present with the same settings; ``--force``
rewrites them. The bytes do not depend on ``--workers``.
"""

from __future__ import annotations

import argparse
import logging
import time

from x2sam_lightning.data.synthetic import DATASETS, SyntheticConfig, generate_synthetic


def main(argv: list[str] | None = None) -> None:
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="output folder")
    parser.add_argument("--datasets", nargs="+", default=["all"], choices=["all", *DATASETS])
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    for split in ("train", "val", "test"):
        parser.add_argument(f"--{split}-images", type=int, default=getattr(defaults, f"num_{split}_images"))
        parser.add_argument(f"--{split}-videos", type=int, default=getattr(defaults, f"num_{split}_videos"))
        parser.add_argument(
            f"--{split}-task-images", type=int, default=getattr(defaults, f"num_{split}_task_images")
        )
        parser.add_argument(
            f"--{split}-task-videos", type=int, default=getattr(defaults, f"num_{split}_task_videos")
        )
    parser.add_argument("--frames", type=int, default=defaults.frames)
    parser.add_argument("--fps", type=float, default=defaults.fps)
    parser.add_argument("--images-per-shard", type=int, default=defaults.images_per_shard)
    parser.add_argument("--videos-per-shard", type=int, default=defaults.videos_per_shard)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=1, help="processes (one dataset split each)")
    parser.add_argument("--force", action="store_true", help="regenerate even if present")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    timings = generate_synthetic(
        args.root,
        datasets="all" if "all" in args.datasets else args.datasets,
        image_size=args.image_size,
        num_train_images=args.train_images,
        num_val_images=args.val_images,
        num_test_images=args.test_images,
        num_train_videos=args.train_videos,
        num_val_videos=args.val_videos,
        num_test_videos=args.test_videos,
        num_train_task_images=args.train_task_images,
        num_val_task_images=args.val_task_images,
        num_test_task_images=args.test_task_images,
        num_train_task_videos=args.train_task_videos,
        num_val_task_videos=args.val_task_videos,
        num_test_task_videos=args.test_task_videos,
        frames=args.frames,
        fps=args.fps,
        images_per_shard=args.images_per_shard,
        videos_per_shard=args.videos_per_shard,
        seed=args.seed,
        workers=args.workers,
        force=args.force,
    )
    done = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()) or "nothing to do"
    print(f"{args.root}: {done} (total {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
