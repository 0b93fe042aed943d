"""``rainmer data`` commands end to end on tiny generated layouts."""
import csv
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from data_fixtures import clean_image, make_allweather, make_gtav, make_gtrain, make_rain13k, write

import rainmer  # noqa: F401

# isort: split
from basicsr.data import build_dataset

from rainmer.data.cli import main
from rainmer.data.density import rain_density
from rainmer.data.lmdb_tools import read_meta_info


def run(capsys, *argv):
    code = main(['--quiet' if a == '-q' else a for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_prepare_every_layout_then_train_items(tmp_path, capsys):
    rain13k = make_rain13k(str(tmp_path / 'Rain13K' / 'train'), ext='.jpg')
    gtrain = make_gtrain(str(tmp_path / 'GT-RAIN_train'))
    gtav = make_gtav(str(tmp_path / 'GTAV-NightRain'), split='train')
    list_file = make_allweather(str(tmp_path / 'allweather'))
    folder = make_rain13k(str(tmp_path / 'pf'), n=2)
    commands = [('rain13k', rain13k), ('gtrain', gtrain), ('gtav', gtav, '--split', 'train'),
                ('allweather', '--list-file', list_file),
                ('paired_folder', '--lq', osp.join(folder, 'input'), '--gt', osp.join(folder, 'target'))]
    expected = [rain13k + '_lmdb', gtrain + '_lmdb', gtav + '_train_lmdb',
                osp.join(str(tmp_path / 'allweather') + '_allweather_lmdb'), osp.join(folder, 'input') + '_lmdb']
    for command, out_dir in zip(commands, expected):
        code, out, err = run(capsys, 'prepare', *command, '-q')
        assert code == 0, err
        assert f'wrote {out_dir}/lq.lmdb and {out_dir}/gt.lmdb' in out and 'dataroot_lq' in out
    code, out, _ = run(capsys, 'prepare', 'rain13k', rain13k, '-q')
    assert code == 0 and 'already prepared (3 pairs)' in out
    sources = [dict(name=c[0], type='lmdb', root=d, io_backend=dict(type='lmdb')) for c, d in zip(commands, expected)]
    ds = build_dataset(dict(name='all', type='MixedRainDataset', phase='train', gt_size=32, sources=sources))
    assert len(ds) == 3 + 6 + 8 + 3 + 2
    assert {ds[i]['source'] for i in range(len(ds))} == set(range(5))


def test_prepare_bad_input_one_line_error(tmp_path, capsys):
    root = make_rain13k(str(tmp_path / 'r'), n=2)
    write(osp.join(root, 'input', '001.png'), np.zeros((40, 48), np.uint8))
    code, out, err = run(capsys, 'prepare', 'rain13k', root, '-q')
    assert code == 1 and 'Traceback' not in err and len(err.strip().splitlines()) == 1
    assert 'input/001.png: grayscale' in err and '--skip-bad' in err
    code, _, err = run(capsys, 'prepare', 'rain13k', str(tmp_path / 'missing'), '-q')
    assert code == 1 and 'missing/input: folder not found' in err
    code, _, err = run(capsys, 'prepare', 'gtrain', '-q')
    assert code == 1 and "needs the option 'root'" in err
    assert run(capsys, 'prepare', 'rain14k', root)[0] == 2


def _gtav_with_tile_densities(root, amounts):
    """One 64x64 GTAV frame per entry of ``amounts``: four 32x32 tiles with the given rain amounts."""
    rng = np.random.default_rng(0)
    for n, tile_amounts in enumerate(amounts):
        clean = clean_image(n, 64, 64)
        rainy = clean.astype(np.float32)
        for t, amount in enumerate(tile_amounts):
            top, left = 32 * (t // 2), 32 * (t % 2)
            mask = rng.random((32, 32)) < amount
            rainy[top:top + 32, left:left + 32][mask] += 120
        write(osp.join(root, 'set1', 'train', 'gt', f'{n:04d}.png'), clean)
        write(osp.join(root, 'set1', 'train', 'rainy', f'{n:04d}_00.png'), np.clip(rainy, 0, 255).astype(np.uint8))
    return root


def test_stats_csv_histogram_and_crops(tmp_path, capsys):
    root = make_rain13k(str(tmp_path / 'Rain100L'), n=3)
    code, out, err = run(capsys, 'stats', 'rain13k', root, '--out', str(tmp_path / 'st'), '-q')
    assert code == 0, err
    with open(tmp_path / 'st' / 'Rain100L_density.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    lq, gt = cv2.imread(osp.join(root, 'input', '000.png')), cv2.imread(osp.join(root, 'target', '000.png'))
    assert float(rows[0]['density']) == pytest.approx(rain_density(lq, gt))
    png = cv2.imread(str(tmp_path / 'st' / 'Rain100L_density.png'))
    assert png is not None and png.shape[2] == 3 and png.std() > 0
    assert 'mean density' in out and 'shares' in out
    gtav = _gtav_with_tile_densities(str(tmp_path / 'gtav'), [[0, 0.1, 0.3, 0.6]])
    code, out, _ = run(capsys, 'stats', 'gtav', gtav, '--crop', '32', '--name', 'crops', '--out',
                       str(tmp_path / 'st'), '-q')
    with open(tmp_path / 'st' / 'crops_density.csv') as f:
        densities = [float(r['density']) for r in csv.DictReader(f)]
    assert code == 0 and len(densities) == 4 and densities[0] == 0 and densities == sorted(densities)


def test_rain_density_formula():
    clean = np.full((2, 2, 3), 0.5, np.float32)
    rainy = clean.copy()
    rainy[0, 0] = [1.0, 0.5, 0.5]
    expected = (0.5 / (1.0 + 0.5 + 1e-3)) / 4
    assert rain_density(rainy, clean) == pytest.approx(expected, rel=1e-5)
    assert rain_density(clean, clean) == 0


def test_balance_selects_expected_proportions(tmp_path, capsys):
    from rainmer.data.density import balance_selection, reference_shares
    densities = np.concatenate([np.full(1000, 0.02), np.full(500, 0.06), np.full(200, 0.2)])
    chosen, warnings = balance_selection(densities, (0.3, 0.2), np.random.default_rng(0))
    picked = densities[chosen]
    assert len(chosen) == 400 and not warnings
    assert [(picked == v).sum() for v in (0.02, 0.06, 0.2)] == [120, 80, 200]
    again, _ = balance_selection(densities, (0.3, 0.2), np.random.default_rng(0))
    assert np.array_equal(chosen, again)
    few, warnings = balance_selection(densities, (0.1, 0.8), np.random.default_rng(0))
    assert (densities[few] == 0.06).sum() == 500 and 'only 500 exist' in warnings[0]
    shares = reference_shares([np.array([0.01, 0.05, 0.5, 0.5]), np.array([0.01, 0.01, 0.02, 0.1])])
    assert shares == pytest.approx([0.5, 0.125, 0.375])

    # end to end: 3 frames x 4 crops; reference CSVs ask for 1/4 low and 1/4 mid -> 2 high crops + 1 + 1
    gtav = _gtav_with_tile_densities(str(tmp_path / 'GTAV'), [[0, 0, 0.002, 0.5], [0, 0.003, 0.002, 0.5],
                                                              [0, 0.004, 0.2, 0.2]])
    code, out, err = run(capsys, 'stats', 'gtav', gtav, '--crop', '32', '--out', str(tmp_path / 'st'), '-q')
    densities = np.array([float(r['density']) for r in csv.DictReader(open(tmp_path / 'st' / 'GTAV_density.csv'))])
    assert code == 0 and (densities > 0.08).sum() == 2 and ((densities > 0.04) & (densities <= 0.08)).sum() == 2
    ref = tmp_path / 'ref.csv'
    ref.write_text('density\n0.01\n0.05\n0.5\n0.5\n')
    out_dir = str(tmp_path / 'GTAV-balance')
    code, out, err = run(capsys, 'balance', 'gtav', gtav, '--crop', '32', '--reference', str(ref), '--out', out_dir,
                         '--seed', '3', '-q')
    assert code == 0, err
    keys = [k for k, _ in read_meta_info(osp.join(out_dir, 'lq.lmdb'))]
    selected = list(csv.DictReader(open(osp.join(out_dir, 'selection.csv'))))
    assert len(keys) == len(selected) == 4 and keys == [r['key'] for r in selected]
    picked = np.array([float(r['density']) for r in selected])
    assert (picked > 0.08).sum() == 2 and (picked <= 0.04).sum() == 1
    item = build_dataset(dict(name='b', type='MixedRainDataset', phase='train', gt_size=32,
                              sources=[dict(name='GTAV-balance', type='lmdb', root=out_dir,
                                            io_backend=dict(type='lmdb'))]))[0]
    assert item['lq'].shape == (3, 32, 32)
    code, out, _ = run(capsys, 'balance', 'gtav', gtav, '--crop', '32', '--shares', '0.25', '0.25', '--out', out_dir,
                       '-q')
    assert code == 0 and 'already balanced' in out
    folder = str(tmp_path / 'GTAV-balance-png')
    code, out, _ = run(capsys, 'balance', 'gtav', gtav, '--crop', '32', '--shares', '0', '0', '--out', folder,
                       '--format', 'folder', '-q')
    assert code == 0 and sorted(os.listdir(osp.join(folder, 'input'))) == ['set1_0000_00_t3.png',
                                                                          'set1_0001_00_t3.png']
    code, _, err = run(capsys, 'balance', 'gtav', gtav, '--crop', '32', '--shares', '0.7', '0.4', '--out', folder)
    assert code == 1 and 'sum < 1' in err


def _photos(folder, n=4, size=64):
    for i in range(n):
        write(osp.join(folder, f'photo{i}.png'), clean_image(50 + i, size, size))
    return folder


def _read_domain(out, split, domain):
    folder = osp.join(out, split, domain)
    names = sorted(os.listdir(osp.join(folder, 'input')))
    lq = np.stack([cv2.imread(osp.join(folder, 'input', n)) for n in names]).astype(np.float32) / 255
    gt = np.stack([cv2.imread(osp.join(folder, 'target', n)) for n in names]).astype(np.float32) / 255
    return names, lq, gt


def test_synth_deterministic_and_domain_statistics(tmp_path, capsys):
    photos = _photos(str(tmp_path / 'clean'))
    outs = [str(tmp_path / name) for name in ('a', 'b', 'c')]
    for out, seed in zip(outs, ('1', '1', '2')):
        code, text, err = run(capsys, 'synth', photos, out, '--seed', seed, '--val', '1', '-q')
        assert code == 0, err
    for domain in ('day', 'heavy', 'night'):
        for split in ('train', 'val'):
            a, b = _read_domain(outs[0], split, domain), _read_domain(outs[1], split, domain)
            assert a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
        assert not np.array_equal(_read_domain(outs[0], 'train', domain)[1], _read_domain(outs[2], 'train', domain)[1])
    train_names = _read_domain(outs[0], 'train', 'day')[0]
    val_names = _read_domain(outs[0], 'val', 'day')[0]
    assert len(train_names) == 3 and len(val_names) == 1 and not set(train_names) & set(val_names)

    _, day_lq, day_gt = _read_domain(outs[0], 'train', 'day')
    _, heavy_lq, heavy_gt = _read_domain(outs[0], 'train', 'heavy')
    _, night_lq, night_gt = _read_domain(outs[0], 'train', 'night')
    # day: streaks only brighten (screen blend) and touch a minority of pixels; clean target untouched
    assert np.array_equal(day_gt, heavy_gt) and (day_lq >= day_gt - 1 / 255).all()
    changed = (np.abs(day_lq - day_gt).max(-1) > 8 / 255).mean()
    assert 0.01 < changed < 0.6
    # heavy: veiling haze lifts the mean and flattens the contrast; denser rain than day
    assert heavy_lq.mean() > day_lq.mean() + 0.1 and heavy_lq.std() < 0.8 * heavy_gt.std()
    density = lambda lq, gt: np.mean([rain_density(a, b) for a, b in zip(lq, gt)])  # noqa: E731
    assert density(heavy_lq, heavy_gt) > density(day_lq, day_gt)
    # night: low light (both images), colour cast, brighter streaks/glow in the input
    assert night_lq.mean() < 0.5 * day_lq.mean() and night_gt.mean() < 0.5 * day_gt.mean()
    assert night_lq.mean() > night_gt.mean()
    # every domain folder is a ready MixedRainDataset source
    sources = [dict(name=d, type='rain13k', root=osp.join(outs[0], 'train', d)) for d in ('day', 'heavy', 'night')]
    ds = build_dataset(dict(name='synth', type='MixedRainDataset', phase='train', gt_size=32, sources=sources))
    assert len(ds) == 9 and ds[8]['source'] == 2 and ds[8]['gt_resize'].dtype == torch.float32


def test_synth_user_errors(tmp_path, capsys):
    photos = _photos(str(tmp_path / 'clean'), n=2)
    write(osp.join(photos, 'gray.png'), np.zeros((32, 32), np.uint8))
    out = str(tmp_path / 'out')
    code, text, err = run(capsys, 'synth', photos, out, '--domains', 'night', '-q')
    assert code == 0 and 'gray.png: grayscale' in text + err and 'wrote 2 pairs' in text
    code, _, err = run(capsys, 'synth', photos, out, '-q')
    assert code == 1 and '--force' in err
    code, _, err = run(capsys, 'synth', photos, out, '--domains', 'fog', '--force', '-q')
    assert code == 1 and "'fog'" in err
    code, _, err = run(capsys, 'synth', photos, out, '--val', '5', '--force', '-q')
    assert code == 1 and '--val' in err
    code, _, err = run(capsys, 'synth', str(tmp_path / 'nowhere'), out, '--force', '-q')
    assert code == 1 and 'nowhere: folder not found' in err


def _gtav_frames(root, split, amounts):
    """32x32 GTAV frames ``set*/<split>/rainy/<scene>_<frame>.png`` with clean ``gt/<scene>.png``; ``amounts`` maps
    (set, scene, frame) to the share of rain pixels."""
    rng = np.random.default_rng(1)
    for (set_name, scene, frame), amount in amounts.items():
        clean = clean_image(int(scene) + 3 * int(set_name[-1]), 32, 32)
        rainy = clean.astype(np.float32)
        rainy[rng.random((32, 32)) < amount] += 120
        write(osp.join(root, set_name, split, 'gt', f'{scene}.png'), clean)
        write(osp.join(root, set_name, split, 'rainy', f'{scene}_{frame}.png'), np.clip(rainy, 0, 255).astype(np.uint8))
    return root


def test_balance_writes_the_balanced_test_crops_in_gtav_names(tmp_path, capsys):
    gtav = str(tmp_path / 'GTAV-NightRain')
    _gtav_frames(gtav, 'train', {('set1', '0000', '00'): 0.5, ('set1', '0001', '00'): 0.0})
    _gtav_frames(gtav, 'test', {('set1', '0000', '00'): 0.5, ('set1', '0000', '01'): 0.5, ('set1', '0001', '00'): 0.0,
                                ('set1', '0002', '00'): 0.0, ('set2', '0000', '00'): 0.5, ('set2', '0000', '03'): 0.5})
    out = str(tmp_path / 'GTAV-balance')
    code, text, err = run(capsys, 'balance', 'gtav', gtav, '--crop', '32', '--shares', '0.2', '0', '--out', out, '-q')
    assert code == 0, err
    assert len(read_meta_info(osp.join(out, 'lq.lmdb'))) == 1  # training: the one rainy crop (1 / 0.8 * 0.2 -> 0 low)
    # test: 4 rainy crops, 4 / 0.8 = 5 -> 1 of the 2 clean-looking crops, same balancing as the training split
    rainy = sorted(os.listdir(osp.join(out, 'test', 'rainy')))
    assert rainy[:4] == ['0000_00_set1.png', '0000_00_set2.png', '0000_01_set1.png', '0000_03_set2.png']
    assert len(rainy) == 5 and rainy[4] in ('0001_00_set1.png', '0002_00_set1.png')
    gt = sorted(os.listdir(osp.join(out, 'test', 'gt')))
    assert gt == ['0000_set1.png', '0000_set2.png', rainy[4].replace('_00_', '_')]
    assert 'test split: selected 5 of 6 crops' in text
    selected = list(csv.DictReader(open(osp.join(out, 'test', 'selection.csv'))))
    assert sorted(r['key'] + '.png' for r in selected) == rainy
    ds = build_dataset(dict(name='GTAV-balance', type='PairedRainTestDataset', phase='test', layout='gtav',
                            root=osp.join(out, 'test'), io_backend=dict(type='disk')))
    assert len(ds) == 5
    for i in range(len(ds)):
        item = ds[i]
        stem = osp.splitext(osp.basename(item['lq_path']))[0]
        scene, frame, set_name = stem.split('_')
        expected = cv2.imread(osp.join(gtav, set_name, 'test', 'gt', f'{scene}.png'))[..., ::-1] / 255.0
        assert np.allclose(item['gt'].numpy().transpose(1, 2, 0), expected, atol=1e-6)
    full = build_dataset(dict(name='GTAV-NightRain', type='PairedRainTestDataset', phase='test', layout='gtav',
                              root=gtav, split='test', io_backend=dict(type='disk')))
    assert len(full) == 6

    code, text, _ = run(capsys, 'balance', 'gtav', gtav, '--crop', '32', '--shares', '0.2', '0', '--out', out, '-q')
    assert code == 0 and 'test crops already written (5 crops)' in text
    code, text, _ = run(capsys, 'balance', 'gtav', gtav, '--crop', '32', '--shares', '0.2', '0', '--out',
                        str(tmp_path / 'no-test'), '--no-test', '-q')
    assert code == 0 and not osp.exists(tmp_path / 'no-test' / 'test')


def test_test_crop_names_carry_the_tile_only_when_a_scene_has_several_windows():
    from rainmer.data.balance import test_crop_names
    from rainmer.data.rain_stats import CropDensity

    def row(path, tile, top, left):
        return CropDensity(f'key_t{tile}', path, 'gt.png', 0, top, left, 32, 0.1)

    rows = [row('/d/set1/test/rainy/0000_00.png', 0, 0, 0), row('/d/set1/test/rainy/0000_01.png', 0, 0, 0),
            row('/d/set2/test/rainy/0000_00.png', 1, 0, 32), row('/d/set2/test/rainy/0000_01.png', 0, 0, 0)]
    assert test_crop_names(rows) == [('0000_00_set1', '0000_set1'), ('0000_01_set1', '0000_set1'),
                                     ('0000-t1_00_set2', '0000-t1_set2'), ('0000-t0_01_set2', '0000-t0_set2')]
    from rainmer.data.layouts import gtav_clean_stem
    assert all(gtav_clean_stem(rainy) == clean for rainy, clean in test_crop_names(rows))


def test_balance_keeps_every_crop_when_the_references_leave_no_share_for_dense_rain():
    """Shares summing to 1 up to rounding (references without dense rain) once asked for ~1e16 crops."""
    from rainmer.data.density import balance_selection

    densities = np.array([0.01, 0.02, 0.05, 0.06, 0.2])
    kept, warnings = balance_selection(densities, (0.7078, 1 - 0.7078 - 1e-12), np.random.default_rng(0))
    assert kept.tolist() == [0, 1, 2, 3, 4]
    assert len(warnings) == 1 and 'keeping every crop' in warnings[0]
