"""Compatibility of BasicSR 1.4.2 with today's torch/torchvision (filled in by the foundation issue)."""
import sys
import types


def apply_toolbox_compat() -> None:
    """Provide ``torchvision.transforms.functional_tensor`` so that ``import basicsr`` works."""
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
    except ModuleNotFoundError:
        from torchvision.transforms import functional

        shim = types.ModuleType('torchvision.transforms.functional_tensor')
        shim.rgb_to_grayscale = functional.rgb_to_grayscale
        sys.modules['torchvision.transforms.functional_tensor'] = shim
