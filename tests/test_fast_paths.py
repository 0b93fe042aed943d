"""Every fast block equals its plain class (same parameters): forward and backward, small sizes; and the
network-level switch (rainmer.archs.fast) converts in place, keeps the state dict and chooses per forward."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import copy

import pytest
import torch

from rainmer.archs.drsformer_arch import DRSformer
from rainmer.archs.fast import fast_pays_off, is_auto, is_fast, set_fast, to_fast, to_plain
from rainmer.archs.modules.fastpath import convert_modules
from rainmer.archs.modules.moe import ExpertStage, FastExpertStages, FusedExpertStage, MixtureOfExperts
from rainmer.archs.modules.msfn import MSFN, FastMSFN
from rainmer.archs.modules.ops import conv1x1_per_image
from rainmer.archs.modules.prompt import FoldedPromptInjection, PromptInjection
from rainmer.archs.nerdrain_arch import NeRDRain
from rainmer.archs.rainmer_arch import Rainmer

TINY = dict(dim=8, base_dim=16, num_blocks=[1, 1, 1, 1], heads=[1, 1, 2, 2], prompt_size=16, chained_topk=True)


def _forward_backward(module, inputs, **kwargs):
    """Output, input gradients and parameter gradients for a fixed random projection of the output."""
    module.zero_grad(set_to_none=True)
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = module(*leaves, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    probe = torch.linspace(-1, 1, out.numel()).view(out.shape)
    (out * probe).sum().backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    return out.detach(), [t.grad for t in leaves], grads


def _assert_same(plain, fast, atol=1e-5, rtol=1e-4):
    torch.testing.assert_close(fast[0], plain[0], atol=atol, rtol=rtol)
    for a, b in zip(plain[1], fast[1]):
        torch.testing.assert_close(b, a, atol=atol, rtol=rtol)
    assert plain[2].keys() == fast[2].keys()
    for name in plain[2]:
        torch.testing.assert_close(fast[2][name], plain[2][name], atol=atol, rtol=rtol, msg=name)


def _set_fused(moe: MixtureOfExperts, fused: bool) -> None:
    """Convert the MoE's blocks alone (its stages and the residual stack) to their fast or plain classes."""
    assert convert_modules(moe, fused) in (0, 5)  # 4 expert stages + the stage stack; 0 when already there
    assert isinstance(moe.layers[1], FastExpertStages) == fused
    assert all(isinstance(stage, FusedExpertStage) == fused and isinstance(stage, ExpertStage)
               for stage in moe.layers[1]._ops)


@pytest.mark.parametrize('channels_last', [False, True])
def test_fused_experts_equal_plain_experts(channels_last):
    torch.manual_seed(0)
    moe = MixtureOfExperts(6)
    x = torch.randn(3, 6, 12, 10)  # batch > 1: per-image expert weights
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    _set_fused(moe, False)
    plain = _forward_backward(moe, [x])
    _set_fused(moe, True)
    fast = _forward_backward(moe, [x])
    _assert_same(plain, fast)
    if channels_last:
        assert moe(x).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('channels_last', [False, True])
def test_fused_experts_without_autograd_equal_plain_experts(channels_last):
    """Without autograd the fused stages also fuse their ReLUs (oneDNN post-op, _add_relu)."""
    torch.manual_seed(0)
    moe = MixtureOfExperts(6)
    x = torch.randn(3, 6, 12, 10)
    with torch.no_grad():
        _set_fused(moe, False)
        expected = moe(x)
        _set_fused(moe, True)
        out = moe(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('dim', [6, 10])  # hidden channels 15 (odd) and 26 (even)
@pytest.mark.parametrize('channels_last', [False, True])
def test_fast_msfn_equals_plain_msfn(dim, channels_last):
    torch.manual_seed(0)
    ffn = MSFN(dim, 2.66, bias=True)
    x = torch.randn(2, dim, 9, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    plain = _forward_backward(ffn, [x])
    convert_modules(ffn, True)
    assert type(ffn) is FastMSFN
    _assert_same(plain, _forward_backward(ffn, [x]))


@pytest.mark.parametrize('dim', [6, 10])  # halves padded from 15 to 16 and from 26 to 32 channels
@pytest.mark.parametrize('channels_last', [False, True])
def test_fast_msfn_without_autograd_equals_plain_msfn(dim, channels_last):
    """The inference evaluation fuses the ReLUs (oneDNN post-op, _add_relu) and pads the halves to 16 channels:
    same output as the plain MSFN."""
    torch.manual_seed(0)
    ffn = MSFN(dim, 2.66, bias=True)
    x = torch.randn(2, dim, 9, 7)
    with torch.no_grad():
        expected = ffn(x)
        convert_modules(ffn, True)
        out = ffn(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_fast_msfn_trains_after_inference_mode():
    """Nothing made under inference_mode (an inference tensor) may be reused by a later autograd pass."""
    torch.manual_seed(0)
    ffn = FastMSFN(6, 2.66, bias=True)
    x = torch.randn(1, 6, 5, 5)
    with torch.inference_mode():
        ffn(x)
    ffn(x.requires_grad_()).sum().backward()
    assert x.grad is not None and ffn.project_in.weight.grad is not None


def test_fast_msfn_with_frozen_input_side_equals_plain_msfn():
    """Only the second stage trains and the input needs no gradient: the fast path must still take its autograd
    branch (the fused one writes into a buffer, which autograd cannot follow)."""
    torch.manual_seed(0)
    ffn = MSFN(6, 2.66, bias=True)
    for conv in (ffn.project_in, ffn.dwconv3x3, ffn.dwconv5x5):
        conv.requires_grad_(False)
    x = torch.randn(2, 6, 9, 7)
    results = []
    for fast in (False, True):
        convert_modules(ffn, fast)
        ffn.zero_grad(set_to_none=True)
        out = ffn(x)
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        results.append((out.detach(), {n: p.grad for n, p in ffn.named_parameters() if p.requires_grad}))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-4)
    assert results[0][1].keys() == results[1][1].keys() and results[0][1]
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_pointwise_matches_conv_on_both_layouts():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 3)
    weight = torch.randn(7, 5)
    expected = torch.nn.functional.conv2d(x, weight[:, :, None, None])
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        torch.testing.assert_close(conv1x1_per_image(inp, weight), expected)
        torch.testing.assert_close(conv1x1_per_image(inp, weight, accumulate=expected.clone()), 2 * expected)


def _tiny_plain():
    torch.manual_seed(0)
    return Rainmer(**TINY, fast=False)


@pytest.mark.parametrize('size', [(16, 16), (20, 13)])  # 20x13: padded to a multiple of 8, cropped back
def test_fast_rainmer_equals_plain_rainmer_inference(size):
    """One network, converted in place: the fast evaluation equals the plain one, forward and backward."""
    net = _tiny_plain()
    x = torch.rand(2, 3, *size)
    plain = _forward_backward(net, [x])
    to_fast(net)
    assert is_fast(net)
    _assert_same(plain, _forward_backward(net, [x]))


def test_fast_rainmer_equals_plain_rainmer_training_forward():
    plain = _tiny_plain()
    fast = to_fast(copy.deepcopy(plain))  # a copy: the training forward updates the key encoder
    assert not is_fast(plain) and is_fast(fast)
    # inputs without a ReLU pre-activation within rounding of 0 (with seed 1 one of decoder_level1's MSFN
    # pre-activations is -2e-8 in one evaluation and +1e-7 in the other: a kink, as top-k near-ties are jumps)
    torch.manual_seed(2)
    batch, n_neg, side = 2, 3, 16
    lq, lq_resize = torch.rand(batch, 3, side, side), torch.rand(batch, 3, side, side)
    keys = {'chromatic': torch.rand(batch, 3, side, side), 'degradation': torch.rand(batch, 3, side, side)}
    negatives = {v: torch.rand(batch, n_neg, 3, side, side) for v in ('chromatic', 'degradation', 'detail')}
    outputs = []
    for net in (plain, fast):
        restored, logits = net.forward_train(lq, lq_resize, keys, negatives)
        loss = restored.square().mean() + sum(value.logsumexp(1).mean() for value in logits.values())
        net.zero_grad(set_to_none=True)
        loss.backward()
        grads = {name: p.grad for name, p in net.named_parameters() if p.grad is not None}
        outputs.append((restored.detach(), logits, grads, dict(net.key_encoder.state_dict())))
    (restored_p, logits_p, grads_p, key_p), (restored_f, logits_f, grads_f, key_f) = outputs
    torch.testing.assert_close(restored_f, restored_p, atol=1e-5, rtol=1e-4)
    for view in logits_p:
        torch.testing.assert_close(logits_f[view].detach(), logits_p[view].detach(), atol=1e-5, rtol=1e-4)
    assert grads_p.keys() == grads_f.keys()
    for name in grads_p:
        torch.testing.assert_close(grads_f[name], grads_p[name], atol=1e-5, rtol=1e-4, msg=name)
    for name in key_p:  # the momentum update is layout-independent
        torch.testing.assert_close(key_f[name], key_p[name])


TINY_NETWORKS = {
    'Rainmer': lambda fast: Rainmer(dim=8, base_dim=16, num_blocks=[1, 1, 1, 1], heads=[1, 1, 2, 2],
                                    prompt_size=32, fast=fast),
    'DRSformer': lambda fast: DRSformer(dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 1, 2, 2], fast=fast),
    'NeRDRain': lambda fast: NeRDRain(dim=8, num_blocks=[1, 1, 1], heads=[1, 1, 2], fast=fast),
}


@pytest.mark.parametrize('name', list(TINY_NETWORKS))
def test_to_fast_and_to_plain_round_trips_keep_the_state_dict(name):
    """Conversion changes classes only: the same state-dict keys holding the same tensors (same storage),
    and ``is_fast`` reports the evaluation."""
    torch.manual_seed(0)
    net = TINY_NETWORKS[name](False)
    assert not is_fast(net) and not is_auto(net)
    state = net.state_dict()
    pointers = {key: tensor.data_ptr() for key, tensor in state.items()}
    values = {key: tensor.clone() for key, tensor in state.items()}
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        expected = net(x)
    for convert, fast in ((to_fast, True), (to_plain, False), (to_fast, True), (to_plain, False)):
        assert convert(net) is net
        assert is_fast(net) == fast and not is_auto(net)
        state = net.state_dict()
        assert list(state) == list(pointers)
        assert {key: tensor.data_ptr() for key, tensor in state.items()} == pointers
        assert all(torch.equal(state[key], value) for key, value in values.items())
        with torch.no_grad():
            torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-4)
        assert is_fast(net) == fast  # an explicit choice stays whatever the input
    fast_built = TINY_NETWORKS[name](True)
    assert is_fast(fast_built) and list(fast_built.state_dict()) == list(pointers)


def test_fast_auto_is_plain_under_autocast_and_fast_in_fp32():
    torch.manual_seed(0)
    net = TINY_NETWORKS['Rainmer']('auto').eval()
    assert is_auto(net)
    x = torch.rand(1, 3, 16, 16)
    assert fast_pays_off(x) == torch.backends.mkldnn.is_available()
    with torch.no_grad():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = net(x)
        assert not is_fast(net) and torch.isfinite(out).all()
        net(x)
        assert is_fast(net) == torch.backends.mkldnn.is_available()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            net(x)
        assert not is_fast(net)
    assert is_auto(net)
    set_fast(net, False)  # an explicit choice removes the per-forward switch
    assert not is_auto(net) and not is_fast(net)
    with torch.no_grad():
        net(x)
    assert not is_fast(net)


@pytest.mark.parametrize('bias', [False, True])
def test_prompt_injection_keeps_channels_last_with_equal_values(bias):
    torch.manual_seed(0)
    module = PromptInjection(6, 4)
    if not bias:
        module.projection[0].bias = None
    feat, prompt = torch.randn(2, 6, 5, 7), torch.randn(2, 4, 1, 1)
    expected = module(feat, prompt)  # the public form SiLU(conv1x1(gate * z))
    gate = module.gate(feat)
    torch.testing.assert_close(expected, module.projection(gate * prompt.expand(-1, -1, 5, 7)), atol=1e-6,
                               rtol=1e-5)
    convert_modules(module, True)
    assert type(module) is FoldedPromptInjection
    torch.testing.assert_close(module(feat, prompt), expected, atol=1e-6, rtol=1e-5)
    out = module(feat.contiguous(memory_format=torch.channels_last), prompt)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
