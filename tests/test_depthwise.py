"""Depthwise convs with the native weight gradient (rainmer.archs.modules.depthwise, rainmer.utils.native)."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

from rainmer.archs.modules import depthwise
from rainmer.archs.modules.depthwise import depthwise_conv2d, depthwise_module, depthwise_weight_grad
from rainmer.utils import native

needs_native = pytest.mark.skipif(native.load_library('depthwise_weight_grad') is None,
                                  reason='no C compiler for the native kernel')


def _channels_last(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).contiguous(memory_format=torch.channels_last)


def _reference_weight_grad(x, grad, kernel, padding, dilation):
    weight = torch.zeros(x.shape[1], 1, kernel, kernel, dtype=torch.float64)
    return torch.ops.aten.convolution_backward(grad.double(), x.double(), weight, None, [1, 1], [padding] * 2,
                                               [dilation] * 2, False, [0, 0], x.shape[1], [False, True, False])[1]


@needs_native
@pytest.mark.parametrize('channels, kernel, dilation, height, width', [
    (5, 3, 1, 6, 9),     # fewer channels than a vector: the scalar path
    (17, 5, 1, 7, 8),    # one block of 16, then an overlapping last block
    (40, 7, 2, 9, 5),    # a block of 32 and an overlapping one; dilated taps outside a narrow image
    (64, 5, 2, 2, 3),    # two blocks of 32; the image is smaller than the kernel
    (48, 3, 1, 11, 4),
])
def test_native_weight_grad_equals_float64_reference(channels, kernel, dilation, height, width):
    torch.manual_seed(0)
    padding = dilation * (kernel - 1) // 2
    x, grad = _channels_last(3, channels, height, width), _channels_last(3, channels, height, width)
    expected = _reference_weight_grad(x, grad, kernel, padding, dilation)
    actual = depthwise_weight_grad(x, grad, kernel, padding, dilation)
    assert actual.shape == (channels, 1, kernel, kernel) and actual.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected, atol=1e-5, rtol=1e-5)
    # NCHW inputs are made channels_last first, with the same result
    torch.testing.assert_close(depthwise_weight_grad(x.contiguous(), grad.contiguous(), kernel, padding, dilation),
                               actual)


@needs_native
def test_native_weight_grad_uses_every_thread_count():
    torch.manual_seed(0)
    x, grad = _channels_last(2, 33, 10, 10), _channels_last(2, 33, 10, 10)
    expected = _reference_weight_grad(x, grad, 5, 2, 1)
    for threads in (1, 3, 64):  # more threads than output rows: clamped
        with _threads(threads):
            torch.testing.assert_close(depthwise_weight_grad(x, grad, 5, 2, 1).double(), expected, atol=1e-5, rtol=1e-5)


class _threads:
    def __init__(self, count: int) -> None:
        self.count, self.before = count, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.count)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.before)


@needs_native
@pytest.mark.parametrize('kernel, dilation, bias', [(3, 2, True), (5, 1, False), (7, 2, True)])
def test_depthwise_conv2d_equals_conv2d_forward_and_backward(kernel, dilation, bias):
    torch.manual_seed(0)
    padding = dilation * (kernel - 1) // 2
    x = _channels_last(2, 20, 9, 7)
    weight, bias_ = torch.randn(20, 1, kernel, kernel), torch.randn(20) if bias else None
    results = []
    for run in (depthwise_conv2d, lambda *a: F.conv2d(*a[:3], padding=padding, dilation=dilation, groups=20)):
        leaves = [t.detach().clone().requires_grad_(True) for t in (x, weight, bias_) if t is not None]
        out = run(*leaves, *([None] if not bias else []), padding, dilation)
        results.append((out, leaves))
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
    (out, leaves), (expected, expected_leaves) = results
    assert type(out.grad_fn).__name__ == '_DepthwiseConv2dBackward'
    assert type(expected.grad_fn).__name__ == 'ConvolutionBackward0'
    torch.testing.assert_close(out, expected)
    for leaf, expected_leaf in zip(leaves, expected_leaves):
        torch.testing.assert_close(leaf.grad, expected_leaf.grad, atol=1e-5, rtol=1e-5)


@needs_native
def test_depthwise_conv2d_needs_no_input_gradient():
    x, weight = _channels_last(1, 16, 6, 6), torch.randn(16, 1, 5, 5, requires_grad=True)
    out = depthwise_conv2d(x, weight, None, 2)
    assert type(out.grad_fn).__name__ == '_DepthwiseConv2dBackward'
    out.sum().backward()
    expected = _reference_weight_grad(x, torch.ones(1, 16, 6, 6), 5, 2, 1)
    torch.testing.assert_close(weight.grad.double(), expected, atol=1e-5, rtol=1e-5)


def test_depthwise_conv2d_is_conv2d_where_the_kernel_does_not_apply():
    weight = torch.randn(16, 1, 5, 5, requires_grad=True)
    cases = {
        'NCHW input': (torch.randn(1, 16, 5, 5), weight, 2),
        'no autograd': (_channels_last(1, 16, 5, 5), weight.detach(), 2),
        'not "same" padding': (_channels_last(1, 16, 5, 5), weight, 0),
        'kernel wider than 7': (_channels_last(1, 16, 12, 12), torch.randn(16, 1, 9, 9, requires_grad=True), 4),
        'float64': (_channels_last(1, 16, 5, 5).double(), weight.detach().double().requires_grad_(), 2),
        'fewer than 16 channels': (_channels_last(1, 15, 5, 5), torch.randn(15, 1, 5, 5, requires_grad=True), 2),
        'small undilated 3x3': (_channels_last(1, 16, 5, 5), torch.randn(16, 1, 3, 3, requires_grad=True), 1),
    }
    for name, (x, w, padding) in cases.items():
        out = depthwise_conv2d(x, w, None, padding)
        assert type(out.grad_fn).__name__ != '_DepthwiseConv2dBackward', name
        torch.testing.assert_close(out, F.conv2d(x, w, padding=padding, groups=x.shape[1]), msg=name)
    # a large undilated 3x3 conv does take the native backward
    x = _channels_last(1, 80, 128, 128)
    assert type(depthwise_conv2d(x, torch.randn(80, 1, 3, 3, requires_grad=True), None, 1).grad_fn).__name__ \
        == '_DepthwiseConv2dBackward'


def test_depthwise_module_keeps_strided_convs_as_they_are():
    conv = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
    x = _channels_last(1, 8, 6, 6)
    torch.testing.assert_close(depthwise_module(conv, x), conv(x))


def test_native_switch_off_falls_back_to_pytorch(monkeypatch):
    monkeypatch.setenv('RAINMER_NATIVE', '0')
    native.load_library.cache_clear()
    try:
        assert native.load_library('depthwise_weight_grad') is None
        x, weight = _channels_last(1, 16, 5, 5), torch.randn(16, 1, 5, 5, requires_grad=True)
        out = depthwise_conv2d(x, weight, None, 2)
        assert type(out.grad_fn).__name__ == 'ConvolutionBackward0'
        with pytest.raises(RuntimeError, match='RAINMER_NATIVE=0'):
            depthwise_weight_grad(x, x, 5, 2, 1)
    finally:
        native.load_library.cache_clear()


def test_library_is_built_once_into_the_cache(monkeypatch, tmp_path):
    if native.load_library('depthwise_weight_grad') is None:
        pytest.skip('no C compiler')
    monkeypatch.setenv('RAINMER_CACHE', str(tmp_path))
    native.load_library.cache_clear()
    try:
        assert native.load_library('depthwise_weight_grad') is not None
        built = list(tmp_path.glob('depthwise_weight_grad-*.so'))
        assert len(built) == 1 and not list(tmp_path.glob('*.tmp*'))
        stamp = built[0].stat().st_mtime_ns
        native.load_library.cache_clear()
        assert native.load_library('depthwise_weight_grad') is not None
        assert built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt
    finally:
        native.load_library.cache_clear()


def test_failed_build_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv('RAINMER_CACHE', str(tmp_path))
    monkeypatch.setenv('CC', os.path.join(str(tmp_path), 'no-such-compiler'))
    native.load_library.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            assert native.load_library('depthwise_weight_grad') is None
        assert any('could not build' in str(w.message) and 'depthwise_weight_grad.c' in str(w.message)
                   for w in caught)
        assert depthwise._weight_grad_kernel() is None
        assert list(tmp_path.iterdir()) == []  # no half-written library left behind
    finally:
        native.load_library.cache_clear()


def test_unknown_kernel_name_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match='no_such_kernel'):
        native.load_library('no_such_kernel')


def test_weight_grad_op_has_shapes_without_data():
    """The registered op's fake implementation: shape inference for tracing (torch.compile, meta tensors)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        x = torch.empty(2, 8, 5, 6)
        assert torch.ops.rainmer.depthwise_weight_grad(x, x, 7, 6, 2).shape == (8, 1, 7, 7)


def test_cache_dir_without_a_home_directory(monkeypatch):
    monkeypatch.delenv('RAINMER_CACHE', raising=False)
    monkeypatch.delenv('XDG_CACHE_HOME', raising=False)

    def no_home() -> None:
        raise RuntimeError('Could not determine home directory.')

    monkeypatch.setattr(native.Path, 'home', staticmethod(no_home))
    assert native.cache_dir().name == 'rainmer-cache'
    monkeypatch.setenv('XDG_CACHE_HOME', '/somewhere')
    assert str(native.cache_dir()) == '/somewhere/rainmer'
