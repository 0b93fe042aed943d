"""Datasets: prepare -> LMDB -> items with the right shapes, dtypes and pairing; disk == LMDB; bad data."""
import os.path as osp
import random

import cv2
import numpy as np
import pytest
import torch
from data_fixtures import H, W, make_allweather, make_gtav, make_gtrain, make_rain13k, write

import rainmer  # noqa: F401  (before basicsr: compat shim, registers the datasets)

# isort: split
from basicsr.data import build_dataset

from rainmer.data.errors import DataError
from rainmer.data.lmdb_tools import read_meta_info
from rainmer.data.prepare import prepare_layout
from rainmer.data.source_sampling import SourceIndexMap


def _prepare(layout, **kw):
    return prepare_layout(layout, progress=False, log=lambda msg: None, **kw)


@pytest.fixture
def layouts(tmp_path):
    return dict(
        rain13k=make_rain13k(str(tmp_path / 'Rain13K' / 'train'), n=3, ext='.jpg'),
        gtrain=make_gtrain(str(tmp_path / 'GT-RAIN_train'), scenes=2, frames=2),
        gtav=make_gtav(str(tmp_path / 'GTAV-NightRain'), sets=2, scenes=1, frames=2),
    )


def _mixed_opt(sources, **kw):
    opt = dict(name='mixed', type='MixedRainDataset', phase='train', gt_size=32, resize_size=16, use_hflip=True,
               use_rot=True, sources=sources)
    opt.update(kw)
    return opt


def _sources(layouts, backend):
    return [dict(name='Rain13K', type='rain13k', root=layouts['rain13k'], io_backend=dict(type=backend)),
            dict(name='GT-Rain', type='gtrain', root=layouts['gtrain'], io_backend=dict(type=backend)),
            dict(name='GTAV', type='gtav', root=layouts['gtav'], split='train', io_backend=dict(type=backend))]


def _items(dataset, seed):
    random.seed(seed)
    return [dataset[i] for i in range(len(dataset))]


def test_prepare_writes_basicsr_lmdbs(layouts):
    out = _prepare('rain13k', root=layouts['rain13k'])
    assert out.out_dir == layouts['rain13k'] + '_lmdb' and out.pairs == 3 and not out.already_done
    meta = open(osp.join(out.lq_lmdb, 'meta_info.txt')).read().splitlines()
    assert meta == [f'00{i}.png ({H},{W},3) 1' for i in range(3)]
    assert read_meta_info(out.gt_lmdb) == [(f'00{i}', (H, W, 3)) for i in range(3)]
    gtav = _prepare('gtav', root=layouts['gtav'], split='train')
    assert gtav.out_dir.endswith('GTAV-NightRain_train_lmdb') and gtav.pairs == 4


def test_disk_and_lmdb_give_identical_items(layouts):
    for layout, root in layouts.items():
        _prepare(layout, root=root, split='train')
    disk = build_dataset(_mixed_opt(_sources(layouts, 'disk')))
    lmdb = build_dataset(_mixed_opt(_sources(layouts, 'lmdb')))
    assert len(disk) == len(lmdb) == 3 + 4 + 4
    for a, b in zip(_items(disk, 7), _items(lmdb, 7)):
        assert a['source'] == b['source']
        for key in ('lq', 'gt', 'lq_resize', 'gt_resize'):
            assert torch.equal(a[key], b[key]), key
        assert b['lq_path'].endswith(osp.splitext(osp.basename(a['lq_path']))[0])  # LMDB path = key


def test_train_item_shapes_dtypes_and_pairing(layouts):
    ds = build_dataset(_mixed_opt(_sources(layouts, 'disk'), use_hflip=False, use_rot=False))
    random.seed(0)
    item = ds[4]  # GT-Rain
    assert item['source'] == 1 and item['lq_path'].endswith('-R-001.png') and item['gt_path'].endswith('-C-000.png')
    for key, size in (('lq', 32), ('gt', 32), ('lq_resize', 16), ('gt_resize', 16)):
        assert item[key].shape == (3, size, size) and item[key].dtype == torch.float32
        assert 0 <= item[key].min() and item[key].max() <= 1
    # without flips the whole-image views are the RGB resize of the files
    lq = cv2.imread(item['lq_path'])[..., ::-1]
    expected = cv2.resize(np.ascontiguousarray(lq), (16, 16), interpolation=cv2.INTER_LINEAR)
    assert torch.equal(item['lq_resize'], torch.from_numpy(expected.transpose(2, 0, 1).astype(np.float32) / 255))
    # the crop is the same window of both images: where no rain was added they agree
    diff = (item['lq'] - item['gt']).abs().amax(0)
    assert (diff == 0).float().mean() > 0.5
    gt = torch.from_numpy(cv2.imread(item['gt_path'])[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 255)
    found = [(t, x) for t in range(H - 31) for x in range(W - 31) if torch.equal(gt[:, t:t + 32, x:x + 32], item['gt'])]
    assert found


def test_flips_applied_to_crop_and_resize_alike(tmp_path):
    # square image, crop = resize size = image size: crop and whole view must be the same flipped image
    root = make_rain13k(str(tmp_path / 'sq'), n=1, h=40, w=40)
    src = [dict(name='sq', type='rain13k', root=root)]
    ds = build_dataset(_mixed_opt(src, gt_size=40, resize_size=40))
    ref = build_dataset(_mixed_opt(src, gt_size=40, resize_size=40, use_hflip=False, use_rot=False))[0]
    seen = set()
    for seed in range(12):
        random.seed(seed)
        item = ds[0]
        assert torch.equal(item['gt'], item['gt_resize']) and torch.equal(item['lq'], item['lq_resize'])
        index = [torch.equal(item['gt'], t) for t in _dihedral(ref['gt'])].index(True)
        assert torch.equal(item['lq'], _dihedral(ref['lq'])[index])
        seen.add(index)
    assert len(seen) > 2


def test_public_flip_mode_flips_the_crop_only(tmp_path):
    """``flip_mode: public`` (the public Rainmer dataset; distribution in tests/test_prompt_fusion.py)."""
    root = make_rain13k(str(tmp_path / 'sq'), n=1, h=40, w=40)
    src = [dict(name='sq', type='rain13k', root=root)]
    ds = build_dataset(_mixed_opt(src, gt_size=40, resize_size=40, use_hflip=False, use_rot=False, flip_mode='public'))
    ref = build_dataset(_mixed_opt(src, gt_size=40, resize_size=40, use_hflip=False, use_rot=False))[0]
    seen = set()
    for seed in range(16):
        random.seed(seed)
        item = ds[0]
        assert torch.equal(item['gt_resize'], ref['gt_resize']) and torch.equal(item['lq_resize'], ref['lq_resize'])
        index = [torch.equal(item['gt'], t) for t in _dihedral(ref['gt'])].index(True)
        assert torch.equal(item['lq'], _dihedral(ref['lq'])[index])
        seen.add(index)
    assert seen == {0, 1, 2}  # none, vertical, horizontal: never both, never transposed
    with pytest.raises(DataError, match='use_hflip'):
        build_dataset(_mixed_opt(src, gt_size=40, resize_size=40, use_rot=False, flip_mode='public'))
    with pytest.raises(DataError, match='flip_mode'):
        build_dataset(_mixed_opt(src, gt_size=40, flip_mode='vertical'))
    opt = dict(_mixed_opt(src, flip_mode='public'))
    for key in ('use_hflip', 'use_rot'):
        opt.pop(key)
    build_dataset(opt)


def _dihedral(x):
    outs = []
    for t in (x, x.transpose(1, 2)):
        outs += [t, t.flip(1), t.flip(2), t.flip(1).flip(2)]
    return outs


def test_collate_and_dataloader(layouts):
    ds = build_dataset(_mixed_opt(_sources(layouts, 'disk')))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)))
    assert batch['lq'].shape == (4, 3, 32, 32) and batch['gt_resize'].shape == (4, 3, 16, 16)
    assert batch['source'].dtype == torch.int64 and len(batch['lq_path']) == 4


def test_weights_map_indices_to_sources(layouts):
    srcs = _sources(layouts, 'disk')
    for src, weight in zip(srcs, (2, 1, 1)):
        src['weight'] = weight
    ds = build_dataset(_mixed_opt(srcs))
    # every pair reachable: N = max(3 / .5, 4 / .25, 4 / .25) = 16 -> 8, 4, 4
    assert len(ds) == 16 and ds.index_map.counts == [8, 4, 4]
    located = [ds.index_map.locate(i) for i in range(16)]
    assert [s for s, _ in located].count(0) == 8
    assert {p for s, p in located if s == 0} == {0, 1, 2}
    assert located == [ds.index_map.locate(i) for i in range(16)]
    srcs[1].pop('weight')
    with pytest.raises(DataError, match='GT-Rain'):
        build_dataset(_mixed_opt(srcs))


def test_index_map_shares_large():
    m = SourceIndexMap([13712, 26000, 9000], [1, 1, 1])
    counts = np.array(m.counts)
    assert np.allclose(counts / counts.sum(), 1 / 3, atol=1e-4)
    assert all(c >= n for c, n in zip(m.counts, [13712, 26000, 9000]))
    assert len(SourceIndexMap([5, 7])) == 12


def test_small_images_pad_or_reject(tmp_path):
    root = make_rain13k(str(tmp_path / 's'), n=1, h=20, w=24)
    src = [dict(name='small', type='rain13k', root=root)]
    item = build_dataset(_mixed_opt(src, small_images='pad'))[0]
    assert item['lq'].shape == (3, 32, 32) and item['lq_resize'].shape == (3, 16, 16)
    with pytest.raises(DataError, match=r'000\.png: 24x20 is smaller than the 32x32 crop'):
        build_dataset(_mixed_opt(src, small_images='reject'))[0]


@pytest.mark.parametrize('kind, message', [
    ('unreadable', r'000\.png: cannot be decoded'),
    ('mismatch', r'size mismatch: .*input/000\.png is 48x40 .*target/000\.png is 40x32'),
    ('gray', r'000\.png: grayscale'),
    ('16bit', r'000\.png: 16-bit image'),
])
def test_bad_pairs_reported_by_dataset_and_prepare(tmp_path, kind, message):
    root = make_rain13k(str(tmp_path / kind), n=2)
    bad_in = osp.join(root, 'input', '000.png')
    bad_gt = osp.join(root, 'target', '000.png')
    if kind == 'unreadable':
        open(bad_in, 'wb').write(b'not an image')
    elif kind == 'mismatch':
        write(bad_gt, np.zeros((32, 40, 3), np.uint8))
    elif kind == 'gray':
        write(bad_in, np.zeros((H, W), np.uint8))
    else:
        write(bad_gt, np.zeros((H, W, 3), np.uint16))
    source = [dict(name='bad', type='rain13k', root=root)]
    with pytest.raises(DataError, match=message + r'.*; 1 bad pair in bad: .* set skip_bad: true in datasets\.train'):
        build_dataset(_mixed_opt(source))  # checked when built, before any training
    kept = build_dataset(_mixed_opt(source, skip_bad=True))
    assert len(kept) == 1 and kept.sources[0].keys == ['001']
    ds = build_dataset(_mixed_opt(source, check_data='off'))  # unchecked: the read itself still names the file
    with pytest.raises(DataError, match=message):
        ds[0]
    assert ds[1]['lq'].shape == (3, 32, 32)
    with pytest.raises(DataError, match=message):
        _prepare('rain13k', root=root)
    assert not osp.exists(root + '_lmdb/lq.lmdb') and osp.isfile(root + '_lmdb/bad_pairs.txt')
    out = _prepare('rain13k', root=root, skip_bad=True)
    assert out.pairs == 1 and out.skipped_bad == 1
    assert [k for k, _ in read_meta_info(out.lq_lmdb)] == ['001']


def test_prepare_resumable_and_detects_interrupted(tmp_path):
    root = make_rain13k(str(tmp_path / 'r'), n=2)
    logs = []
    first = prepare_layout('rain13k', root=root, progress=False, log=logs.append)
    again = prepare_layout('rain13k', root=root, progress=False, log=logs.append)
    assert again.already_done and again.pairs == first.pairs == 2 and 'already prepared' in logs[-1]
    # an interrupted build leaves *.partial folders: the dataset refuses it, prepare rebuilds it
    import shutil
    shutil.move(first.lq_lmdb, first.lq_lmdb + '.partial')
    with pytest.raises(DataError, match='interrupted'):
        build_dataset(_mixed_opt([dict(name='r', type='rain13k', root=root, io_backend=dict(type='lmdb'))]))
    rebuilt = prepare_layout('rain13k', root=root, progress=False, log=logs.append)
    assert 'interrupted' in logs[-1] and not rebuilt.already_done and osp.isdir(rebuilt.lq_lmdb)
    # LMDBs without the completion marker are not trusted
    import os
    os.remove(osp.join(rebuilt.out_dir, 'rainmer_prepare.json'))
    with pytest.raises(DataError, match='--force'):
        prepare_layout('rain13k', root=root, progress=False, log=logs.append)
    assert prepare_layout('rain13k', root=root, progress=False, log=logs.append, force=True).pairs == 2


def test_lmdb_key_mismatch_reported(tmp_path):
    a = _prepare('rain13k', root=make_rain13k(str(tmp_path / 'a'), n=2))
    b = _prepare('rain13k', root=make_rain13k(str(tmp_path / 'b'), n=3))
    src = dict(name='x', type='lmdb', dataroot_lq=a.lq_lmdb, dataroot_gt=b.gt_lmdb, io_backend=dict(type='lmdb'))
    with pytest.raises(DataError, match="'002' only in"):
        build_dataset(_mixed_opt([src]))


def test_test_sets_whole_images_unique_names(layouts, tmp_path):
    gtav_test = make_gtav(str(tmp_path / 'GTAV-test'), sets=2, split='test', scenes=1, frames=2)
    ds = build_dataset(dict(name='GTAV', type='PairedRainTestDataset', layout='gtav', root=gtav_test, phase='val',
                            io_backend=dict(type='disk'), source_id=2))
    names = [osp.splitext(osp.basename(ds[i]['lq_path']))[0] for i in range(len(ds))]
    assert names == ['set1_0000_00', 'set1_0000_01', 'set2_0000_00', 'set2_0000_01']
    item = ds[0]
    assert item['lq'].shape == item['gt'].shape == (3, H, W) and item['source'] == 2
    assert osp.isfile(item['gt_path'])
    _prepare('gtrain', root=layouts['gtrain'])
    for backend in ('disk', 'lmdb'):
        gt_rain = build_dataset(dict(name='GT-Rain', type='PairedRainTestDataset', layout='gtrain',
                                     root=layouts['gtrain'], phase='val', io_backend=dict(type=backend)))
        stems = [osp.splitext(osp.basename(gt_rain[i]['lq_path']))[0] for i in range(len(gt_rain))]
        assert stems == ['Scene_0-R-000', 'Scene_0-R-001', 'Scene_1-R-000', 'Scene_1-R-001']
    sub = build_dataset(dict(name='sub', type='PairedRainTestDataset', layout='rain13k', root=layouts['rain13k'],
                             phase='val', max_pairs=2))
    assert len(sub) == 2


def test_allweather_train_and_lmdb(tmp_path):
    list_file = make_allweather(str(tmp_path / 'allweather'), n=3)
    opt = dict(name='aw', type='AllWeatherDataset', phase='train', gt_size=32, list_file=list_file)
    disk = build_dataset(opt)
    out = _prepare('allweather', list_file=list_file)
    assert out.out_dir.endswith('allweather_allweather_lmdb')
    lmdb = build_dataset(dict(opt, io_backend=dict(type='lmdb')))
    a, b = _items(disk, 3), _items(lmdb, 3)
    assert len(a) == 3 and all(torch.equal(x['lq'], y['lq']) and torch.equal(x['gt_resize'], y['gt_resize'])
                                 for x, y in zip(a, b))
    assert a[0]['lq_resize'].shape == (3, 128, 128) and a[0]['gt_path'].endswith('snow/gt/im_0.png')
