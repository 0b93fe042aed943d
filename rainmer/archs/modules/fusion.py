"""Local knowledge fusion of the encoder's location feature with the backbone's shallow feature."""
import torch
from torch import Tensor, nn


class LocalKnowledgeFusion(nn.Module):
    """``a + b`` with ``a = sigmoid(loc * chan) * location`` and ``b = sigmoid(g * location) * chan``.

    ``loc = mean_c(conv3x3 -> LReLU(0.1) -> conv3x3 (location))`` is a one-channel spatial map and
    ``g = conv1x1 -> LReLU(0.1) -> conv1x1 (GAP(chan))`` a channel vector.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.location_map = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(dim, dim, 3, padding=1))
        self.channel_map = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.LeakyReLU(0.1), nn.Conv2d(dim, dim, 1))

    def forward(self, location: Tensor, channel: Tensor) -> Tensor:
        loc = self.location_map(location).mean(dim=1, keepdim=True)
        location_enhanced = torch.sigmoid(loc * channel) * location
        gate = self.channel_map(channel.mean(dim=(2, 3), keepdim=True))
        channel_enhanced = torch.sigmoid(gate * location) * channel
        return location_enhanced + channel_enhanced
