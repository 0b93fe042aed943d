import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import io

import pytest
import torch
from basicsr.archs import build_network
from basicsr.models.sr_model import SRModel

from rainmer.archs.fast import to_fast, to_plain
from rainmer.archs.rainmer_arch import Rainmer

TINY = dict(dim=8, base_dim=16, num_blocks=[1, 1, 1, 1], heads=[1, 1, 2, 2], prompt_size=32)
N_NEG = 2


def count(network, trainable_only):
    return sum(p.numel() for p in network.parameters() if p.requires_grad or not trainable_only)


def tiny(**overrides):
    torch.manual_seed(0)
    return Rainmer(**{**TINY, **overrides})


def training_batch(batch=2, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=generator)

    lq, lq_resize = rand(batch, 3, size, size), rand(batch, 3, 32, 32)
    keys = {'chromatic': rand(batch, 3, 32, 32), 'degradation': rand(batch, 3, 32, 32)}
    negatives = {view: rand(batch, N_NEG, 3, 32, 32) for view in ('chromatic', 'degradation', 'detail')}
    return lq, lq_resize, keys, negatives


@pytest.mark.parametrize('options, trainable, total', [
    ({}, 35_823_296, 36_764_832),
    # w/o chromatic prompt: no chromatic prompts (590,032) and no chromatic projector (354,688 in each encoder)
    ({'views': ['degradation', 'detail']}, 34_878_576, 35_465_424),
    # w/o degradation prompt: no degradation prompts, no degradation/detail projector
    ({'views': ['chromatic']}, 34_878_576, 35_465_424),
    ({'local_fusion': False}, 35_823_296 - 46_272, 36_764_832 - 46_272),
    # baseline: DRSformer's backbone alone (its attention weights stored as one vector per block)
    ({'views': [], 'local_fusion': False}, 33_655_424, 33_655_424),
])
def test_parameter_counts_at_paper_defaults(options, trainable, total):
    network = Rainmer(**options)
    assert count(network, trainable_only=True) == trainable
    assert count(network, trainable_only=False) == total


def test_paper_default_component_counts():
    network = Rainmer()
    encoder = network.query_encoder
    assert count(encoder, False) == 941_536
    assert count(encoder.moes, False) == 230_816
    assert count(encoder.chromatic_projector, False) + count(encoder.degradation_projector, False) == 709_376
    assert count(network.key_encoder, False) == 941_536 and count(network.key_encoder, True) == 0
    assert count(network.encoder_level0, False) == 230_816
    assert count(network.refinement, False) == 814_304
    assert count(network.local_fusion, False) == 46_272


@pytest.mark.parametrize('options', [{}, {'views': ['chromatic']}, {'views': [], 'local_fusion': False},
                                     {'chained_topk': True}, {'fast': False}])
def test_any_size_and_batch(options):
    network = tiny(**options).eval()
    x = torch.rand(2, 3, 67, 93)
    with torch.no_grad():
        out = network(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def _image(size: int, flat_band: bool) -> torch.Tensor:
    """Random texture, optionally with a flat band: constant pixels give equal features, hence equal scores."""
    torch.manual_seed(size)
    x = torch.rand(1, 3, size, size)
    if flat_band:
        x[..., size // 4:size // 2, :] = 0.5
    return x


def _output_and_grads(network, x):
    network.zero_grad(set_to_none=True)
    out = network(x)
    (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
    return out.detach(), {name: p.grad.clone() for name, p in network.named_parameters() if p.grad is not None}


def _tiny_network(chained: bool) -> Rainmer:
    torch.manual_seed(1)
    return Rainmer(dim=16, base_dim=16, num_blocks=[1, 1, 1, 1], heads=[1, 2, 4, 8], prompt_size=32,
                   chained_topk=chained)


@pytest.mark.parametrize('chained', [False, True])
@pytest.mark.parametrize('size', [64, 128])
def test_fast_and_plain_networks_are_equal_forward_and_backward(chained, size):
    """One network, converted: the fast evaluation keeps the entries the plain one keeps (in chained mode every block
    picks among exact zeros), forward and backward."""
    network, x = _tiny_network(chained), _image(size, flat_band=False)
    fast_out, fast_grads = _output_and_grads(to_fast(network), x)
    plain_out, plain_grads = _output_and_grads(to_plain(network), x)
    torch.testing.assert_close(fast_out, plain_out, atol=1e-5, rtol=1e-5)
    assert fast_grads.keys() == plain_grads.keys()
    # Tolerance relative to each tensor: a ReLU input within rounding of 0 (one pixel) switches that pixel's share of
    # a weight gradient (~1/pixels of its sum) in either evaluation; a wrong gradient differs by far more.
    for name, plain_grad in plain_grads.items():
        scale = plain_grad.abs().max().item()
        torch.testing.assert_close(fast_grads[name], plain_grad, atol=2e-3 * scale, rtol=1e-3, msg=name)


@pytest.mark.parametrize('chained', [False, True])
@pytest.mark.parametrize('size', [64, 128])
def test_fast_and_plain_networks_are_equal_on_flat_regions(chained, size):
    """Flat regions make equal scores. (Gradients are not compared there: a ReLU input that is 0 up to rounding
    in a constant region flips the gradient of every pixel of the region at once, in either evaluation.)"""
    network, x = _tiny_network(chained), _image(size, flat_band=True)
    with torch.no_grad():
        fast_out = to_fast(network)(x)
        plain_out = to_plain(network)(x)
    torch.testing.assert_close(fast_out, plain_out, atol=1e-5, rtol=1e-5)


def test_training_entry_shapes_and_joint_logits():
    network = tiny()
    lq, lq_resize, keys, negatives = training_batch()
    restored, logits = network.forward_train(lq, lq_resize, keys, negatives)
    assert restored.shape == lq.shape
    assert logits['chromatic'].shape == (2, 1 + N_NEG)
    joint = logits['degradation_detail']
    assert joint.shape == (2, 1 + 2 * N_NEG)
    torch.testing.assert_close(joint[:, 0], logits['degradation'][:, 0] + logits['detail'][:, 0])
    torch.testing.assert_close(joint[:, 1:], torch.cat([logits['degradation'][:, 1:], logits['detail'][:, 1:]], 1))
    # cosine similarities averaged over positions: every logit lies in [-1, 1] (temperature 1)
    assert logits['chromatic'].abs().max() <= 1 + 1e-6


@pytest.mark.parametrize('size', [32, 24])  # the prompt size (features shared), another size (computed twice)
def test_inference_shares_encoder_features_only_when_the_input_has_the_prompt_size(size, monkeypatch):
    network = tiny().eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        query = network.query_encoder.features(network.resize_query(x))
        location = network.query_encoder.features(x)
        prompts = network._prompts(network.query_encoder.represent(query, network.prompt_views))
        expected = network.restore(x, prompts, network._fusion(location))
        calls = []
        features = network.query_encoder.features
        monkeypatch.setattr(network.query_encoder, 'features', lambda image: calls.append(image) or features(image))
        out = network(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert len(calls) == (1 if size == TINY['prompt_size'] else 2)


def test_training_entry_batches_keys_like_separate_encodings():
    network = tiny()
    lq, lq_resize, keys, negatives = training_batch()
    with torch.no_grad():
        _, logits = network.forward_train(lq, lq_resize, keys, negatives)
        keys = {**keys, 'detail': lq_resize}
        encoder = network.key_encoder  # already updated by forward_train
        for view in ('chromatic', 'degradation', 'detail'):
            query = network.query_encoder.project(network.query_encoder.features(lq_resize), view)
            key = encoder.project(encoder.features(keys[view]), view)
            negs = torch.stack([encoder.project(encoder.features(negatives[view][:, i]), view)
                                for i in range(N_NEG)], dim=1)
            q = torch.nn.functional.normalize(query, dim=1)
            positions = q.shape[-1] * q.shape[-2]
            pos = (q * torch.nn.functional.normalize(key, dim=1)).sum(dim=(1, 2, 3)) / positions
            neg = (q.unsqueeze(1) * torch.nn.functional.normalize(negs, dim=2)).sum(dim=(2, 3, 4)) / positions
            torch.testing.assert_close(logits[view], torch.cat([pos[:, None], neg], 1), atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_trainable_parameter_and_not_the_key_encoder():
    network = tiny()
    restored, logits = network.forward_train(*training_batch())
    loss = restored.square().mean() + logits['chromatic'].logsumexp(1).mean() \
        + logits['degradation_detail'].logsumexp(1).mean()
    loss.backward()
    no_grad = [name for name, p in network.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    key_params = list(network.key_encoder.parameters())
    assert key_params and all(not p.requires_grad and p.grad is None for p in key_params)


def test_plain_forward_trains_every_parameter_except_the_key_encoder():
    network = tiny()
    network(torch.rand(1, 3, 24, 40)).mean().backward()
    assert [n for n, p in network.named_parameters() if p.requires_grad and p.grad is None] == []


def test_momentum_update_moves_key_encoder_by_one_minus_m_times_difference():
    network = tiny().double()  # float64, so that after - before is not swamped by rounding
    with torch.no_grad():
        for p in network.key_encoder.parameters():
            p.add_(torch.randn_like(p))
    query = [p.detach().clone() for p in network.query_encoder.parameters()]
    before = [p.detach().clone() for p in network.key_encoder.parameters()]
    network.momentum_update()
    m = network.momentum
    assert m == 0.999
    for q, k, after in zip(query, before, network.key_encoder.parameters()):
        torch.testing.assert_close(after - k, (1 - m) * (q - k), atol=1e-14, rtol=1e-9)


def test_training_entry_updates_key_encoder_first():
    network = tiny()
    with torch.no_grad():
        for p in network.key_encoder.parameters():
            p.add_(torch.randn_like(p))
    expected = [k + (1 - network.momentum) * (q - k)
                for q, k in zip(network.query_encoder.parameters(), network.key_encoder.parameters())]
    expected = [p.detach() for p in expected]
    network.forward_train(*training_batch())
    for after, target in zip(network.key_encoder.parameters(), expected):
        torch.testing.assert_close(after, target, atol=1e-7, rtol=1e-5)


def test_key_encoder_is_frozen_and_saved():
    network = tiny()
    assert all(not p.requires_grad for p in network.key_encoder.parameters())
    assert any(key.startswith('key_encoder.') for key in network.state_dict())
    trainable = {id(p) for p in network.parameters() if p.requires_grad}
    assert not trainable & {id(p) for p in network.key_encoder.parameters()}


def test_encode_returns_unnormalised_representations():
    network = tiny()
    reps = network.encode(torch.rand(2, 3, 50, 70))
    assert reps['chromatic'].shape == (2, 16)
    assert reps['degradation'].shape == (2, 16)
    assert reps['detail'].shape == (2, 16, 4, 4)  # prompt_size 32 / 8
    torch.testing.assert_close(reps['degradation'], reps['detail'].mean(dim=(2, 3)), atol=1e-6, rtol=1e-5)


def test_save_load_round_trip():
    network = tiny()
    network.forward_train(*training_batch())  # moves the key encoder away from the query encoder
    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    buffer.seek(0)
    restored = Rainmer(**TINY)
    restored.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    for (name, a), b in zip(network.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), name
    x = torch.rand(1, 3, 33, 17)
    with torch.no_grad():
        assert torch.equal(network(x), restored(x))


def test_chained_switch_changes_outputs_but_not_keys():
    independent, chained = tiny(), tiny(chained_topk=True)
    assert list(independent.state_dict()) == list(chained.state_dict())
    chained.load_state_dict(independent.state_dict())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(independent(x), chained(x))


def test_built_from_yaml_options_and_trained_by_srmodel(tmp_path):
    network_opt = {'type': 'Rainmer', **TINY, 'sparse_rates': ['1/2', '2/3', '3/4', '4/5']}
    assert isinstance(build_network(dict(network_opt)), Rainmer)
    opt = {
        'name': 'rainmer_srmodel', 'model_type': 'SRModel', 'scale': 1, 'num_gpu': 0, 'dist': False,
        'is_train': True, 'network_g': network_opt,
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                 'models': str(tmp_path), 'training_states': str(tmp_path)},
        'train': {'ema_decay': 0, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
                  'optim_g': {'type': 'Adam', 'lr': 1e-3},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5}},
        'val': {},
    }
    model = SRModel(opt)
    before = model.net_g.output.weight.detach().clone()
    model.feed_data({'lq': torch.rand(2, 3, 32, 32), 'gt': torch.rand(2, 3, 32, 32)})
    model.optimize_parameters(1)
    assert not torch.equal(before, model.net_g.output.weight)
    optimised = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert not optimised & {id(p) for p in model.net_g.key_encoder.parameters()}
