"""Errors of the representation analysis that a user can fix (options, files, optional packages)."""
from rainmer.errors import UserError


class AnalysisError(UserError, ValueError):
    """An analysis option, file or encoder that cannot work; the message names it."""


class MissingExtraError(AnalysisError):
    """An optional package of the ``analysis`` extra is not installed."""

    def __init__(self, package: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs the '{package}' package: pip install -e '.[analysis]' "
                         "(umap-learn and matplotlib)")
        self.package = package


def require(module: str, package: str, purpose: str):
    """Import an optional module, or raise :class:`MissingExtraError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(package, purpose) from error
