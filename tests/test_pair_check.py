"""The check every dataset runs when built: bad files fail at start-up, LMDB too, and the outcome is cached."""
import os

import lmdb
import numpy as np
import pytest
from data_fixtures import make_rain13k, write

import rainmer  # noqa: F401  (before basicsr: compat shim, registers the datasets)

# isort: split
from basicsr.data import build_dataset

from rainmer.data import pair_check
from rainmer.data.errors import DataError
from rainmer.data.prepare import prepare_layout


def _test_set(root: str, **kw) -> dict:
    return dict(name='Rain100L', type='PairedRainTestDataset', phase='val', layout='rain13k', root=root, **kw)


def _lmdb_set(out) -> dict:
    return dict(name='Rain100L', type='PairedRainTestDataset', phase='val', layout='lmdb',
                dataroot_lq=out.lq_lmdb, dataroot_gt=out.gt_lmdb, io_backend=dict(type='lmdb'))


def _overwrite_lmdb_value(path: str, key: str, value: bytes | None) -> None:
    env = lmdb.open(path, map_size=1 << 30)
    with env.begin(write=True) as txn:
        txn.delete(key.encode()) if value is None else txn.put(key.encode(), value)
    env.close()


@pytest.mark.parametrize('damage, message', [
    ('corrupt', r'lq\.lmdb:001: cannot be decoded as an image'),
    ('missing', r'gt\.lmdb:001: no such file or LMDB key'),
])
def test_a_bad_lmdb_value_fails_when_the_dataset_is_built(tmp_path, damage, message):
    out = prepare_layout('rain13k', root=make_rain13k(str(tmp_path / 'r'), n=3, h=41, w=37), progress=False,
                         log=lambda _: None)
    if damage == 'corrupt':
        _overwrite_lmdb_value(out.lq_lmdb, '001', b'\x89PNG\r\n\x1a\n-cut-')
    else:  # listed in meta_info.txt, absent from the database
        _overwrite_lmdb_value(out.gt_lmdb, '001', None)
    with pytest.raises(DataError, match=message + r'.*1 bad pair in Rain100L'):
        build_dataset(_lmdb_set(out))
    kept = build_dataset(dict(_lmdb_set(out), skip_bad=True))
    assert len(kept) == 2 and [kept[i]['lq_path'] for i in range(2)] == ['000', '002']


def test_the_outcome_is_cached_and_a_changed_file_is_checked_again(tmp_path, monkeypatch):
    monkeypatch.setenv('RAINMER_CACHE_DIR', str(tmp_path / 'cache'))
    root = make_rain13k(str(tmp_path / 'r'), n=3, h=41, w=37)
    calls = []
    original = pair_check.check_pair
    monkeypatch.setattr(pair_check, 'check_pair', lambda *a: calls.append(a[1]) or original(*a))
    assert len(build_dataset(_test_set(root))) == 3 and sorted(calls) == [0, 1, 2]
    build_dataset(_test_set(root))  # a resumed or repeated run
    assert sorted(calls) == [0, 1, 2]
    assert len(os.listdir(tmp_path / 'cache' / 'pair_checks')) == 1
    write(os.path.join(root, 'target', '002.png'), np.zeros((40, 37, 3), np.uint8))  # edited on disk
    with pytest.raises(DataError, match=r'size mismatch: .*input/002\.png is 37x41 .*target/002\.png is 37x40'):
        build_dataset(_test_set(root))
    assert len(calls) == 6
    with pytest.raises(DataError, match='size mismatch'):  # a cached failure fails as fast
        build_dataset(_test_set(root))
    assert len(calls) == 6


def test_check_data_modes(tmp_path):
    root = make_rain13k(str(tmp_path / 'r'), n=2, h=41, w=37)
    with open(os.path.join(root, 'input', '001.png'), 'r+b') as f:
        f.truncate(os.path.getsize(f.name) - 30)  # the end is gone: header mode sees it
    for mode in ('header', 'full', True):
        with pytest.raises(DataError, match=r'001\.png: cannot be decoded'):
            build_dataset(_test_set(root, check_data=mode))
    assert len(build_dataset(_test_set(root, check_data='off'))) == 2
    assert len(build_dataset(_test_set(root, check_data=False))) == 2
    with pytest.raises(DataError, match=r"check_data in the options of val set Rain100L: 'quick' is not one of "):
        build_dataset(_test_set(root, check_data='quick'))
