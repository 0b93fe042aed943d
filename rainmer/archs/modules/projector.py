"""Feature projectors of the representation encoder: conv3x3 + LeakyReLU + an SE residual block."""
from torch import Tensor, nn


class SqueezeExcitation(nn.Module):
    """GAP -> conv1x1 (C -> C/r) -> ReLU -> conv1x1 (C/r -> C) -> sigmoid, used to scale the input."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.expand = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        squeezed = x.mean(dim=(2, 3), keepdim=True)
        return x * self.expand(self.reduce(squeezed).relu()).sigmoid()


class SEResidualBlock(nn.Module):
    """``LReLU(SE(conv(LReLU(SE(conv(x))))) + x)`` with LeakyReLU slope 0.1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.se1 = SqueezeExcitation(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.se2 = SqueezeExcitation(channels)
        self.relu = nn.LeakyReLU(0.1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.se1(self.conv1(x)))
        return self.relu(self.se2(self.conv2(out)) + x)


class Projector(nn.Module):
    """conv3x3 (dim -> base_dim, bias) -> LeakyReLU(0.1) -> SE residual block."""

    def __init__(self, dim: int, base_dim: int) -> None:
        super().__init__()
        self.embed = nn.Conv2d(dim, base_dim, 3, padding=1)
        self.relu = nn.LeakyReLU(0.1)
        self.residual = SEResidualBlock(base_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(self.relu(self.embed(x)))
