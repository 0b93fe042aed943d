"""glibc malloc settings for PyTorch on CPU: reuse freed tensor memory instead of returning it to the kernel.

glibc serves every allocation above its mmap threshold (adaptive, at most 32 MiB) with fresh pages from ``mmap``
and unmaps them on ``free``. Each large activation is then page-faulted and zero-filled by the kernel again at
every step. At 256x256 most of Rainmer's activations are that large, and those page faults took half of the
inference time (docs/speed.md). :func:`tune_malloc` switches ``mmap`` off for allocations (``M_MMAP_MAX = 0``) and
raises the trim threshold, so the heap keeps the memory it freed and the next step reuses it. Peak memory stays
what the step needs; the process just keeps it between steps.

The training/test pipelines, the ``rainmer`` tools and the benchmarks call it; ``RAINMER_MALLOC=default`` keeps
glibc's defaults.
"""
import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers
M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of freed heap


def tune_malloc() -> bool:
    """Apply the settings above; False (and nothing changed) off glibc or with ``RAINMER_MALLOC=default``."""
    if os.environ.get('RAINMER_MALLOC', '').lower() == 'default' or not sys.platform.startswith('linux'):
        return False
    try:
        mallopt = ctypes.CDLL('libc.so.6').mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
