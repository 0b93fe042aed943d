"""Every BasicSR object the compatibility layer patches or relies on, and the check that they are all there.

:data:`TARGETS` is the one list: :func:`check_toolbox` (run by ``apply_toolbox_compat`` before any patch) and
the tests read it. A missing target fails with one line naming it and the supported BasicSR version; a BasicSR
version other than the tested ones warns once. See docs/compatibility.md.
"""
import importlib
import warnings

from rainmer.errors import UserError

SUPPORTED_VERSION = '1.4.2'
TESTED_VERSIONS = ('1.4.2',)

# (module, attribute path). "wraps": the patch calls the original; "replaces": it does not; "reads": used as is.
TARGETS: tuple[tuple[str, str], ...] = (
    ('basicsr.utils.registry', 'Registry.get'),                       # registry.py wraps
    ('basicsr.utils.registry', 'ARCH_REGISTRY._obj_map'),             # registry.py reads (every registry has one)
    ('basicsr.utils.dist_util', 'init_dist'),                         # distributed.py replaces
    ('basicsr.utils.options', 'init_dist'),                           # distributed.py replaces (imported copy)
    ('basicsr.models.base_model', 'BaseModel.model_to_device'),       # model.py wraps
    ('basicsr.models.base_model', 'BaseModel.get_optimizer'),         # model.py wraps
    ('basicsr.models.base_model', 'BaseModel.setup_schedulers'),      # model.py replaces
    ('basicsr.models.base_model', 'BaseModel.validation'),            # model.py wraps
    ('basicsr.models.lr_scheduler', 'MultiStepRestartLR'),            # model.py reads (registered as schedulers)
    ('basicsr.models.lr_scheduler', 'CosineAnnealingRestartLR'),      # model.py reads
    ('basicsr.models.base_model', 'BaseModel.load_network'),          # checkpoint.py replaces
    ('basicsr.models.base_model', 'BaseModel.save_network'),          # checkpoint.py replaces
    ('basicsr.models.base_model', 'BaseModel.save_training_state'),   # checkpoint.py replaces
    ('basicsr.models.base_model', 'BaseModel.get_bare_model'),        # checkpoint.py reads
    ('basicsr.train', 'load_resume_state'),                           # checkpoint.py replaces
    ('basicsr.utils.misc', 'check_resume'),                           # checkpoint.py reads
    ('basicsr.utils.file_client', 'LmdbBackend.__init__'),            # lmdb_backend.py replaces
    ('basicsr.utils.options', 'ordered_yaml'),                        # rainmer/options.py reads
    ('basicsr.utils.options', '_postprocess_yml_value'),              # rainmer/options.py reads
)

_warned_versions: set[str] = set()


class ToolboxVersionError(UserError, ImportError):
    """The installed BasicSR lacks something the compatibility layer patches or relies on."""


def toolbox_version() -> str:
    """``basicsr.__version__`` of the installed toolbox ('unknown' if it has none)."""
    import basicsr

    return str(getattr(basicsr, '__version__', 'unknown'))


def resolve(module: str, attribute: str):
    """The object at ``module``.``attribute`` (a dotted path); AttributeError/ImportError if absent."""
    obj = importlib.import_module(module)
    for name in attribute.split('.'):
        obj = getattr(obj, name)
    return obj


def missing_targets(targets: tuple[tuple[str, str], ...] = TARGETS) -> list[str]:
    """The dotted names of ``targets`` that the installed BasicSR does not have."""
    missing = []
    for module, attribute in targets:
        try:
            resolve(module, attribute)
        except (ImportError, AttributeError):
            missing.append(f'{module}.{attribute}')
    return missing


def check_toolbox(targets: tuple[tuple[str, str], ...] = TARGETS) -> None:
    """Fail with :class:`ToolboxVersionError` if a target is missing; warn once for an untested version."""
    version = toolbox_version()
    missing = missing_targets(targets)
    if missing:
        more = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
        raise ToolboxVersionError(
            f'{missing[0]}{more}: not found in the installed BasicSR {version}; rainmer patches BasicSR '
            f'{SUPPORTED_VERSION}: pip install basicsr=={SUPPORTED_VERSION}')
    if version not in TESTED_VERSIONS and version not in _warned_versions:
        _warned_versions.add(version)
        warnings.warn(f'BasicSR {version} is untested with rainmer (tested: {", ".join(TESTED_VERSIONS)}); '
                      f'every patched target was found, but pip install basicsr=={SUPPORTED_VERSION} is supported.',
                      stacklevel=3)
