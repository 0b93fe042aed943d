"""DRSformer's transformer pieces: channel LayerNorm, MSFN, the sparse transformer block, resampling."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
        """Same output, faster on CPU: the 2-inputs-per-group convs (``dwconv*_1``) run as depthwise convs whose
        even and odd input channels are summed (:func:`pair_sum_conv`); ``project_in`` and the first depthwise
        convs get their channels permuted (weights only) so that those even/odd inputs are contiguous slices."""
        hidden = self.dwconv3x3_1.out_channels
        order = _pair_order(hidden, x.device)
        x = F.conv2d(x, self.project_in.weight[order], _take(self.project_in.bias, order))
        a3 = F.conv2d(x, self.dwconv3x3.weight[order], _take(self.dwconv3x3.bias, order), padding=1,
                      groups=2 * hidden)
        a5 = F.conv2d(x, self.dwconv5x5.weight[order], _take(self.dwconv5x5.bias, order), padding=2,
                      groups=2 * hidden)
        del x
        inputs = []
        for half in (0, 1):
            blocks3, blocks5 = _pair_blocks(a3, hidden, half), _pair_blocks(a5, hidden, half)
            if hidden % 2:  # a5's channels sit at odd offsets in the concatenation: parities swap
                blocks5 = blocks5[::-1]
            # ReLU commutes with the concatenation: one in-place pass over the copy instead of two over a3, a5
            inputs.append(F.relu(torch.cat([blocks3[0], blocks5[0], blocks3[1], blocks5[1]], dim=1), inplace=True))
        del a3, a5, blocks3, blocks5  # free the first stage before the second (peak memory)
        first = pair_sum_conv(inputs.pop(0), self.dwconv3x3_1)
        second = pair_sum_conv(inputs.pop(0), self.dwconv5x5_1)
        return self.project_out(F.relu(torch.cat([first, second], dim=1), inplace=True))


def _take(bias: Tensor | None, order: Tensor) -> Tensor | None:
    return None if bias is None else bias[order]


def _pair_order(hidden: int, device: torch.device) -> Tensor:
    """Hidden-channel permutation: per half (first, second), the even channels of the half, then the odd ones."""
    half = torch.arange(hidden, device=device)
    one = torch.cat([half[0::2], half[1::2]])
    return torch.cat([one, one + hidden])


def _pair_blocks(a: Tensor, hidden: int, half: int) -> tuple[Tensor, Tensor]:
    """The (even, odd) channel blocks of ``half`` in a tensor permuted by :func:`_pair_order`."""
    evens = (hidden + 1) // 2
    start = half * hidden
    return a[:, start:start + evens], a[:, start + evens:start + hidden]


def pair_sum_conv(evens_odds: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv`` (2C -> C, groups C, 2 inputs per group) applied to an input given as its even channels then its odd
    channels: one depthwise conv with the same taps, then output c = channel c + channel C + c."""
    channels = conv.out_channels
    weight = conv.weight.transpose(0, 1).reshape(2 * channels, 1, *conv.kernel_size)
    out = F.conv2d(evens_odds, weight, padding=conv.padding, groups=2 * channels)
    out = out[:, :channels] + out[:, channels:]
    return out if conv.bias is None else out + conv.bias[:, None, None]


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
