"""DRSformer's mixed-scale feed-forward network (MSFN): the plain module and its fast variant.

:class:`MSFN` is the public computation. :class:`FastMSFN` (:mod:`rainmer.archs.fast`) gives the same output from
the same parameters:

The public MSFN computes ``x = project_in(x)``, ``a3 = ReLU(dw3(x))``, ``a5 = ReLU(dw5(x))``. Its second stage
concatenates the first halves of a3 and a5 (and the second halves) and applies convs with two input channels per
group (``dwconv3x3_1``, ``dwconv5x5_1``). PyTorch runs those slowly, and the concatenations copy every pixel.

Here every half is its own tensor (``project_in`` as two 1x1 convs), and the second stage is depthwise: each
channel of a3 and a5 feeds exactly one group, so ``dwconv3x3_1`` becomes a depthwise 3x3 conv on a3's first half
and one on a5's first half (``dwconv5x5_1`` likewise on the second halves), and each group's output is the sum of
two channels of those results. The output channels of ``project_in``, ``dw3`` and ``dw5`` are permuted (per half:
even channels, then odd ones), so the two channels of every group sit at the same offset of two contiguous
blocks. The group sums are additions of blocks, in group order for ``project_out``. Without autograd the ReLUs are
fused into the convolutions and the additions (oneDNN's ReLU post-op, ``_add_relu``).

Without autograd every half is zero-padded to a multiple of :data:`CHANNEL_ALIGNMENT` channels (zero weights and
biases, so the extra channels stay zero and are never summed): the paper's widths are odd (127, 255, 1021), and
oneDNN's depthwise convs on 255 channels take 1.4-1.7x as long as on 256. Under autograd the unused padding block
would get a zero gradient in NCHW layout, turning the block gradients NCHW, so training runs unpadded.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rainmer.archs.modules.depthwise import depthwise_conv2d
from rainmer.archs.modules.fastpath import fast_variant
from rainmer.archs.modules.ops import conv1x1, conv_relu, fusable, memory_format_of

CHANNEL_ALIGNMENT = 16  # one AVX-512 vector of fp32


class MSFN(nn.Module):
    """Parallel dw3x3 / dw5x5 paths on ``project_in(x)`` that exchange halves (keys of the public ``FeedForward``)."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv3x3 = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.dwconv5x5 = nn.Conv2d(hidden * 2, hidden * 2, 5, padding=2, groups=hidden * 2, bias=bias)
        self.dwconv3x3_1 = nn.Conv2d(hidden * 2, hidden, 3, padding=1, groups=hidden, bias=bias)
        self.dwconv5x5_1 = nn.Conv2d(hidden * 2, hidden, 5, padding=2, groups=hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden * 2, dim, kernel_size=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.project_in(x)
        first_3, second_3 = F.relu(self.dwconv3x3(x)).chunk(2, dim=1)
        first_5, second_5 = F.relu(self.dwconv5x5(x)).chunk(2, dim=1)
        first = F.relu(self.dwconv3x3_1(torch.cat([first_3, first_5], dim=1)))
        second = F.relu(self.dwconv5x5_1(torch.cat([second_3, second_5], dim=1)))
        return self.project_out(torch.cat([first, second], dim=1))


@fast_variant(MSFN)
class FastMSFN(MSFN):
    """:class:`MSFN` through the evaluation in the module docs (same parameters, same output)."""

    def forward(self, x: Tensor) -> Tensor:
        return msfn_fast(self, x)


def pair_order(hidden: int, device: torch.device) -> Tensor:
    """Permutation of one half's ``hidden`` channels: the even channels, then the odd ones."""
    half = torch.arange(hidden, device=device)
    return torch.cat([half[0::2], half[1::2]])


def _take(tensor: Tensor | None, index: Tensor) -> Tensor | None:
    """Rows ``index`` of ``tensor`` (``index_select``: 2.5-3.5x faster than advanced indexing on weights)."""
    return None if tensor is None else tensor.index_select(0, index)


def _pad_rows(weight: Tensor | None, pad: int) -> Tensor | None:
    """``weight`` with ``pad`` zero rows appended along dim 0 (channels that stay zero)."""
    if weight is None or pad == 0:
        return weight
    return torch.cat([weight, weight.new_zeros(pad, *weight.shape[1:])])


def _branch_weights(conv: nn.Conv2d, order: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """A second-stage conv as depthwise weights and biases for its a3 half and its a5 half (both permuted).

    Concatenation channel i (a3's half, then a5's) is weighted by ``conv.weight[i // 2, i % 2]``. The group
    bias goes to one of its group's two channels (see :func:`_group_sums`), zero to the other.
    """
    hidden = conv.out_channels
    per_channel = conv.weight.reshape(2 * hidden, 1, *conv.kernel_size)
    kernel_a3, kernel_a5 = _take(per_channel, order), _take(per_channel, order + hidden)
    if conv.bias is None:
        return kernel_a3, kernel_a5, None, None
    evens, odds = (hidden + 1) // 2, hidden // 2
    bias = conv.bias
    bias_a3 = torch.cat([bias[:evens], bias.new_zeros(odds)])
    if hidden % 2:
        bias_a5 = torch.cat([bias.new_zeros(evens), bias[odds + 1:]])
    else:
        bias_a5 = torch.cat([bias[odds:], bias.new_zeros(odds)])
    return kernel_a3, kernel_a5, bias_a3, bias_a5


def _group_sums(d3: Tensor, d5: Tensor, hidden: int) -> list[tuple[Tensor, Tensor]]:
    """The (a, b) channel blocks of one branch whose sums a + b are its groups, in group order (channels after the
    first ``hidden``, the alignment padding, are left out).

    The blocks come from one ``split`` of d3 and one of d5, whose backward is one concatenation (slicing would
    zero-fill a full-size gradient per slice).
    """
    evens, odds = (hidden + 1) // 2, hidden // 2
    pad = [d3.shape[1] - hidden] if d3.shape[1] > hidden else []
    if hidden % 2 == 0:  # a3's pairs (2k, 2k+1), then a5's pairs (2k, 2k+1)
        return [tuple(d3.split([evens, odds, *pad], dim=1)[:2]), tuple(d5.split([evens, odds, *pad], dim=1)[:2])]
    # a3's pairs (2k, 2k+1); a3's last channel with a5's first; a5's pairs (2k+1, 2k+2)
    even3, last3, odd3 = d3.split([odds, 1, odds, *pad], dim=1)[:3]
    first5, even5, odd5 = d5.split([1, odds, odds, *pad], dim=1)[:3]
    return [(even3, odd3), (last3, first5), (odd5, even5)]


def _depthwise(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return depthwise_conv2d(x, weight, bias, padding=weight.shape[-1] // 2)


def msfn_fast(ffn: MSFN, x: Tensor) -> Tensor:
    """``ffn(x)`` of an MSFN through the evaluation in the module docs (same parameters, same output)."""
    hidden = ffn.dwconv3x3_1.out_channels
    pad = -hidden % CHANNEL_ALIGNMENT if fusable(x, *ffn.parameters()) else 0
    order = pair_order(hidden, x.device)
    pairs = []
    for half, conv in enumerate((ffn.dwconv3x3_1, ffn.dwconv5x5_1)):
        index = order + half * hidden
        in_weight, in_bias, w3, b3, w5, b5 = (
            _pad_rows(_take(tensor, index), pad) for tensor in (
                ffn.project_in.weight, ffn.project_in.bias, ffn.dwconv3x3.weight, ffn.dwconv3x3.bias,
                ffn.dwconv5x5.weight, ffn.dwconv5x5.bias))
        x_half = conv1x1(x, in_weight, in_bias)
        groups = x_half.shape[1]
        a3 = conv_relu(x_half, w3, b3, groups)
        a5 = conv_relu(x_half, w5, b5, groups)
        del x_half
        kernel_a3, kernel_a5, bias_a3, bias_a5 = (_pad_rows(tensor, pad) for tensor in _branch_weights(conv, order))
        pairs += _group_sums(_depthwise(a3, kernel_a3, bias_a3), _depthwise(a5, kernel_a5, bias_a5), hidden)
        del a3, a5
    blocks = [block for pair in pairs for block in pair]
    if fusable(*blocks):  # add + ReLU written straight into the project_out input
        layout = memory_format_of(x)
        first = blocks[0]
        joined = torch.empty(first.shape[0], 2 * hidden, *first.shape[2:], dtype=first.dtype, device=first.device,
                             memory_format=layout)
        start = 0
        for a, b in pairs:
            torch.ops.aten._add_relu(a, b, out=joined[:, start:start + a.shape[1]])
            start += a.shape[1]
    else:
        joined = F.relu(torch.cat([a + b for a, b in pairs], dim=1), inplace=True)
    del pairs, blocks
    return conv1x1(joined, ffn.project_out.weight, ffn.project_out.bias)
