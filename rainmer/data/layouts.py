"""Find the (rainy, clean) pairs of each standard dataset layout on disk (docs/datasets.md#layouts).

Every scanner returns :class:`PairRecord` s with a unique, LMDB-safe ``key`` (ASCII letters, digits,
``_`` and ``-``; no dot, since BasicSR's ``meta_info.txt`` parser splits at the first dot).
A rainy image without its clean partner is an error naming the file; clean images without a rainy
partner are not used (in the one-to-one folder layouts, a warning names them).

Layouts (``type`` of a source, ``layout`` of a test set, first argument of ``rainmer data prepare``):

- ``paired_folder``: ``dataroot_lq/<name>.<ext>`` with ``dataroot_gt/<name>.<any ext>``.
- ``rain13k``: ``<root>/input`` and ``<root>/target`` with the same names (Rain13K train, Rain100L/H,
  Test100/1200/2800, and what ``rainmer data synth`` and ``balance`` write).
- ``gtrain``: one folder per scene under ``<root>``; clean ``*C-000*``, rainy ``*R-*`` frames.
- ``gtav``: ``<root>/set*/<split>/{rainy,gt}`` (or ``<root>/{rainy,gt}``); rainy ``A_KK_rest`` is paired
  with clean ``A_rest`` (``0001_03.png -> 0001.png``).
- ``allweather``: a TransWeather list file of ``.../input/...`` paths; the clean image is the same path
  with that ``input`` folder replaced by ``gt``.
"""
import os
import os.path as osp
import re
from dataclasses import dataclass

from rainmer.data.errors import DataError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
LAYOUTS = ('paired_folder', 'rain13k', 'gtrain', 'gtav', 'allweather')
_MAX_LISTED = 5


@dataclass(frozen=True)
class PairRecord:
    """One rainy image and its clean partner on disk."""

    lq: str
    gt: str
    key: str


def sanitize_key(name: str) -> str:
    """An LMDB- and file-name-safe version of ``name``."""
    return re.sub(r'[^A-Za-z0-9_-]', '_', name)


def list_images(folder: str) -> list[str]:
    """Sorted image files directly inside ``folder``; :class:`DataError` if it is not a folder."""
    if not osp.isdir(folder):
        raise DataError(f'{folder}: folder not found')
    return sorted(osp.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))


def _stem_index(folder: str) -> dict[str, str]:
    """Map file stem -> path for the images of ``folder`` (first extension in sorted order wins)."""
    index: dict[str, str] = {}
    for path in list_images(folder):
        index.setdefault(osp.splitext(osp.basename(path))[0], path)
    return index


def _raise_missing(missing: list[tuple[str, str]], hint: str) -> None:
    if not missing:
        return
    shown = '; '.join(f'{lq} (expected {gt})' for lq, gt in missing[:_MAX_LISTED])
    more = f' and {len(missing) - _MAX_LISTED} more' if len(missing) > _MAX_LISTED else ''
    raise DataError(f'{len(missing)} rainy image(s) without a clean partner{hint}: {shown}{more}')


def check_unique_keys(records: list[PairRecord], where: str) -> None:
    """Raise :class:`DataError` if two pairs would share an LMDB key / result file name."""
    seen: dict[str, str] = {}
    for rec in records:
        if rec.key in seen:
            raise DataError(f'{where}: {seen[rec.key]} and {rec.lq} map to the same name {rec.key!r}; '
                            'rename one of them')
        seen[rec.key] = rec.lq


def scan_paired_folder(lq_dir: str, gt_dir: str) -> list[PairRecord]:
    """Pairs of same-stem images in two folders."""
    lq_images = list_images(lq_dir)
    gt_index = _stem_index(gt_dir)
    records, missing = [], []
    for lq in lq_images:
        stem = osp.splitext(osp.basename(lq))[0]
        if stem in gt_index:
            records.append(PairRecord(lq, gt_index[stem], sanitize_key(stem)))
        else:
            missing.append((lq, osp.join(gt_dir, stem + '.*')))
    _raise_missing(missing, f' in {gt_dir}')
    _warn_unpaired_clean(gt_index, {osp.splitext(osp.basename(lq))[0] for lq in lq_images}, lq_dir)
    return _finish(records, lq_dir)


def _warn_unpaired_clean(gt_index: dict[str, str], lq_stems: set[str], lq_dir: str) -> None:
    unpaired = sorted(stem for stem in gt_index if stem not in lq_stems)
    if unpaired:
        from basicsr.utils import get_root_logger  # the toolbox's logger: the run's log file

        shown = ', '.join(gt_index[stem] for stem in unpaired[:_MAX_LISTED])
        more = f' and {len(unpaired) - _MAX_LISTED} more' if len(unpaired) > _MAX_LISTED else ''
        get_root_logger().warning(f'{len(unpaired)} clean image(s) without a rainy partner in {lq_dir} are not '
                                  f'used: {shown}{more}')


def scan_rain13k(root: str) -> list[PairRecord]:
    """``<root>/input`` and ``<root>/target`` (Rain13K and the Rain100L/H, Test100/1200/2800 test sets)."""
    return scan_paired_folder(osp.join(root, 'input'), osp.join(root, 'target'))


def scan_gtrain(root: str) -> list[PairRecord]:
    """GT-Rain: every scene folder holds one clean ``*C-000*`` frame and many rainy ``*R-*`` frames."""
    if not osp.isdir(root):
        raise DataError(f'{root}: folder not found')
    scenes = sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d)) and not d.endswith('.lmdb'))
    records = []
    for scene in scenes:
        images = [osp.basename(p) for p in list_images(osp.join(root, scene))]
        clean = [f for f in images if 'C-000' in f]
        rainy = [f for f in images if 'R-' in f and 'C-000' not in f]
        if not clean and not rainy:
            continue
        if len(clean) != 1:
            found = ', '.join(clean) if clean else 'none'
            raise DataError(f'{osp.join(root, scene)}: GT-Rain scene needs exactly one clean *C-000* frame, '
                            f'found {found}')
        if not rainy:
            raise DataError(f'{osp.join(root, scene)}: GT-Rain scene has no rainy *R-* frame')
        gt = osp.join(root, scene, clean[0])
        for frame in rainy:
            stem = osp.splitext(frame)[0]
            key = stem if stem.startswith(scene) else f'{scene}_{stem}'
            records.append(PairRecord(osp.join(root, scene, frame), gt, sanitize_key(key)))
    return _finish(records, root, 'scene folders with *C-000* and *R-* frames')


def gtav_clean_stem(rainy_stem: str) -> str | None:
    """``A_KK_rest`` -> ``A_rest`` (the rainy frame index is the second ``_`` field); None if no index."""
    parts = rainy_stem.split('_')
    if len(parts) < 2:
        return None
    return '_'.join(parts[:1] + parts[2:])


def _gtav_folder(rainy_dir: str, gt_dir: str, prefix: str) -> list[PairRecord]:
    gt_index = _stem_index(gt_dir)
    records, missing = [], []
    for lq in list_images(rainy_dir):
        stem = osp.splitext(osp.basename(lq))[0]
        clean = gtav_clean_stem(stem)
        if clean is None:
            raise DataError(f'{lq}: GTAV rainy images are named <scene>_<frame>.png (e.g. 0001_03.png)')
        if clean in gt_index:
            records.append(PairRecord(lq, gt_index[clean], sanitize_key(prefix + stem)))
        else:
            missing.append((lq, osp.join(gt_dir, clean + '.png')))
    _raise_missing(missing, f' in {gt_dir}')
    return records


def scan_gtav(root: str, split: str = 'train') -> list[PairRecord]:
    """GTAV-NightRain ``set*/<split>/{rainy,gt}``, or a single ``{rainy,gt}`` folder (e.g. crops)."""
    if osp.isdir(osp.join(root, 'rainy')):
        return _finish(_gtav_folder(osp.join(root, 'rainy'), osp.join(root, 'gt'), ''), root)
    if not osp.isdir(root):
        raise DataError(f'{root}: folder not found')
    sets = sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d, split, 'rainy')))
    records = []
    for name in sets:
        base = osp.join(root, name, split)
        records += _gtav_folder(osp.join(base, 'rainy'), osp.join(base, 'gt'), f'{name}_')
    return _finish(records, root, f'set*/{split}/rainy and set*/{split}/gt folders (option split: {split!r})')


def read_list_file(list_file: str) -> list[str]:
    """Non-empty, non-comment lines of a TransWeather list file."""
    if not osp.isfile(list_file):
        raise DataError(f'{list_file}: list file not found')
    with open(list_file, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip() and not line.lstrip().startswith('#')]


def allweather_clean_path(relpath: str) -> str | None:
    """The clean partner of a list entry: its last ``input`` folder replaced by ``gt``."""
    parts = relpath.split('/')
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == 'input':
            return '/'.join(parts[:i] + ['gt'] + parts[i + 1:])
    return None


def scan_allweather(list_file: str, root: str | None = None) -> list[PairRecord]:
    """TransWeather list file; entries are relative to ``root`` (default: the list file's folder)."""
    root = root if root is not None else osp.dirname(osp.abspath(list_file))
    records, missing = [], []
    for number, line in enumerate(read_list_file(list_file), start=1):
        rel = re.sub(r'^(\./|/)+', '', line.replace('\\', '/'))
        clean = allweather_clean_path(rel)
        if clean is None:
            raise DataError(f'{list_file}, line {number}: {line!r} has no "input" folder, so its clean image '
                            'under "gt" cannot be found')
        lq, gt = osp.join(root, rel), osp.join(root, clean)
        if not osp.isfile(lq):
            raise DataError(f'{list_file}, line {number}: {lq} not found')
        if not osp.isfile(gt):
            missing.append((lq, gt))
            continue
        key_parts = [p for p in osp.splitext(rel)[0].split('/') if p != 'input']
        records.append(PairRecord(lq, gt, sanitize_key('_'.join(key_parts))))
    _raise_missing(missing, '')
    return _finish(records, list_file, 'entries')


def _finish(records: list[PairRecord], where: str, expected: str = 'images') -> list[PairRecord]:
    if not records:
        raise DataError(f'{where}: no rainy/clean pairs found (expected {expected})')
    check_unique_keys(records, where)
    return records


def scan_layout(layout: str, *, root: str | None = None, dataroot_lq: str | None = None,
                dataroot_gt: str | None = None, split: str = 'train', list_file: str | None = None,
                option: str = 'type') -> list[PairRecord]:
    """Pairs of any layout in :data:`LAYOUTS`; ``option`` names the option in error messages."""
    def need(value: str | None, name: str) -> str:
        if not value:
            raise DataError(f'layout {layout!r} needs the option {name!r}')
        return value

    if layout == 'paired_folder':
        if dataroot_lq is None and root is not None:
            return scan_rain13k(root)
        return scan_paired_folder(need(dataroot_lq, 'dataroot_lq'), need(dataroot_gt, 'dataroot_gt'))
    if layout == 'rain13k':
        return scan_rain13k(need(root, 'root'))
    if layout == 'gtrain':
        return scan_gtrain(need(root, 'root'))
    if layout == 'gtav':
        return scan_gtav(need(root, 'root'), split)
    if layout == 'allweather':
        return scan_allweather(need(list_file, 'list_file'), root)
    raise DataError(f'{option}: unknown layout {layout!r}; choose one of {", ".join(LAYOUTS)} (or lmdb)')


def default_lmdb_dir(layout: str, *, root: str | None = None, split: str = 'train', list_file: str | None = None,
                     dataroot_lq: str | None = None) -> str:
    """Where ``rainmer data prepare`` writes ``lq.lmdb`` and ``gt.lmdb`` for a layout by default.

    ``<root>_lmdb`` (``<root>_<split>_lmdb`` for ``gtav``, ``<root>_<list stem>_lmdb`` for ``allweather``,
    ``<dataroot_lq>_lmdb`` for a ``paired_folder`` given by its two folders).
    """
    if layout == 'paired_folder' and dataroot_lq and not root:
        base = dataroot_lq
    elif not root and layout == 'allweather' and list_file:
        base = osp.dirname(osp.abspath(list_file))
    else:
        base = root or ''
    base = base.rstrip('/\\') or '.'
    if layout == 'gtav':
        base += f'_{split}'
    elif layout == 'allweather' and list_file:
        base += '_' + sanitize_key(osp.splitext(osp.basename(list_file))[0])
    return base + '_lmdb'


__all__ = ['PairRecord', 'LAYOUTS', 'IMAGE_EXTENSIONS', 'scan_layout', 'scan_paired_folder', 'scan_rain13k',
           'scan_gtrain', 'scan_gtav', 'scan_allweather', 'default_lmdb_dir', 'gtav_clean_stem',
           'allweather_clean_path', 'sanitize_key', 'list_images', 'check_unique_keys']
