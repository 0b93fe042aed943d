"""Top-k sparse channel attention (TKSA) of DRSformer, with a fast one-matmul evaluation.

For every sparse rate r, each row of the channel-attention matrix A keeps its top ``int(C * r)`` entries,
is soft-maxed, multiplied with v and weighted by a learnable scalar; the outputs are summed.

* ``independent`` masks (DRSformer, the paper): every rate selects its top-k from A.
* ``chained`` masks (the public Rainmer code): every rate selects its top-k from the previous rate's
  soft-maxed matrix, so later rates pick from probabilities: all the previous rate's kept entries and some of its
  exact zeros. Which zeros is a matter of tie order.

**Ties.** Among equal scores the lower column index is kept first (:func:`topk_mask`), on every device and in both
evaluations. That is the rule of CUDA's ``torch.topk`` (it gathers the boundary value's entries in index order),
where the public checkpoints were trained. CPU ``torch.topk`` partitions rows with ``nth_element``, whose choice
among equal entries depends on the values of all the others, so rounding differences elsewhere in a row changed
which zeros the chained mode picked (docs/architecture.md). With the index rule the chained selection no longer
depends on rounding: the plain and the fast evaluation keep the same entries.

Both rate sums are linear in v, so ``sum_r w_r softmax_r(A) @ v == (sum_r w_r softmax_r(A)) @ v``: the fast
variant builds that one C x C matrix (:func:`sparse_attention_mix`) and folds it into ``project_out``, one 1x1 conv
of v per image instead of one matmul per rate and the projection.
"""
from collections.abc import Sequence
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from rainmer.archs.modules.depthwise import depthwise_module
from rainmer.archs.modules.fastpath import fast_variant
from rainmer.archs.modules.ops import as_matrices, conv1x1, conv1x1_per_image, is_channels_last

DEFAULT_SPARSE_RATES = ('1/2', '2/3', '3/4', '4/5')


def parse_rate(rate: str | float | Fraction) -> Fraction:
    """Exact rate: '2/3' (the yml form), 2/3 (a float, snapped to the nearest small fraction) or a Fraction."""
    if isinstance(rate, str):
        return Fraction(rate.strip())
    return Fraction(rate).limit_denominator(1000)


def topk_counts(channels: int, rates: Sequence[str | float | Fraction]) -> list[int]:
    """Entries kept per row for every rate: ``floor(channels * rate)``, at least 1 (0 would give NaN rows)."""
    return [max(1, int(channels * parse_rate(rate))) for rate in rates]


def topk_order(scores: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Values and column indices of the top ``count`` entries of each row, largest first; equal scores in
    ascending column order (a stable sort: CUDA ``torch.topk``'s tie rule, on every device)."""
    values, index = scores.sort(dim=-1, descending=True, stable=True)
    return values[..., :count], index[..., :count]


def topk_mask(scores: Tensor, count: int) -> Tensor:
    """Boolean mask of the entries :func:`topk_order` keeps."""
    index = topk_order(scores, count)[1]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, index, True)


def _keep_topk(scores: Tensor, count: int) -> Tensor:
    """``scores`` with everything but the top ``count`` entries of each row set to -inf."""
    return scores.masked_fill(~topk_mask(scores, count), float('-inf'))


def sparse_attention_plain(attn: Tensor, v: Tensor, counts: Sequence[int], weights: Tensor,
                           chained: bool = False) -> Tensor:
    """Reference-equivalent evaluation: one masked softmax and one matmul with v per rate."""
    out = None
    scores = attn
    for count, weight in zip(counts, weights.unbind(0)):
        probs = _keep_topk(scores, count).softmax(dim=-1)
        term = (probs @ v) * weight
        out = term if out is None else out + term
        if chained:
            scores = probs
    return out


def sparse_attention_matrix(attn: Tensor, counts: Sequence[int], weights: Tensor) -> Tensor:
    """``sum_r w_r softmax(topk_r(A))`` for independent masks, from one top-k sort of A.

    With A's row sorted (descending) as s and e = exp(s - s_0), rate r's softmax is e_p / Z_r at rank
    p < k_r, where Z_r is the cumulative sum of e up to k_r. The weighted sum over rates is therefore
    e_p * g_p with g_p = sum_{r: p < k_r} w_r / Z_r, scattered back to the original columns.
    """
    k_max = max(counts)
    values, index = topk_order(attn, k_max)
    exp_values = torch.exp(values - values[..., :1].detach())
    partition = exp_values.cumsum(dim=-1)[..., [count - 1 for count in counts]]  # [..., R]
    ranks = torch.arange(k_max, device=attn.device)
    within = (ranks.unsqueeze(0) < torch.tensor(counts, device=attn.device).unsqueeze(1)).to(attn.dtype)  # [R, k]
    coefficients = (weights.to(attn.dtype) / partition) @ within  # [..., k_max]
    return torch.zeros_like(attn).scatter(-1, index, exp_values * coefficients)


def sparse_attention_matrix_chained(attn: Tensor, counts: Sequence[int], weights: Tensor) -> Tensor:
    """``sum_r w_r P_r`` with the public Rainmer code's chained masks (P_r selected from P_{r-1})."""
    mix = None
    scores = attn
    for count, weight in zip(counts, weights.unbind(0)):
        scores = _keep_topk(scores, count).softmax(dim=-1)
        mix = scores * weight if mix is None else mix + scores * weight
    return mix


def sparse_attention_mix(attn: Tensor, counts: Sequence[int], weights: Tensor, chained: bool = False) -> Tensor:
    """``sum_r w_r softmax_r(A)``: the one matrix that replaces the per-rate matmuls with v."""
    if chained:
        return sparse_attention_matrix_chained(attn, counts, weights)
    return sparse_attention_matrix(attn, counts, weights)


def sparse_attention_fast(attn: Tensor, v: Tensor, counts: Sequence[int], weights: Tensor,
                          chained: bool = False) -> Tensor:
    """Same result as :func:`sparse_attention_plain` with a single matmul with v."""
    return sparse_attention_mix(attn, counts, weights, chained) @ v


def _pixel_norms(x: Tensor, dim: int) -> Tensor:
    """L2 norms of x along its pixel dimension. Without autograd as ``sqrt(sum of squares)``: 3.6x faster than
    ``linalg.vector_norm`` across the pixels of a channels_last slice; under autograd ``linalg.vector_norm``,
    whose backward keeps the training step's peak memory 130 MiB lower."""
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.linalg.vector_norm(x, dim=dim)
    return x.square().sum(dim).sqrt()


class _GramOfColumns(torch.autograd.Function):
    """``q^T k`` for q, k [B, HW, C]; the gradients are [B, HW, C] contiguous (autograd's bmm would return the
    transposes of [B, C, HW] matrices, which are NCHW tensors where the network runs channels_last)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(q, k)
        return torch.bmm(q.transpose(1, 2), k)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:  # noqa: ANN001
        q, k = ctx.saved_tensors
        grad_q = torch.bmm(k, grad.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_k = torch.bmm(q, grad) if ctx.needs_input_grad[1] else None
        return grad_q, grad_k


class TopKSparseAttention(nn.Module):
    """TKSA: qkv 1x1 + depthwise 3x3, per-head channel attention with top-k masks, 1x1 projection.

    Args:
        dim: Channels. num_heads: Attention heads. bias: Bias of the convolutions.
        sparse_rates: Fractions of entries kept per row, one output branch each.
        scalar_rate_weights: Store the branch weights as ``attn1..attnN`` (DRSformer's keys) instead of the
            vector ``attns`` (Rainmer's keys).
        chained_topk: Reproduce the public Rainmer code (each rate selects from the previous probabilities).
    """

    def __init__(self, dim: int, num_heads: int, bias: bool, sparse_rates: Sequence = DEFAULT_SPARSE_RATES,
                 scalar_rate_weights: bool = False, chained_topk: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.chained_topk = chained_topk
        self.counts = topk_counts(dim // num_heads, sparse_rates)
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.scalar_rate_weights = scalar_rate_weights
        if scalar_rate_weights:
            for index in range(len(self.counts)):
                setattr(self, f'attn{index + 1}', nn.Parameter(torch.tensor([0.2])))
        else:
            self.attns = nn.Parameter(torch.full((len(self.counts),), 0.2))

    def rate_weights(self) -> Tensor:
        """The learnable weight of every rate as one vector."""
        if self.scalar_rate_weights:
            return torch.cat([getattr(self, f'attn{index + 1}') for index in range(len(self.counts))])
        return self.attns

    def attention_scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Temperature-scaled channel attention A [B, heads, C, C] and the values v [B, heads, C, HW]."""
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q = F.normalize(q.reshape(b, self.num_heads, c // self.num_heads, h * w), dim=-1)
        k = F.normalize(k.reshape(b, self.num_heads, c // self.num_heads, h * w), dim=-1)
        v = v.reshape(b, self.num_heads, c // self.num_heads, h * w)
        return (q @ k.transpose(-2, -1)) * self.temperature, v

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        attn, v = self.attention_scores(x)
        out = sparse_attention_plain(attn, v, self.counts, self.rate_weights(), chained=self.chained_topk)
        return self.project_out(out.reshape(b, c, h, w))


@fast_variant(TopKSparseAttention)
class FastTopKSparseAttention(TopKSparseAttention):
    """:class:`TopKSparseAttention` in fewer passes over the pixels and on either memory layout (same parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        """Same output as the plain forward:

        * q and k are not normalised: A = (q k^T) / (|q| |k|^T), from their Gram matrix and norms. A rounds
          differently from the plain path; only where two distinct scores of a row are within rounding of each other
          at a top-k boundary can the two keep different entries (exact ties follow :func:`topk_mask` in both);
        * the rates' matrices are summed into one M per head (:func:`sparse_attention_mix`), and M is folded
          into ``project_out``: the output is one 1x1 conv of v with ``W_out @ blockdiag(M)`` per image.
        """
        b, c, h, w = x.shape
        qkv = depthwise_module(self.qkv_dwconv, conv1x1(x, self.qkv.weight, self.qkv.bias))
        q, k, v = qkv.split(c, dim=1)  # backward: one concatenation, not three zero-filled slice gradients
        attn = self._scores_from_gram(q, k)
        mix = sparse_attention_mix(attn, self.counts, self.rate_weights(), self.chained_topk)
        heads, d = self.num_heads, c // self.num_heads
        out_weight = self.project_out.weight.view(c, heads, d).transpose(0, 1)  # [heads, C_out, d]
        combined = (out_weight @ mix).transpose(1, 2).reshape(b, c, c)  # [B, C_out, C_in]
        out = conv1x1_per_image(v, combined)
        bias = self.project_out.bias
        return out if bias is None else out + bias[:, None, None]

    def _scores_from_gram(self, q: Tensor, k: Tensor) -> Tensor:
        """A [B, heads, C, C] from the Gram matrix of q and k and their norms (no normalised copies)."""
        b, c = q.shape[:2]
        heads, d = self.num_heads, c // self.num_heads
        # [B, HW, C] for channels_last, else [B, C, HW]: views whose gradients come back in the input's layout
        pixels_first = is_channels_last(q)
        q, k = as_matrices(q), as_matrices(k)
        pixel_dim = 1 if pixels_first else 2
        eps = 1e-12  # F.normalize's
        norm_q = _pixel_norms(q, pixel_dim).clamp_min(eps).view(b, heads, d, 1)
        norm_k = _pixel_norms(k, pixel_dim).clamp_min(eps).view(b, heads, 1, d)
        gram = _GramOfColumns.apply(q, k) if pixels_first else torch.bmm(q, k.transpose(1, 2))
        gram = gram.view(b, heads, d, heads, d).diagonal(dim1=1, dim2=3)
        return (gram.permute(0, 3, 1, 2) / (norm_q * norm_k) * self.temperature).contiguous()
