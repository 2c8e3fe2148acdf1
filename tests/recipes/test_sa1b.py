"""SA-1B: archive folders of jpg + json pairs (compressed-string RLE), split by image id."""

from helpers.recipes import assert_matches_truth, convert

from data_recipes.fixtures.sa1b import write_sa1b
from data_recipes.sa1b import SA1B


def test_sa1b_shards_hold_every_mask_of_each_split(tmp_path):
    truth = write_sa1b(tmp_path / "raw", scale=2)
    for split in ("train", "val"):
        convert(SA1B(), tmp_path / "raw", tmp_path / "out", split, items_per_shard=4)
        samples = assert_matches_truth(tmp_path / "out", SA1B(), split, truth[split])
        for sample in samples.values():
            assert sample["members"] == ["jpg", "json"]
            assert {o["category_id"] for o in sample["json"]["objects"]} == {1}
