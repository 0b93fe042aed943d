"""``rainmer demo`` (``make demo``): Rainmer derains real photographs, end to end on CPU, no downloads.

1. the colour photographs shipped with scikit-image -> ``rainmer data synth``: day / heavy / night rain,
   train/val split by photograph;
2. a small Rainmer trained through ``basicsr train`` (RainmerModel: contrastive views, prompts, archive);
3. ``basicsr test`` per domain;
4. ``report.md``: PSNR/SSIM (Y) of the rainy input and of the output per domain, and a PNG grid
   (rainy / derained / clean) per domain.
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
import time

import cv2
import numpy as np
import yaml

from rainmer.cli import basicsr_main

PHOTOS = ('astronaut.png', 'chelsea.png', 'coffee.png', 'motorcycle_left.png', 'motorcycle_right.png', 'rocket.jpg',
          'hubble_deep_field.jpg', 'ihc.png', 'retina.jpg')  # colour photographs in scikit-image's data folder
DOMAINS = ('day', 'heavy', 'night')
METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': True},
           'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': True}}
SMALL_RAINMER = dict(type='Rainmer', dim=12, base_dim=24, num_blocks=[1, 1, 1, 2], heads=[1, 1, 2, 2],
                     ffn_expansion_factor=2.66, prompt_size=32)


def write_photographs(folder: str) -> list[str]:
    """Copy scikit-image's colour sample photographs (shipped inside the package) as PNGs."""
    import skimage.data

    os.makedirs(folder, exist_ok=True)
    written = []
    for name in PHOTOS:
        image = cv2.imread(osp.join(skimage.data.data_dir, name), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f'scikit-image sample photograph {name} is missing from {skimage.data.data_dir}')
        path = osp.join(folder, f'{osp.splitext(name)[0]}.png')
        cv2.imwrite(path, image)
        written.append(path)
    return written


def _sources(data: str, split: str) -> list[dict]:
    return [dict(name=d, type='rain13k', root=osp.join(data, split, d), io_backend=dict(type='disk')) for d in DOMAINS]


def train_options(data: str, iters: int, crop: int) -> dict:
    return dict(
        name='demo_rainmer', model_type='RainmerModel', scale=1, num_gpu=0, manual_seed=100,
        datasets=dict(
            train=dict(name='synth_rain', type='MixedRainDataset', sources=_sources(data, 'train'), gt_size=crop,
                       resize_size=SMALL_RAINMER['prompt_size'], use_hflip=True, use_rot=False, small_images='pad',
                       use_shuffle=True, num_worker_per_gpu=0, batch_size_per_gpu=4, dataset_enlarge_ratio=8),
        ),
        network_g=dict(SMALL_RAINMER),
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(
            total_iter=iters, warmup_iter=-1, accumulate_grad_step=1, grad_clip_norm=0.01, n_neg=2, archive_size=32,
            optim_g=dict(type='AdamW', lr=1e-3, weight_decay=0, betas=[0.9, 0.999]),
            optim_encoder=dict(type='AdamW', lr=1e-3, weight_decay=0.01, betas=[0.9, 0.999]),
            scheduler=dict(type='CosineAnnealingRestartCyclicLR', periods=[iters], restart_weights=[1],
                           eta_mins=[1e-5]),
            pixel_opt=dict(type='CharbonnierLoss', loss_weight=1.0, reduction='mean', eps=1e-6),
            ssim_opt=dict(type='SSIMLoss', loss_weight=0.1),
            chromatic_opt=dict(type='InfoNCELoss', loss_weight=0.1),
            degradation_detail_opt=dict(type='InfoNCELoss', loss_weight=0.1)),
        logger=dict(print_freq=max(1, iters // 20), save_checkpoint_freq=iters, use_tb_logger=True))


def test_options(data: str, weights: str) -> dict:
    datasets = {f'test_{i}': dict(name=d, type='PairedRainTestDataset', layout='rain13k', root=osp.join(data, 'val', d),
                                  source_id=i - 1, io_backend=dict(type='disk'))
                for i, d in enumerate(DOMAINS, 1)}
    return dict(name='demo_rainmer_test', model_type='RainmerModel', scale=1, num_gpu=0, manual_seed=100,
                datasets=datasets, network_g=dict(SMALL_RAINMER),
                path=dict(pretrain_network_g=weights, strict_load_g=True),
                val=dict(save_img=True, suffix='derained', metrics=METRICS))


def input_metrics(data: str) -> dict[str, dict[str, float]]:
    """PSNR/SSIM (Y) of the rainy inputs against the clean images, per domain (the baseline to beat)."""
    from basicsr.metrics import calculate_metric

    results = {}
    for domain in DOMAINS:
        values = {name: [] for name in METRICS}
        for rainy_path in sorted(glob.glob(osp.join(data, 'val', domain, 'input', '*.png'))):
            rainy = cv2.imread(rainy_path)
            clean = cv2.imread(rainy_path.replace(f'{os.sep}input{os.sep}', f'{os.sep}target{os.sep}'))
            for name, opt in METRICS.items():
                values[name].append(calculate_metric({'img': rainy, 'img2': clean}, opt))
        results[domain] = {name: float(np.mean(v)) for name, v in values.items()}
    return results


def _fit(image: np.ndarray, height: int) -> np.ndarray:
    return cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height), interpolation=cv2.INTER_AREA)


def write_grid(data: str, results: str, domain: str, path: str, height: int = 200) -> str:
    """One row per validation image: rainy | derained | clean, with a label bar on top."""
    rows = []
    for rainy_path in sorted(glob.glob(osp.join(data, 'val', domain, 'input', '*.png'))):
        stem = osp.splitext(osp.basename(rainy_path))[0]
        derained = cv2.imread(osp.join(results, 'visualization', domain, f'{stem}_derained.png'))
        clean = cv2.imread(rainy_path.replace(f'{os.sep}input{os.sep}', f'{os.sep}target{os.sep}'))
        if derained is None or clean is None:
            raise FileNotFoundError(f'demo: missing derained or clean image for {rainy_path}')
        rows.append(np.concatenate([_fit(cv2.imread(rainy_path), height), _fit(derained, height),
                                    _fit(clean, height)], axis=1))
    width = max(r.shape[1] for r in rows)
    panel = width // 3  # panels of one row share a width; rows are left-aligned
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    header = np.full((28, width, 3), 255, np.uint8)
    for i, label in enumerate((f'{domain}: rainy', 'derained (Rainmer)', 'clean')):
        cv2.putText(header, label, (8 + i * panel, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(path, np.concatenate([header, *rows], axis=0))
    return path


def write_report(out: str, before: dict, after: dict, grids: dict, minutes: float, iters: int) -> str:
    lines = ['# Rainmer demo', '',
             f'A small Rainmer ({SMALL_RAINMER}) trained for {iters} iterations (batch 4) on synthetic rain over',
             f'scikit-image\'s sample photographs ({minutes:.1f} min in all on this machine); the validation',
             'photographs were never trained on. PSNR/SSIM on the Y channel.',
             '', '| domain | rainy PSNR | rainy SSIM | derained PSNR | derained SSIM | PSNR gain |', '|---' * 6 + '|']
    for domain in DOMAINS:
        b, a = before[domain], after[domain]
        lines.append(f"| {domain} | {b['psnr']:.2f} | {b['ssim']:.4f} | {a['psnr']:.2f} | {a['ssim']:.4f} | "
                     f"{a['psnr'] - b['psnr']:+.2f} dB |")
    lines += [''] + [f'![{d}]({osp.relpath(p, out)})' for d, p in grids.items()]
    path = osp.join(out, 'report.md')
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    with open(osp.join(out, 'report.json'), 'w', encoding='utf-8') as f:
        json.dump({'rainy': before, 'derained': after}, f, indent=2)
    return path


def _dump(path: str, opt: dict) -> str:
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='rainmer demo', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='demo_output', help='folder for data, experiments, results and the report')
    parser.add_argument('--iters', type=int, default=500, help='training iterations (batch 4)')
    parser.add_argument('--crop', type=int, default=48, help='training crop size')
    parser.add_argument('--max-side', type=int, default=192, help='photographs are downscaled to this longer side')
    args = parser.parse_args(argv)
    start = time.time()
    out = osp.abspath(args.out)
    data = osp.join(out, 'data')
    from rainmer.data.cli import main as data_main

    photos = osp.join(out, 'photographs')
    write_photographs(photos)
    code = data_main(['synth', photos, data, '--seed', '0', '--val', '2', '--per-image', '2',
                      '--max-side', str(args.max_side), '--force', '--quiet'])
    if code:
        return code
    os.makedirs(out, exist_ok=True)
    os.chdir(out)  # experiments/, results/ and tb_logger/ go here
    train_yml = _dump(osp.join(out, 'demo_train.yml'), train_options(data, args.iters, args.crop))
    code = basicsr_main(['train', '-opt', train_yml])
    if code:
        return code
    weights = osp.join(out, 'experiments', 'demo_rainmer', 'models', 'net_g_latest.pth')
    code = basicsr_main(['test', '-opt', _dump(osp.join(out, 'demo_test.yml'), test_options(data, weights))])
    if code:
        return code
    results = osp.join(out, 'results', 'demo_rainmer_test')
    with open(osp.join(results, 'metrics.json'), encoding='utf-8') as f:
        after = json.load(f)
    before = input_metrics(data)
    grids = {d: write_grid(data, results, d, osp.join(out, f'grid_{d}.png')) for d in DOMAINS}
    report = write_report(out, before, after, grids, (time.time() - start) / 60, args.iters)
    print('\n' + open(report, encoding='utf-8').read())
    print(f'Report: {report}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
