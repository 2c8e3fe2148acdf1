"""The evaluation conversations of a converted image split, as training's data path builds them."""

from __future__ import annotations

from pathlib import Path

from x2sam_lightning.data.conversations import EVAL_PROMPT_TYPES, build_conversation, check_conversation
from x2sam_lightning.data.shards import ClipSampler, iter_source
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.transforms import ResizePadNormalize
from x2sam_lightning.special_tokens import IMAGE
from x2sam_lightning.types import Conversation


def eval_conversations(
    out: Path, dataset: str, split: str, task: str, size: int = 96
) -> dict[tuple[str, str | None], Conversation]:
    """Every sample's evaluation conversation, once per evaluation prompt type of ``task`` (``None`` for
    tasks without prompts), each checked against the contract; keyed by ``(sample key, prompt type)``."""
    source = ShardSource(f"{dataset}_{split}", index=out / f"{dataset}-{split}.index.json")
    built = {}
    for sample in iter_source(source, ResizePadNormalize(size), ClipSampler(mode="all"), train=False):
        for prompt_type in EVAL_PROMPT_TYPES.get(task, (None,)):
            conversation = build_conversation(sample, task, train=False, prompt_type=prompt_type)
            check_conversation(conversation)
            assert conversation.messages[0]["content"].startswith(IMAGE + "\n")
            assert conversation.prompt_type == prompt_type
            built[(sample.key, prompt_type)] = conversation
    assert len({key for key, _ in built}) == source.num_samples
    return built
