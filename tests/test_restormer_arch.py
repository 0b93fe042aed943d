"""Restormer: public parameter count and state-dict layout, any input size, and a run of `basicsr train|test`."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import pytest
import yaml
from basicsr.archs import build_network
from public_restormer_keys import PUBLIC_RESTORMER_PARAMETERS, public_restormer_shapes
from toolbox_fixtures import (
    assert_checkpoint_loads_strictly,
    assert_pads_to_a_multiple_of_8,
    assert_public_layout,
    cyclic_cosine_train,
    random_state,
    state_layout,
    train_and_test_tiny,
)

from rainmer.archs.restormer_arch import Restormer

# the network_g block of the public Deraining/Options/Deraining_Restormer.yml
PUBLIC_NETWORK_G = """
network_g:
  type: Restormer
  inp_channels: 3
  out_channels: 3
  dim: 48
  num_blocks: [4,6,6,8]
  num_refinement_blocks: 4
  heads: [1,2,4,8]
  ffn_expansion_factor: 2.66
  bias: False
  LayerNorm_type: WithBias
  dual_pixel_task: False
"""
TINY = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 2])


@pytest.fixture(scope='module')
def default_network():
    return Restormer(fast=False)


def test_parameter_count_and_layout_equal_the_public_code(default_network):
    assert_public_layout(default_network, PUBLIC_RESTORMER_PARAMETERS, public_restormer_shapes())


@pytest.mark.parametrize('options', [
    dict(TINY, bias=True, LayerNorm_type='BiasFree'),
    dict(TINY, inp_channels=6, dual_pixel_task=True, num_refinement_blocks=2),
], ids=['bias-biasfree', 'dual-pixel'])
def test_variant_layouts_equal_the_public_code(options):
    assert state_layout(Restormer(**options)) == list(public_restormer_shapes(**options).items())


def test_public_option_block_builds_unchanged():
    network = build_network(yaml.safe_load(PUBLIC_NETWORK_G)['network_g'])
    assert isinstance(network, Restormer)
    assert sum(p.numel() for p in network.parameters()) == PUBLIC_RESTORMER_PARAMETERS


def test_public_format_checkpoint_loads_strictly(tmp_path, default_network):
    state = random_state(public_restormer_shapes())
    assert_checkpoint_loads_strictly(default_network, {'params': state}, tmp_path / 'deraining.pth', state,
                                     param_key='params')  # the layout of the released deraining.pth


def test_any_size_is_padded_to_a_multiple_of_8():
    assert_pads_to_a_multiple_of_8(Restormer(**TINY, fast=False))


def test_trains_and_tests_at_odd_sizes_through_basicsr(tmp_path):
    """Two iterations of DerainModel with the configs' L1 loss on 53x45 images, then `basicsr test` on 41x37 ones."""
    train_and_test_tiny(tmp_path, 'restormer_tiny', dict(type='Restormer', **TINY),
                        train=cyclic_cosine_train(pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean')),
                        train_size=(45, 53), test_size=(37, 41))
