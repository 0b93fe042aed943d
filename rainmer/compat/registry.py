"""Registry look-ups that fail with the registered names and the closest match."""
import difflib

from basicsr.utils.registry import Registry


class UnknownNameError(KeyError):
    """A config names a ``type`` that no registry entry has."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


def unknown_name_message(registry_name: str, name: str, known: list[str]) -> str:
    """The message for an unknown ``type: name`` in ``registry_name``."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if not close:  # also catch case slips such as 'rainmer' for 'Rainmer'
        lowered = {k.lower(): k for k in known}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    hint = f" Did you mean '{close[0]}'?" if close else ''
    return (f"Unknown {registry_name} type '{name}'.{hint} Registered {registry_name} types: "
            f"{', '.join(sorted(known))}. Plugins register more through the 'basicsr.plugins' entry-point group.")


def _get(self: Registry, name: str, suffix: str = 'basicsr'):
    found = self._obj_map.get(name)
    if found is None:
        found = self._obj_map.get(f'{name}_{suffix}')
    if found is None:
        raise UnknownNameError(unknown_name_message(self._name, name, list(self._obj_map.keys())))
    return found


def patch_registry_errors() -> None:
    """Replace ``Registry.get`` (bare KeyError, spurious print) with :func:`_get`."""
    Registry.get = _get
