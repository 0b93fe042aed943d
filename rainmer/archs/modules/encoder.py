"""Representation encoder of Rainmer: shallow conv + MoEs + the chromatic and degradation/detail projectors."""
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rainmer.archs.modules.fastpath import fast_variant
from rainmer.archs.modules.moe import MixtureOfExperts
from rainmer.archs.modules.projector import Projector

VIEWS = ('chromatic', 'degradation', 'detail')
PROMPT_VIEWS = ('chromatic', 'degradation')
# which projector serves each view; the detail view pools the degradation projector's map spatially
VIEW_PROJECTOR = {'chromatic': 'chromatic', 'degradation': 'degradation', 'detail': 'degradation'}
DETAIL_POOL = 8


def pool_view(projected: Tensor, view: str) -> Tensor:
    """A view's representation from its projector map: GAP ([B, D, 1, 1]) or 8x8 average pool (detail)."""
    if view == 'detail':
        return F.avg_pool2d(projected, DETAIL_POOL, stride=DETAIL_POOL)
    return projected.mean(dim=(2, 3), keepdim=True)


class RepresentationEncoder(nn.Module):
    """Query (or momentum key) encoder.

    ``features`` (shallow conv + MoEs) is also the backbone's location feature; the projectors turn it into
    the per-view representations.

    Args:
        inp_channels: Image channels. dim: MoE width. base_dim: Representation width.
        projectors: Which projectors to build, among 'chromatic' and 'degradation'.
    """

    def __init__(self, inp_channels: int, dim: int, base_dim: int,
                 projectors: Iterable[str] = PROMPT_VIEWS) -> None:
        super().__init__()
        projectors = set(projectors)
        self.shallow_conv = nn.Conv2d(inp_channels, dim, 3, padding=1)
        self.moes = MixtureOfExperts(dim)
        self.chromatic_projector = Projector(dim, base_dim) if 'chromatic' in projectors else None
        self.degradation_projector = Projector(dim, base_dim) if 'degradation' in projectors else None

    def features(self, x: Tensor) -> Tensor:
        """Shallow conv + MoEs: [B, dim, H, W]."""
        return self.moes(self.shallow_conv(x))

    def projector(self, view: str) -> Projector:
        module = getattr(self, f'{VIEW_PROJECTOR[view]}_projector')
        if module is None:
            raise ValueError(f'This encoder has no projector for the {view!r} view.')
        return module

    def project(self, feat: Tensor, view: str) -> Tensor:
        """One view's pooled (unnormalised) representation of ``features`` output."""
        return pool_view(self.projector(view)(feat), view)

    def represent(self, feat: Tensor, views: Sequence[str]) -> dict[str, Tensor]:
        """Pooled representations of several views, running each projector once."""
        maps: dict[str, Tensor] = {}
        out = {}
        for view in views:
            name = VIEW_PROJECTOR[view]
            if name not in maps:
                maps[name] = self.projector(view)(feat)
            out[view] = pool_view(maps[name], view)
        return out


@fast_variant(RepresentationEncoder)
class ChannelsLastEncoder(RepresentationEncoder):
    """:class:`RepresentationEncoder` on a channels_last copy of its input (see ``ChannelsLastPatchEmbed``)."""

    def features(self, x: Tensor) -> Tensor:
        return self.moes(self.shallow_conv(x.contiguous(memory_format=torch.channels_last)))
