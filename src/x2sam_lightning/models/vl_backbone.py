"""The vision-language backbone: ``transformers.Qwen3VLForConditionalGeneration`` from a local folder.

What this wrapper adds to the plain model, and nothing else:

- the markers of :mod:`x2sam_lightning.special_tokens` (``<p>``, ``</p>``, ``<SEG>``, ``<region>``) as added
  special tokens, the embeddings resized to hold them (new rows start at the mean embedding);
- freezing: the vision tower frozen or not, the LLM trained through LoRA (peft) on the language model only,
  the new tokens' embedding rows trainable (peft ``trainable_token_indices``);
- region features spliced in at the ``<region>`` tokens (an embedding hook, so ``forward`` and ``generate``
  keep transformers' own M-RoPE and vision paths);
- the vision inputs from the segmentation batch (:mod:`x2sam_lightning.models.vision_inputs`): images as
  ``pixel_values`` / ``image_grid_thw``, clips of several frames as ``pixel_values_videos`` /
  ``video_grid_thw`` in ``Qwen3VLVideoProcessor``'s layout.

The same class loads the paper's Qwen3-VL-4B-Instruct folder and the tiny random folder the package
builds (:mod:`x2sam_lightning.models.tiny_qwen3vl`); ``create_tiny`` builds the latter on first use. Nothing
is ever downloaded (``local_files_only``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from x2sam_lightning.models.tiny_qwen3vl import ensure_tiny_qwen3vl, folder_digest
from x2sam_lightning.models.vision_inputs import VisionInputSpec, video_inputs, vision_inputs
from x2sam_lightning.special_tokens import ADDED_TOKENS, REGION

#: LoRA targets: the LLM's attention and MLP projections. The vision tower uses ``qkv``/``proj``/
#: ``linear_fc*`` names, and the regex anchors on ``language_model`` anyway.
#: Tokens of the prompt that a reply never contains (placeholders need features; a turn start ends it).
PROMPT_ONLY_TOKENS = (
    REGION,
    "<|im_start|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
DEFAULT_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


class VLBackbone(nn.Module):
    """Qwen3-VL with the X2SAM tokens, freezing, LoRA and region splicing.

    Args:
        pretrained_path: Local folder in transformers layout (config, safetensors, tokenizer, processor).
        create_tiny: If given, build a tiny random model into ``pretrained_path`` first (settings of
            :class:`~x2sam_lightning.models.tiny_qwen3vl.TinyQwen3VLConfig`; a no-op when the folder
            already holds the same one).
        lora: peft ``LoraConfig`` fields (``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``, ...);
            ``None`` trains the LLM fully (or not at all, see ``freeze_llm``).
        freeze_llm: Freeze the LLM's own weights (LoRA adapters and new token rows stay trainable); LoRA
            needs it (peft freezes what it adapts).
        freeze_vision: Freeze the vision tower and its merger (the paper); the tiny random preset trains it.
        image_size: Side the frames are resized to for the vision tower (``None``: the segmentation size).
        gradient_checkpointing: Recompute LLM activations in backward (large models).
        torch_dtype: Weight dtype when loading (``"bfloat16"`` for the 4B model on a GPU), default float32.
        no_repeat_ngram_size: greedy decoding never repeats an n-gram of this size (0: off). A small,
            briefly trained LM falls into loops ("medium medium medium ...") that a pretrained one does not.
    """

    @staticmethod
    def prepare_files(pretrained_path: str, create_tiny: Mapping[str, Any] | None = None, **_: Any) -> None:
        """Make what the constructor reads on first use (the tiny folder), without building the model:
        called once in the launching process before a strategy starts others that would build at once
        (``lightning/deferred.py``)."""
        if create_tiny is not None:
            ensure_tiny_qwen3vl(Path(pretrained_path), **dict(create_tiny))

    def __init__(
        self,
        pretrained_path: str,
        create_tiny: Mapping[str, Any] | None = None,
        lora: Mapping[str, Any] | None = None,
        freeze_llm: bool = True,
        freeze_vision: bool = True,
        image_size: int | None = None,
        gradient_checkpointing: bool = False,
        torch_dtype: str | None = None,
        no_repeat_ngram_size: int = 0,
    ) -> None:
        super().__init__()
        from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration

        path = Path(pretrained_path)
        if create_tiny is not None:
            ensure_tiny_qwen3vl(path, **dict(create_tiny))
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} holds no config.json: expected a local Qwen3-VL folder (e.g. Qwen3-VL-4B-Instruct in "
                "transformers layout); nothing is downloaded"
            )
        self.pretrained_path = str(path)
        self.no_repeat_ngram_size = int(no_repeat_ngram_size)
        self.base_digest = folder_digest(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        dtype = getattr(torch, torch_dtype) if torch_dtype else torch.float32
        model = Qwen3VLForConditionalGeneration.from_pretrained(path, local_files_only=True, dtype=dtype)
        model.config.use_cache = False

        added = self.tokenizer.add_tokens(list(ADDED_TOKENS), special_tokens=True)
        if added:
            model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
            _init_new_rows(model, added)
        self.token_ids = {t: self.tokenizer.convert_tokens_to_ids(t) for t in ADDED_TOKENS}
        for name in (*PROMPT_ONLY_TOKENS, "<|im_end|>"):
            self.token_ids[name] = self.tokenizer.convert_tokens_to_ids(name)
        self.vision_spec = _vision_spec(path, model.config, image_size)
        for name, key in (("<|image_pad|>", "image_token_id"), ("<|video_pad|>", "video_token_id")):
            if self.token_ids[name] != getattr(model.config, key):
                raise ValueError(
                    f"{path}: the tokenizer's {name} is id {self.token_ids[name]}, the model's {key} is "
                    f"{getattr(model.config, key)}: tokenizer and model do not belong together"
                )

        if lora is not None and not freeze_llm:
            raise ValueError(
                "model.vl_backbone: LoRA adapts a frozen LLM; set freeze_llm=true with lora, or lora=null to "
                "train the LLM fully"
            )
        model.requires_grad_(False)
        if not freeze_llm:
            model.model.language_model.requires_grad_(True)
            model.lm_head.requires_grad_(True)
        if not freeze_vision:
            model.model.visual.requires_grad_(True)
        new_rows = [self.token_ids[t] for t in ADDED_TOKENS]
        # An untied output layer has its own rows for the new tokens: they must learn too, or <SEG>, <p>
        # and </p> keep equal logits for ever.
        tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            options = {"target_modules": DEFAULT_LORA_TARGETS, **dict(lora)}
            rows = {"embed_tokens": new_rows} if tied else {"embed_tokens": new_rows, "lm_head": new_rows}
            options.setdefault("trainable_token_indices", rows)
            trainable_vision = not freeze_vision
            model = get_peft_model(model, LoraConfig(**options))
            if trainable_vision:  # peft freezes everything it does not adapt
                model.base_model.model.model.visual.requires_grad_(True)
        elif freeze_llm:
            self._new_rows_trainable(model, new_rows)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        self.model = model
        self._region_splice: tuple[Tensor, Tensor] | None = None
        self.embeddings.register_forward_hook(self._splice_regions)

    # -- properties ------------------------------------------------------------------------------------

    @property
    def qwen(self) -> nn.Module:
        """The plain ``Qwen3VLForConditionalGeneration`` (under the peft wrapper when LoRA is on)."""
        model = self.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    @property
    def embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    @property
    def hidden_size(self) -> int:
        return int(self.qwen.config.text_config.hidden_size)

    # -- inputs ----------------------------------------------------------------------------------------

    def vision_inputs(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        """``[N, 3, S, S]`` SAM-normalised frames -> Qwen patches and ``grid_thw`` (see vision_inputs)."""
        patches, grid = vision_inputs(pixel_values.float(), self.vision_spec)
        return patches.to(self.qwen.model.visual.dtype), grid

    def video_inputs(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, T, 3, S, S]`` SAM-normalised clips -> Qwen ``pixel_values_videos`` and ``video_grid_thw``
        (see vision_inputs)."""
        patches, grid = video_inputs(pixel_values.float(), self.vision_spec)
        return patches.to(self.qwen.model.visual.dtype), grid

    def image_tokens(self, side: int) -> int:
        """``<|image_pad|>`` tokens one ``side x side`` image becomes (and ``<|video_pad|>`` tokens per
        temporal patch of a video of such frames)."""
        return self.vision_spec.tokens_per_image(side)

    @contextlib.contextmanager
    def regions_spliced(self, positions: Tensor | None, features: Tensor | None) -> Iterator[None]:
        """Within the block, embeddings at ``positions`` (``[B, L]`` bool over the input ids) are replaced
        by ``features`` (``[positions.sum(), D]``, in row-major order); later generation steps, whose
        inputs have another shape, are left alone."""
        if positions is None or features is None or not bool(positions.any()):
            yield
            return
        self._region_splice = (positions, features)
        try:
            yield
        finally:
            self._region_splice = None

    def _splice_regions(self, module: nn.Module, args: Any, output: Tensor) -> Tensor | None:
        if self._region_splice is None:
            return None
        positions, features = self._region_splice
        if output.shape[:2] != positions.shape:
            return None
        return output.masked_scatter(positions.unsqueeze(-1), features.to(output.dtype))

    # -- forward / generate ----------------------------------------------------------------------------

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        mm_token_type_ids: Tensor,
        pixel_values: Tensor | None = None,
        image_grid_thw: Tensor | None = None,
        region_positions: Tensor | None = None,
        region_features: Tensor | None = None,
        pixel_values_videos: Tensor | None = None,
        video_grid_thw: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One teacher-forced pass.

        Args:
            input_ids, attention_mask, mm_token_type_ids: ``[B, L]`` (right padded).
            pixel_values, image_grid_thw: Qwen patches of every image (see :meth:`vision_inputs`).
            pixel_values_videos, video_grid_thw: Qwen patches of every video (see :meth:`video_inputs`).
            region_positions: ``[B, L]`` bool where ``<region>`` tokens are.
            region_features: ``[num region tokens, hidden]`` spliced there.

        Returns:
            ``logits [B, L, V]`` and the last hidden states ``[B, L, hidden]``.
        """
        with self.regions_spliced(region_positions, region_features):
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                mm_token_type_ids=mm_token_type_ids,
                pixel_values=pixel_values,
                image_grid_thw=image_grid_thw,
                pixel_values_videos=pixel_values_videos,
                video_grid_thw=video_grid_thw,
                output_hidden_states=True,
                use_cache=False,
            )
        return out.logits, out.hidden_states[-1]

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        mm_token_type_ids: Tensor,
        pixel_values: Tensor | None = None,
        image_grid_thw: Tensor | None = None,
        region_positions: Tensor | None = None,
        region_features: Tensor | None = None,
        max_new_tokens: int = 64,
        pixel_values_videos: Tensor | None = None,
        video_grid_thw: Tensor | None = None,
    ) -> Tensor:
        """Greedy decoding of the reply (inputs left padded); returns the new tokens ``[B, N]``, padded with
        ``<|endoftext|>`` after each sequence's ``<|im_end|>``. Placeholders and turn starts
        (:data:`PROMPT_ONLY_TOKENS`) are never generated."""
        eos = self.token_ids["<|im_end|>"]
        # generate() encodes every modality whose pixels it is given as a key, even a None: pass only those
        # there are.
        vision = {
            k: v
            for k, v in (
                ("pixel_values", pixel_values),
                ("image_grid_thw", image_grid_thw),
                ("pixel_values_videos", pixel_values_videos),
                ("video_grid_thw", video_grid_thw),
            )
            if v is not None
        }
        with self.regions_spliced(region_positions, region_features):
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                mm_token_type_ids=mm_token_type_ids,
                **vision,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                no_repeat_ngram_size=self.no_repeat_ngram_size,
                # Fed back with the prompt to decode masks: a generated placeholder would need features.
                suppress_tokens=[self.token_ids[t] for t in PROMPT_ONLY_TOKENS],
                eos_token_id=eos,
                pad_token_id=self.tokenizer.pad_token_id,
                use_cache=True,
            )
        return out[:, input_ids.shape[1] :]

    # -- checkpoints -----------------------------------------------------------------------------------

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Only what training changes (LoRA adapters, new token rows, unfrozen parts), by full name."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in trainable}

    @staticmethod
    def _new_rows_trainable(model: nn.Module, rows: Sequence[int]) -> None:
        """Without peft: train the input (and an untied output) embedding but mask the gradient of every
        old row."""
        matrices = {
            id(m.weight): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings())
        }
        for weight in matrices.values():
            weight.requires_grad_(True)
            mask = torch.zeros(weight.shape[0], 1)
            mask[list(rows)] = 1.0
            weight.register_hook(lambda grad, mask=mask: grad * mask.to(grad))


def _init_new_rows(model: nn.Module, added: int) -> None:
    """New token rows start at the mean of the old ones (input and, if untied, output embeddings)."""
    with torch.no_grad():
        for matrix in {
            id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())
        }.values():
            weight = matrix.weight
            weight[-added:] = weight[:-added].mean(0, keepdim=True)


def _vision_spec(path: Path, config: Any, image_size: int | None) -> VisionInputSpec:
    """The tower's geometry from the config, its statistics from the saved image (and video) processor."""
    vision = config.vision_config
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    processor_file = path / "preprocessor_config.json"
    if processor_file.is_file():
        processor = json.loads(processor_file.read_text())
        mean = tuple(processor.get("image_mean", mean))
        std = tuple(processor.get("image_std", std))
    video_mean = video_std = None
    video_file = path / "video_preprocessor_config.json"
    if video_file.is_file():
        processor = json.loads(video_file.read_text())
        video_mean = tuple(processor["image_mean"]) if "image_mean" in processor else None
        video_std = tuple(processor["image_std"]) if "image_std" in processor else None
    return VisionInputSpec(
        patch_size=int(vision.patch_size),
        merge_size=int(vision.spatial_merge_size),
        temporal_patch_size=int(vision.temporal_patch_size),
        image_mean=mean,
        image_std=std,
        image_size=image_size,
        video_mean=video_mean,
        video_std=video_std,
    )
