"""IDT: the public parameter count and state-dict layout, any input size through the public crop protocol, and a
tiny instance through the real `basicsr train` / `basicsr test` at odd sizes."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import public_idt_keys as public
import pytest
import torch
from basicsr.archs import build_network
from toolbox_fixtures import (
    assert_checkpoint_loads_strictly,
    assert_public_layout,
    random_state,
    shipped_options,
    train_and_test_tiny,
)

from rainmer.archs.idt_arch import IDT, centre_weights, tile_starts

TINY = dict(public.PUBLIC_TINY, tile_overlap=16)


def test_defaults_have_the_public_parameter_count_and_state_dict_layout():
    expected = public.public_idt_keys()
    assert public.keys_sha256(expected) == public.PUBLIC_DEFAULT_SHA256 and len(expected) == public.PUBLIC_DEFAULT_KEYS
    assert_public_layout(IDT(), public.PUBLIC_DEFAULT_PARAMETERS, expected)


def test_tiny_instance_has_the_public_layout():
    assert_public_layout(IDT(**TINY), public.PUBLIC_TINY_PARAMETERS, public.public_idt_keys(**public.PUBLIC_TINY))


def test_a_public_format_checkpoint_loads_strictly_through_basicsr(tmp_path):
    """The public train scripts save ``model.state_dict()`` (IDT's own through DataParallel: ``module.`` keys)."""
    state = random_state(public.public_idt_keys(**public.PUBLIC_TINY))
    assert_checkpoint_loads_strictly(IDT(**TINY), {f'module.{key}': value for key, value in state.items()},
                                     tmp_path / 'net_latest.pth', state)


def test_any_size_runs_the_public_crop_protocol():
    torch.manual_seed(0)
    net = IDT(**TINY).eval()
    x = torch.rand(2, 3, 64, 100)  # crops at columns 0 and 36 (flush with the right edge)
    assert tile_starts(100, 64, 16) == [0, 36] and tile_starts(177, 64, 32) == [0, 32, 64, 96, 113]
    with torch.no_grad():
        square = x[..., :64]
        assert torch.equal(net(square), net.restore(square))
        out = net(x)
        left, right = net.restore(x[..., :64]), net.restore(x[..., 36:])
        torch.testing.assert_close(out[..., :36], left[..., :36])  # covered by one crop only
        torch.testing.assert_close(out[..., 64:], right[..., 28:])
        weight_left, weight_right = centre_weights(64)[:, 36:], centre_weights(64)[:, :28]
        blend = (left[..., 36:] * weight_left + right[..., :28] * weight_right) / (weight_left + weight_right)
        torch.testing.assert_close(out[..., 36:64], blend)
        torch.testing.assert_close(net(x[1:]), out[1:])  # crops of a batch stay apart
        for size in ((41, 37), (13, 90)):  # reflect-padded, then (for the narrow one) replicated
            small = net(torch.rand(1, 3, *size))
            assert small.shape == (1, 3, *size) and torch.isfinite(small).all()


def test_training_step_reaches_every_parameter():
    torch.manual_seed(0)
    net = IDT(**TINY, drop_path_rate=0.0)
    net(torch.rand(2, 3, 64, 64)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_option_files_build_the_public_network_with_its_ssim_objective():
    opt = shipped_options('idt_mixed.yml')
    train = opt['train']
    assert train['pixel_opt'] == {'type': 'SSIMLoss', 'loss_weight': 1.0} and 'ssim_opt' not in train
    assert opt['datasets']['train']['gt_size'] == opt['network_g']['img_size'] == 128
    net = build_network(dict(opt['network_g']))
    assert isinstance(net, IDT) and sum(p.numel() for p in net.parameters()) == public.PUBLIC_DEFAULT_PARAMETERS
    test_opt = shipped_options('test', 'idt_mixed_test.yml')
    assert test_opt['network_g'] == opt['network_g']


def test_tiny_idt_trains_and_tests_at_odd_sizes(tmp_path):
    """Two iterations on 64x64 crops of 199x163 images (the SSIM objective), then validation and `basicsr test` on
    177x241 images, restored in merged crops to their own size."""
    train_and_test_tiny(tmp_path, 'idt_tiny', dict(type='IDT', **TINY),
                        train=dict(optim_g=dict(type='Adam', lr=1e-4, betas=[0.9, 0.999]),
                                   scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.1),
                                   pixel_opt=dict(type='SSIMLoss', loss_weight=1.0)),
                        train_size=(199, 163), test_size=(177, 241), gt_size=64)


@pytest.mark.parametrize('bad', [dict(img_size=96), dict(depths=[1] * 8), dict(tile_overlap=64)])
def test_invalid_constructor_arguments_fail_with_a_message(bad):
    with pytest.raises(ValueError, match='IDT'):
        IDT(**{**TINY, **bad})
