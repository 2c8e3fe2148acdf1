"""LLaVA-1.5 instruction data: conversations without the dataset's <image> token, images from every
folder of the mix, ids made unique, and the items the recipe skips."""

import pytest
from helpers.image_conversations import eval_conversations
from helpers.recipes import assert_matches_truth, convert

from data_recipes.fixtures.llava import write_llava_665k
from data_recipes.framework.layout import LayoutError
from data_recipes.framework.recipe import sample_key
from data_recipes.llava import LLaVA665K, unique_ids
from x2sam_lightning.special_tokens import IMAGE


def test_llava_items_become_chat_samples_with_their_own_turns(tmp_path):
    truth = write_llava_665k(tmp_path / "raw", scale=2)["train"]
    convert(LLaVA665K(), tmp_path / "raw", tmp_path / "out", "train", items_per_shard=4)
    samples = assert_matches_truth(tmp_path / "out", LLaVA665K(), "train", truth)
    assert len(samples) == 12
    for sample_id, expected in truth.samples.items():
        got = samples[sample_key("llava_665k", sample_id)]
        assert got["members"] == sorted([expected.extra["member"], "json"])
        assert got["json"]["objects"] == []
        assert got["json"]["conversation"] == expected.extra["conversation"]
        assert not any(IMAGE in turn["content"] for turn in got["json"]["conversation"])
    # The token removed with the whitespace around it, wherever the question had it.
    firsts = {k.split("/", 1)[1]: s["json"]["conversation"][0]["content"] for k, s in samples.items()}
    assert firsts["0001000000"] == "Who wrote this book?"
    assert firsts["33471"] == "What colour is the bus?"
    conversations = eval_conversations(tmp_path / "out", "llava_665k", "train", "img_chat")
    for (key, _), conversation in conversations.items():
        expected = truth.samples[key.split("/", 1)[1]].extra["conversation"]
        assert conversation.messages[0]["content"] == f"{IMAGE}\n{expected[0]['content']}"
        assert conversation.messages[1:] == expected[1:]
        assert conversation.answer == expected[-1]["content"]


def test_repeated_ids_get_a_suffix_in_file_order():
    assert unique_ids([5, "5", "a", 5, "a"]) == ["5", "5_2", "a", "5_3", "a_2"]


def test_llava_layout_error_names_the_json(tmp_path):
    with pytest.raises(LayoutError, match=r"llava_v1_5_mix665k\.json"):
        convert(LLaVA665K(), tmp_path, tmp_path / "out", "train")
