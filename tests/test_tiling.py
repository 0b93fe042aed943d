"""Tiled inference: equal to whole-image inference for networks with a bounded receptive field, blending weights
that sum to 1 everywhere, and RainmerModel's ``val.tile`` route."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import pytest
import torch
from torch import nn

from rainmer.archs.rainmer_arch import Rainmer
from rainmer.models.tiling import tile_starts, tiled_forward


def _local_net() -> nn.Module:
    """Three 3x3 convs: each output pixel sees 3 pixels around it (less than the default margin of 16 // 4)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 3, 3, padding=1)).eval()


@pytest.mark.parametrize('size', [(50, 70), (64, 33), (20, 20)])
def test_tiled_equals_whole_image_for_a_local_network(size):
    net = _local_net()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(tiled_forward(net, x, tile=24, overlap=16), net(x), atol=1e-6, rtol=1e-5)


def test_blending_weights_sum_to_one():
    x = torch.rand(1, 3, 61, 47)
    torch.testing.assert_close(tiled_forward(lambda t: t, x, tile=20, overlap=8, margin=3), x)


def test_tiles_cover_with_the_requested_overlap():
    starts = tile_starts(100, 32, 8)
    assert starts[0] == 0 and starts[-1] == 100 - 32
    assert all(b - a <= 32 - 8 for a, b in zip(starts, starts[1:]))
    with pytest.raises(ValueError):
        tiled_forward(lambda t: t, torch.rand(1, 1, 40, 40), tile=16, overlap=8, margin=4)


def test_rainmer_tiles_stay_close_to_the_whole_image():
    """Rainmer's channel attention is global, so tiles differ slightly from the whole image; the prompt image is the
    whole image for every tile (as RainmerModel does)."""
    torch.manual_seed(0)
    net = Rainmer(dim=8, base_dim=16, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1], prompt_size=16).eval()
    x = torch.rand(1, 3, 48, 40)
    prompt_image = net.resize_query(x)
    with torch.no_grad():
        whole = net(x)
        tiled = tiled_forward(lambda t: net(t, lq_resize=prompt_image), x, tile=32, overlap=16)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().mean() < 0.01  # measured: mean 0.002, max 0.009 on random weights
