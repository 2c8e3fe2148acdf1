"""The Qwen3-VL wrapper against plain transformers, the tokenizer, LoRA, region splicing, vision inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, Qwen2VLImageProcessorPil, Qwen3VLForConditionalGeneration

from x2sam_lightning.models.chat_encoding import ChatEncoder
from x2sam_lightning.models.tiny_qwen3vl import TinyQwen3VLConfig, save_tiny_qwen3vl
from x2sam_lightning.models.vision_inputs import VisionInputSpec, patchify_images, vision_inputs
from x2sam_lightning.models.vl_backbone import VLBackbone
from x2sam_lightning.normalization import IMAGENET_MEAN, IMAGENET_STD
from x2sam_lightning.special_tokens import ADDED_TOKENS
from x2sam_lightning.types import Conversation


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_qwen3vl(tmp_path_factory.mktemp("vlm") / "tiny", TinyQwen3VLConfig())


def _inputs(vl: VLBackbone, text: str = "<image>Please segment <p>the red circle</p>.", reply: bool = True):
    chat = ChatEncoder(vl.tokenizer, vl.image_tokens(64), 4).encode(
        Conversation([{"role": "user", "content": text}, {"role": "assistant", "content": "Sure, <SEG>."}]),
        generation_prompt=not reply,
    )
    ids = torch.tensor([chat.input_ids])
    pixels, grid = vl.vision_inputs(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    return ids, torch.ones_like(ids), torch.tensor([chat.mm_token_type_ids]), pixels, grid


def test_folder_has_the_real_layout_and_is_reproducible(folder, tmp_path):
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "preprocessor_config.json" in names
    again = save_tiny_qwen3vl(tmp_path / "again", TinyQwen3VLConfig())
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (folder / name).read_bytes() == (again / name).read_bytes(), name


def test_tokenizer_round_trip_with_the_special_tokens(folder):
    vl = VLBackbone(str(folder), lora=None)
    tokenizer = vl.tokenizer
    text = "Sure, <p>the red circle</p><SEG> and <p><region></p>."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for token in ADDED_TOKENS:
        assert ids.count(vl.token_ids[token]) == text.count(token), token
    assert tokenizer.decode(ids) == text
    # Words of the instructions are single tokens; any byte still encodes.
    assert len(tokenizer(" segment the red circle", add_special_tokens=False)["input_ids"]) == 4
    assert tokenizer.decode(tokenizer("naïve 東京", add_special_tokens=False)["input_ids"]) == "naïve 東京"
    # The tokenizer (with our tokens) reloads from a saved folder.
    reloaded = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    reloaded.add_tokens(list(ADDED_TOKENS), special_tokens=True)
    assert reloaded(text, add_special_tokens=False)["input_ids"] == ids


def test_chat_encoding_matches_the_chat_template(folder):
    vl = VLBackbone(str(folder), lora=None)
    encoder = ChatEncoder(vl.tokenizer, image_tokens=1, tokens_per_region=1)
    conversation = Conversation(
        [
            {"role": "user", "content": "<image>Describe it."},
            {"role": "assistant", "content": "A red circle."},
        ]
    )
    ours = encoder.encode(conversation, generation_prompt=True).input_ids
    template = vl.tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert ours == vl.tokenizer(template, add_special_tokens=False)["input_ids"]


def test_wrapper_equals_plain_transformers(folder):
    """New token rows aside, the wrapper (with LoRA at its zero init) computes what plain transformers does."""
    plain = Qwen3VLForConditionalGeneration.from_pretrained(folder, local_files_only=True).eval()
    vl = VLBackbone(str(folder), lora={"r": 8, "lora_alpha": 16}).eval()
    ids, mask, mm, pixels, grid = _inputs(vl, "<image>Please segment the red circle.", reply=False)
    logits, hidden = vl(ids, mask, mm, pixels, grid)
    expected = plain(
        input_ids=ids,
        attention_mask=mask,
        mm_token_type_ids=mm,
        pixel_values=pixels,
        image_grid_thw=grid,
        output_hidden_states=True,
    )
    old = plain.config.text_config.vocab_size
    torch.testing.assert_close(logits[..., :old], expected.logits)
    torch.testing.assert_close(hidden, expected.hidden_states[-1])


def test_lora_is_on_the_llm_only_and_counts(folder):
    vl = VLBackbone(str(folder), lora={"r": 4, "lora_alpha": 8}, freeze_vision=True)
    trainable = {n: p.numel() for n, p in vl.named_parameters() if p.requires_grad}
    assert all("language_model" in n for n in trainable)
    config = vl.qwen.config.text_config
    h, layers = config.hidden_size, config.num_hidden_layers
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    m = config.intermediate_size
    shapes = [(h, q), (h, kv), (h, kv), (q, h), (h, m), (h, m), (m, h)]  # q k v o gate up down
    lora = layers * sum(4 * (i + o) for i, o in shapes)
    new_rows = len(ADDED_TOKENS) * h
    assert sum(trainable.values()) == lora + new_rows
    assert not any(p.requires_grad for p in vl.qwen.model.visual.parameters())


def test_new_tokens_learn_and_old_rows_stay(folder):
    vl = VLBackbone(str(folder), lora={"r": 4, "lora_alpha": 8})
    ids, mask, mm, pixels, grid = _inputs(vl)
    before = vl.qwen.get_input_embeddings().weight.detach().clone()
    seg = vl.token_ids["<SEG>"]
    optimizer = torch.optim.SGD([p for p in vl.parameters() if p.requires_grad], lr=1.0)
    logits, _ = vl(ids, mask, mm, pixels, grid)
    logits[0, -1, seg].backward()
    optimizer.step()
    delta = vl.embeddings(torch.tensor([[seg, 100]]))[0] - before[[seg, 100]]
    assert delta[0].abs().sum() > 0 and delta[1].abs().sum() == 0


@pytest.mark.parametrize("lora", [{"r": 4, "lora_alpha": 8}, None], ids=["lora", "frozen_llm"])
def test_new_tokens_output_rows_learn_when_untied(tmp_path, lora):
    untied = save_tiny_qwen3vl(tmp_path / "untied", TinyQwen3VLConfig(tie_word_embeddings=False))
    vl = VLBackbone(str(untied), lora=lora)
    ids, mask, mm, pixels, grid = _inputs(vl)
    seg, open_tag = vl.token_ids["<SEG>"], vl.token_ids["<p>"]
    logits, _ = vl(ids, mask, mm, pixels, grid)
    assert torch.equal(logits[0, -1, seg], logits[0, -1, open_tag])  # both rows start at the mean row
    optimizer = torch.optim.SGD([p for p in vl.parameters() if p.requires_grad], lr=1e-3)
    (logits[0, -1, open_tag] - logits[0, -1, seg]).backward()  # descent raises <SEG> over <p>
    optimizer.step()
    with torch.no_grad():
        logits, _ = vl(ids, mask, mm, pixels, grid)
    assert logits[0, -1, seg] > logits[0, -1, open_tag]


def test_lora_needs_a_frozen_llm(folder):
    with pytest.raises(ValueError, match="freeze_llm"):
        VLBackbone(str(folder), lora={"r": 4}, freeze_llm=False)


def test_regions_are_spliced_at_their_tokens_only(folder):
    vl = VLBackbone(str(folder), lora=None).eval()
    ids, mask, mm, pixels, grid = _inputs(vl, "<image>Segment <p><region></p> please.")
    positions = ids == vl.token_ids["<region>"]
    assert positions.sum() == 4
    features = torch.randn(4, vl.hidden_size)
    spliced, _ = vl(ids, mask, mm, pixels, grid, positions, features)
    plain, _ = vl(ids, mask, mm, pixels, grid)
    first = int(positions.nonzero()[0, 1])
    torch.testing.assert_close(spliced[:, :first], plain[:, :first])  # causal: nothing before changes
    assert not torch.allclose(spliced[:, first:], plain[:, first:])
    assert vl._region_splice is None  # the hook is disarmed after the call


def test_vision_inputs_match_the_qwen_image_processor():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    processor = Qwen2VLImageProcessorPil(
        patch_size=8, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    expected = processor(images=[Image.fromarray(image)], do_resize=False, return_tensors="pt")
    spec = VisionInputSpec(patch_size=8, merge_size=2, temporal_patch_size=2)
    unit = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    patches, grid = patchify_images((unit - 0.5) / 0.5, spec)
    torch.testing.assert_close(patches, expected["pixel_values"], rtol=0, atol=1e-6)
    assert grid.tolist() == expected["image_grid_thw"].tolist()
    # From the SAM-normalised batch the same patches come out.
    sam = (unit - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(vision_inputs(sam, spec)[0], expected["pixel_values"], rtol=0, atol=1e-5)
