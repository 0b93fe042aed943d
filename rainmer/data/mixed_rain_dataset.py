"""Mixed deraining training set: any number of named sources (Rain13K, GT-Rain, GTAV-balance, folders)."""
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from rainmer.data.errors import DataError
from rainmer.data.pair_check import check_sources
from rainmer.data.pair_items import train_item, whole_item
from rainmer.data.pair_source import PairSource
from rainmer.data.pair_transforms import check_flip_mode
from rainmer.data.source_sampling import SourceIndexMap


def parse_sources(opt: dict, default_layout: str | None = None) -> list[PairSource]:
    """The ``sources:`` list of a dataset option, or the option itself as a single source."""
    if 'sources' not in opt:
        single = dict(opt)
        single.setdefault('layout', default_layout)
        return [PairSource(single, where=f'datasets.{opt.get("name", "dataset")}', layout_key='layout')]
    entries = opt['sources']
    if not isinstance(entries, list) or not entries:
        raise DataError('sources: expected a non-empty list of sources')
    sources = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DataError(f'sources[{i}]: expected a mapping with name, type, root/dataroot_lq/dataroot_gt')
        sources.append(PairSource(entry, where=f'sources[{i}] ({entry.get("name", "unnamed")})'))
    return sources


def parse_weights(opt: dict) -> list[float] | None:
    """Per-source weights: all given or none (then the sources are simply concatenated)."""
    entries = opt.get('sources') or []
    weights = [entry.get('weight') for entry in entries if isinstance(entry, dict)]
    if all(w is None for w in weights):
        return None
    missing = [entry.get('name', str(i)) for i, entry in enumerate(entries) if entry.get('weight') is None]
    if missing:
        raise DataError(f'sources: weight given for some sources but not for {", ".join(missing)}; '
                        'give every source a weight or none')
    return [float(w) for w in weights]


@DATASET_REGISTRY.register()
class MixedRainDataset(data.Dataset):
    """Training pairs from several sources; see ``docs/datasets.md``.

    Options: ``sources`` (list of ``name``, ``type`` (layout or ``lmdb``), ``root`` or
    ``dataroot_lq``/``dataroot_gt``, ``split``, ``list_file``, ``io_backend``, ``weight``), ``gt_size``
    (128), ``resize_size`` (128), ``use_hflip``, ``use_rot``, ``flip_mode`` (``basicsr`` | ``public``),
    ``small_images`` (``pad`` | ``reject``), ``num_samples`` (epoch length with weights), ``phase``,
    ``check_data`` (``header`` | ``full`` | ``off``) and ``skip_bad`` (see :mod:`rainmer.data.pair_check`).

    Train items: ``lq``, ``gt`` (crop), ``lq_resize``, ``gt_resize`` (whole image resized), ``source`` (index in
    ``sources``), ``lq_path``, ``gt_path``. Other phases give whole images. Flips: ``flip_mode: basicsr``
    (default) draws BasicSR's ``augment`` from ``use_hflip``/``use_rot`` and applies it to the crop and the
    resized views alike; ``flip_mode: public`` is the public Rainmer dataset's ``randint(0, 3)`` (vertical 1/4,
    horizontal 1/4, none 1/2) on the crop only (``use_hflip``/``use_rot`` must then be absent or false).
    """

    default_layout: str | None = None
    # Beside rainmer.option_check.COMMON_DATASET_KEYS: this class, pair_items.train_item and, for a single source
    # given inline (no ``sources``), pair_source.PairSource.
    OPTION_KEYS = frozenset({
        'sources', 'num_samples', 'gt_size', 'resize_size', 'use_hflip', 'use_rot', 'flip_mode', 'small_images',
        'layout', 'root', 'dataroot_lq', 'dataroot_gt', 'split', 'list_file', 'io_backend', 'check_data', 'skip_bad'})
    # Each entry of ``sources``: pair_source.PairSource and parse_weights.
    SOURCE_OPTION_KEYS = frozenset({
        'name', 'type', 'layout', 'root', 'dataroot_lq', 'dataroot_gt', 'split', 'list_file', 'io_backend', 'weight'})

    def __init__(self, opt: dict):
        super().__init__()
        self.opt = opt
        check_flip_mode(opt)
        self.sources = parse_sources(opt, self.default_layout)
        check_sources(self.sources, opt)
        self.index_map = SourceIndexMap([len(s) for s in self.sources], parse_weights(opt), opt.get('num_samples'))

    def __len__(self) -> int:
        return len(self.index_map)

    def __getitem__(self, index: int) -> dict:
        source_id, pair = self.index_map.locate(index)
        source = self.sources[source_id]
        lq, gt, lq_path, gt_path = source.read(pair)
        if self.opt.get('phase', 'train') == 'train':
            item = train_item(lq, gt, self.opt, source.describe(lq_path, 'lq'))
        else:
            item = whole_item(lq, gt)
        item.update(source=source_id, lq_path=lq_path, gt_path=gt_path)
        return item
