"""LMDB reading: py-lmdb >= 1.5 refuses to open one environment twice in a process.

BasicSR's ``LmdbBackend`` opens its environments per ``FileClient``, so a validation set on the same LMDB as the
training set (or two datasets over one LMDB) fails with ``... is already open in this process``. Environments
are shared per process instead (keyed by process id, so forked dataloader workers open their own).
"""
import os

import lmdb
from basicsr.utils.file_client import LmdbBackend

_ENVIRONMENTS: dict[tuple[int, str, bool, bool, bool], lmdb.Environment] = {}


def open_shared(path: str, readonly: bool = True, lock: bool = False, readahead: bool = False, **kwargs):
    """The process's environment for ``path``, opened on first use."""
    key = (os.getpid(), os.path.realpath(path), readonly, lock, readahead)
    env = _ENVIRONMENTS.get(key)
    if env is None:
        env = lmdb.open(path, readonly=readonly, lock=lock, readahead=readahead, **kwargs)
        _ENVIRONMENTS[key] = env
    return env


def _init(self: LmdbBackend, db_paths, client_keys='default', readonly=True, lock=False, readahead=False,
          **kwargs) -> None:
    db_paths = [db_paths] if isinstance(db_paths, str) else list(db_paths)
    client_keys = [client_keys] if isinstance(client_keys, str) else list(client_keys)
    if len(client_keys) != len(db_paths):
        raise ValueError(f'LMDB client_keys {client_keys} and db_paths {db_paths} differ in length')
    self.db_paths = [str(p) for p in db_paths]
    self._client = {key: open_shared(path, readonly, lock, readahead, **kwargs)
                    for key, path in zip(client_keys, self.db_paths)}


def patch_lmdb_backend() -> None:
    LmdbBackend.__init__ = _init
