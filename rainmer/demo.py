"""``rainmer demo`` (``make demo``): Rainmer derains real photographs, end to end on CPU, no downloads.

1. the colour photographs shipped with scikit-image -> ``rainmer data synth``: day / heavy / night rain,
   train/val split by photograph;
2. a small Rainmer trained through ``basicsr train`` (RainmerModel: contrastive views, prompts, archive);
3. ``basicsr test`` per domain;
4. the same for the baseline (the same network without views, prompts and local fusion: what the multi-view
   representations add), unless ``--no-baseline``;
5. ``report.md``: PSNR/SSIM (Y) of the rainy input, the baseline and Rainmer per domain, and a PNG grid
   (rainy / baseline / Rainmer / clean) per domain.
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
SMALL_BASELINE = dict(SMALL_RAINMER, views=[], local_fusion=False)  # the paper's baseline: no views, no local fusion
# what the demo trains: (experiment name, label, network)
DEMO_NETWORKS = (('demo_baseline', 'baseline', SMALL_BASELINE), ('demo_rainmer', 'Rainmer', SMALL_RAINMER))


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


def train_options(data: str, iters: int, crop: int, name: str = 'demo_rainmer', network: dict | None = None) -> dict:
    """The demo's training options for ``network`` (default: :data:`SMALL_RAINMER`)."""
    return dict(
        name=name, model_type='RainmerModel', scale=1, num_gpu=0, manual_seed=100,
        datasets=dict(
            train=dict(name='synth_rain', type='MixedRainDataset', sources=_sources(data, 'train'), gt_size=crop,
                       resize_size=SMALL_RAINMER['prompt_size'], use_hflip=True, use_rot=False, small_images='pad',
                       use_shuffle=True, num_worker_per_gpu=0, batch_size_per_gpu=4, dataset_enlarge_ratio=8),
        ),
        network_g=dict(network or SMALL_RAINMER),
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


def test_options(data: str, weights: str, name: str = 'demo_rainmer', network: dict | None = None) -> dict:
    """The demo's test options: every domain's held-out pairs, the restored images saved."""
    datasets = {f'test_{i}': dict(name=d, type='PairedRainTestDataset', layout='rain13k', root=osp.join(data, 'val', d),
                                  source_id=i - 1, io_backend=dict(type='disk'))
                for i, d in enumerate(DOMAINS, 1)}
    return dict(name=f'{name}_test', model_type='RainmerModel', scale=1, num_gpu=0, manual_seed=100,
                datasets=datasets, network_g=dict(network or SMALL_RAINMER),
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


def write_grid(data: str, results: dict[str, str], domain: str, path: str, height: int = 200) -> str:
    """One row per validation image: rainy | each network's output (``results``: label -> its results folder) |
    clean; every image centred in a cell of one width, the labels centred above their column."""
    columns = [f'{domain}: rainy', *results, 'clean']
    rows = []
    for rainy_path in sorted(glob.glob(osp.join(data, 'val', domain, 'input', '*.png'))):
        stem = osp.splitext(osp.basename(rainy_path))[0]
        clean_path = rainy_path.replace(f'{os.sep}input{os.sep}', f'{os.sep}target{os.sep}')
        paths = [rainy_path, *(osp.join(r, 'visualization', domain, f'{stem}_derained.png') for r in results.values()),
                 clean_path]
        images = [cv2.imread(p) for p in paths]
        if any(image is None for image in images):
            raise FileNotFoundError(f'demo: missing {paths[[image is None for image in images].index(True)]}')
        rows.append([_fit(image, height) for image in images])
    cell = max(image.shape[1] for row in rows for image in row) + 8
    header = np.full((28, cell * len(columns), 3), 255, np.uint8)
    for i, label in enumerate(columns):
        width = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)[0][0]
        cv2.putText(header, label, (i * cell + (cell - width) // 2, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1,
                    cv2.LINE_AA)
    lines = [header]
    for row in rows:
        line = np.full((height + 4, cell * len(columns), 3), 255, np.uint8)
        for i, image in enumerate(row):
            left = i * cell + (cell - image.shape[1]) // 2
            line[:height, left:left + image.shape[1]] = image
        lines.append(line)
    cv2.imwrite(path, np.concatenate(lines, axis=0))
    return path


def write_report(out: str, before: dict, after: dict[str, dict], grids: dict, minutes: float, iters: int) -> str:
    """``report.md`` and ``report.json``: the rainy input's and every network's PSNR/SSIM per domain."""
    labels = list(after)
    lines = ['# Rainmer demo', '',
             f'A small Rainmer ({SMALL_RAINMER}) trained for {iters} iterations (batch 4) on synthetic rain over',
             f'scikit-image\'s sample photographs ({minutes:.1f} min in all on this machine); the validation',
             'photographs were never trained on. PSNR/SSIM on the Y channel.']
    if 'baseline' in after:
        lines += ['The baseline is the same network without the multi-view representations (no views, no prompts,',
                  'no local fusion), trained identically: the difference is what the representations add.']
    header = ['domain', 'rainy PSNR / SSIM'] + [f'{label} PSNR / SSIM' for label in labels] + ['Rainmer gain']
    lines += ['', '| ' + ' | '.join(header) + ' |', '|---' * len(header) + '|']
    for domain in DOMAINS:
        cells = [f"{before[domain]['psnr']:.2f} / {before[domain]['ssim']:.4f}"]
        cells += [f"{after[label][domain]['psnr']:.2f} / {after[label][domain]['ssim']:.4f}" for label in labels]
        gain = after['Rainmer'][domain]['psnr'] - before[domain]['psnr']
        versus = (f", {after['Rainmer'][domain]['psnr'] - after['baseline'][domain]['psnr']:+.2f} dB over the "
                  'baseline' if 'baseline' in after else '')
        lines.append(f'| {domain} | ' + ' | '.join(cells) + f' | {gain:+.2f} dB over the input{versus} |')
    lines += [''] + [f'![{d}]({osp.relpath(p, out)})' for d, p in grids.items()]
    path = osp.join(out, 'report.md')
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    with open(osp.join(out, 'report.json'), 'w', encoding='utf-8') as f:
        json.dump({'rainy': before, 'derained': after['Rainmer'], **({'baseline': after['baseline']}
                                                                      if 'baseline' in after else {})}, f, indent=2)
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
    parser.add_argument('--no-baseline', dest='baseline', action='store_false',
                        help='train Rainmer only (the baseline doubles the training runs, at about half the cost each)')
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
    networks = DEMO_NETWORKS if args.baseline else DEMO_NETWORKS[-1:]
    after, results = {}, {}
    for name, label, network in networks:
        train_yml = _dump(osp.join(out, f'{name}_train.yml'), train_options(data, args.iters, args.crop, name, network))
        code = basicsr_main(['train', '-opt', train_yml])
        if code:
            return code
        weights = osp.join(out, 'experiments', name, 'models', 'net_g_latest.pth')
        code = basicsr_main(['test', '-opt', _dump(osp.join(out, f'{name}_test.yml'),
                                                   test_options(data, weights, name, network))])
        if code:
            return code
        results[label] = osp.join(out, 'results', f'{name}_test')
        with open(osp.join(results[label], 'metrics.json'), encoding='utf-8') as f:
            after[label] = json.load(f)
    before = input_metrics(data)
    grids = {d: write_grid(data, results, d, osp.join(out, f'grid_{d}.png')) for d in DOMAINS}
    report = write_report(out, before, after, grids, (time.time() - start) / 60, args.iters)
    print('\n' + open(report, encoding='utf-8').read())
    print(f'Report: {report}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
