"""One switch between the reference evaluation and the fast one: ``fast: auto | true | false``.

The network classes compute what the public code computes, op for op (the *plain* evaluation). The fast evaluation
(experts folded into their output conv, MSFN without concatenations, TKSA as one 1x1 conv of v, the prompt
projection folded into a matmul, LayerNorm through ``F.layer_norm``, channels_last activations, oneDNN 1x1 convs and
the native depthwise-weight gradient) is a conversion of the same modules, applied here and nowhere else:

* :func:`to_fast` / :func:`to_plain` convert a built network in place (same parameters, same state dict);
* :func:`set_fast` applies the option value; ``auto`` runs the fast evaluation where it was measured faster (fp32 on
  the CPU, outside autocast) and the plain one elsewhere (CUDA, autocast), choosing again at every forward.

``Rainmer``, ``DRSformer`` and ``NeRDRain`` take ``fast`` as a constructor argument (``network_g.fast`` in a YAML),
default ``auto``. docs/architecture.md lists every fast block and the equality tests.
"""
import torch
from torch import Tensor, nn

from rainmer.archs.modules.fastpath import convert_modules, first_block_is_fast, has_fast_blocks
from rainmer.errors import OptionError

_WORDS = {'auto': 'auto', 'true': True, 'on': True, 'yes': True, 'false': False, 'off': False, 'no': False}


def parse_fast_option(value: object) -> str | bool:
    """``'auto'``, True or False from a YAML/CLI value (``auto``, ``true``/``on``, ``false``/``off`` or a bool)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _WORDS:
        return _WORDS[value.strip().lower()]
    raise OptionError(f"network_g.fast: {value!r} is not one of auto, true, false")


def fast_pays_off(x: Tensor) -> bool:
    """Where ``auto`` picks the fast evaluation: fp32 CPU tensors outside autocast (measured in docs/speed.md)."""
    return (x.device.type == 'cpu' and x.dtype == torch.float32 and not torch.is_autocast_enabled('cpu')
            and torch.backends.mkldnn.is_available())


def _first_tensor(args: tuple, kwargs: dict) -> Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            return value
    return None


def _auto_switch(module: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook of ``fast: auto``: convert when the input's device/dtype/autocast asks for the other path."""
    x = _first_tensor(args, kwargs)
    if x is None:
        return
    want = fast_pays_off(x)
    if want != first_block_is_fast(module):  # O(1) per forward: set_fast converts every block together
        convert_modules(module, want)


def set_fast(net: nn.Module, option: object = 'auto') -> nn.Module:
    """Apply a ``fast`` option value to ``net`` (in place; returns it)."""
    option = parse_fast_option(option)
    for hook_id in [key for key, hook in net._forward_pre_hooks.items() if hook is _auto_switch]:
        del net._forward_pre_hooks[hook_id]  # found by identity: also right after a deepcopy or a reload
        net._forward_pre_hooks_with_kwargs.pop(hook_id, None)
    if option == 'auto':
        convert_modules(net, True)
        net.register_forward_pre_hook(_auto_switch, with_kwargs=True)
    else:
        convert_modules(net, option)
    return net


def to_fast(net: nn.Module) -> nn.Module:
    """The fast evaluation from now on, on any device (same parameters)."""
    return set_fast(net, True)


def to_plain(net: nn.Module) -> nn.Module:
    """The reference evaluation from now on (same parameters)."""
    return set_fast(net, False)


def is_fast(net: nn.Module) -> bool:
    """True when ``net`` currently runs its fast evaluation."""
    return has_fast_blocks(net)


def is_auto(net: nn.Module) -> bool:
    """True when ``net`` chooses its evaluation at every forward (``fast: auto``)."""
    return any(hook is _auto_switch for hook in net._forward_pre_hooks.values())
