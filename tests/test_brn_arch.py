"""BRN: the public parameter count, keys and checkpoints, rain/background stages, and `basicsr train|test`."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import pytest
import torch
from basicsr.archs import build_network
from public_brn_keys import PUBLIC_BRN_KEYS, PUBLIC_BRN_PARAMETERS, RECDERAIN_BRN_PARAMETERS, RECDERAIN_EXTRA_KEYS
from toolbox_fixtures import (
    assert_checkpoint_loads_strictly,
    assert_public_layout,
    random_state,
    shipped_options,
    train_and_test_tiny,
)

from rainmer.archs.brn_arch import BRN

TINY = dict(type='BRN', recurrent_iter=2, channels=8)


def test_parameter_count_and_keys_are_the_public_ones():
    assert_public_layout(BRN(), PUBLIC_BRN_PARAMETERS, PUBLIC_BRN_KEYS)
    assert PUBLIC_BRN_PARAMETERS + sum(torch.Size(s).numel() for _, s in RECDERAIN_EXTRA_KEYS) == \
        RECDERAIN_BRN_PARAMETERS


def test_rainmer_and_recderain_checkpoints_load_strictly_through_basicsr(tmp_path):
    """Rainmer's train_brn.py saves the bare state dict; RecDerain's train.py a DataParallel one (``module.``) that
    also holds the unused ``res_conv4_r`` / ``res_conv5_r`` (dropped on loading). Both: ``param_key_g: ~``."""
    state = random_state(PUBLIC_BRN_KEYS)
    recderain = {f'module.{key}': value for key, value in {**state, **random_state(RECDERAIN_EXTRA_KEYS, 1)}.items()}
    for name, saved in (('rainmer.pth', state), ('net_latest.pth', recderain)):
        assert_checkpoint_loads_strictly(BRN(), saved, tmp_path / name, state)


def test_only_the_unused_rain_blocks_are_forgiven():
    state = BRN(channels=8).state_dict()
    with pytest.raises(RuntimeError, match='res_conv6_r'):
        BRN(channels=8).load_state_dict({**state, 'res_conv6_r.0.bias': torch.zeros(8)})
    with pytest.raises(RuntimeError, match='Missing key'):
        BRN(channels=8).load_state_dict({k: v for k, v in state.items() if not k.startswith('res_conv3_r.')})


@pytest.mark.parametrize('size', [(41, 37), (5, 3)])
def test_any_size_and_the_stage_outputs(size):
    torch.manual_seed(0)
    net = build_network(dict(TINY, recurrent_iter=3)).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = net(x)
        image, stages, rain, rain_stages = net(x, return_stages=True)
    assert out.shape == rain.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(image, out) and stages[-1] is image and rain_stages[-1] is rain
    assert len(stages) == len(rain_stages) == 3


def test_the_first_rain_stage_does_not_depend_on_the_background_branch():
    """Stage 1's rain layer sees only [y, y] and zero states: background weights cannot change it."""
    torch.manual_seed(0)
    net = BRN(recurrent_iter=1, channels=8).eval()
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        before = net(x, return_stages=True)
        torch.nn.init.normal_(net.conv_i[0].weight)
        torch.nn.init.normal_(net.res_conv5[0].bias)
        after = net(x, return_stages=True)
    assert torch.equal(before.rain, after.rain) and not torch.equal(before.image, after.image)


def test_trains_and_tests_at_an_odd_size_through_basicsr(tmp_path):
    """The shipped options/brn_mixed.yml train section (its SSIM objective) on a tiny BRN, two iterations."""
    shipped = shipped_options('brn_mixed.yml')
    assert shipped['train']['pixel_opt'] == {'type': 'SSIMLoss', 'loss_weight': 1.0}
    train_and_test_tiny(tmp_path, 'brn', TINY, train=dict(shipped['train'], accumulate_grad_step=1),
                        model_type=shipped['model_type'])
