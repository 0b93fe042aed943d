"""Scan `*_model.py` files so that importing this package registers their classes (and the schedulers)."""
from rainmer.models import lr_scheduler  # noqa: F401  (registers schedulers in SCHEDULER_REGISTRY)
from rainmer.utils.scan import import_modules_with_suffix

_modules = import_modules_with_suffix(__name__, __file__, '_model')
