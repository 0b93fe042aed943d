"""`rainmer demo` end to end at a tiny size: data from scikit-image photographs, training, test, report, grids."""
import json

import cv2
from toolbox_fixtures import run_command


def test_demo_writes_the_report_and_a_grid_per_domain(tmp_path):
    result = run_command(['rainmer', 'demo', '--out', str(tmp_path / 'demo'), '--iters', '2', '--max-side', '48',
                          '--crop', '32'], cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    out = tmp_path / 'demo'
    report = json.loads((out / 'report.json').read_text())
    assert set(report['rainy']) == set(report['derained']) == {'day', 'heavy', 'night'}
    for domain in ('day', 'heavy', 'night'):
        assert 0 < report['rainy'][domain]['psnr'] < 60 and 0 < report['derained'][domain]['ssim'] <= 1
        grid = cv2.imread(str(out / f'grid_{domain}.png'))
        assert grid is not None and grid.shape[0] > 28
    text = (out / 'report.md').read_text()
    assert '| heavy |' in text and '![night](grid_night.png)' in text
    assert (out / 'experiments' / 'demo_rainmer' / 'models' / 'net_g_latest.pth').is_file()
