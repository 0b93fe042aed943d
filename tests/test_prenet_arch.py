"""PReNet: the public parameter count, keys and checkpoints, stage outputs, and a run through `basicsr train|test`."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import pytest
import torch
from basicsr.archs import build_network
from public_prenet_keys import PUBLIC_PRENET_KEYS, PUBLIC_PRENET_PARAMETERS
from toolbox_fixtures import (
    assert_checkpoint_loads_strictly,
    assert_public_layout,
    random_state,
    shipped_options,
    train_and_test_tiny,
)

from rainmer.archs.prenet_arch import PReNet

TINY = dict(type='PReNet', recurrent_iter=2, channels=8)


def test_parameter_count_and_keys_are_the_public_ones():
    assert_public_layout(PReNet(), PUBLIC_PRENET_PARAMETERS, PUBLIC_PRENET_KEYS)


def test_a_released_checkpoint_loads_strictly_through_basicsr(tmp_path):
    """train_PReNet.py saves the bare ``state_dict()`` (net_latest.pth): ``param_key_g: ~``."""
    state = random_state(PUBLIC_PRENET_KEYS)
    assert_checkpoint_loads_strictly(PReNet(), state, tmp_path / 'net_latest.pth', state)


@pytest.mark.parametrize('size', [(41, 37), (5, 3)])
def test_any_size_and_the_stage_outputs(size):
    torch.manual_seed(0)
    net = build_network(dict(TINY, recurrent_iter=3)).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = net(x)
        image, stages = net(x, return_stages=True)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert len(stages) == 3 and stages[-1] is image and torch.equal(image, out)
    assert all(stage.shape == x.shape for stage in stages)


def test_one_stage_is_the_rainy_image_plus_the_lstm_residual():
    """Stage 1 sees [y, y] and zero LSTM states, so c = i * g and h = o * tanh(c)."""
    torch.manual_seed(0)
    net = PReNet(recurrent_iter=1, channels=8).eval()
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        features = torch.cat((net.conv0(torch.cat((x, x), 1)), torch.zeros(1, 8, 9, 11)), 1)
        cell = net.conv_i(features) * net.conv_g(features)
        h = net.conv_o(features) * torch.tanh(cell)
        for block in net.residual_blocks():
            h = torch.relu(block(h) + h)
        torch.testing.assert_close(net(x), net.conv(h) + x)


def test_trains_and_tests_at_an_odd_size_through_basicsr(tmp_path):
    """The shipped options/prenet_mixed.yml train section (its SSIM objective) on a tiny PReNet, two iterations."""
    shipped = shipped_options('prenet_mixed.yml')
    assert shipped['train']['pixel_opt'] == {'type': 'SSIMLoss', 'loss_weight': 1.0}
    train_and_test_tiny(tmp_path, 'prenet', TINY, train=dict(shipped['train'], accumulate_grad_step=1),
                        model_type=shipped['model_type'])
