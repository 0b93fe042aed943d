"""``rainmer data prepare``: validate every pair of a standard layout and write ``lq.lmdb`` + ``gt.lmdb``."""
import os.path as osp
from collections.abc import Callable
from dataclasses import dataclass

from rainmer.data.errors import DataError
from rainmer.data.image_io import check_same_size, encode_png, read_bgr_uint8
from rainmer.data.layouts import PairRecord, default_lmdb_dir, scan_layout
from rainmer.data.lmdb_tools import build_pair_lmdbs, build_state, lmdb_pair, read_marker, remove_build


@dataclass
class PrepareOutcome:
    """Result of :func:`prepare_layout`."""

    out_dir: str
    lq_lmdb: str
    gt_lmdb: str
    pairs: int
    skipped_bad: int
    already_done: bool


def load_checked_pair(record: PairRecord) -> tuple[str, object, object, str, str]:
    """Read and check one pair from disk (raises :class:`DataError` naming the bad file)."""
    lq, gt = read_bgr_uint8(record.lq), read_bgr_uint8(record.gt)
    check_same_size(lq, gt, record.lq, record.gt)
    return record.key, lq, gt, record.lq, record.gt


def write_records(records: list[PairRecord], out_dir: str, description: dict, *, compress_level: int = 1,
                  skip_bad: bool = False, progress: bool = True):
    """Validate ``records`` and write them as an LMDB pair in ``out_dir`` (see :func:`build_pair_lmdbs`)."""
    loaders = ((lambda r=r: load_checked_pair(r)) for r in records)
    return build_pair_lmdbs(loaders, len(records), out_dir, description=description,
                            encode=lambda img: encode_png(img, compress_level), compress_level=compress_level,
                            skip_bad=skip_bad, progress=progress)


def prepare_layout(layout: str, *, root: str | None = None, dataroot_lq: str | None = None,
                   dataroot_gt: str | None = None, split: str = 'train', list_file: str | None = None,
                   out_dir: str | None = None, compress_level: int = 1, skip_bad: bool = False,
                   force: bool = False, progress: bool = True,
                   log: Callable[[str], None] = print) -> PrepareOutcome:
    """Build the LMDB pair of one dataset; a finished build is kept unless ``force``."""
    out_dir = out_dir or default_lmdb_dir(layout, root=root, split=split, list_file=list_file,
                                          dataroot_lq=dataroot_lq)
    lq_lmdb, gt_lmdb = lmdb_pair(out_dir)
    state = build_state(out_dir)
    if state == 'done' and not force:
        marker = read_marker(out_dir)
        log(f'{out_dir}: already prepared ({marker.get("pairs", "?")} pairs), not rebuilt (use --force to rebuild)')
        return PrepareOutcome(out_dir, lq_lmdb, gt_lmdb, int(marker.get('pairs', 0)), int(marker.get('skipped', 0)),
                              True)
    if state == 'interrupted':
        log(f'{out_dir}: a previous build was interrupted; removing it and rebuilding')
    elif state == 'incomplete' and not force:
        raise DataError(f'{out_dir}: holds {osp.basename(lq_lmdb)}/{osp.basename(gt_lmdb)} without the completion '
                        'marker (interrupted, or not written by rainmer); use --force to rebuild')
    if force:
        remove_build(out_dir)
    records = scan_layout(layout, root=root, dataroot_lq=dataroot_lq, dataroot_gt=dataroot_gt, split=split,
                          list_file=list_file, option='layout')
    description = dict(layout=layout, root=root, dataroot_lq=dataroot_lq, dataroot_gt=dataroot_gt,
                       split=split if layout == 'gtav' else None, list_file=list_file, compress_level=compress_level)
    result = write_records(records, out_dir, description, compress_level=compress_level, skip_bad=skip_bad,
                           progress=progress)
    return PrepareOutcome(out_dir, result.lq_lmdb, result.gt_lmdb, result.written, len(result.skipped), False)
