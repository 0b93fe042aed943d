"""Scan `*_loss.py` files so that importing this package registers their classes."""
from rainmer.utils.scan import import_modules_with_suffix

_modules = import_modules_with_suffix(__name__, __file__, '_loss')
