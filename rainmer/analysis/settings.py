"""The ``analysis:`` section of an analysis option file, with defaults and checked types."""
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from rainmer.analysis.errors import AnalysisError


@dataclass
class AnalysisSettings:
    """See docs/analysis.md. ``num_samples``: at most this many images per dataset (None or 0: all)."""

    num_samples: int | None = 500
    seed: int = 0
    image_key: str = 'lq'
    spaces: list[str] | None = None
    resize: int | None = None
    batch_size: int = 16
    num_worker: int = 0
    umap: dict = field(default_factory=dict)
    encode: str | None = None


_INTEGERS = ('num_samples', 'seed', 'resize', 'batch_size', 'num_worker')


def analysis_settings(section: Mapping | None) -> AnalysisSettings:
    """Settings from the YAML section (missing keys take the defaults; unknown keys are errors)."""
    section = dict(section or {})
    known = [f.name for f in fields(AnalysisSettings)]
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise AnalysisError(f"analysis: unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    settings = AnalysisSettings(**{key: value for key, value in section.items() if value is not None or
                                   key in ('num_samples', 'spaces', 'resize', 'encode')})
    for key in _INTEGERS:
        value = getattr(settings, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise AnalysisError(f'analysis.{key}: expected a non-negative integer, got {value!r}')
    if settings.batch_size < 1:
        raise AnalysisError('analysis.batch_size: expected at least 1')
    if settings.spaces is not None:
        if isinstance(settings.spaces, str):
            settings.spaces = [settings.spaces]
        if not isinstance(settings.spaces, list) or not all(isinstance(s, str) for s in settings.spaces):
            raise AnalysisError(f'analysis.spaces: expected a list of names, got {settings.spaces!r}')
    if not isinstance(settings.umap, Mapping):
        raise AnalysisError(f'analysis.umap: expected a mapping of umap.UMAP arguments, got {settings.umap!r}')
    return settings
