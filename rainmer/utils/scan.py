"""Import every module of a subpackage whose file name ends with a suffix (BasicSR's scanning)."""
import importlib
import os
from types import ModuleType


def import_modules_with_suffix(package: str, package_file: str, suffix: str) -> list[ModuleType]:
    """Import ``<package>.<name>`` for every ``<name><suffix>.py`` file beside ``package_file``.

    Importing a module runs its ``@REGISTRY.register()`` decorators, so scanning a folder
    registers every class in it, the way BasicSR finds ``*_arch.py`` files.
    """
    folder = os.path.dirname(os.path.abspath(package_file))
    names = sorted(name[:-3] for name in os.listdir(folder) if name.endswith(f'{suffix}.py'))
    return [importlib.import_module(f'{package}.{name}') for name in names]
