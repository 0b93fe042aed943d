"""DRSformer's transformer pieces: channel LayerNorm, MSFN, the sparse transformer block, resampling."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rainmer.archs.modules.msfn import msfn_fast
from rainmer.archs.modules.tksa import TopKSparseAttention


class _NormAffine(nn.Module):
    """Holds the LayerNorm's weight (and bias) under ``body`` like the public code."""

    def __init__(self, dim: int, with_bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if with_bias else None


class LayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW map (eps 1e-5); 'BiasFree' scales without centring."""

    def __init__(self, dim: int, LayerNorm_type: str = 'WithBias') -> None:  # noqa: N803 (public option name)
        super().__init__()
        self.body = _NormAffine(dim, with_bias=LayerNorm_type != 'BiasFree')

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.body.weight, self.body.bias
        if bias is None:
            variance = x.var(dim=1, keepdim=True, unbiased=False)
            return x * torch.rsqrt(variance + 1e-5) * weight[:, None, None]
        normed = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, eps=1e-5)
        return normed.permute(0, 3, 1, 2)


class FeedForward(nn.Module):
    """Mixed-scale feed-forward network (MSFN): parallel dw3x3 / dw5x5 paths that exchange halves."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv3x3 = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.dwconv5x5 = nn.Conv2d(hidden * 2, hidden * 2, 5, padding=2, groups=hidden * 2, bias=bias)
        self.dwconv3x3_1 = nn.Conv2d(hidden * 2, hidden, 3, padding=1, groups=hidden, bias=bias)
        self.dwconv5x5_1 = nn.Conv2d(hidden * 2, hidden, 5, padding=2, groups=hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden * 2, dim, kernel_size=1, bias=bias)

        self.fast = True

    def forward(self, x: Tensor) -> Tensor:
        if self.fast:
            return self.forward_fast(x)
        x = self.project_in(x)
        first_3, second_3 = F.relu(self.dwconv3x3(x)).chunk(2, dim=1)
        first_5, second_5 = F.relu(self.dwconv5x5(x)).chunk(2, dim=1)
        first = F.relu(self.dwconv3x3_1(torch.cat([first_3, first_5], dim=1)))
        second = F.relu(self.dwconv5x5_1(torch.cat([second_3, second_5], dim=1)))
        return self.project_out(torch.cat([first, second], dim=1))

    def forward_fast(self, x: Tensor) -> Tensor:
        """Same output from the same parameters, without the 2-inputs-per-group convs and the concatenations
        (:mod:`rainmer.archs.modules.msfn`)."""
        return msfn_fast(self, x)


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
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

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
