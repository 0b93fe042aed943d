"""NeRDRain / NeRDRainS: public parameter counts and key names, any input size, the INR's local ensemble."""
import math

import pytest
import torch
import torch.nn.functional as F
from basicsr.archs import build_network

from rainmer.archs.modules.nerdrain_blocks import ImplicitDecoder
from rainmer.archs.nerdrain_arch import NeRDRain, NeRDRainS

TINY = dict(dim=8, num_blocks=[1, 2, 1], heads=[1, 2, 2])


def public_block_keys(prefix: str) -> list[str]:
    keys = [f'{prefix}.norm{n}.body.{p}' for n in (1, 2) for p in ('weight', 'bias')]
    keys += [f'{prefix}.attn.{k}' for k in ('temperature', 'qkv.weight', 'qkv_dwconv.main.0.weight',
                                             'project_out.weight')]
    return keys + [f'{prefix}.ffn.{k}.weight' for k in ('project_in', 'dwconv.main.0', 'project_out')]


def public_nerdrain_keys(num_blocks) -> set[str]:
    """The public MultiscaleNet's state-dict keys, written out from its naming scheme."""
    keys = [f'patch_embed_{s}.proj.weight' for s in ('small', 'mid', 'max')]
    keys += [f'output_{s}.weight' for s in ('small', 'mid', 'max')]
    keys += ['output_mid_context.weight', 'output_max_context1.weight', 'output_max_context2.weight']
    for inr in ('INR', 'INR2'):
        keys += [f'{inr}.imnet.layers.{i}.{p}' for i in (0, 2, 4, 6) for p in ('weight', 'bias')]
    for bf in ('BF1', 'BF2', 'BF3'):
        keys += [f'{bf}.{conv}.{p}' for conv in ('query_conv', 'key_conv', 'gamma1', 'gamma2')
                 for p in ('weight', 'bias')]
    keys += [f'{up}.body.0.weight' for up in ('upsmall2mid1', 'upsmall2mid2', 'upmid2max1', 'upmid2max2')]
    stages = {'encoder_level1': 0, 'encoder_level2': 1, 'latent': 2, 'decoder_level2': 1, 'decoder_level1': 0}
    for scale, suffixes in (('small', ['']), ('mid', ['1', '2']), ('max', ['1', '2', '3'])):
        for i, suffix in enumerate(suffixes):
            resample = '' if i == 0 else str(i + 1)
            keys += [f'{name}_{scale}{resample}.body.0.weight' for name in ('down1_2', 'down2_3', 'up3_2', 'up2_1')]
            keys += [f'reduce_chan_level{level}_{scale}{suffix}.weight' for level in (1, 2)]
            for stage, level in stages.items():
                for block in range(num_blocks[level]):
                    keys += public_block_keys(f'{stage}_{scale}{suffix}.{block}')
    return set(keys)


def test_parameter_counts_at_defaults_equal_the_public_code():
    assert sum(p.numel() for p in NeRDRain().parameters()) == 22_893_146
    assert sum(p.numel() for p in NeRDRainS().parameters()) == 10_530_314


def test_state_dict_keys_are_the_public_ones():
    assert set(NeRDRain().state_dict()) == public_nerdrain_keys([2, 3, 3])
    state = NeRDRain(**TINY).state_dict()
    assert set(state) == public_nerdrain_keys(TINY['num_blocks'])
    assert state['INR.imnet.layers.0.weight'].shape == (256, 8 * 9 + 18 + 2)  # features, coordinate code, cell
    assert state['BF1.gamma1.weight'].shape == (2, 8 * 4 * 2, 3, 3)
    assert state['encoder_level2_max3.1.attn.temperature'].shape == (2, 1, 1)


def test_a_released_style_checkpoint_loads_strictly_through_basicsr(tmp_path):
    """DataParallel keys under 'state_dict', as the public train.py saves them."""
    from basicsr.models.base_model import BaseModel

    source = NeRDRain(**TINY)
    torch.save({'epoch': 1, 'state_dict': {f'module.{k}': v for k, v in source.state_dict().items()}},
               tmp_path / 'model_best.pth')
    target = NeRDRain(**TINY)
    BaseModel.load_network(object.__new__(BaseModel), target, str(tmp_path / 'model_best.pth'), strict=True,
                           param_key='state_dict')
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


@pytest.mark.parametrize('size', [(37, 29), (16, 48), (5, 7)])
def test_any_input_size_gives_the_input_size_and_scaled_outputs(size):
    torch.manual_seed(0)
    net = NeRDRain(**TINY).eval()
    h, w = size
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        out = net(x)
        scales = net(x, multiscale=True)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(scales.full, out)
    assert scales.half.shape[-2:] == scales.inr_half.shape[-2:] == (h // 2, w // 2)
    assert scales.quarter.shape[-2:] == scales.inr_quarter.shape[-2:] == (h // 4, w // 4)


def test_padding_leaves_multiples_of_16_untouched_and_crops_others():
    torch.manual_seed(0)
    net = NeRDRain(**TINY).eval()
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(net(x), net._forward_scales(x).full)
        padded = F.pad(x[..., :30, :45], (0, 3, 0, 2), mode='reflect')
        assert torch.equal(net(x[..., :30, :45]), net._forward_scales(padded).full[..., :30, :45])


def test_the_public_forward_never_uses_reduce_chan_level1_max3_unless_asked():
    torch.manual_seed(0)
    for reuse, unused in ((True, 'reduce_chan_level1_max3'), (False, None)):
        net = NeRDRain(**TINY, reuse_level1_reduction=reuse)
        sum(o.mean() for o in net(torch.rand(1, 3, 32, 32), multiscale=True)).backward()
        without_grad = {name for name, p in net.named_parameters() if p.grad is None}
        assert without_grad == ({f'{unused}.weight'} if unused else set())


def test_builds_from_yaml_options_and_the_small_variant_is_dim_32():
    net = build_network({'type': 'NeRDRainS'})
    assert net.patch_embed_max.proj.out_channels == 32
    assert isinstance(build_network({'type': 'NeRDRain', **TINY}), NeRDRain)


def _reference_local_ensemble(decoder: ImplicitDecoder, feature: torch.Tensor) -> torch.Tensor:
    """LIIF's query as the public INR does it: four shifted evaluations weighted by opposite areas, with relative
    coordinates (and their sin/cos codes) taken between the query grid and the feature grid (the same grid)."""
    b, c, h, w = feature.shape
    unfolded = F.unfold(feature, 3, padding=1).view(b, c * 9, h * w).transpose(1, 2)

    def grid() -> torch.Tensor:
        ys = -1 + 1 / h + 2 / h * torch.arange(h).float()
        xs = -1 + 1 / w + 2 / w * torch.arange(w).float()
        coord = torch.stack(torch.meshgrid(ys, xs, indexing='ij'), dim=-1).view(1, h * w, 2).expand(b, -1, -1)
        freq = 2 ** torch.arange(4).float() * math.pi
        spectrum = coord[..., None] * freq
        return torch.cat([coord, torch.stack([spectrum.sin(), spectrum.cos()], dim=-2).flatten(2)], dim=-1)

    query, feature_coord = grid(), grid()
    cell = torch.ones(b, h * w, 2)
    cell[..., 0] *= 2 / h
    cell[..., 1] *= 2 / w
    preds, areas = [], []
    for _ in range(4):  # the shifted copies of the query are computed but not used by the public code
        relative = query - feature_coord
        relative[..., 0] *= h
        relative[..., 1] *= w
        relative_cell = cell.clone()
        relative_cell[..., 0] *= h
        relative_cell[..., 1] *= w
        preds.append(decoder.imnet(torch.cat([unfolded, relative, relative_cell], dim=-1)))
        areas.append((relative[..., 0] * relative[..., 1]).abs() + 1e-9)
    total = torch.stack(areas).sum(0)
    areas = areas[::-1]
    out = sum(p * (a / total)[..., None] for p, a in zip(preds, areas))
    return out.transpose(1, 2).reshape(b, -1, h, w)


def test_inr_single_evaluation_equals_the_four_way_local_ensemble():
    torch.manual_seed(0)
    decoder = ImplicitDecoder(8)
    feature = torch.randn(2, 8, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(decoder(feature), _reference_local_ensemble(decoder, feature), rtol=1e-5, atol=1e-6)
