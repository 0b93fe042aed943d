"""DRSformer (CVPR 2023) with the public constructor arguments and state-dict keys."""
from collections.abc import Sequence

from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor

from rainmer.archs.fast import set_fast
from rainmer.archs.modules.backbone import SparseTransformerBackbone, pad_to_multiple
from rainmer.archs.modules.tksa import DEFAULT_SPARSE_RATES


@ARCH_REGISTRY.register()
class DRSformer(SparseTransformerBackbone):
    """DRSformer: sparse-transformer U-Net with top-k sparse attention, MSFN and MEFC blocks.

    Keys and defaults are the public ``DRSformer_arch.py``'s (33,655,424 parameters), so its released
    checkpoints load with ``strict_load_g: true`` and its ``network_g`` blocks work unchanged.
    ``forward`` pads any H x W to a multiple of 8 (reflect) and crops back.

    Args:
        inp_channels, out_channels, dim, num_blocks, heads, ffn_expansion_factor, bias, LayerNorm_type:
            as the public code.
        sparse_rates: Top-k rates of TKSA (stored as ``attn1..attnN``).
        mefc: False drops the two MEFC blocks (the public variant for Rain200L and SPA-Data).
        fast: ``auto`` | True | False: the fast evaluation of the same parameters (:mod:`rainmer.archs.fast`).
    """

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = (4, 6, 6, 8), heads: Sequence[int] = (1, 2, 4, 8),
                 ffn_expansion_factor: float = 2.66, bias: bool = False,
                 LayerNorm_type: str = 'WithBias',  # noqa: N803 (public option name)
                 sparse_rates: Sequence = DEFAULT_SPARSE_RATES, mefc: bool = True, fast: bool | str = 'auto') -> None:
        attention = dict(sparse_rates=tuple(sparse_rates), scalar_rate_weights=True, chained_topk=False)
        super().__init__(inp_channels, out_channels, dim, num_blocks, heads, ffn_expansion_factor, bias,
                         LayerNorm_type, attention, mefc=mefc)
        set_fast(self, fast)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        return self.restore(pad_to_multiple(x))[..., :h, :w]
