"""Prompt decoder: decoder blocks that add gated projections of global prompts to the attention output."""
from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from rainmer.archs.modules.fastpath import fast_variant
from rainmer.archs.modules.ops import is_channels_last
from rainmer.archs.modules.transformer import TransformerBlock


class PromptInjection(nn.Module):
    """``P = SiLU(conv1x1(gate * z))`` with ``gate = sigmoid(conv1x1(GELU(conv1x1(out))))`` (C -> C -> 1)."""

    def __init__(self, dim: int, prompt_dim: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GELU(), nn.Conv2d(dim, 1, 1), nn.Sigmoid())
        self.projection = nn.Sequential(nn.Conv2d(prompt_dim, dim, 1), nn.SiLU())

    def forward(self, feat: Tensor, prompt: Tensor) -> Tensor:
        return self.projection(self.gate(feat) * prompt)


@fast_variant(PromptInjection)
class FoldedPromptInjection(PromptInjection):
    """For a global prompt z [B, P, 1, 1] the projection is linear in ``gate * z``, so it is evaluated as
    ``SiLU(gate * (W z) + b)``: one small matmul per image instead of a P -> C convolution per pixel."""

    def forward(self, feat: Tensor, prompt: Tensor) -> Tensor:
        gate = self.gate(feat)  # [B, 1, H, W]
        if prompt.shape[-2:] != (1, 1):
            return self.projection(gate * prompt)
        conv = self.projection[0]
        direction = F.conv2d(prompt, conv.weight)  # [B, C, 1, 1]
        if is_channels_last(feat):  # as [B, H, W, 1] * [B, 1, 1, C]: a channels_last result (gate * direction is NCHW)
            shifted = gate.permute(0, 2, 3, 1) * direction.permute(0, 2, 3, 1)
            shifted = shifted if conv.bias is None else shifted + conv.bias
            return F.silu(shifted).permute(0, 3, 1, 2)
        shifted = gate * direction if conv.bias is None else gate * direction + conv.bias[:, None, None]
        return F.silu(shifted)


class PromptedTransformerBlock(TransformerBlock):
    """Transformer block whose attention output gets ``+ sum_v P_v`` for every prompt view v.

    With no prompt views (DRSformer) it is exactly :class:`TransformerBlock`, with the same state-dict keys.
    """

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, LayerNorm_type: str,
                 prompt_views: Sequence[str] = (), prompt_dim: int = 0, **attention) -> None:  # noqa: N803
        super().__init__(dim, num_heads, ffn_expansion_factor, bias, LayerNorm_type, **attention)
        if prompt_views:
            self.prompts = nn.ModuleDict({view: PromptInjection(dim, prompt_dim) for view in prompt_views})
        else:
            self.prompts = None

    def forward(self, x: Tensor, prompts: Mapping[str, Tensor] | None = None) -> Tensor:
        out = self.attn(self.norm1(x))
        if self.prompts is not None and prompts is not None:
            injected = [module(out, prompts[view]) for view, module in self.prompts.items()]
            out = out + sum(injected)
        x = x + out
        return x + self.ffn(self.norm2(x))
