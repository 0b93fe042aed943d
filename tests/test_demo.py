"""`rainmer demo` end to end at a tiny size: data from scikit-image photographs, training, test, report, grids."""
import json

import cv2
import numpy as np
from toolbox_fixtures import run_command


def test_demo_writes_the_report_and_a_grid_per_domain(tmp_path):
    result = run_command(['rainmer', 'demo', '--out', str(tmp_path / 'demo'), '--iters', '2', '--max-side', '48',
                          '--crop', '32'], cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    out = tmp_path / 'demo'
    report = json.loads((out / 'report.json').read_text())
    assert set(report) == {'rainy', 'baseline', 'derained'}
    assert set(report['rainy']) == set(report['baseline']) == set(report['derained']) == {'day', 'heavy', 'night'}
    for domain in ('day', 'heavy', 'night'):
        assert 0 < report['rainy'][domain]['psnr'] < 60 and 0 < report['derained'][domain]['ssim'] <= 1
        assert report['baseline'][domain]['psnr'] != report['derained'][domain]['psnr']  # two networks were run
        grid = cv2.imread(str(out / f'grid_{domain}.png'))
        assert grid is not None and grid.shape[0] > 28
        # four columns of one width (rainy | baseline | Rainmer | clean), each label centred over its column
        ink = (grid[:28] < 128).any(axis=(0, 2))
        cell = grid.shape[1] // 4
        assert grid.shape[1] == 4 * cell
        for column in range(4):
            xs = np.flatnonzero(ink[column * cell:(column + 1) * cell])
            assert xs.size and abs((xs[0] + xs[-1]) / 2 - cell / 2) <= 3, (domain, column)
    text = (out / 'report.md').read_text()
    assert '| heavy |' in text and '![night](grid_night.png)' in text and 'over the baseline' in text
    for name in ('demo_rainmer', 'demo_baseline'):
        assert (out / 'experiments' / name / 'models' / 'net_g_latest.pth').is_file()
        assert len(list((out / 'experiments' / name).glob('train_*.log'))) == 1  # each run its own log file
        assert len(list((out / 'results' / f'{name}_test').glob('test_*.log'))) == 1
