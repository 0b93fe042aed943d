"""RCDNet: public parameter count and keys, the authors' checkpoint layouts, any size, its stage-wise loss and model,
and a tiny run through the real `basicsr train` / `basicsr test`."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import copy

import pytest
import torch
import torch.nn.functional as F
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models import build_model
from public_rcdnet_keys import PUBLIC_PARAMETERS, mainnet_layout, parameter_count, rainmer_layout, simple_layout
from toolbox_fixtures import (
    assert_checkpoint_loads_strictly,
    assert_public_layout,
    random_state,
    shipped_options,
    state_layout,
    train_and_test_tiny,
)

from rainmer.archs.rcdnet_arch import RCDNet, RCDNetOutputs, convert_public_layout, initial_rain_kernels
from rainmer.errors import OptionError
from rainmer.losses.rcdnet_loss import RCDNetLoss

TINY = dict(num_map=4, num_channel=4, num_block=1, inter_iter=3)
TINY_NET = dict(type='RCDNet', **TINY)
AUTHORS_TINY = dict(num_map=4, num_channel=4, num_block=4, inter_iter=3)  # Mainnet has four branches per prox net


# ------------------------------------------------------------------------------------------------ architecture
def test_parameter_count_and_keys_at_the_public_defaults():
    assert PUBLIC_PARAMETERS['rainmer'] == parameter_count(rainmer_layout()) == 2_975_186
    assert_public_layout(RCDNet(), PUBLIC_PARAMETERS['rainmer'], rainmer_layout())  # the public models/RCDNet.py
    assert state_layout(RCDNet(**TINY)) == rainmer_layout(**TINY)
    assert isinstance(build_network({'type': 'RCDNet'}), RCDNet)


def test_initial_values_are_the_public_ones():
    net = RCDNet(**TINY)
    kernels = initial_rain_kernels()
    assert kernels.shape == (3, 32, 9, 9) and kernels.dtype == torch.float32
    assert torch.equal(kernels[0], kernels[1]) and torch.equal(kernels[0], kernels[2])
    sums = kernels[0].sum(dim=(1, 2))  # init_kernel.mat's 'C9': normalised streaks of random strength
    torch.testing.assert_close(sums[:3], torch.tensor([0.40341038, 0.38009354, 0.64178375]))
    assert kernels[0, 0, 4, 4] == pytest.approx(0.3896542, abs=1e-7)
    assert float(kernels.sum()) == pytest.approx(43.3851, abs=1e-3)
    assert torch.equal(net.c0, kernels[:, :4]) and torch.equal(net.c, net.c0) and net.c.data_ptr() != net.c0.data_ptr()
    assert (net.m_step == 1).all() and (net.b_step == 5).all() and (net.cz == 1 / 9).all() and net.tau.item() == 1
    assert all((prox.tau == 0.5).all() for prox in net.proxNet_M_S)
    with pytest.raises(ValueError, match='num_map'):
        RCDNet(num_map=33)


def test_a_public_format_checkpoint_loads_strictly_through_basicsr(tmp_path):
    """The Rainmer comparison's train_rcdnet.py saves the bare state dict (net_epoch_<step>.pth)."""
    state = random_state(rainmer_layout(**TINY))
    assert_checkpoint_loads_strictly(RCDNet(**TINY), state, tmp_path / 'net_epoch_5000.pth', state)


def test_the_authors_mainnet_checkpoints_load_strictly_where_their_forward_uses_them():
    """hongwang01/RCDNet: eta1 and mnet are never used; conv holds one kernel copy per iteration, of which the
    forward uses conv[1]; the first B step is eta2, the others eta12."""
    public = random_state(mainnet_layout(stage=3, num_M=4, num_Z=4), seed=1)
    net = RCDNet(**AUTHORS_TINY)
    net.load_state_dict(copy.deepcopy(public), strict=True)
    torch.testing.assert_close(net.b_step, torch.cat((public['eta2'].view(1, 1), public['eta12'])))
    assert torch.equal(net.m_step, public['eta11']) and torch.equal(net.c, public['conv'][1])
    assert torch.equal(net.c0, public['weight0']) and torch.equal(net.cz, public['w_z_f'])
    pairs = {'proxNet_B_0.layer.0.0.weight': 'xnet.resx1.0.weight', 'proxNet_B_S.2.layer.3.4.running_var':
             'x_stage.2.resx4.4.running_var', 'proxNet_M_S.1.layer.1.3.bias': 'm_stage.1.resm2.3.bias',
             'proxNet_M_S.0.tau': 'm_stage.0.tau', 'proxNet_B_L.layer.2.1.weight': 'fxnet.resx3.1.weight',
             'tau': 'tau'}
    for ours, theirs in pairs.items():
        assert torch.equal(net.state_dict()[ours], public[theirs]), ours
    simple = random_state(simple_layout(S=3, num_M=4, num_Z=4, T=4), seed=2)
    net.load_state_dict(copy.deepcopy(simple), strict=True)
    assert torch.equal(net.b_step, simple['etaB_S']) and torch.equal(net.c, simple['C'])
    assert torch.equal(net.proxNet_B_L.layer[1][0].weight, simple['proxNet_B_last_layer.layer.1.0.weight'])
    broken = {key: value for key, value in public.items() if not key.startswith('fxnet.')}
    with pytest.raises(RuntimeError, match='proxNet_B_L'):
        net.load_state_dict(broken, strict=True)
    assert convert_public_layout(random_state(rainmer_layout(**TINY))) is None


def test_any_size_gives_the_input_size_and_the_stage_outputs():
    torch.manual_seed(0)
    net = RCDNet(**TINY).eval()
    x = torch.rand(2, 3, 41, 37)
    with torch.no_grad():
        out = net(x)
        stages = net(x, return_stages=True)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert isinstance(stages, RCDNetOutputs) and torch.equal(stages.image, out)
    assert len(stages.stages) == len(stages.rain_stages) == TINY['inter_iter']
    assert all(t.shape == x.shape for t in (stages.initial, *stages.stages, *stages.rain_stages))
    assert net(torch.rand(1, 3, 5, 3)).shape == (1, 3, 5, 3)


def test_img_range_scales_the_input_and_every_output():
    torch.manual_seed(0)
    net255 = RCDNet(**TINY).eval()
    net1 = RCDNet(**TINY, img_range=1).eval()
    net1.load_state_dict(net255.state_dict())
    x = torch.rand(1, 3, 17, 13)
    with torch.no_grad():
        a, b = net255(x, return_stages=True), net1(x * 255, return_stages=True)
    torch.testing.assert_close(a.image * 255, b.image, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(a.rain_stages[-1] * 255, b.rain_stages[-1], rtol=1e-5, atol=1e-3)


# ------------------------------------------------------------------------------------------------ loss and model
def test_the_loss_is_the_public_stage_wise_mse():
    torch.manual_seed(0)
    gt, lq = torch.rand(2, 3, 8, 6), torch.rand(2, 3, 8, 6)
    stages, rains = [torch.rand_like(gt) for _ in range(4)], [torch.rand_like(gt) for _ in range(4)]
    outputs = RCDNetOutputs(torch.rand_like(gt), torch.rand_like(gt), stages, rains)
    rain = lq - gt
    expected = (0.1 * F.mse_loss(outputs.initial, gt) + 0.1 * sum(F.mse_loss(b, gt) for b in stages)
                + F.mse_loss(outputs.image, gt) + 0.1 * sum(F.mse_loss(r, rain) for r in rains)
                + 0.9 * F.mse_loss(rains[-1], rain))  # Benchmark/train_rcdnet.py loss_func
    torch.testing.assert_close(build_loss({'type': 'RCDNetLoss'})(outputs, gt, lq), expected)
    torch.testing.assert_close(RCDNetLoss(loss_weight=2.0)(outputs, gt, lq), 2 * expected)
    with pytest.raises(TypeError, match='RCDNetModel'):
        RCDNetLoss()(outputs.image, gt, lq)


def _model_options(network_g: dict) -> dict:
    """The shipped config's train block on a tiny network, ready for build_model."""
    opt = shipped_options('rcdnet_mixed.yml')
    opt.update(num_gpu=0, is_train=True, dist=False, rank=0, world_size=1, network_g=network_g)
    opt['path'].update(models='unused', training_states='unused', visualization='unused')
    opt['train'].update(accumulate_grad_step=1)
    return opt


def test_the_model_minimises_the_stage_wise_loss_of_the_network():
    torch.manual_seed(0)
    model = build_model(_model_options(dict(TINY_NET)))
    before = copy.deepcopy(model.net_g)
    gt = torch.rand(2, 3, 24, 24)
    batch = {'lq': (gt + 0.3 * torch.rand_like(gt)).clamp(0, 1), 'gt': gt}
    model.feed_data(batch)
    model.optimize_parameters(1)
    with torch.no_grad():  # the same training-mode forward (batch statistics) with the weights before the step
        expected = RCDNetLoss()(before(batch['lq'], return_stages=True), batch['gt'], batch['lq'])
    assert list(model.log_dict) == ['l_pix', 'l_total']
    assert model.log_dict['l_pix'] == pytest.approx(float(expected), rel=1e-5)
    assert not torch.equal(before.proxNet_B_L.layer[0][0].weight, model.net_g.proxNet_B_L.layer[0][0].weight)
    with pytest.raises(OptionError, match='RCDNetModel trains RCDNet'):
        build_model(_model_options({'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4,
                                    'num_block': 1, 'num_grow_ch': 4, 'scale': 1}))


def test_trains_with_its_loss_and_tests_at_an_odd_size_through_basicsr(tmp_path):
    """Two iterations of RCDNetModel (validation at 41x37 included), then `basicsr test` through DerainModel."""
    train_and_test_tiny(tmp_path, 'rcdnet_tiny', TINY_NET, model_type='RCDNetModel', test_model_type='DerainModel',
                        train=dict(optim_g=dict(type='Adam', lr=1e-3, betas=[0.9, 0.999]),
                                   scheduler=dict(type='MultiStepLR', milestones=[25], gamma=0.2),
                                   pixel_opt=dict(type='RCDNetLoss', loss_weight=1.0)))
