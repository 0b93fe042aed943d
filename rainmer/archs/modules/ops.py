"""Ops of the fast paths: 1x1 convolutions always on oneDNN for fp32 CPU tensors, fused conv+ReLU and add+ReLU,
per-image 1x1 convolutions (with an autograd Function that keeps them on oneDNN), and memory-layout helpers.

PyTorch sends a 1x1 convolution of a single image on a single thread (and every ``bmm``/``matmul``) to its GEMM
library, MKL. MKL picks its AVX2 kernels on AMD CPUs, while oneDNN (PyTorch's ``mkldnn_convolution``) uses
AVX-512 there: on the project's AMD EPYC a 96 -> 510 channel 1x1 conv of a 128x128 image takes 23 ms through
``F.conv2d`` / ``matmul`` and 8.4 ms through oneDNN, with identical results (scripts/benchmark.py measures the
whole network). Everywhere else (CUDA, autocast, other dtypes, oneDNN disabled) these fall back to ``F.conv2d``.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from rainmer.archs.modules.depthwise import depthwise_conv2d

# multiply-adds per image below which one batched matmul beats per-image oneDNN convs under autograd
MIN_PER_IMAGE_WORK = 10_000_000


def use_onednn(x: Tensor) -> bool:
    """True where :func:`conv1x1` runs oneDNN directly: fp32 CPU tensors outside autocast."""
    return (x.device.type == 'cpu' and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and not torch.is_autocast_enabled('cpu'))


def conv1x1(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """1x1 convolution of x [B, I, H, W] with weight [O, I] or [O, I, 1, 1]; keeps x's memory layout."""
    if weight.dim() == 2:
        weight = weight[:, :, None, None]
    if use_onednn(x) and weight.dtype == x.dtype:
        return torch.mkldnn_convolution(x, weight.contiguous(), bias, (0, 0), (1, 1), (1, 1), 1)
    return F.conv2d(x, weight, bias)


def conv1x1_add_(out: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """``out += conv1x1(x, weight)`` in place; one oneDNN op (its sum post-op, no temporary) where :func:`fusable`
    and ``out`` is dense in x's memory layout."""
    layout = memory_format_of(x)
    if fusable(x, weight, out) and out.is_contiguous(memory_format=layout) and x.is_contiguous(memory_format=layout):
        weight = weight.reshape(*weight.shape[:2], 1, 1).contiguous()
        return torch.ops.mkldnn._convolution_pointwise_.binary(out, x, weight, None, [0, 0], [1, 1], [1, 1], 1,
                                                               'add', 1.0, None, [], None)
    return out.add_(conv1x1(x, weight))


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def fusable(x: Tensor, *tensors: Tensor | None) -> bool:
    """True where oneDNN's fused ops may run: fp32 CPU without autograd through ``x`` or ``tensors``."""
    return (use_onednn(x) and all(t is None or t.dtype == x.dtype for t in tensors)
            and not _needs_grad(x, *tensors))


def conv_relu(x: Tensor, weight: Tensor, bias: Tensor | None = None, groups: int = 1) -> Tensor:
    """``ReLU(conv(x))`` with 'same' padding (odd kernels; weight [O, I/groups, k, k], or [O, I] for a 1x1 conv);
    one oneDNN op (ReLU post-op) where :func:`fusable`."""
    if weight.dim() == 2:
        weight = weight[:, :, None, None]
    padding = weight.shape[-1] // 2
    if fusable(x, weight, bias):
        return torch.ops.mkldnn._convolution_pointwise(x, weight.contiguous(), bias, [padding] * 2, [1, 1], [1, 1],
                                                       groups, 'relu', [], '')
    if groups == 1 and padding == 0:
        return F.relu(conv1x1(x, weight, bias), inplace=True)
    if groups == x.shape[1] == weight.shape[0]:
        return F.relu(depthwise_conv2d(x, weight, bias, padding), inplace=True)
    return F.relu(F.conv2d(x, weight, bias, padding=padding, groups=groups), inplace=True)


def add_relu(a: Tensor, b: Tensor) -> Tensor:
    """``ReLU(a + b)``; in one pass where :func:`fusable`."""
    if fusable(a, b):
        return torch.ops.aten._add_relu(a, b)
    return F.relu(a + b, inplace=True)


def is_channels_last(x: Tensor) -> bool:
    """True where channels are the innermost dimension of a 4-D x with C > 1 and H * W > 1: channels_last tensors
    and their channel slices."""
    return x.dim() == 4 and x.stride(1) == 1 and x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1


def memory_format_of(x: Tensor) -> torch.memory_format:
    """``torch.channels_last`` for :func:`is_channels_last` tensors, else ``torch.contiguous_format``."""
    return torch.channels_last if is_channels_last(x) else torch.contiguous_format


def conv1x1_per_image(x: Tensor, weight: Tensor, accumulate: Tensor | None = None) -> Tensor:
    """1x1 convolution of x [B, I, H, W] with a weight per image [B, O, I] (or one [O, I] for all) on either memory
    layout; with ``accumulate`` (a previous result of this function), the result is added to it in place.

    One image or one weight: one :func:`conv1x1`. Several images on oneDNN: one conv per image; with autograd
    (and at least ``MIN_PER_IMAGE_WORK`` multiply-adds per image) through :class:`_PerImageConv1x1`, whose
    backward is per-image convs too and passes the accumulated gradient on without copies (autograd's own in-place
    accumulation into a view clones the whole gradient). Elsewhere (small images, CUDA, autocast): one batched
    matmul.
    """
    if weight.dim() == 2 or x.shape[0] == 1:
        weight = weight if weight.dim() == 2 else weight[0]
        return conv1x1(x, weight) if accumulate is None else conv1x1_add_(accumulate, x, weight)
    if (use_onednn(x) and _needs_grad(x, weight, accumulate) and weight.dtype == x.dtype
            and x.shape[2] * x.shape[3] * weight.shape[1] * weight.shape[2] >= MIN_PER_IMAGE_WORK):
        return _PerImageConv1x1.apply(x, weight, accumulate)
    if fusable(x, weight, accumulate):
        if accumulate is None:
            return torch.cat([conv1x1(x[index:index + 1], weight[index]) for index in range(x.shape[0])])
        for index in range(x.shape[0]):
            conv1x1_add_(accumulate[index:index + 1], x[index:index + 1], weight[index])
        return accumulate
    return _batched_matmul(x, weight, accumulate)


def _batched_matmul(x: Tensor, weight: Tensor, accumulate: Tensor | None) -> Tensor:
    """:func:`conv1x1_per_image` as ``bmm``/``baddbmm_`` on :func:`as_matrices` views (channels_last stays
    channels_last)."""
    if accumulate is not None and is_channels_last(accumulate) != is_channels_last(x):
        return accumulate.add_(_batched_matmul(x, weight, None))
    b, _, h, w = x.shape
    pixels_first = is_channels_last(x)
    dtype = x.dtype if accumulate is None else accumulate.dtype
    matrices, weight = as_matrices(x).to(dtype), weight.to(dtype)
    # channels_last: [B, HW, I] @ [B, I, O]; NCHW: [B, O, I] @ [B, I, HW]
    operands = (matrices, weight.transpose(1, 2)) if pixels_first else (weight, matrices)
    if accumulate is not None:
        as_matrices(accumulate).baddbmm_(*operands)  # a view: accumulates in place
        return accumulate
    out = torch.bmm(*operands)
    return out.view(b, h, w, -1).permute(0, 3, 1, 2) if pixels_first else out.view(b, -1, h, w)


def as_matrices(x: Tensor) -> Tensor:
    """x [B, C, H, W] as matrices: [B, HW, C] for channels_last, else [B, C, HW] (views, also of channel
    slices)."""
    b, c = x.shape[:2]
    if is_channels_last(x):
        return x.permute(0, 2, 3, 1).reshape(b, -1, c)
    return x.reshape(b, c, -1)


class _PerImageConv1x1(torch.autograd.Function):
    """:func:`conv1x1_per_image` on oneDNN under autograd; an ``accumulate`` input is updated in place."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, accumulate: Tensor | None) -> Tensor:  # noqa: ANN001
        out = conv1x1_per_image(x, weight, accumulate)  # grad mode is off here: the per-image oneDNN path
        if accumulate is not None:
            ctx.mark_dirty(accumulate)
        ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # noqa: ANN001
        x, weight = ctx.saved_tensors
        layout = memory_format_of(x)
        grad = grad.contiguous(memory_format=layout)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = conv1x1_per_image(grad, weight.transpose(1, 2))
        if ctx.needs_input_grad[1]:
            grad_rows, x_rows = as_matrices(grad), as_matrices(x)
            if layout == torch.channels_last:  # [B, HW, O]^T @ [B, HW, I]
                grad_weight = torch.bmm(grad_rows.transpose(1, 2), x_rows)
            else:  # [B, O, HW] @ [B, I, HW]^T
                grad_weight = torch.bmm(grad_rows, x_rows.transpose(1, 2))
        return grad_x, grad_weight, grad if ctx.needs_input_grad[2] else None
