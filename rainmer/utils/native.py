"""Build and load rainmer's C kernels (``rainmer/csrc/*.c``) at first use with the system C compiler.

Each kernel is a plain C file without Python or PyTorch headers. It is compiled in about a second with
``-O3 -march=native -fopenmp``, cached as ``<name>-<hash>.so`` (the hash covers the source, the compiler, the
flags and the CPU) in ``$RAINMER_CACHE`` (default ``~/.cache/rainmer``) and called through ctypes. Without a
compiler, or with ``RAINMER_NATIVE=0``, :func:`load_library` returns None and callers use PyTorch's own kernels
(one warning says so).
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from functools import cache
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent.parent / 'csrc'
BASE_FLAGS = ('-O3', '-shared', '-fPIC')
# tried in this order. With -fopenmp the library needs libgomp.so.1, which PyTorch has loaded already, so its
# parallel regions run on PyTorch's OpenMP pool (no threads of its own competing with PyTorch's for the cores).
VARIANT_FLAGS = (('-march=native', '-fopenmp'), ('-fopenmp',), ('-march=native',), ())


def cache_dir() -> Path:
    """Where built libraries are kept: ``$RAINMER_CACHE``, else ``$XDG_CACHE_HOME/rainmer`` or ``~/.cache/rainmer``."""
    if os.environ.get('RAINMER_CACHE'):
        return Path(os.environ['RAINMER_CACHE'])
    if os.environ.get('XDG_CACHE_HOME'):
        return Path(os.environ['XDG_CACHE_HOME']) / 'rainmer'
    try:
        return Path.home() / '.cache' / 'rainmer'
    except RuntimeError:  # no home directory (some service accounts)
        return Path(tempfile.gettempdir()) / 'rainmer-cache'


def native_enabled() -> bool:
    """False with ``RAINMER_NATIVE=0``."""
    return os.environ.get('RAINMER_NATIVE', '1').strip().lower() not in ('0', 'false', 'no', 'off')


def _cpu_signature() -> str:
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            return ''.join(line for line in f if line.startswith(('model name', 'flags')))[:4096]
    except OSError:
        return os.uname().machine


def _build(compiler: str, source: Path, target: Path) -> str | None:
    """Compile ``source`` into ``target`` (atomically); None on success, else the compiler's message."""
    target.parent.mkdir(parents=True, exist_ok=True)
    message = ''
    for variant in VARIANT_FLAGS:
        fd, tmp = tempfile.mkstemp(suffix='.so', dir=target.parent)
        os.close(fd)
        try:
            result = subprocess.run([compiler, *BASE_FLAGS, *variant, '-o', tmp, str(source)], capture_output=True,
                                    text=True, timeout=300)
            if result.returncode == 0:
                os.replace(tmp, target)
                return None
            message = result.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as error:
            message = str(error)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return message or 'the compiler failed'


@cache
def load_library(name: str) -> ctypes.CDLL | None:
    """``rainmer/csrc/<name>.c`` as a loaded library (built first if needed), or None where it cannot be built."""
    if not native_enabled():
        return None
    source = SOURCE_DIR / f'{name}.c'
    if not source.is_file():
        raise FileNotFoundError(f'No C source {source} for the native kernel {name!r}.')
    compiler = os.environ.get('CC') or shutil.which('cc') or shutil.which('gcc')
    if compiler is None:
        warnings.warn(f'rainmer: no C compiler (cc, gcc or $CC) to build {source.name}; using PyTorch kernels '
                      'instead (slower training on CPU).', stacklevel=2)
        return None
    key = hashlib.sha256('\0'.join([source.read_text(encoding='utf-8'), compiler, repr((BASE_FLAGS, VARIANT_FLAGS)),
                                    _cpu_signature()]).encode()).hexdigest()[:16]
    target = cache_dir() / f'{name}-{key}.so'
    if not target.is_file():
        try:
            error = _build(compiler, source, target)
        except OSError as err:  # cache directory not writable
            error = str(err)
        if error is not None:
            warnings.warn(f'rainmer: could not build {source} with {compiler} ({error[-500:]}); using PyTorch '
                          'kernels instead (slower training on CPU).', stacklevel=2)
            return None
    return ctypes.CDLL(str(target))
