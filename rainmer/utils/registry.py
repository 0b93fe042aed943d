"""Registries that BasicSR 1.4.2 lacks (it chooses schedulers with a hard-coded if/else)."""
from basicsr.utils.registry import Registry

SCHEDULER_REGISTRY = Registry('scheduler')
