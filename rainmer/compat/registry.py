"""Registry look-ups that fail with the registered names and the closest match."""
import difflib

from basicsr.utils.registry import Registry

from rainmer.errors import UserError


class UnknownNameError(UserError, KeyError):
    """A config names a ``type`` that no registry entry has."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


def unknown_name_message(kind: str, name: str, known: list[str], plugin_hint: bool = True) -> str:
    """The message for an unknown ``type: name`` among the ``known`` names of ``kind``."""
    lowered = {k.lower(): k for k in known}
    close = [lowered[name.lower()]] if name.lower() in lowered else difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ''
    message = f"Unknown {kind} type '{name}'.{hint} Registered {kind} types: {', '.join(sorted(known))}."
    if plugin_hint:
        message += " Plugins register more through the 'basicsr.plugins' entry-point group."
    return message


_toolbox_get = Registry.get


def _get(self: Registry, name: str, suffix: str = 'basicsr'):
    """The toolbox's look-up (wrapped), without its spurious print; an unknown name raises :class:`UnknownNameError`."""
    if name not in self._obj_map and f'{name}_{suffix}' in self._obj_map:
        name = f'{name}_{suffix}'  # the toolbox's fallback, which it announces with a print even when it fails
    elif name not in self._obj_map:
        raise UnknownNameError(unknown_name_message(self._name, name, list(self._obj_map.keys())))
    return _toolbox_get(self, name, suffix)


def patch_registry_errors() -> None:
    """Wrap ``Registry.get`` (a bare KeyError, a spurious print) with :func:`_get`."""
    Registry.get = _get
