"""One named source of (rainy, clean) pairs: a layout on disk or a prepared LMDB pair, read via FileClient."""

import os
import os.path as osp

import numpy as np
from basicsr.utils import FileClient

from rainmer.data.errors import DataError
from rainmer.data.image_io import check_same_size, decode_bgr_uint8
from rainmer.data.layouts import LAYOUTS, default_lmdb_dir, scan_layout
from rainmer.data.lmdb_tools import lmdb_pair, paired_lmdb_keys

BACKENDS = ('disk', 'lmdb')


def _lmdb_paths(opt: dict, layout: str, where: str) -> tuple[str, str]:
    lq, gt = opt.get('dataroot_lq'), opt.get('dataroot_gt')
    if lq and gt:
        for path, name in ((lq, 'dataroot_lq'), (gt, 'dataroot_gt')):
            if not str(path).endswith('.lmdb'):
                raise DataError(f'{where}.{name}: {path} should end with .lmdb for io_backend lmdb')
        return lq, gt
    if layout == 'lmdb':
        if not opt.get('root'):
            raise DataError(f'{where}: type lmdb needs root (the folder with lq.lmdb and gt.lmdb) '
                            'or dataroot_lq and dataroot_gt')
        return lmdb_pair(opt['root'])
    return lmdb_pair(default_lmdb_dir(layout, root=opt.get('root'), split=opt.get('split', 'train'),
                                      list_file=opt.get('list_file'), dataroot_lq=opt.get('dataroot_lq')))


class PairSource:
    """Pairs of one source option (``name``, layout ``type``, ``root`` / ``dataroot_lq`` / ``dataroot_gt``,
    ``split``, ``list_file``, ``io_backend``).

    With ``io_backend: {type: lmdb}`` the pairs are the keys of ``dataroot_lq``/``dataroot_gt`` (``.lmdb``),
    by default the LMDB pair that ``rainmer data prepare`` writes for that layout and root.
    """

    def __init__(self, opt: dict, where: str = 'source', layout_key: str = 'type'):
        self.name = str(opt.get('name', where))
        self.layout = opt.get(layout_key, opt.get('layout'))
        if self.layout is None:
            raise DataError(f'{where}: missing option {layout_key!r} (one of {", ".join(LAYOUTS)}, lmdb)')
        backend = dict(opt.get('io_backend') or {'type': 'disk'})
        self.backend_type = backend.pop('type', 'disk')
        if self.backend_type not in BACKENDS:
            raise DataError(f'{where}.io_backend.type: {self.backend_type!r} is not one of {", ".join(BACKENDS)}')
        self._backend_kwargs = backend
        self._client: FileClient | None = None
        if self.backend_type == 'lmdb' or self.layout == 'lmdb':
            if self.backend_type != 'lmdb':
                raise DataError(f'{where}: type lmdb needs io_backend: {{type: lmdb}}')
            self.lq_lmdb, self.gt_lmdb = _lmdb_paths(opt, self.layout, where)
            keys = paired_lmdb_keys(self.lq_lmdb, self.gt_lmdb)
            self.pairs = [(k, k) for k in keys]
            self.keys = keys
        else:
            records = scan_layout(self.layout, root=opt.get('root'), dataroot_lq=opt.get('dataroot_lq'),
                                  dataroot_gt=opt.get('dataroot_gt'), split=opt.get('split', 'train'),
                                  list_file=opt.get('list_file'), option=f'{where}.{layout_key}')
            self.pairs = [(r.lq, r.gt) for r in records]
            self.keys = [r.key for r in records]

    def __len__(self) -> int:
        return len(self.pairs)

    def _file_client(self) -> FileClient:
        # Created lazily: LMDB environments must be opened in the worker process that reads them.
        if self._client is None:
            if self.backend_type == 'lmdb':
                self._client = FileClient('lmdb', db_paths=[self.lq_lmdb, self.gt_lmdb], client_keys=['lq', 'gt'],
                                          **self._backend_kwargs)
            else:
                self._client = FileClient('disk', **self._backend_kwargs)
        return self._client

    def read_bytes(self, path: str, client_key: str) -> bytes | None:
        """The stored bytes of ``path`` (a file, or an LMDB key) for ``client_key`` 'lq' or 'gt'; None if absent."""
        try:
            return self._file_client().get(path, client_key)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise DataError(f'{path}: cannot be read ({err.strerror})') from err

    def describe(self, path: str, client_key: str) -> str:
        """A file name for messages: the path, or ``<lmdb>:<key>`` for LMDB entries."""
        if self.backend_type == 'lmdb':
            return f'{self.lq_lmdb if client_key == "lq" else self.gt_lmdb}:{path}'
        return path

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, str, str]:
        """BGR uint8 rainy and clean images of pair ``index`` (checked), and their paths / LMDB keys."""
        lq_path, gt_path = self.pairs[index]
        lq_name, gt_name = self.describe(lq_path, 'lq'), self.describe(gt_path, 'gt')
        lq = decode_bgr_uint8(self.read_bytes(lq_path, 'lq'), lq_name)
        gt = decode_bgr_uint8(self.read_bytes(gt_path, 'gt'), gt_name)
        check_same_size(lq, gt, lq_name, gt_name)
        return lq, gt, lq_path, gt_path

    def keep(self, indices: list[int]) -> None:
        """Keep only the pairs at ``indices`` (in that order)."""
        self.pairs = [self.pairs[i] for i in indices]
        self.keys = [self.keys[i] for i in indices]

    def close(self) -> None:
        """Drop the file client (LMDB environments are opened again by the process that reads next)."""
        self._client = None

    def fingerprint_items(self):
        """What identifies these pairs' contents: each file's path, size and mtime (LMDB: its files and keys)."""
        if self.backend_type == 'lmdb':
            for folder in (self.lq_lmdb, self.gt_lmdb):
                for name in ('data.mdb', 'meta_info.txt'):
                    yield _stat_item(osp.join(folder, name))
            yield from self.pairs
            return
        for lq, gt in self.pairs:
            yield _stat_item(lq)
            yield _stat_item(gt)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state['_client'] = None  # never send an open LMDB environment to a worker
        return state


def _stat_item(path: str) -> tuple:
    try:
        stat = os.stat(path)
    except OSError:
        return (path, None)
    return (path, stat.st_size, stat.st_mtime_ns)
