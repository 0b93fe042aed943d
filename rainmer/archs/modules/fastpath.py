"""The registry behind the plain <-> fast conversion of the networks (:mod:`rainmer.archs.fast`).

A block whose evaluation can be made faster keeps its plain class (the reference computation, op for op) and
registers a *fast variant* with :func:`fast_variant`: a subclass that only overrides methods, with no parameters,
buffers or state of its own. Converting a module is then changing its class: parameters, buffers, state-dict keys
and gradients are the plain module's, and converting back restores the plain evaluation exactly.
"""
from collections.abc import Callable

from torch import nn

_FAST_OF: dict[type, type] = {}
_PLAIN_OF: dict[type, type] = {}


def fast_variant(plain: type[nn.Module]) -> Callable[[type], type]:
    """Class decorator: register the decorated subclass of ``plain`` as its fast evaluation."""

    def register(fast: type) -> type:
        if not issubclass(fast, plain):
            raise TypeError(f'{fast.__name__} must subclass {plain.__name__} to be its fast variant')
        if '__init__' in vars(fast):
            raise TypeError(f'{fast.__name__} must not define __init__: a fast variant shares the plain state')
        _FAST_OF[plain] = fast
        _PLAIN_OF[fast] = plain
        return fast

    return register


def convert_modules(net: nn.Module, fast: bool) -> int:
    """Switch every registered block of ``net`` to its fast (or plain) class; returns how many changed."""
    table = _FAST_OF if fast else _PLAIN_OF
    changed = 0
    for module in net.modules():
        target = table.get(type(module))
        if target is not None:
            module.__class__ = target
            changed += 1
    return changed


def has_fast_blocks(net: nn.Module) -> bool:
    """True when some block of ``net`` runs its fast variant."""
    return any(type(module) in _PLAIN_OF for module in net.modules())


def first_block_is_fast(net: nn.Module) -> bool | None:
    """The state of the first convertible block of ``net`` (None without one): after a whole-network conversion every
    block shares it, and the first is found after a few modules (the patch embedding), not a walk of the network."""
    for module in net.modules():
        if type(module) in _PLAIN_OF:
            return True
        if type(module) in _FAST_OF:
            return False
    return None


def convertible(net: nn.Module) -> bool:
    """True when ``net`` holds a block with a registered fast variant (plain or converted)."""
    return any(type(module) in _FAST_OF or type(module) in _PLAIN_OF for module in net.modules())
