"""Depthwise convolutions for the fast paths, with a faster backward on channels_last fp32 CPU tensors.

oneDNN computes the weight gradient of 5x5 and 7x7 depthwise convolutions slowly: for a [2, 255, 128, 128] input
and a 5x5 kernel it takes 55 ms against 7 ms for the forward, and it was the largest cost of a training step. Its
input gradient of dilated depthwise convs is slow too (14 ms against 1.4 ms for the forward of a 7x7 conv with
dilation 2). :func:`depthwise_conv2d` therefore computes, under autograd:

* the forward with PyTorch (oneDNN), as before;
* the input gradient as a forward depthwise conv of the output gradient with the flipped kernel (stride 1 and
  'same' padding make the transposed conv one);
* the weight gradient with rainmer's C kernel (``rainmer/csrc/depthwise_weight_grad.c``, built at first use by
  :mod:`rainmer.utils.native`): 4.7 ms for that 5x5 example, summed in double precision.

Elsewhere (no autograd, NCHW, CUDA, autocast, other dtypes, no C compiler, ``RAINMER_NATIVE=0``) it is ``F.conv2d``.
"""
import ctypes

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from rainmer.utils.native import load_library

MAX_KERNEL = 7  # the C kernel's widest kernel


def _weight_grad_kernel():  # noqa: ANN202
    lib = load_library('depthwise_weight_grad')
    if lib is None:
        return None
    fn = lib.depthwise_weight_grad
    if fn.argtypes is None:
        fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 10
        fn.restype = ctypes.c_int
    return fn


def depthwise_weight_grad(x: Tensor, grad: Tensor, kernel: int, padding: int, dilation: int) -> Tensor:
    """Weight gradient [C, 1, k, k] of a stride-1 depthwise conv of x [N, C, H, W] with output gradient ``grad``
    (both fp32 CPU, made channels_last here) by the C kernel. A registered op (``torch.ops.rainmer``), so that
    FLOP counters and dispatch modes see it."""
    if _weight_grad_kernel() is None:
        raise RuntimeError('The native depthwise kernel is not available (no C compiler or RAINMER_NATIVE=0).')
    return torch.ops.rainmer.depthwise_weight_grad(x, grad, kernel, padding, dilation)


@torch.library.custom_op('rainmer::depthwise_weight_grad', mutates_args=(), device_types='cpu')
def _depthwise_weight_grad_op(x: Tensor, grad: Tensor, kernel: int, padding: int, dilation: int) -> Tensor:
    x = x.contiguous(memory_format=torch.channels_last)
    grad = grad.contiguous(memory_format=torch.channels_last)
    n, c, h, w = x.shape
    out = torch.empty(c, 1, kernel, kernel, dtype=x.dtype)
    status = _weight_grad_kernel()(x.data_ptr(), grad.data_ptr(), out.data_ptr(), n, c, h, w, grad.shape[2],
                                   grad.shape[3], kernel, padding, dilation, torch.get_num_threads())
    if status != 0:
        raise RuntimeError(f'depthwise_weight_grad failed with status {status} (-1: out of memory).')
    return out


@_depthwise_weight_grad_op.register_fake
def _(x: Tensor, grad: Tensor, kernel: int, padding: int, dilation: int) -> Tensor:
    return x.new_empty(x.shape[1], 1, kernel, kernel)


def weight_grad_flops(x_shape: list[int], grad_shape: list[int], kernel: int, *args: int, **kwargs: object) -> int:
    """FLOPs of :func:`depthwise_weight_grad` (a multiply-add = 2): k * k per output-gradient element."""
    return 2 * kernel * kernel * grad_shape[0] * grad_shape[1] * grad_shape[2] * grad_shape[3]


MIN_CHANNELS = 16  # fewer: the C kernel's scalar path, slower than oneDNN
MIN_WORK_3X3 = 1e7  # multiply-adds of an undilated 3x3 conv below which oneDNN's backward is as fast


def _native_applies(x: Tensor, weight: Tensor, padding: int, dilation: int) -> bool:
    if x.dim() != 4 or weight.dim() != 4:
        return False
    channels, kernel = x.shape[1], weight.shape[-1]
    big_enough = channels >= MIN_CHANNELS and (kernel > 3 or dilation > 1 or x.numel() * 9 >= MIN_WORK_3X3)
    return (big_enough and torch.is_grad_enabled() and weight.requires_grad and x.device.type == 'cpu'
            and x.dtype == weight.dtype == torch.float32 and not torch.is_autocast_enabled('cpu')
            and x.is_contiguous(memory_format=torch.channels_last)
            and tuple(weight.shape) == (channels, 1, kernel, kernel) and kernel % 2 == 1 and kernel <= MAX_KERNEL
            and 2 * padding == dilation * (kernel - 1) and _weight_grad_kernel() is not None)


class _DepthwiseConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: int,  # noqa: ANN001
                dilation: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv = (padding, dilation, bias is not None)
        return F.conv2d(x, weight, bias, padding=padding, dilation=dilation, groups=x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # noqa: ANN001
        x, weight = ctx.saved_tensors
        padding, dilation, has_bias = ctx.conv
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # the transposed conv of a stride-1 'same' conv: a conv with the flipped kernel
            grad_x = F.conv2d(grad, weight.flip(-1, -2), padding=padding, dilation=dilation, groups=x.shape[1])
        if ctx.needs_input_grad[1]:
            grad_weight = depthwise_weight_grad(x, grad, weight.shape[-1], padding, dilation)
        if has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=(0, 2, 3))
        return grad_x, grad_weight, grad_bias, None, None


def depthwise_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, padding: int = 0,
                     dilation: int = 1) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding, dilation=dilation, groups=C)`` (stride 1, weight [C, 1, k, k]),
    with the backward described in the module docs where it applies."""
    if _native_applies(x, weight, padding, dilation):
        return _DepthwiseConv2d.apply(x, weight, bias, padding, dilation)
    return F.conv2d(x, weight, bias, padding=padding, dilation=dilation, groups=x.shape[1])


def depthwise_module(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)`` for a depthwise ``nn.Conv2d``; through :func:`depthwise_conv2d` where stride is 1 and padding and
    dilation are square."""
    if conv.stride != (1, 1) or conv.padding_mode != 'zeros' or isinstance(conv.padding, str) \
            or conv.padding[0] != conv.padding[1] or conv.dilation[0] != conv.dilation[1] \
            or conv.groups != conv.in_channels or conv.out_channels != conv.in_channels:
        return conv(x)
    return depthwise_conv2d(x, conv.weight, conv.bias, conv.padding[0], conv.dilation[0])
