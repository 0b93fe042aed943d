"""DRSformer's transformer pieces: channel LayerNorm, the sparse transformer block, patch embedding, resampling."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rainmer.archs.modules.fastpath import fast_variant
from rainmer.archs.modules.msfn import MSFN
from rainmer.archs.modules.tksa import TopKSparseAttention


class _NormAffine(nn.Module):
    """Holds the LayerNorm's weight (and bias) under ``body`` like the public code."""

    def __init__(self, dim: int, with_bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if with_bias else None


class LayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW map (eps 1e-5) as the public code: pixels as tokens, mean and biased
    variance over channels; 'BiasFree' scales by the standard deviation without centring."""

    def __init__(self, dim: int, LayerNorm_type: str = 'WithBias') -> None:  # noqa: N803 (public option name)
        super().__init__()
        self.body = _NormAffine(dim, with_bias=LayerNorm_type != 'BiasFree')

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        variance = tokens.var(-1, keepdim=True, unbiased=False)
        weight, bias = self.body.weight, self.body.bias
        if bias is None:
            normed = tokens / torch.sqrt(variance + 1e-5) * weight
        else:
            normed = (tokens - tokens.mean(-1, keepdim=True)) / torch.sqrt(variance + 1e-5) * weight + bias
        return normed.transpose(1, 2).reshape(b, c, h, w)


@fast_variant(LayerNorm)
class FastLayerNorm(LayerNorm):
    """:class:`LayerNorm` through ``F.layer_norm`` on a channels-last view (one pass; no copies on channels_last)."""

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.body.weight, self.body.bias
        if bias is None:
            variance = x.var(dim=1, keepdim=True, unbiased=False)
            return x * torch.rsqrt(variance + 1e-5) * weight[:, None, None]
        normed = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, eps=1e-5)
        return normed.permute(0, 3, 1, 2)


class TransformerBlock(nn.Module):
    """Sparse transformer block: ``x + TKSA(LN(x))`` then ``x + MSFN(LN(x))``.

    ``attention`` holds the keyword arguments of :class:`TopKSparseAttention` (rates, weight storage, modes).
    """

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 LayerNorm_type: str, **attention) -> None:  # noqa: N803 (public option name)
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = TopKSparseAttention(dim, num_heads, bias, **attention)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = MSFN(dim, ffn_expansion_factor, bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    """conv3x3 embedding (``proj``)."""

    def __init__(self, in_c: int = 3, embed_dim: int = 48, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


@fast_variant(OverlapPatchEmbed)
class ChannelsLastPatchEmbed(OverlapPatchEmbed):
    """:class:`OverlapPatchEmbed` on a channels_last copy of the image: every later activation is channels_last,
    where CPU depthwise convs are several times faster."""

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x.contiguous(memory_format=torch.channels_last))


class Downsample(nn.Module):
    """conv3x3 (C -> C/2) + PixelUnshuffle(2): half the resolution, twice the channels."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """conv3x3 (C -> 2C) + PixelShuffle(2): twice the resolution, half the channels."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)
