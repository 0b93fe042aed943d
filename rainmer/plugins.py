"""Discover plugin packages: anything installed with a ``basicsr.plugins`` entry point is imported.

A plugin declares, in its setup.py::

    entry_points={'basicsr.plugins': ['mypkg = mypkg']}

and importing ``mypkg`` must register its archs/models/datasets/losses in BasicSR's registries.
``basicsr train/test`` import every plugin before reading the config, so their ``type:`` names work.
"""
import importlib
import warnings
from importlib import metadata

ENTRY_POINT_GROUP = 'basicsr.plugins'


def load_plugins() -> list[str]:
    """Import every installed plugin (rainmer first); return the names that loaded."""
    import rainmer  # noqa: F401  (the compat layer must be active before any plugin imports basicsr)

    loaded = ['rainmer']
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == 'rainmer':
            continue
        try:
            importlib.import_module(entry_point.value.split(':')[0])
        except Exception as error:  # a broken plugin must not take the toolbox down
            warnings.warn(f"Plugin '{entry_point.name}' ({entry_point.value}) failed to import: {error}", stacklevel=2)
        else:
            loaded.append(entry_point.name)
    return loaded
