"""The text markers every part of the package agrees on (data builds them, the model tokenises them).

Conversations are built in the data pipeline as plain text with these markers; the vision-language
backbone maps each to a special token of its tokenizer (``<image>`` / ``<video>`` become the Qwen3-VL
vision placeholders, ``<region>`` expands to the region sampler's tokens).
"""

from __future__ import annotations

IMAGE = "<image>"  #: where the image goes (once, in the first user turn)
VIDEO = "<video>"  #: where the video goes (once, in the first user turn)
P_START = "<p>"  #: opens a condition (category, expression, query, phrase or region)
P_END = "</p>"  #: closes a condition
SEG = "<SEG>"  #: one segmentation output (assistant turns only)
REGION = "<region>"  #: one visual prompt (inside <p>..</p>, in the order of ``Conversation.regions``)

#: Tokens added to the LLM's vocabulary (``<image>`` / ``<video>`` map onto the model's own).
ADDED_TOKENS = (P_START, P_END, SEG, REGION)
