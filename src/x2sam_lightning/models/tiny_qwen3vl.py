"""A tiny random Qwen3-VL, written to a local folder in the real model's layout (built offline).

The embedded default and the tests need a vision-language model without any download. This module builds
one the way a hub folder looks (``config.json``, ``model.safetensors``, ``tokenizer.json`` +
``tokenizer_config.json`` with a chat template, ``preprocessor_config.json``), so the tiny preset and the
paper's Qwen3-VL-4B preset load through the same ``from_pretrained(path)`` code.

The tokenizer is a byte-level BPE like Qwen's (same pre-tokenisation regex, same special tokens): bytes
are always representable, and merges learned from a small fixed vocabulary of instruction and scene words
make those words single tokens (a tiny model learns far faster from words than from characters). It is
trained with HF ``tokenizers`` on a fixed corpus, which is deterministic: the same folder bytes every time.

Weights are drawn from a seeded generator, so a folder rebuilt with the same settings holds the same
weights (checkpoints of the tiny preset store only the trainable weights; see ``lightning/x2sam_joint``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

#: Bump when the folder's content for the same settings changes (a stale folder is then rebuilt).
BUILDER_VERSION = 2

#: Qwen's special tokens (ChatML turns, vision placeholders), in Qwen's order.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Qwen's pre-tokenisation: contractions, letter runs with one leading non-letter, single digits, ...
_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
    r"""|\s+(?!\S)|\s+"""
)

#: Words that become single tokens: instructions of the segmentation tasks, scene and chat vocabulary.
VOCABULARY = """
a an the and or of in on at to is are it its this that these there here what which where who how many
can could you please would will do does did not no yes sure none any all some each every one two three
four five six seven eight nine ten zero segment segmentation segmented mask masks image images video
videos picture photo frame frames based following categories category regions region output provide
generate create highlight identify respond with corresponding interleaved phrases phrase parts answer
brief briefly description describe explanation contents give me object objects shape shapes thing things
circle circles square squares triangle triangles ellipse ellipses star stars ring rings hexagon cross
red green blue yellow purple orange cyan pink white black grey gray colour color colours colors coloured
small medium large big tiny largest smallest biggest bigger smaller size sized top bottom left right
center centre middle above below under over next beside near nearest closest farthest corner corners
side edge hole points pointed round sky grass sun background striped stripes noise gradient textured
result results such find found see visible shown appears look looks like same other another than more
most less first second third last between both only also then from into by for as be has have
specified specify specific indicated given these those them they their which whose
about absent according alone answers area areas asked back banana belongs blotchy bubble cannot caption
carrot centred clear close contains covers draw equal fill fits front furthest grow gum kept kind kinds
lagoon later lavender lies marked match matches mention muted name named naming nothing ones order outer
outline paint perfectly pixels place point position prompts question radius reply ripe shade shaded
shares short show shows sides smoothly solid sorry stretched target tomato tropical unique up when within
word your
""".split()  # noqa: SIM905 (a word list reads better as text)


@dataclass(frozen=True)
class TinyQwen3VLConfig:
    """Every setting that determines the folder's bytes (stored in ``x2sam_tiny.json`` for idempotency).

    The defaults follow the configuration ENVIRONMENT.md checked on CPU (a few ms per forward), with a
    slightly wider text model so the language side can learn the synthetic tasks.
    """

    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate_size: int = 128
    vision_depth: int = 2
    vision_hidden_size: int = 32
    vision_heads: int = 2
    patch_size: int = 8
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    num_position_embeddings: int = 64
    tie_word_embeddings: bool = True
    seed: int = 0

    def fingerprint(self) -> dict[str, Any]:
        return {"builder_version": BUILDER_VERSION, **asdict(self)}


def build_tokenizer() -> Any:
    """The tiny byte-level BPE tokenizer with Qwen's special tokens and a ChatML chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Each word with and without its leading space (mid-sentence; after a newline or a special token, as
    # at the start of an answer), lower case and capitalised. One pre-token per line, so every form is
    # seen as often as the others and merged into one token.
    words = VOCABULARY + [w.capitalize() for w in VOCABULARY]
    corpus = [form for w in words for form in (w, " " + w)] * 4
    backend.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(QWEN_SPECIAL_TOKENS),
        chat_template=CHAT_TEMPLATE,
    )
    tokenizer.padding_side = "right"
    return tokenizer


#: Qwen's ChatML turns; image / video content items become the vision placeholders as in Qwen3-VL's
#: template (one ``<|image_pad|>`` the processor expands); no default system prompt.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- else -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def build_config(settings: TinyQwen3VLConfig, tokenizer: Any) -> Any:
    """The ``Qwen3VLConfig`` of the tiny model (token ids taken from ``tokenizer``)."""
    from transformers import Qwen3VLConfig

    head_dim = settings.text_hidden_size // settings.text_heads
    # M-RoPE splits head_dim / 2 rotary frequencies over (time, height, width): 2:1:1.
    half = head_dim // 2
    section = [half // 2, half // 4, half - half // 2 - half // 4]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    return Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": settings.text_hidden_size,
            "intermediate_size": settings.text_intermediate_size,
            "num_hidden_layers": settings.text_layers,
            "num_attention_heads": settings.text_heads,
            "num_key_value_heads": settings.text_kv_heads,
            "head_dim": head_dim,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
            "tie_word_embeddings": settings.tie_word_embeddings,
            "pad_token_id": ids["<|endoftext|>"],
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
        },
        vision_config={
            "depth": settings.vision_depth,
            "hidden_size": settings.vision_hidden_size,
            "intermediate_size": 2 * settings.vision_hidden_size,
            "num_heads": settings.vision_heads,
            "patch_size": settings.patch_size,
            "spatial_merge_size": settings.spatial_merge_size,
            "temporal_patch_size": settings.temporal_patch_size,
            "out_hidden_size": settings.text_hidden_size,
            "num_position_embeddings": settings.num_position_embeddings,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=settings.tie_word_embeddings,
    )


def save_tiny_qwen3vl(folder: str | os.PathLike, settings: TinyQwen3VLConfig | None = None) -> Path:
    """Write a tiny random Qwen3-VL folder (config, weights, tokenizer, image processor) atomically.

    Returns:
        ``folder`` as a Path.
    """
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLForConditionalGeneration

    settings = settings or TinyQwen3VLConfig()
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = build_config(settings, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = Qwen3VLForConditionalGeneration(config).eval()
    processor = Qwen2VLImageProcessorPil(
        patch_size=settings.patch_size,
        merge_size=settings.spatial_merge_size,
        temporal_patch_size=settings.temporal_patch_size,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (Path(tmp) / FINGERPRINT_FILE).write_text(json.dumps(settings.fingerprint(), indent=1))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        # Several processes may build it at once (DDP ranks build their models in configure_model): one
        # that finds the same folder already in place keeps it, as another may be reading it; only a
        # folder of other settings is replaced.
        if folder.exists():
            if _holds(folder, settings):
                return folder
            shutil.rmtree(folder)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not _holds(folder, settings):  # not a concurrent build of the same settings
                raise
            return folder
        Path(tmp).mkdir()  # the context manager removes it again
    return folder


def _holds(folder: Path, settings: TinyQwen3VLConfig) -> bool:
    """Whether ``folder`` is a complete tiny model of ``settings`` (the fingerprint is written last)."""
    try:
        if not (folder / "config.json").is_file():
            return False
        return json.loads((folder / FINGERPRINT_FILE).read_text()) == settings.fingerprint()
    except (OSError, json.JSONDecodeError):
        return False


FINGERPRINT_FILE = "x2sam_tiny.json"


def ensure_tiny_qwen3vl(folder: str | os.PathLike, **settings: Any) -> Path:
    """Build the tiny folder unless it already holds one with the same settings (first-use hook)."""
    wanted = TinyQwen3VLConfig(**settings)
    folder = Path(folder)
    return folder if _holds(folder, wanted) else save_tiny_qwen3vl(folder, wanted)


def folder_digest(folder: str | os.PathLike) -> str:
    """SHA-256 of a model folder's ``config.json`` (what a checkpoint records to detect another base)."""
    return hashlib.sha256((Path(folder) / "config.json").read_bytes()).hexdigest()
