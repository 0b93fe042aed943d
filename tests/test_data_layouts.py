"""Scanning each standard layout finds the right pairs and reports what does not fit."""
import logging
import os
import os.path as osp

import pytest
from data_fixtures import (
    ALLWEATHER_TEST_LISTS,
    make_allweather,
    make_allweather_public,
    make_gtav,
    make_gtrain,
    make_gtrain_public,
    make_rain13k,
    write,
)

from rainmer.data.errors import DataError
from rainmer.data.layouts import (
    allweather_clean_path,
    default_lmdb_dir,
    gtav_clean_stem,
    sanitize_key,
    scan_allweather,
    scan_gtrain,
    scan_layout,
)


def test_rain13k_pairs_same_names(tmp_path):
    root = make_rain13k(str(tmp_path / 'Rain13K'), n=3, ext='.jpg')
    recs = scan_layout('rain13k', root=root)
    assert [osp.basename(r.lq) for r in recs] == ['000.jpg', '001.jpg', '002.jpg']
    assert all(osp.basename(r.lq) == osp.basename(r.gt) and '/target/' in r.gt for r in recs)
    assert [r.key for r in recs] == ['000', '001', '002']


def test_gtrain_many_rainy_frames_to_one_clean(tmp_path):
    root = make_gtrain(str(tmp_path / 'GT-RAIN_train'), scenes=2, frames=3)
    recs = scan_layout('gtrain', root=root)
    assert len(recs) == 6
    for r in recs:
        scene = osp.basename(osp.dirname(r.lq))
        assert r.gt == osp.join(root, scene, f'{scene}-C-000.png')
        assert r.key.startswith(scene) and '-R-' in r.key
    assert len({r.key for r in recs}) == 6


def test_gtav_naming_and_unique_keys_across_sets(tmp_path):
    root = make_gtav(str(tmp_path / 'GTAV'), sets=2, split='test')
    recs = scan_layout('gtav', root=root, split='test')
    assert len(recs) == 8
    first = recs[0]
    assert first.lq.endswith('set1/test/rainy/0000_00.png') and first.gt.endswith('set1/test/gt/0000.png')
    assert first.key == 'set1_0000_00'
    assert len({r.key for r in recs}) == 8
    assert gtav_clean_stem('0011_00_set2_3crop') == '0011_set2_3crop'
    assert gtav_clean_stem('0011') is None


def test_allweather_list_file_clean_under_gt(tmp_path):
    list_file = make_allweather(str(tmp_path / 'aw'), n=3)
    recs = scan_layout('allweather', list_file=list_file)
    assert len(recs) == 3
    assert recs[0].gt == osp.join(str(tmp_path / 'aw'), 'snow', 'gt', 'im_0.png')
    assert recs[0].key == 'snow_im_0'
    assert allweather_clean_path('input/a/input_b.png') == 'gt/a/input_b.png'


def test_missing_partner_named(tmp_path):
    root = make_rain13k(str(tmp_path / 'r'), n=2)
    os.remove(osp.join(root, 'target', '001.png'))
    with pytest.raises(DataError, match=r'001\.png'):
        scan_layout('rain13k', root=root)


def test_a_clean_image_without_rainy_partner_is_named_in_a_warning(tmp_path, caplog):
    root = make_rain13k(str(tmp_path / 'r'), n=3)
    os.remove(osp.join(root, 'input', '001.png'))
    toolbox_logger = logging.getLogger('basicsr')  # the run's log (it does not propagate to the root logger)
    toolbox_logger.addHandler(caplog.handler)
    try:
        assert [r.key for r in scan_layout('rain13k', root=root)] == ['000', '002']
    finally:
        toolbox_logger.removeHandler(caplog.handler)
    assert (f"1 clean image(s) without a rainy partner in {osp.join(root, 'input')} are not used: "
            f"{osp.join(root, 'target', '001.png')}") in caplog.text


def test_gtrain_scene_without_clean_frame(tmp_path):
    root = make_gtrain(str(tmp_path / 'g'), scenes=1)
    os.remove(osp.join(root, 'Scene_0', 'Scene_0-C-000.png'))
    with pytest.raises(DataError, match='Scene_0.*C-000'):
        scan_layout('gtrain', root=root)


def test_gtav_missing_clean_and_bad_name(tmp_path):
    root = make_gtav(str(tmp_path / 'v'), sets=1)
    os.remove(osp.join(root, 'set1', 'train', 'gt', '0001.png'))
    with pytest.raises(DataError, match=r'0001_00\.png.*0001\.png'):
        scan_layout('gtav', root=root)
    root2 = str(tmp_path / 'v2')
    write(osp.join(root2, 'rainy', 'abc.png'), __import__('numpy').zeros((4, 4, 3), 'uint8'))
    os.makedirs(osp.join(root2, 'gt'))
    with pytest.raises(DataError, match='abc.png'):
        scan_layout('gtav', root=root2)


def test_allweather_entry_without_input_folder(tmp_path):
    list_file = tmp_path / 'list.txt'
    list_file.write_text('foo/a.png\n')
    with pytest.raises(DataError, match=r'list.txt, line 1'):
        scan_layout('allweather', list_file=str(list_file))


def test_unknown_layout_and_missing_option(tmp_path):
    with pytest.raises(DataError, match='unknown layout'):
        scan_layout('rain14k', root=str(tmp_path))
    with pytest.raises(DataError, match="'root'"):
        scan_layout('gtrain')
    with pytest.raises(DataError, match='no rainy/clean pairs'):
        scan_layout('gtav', root=str(tmp_path))


def test_default_lmdb_dirs():
    assert default_lmdb_dir('rain13k', root='datasets/train/Rain13K/') == 'datasets/train/Rain13K_lmdb'
    assert default_lmdb_dir('gtav', root='datasets/GTAV-NightRain', split='test') == \
        'datasets/GTAV-NightRain_test_lmdb'
    assert default_lmdb_dir('allweather', root='datasets/allweather', list_file='x/allweather.txt') == \
        'datasets/allweather_allweather_lmdb'
    assert sanitize_key('a.b c') == 'a_b_c'


def test_gtrain_public_names_and_splits(tmp_path):
    """GT-RAIN as downloaded: ``GT-RAIN_{train,val,test}/<scene>/<scene>-R-NNN.png`` and one ``<scene>-C-000.png``;
    scene names hold ``_`` and ``-``."""
    root = make_gtrain_public(str(tmp_path), scenes=('Gurutto_1-2', 'M1135_0-0'), frames=3)
    for split in ('train', 'val', 'test'):
        records = scan_gtrain(osp.join(root, f'GT-RAIN_{split}'))
        assert [r.key for r in records] == [f'{scene}-R-{k:03d}' for scene in ('Gurutto_1-2', 'M1135_0-0')
                                            for k in range(3)]
        assert all(osp.basename(r.gt) == osp.basename(osp.dirname(r.gt)) + '-C-000.png' for r in records)
        assert all(osp.dirname(r.lq) == osp.dirname(r.gt) for r in records)


def test_allweather_public_test_lists_resolve_against_their_folder(tmp_path):
    root = make_allweather_public(str(tmp_path / 'datasets'), test=2)
    records = scan_allweather(osp.join(root, 'allweather.txt'))
    assert len(records) == 3 and all(r.gt == r.lq.replace('/input/', '/gt/') for r in records)
    for list_name in ALLWEATHER_TEST_LISTS:
        records = scan_allweather(osp.join(root, 'test', list_name))
        assert [osp.dirname(r.lq) for r in records] == [osp.join(root, 'test', 'input')] * 2
        assert all(r.gt == osp.join(root, 'test', 'gt', osp.basename(r.lq)) for r in records)


def test_gtav_balance_test_crop_names_pair():
    assert gtav_clean_stem('0001_03_set2') == '0001_set2'
    assert gtav_clean_stem('0001-t4_03_set2') == '0001-t4_set2'
