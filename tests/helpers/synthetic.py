"""The tiny synthetic-data settings the data tests share (a few seconds to generate)."""

TINY = dict(
    image_size=64,
    num_train_images=12,
    num_val_images=6,
    num_test_images=4,
    num_train_videos=4,
    num_val_videos=2,
    num_test_videos=1,
    num_train_task_images=8,
    num_val_task_images=4,
    num_test_task_images=4,
    num_train_task_videos=3,
    num_val_task_videos=2,
    num_test_task_videos=2,
    frames=6,
    images_per_shard=4,
    videos_per_shard=2,
    seed=0,
    datasets="all",
)
