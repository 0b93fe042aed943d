import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
from fractions import Fraction

import pytest
import torch

from rainmer.archs.modules.fastpath import convert_modules
from rainmer.archs.modules.tksa import (
    FastTopKSparseAttention,
    TopKSparseAttention,
    _keep_topk,
    sparse_attention_fast,
    sparse_attention_plain,
    topk_counts,
    topk_mask,
    topk_order,
)

COUNTS = [6, 8, 9, 9]  # C = 12 with the rates 1/2, 2/3, 3/4, 4/5


def reference_topk_index(scores, count):
    """Column indices of each row's ``count`` largest scores, largest first, equal scores by the lowest column
    (plain Python: the documented tie rule, CUDA ``torch.topk``'s)."""
    rows = scores.detach().reshape(-1, scores.shape[-1]).tolist()
    index = [sorted(range(len(row)), key=lambda column, row=row: (-row[column], column))[:count] for row in rows]
    return torch.tensor(index, dtype=torch.long).view(*scores.shape[:-1], count)


def reference_mask(scores, count):
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, reference_topk_index(scores, count), True)


def loop_reference(attn, v, counts, weights):
    """DRSformer's TKSA written out: an independent top-k mask of A per rate, one matmul per rate."""
    out = 0
    for count, weight in zip(counts, weights):
        masked = torch.where(reference_mask(attn, count), attn, torch.full_like(attn, float('-inf')))
        out = out + (masked.softmax(dim=-1) @ v) * weight
    return out


def chained_reference(attn, v, counts, weights):
    """The public Rainmer code's loop: the masked, soft-maxed matrix is the next rate's top-k input."""
    outs = []
    for count, weight in zip(counts, weights):
        attn = torch.where(reference_mask(attn, count), attn, torch.full_like(attn, float('-inf')))
        attn = attn.softmax(dim=-1)
        outs.append((attn @ v) * weight)
    return sum(outs)


def _inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    attn = (torch.randn(2, 3, 12, 12, generator=generator) * 2).requires_grad_()
    v = torch.randn(2, 3, 12, 20, generator=generator).requires_grad_()
    weights = torch.tensor([0.2, -0.5, 0.7, 1.1]).requires_grad_()
    return attn, v, weights


def _value_and_grads(function, attn, v, weights):
    grad_out = torch.randn(2, 3, 12, 20, generator=torch.Generator().manual_seed(1))
    out = function(attn, v, COUNTS, weights)
    grads = torch.autograd.grad(out, (attn, v, weights), grad_out)
    return out, grads


def test_topk_counts_are_exact_fractions():
    assert topk_counts(48, ['1/2', '2/3', '3/4', '4/5']) == [24, 32, 36, 38]
    assert topk_counts(48, [1 / 2, 2 / 3, 3 / 4, 4 / 5]) == [24, 32, 36, 38]  # float 2/3 does not floor to 31
    assert topk_counts(12, [Fraction(2, 3)]) == [8]
    assert topk_counts(1, ['1/2']) == [1]


@pytest.mark.parametrize('function', [sparse_attention_fast, sparse_attention_plain])
def test_independent_masks_equal_loop_reference_forward_and_backward(function):
    attn, v, weights = _inputs()
    expected, expected_grads = _value_and_grads(loop_reference, attn, v, weights)
    out, grads = _value_and_grads(function, attn, v, weights)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('function', [sparse_attention_fast, sparse_attention_plain])
def test_chained_switch_equals_literal_chained_loop_forward_and_backward(function):
    attn, v, weights = _inputs(seed=3)
    expected, expected_grads = _value_and_grads(chained_reference, attn, v, weights)
    out, grads = _value_and_grads(lambda *args: function(*args, chained=True), attn, v, weights)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('columns,count', [(48, 24), (48, 38), (96, 76), (128, 2), (12, 12)])
def test_topk_keeps_the_lowest_columns_among_equal_scores(columns, count):
    """Rows of few distinct values (ties everywhere, at every rank boundary): ``topk_order`` returns the Python
    reference's values and columns in its order (largest first, equal scores by ascending column), and
    ``topk_mask`` keeps exactly those columns."""
    generator = torch.Generator().manual_seed(columns + count)
    scores = torch.randint(0, 4, (2, 3, 16, columns), generator=generator).float()
    scores[0, 0] = 0.0  # a row of equal values: the first ``count`` columns
    scores[0, 1, :, ::2] = -0.0  # signed zeros are equal scores too
    expected = reference_topk_index(scores, count)
    values, index = topk_order(scores, count)
    assert torch.equal(index, expected)
    assert torch.equal(values, scores.gather(-1, expected))
    assert torch.equal(index[0, 0], torch.arange(count).expand(16, count))
    assert torch.equal(topk_mask(scores, count), reference_mask(scores, count))
    kept = _keep_topk(scores, count)
    assert torch.equal(kept.isfinite(), reference_mask(scores, count))


def test_topk_tie_rule_on_probabilities_with_exact_zeros():
    """The chained masks' case: a softmax row whose dropped entries are exact zeros; a larger count takes the
    zeros of the lowest columns."""
    generator = torch.Generator().manual_seed(7)
    scores = torch.randn(4, 8, 48, generator=generator)
    probs = _keep_topk(scores, 24).softmax(dim=-1)
    assert (probs == 0).sum(-1).eq(24).all()
    for count in (32, 36, 38):
        assert torch.equal(topk_mask(probs, count), reference_mask(probs, count))
        zeros_kept = topk_mask(probs, count) & (probs == 0)
        first_zeros = (probs == 0).cumsum(-1).le(count - 24) & (probs == 0)
        assert torch.equal(zeros_kept, first_zeros)


def test_chained_fast_equals_literal_loop_at_paper_head_size():
    generator = torch.Generator().manual_seed(5)
    attn = torch.randn(1, 8, 48, 48, generator=generator) * 3
    v = torch.randn(1, 8, 48, 30, generator=generator)
    weights = torch.tensor([0.3, -0.2, 0.5, 0.9])
    counts = topk_counts(48, ['1/2', '2/3', '3/4', '4/5'])  # later rates pick zeros of the previous matrix
    expected = chained_reference(attn, v, counts, weights)
    torch.testing.assert_close(sparse_attention_fast(attn, v, counts, weights, chained=True), expected,
                               atol=1e-5, rtol=1e-5)


def test_chained_and_independent_masks_differ():
    attn, v, weights = _inputs()
    assert not torch.allclose(chained_reference(attn, v, COUNTS, weights), loop_reference(attn, v, COUNTS, weights))


def _plain_and_fast_results(module, x, channels_last):
    """Output, input gradient and parameter gradients of ``module`` plain (NCHW input) and fast (``x`` in the
    given layout), the module converted in place in between."""
    probe = torch.linspace(-1, 1, x.numel()).view(x.shape)
    results = []
    for fast in (False, True):
        convert_modules(module, fast)
        assert isinstance(module, FastTopKSparseAttention) == fast
        module.zero_grad(set_to_none=True)
        inp = x.contiguous(memory_format=torch.channels_last) if fast and channels_last else x.contiguous()
        inp = inp.detach().clone().requires_grad_()
        out = module(inp)
        (out * probe).sum().backward()
        results.append((out.detach(), inp.grad, {name: p.grad for name, p in module.named_parameters()}))
    convert_modules(module, False)
    return results


def _assert_results_equal(plain, fast, atol, rtol):
    torch.testing.assert_close(fast[0], plain[0], atol=atol, rtol=rtol)
    torch.testing.assert_close(fast[1], plain[1], atol=atol, rtol=rtol)
    assert plain[2].keys() == fast[2].keys()
    for name, grad in plain[2].items():
        torch.testing.assert_close(fast[2][name], grad, atol=atol, rtol=rtol, msg=name)


def _assert_close_to_scale(actual, expected, tolerance, name=''):
    """``|actual - expected| <= tolerance * max(1, max |expected|)``: parameter gradients sum over every pixel,
    reach tens, and carry the fp32 rounding of those sums."""
    scale = max(1.0, expected.abs().max().item())
    difference = (actual - expected).abs().max().item()
    assert difference <= tolerance * scale, f'{name}: max abs difference {difference:.2e} at scale {scale:.1e}'


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('chained', [False, True])
def test_module_fast_equals_plain_with_same_weights(chained, channels_last):
    torch.manual_seed(0)
    module = TopKSparseAttention(24, 2, bias=False, chained_topk=chained)
    with torch.no_grad():
        module.attns.copy_(torch.tensor([0.3, -0.2, 0.5, 0.9]))
        module.temperature.mul_(3)
    state = {name: tensor.clone() for name, tensor in module.state_dict().items()}
    x = torch.randn(2, 24, 9, 11)
    plain, fast = _plain_and_fast_results(module, x, channels_last)
    _assert_results_equal(plain, fast, atol=1e-4, rtol=1e-4)
    # the gradient keeps the input's layout (no NCHW gradients inside a channels_last network)
    assert fast[1].is_contiguous(memory_format=torch.channels_last) == channels_last
    convert_modules(module, True)
    with torch.no_grad():  # the inference branch (norms as sqrt of sums of squares)
        torch.testing.assert_close(module(x.contiguous(memory_format=torch.channels_last) if channels_last else x),
                                   plain[0], atol=1e-5, rtol=1e-5)
    assert all(torch.equal(module.state_dict()[name], tensor) for name, tensor in state.items())


TIED_KEYS = [(0, 1), (5, 20), (33, 47)]  # k channel pairs made identical: columns of A that tie exactly


def tied_attention(chained, dim=48, heads=1):
    """A TKSA (the paper's level-1 width) whose k channels come in identical pairs (:data:`TIED_KEYS`): equal qkv
    rows and equal depthwise kernels, so the paired columns of A are equal in both evaluations and every row
    has exact ties, some of them at a top-k boundary."""
    torch.manual_seed(0)
    module = TopKSparseAttention(dim, heads, bias=False, chained_topk=chained)
    with torch.no_grad():
        module.attns.copy_(torch.tensor([0.3, -0.2, 0.5, 0.9]))
        for first, second in TIED_KEYS:
            module.qkv.weight[dim + second] = module.qkv.weight[dim + first]
            module.qkv_dwconv.weight[dim + second] = module.qkv_dwconv.weight[dim + first]
    return module


def _tied_input(size):
    return torch.randn(1, 48, size, size, generator=torch.Generator().manual_seed(size))


@pytest.mark.parametrize('size', [64, 128])
def test_tied_attention_has_exact_ties_in_both_evaluations(size):
    module, x = tied_attention(chained=False), _tied_input(size)
    with torch.no_grad():
        plain_scores = module.attention_scores(x)[0]
        q, k, _ = module.qkv_dwconv(module.qkv(x)).chunk(3, dim=1)
        fast_scores = FastTopKSparseAttention._scores_from_gram(module, q, k)
    boundary_ties = 0
    for scores in (plain_scores, fast_scores):
        for first, second in TIED_KEYS:
            assert torch.equal(scores[..., first], scores[..., second])
        for count in module.counts:  # rows where a tied pair straddles the boundary: the rule decides
            kept = topk_mask(scores, count)
            boundary_ties += sum(int((kept[..., a] != kept[..., b]).sum()) for a, b in TIED_KEYS)
    assert boundary_ties > 0


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('size', [64, 128])
@pytest.mark.parametrize('chained', [False, True])
def test_module_fast_equals_plain_on_exact_ties(chained, size, channels_last):
    """Exact ties at the top-k boundaries (tied k channels; chained masks also choose among exact zeros): both
    evaluations keep the lowest columns, so outputs and gradients agree. Fails with CPU ``torch.topk``'s tie
    order, which depends on the other values of the row."""
    module, x = tied_attention(chained), _tied_input(size)
    plain, fast = _plain_and_fast_results(module, x, channels_last)
    _assert_close_to_scale(fast[0], plain[0], 1e-5, 'output')
    _assert_close_to_scale(fast[1], plain[1], 1e-5, 'input gradient')
    assert plain[2].keys() == fast[2].keys()
    for name, grad in plain[2].items():
        _assert_close_to_scale(fast[2][name], grad, 1e-5, name)
    attn, v = module.attention_scores(x)  # and both keep the entries of the Python reference's tie rule
    reference = (chained_reference if chained else loop_reference)(attn, v, module.counts, module.attns)
    torch.testing.assert_close(plain[0], module.project_out(reference.reshape(x.shape)).detach(), atol=1e-5,
                               rtol=1e-5)


def test_module_chained_equals_literal_reimplementation():
    torch.manual_seed(1)
    module = TopKSparseAttention(24, 2, bias=False, chained_topk=True)
    x = torch.randn(1, 24, 8, 8)
    attn, v = module.attention_scores(x)
    expected = chained_reference(attn, v, module.counts, module.attns).reshape(1, 24, 8, 8)
    torch.testing.assert_close(module(x), module.project_out(expected), atol=1e-5, rtol=1e-5)


def test_scalar_rate_weights_use_drsformer_keys():
    module = TopKSparseAttention(16, 2, bias=False, scalar_rate_weights=True)
    assert {'attn1', 'attn2', 'attn3', 'attn4'} <= set(module.state_dict())
    assert module.rate_weights().shape == (4,)
