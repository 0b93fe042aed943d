"""1x1 convolutions on oneDNN (rainmer.archs.modules.ops) and the malloc settings (rainmer.utils.allocator)."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import ctypes

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from rainmer.archs.modules import ops
from rainmer.archs.modules.ops import conv1x1, conv1x1_add_, conv1x1_per_image, is_channels_last, use_onednn
from rainmer.utils import allocator


def _random(*shape: int, channels_last: bool) -> torch.Tensor:
    x = torch.randn(*shape)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize('channels_last', [False, True])
def test_conv1x1_equals_conv2d_forward_and_backward(channels_last):
    torch.manual_seed(0)
    x = _random(2, 6, 5, 7, channels_last=channels_last)
    weight, bias = torch.randn(9, 6), torch.randn(9)
    grads = []
    for run in (lambda x_, w_, b_: F.conv2d(x_, w_[:, :, None, None], b_), conv1x1):
        leaves = [t.detach().clone().requires_grad_(True) for t in (x, weight, bias)]
        out = run(*leaves)
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        grads.append((out.detach(), *(leaf.grad for leaf in leaves)))
    for expected, actual in zip(*grads):
        torch.testing.assert_close(actual, expected)
    assert grads[1][0].is_contiguous(memory_format=torch.channels_last) == channels_last


def test_onednn_is_used_for_fp32_cpu_only():
    x = torch.randn(1, 4, 3, 3)
    assert use_onednn(x) == torch.backends.mkldnn.is_available()
    assert not use_onednn(x.double())
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not use_onednn(x)
        out = conv1x1(x, torch.randn(5, 4))  # falls back to F.conv2d, which autocast runs in bf16
    assert out.dtype == torch.bfloat16
    with torch.backends.mkldnn.flags(enabled=False):
        assert not use_onednn(x)


@pytest.mark.parametrize('channels_last', [False, True])
def test_conv1x1_per_image_uses_each_images_weight_and_accumulates(channels_last):
    torch.manual_seed(0)
    x = _random(3, 4, 5, 6, channels_last=channels_last)
    weight = torch.randn(3, 7, 4)
    expected = torch.stack([F.conv2d(x[i:i + 1], weight[i, :, :, None, None])[0] for i in range(3)])
    out = conv1x1_per_image(x, weight)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(conv1x1_per_image(x, weight, accumulate=out.clone()), 2 * expected)
    torch.testing.assert_close(conv1x1_per_image(x, weight[0]), F.conv2d(x, weight[0, :, :, None, None]))


class _OpNames(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('out_layout', ['same', 'other', 'strided'])
@pytest.mark.parametrize('channels_last', [False, True])
def test_conv1x1_add_accumulates_in_place_with_one_fused_op(channels_last, out_layout):
    torch.manual_seed(0)
    x = _random(2, 6, 5, 7, channels_last=channels_last)
    weight = torch.randn(9, 6)
    base = _random(2, 9, 5, 7, channels_last=channels_last if out_layout != 'other' else not channels_last)
    out = torch.randn(2, 9, 5, 14)[..., ::2].copy_(base) if out_layout == 'strided' else base.clone()
    expected = base + F.conv2d(x, weight[:, :, None, None])
    with torch.no_grad(), _OpNames() as ops_called:
        result = conv1x1_add_(out, x, weight)
    assert result is out or result.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out, expected)
    fused = 'mkldnn._convolution_pointwise_.binary' in ' '.join(ops_called.names)
    assert fused == (out_layout == 'same' and torch.backends.mkldnn.is_available())


@pytest.mark.parametrize('layout', ['nchw', 'channels_last', 'channel_slice'])
@pytest.mark.parametrize('per_image_threshold', [0, None])
def test_conv1x1_per_image_accumulates_under_autograd_without_copies(layout, per_image_threshold, monkeypatch):
    """Two accumulated per-image convs: values and all gradients equal einsum's. Above the per-image work
    threshold the graph holds no CopySlices (autograd's in-place accumulation into a view, which clones the whole
    gradient); below it, one batched matmul."""
    if per_image_threshold is not None:
        monkeypatch.setattr(ops, 'MIN_PER_IMAGE_WORK', per_image_threshold)
    torch.manual_seed(0)
    base = _random(3, 12, 5, 6, channels_last=layout != 'nchw')
    inputs = [base[:, :4], base[:, 4:8]] if layout == 'channel_slice' else [base[:, :4].contiguous(
        memory_format=torch.channels_last if layout == 'channels_last' else torch.contiguous_format)] * 2
    assert is_channels_last(inputs[0]) == (layout != 'nchw')
    weights = [torch.randn(3, 7, 4) for _ in inputs]
    results = []
    for per_image in (True, False):
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs + weights]
        xs, ws = leaves[:2], leaves[2:]
        if per_image:
            out = conv1x1_per_image(xs[1], ws[1], accumulate=conv1x1_per_image(xs[0], ws[0]))
            assert (type(out.grad_fn).__name__ == '_PerImageConv1x1Backward') == (per_image_threshold == 0)
        else:
            out = sum(torch.einsum('boi,bihw->bohw', w, x) for x, w in zip(xs, ws))
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        results.append([out.detach()] + [leaf.grad for leaf in leaves])
    for actual, expected in zip(*results):
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_is_channels_last_covers_channel_slices():
    x = torch.randn(2, 6, 4, 5)
    assert not is_channels_last(x)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert is_channels_last(cl) and is_channels_last(cl[:, 2:4]) and not is_channels_last(x[:, 2:4])
    assert not is_channels_last(torch.randn(2, 6, 1, 1).contiguous(memory_format=torch.channels_last))


def _mallopt_calls(monkeypatch) -> list:
    calls = []

    class FakeLibc:
        class mallopt:  # noqa: N801 (stands in for the C function)
            argtypes = None

            def __new__(cls, param, value):
                calls.append((param, value))
                return 1

    monkeypatch.setattr(ctypes, 'CDLL', lambda name: FakeLibc)
    monkeypatch.setattr(allocator.sys, 'platform', 'linux')
    return calls


def test_tune_malloc_switches_mmap_off_and_keeps_freed_memory(monkeypatch):
    monkeypatch.delenv('RAINMER_MALLOC', raising=False)
    calls = _mallopt_calls(monkeypatch)
    assert allocator.tune_malloc()
    assert calls == [(allocator.M_MMAP_MAX, 0), (allocator.M_TRIM_THRESHOLD, 2**31 - 1)]


def test_tune_malloc_can_be_switched_off(monkeypatch):
    calls = _mallopt_calls(monkeypatch)
    monkeypatch.setenv('RAINMER_MALLOC', 'default')
    assert not allocator.tune_malloc()
    assert calls == []


def test_tune_malloc_without_glibc_changes_nothing(monkeypatch):
    monkeypatch.delenv('RAINMER_MALLOC', raising=False)

    def no_libc(name):
        raise OSError(name)

    monkeypatch.setattr(ctypes, 'CDLL', no_libc)
    assert not allocator.tune_malloc()
