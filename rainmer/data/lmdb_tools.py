"""Write and read pairs of BasicSR-style LMDBs (``lq.lmdb`` + ``gt.lmdb``, each with ``meta_info.txt``).

A build goes into ``<name>.lmdb.partial`` folders that are renamed when complete; the completion marker
``rainmer_prepare.json`` is written last. So a finished build is recognised (and not rebuilt) and an
interrupted one is never mistaken for a dataset.
"""
import json
import os
import os.path as osp
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import lmdb
import numpy as np
from tqdm import tqdm

from rainmer.data.errors import DataError

LQ_LMDB, GT_LMDB = 'lq.lmdb', 'gt.lmdb'
PARTIAL = '.partial'
MARKER = 'rainmer_prepare.json'
BAD_PAIRS = 'bad_pairs.txt'
PAIRS = 'pairs.txt'
_COMMIT_EVERY = 64

# A pair loader returns (key, lq image, gt image, lq name, gt name) or raises DataError.
PairLoader = Callable[[], tuple[str, np.ndarray, np.ndarray, str, str]]


@dataclass
class BuildResult:
    """What :func:`build_pair_lmdbs` wrote."""

    out_dir: str
    lq_lmdb: str
    gt_lmdb: str
    written: int
    skipped: list[str] = field(default_factory=list)


def lmdb_pair(out_dir: str) -> tuple[str, str]:
    """``(<out_dir>/lq.lmdb, <out_dir>/gt.lmdb)``."""
    return osp.join(out_dir, LQ_LMDB), osp.join(out_dir, GT_LMDB)


def build_state(out_dir: str) -> str:
    """``'done'``, ``'interrupted'`` (partial folders left), ``'incomplete'`` (LMDBs without marker) or ``'absent'``."""
    lq, gt = lmdb_pair(out_dir)
    if osp.isdir(lq + PARTIAL) or osp.isdir(gt + PARTIAL):
        return 'interrupted'
    if osp.isfile(osp.join(out_dir, MARKER)) and osp.isdir(lq) and osp.isdir(gt):
        return 'done'
    if osp.exists(lq) or osp.exists(gt):
        return 'incomplete'
    return 'absent'


def read_marker(out_dir: str) -> dict:
    with open(osp.join(out_dir, MARKER), encoding='utf-8') as f:
        return json.load(f)


def remove_build(out_dir: str, keep_report: bool = False) -> None:
    """Remove every LMDB folder, partial or finished, the marker and (unless kept) the bad-pair report."""
    for name in (LQ_LMDB, GT_LMDB):
        for path in (osp.join(out_dir, name), osp.join(out_dir, name + PARTIAL)):
            if osp.isdir(path):
                shutil.rmtree(path)
    for name in (MARKER, PAIRS) + (() if keep_report else (BAD_PAIRS,)):
        if osp.isfile(osp.join(out_dir, name)):
            os.remove(osp.join(out_dir, name))


def read_meta_info(lmdb_path: str) -> list[tuple[str, tuple[int, int, int]]]:
    """Keys and (h, w, c) shapes from an LMDB's ``meta_info.txt`` (``<key>.png (h,w,c) <compress>``)."""
    if not osp.isdir(lmdb_path):
        if osp.isdir(lmdb_path + PARTIAL):
            raise DataError(f'{lmdb_path}: the build was interrupted ({lmdb_path + PARTIAL} is left); '
                            'rerun rainmer data prepare')
        raise DataError(f'{lmdb_path}: LMDB not found (build it with rainmer data prepare)')
    meta = osp.join(lmdb_path, 'meta_info.txt')
    if not osp.isfile(meta):
        raise DataError(f'{meta}: missing; {lmdb_path} is not a finished BasicSR-style LMDB')
    entries = []
    with open(meta, encoding='utf-8') as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                name, shape, _ = line.split()
                h, w, c = (int(v) for v in shape.strip('()').split(','))
            except ValueError as err:
                raise DataError(f'{meta}, line {number}: expected "<key>.png (h,w,c) <compress>", '
                                f'got {line!r}') from err
            entries.append((name.split('.')[0], (h, w, c)))
    return entries


def paired_lmdb_keys(lq_lmdb: str, gt_lmdb: str) -> list[str]:
    """The keys both LMDBs hold, in written order (= the disk layout's order), checking that they hold the
    same keys with the same image sizes."""
    lq_entries = read_meta_info(lq_lmdb)
    lq_meta, gt_meta = dict(lq_entries), dict(read_meta_info(gt_lmdb))
    only_lq, only_gt = sorted(set(lq_meta) - set(gt_meta)), sorted(set(gt_meta) - set(lq_meta))
    if only_lq or only_gt:
        example = f'{only_lq[0]!r} only in {lq_lmdb}' if only_lq else f'{only_gt[0]!r} only in {gt_lmdb}'
        raise DataError(f'{lq_lmdb} and {gt_lmdb} hold different keys ({len(only_lq) + len(only_gt)} differ, '
                        f'e.g. {example})')
    for key, shape in lq_meta.items():
        if gt_meta[key] != shape:
            raise DataError(f'size mismatch for key {key!r}: {shape} in {lq_lmdb}, {gt_meta[key]} in {gt_lmdb}')
    return [key for key, _ in lq_entries]


class _Writer:
    """One LMDB under construction; grows its map when full."""

    def __init__(self, path: str, map_size: int):
        self.path = path
        self.env = lmdb.open(path, map_size=map_size, subdir=True, meminit=False)
        self.meta: list[str] = []

    def put_many(self, items: list[tuple[str, bytes, tuple[int, ...], int]]) -> None:
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value, _, _ in items:
                        txn.put(key.encode('ascii'), value)
                break
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()['map_size'] * 2)
        for key, _, (h, w, c), level in items:
            self.meta.append(f'{key}.png ({h},{w},{c}) {level}\n')

    def close(self) -> None:
        self.env.sync()
        self.env.close()
        with open(osp.join(self.path, 'meta_info.txt'), 'w', encoding='utf-8') as f:
            f.writelines(self.meta)


def build_pair_lmdbs(loaders: Iterable[PairLoader], total: int, out_dir: str, *, description: dict,
                     encode: Callable[[np.ndarray], bytes], compress_level: int = 1, skip_bad: bool = False,
                     map_size: int = 1 << 30, progress: bool = True) -> BuildResult:
    """Validate and write every pair into ``out_dir/{lq,gt}.lmdb``; all-or-nothing unless ``skip_bad``.

    Each loader returns one decoded, checked pair or raises :class:`DataError`. Bad pairs are all
    collected (and listed in ``bad_pairs.txt``); without ``skip_bad`` any bad pair aborts the build and
    removes what was written.
    """
    os.makedirs(out_dir, exist_ok=True)
    remove_build(out_dir)
    lq_path, gt_path = lmdb_pair(out_dir)
    writers = [_Writer(lq_path + PARTIAL, map_size), _Writer(gt_path + PARTIAL, map_size)]
    bad: list[str] = []
    provenance: list[str] = []
    batch: list[tuple] = []
    written = 0

    def flush() -> None:
        writers[0].put_many([(k, lq, shape, compress_level) for k, lq, _, shape in batch])
        writers[1].put_many([(k, gt, shape, compress_level) for k, _, gt, shape in batch])
        batch.clear()

    try:
        for load in tqdm(loaders, total=total, unit='pair', desc=f'prepare {osp.basename(out_dir)}',
                         disable=not progress):
            try:
                key, lq, gt, lq_name, gt_name = load()
            except DataError as err:
                bad.append(str(err))
                continue
            batch.append((key, encode(lq), encode(gt), lq.shape))
            provenance.append(f'{key}\t{lq_name}\t{gt_name}\n')
            written += 1
            if len(batch) >= _COMMIT_EVERY:
                flush()
        if batch:
            flush()
    finally:
        for writer in writers:
            writer.close()
    if bad:
        with open(osp.join(out_dir, BAD_PAIRS), 'w', encoding='utf-8') as f:
            f.writelines(line + '\n' for line in bad)
    if bad and not skip_bad:
        remove_build(out_dir, keep_report=True)
        raise DataError(f'{len(bad)} bad pair(s), nothing written (all listed in {osp.join(out_dir, BAD_PAIRS)}; '
                        f'use --skip-bad to leave them out). First: {bad[0]}')
    if written == 0:
        remove_build(out_dir)
        raise DataError(f'{out_dir}: no valid pair to write')
    with open(osp.join(out_dir, PAIRS), 'w', encoding='utf-8') as f:
        f.writelines(provenance)
    os.rename(lq_path + PARTIAL, lq_path)
    os.rename(gt_path + PARTIAL, gt_path)
    with open(osp.join(out_dir, MARKER), 'w', encoding='utf-8') as f:
        json.dump(dict(description, pairs=written, skipped=len(bad)), f, indent=2)
    return BuildResult(out_dir, lq_path, gt_path, written, bad)
