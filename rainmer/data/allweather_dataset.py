"""AllWeather (TransWeather) training set: a list file of ``input/`` images with clean partners under ``gt/``."""
from basicsr.utils.registry import DATASET_REGISTRY

from rainmer.data.mixed_rain_dataset import MixedRainDataset


@DATASET_REGISTRY.register()
class AllWeatherDataset(MixedRainDataset):
    """:class:`MixedRainDataset` whose default layout is ``allweather``.

    Options: ``list_file`` (e.g. ``datasets/allweather/allweather.txt``), ``root`` (folder the list entries
    are relative to; default the list file's folder), or ``io_backend: {type: lmdb}`` to read what
    ``rainmer data prepare allweather`` wrote; plus the crop options of :class:`MixedRainDataset`.
    A ``sources:`` list (e.g. Snow100K, Outdoor-Rain and RainDrop list files with weights) also works.
    """

    default_layout = 'allweather'
    OPTION_KEYS = MixedRainDataset.OPTION_KEYS

    def __init__(self, opt: dict):
        if 'sources' in opt:
            opt = dict(opt, sources=[dict(s, type=s.get('type', 'allweather')) for s in opt['sources']])
        super().__init__(opt)
