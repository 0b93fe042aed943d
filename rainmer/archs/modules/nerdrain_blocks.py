"""NeRD-Rain's building blocks: Restormer-style transformer blocks, the bidirectional fusion of two latents and
the implicit neural representation (INR) decoder. Attribute names follow the public code so its keys load."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rainmer.archs.modules.transformer import LayerNorm

POSITIONAL_FREQUENCIES = 4  # sin/cos of 2^0..2^3 * pi per coordinate
INR_HIDDEN = (256, 256, 256)


def depthwise_conv(channels: int, bias: bool) -> nn.Conv2d:
    """3x3 depthwise convolution (Restormer holds it directly)."""
    return nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=bias)


class DepthwiseConv(nn.Module):
    """3x3 depthwise convolution held under ``main.0`` (the public NeRD-Rain code wraps it in a conv block)."""

    def __init__(self, channels: int, bias: bool) -> None:
        super().__init__()
        self.main = nn.Sequential(depthwise_conv(channels, bias))

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


class GatedFeedForward(nn.Module):
    """conv1x1 to 2h -> dw3x3 -> GELU(first half) * second half -> conv1x1 back (h = int(dim * expansion)).

    ``depthwise`` builds the dw3x3 (a subclass changes only where its weights are held)."""

    depthwise = DepthwiseConv

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = self.depthwise(hidden * 2, bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class ChannelAttention(nn.Module):
    """Multi-head attention across channels: q, k L2-normalised over pixels, scaled by a learnable temperature
    (Restormer's MDTA; ``depthwise`` as in :class:`GatedFeedForward`)."""

    depthwise = DepthwiseConv

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = self.depthwise(dim * 3, bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w)
                   for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attention = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attention @ v).reshape(b, c, h, w))


class NeRDTransformerBlock(nn.Module):
    """``x + Attention(LN(x))`` then ``x + GatedFFN(LN(x))`` (keys ``norm1, attn, norm2, ffn``)."""

    attention = ChannelAttention
    feed_forward = GatedFeedForward

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 LayerNorm_type: str) -> None:  # noqa: N803 (public option name)
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = self.attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = self.feed_forward(dim, ffn_expansion_factor, bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def transformer_stage(depth: int, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                      layer_norm_type: str, block: type[nn.Module] = NeRDTransformerBlock) -> nn.Sequential:
    """``depth`` transformer blocks in a row (keys ``<stage>.<i>.*``)."""
    return nn.Sequential(*[block(dim, num_heads, ffn_expansion_factor, bias, layer_norm_type) for _ in range(depth)])


class BidirectionalFusion(nn.Module):
    """Fuses the latents of two passes: a shared sigmoid gate from ``conv(x) * conv(y)`` re-weights both inputs,
    then per-input pixel-wise mixing weights (2 maps from ``[input, gated input]``); the two results are summed."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.query_conv = nn.Conv2d(in_dim, in_dim, 3, padding=1, bias=True)
        self.key_conv = nn.Conv2d(in_dim, in_dim, 3, padding=1, bias=True)
        self.gamma1 = nn.Conv2d(in_dim * 2, 2, 3, padding=1, bias=True)
        self.gamma2 = nn.Conv2d(in_dim * 2, 2, 3, padding=1, bias=True)

    @staticmethod
    def _mix(mixer: nn.Conv2d, plain: Tensor, gated: Tensor) -> Tensor:
        weights = mixer(torch.cat([plain, gated], dim=1))
        return plain * weights[:, 0:1] + gated * weights[:, 1:2]

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        gate = torch.sigmoid(self.query_conv(x) * self.key_conv(y))
        return self._mix(self.gamma1, x, x * gate) + self._mix(self.gamma2, y, y * gate)


class MLP(nn.Module):
    """Linear layers with ReLU between them (``layers.0, 2, 4, ...``), applied to the last dimension."""

    def __init__(self, in_dim: int, out_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ImplicitDecoder(nn.Module):
    """The INR: an MLP maps, for each pixel, its 3x3 feature neighbourhood, the query's coordinate relative to the
    feature pixel (with Fourier features) and the query cell size (in feature pixels) to an RGB residual.

    NeRD-Rain queries the representation on its own pixel grid, so every query sits on a feature pixel's centre:
    the relative coordinate and its Fourier features are zero and the relative cell is one pixel (2/h in [-1, 1]
    units times h). The public code evaluates the MLP four times (LIIF's local ensemble) on these identical inputs
    and averages with equal weights; one evaluation gives the same output (up to float rounding).
    """

    def __init__(self, dim: int, out_channels: int = 3) -> None:
        super().__init__()
        self.code_dim = 2 + 2 * 2 * POSITIONAL_FREQUENCIES  # relative coordinate + its sin/cos features
        self.imnet = MLP(dim * 9 + self.code_dim + 2, out_channels, INR_HIDDEN)

    def forward(self, feature: Tensor) -> Tensor:
        b, c, h, w = feature.shape
        neighbourhood = F.unfold(feature, 3, padding=1).transpose(1, 2)  # [B, HW, 9C], channel-major like the code
        relative_code = feature.new_zeros(b, h * w, self.code_dim)
        cell = torch.tensor([2 / h, 2 / w], dtype=torch.float32, device=feature.device)
        relative_cell = (cell * torch.tensor([h, w], dtype=torch.float32, device=feature.device)).to(feature.dtype)
        relative_cell = relative_cell.expand(b, h * w, 2)
        rgb = self.imnet(torch.cat([neighbourhood, relative_code, relative_cell], dim=-1))
        return rgb.transpose(1, 2).reshape(b, -1, h, w)
