"""`predict predict.video=clip.mp4`: a stage-1 model streams a video file through the command line."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers.videos import moving_squares, write_mp4

SMALL = [
    "+experiment=agnostic", "model/mask_memory=tiny", "data.image_size=64",
    "model.segmentor.mask_decoder.num_queries=4", "trainer.enable_progress_bar=false",
]  # fmt: skip


def _predict(tmp_path, *overrides):
    args = [
        sys.executable, "-m", "x2sam_lightning", "predict", *SMALL,
        f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'runs'}", *overrides,
    ]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def test_predict_on_a_video_file_writes_one_line_per_frame(tmp_path):
    video = write_mp4(tmp_path / "clip.mp4", moving_squares(5))
    result = _predict(
        tmp_path, f"predict.video={video}", "predict.chunk_frames=2", "predict.score_threshold=0.0"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (output,) = (tmp_path / "runs").glob("agnostic/predict/*/predictions/clip.frames.jsonl")
    assert f"5 frames of {video} segmented: {output}" in result.stdout
    header, *frames = [json.loads(line) for line in output.read_text().splitlines()]
    assert header["num_frames"] == 5 and [f["frame"] for f in frames] == list(range(5))
    assert all([o["id"] for o in f["objects"]] == [0, 1, 2, 3] for f in frames)
    assert frames[0]["objects"][0]["mask"]["size"] == [48, 64]
    assert not (tmp_path / "data" / "synthetic").exists()  # no dataset is read or generated


def test_an_unreadable_video_is_one_line_naming_it(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    result = _predict(tmp_path, f"predict.video={broken}")
    assert result.returncode == 1
    assert f"error: {broken}: cannot read the video" in result.stderr
    assert "Traceback" not in result.stderr
