"""Whole-image paired test/validation sets for every benchmark layout (Rain100L/H, Test*, GT-Rain, GTAV, ...)."""
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from rainmer.data.errors import DataError
from rainmer.data.pair_check import check_sources
from rainmer.data.pair_items import named_path, whole_item
from rainmer.data.pair_source import PairSource


@DATASET_REGISTRY.register()
class PairedRainTestDataset(data.Dataset):
    """One benchmark, whole images: ``lq``, ``gt``, ``lq_path``, ``gt_path``, ``source``.

    Options: ``layout`` (``rain13k`` | ``paired_folder`` | ``gtrain`` | ``gtav`` | ``allweather`` | ``lmdb``),
    ``root`` or ``dataroot_lq``/``dataroot_gt``, ``split`` (gtav, default ``test``), ``list_file``
    (allweather), ``io_backend``, ``source_id`` (default 0), ``max_pairs`` (evenly spaced subset),
    ``check_data`` (``header`` | ``full`` | ``off``) and ``skip_bad`` (see :mod:`rainmer.data.pair_check`).

    ``lq_path``'s file stem is unique within the set (BasicSR saves results by it): GT-Rain frames keep
    their (scene-prefixed) names; GTAV frames, whose names repeat across ``set1..3``, get ``setN_`` prefixed.
    """

    # Beside rainmer.option_check.COMMON_DATASET_KEYS: this class and pair_source.PairSource.
    OPTION_KEYS = frozenset({
        'layout', 'root', 'dataroot_lq', 'dataroot_gt', 'split', 'list_file', 'io_backend', 'source_id', 'max_pairs',
        'check_data', 'skip_bad'})

    def __init__(self, opt: dict):
        super().__init__()
        self.opt = opt
        source_opt = dict(opt)
        source_opt.setdefault('split', 'test')
        self.source = PairSource(source_opt, where=f'datasets.{opt.get("name", "test")}', layout_key='layout')
        max_pairs = opt.get('max_pairs')
        if max_pairs:
            if int(max_pairs) <= 0:
                raise DataError(f'max_pairs: expected a positive number, got {max_pairs}')
            count = min(int(max_pairs), len(self.source))
            step = len(self.source) / count
            self.source.keep([int(i * step) for i in range(count)])
        check_sources([self.source], opt)
        # Keys are unique per set (checked by the scanners and by prepare); LMDB paths are the keys.
        self.names = [named_path(lq, key) for (lq, _), key in zip(self.source.pairs, self.source.keys)]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        lq, gt, _, gt_path = self.source.read(index)
        item = whole_item(lq, gt)
        item.update(lq_path=self.names[index], gt_path=gt_path, source=int(self.opt.get('source_id', 0)))
        return item
