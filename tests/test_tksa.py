import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
from fractions import Fraction

import pytest
import torch

from rainmer.archs.modules.tksa import (
    TopKSparseAttention,
    _keep_topk,
    sparse_attention_fast,
    sparse_attention_plain,
    topk_counts,
)

COUNTS = [6, 8, 9, 9]  # C = 12 with the rates 1/2, 2/3, 3/4, 4/5


def loop_reference(attn, v, counts, weights):
    """DRSformer's TKSA written out: an independent top-k mask of A per rate, one matmul per rate."""
    b, heads, c, _ = attn.shape
    out = 0
    for count, weight in zip(counts, weights):
        mask = torch.zeros(b, heads, c, c)
        index = torch.topk(attn, k=count, dim=-1, largest=True)[1]
        mask.scatter_(-1, index, 1.0)
        masked = torch.where(mask > 0, attn, torch.full_like(attn, float('-inf')))
        out = out + (masked.softmax(dim=-1) @ v) * weight
    return out


def chained_reference(attn, v, counts, weights):
    """The public Rainmer code's loop: the masked, soft-maxed matrix is the next rate's top-k input."""
    b, heads, c, _ = attn.shape
    outs = []
    for count, weight in zip(counts, weights):
        mask = torch.zeros(b, heads, c, c)
        index = torch.topk(attn, k=count, dim=-1, largest=True)[1]
        mask.scatter_(-1, index, 1.0)
        attn = torch.where(mask > 0, attn, torch.full_like(attn, float('-inf')))
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


@pytest.mark.parametrize('columns,count', [(48, 24), (48, 38), (96, 76), (128, 2)])  # (128, 2): ATen's partial sort
def test_unsorted_topk_keeps_the_same_entries_with_ties(columns, count):
    generator = torch.Generator().manual_seed(columns + count)
    scores = torch.randint(0, 4, (2, 8, 48, columns), generator=generator).float()  # many ties per row
    scores[0, 0] = 0.0  # a row of equal values: the choice is ATen's tie order alone
    expected = _keep_topk(scores, count)
    torch.testing.assert_close(_keep_topk(scores, count, sorted=False), expected, rtol=0, atol=0)


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


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('chained', [False, True])
def test_module_fast_equals_plain_with_same_weights(chained, channels_last):
    torch.manual_seed(0)
    fast = TopKSparseAttention(24, 2, bias=False, chained_topk=chained, fast=True)
    plain = TopKSparseAttention(24, 2, bias=False, chained_topk=chained, fast=False)
    with torch.no_grad():
        fast.attns.copy_(torch.tensor([0.3, -0.2, 0.5, 0.9]))
        fast.temperature.mul_(3)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(2, 24, 9, 11)
    x_fast = (x.contiguous(memory_format=torch.channels_last) if channels_last else x.clone()).requires_grad_()
    x_plain = x.clone().requires_grad_()
    out_fast, out_plain = fast(x_fast), plain(x_plain)
    torch.testing.assert_close(out_fast, out_plain, atol=1e-5, rtol=1e-5)
    out_fast.square().sum().backward()
    out_plain.square().sum().backward()
    torch.testing.assert_close(x_fast.grad, x_plain.grad, atol=1e-4, rtol=1e-4)
    # the gradient keeps the input's layout (no NCHW gradients inside a channels_last network)
    assert x_fast.grad.is_contiguous(memory_format=torch.channels_last) == channels_last
    for (name, p_fast), p_plain in zip(fast.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p_fast.grad, p_plain.grad, atol=1e-4, rtol=1e-4, msg=name)
    with torch.no_grad():  # the inference branch (norms as sqrt of sums of squares)
        torch.testing.assert_close(fast(x_fast), out_plain, atol=1e-5, rtol=1e-5)


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
