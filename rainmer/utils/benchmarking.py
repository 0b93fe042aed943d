"""What the benchmark scripts share: the plain/fast conversion of one network, device synchronisation, the peak
memory of one step, FLOP counting, forward time per network component, a proxy training loss."""
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from rainmer.archs.fast import to_fast, to_plain
from rainmer.archs.modules.contrastive import degradation_detail_logits
from rainmer.archs.modules.depthwise import weight_grad_flops

VARIANTS = ('plain', 'fast')


def set_variant(net: nn.Module, variant: str) -> nn.Module:
    """Convert ``net`` in place to its 'plain' (reference, :func:`~rainmer.archs.fast.to_plain`) or 'fast'
    (:func:`~rainmer.archs.fast.to_fast`) evaluation: same parameters, so both variants of a benchmark are one
    network. Returns ``net``."""
    if variant not in VARIANTS:
        raise ValueError(f'variant must be one of {VARIANTS}, got {variant!r}')
    return to_fast(net) if variant == 'fast' else to_plain(net)


def _onednn_conv_flops(x_shape: list[int], w_shape: list[int], *args: object, out_shape: list[int],
                       **kwargs: object) -> int:
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


def _onednn_conv_add_flops(other_shape: list[int], x_shape: list[int], w_shape: list[int], *args: object,
                           out_shape: list[int], **kwargs: object) -> int:
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


def flop_counter(custom_mapping: Mapping | None = None) -> FlopCounterMode:
    """A FlopCounterMode that also counts the fast paths' direct oneDNN convolutions and rainmer's native
    depthwise weight gradient (torch's registry knows neither; a multiply-add = 2 FLOPs)."""
    mapping = {torch.ops.aten.mkldnn_convolution: _onednn_conv_flops,
               torch.ops.mkldnn._convolution_pointwise: _onednn_conv_flops,
               torch.ops.mkldnn._convolution_pointwise_: _onednn_conv_add_flops,  # conv summed into an output
               torch.ops.rainmer.depthwise_weight_grad: weight_grad_flops}
    return FlopCounterMode(display=False, custom_mapping={**mapping, **(custom_mapping or {})})


def proc_status_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``, ...) in KiB (Linux)."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on CPU."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def peak_memory_mib(step: Callable[[], object], device: torch.device) -> float:
    """Run ``step`` once and return the extra memory it needed: on CPU the resident-set high-water mark minus the
    resident set before (meaningful as the first large step of a fresh process), on CUDA the peak allocation
    minus the allocation before."""
    synchronize(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    before = proc_status_kib('VmRSS')
    step()
    return (proc_status_kib('VmHWM') - before) / 1024


@contextlib.contextmanager
def component_timer(net: nn.Module, components: Mapping[str, type | tuple[type, ...]],
                    device: torch.device) -> Iterator[dict[str, list[float]]]:
    """Forward time of every module of each component class, while the context is open.

    Yields ``name -> [seconds, calls]``, summed over the modules of that class (inclusive times from forward
    hooks, the device synchronised at each boundary). Components must not nest in one another.
    """
    totals = {name: [0.0, 0] for name in components}
    starts: dict[int, float] = {}
    handles = []

    def hooks(name: str) -> tuple[Callable, Callable]:
        def before(module: nn.Module, *args: object) -> None:
            synchronize(device)
            starts[id(module)] = time.perf_counter()

        def after(module: nn.Module, *args: object) -> None:
            synchronize(device)
            totals[name][0] += time.perf_counter() - starts.pop(id(module))
            totals[name][1] += 1
        return before, after

    for module in net.modules():
        name = next((name for name, kind in components.items() if isinstance(module, kind)), None)
        if name is not None:
            before, after = hooks(name)
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        yield totals
    finally:
        for handle in handles:
            handle.remove()


def proxy_training_loss(restored: Tensor, logits: Mapping[str, Tensor], gt: Tensor) -> Tensor:
    """L1 + 0.1 x (InfoNCE of the chromatic and of the joint degradation+detail logits), in fp32: a training
    step's loss shape without the toolbox's loss registry."""
    target = torch.zeros(restored.shape[0], dtype=torch.long, device=restored.device)
    contrast = sum(F.cross_entropy(group.float(), target)
                   for group in (logits['chromatic'], degradation_detail_logits(logits)))
    return F.l1_loss(restored.float(), gt) + 0.1 * contrast
