import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import pytest
import torch
import yaml
from basicsr.archs import build_network

from rainmer.archs.drsformer_arch import DRSformer

# the network_g block of the public Options/Deraining.yml
PUBLIC_NETWORK_G = """
network_g:
  type: DRSformer
  inp_channels: 3
  out_channels: 3
  dim: 48
  num_blocks: [4,6,6,8]
  heads: [1,2,4,8]
  ffn_expansion_factor: 2.66
  bias: False
  LayerNorm_type: WithBias
"""
TINY = dict(dim=8, num_blocks=[1, 2, 1, 1], heads=[1, 2, 2, 4])


def public_moe_keys(prefix):
    """Keys of the public MEFC (``subnet``): OALayer with nn.Linear, GroupOLs with 4 OperationLayers."""
    keys = [f'{prefix}.layers.0.ca_fc.{i}.{p}' for i in (0, 2) for p in ('weight', 'bias')]
    keys.append(f'{prefix}.layers.1.preprocess.op.0.weight')
    for stage in range(4):
        base = f'{prefix}.layers.1._ops.{stage}'
        for expert in range(4):  # separable convs 1, 3, 5, 7
            keys += [f'{base}._ops.{expert}.op.{i}.weight' for i in (0, 1, 3, 4)]
        for expert in range(4, 7):  # dilated convs 3, 5, 7 (expert 7 is the parameter-free avg pool)
            keys += [f'{base}._ops.{expert}.op.{i}.weight' for i in (0, 1)]
        keys.append(f'{base}._out.0.weight')
    return keys


def public_block_keys(prefix):
    keys = [f'{prefix}.norm{n}.body.{p}' for n in (1, 2) for p in ('weight', 'bias')]
    keys += [f'{prefix}.attn.{name}' for name in ('temperature', 'attn1', 'attn2', 'attn3', 'attn4',
                                                  'qkv.weight', 'qkv_dwconv.weight', 'project_out.weight')]
    keys += [f'{prefix}.ffn.{name}.weight' for name in ('project_in', 'dwconv3x3', 'dwconv5x5', 'dwconv3x3_1',
                                                        'dwconv5x5_1', 'project_out')]
    return keys


def public_drsformer_keys(num_blocks):
    keys = ['patch_embed.proj.weight', 'output.weight', 'reduce_chan_level3.weight', 'reduce_chan_level2.weight']
    keys += public_moe_keys('encoder_level0') + public_moe_keys('refinement')
    keys += [f'{name}.body.0.weight' for name in ('down1_2', 'down2_3', 'down3_4', 'up4_3', 'up3_2', 'up2_1')]
    levels = {'encoder_level1': 0, 'encoder_level2': 1, 'encoder_level3': 2, 'latent': 3,
              'decoder_level3': 2, 'decoder_level2': 1, 'decoder_level1': 0}
    for name, level in levels.items():
        for block in range(num_blocks[level]):
            keys += public_block_keys(f'{name}.{block}')
    return set(keys)


def test_parameter_count_at_defaults():
    assert sum(p.numel() for p in DRSformer().parameters()) == 33_655_424


def test_state_dict_keys_match_public_naming():
    network = DRSformer(**TINY)
    state = network.state_dict()
    assert set(state) == public_drsformer_keys(TINY['num_blocks'])
    assert state['encoder_level0.layers.0.ca_fc.0.weight'].shape == (64, 8)  # nn.Linear layout
    assert state['decoder_level1.0.attn.attn1'].shape == (1,)
    assert state['encoder_level1.0.attn.temperature'].shape == (1, 1, 1)


def test_default_keys_match_public_naming():
    assert set(DRSformer().state_dict()) == public_drsformer_keys([4, 6, 6, 8])


def test_public_option_block_builds_unchanged():
    network = build_network(yaml.safe_load(PUBLIC_NETWORK_G)['network_g'])
    assert isinstance(network, DRSformer)
    assert sum(p.numel() for p in network.parameters()) == 33_655_424


def test_strict_load_of_a_public_layout_checkpoint(tmp_path):
    source = DRSformer(**TINY)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / 'net_g.pth'
    torch.save({'params': source.state_dict()}, path)
    target = DRSformer(**TINY)
    target.load_state_dict(torch.load(path, weights_only=True)['params'], strict=True)
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def test_weight_generator_also_loads_the_conv_layout():
    source = DRSformer(**TINY)
    state = {key: value[..., None, None] if '.ca_fc.' in key and key.endswith('weight') else value
             for key, value in source.state_dict().items()}
    assert state['refinement.layers.0.ca_fc.2.weight'].dim() == 4
    target = DRSformer(**TINY)
    target.load_state_dict(state, strict=True)
    torch.testing.assert_close(target.refinement.layers[0].ca_fc[2].weight, source.refinement.layers[0].ca_fc[2].weight)


@pytest.mark.parametrize('options', [{}, {'mefc': False}, {'fast': False}])
def test_any_size_and_batch(options):
    network = DRSformer(**TINY, **options).eval()
    x = torch.rand(3, 3, 37, 45)
    with torch.no_grad():
        out = network(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_without_mefc_drops_both_mefc_blocks():
    keys = set(DRSformer(**TINY, mefc=False).state_dict())
    assert keys == {k for k in public_drsformer_keys(TINY['num_blocks'])
                    if not k.startswith(('encoder_level0.', 'refinement.'))}
