"""Prompt decoder: decoder blocks that add gated projections of global prompts to the attention output
(summed as in the paper, or mixed by a learnable chromatic weight as the public ``Rainmer_SA_chralpha``)."""
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rainmer.archs.modules.fastpath import fast_variant
from rainmer.archs.modules.ops import is_channels_last
from rainmer.archs.modules.transformer import TransformerBlock

# How a decoder block combines its prompts: ``sum`` (the paper: ``P_chr + P_deg``) or ``chralpha`` (the public
# ``Rainmer_SA_chralpha``: ``a P_chr + (1 - a) P_deg`` with a learnable per-block direction ``chr_z``).
PROMPT_FUSIONS = ('sum', 'chralpha')
CHRALPHA_VIEWS = ('chromatic', 'degradation')


def check_prompt_fusion(prompt_fusion: str, prompt_views: Sequence[str]) -> None:
    """Raise ValueError for an unknown fusion, or ``chralpha`` without both the chromatic and degradation prompts."""
    if prompt_fusion not in PROMPT_FUSIONS:
        raise ValueError(f'prompt_fusion: {prompt_fusion!r} is not one of {", ".join(PROMPT_FUSIONS)}')
    if prompt_fusion == 'chralpha' and tuple(prompt_views) != CHRALPHA_VIEWS:
        raise ValueError("prompt_fusion: chralpha mixes the chromatic and degradation prompts; it needs both "
                         f"(views with 'chromatic' and 'degradation'), got prompts {list(prompt_views)}")


def chromatic_weight(chr_z: Tensor, chromatic_prompt: Tensor) -> Tensor:
    """``a = (1 + <normalize(chr_z), stopgrad(z_chr)>) / 2`` per sample, [B, 1, 1, 1] (public ``chr_alpha``).

    ``chr_z`` [1, P, 1, 1] (learnable), ``chromatic_prompt`` z_chr [B, P, 1, 1] (already L2-normalised): no gradient
    flows from a into the prompt, only into ``chr_z``. Op for op the public ``CrossAttention.forward``.
    """
    alpha = F.normalize(chr_z) * chromatic_prompt.detach()
    alpha = torch.sum(alpha, dim=1, keepdim=True)
    return (1 + alpha) / 2.0

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

    With ``prompt_fusion='chralpha'`` (the public ``Rainmer_SA_chralpha``; needs the chromatic and degradation
    prompts) it gets ``+ (a P_chr + (1 - a) P_deg)`` instead, ``a`` from :func:`chromatic_weight` and the block's
    learnable ``chr_z`` [1, prompt_dim, 1, 1] (initialised to ones; state-dict key ``<block>.chr_z``).
    With no prompt views (DRSformer) it is exactly :class:`TransformerBlock`, with the same state-dict keys.
    """

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, LayerNorm_type: str,
                 prompt_views: Sequence[str] = (), prompt_dim: int = 0, prompt_fusion: str = 'sum',
                 **attention) -> None:  # noqa: N803
        super().__init__(dim, num_heads, ffn_expansion_factor, bias, LayerNorm_type, **attention)
        check_prompt_fusion(prompt_fusion, prompt_views)
        self.prompt_fusion = prompt_fusion
        if prompt_views:
            self.prompts = nn.ModuleDict({view: PromptInjection(dim, prompt_dim) for view in prompt_views})
        else:
            self.prompts = None
        if prompt_fusion == 'chralpha':
            self.chr_z = nn.Parameter(torch.ones(1, prompt_dim, 1, 1))
        else:
            self.register_parameter('chr_z', None)

    def forward(self, x: Tensor, prompts: Mapping[str, Tensor] | None = None) -> Tensor:
        out = self.attn(self.norm1(x))
        if self.prompts is not None and prompts is not None:
            if self.chr_z is None:
                injected = [module(out, prompts[view]) for view, module in self.prompts.items()]
                out = out + sum(injected)
            else:
                alpha = chromatic_weight(self.chr_z, prompts['chromatic'])
                chromatic = self.prompts['chromatic'](out, prompts['chromatic'])
                degradation = self.prompts['degradation'](out, prompts['degradation'])
                out = out + (alpha * chromatic + (1 - alpha) * degradation)
        x = x + out
        return x + self.ffn(self.norm2(x))
