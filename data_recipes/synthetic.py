"""Generate the synthetic shape datasets (``synthetic_img``, ``synthetic_vid``; train and val) as shards.

Thin command line around :func:`x2sam_lightning.data.synthetic.generate_synthetic`, e.g.::

    python data_recipes/synthetic.py data/synthetic                 # defaults (4000 + 200 images, 100 + 20 videos)
    python data_recipes/synthetic.py /tmp/tiny --image-size 64 --train-images 12 --val-images 6 \\
        --train-videos 4 --val-videos 2 --frames 6

Skips every dataset split already present with the same settings; ``--force`` rewrites them.
"""

from __future__ import annotations

import argparse
import logging
import time

from x2sam_lightning.data.synthetic import SyntheticConfig, generate_synthetic


def main(argv: list[str] | None = None) -> None:
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="output folder")
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--train-images", type=int, default=defaults.num_train_images)
    parser.add_argument("--val-images", type=int, default=defaults.num_val_images)
    parser.add_argument("--train-videos", type=int, default=defaults.num_train_videos)
    parser.add_argument("--val-videos", type=int, default=defaults.num_val_videos)
    parser.add_argument("--frames", type=int, default=defaults.frames)
    parser.add_argument("--fps", type=float, default=defaults.fps)
    parser.add_argument("--images-per-shard", type=int, default=defaults.images_per_shard)
    parser.add_argument("--videos-per-shard", type=int, default=defaults.videos_per_shard)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--force", action="store_true", help="regenerate even if present")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    timings = generate_synthetic(
        args.root,
        image_size=args.image_size,
        num_train_images=args.train_images,
        num_val_images=args.val_images,
        num_train_videos=args.train_videos,
        num_val_videos=args.val_videos,
        frames=args.frames,
        fps=args.fps,
        images_per_shard=args.images_per_shard,
        videos_per_shard=args.videos_per_shard,
        seed=args.seed,
        force=args.force,
    )
    done = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()) or "nothing to do"
    print(f"{args.root}: {done} (total {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
