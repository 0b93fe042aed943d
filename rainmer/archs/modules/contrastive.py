"""Contrastive logits of the multi-view representations (MoCo-style, cosine similarity per position)."""
import torch
import torch.nn.functional as F
from torch import Tensor

JOINT_VIEW = 'degradation_detail'  # the logits key of degradation and detail in one softmax


def contrastive_logits(query: Tensor, key: Tensor, negatives: Tensor, temperature: float = 1.0) -> Tensor:
    """``[pos, neg_1..neg_n] / temperature`` with the positive at index 0.

    Representations are L2-normalised over channels at every position and flattened;
    ``pos = <q, k> / (h*w)`` and ``neg_i = <q, n_i> / (h*w)``, i.e. the mean per-position cosine similarity.

    Args:
        query: [B, D, h, w]. key: [B, D, h, w]. negatives: [B, n, D, h, w].

    Returns:
        [B, 1 + n].
    """
    positions = query.shape[-2] * query.shape[-1]
    q = F.normalize(query, dim=1).flatten(1)
    k = F.normalize(key, dim=1).flatten(1)
    n = F.normalize(negatives, dim=2).flatten(2)
    positive = (q * k).sum(dim=-1, keepdim=True)
    negative = torch.einsum('bd,bnd->bn', q, n)
    return torch.cat([positive, negative], dim=1) / (positions * temperature)


def merge_logits(first: Tensor, second: Tensor) -> Tensor:
    """Join two views into one softmax: ``[pos_1 + pos_2, negs_1, negs_2]`` (degradation and detail; see
    docs/method.md#keys-logits-and-the-momentum-encoder)."""
    return torch.cat([first[:, :1] + second[:, :1], first[:, 1:], second[:, 1:]], dim=1)


def degradation_detail_logits(logits: dict[str, Tensor]) -> Tensor | None:
    """The degradation+detail logits of a dict of per-view logits: the joined ones when present (``JOINT_VIEW``),
    else both views merged, else the one view that exists (ablations), else None."""
    if JOINT_VIEW in logits:
        return logits[JOINT_VIEW]
    if 'degradation' in logits and 'detail' in logits:
        return merge_logits(logits['degradation'], logits['detail'])
    return logits.get('degradation', logits.get('detail'))
