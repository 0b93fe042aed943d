"""torchvision side of the compatibility layer: build mismatch check and removed modules."""
import sys
import types

from rainmer.errors import UserError

_MISMATCH_HINT = (
    'torch {torch} and torchvision {vision} come from different builds ({error}). '
    'Install a matching pair in the same environment, e.g. '
    '`pip install --force-reinstall torch torchvision` from one index (the package index gives a matching '
    'CUDA pair that also runs on CPU); do not mix a CPU-only torch wheel with a torchvision from elsewhere.')


class TorchvisionMismatchError(UserError, ImportError):
    """torch and torchvision were built for different torch versions/variants."""


def check_torchvision() -> None:
    """Import torchvision, turning the cryptic build-mismatch error into an actionable one."""
    import torch

    try:
        import torchvision  # noqa: F401
    except (RuntimeError, ImportError, AttributeError) as error:
        if 'torchvision::' not in str(error) and 'operator' not in str(error):
            raise
        vision = _installed_version('torchvision')
        raise TorchvisionMismatchError(
            _MISMATCH_HINT.format(torch=torch.__version__, vision=vision, error=error)) from error


def _installed_version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return 'unknown'


def install_functional_tensor_shim() -> None:
    """Provide ``torchvision.transforms.functional_tensor`` (removed in torchvision 0.17)."""
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
        return
    except ModuleNotFoundError:
        pass
    from torchvision.transforms import functional

    shim = types.ModuleType('torchvision.transforms.functional_tensor')
    shim.__doc__ = 'Provided by rainmer.compat: the functions BasicSR 1.4.2 imports from the removed module.'
    shim.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules['torchvision.transforms.functional_tensor'] = shim
