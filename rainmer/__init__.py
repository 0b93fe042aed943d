"""Rainmer (ACM MM 2024) deraining as BasicSR plugin modules.

Importing this package first makes BasicSR 1.4.2 work on today's torch/torchvision
(:mod:`rainmer.compat`), then registers every arch, model, loss, metric and dataset in BasicSR's registries.
"""
from rainmer.compat import apply_toolbox_compat
from rainmer.errors import UserError, install_one_line_excepthook

try:
    apply_toolbox_compat()
except UserError:
    install_one_line_excepthook()  # `basicsr train` and `rainmer ...` import this before their guard runs
    raise

from rainmer import archs, data, losses, metrics, models  # noqa: E402,F401  (importing registers the classes)
from rainmer.version import __version__  # noqa: E402,F401
