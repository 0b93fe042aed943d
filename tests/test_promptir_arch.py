"""PromptIR: public parameter count and state-dict layout, any input size, and a run of `basicsr train|test`."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import pytest
import torch
import yaml
from basicsr.archs import build_network
from public_promptir_keys import PUBLIC_PROMPTIR_PARAMETERS, public_promptir_shapes
from toolbox_fixtures import (
    assert_checkpoint_loads_strictly,
    assert_pads_to_a_multiple_of_8,
    assert_public_layout,
    cyclic_cosine_train,
    random_state,
    train_and_test_tiny,
)

from rainmer.archs.promptir_arch import PromptGenBlock, PromptIR

# the public train.py builds PromptIR(decoder=True), every other argument at its default
PUBLIC_NETWORK_G = """
network_g:
  type: PromptIR
  decoder: true
"""
TINY = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 2], prompt_len=2,
            prompt_dims=[8, 8, 16], prompt_sizes=[8, 4, 2])


@pytest.fixture(scope='module')
def default_network():
    return PromptIR(fast=False)


def test_parameter_count_and_layout_equal_the_public_code(default_network):
    assert_public_layout(default_network, PUBLIC_PROMPTIR_PARAMETERS, public_promptir_shapes())


def test_prompt_block_follows_the_feature_size():
    block = PromptGenBlock(prompt_dim=4, prompt_len=3, prompt_size=5, lin_dim=6)
    assert block(torch.rand(2, 6, 7, 9)).shape == (2, 4, 7, 9)


def test_decoder_false_is_refused():
    with pytest.raises(ValueError, match='decoder=True'):
        PromptIR(**TINY, decoder=False)


def test_only_the_publicly_unused_modules_get_no_gradient():
    """Why the configs set find_unused_parameters: the public layout holds six 1x1 convs its forward never calls."""
    network = PromptIR(**TINY)
    network(torch.rand(1, 3, 16, 16)).mean().backward()
    unused = {name.split('.')[0] for name, p in network.named_parameters() if p.grad is None}
    assert unused == {'chnl_reduce1', 'chnl_reduce2', 'chnl_reduce3', 'reduce_noise_channel_1',
                      'reduce_noise_channel_2', 'reduce_noise_channel_3'}


def test_public_option_block_builds_unchanged():
    network = build_network(yaml.safe_load(PUBLIC_NETWORK_G)['network_g'])
    assert isinstance(network, PromptIR) and network.decoder
    assert sum(p.numel() for p in network.parameters()) == PUBLIC_PROMPTIR_PARAMETERS


def test_public_format_checkpoint_loads_strictly(tmp_path, default_network):
    state = random_state(public_promptir_shapes())
    assert_checkpoint_loads_strictly(default_network, {'params': state}, tmp_path / 'promptir.pth', state,
                                     param_key='params')


def test_any_size_is_padded_to_a_multiple_of_8():
    assert_pads_to_a_multiple_of_8(PromptIR(**TINY, fast=False))


def test_trains_and_tests_at_odd_sizes_through_basicsr(tmp_path):
    """Two iterations of DerainModel with the configs' L1 loss on 53x45 images, then `basicsr test` on 41x37 ones."""
    train_and_test_tiny(tmp_path, 'promptir_tiny', dict(type='PromptIR', **TINY),
                        train=cyclic_cosine_train(pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean')),
                        train_size=(45, 53), test_size=(37, 41))
