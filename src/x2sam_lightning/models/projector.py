"""The MLP projectors between the LLM and the segmentation side (X-SAM's ``DynamicProjector``)."""

from __future__ import annotations

from torch import Tensor, nn


class MLPProjector(nn.Module):
    """``depth`` linear layers with GELU between them, ``in_dim -> out_dim`` (hidden width ``out_dim``).

    Used twice in X2SAM: the *MLLM projector* maps LLM hidden states to the mask decoder's width (the
    ``<SEG>`` prompt, the condition tokens and embeddings); the *region projector* maps region-sampler
    tokens to the LLM width.
    """

    def __init__(self, in_dim: int, out_dim: int, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
