"""Check every pair of a dataset when it is built, so a bad file fails the run in its first minute, not hours in.

``check_data: header`` (default) reads each image's header and end (:mod:`rainmer.data.image_header`): present,
complete, 8-bit, 3 channels, the pair the same size; ``full`` decodes every image; ``off`` skips the check.
``skip_bad: true`` leaves bad pairs out (listed in the log) instead of stopping. The outcome is cached per set of
files (paths, sizes and modification times; for LMDB the database files and keys) under ``$RAINMER_CACHE_DIR``
(default ``~/.cache/rainmer``), so a resumed or repeated run does not pay the check again.
"""
import hashlib
import json
import os
import os.path as osp
from concurrent.futures import ThreadPoolExecutor

from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import get_dist_info
from tqdm import tqdm

from rainmer.data.errors import DataError
from rainmer.data.image_header import ImageHeader, probe_bytes, probe_image
from rainmer.data.image_io import check_same_extent, decode_bgr_uint8
from rainmer.data.pair_source import PairSource

CHECK_MODES = ('header', 'full', 'off')
CHECK_VERSION = 1  # part of the cache key: a change of the rules re-checks everything
_THREADS = 8  # header reads wait on the disk, not the CPU


def options_label(opt: dict) -> str:
    """Where the user sets a dataset's options: ``datasets.train``, or the validation/test set by its name."""
    phase = opt.get('phase', 'train')
    return 'datasets.train' if phase == 'train' else f"the options of {phase} set {opt.get('name', '?')}"


def check_mode(opt: dict) -> str:
    """``check_data`` of a dataset option: ``header`` | ``full`` | ``off`` (``true`` / ``false`` also accepted)."""
    value = opt.get('check_data', 'header')
    mode = {True: 'header', False: 'off'}.get(value, value) if isinstance(value, bool) else value
    if mode not in CHECK_MODES:
        raise DataError(f'check_data in {options_label(opt)}: {value!r} is not one of {", ".join(CHECK_MODES)}')
    return mode


def check_sources(sources: list[PairSource], opt: dict) -> None:
    """Check every pair of ``sources`` (of the dataset with options ``opt``); drop or refuse bad ones."""
    mode = check_mode(opt)
    where = options_label(opt)
    if mode == 'off':
        return
    skip_bad = bool(opt.get('skip_bad', False))
    for source in sources:
        bad = _cached_or_checked(source, mode)
        if not bad:
            continue
        if not skip_bad:
            plural = len(bad) > 1
            raise DataError(f'{bad[0][1]}; {len(bad)} bad pair{"s" if plural else ""} in {source.name}: fix or '
                            f'remove {"them" if plural else "it"}, or set skip_bad: true in {where} to leave bad '
                            'pairs out')
        logger = get_root_logger()
        logger.warning(f'{source.name}: leaving out {len(bad)} bad pair(s) (skip_bad: true in {where}), '
                       f'e.g. {bad[0][1]}')
        for _, message in bad:
            logger.info(f'skipped: {message}')
        source.keep(sorted(set(range(len(source))) - {index for index, _ in bad}))
        if not len(source):
            raise DataError(f'{source.name}: every pair is bad; nothing is left to read')


def check_pair(source: PairSource, index: int, mode: str = 'header') -> str | None:
    """Why pair ``index`` of ``source`` cannot be read (a message naming the file), or None when it can."""
    lq_path, gt_path = source.pairs[index]
    try:
        lq = _shape(source, lq_path, 'lq', mode)
        gt = _shape(source, gt_path, 'gt', mode)
        check_same_extent((lq.width, lq.height), (gt.width, gt.height), source.describe(lq_path, 'lq'),
                          source.describe(gt_path, 'gt'))
    except DataError as error:
        return str(error)
    return None


def _shape(source: PairSource, path: str, client_key: str, mode: str) -> ImageHeader:
    name = source.describe(path, client_key)
    if mode == 'header' and source.backend_type == 'disk':  # reads the header and the last kilobytes only
        try:
            with open(path, 'rb') as f:
                return probe_image(f, name)
        except FileNotFoundError:
            return probe_bytes(None, name)
        except OSError as error:
            raise DataError(f'{name}: cannot be read ({error.strerror})') from error
    content = source.read_bytes(path, client_key)
    if mode == 'full':
        img = decode_bgr_uint8(content, name)
        return ImageHeader(img.shape[1], img.shape[0], img.shape[2], 8)
    return probe_bytes(content, name)


def _cached_or_checked(source: PairSource, mode: str) -> list[tuple[int, str]]:
    cache_path = _cache_path(source, mode)
    for accepted in ((mode,) if mode == 'full' else ('header', 'full')):
        cached = _read_cache(_cache_path(source, accepted))
        if cached is not None:
            get_root_logger().info(f'{source.name} was checked before ({len(source)} pairs, '
                                   f'{len(cached)} bad); not checked again')
            return cached
    bad = check_all_pairs(source, mode)
    if get_dist_info()[0] == 0:
        _write_cache(cache_path, bad)
    return bad


def check_all_pairs(source: PairSource, mode: str) -> list[tuple[int, str]]:
    """``(index, message)`` of every bad pair of ``source``, checked in ``mode`` with a progress bar (no cache)."""
    threads = 1 if source.backend_type == 'lmdb' else _THREADS  # one LMDB reader: transactions are per thread
    bar = tqdm(total=len(source), desc=f'Checking {source.name}', unit='pair', mininterval=0.5,
               disable=get_dist_info()[0] != 0)
    bad = []
    with ThreadPoolExecutor(threads) as pool:
        for index, problem in enumerate(pool.map(lambda i: check_pair(source, i, mode), range(len(source)))):
            bar.update()
            if problem:
                bad.append((index, problem))
    bar.close()
    source.close()  # LMDB environments are opened again where the pairs are read (the workers)
    return bad


def cache_dir() -> str:
    """Where check outcomes are kept: ``$RAINMER_CACHE_DIR``, else ``$XDG_CACHE_HOME/rainmer``, else ``~/.cache``."""
    base = os.environ.get('XDG_CACHE_HOME') or osp.join(osp.expanduser('~'), '.cache')
    return os.environ.get('RAINMER_CACHE_DIR') or osp.join(base, 'rainmer')


def _cache_path(source: PairSource, mode: str) -> str:
    digest = hashlib.sha1(f'{CHECK_VERSION}|{mode}|'.encode())
    for item in source.fingerprint_items():
        digest.update(repr(item).encode())
    return osp.join(cache_dir(), 'pair_checks', f'{digest.hexdigest()}.json')


def _read_cache(path: str) -> list[tuple[int, str]] | None:
    try:
        with open(path, encoding='utf-8') as f:
            return [(int(index), str(message)) for index, message in json.load(f)['bad']]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path: str, bad: list[tuple[int, str]]) -> None:
    try:
        os.makedirs(osp.dirname(path), exist_ok=True)
        tmp = f'{path}.partial-{os.getpid()}'
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump({'bad': bad}, f)
        os.replace(tmp, path)
    except OSError as error:  # a read-only home only costs the next run the check
        get_root_logger().warning(f'Cannot cache the data check in {path}: {error}')
