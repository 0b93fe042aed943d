"""Rainmer (ACM MM 2024) deraining as BasicSR plugin modules.

Importing this package first makes BasicSR 1.4.2 work on today's torch/torchvision
(:mod:`rainmer.compat`), then registers every arch, model, loss, metric and dataset in BasicSR's registries.
"""
from rainmer.compat import apply_toolbox_compat

apply_toolbox_compat()

from rainmer import archs, data, losses, metrics, models  # noqa: E402,F401  (importing registers the classes)
from rainmer.version import __version__  # noqa: E402,F401
