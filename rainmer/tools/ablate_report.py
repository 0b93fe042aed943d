"""The report of ``rainmer ablate``: numbers read back from the ``basicsr train`` / ``test`` runs, tables, a bar
chart with error bars and a grid of restored crops.

Every metric comes from ``results/<name>_test/metrics.json`` (what ``basicsr test`` printed), the training speed
from the timestamps of the training log (first to last iteration of the session that finished the run).
"""
import csv
import datetime
import glob
import os
import os.path as osp
import re
import warnings

import cv2
import numpy as np

from rainmer.demo import DOMAINS
from rainmer.errors import UserError
from rainmer.tools.ablate_options import ALL_VARIANTS, METRICS, Sizes, network_options, run_name

GROUPS = (*DOMAINS, 'average')
INPUT = 'rainy input'
# one colour per variant in every report (matplotlib's tab10, then two more); the rainy input is black
PALETTE = ('tab:blue', 'tab:orange', 'tab:green', 'tab:red', 'tab:purple', 'tab:brown', 'tab:pink', 'tab:gray',
           'tab:olive', 'tab:cyan', 'gold', 'navy')
LEGEND_COLUMNS = 7
_LOG_LINE = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+: (.*)$')


# ---------------------------------------------------------------------------------------------- reading back
def run_metrics(out: str, variant: str, seed: int) -> dict[str, dict[str, float]]:
    """``basicsr test``'s metrics of one (variant, seed) per domain, plus their mean over the domains."""
    import json

    path = osp.join(out, 'results', f'{run_name(variant, seed)}_test', 'metrics.json')
    if not osp.isfile(path):
        raise UserError(f'{path} is missing: run rainmer ablate again with the same options to test this run')
    with open(path, encoding='utf-8') as f:
        metrics = json.load(f)
    metrics = {domain: {m: float(metrics[domain][m]) for m in METRICS} for domain in DOMAINS}
    metrics['average'] = {m: float(np.mean([metrics[d][m] for d in DOMAINS])) for m in METRICS}
    return metrics


def _stamp(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, '%Y-%m-%d %H:%M:%S,%f')


def seconds_per_iteration(out: str, variant: str, seed: int, total_iters: int) -> float | None:
    """Training time per iteration of the session that finished this run (None without a finished log)."""
    name = run_name(variant, seed)
    for path in sorted(glob.glob(osp.join(out, 'experiments', name, f'train_{name}_*.log')), reverse=True):
        start = end = None
        with open(path, encoding='utf-8', errors='replace') as f:
            for line in f:
                match = _LOG_LINE.match(line)
                if not match:
                    continue
                message = match.group(2)
                if message.startswith('Start training from epoch'):
                    start = (_stamp(match.group(1)), int(re.search(r'iter: (\d+)', message).group(1)))
                elif message.startswith('End of training') and start is not None:
                    end = _stamp(match.group(1))
        if start is not None and end is not None and total_iters > start[1]:
            return (end - start[0]).total_seconds() / (total_iters - start[1])
    return None


def input_metrics(out: str) -> dict[str, dict[str, float]]:
    """Every metric of the rainy inputs against the clean images (what a network has to beat), per domain."""
    from basicsr.metrics import calculate_metric

    results = {}
    for domain in DOMAINS:
        values = {name: [] for name in METRICS}
        for rainy_path in sorted(glob.glob(osp.join(out, 'data', 'val', domain, 'input', '*.png'))):
            pair = {'img': cv2.imread(rainy_path), 'img2': cv2.imread(_clean_path(rainy_path))}
            for name, opt in METRICS.items():
                values[name].append(calculate_metric(pair, opt))
        results[domain] = {name: float(np.mean(v)) for name, v in values.items()}
    results['average'] = {m: float(np.mean([results[d][m] for d in DOMAINS])) for m in METRICS}
    return results


def _clean_path(rainy_path: str) -> str:
    folder, name = osp.split(rainy_path)
    return osp.join(osp.dirname(folder), 'target', name)


def network_cost(variant: str, sizes: Sizes) -> tuple[int, int]:
    """Trainable parameters and FLOPs of one forward pass on a crop-sized image (``rainmer compare``'s count)."""
    import torch

    from rainmer.plugins import load_plugins

    load_plugins()
    from basicsr.utils.registry import ARCH_REGISTRY

    from rainmer.tools.compare import count_flops

    opt = dict(network_options(variant, sizes))
    with warnings.catch_warnings():  # SwinIR's torch.meshgrid without indexing
        warnings.simplefilter('ignore', UserWarning)
        net = ARCH_REGISTRY.get(opt.pop('type'))(**opt).eval()
        params = sum(p.numel() for p in net.parameters() if p.requires_grad)
        return params, count_flops(net, torch.rand(1, 3, sizes.crop, sizes.crop))


# ---------------------------------------------------------------------------------------------- summaries
def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), (float(array.std(ddof=1)) if len(array) > 1 else None)


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per variant: ``metrics[group][metric] = (mean, std)`` over seeds, and ``speed = (mean, std)``."""
    summary = {}
    for variant in dict.fromkeys(r['variant'] for r in runs):
        own = [r for r in runs if r['variant'] == variant]
        speeds = [r['sec_per_iter'] for r in own if r['sec_per_iter'] is not None]
        summary[variant] = dict(
            seeds=len(own), speed=mean_std(speeds) if speeds else None,
            metrics={g: {m: mean_std([r['metrics'][g][m] for r in own]) for m in METRICS} for g in GROUPS})
    return summary


def _fmt(metric: str, value: float) -> str:
    return f'{value:.2f}' if 'psnr' in metric else f'{value:.4f}'


def _cell(metric: str, stat: tuple[float, float | None]) -> str:
    mean, std = stat
    return _fmt(metric, mean) if std is None else f'{_fmt(metric, mean)} ± {_fmt(metric, std)}'


def metric_table(summary: dict, rainy: dict, psnr: str, ssim: str) -> str:
    """``PSNR / SSIM`` (mean ± std over seeds) per domain and on average, one row per variant."""
    lines = ['| variant | ' + ' | '.join(GROUPS) + ' |', '|---' * (len(GROUPS) + 1) + '|',
             f'| {INPUT} | ' + ' | '.join(f'{_fmt(psnr, rainy[g][psnr])} / {_fmt(ssim, rainy[g][ssim])}'
                                          for g in GROUPS) + ' |']
    for variant, entry in summary.items():
        cells = [f"{_cell(psnr, entry['metrics'][g][psnr])} / {_cell(ssim, entry['metrics'][g][ssim])}"
                 for g in GROUPS]
        lines.append(f'| {variant} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def cost_table(summary: dict, costs: dict, sizes: Sizes) -> str:
    lines = [f'| variant | what it is | parameters | GFLOPs ({sizes.crop}x{sizes.crop}) | s / iteration | seeds |',
             '|---|---|---:|---:|---:|---:|']
    for variant, entry in summary.items():
        params, flops = costs[variant]
        speed = '-' if entry['speed'] is None else (
            f"{entry['speed'][0]:.3f}" + ('' if entry['speed'][1] is None else f" ± {entry['speed'][1]:.3f}"))
        lines.append(f'| {variant} | {ALL_VARIANTS[variant]} | {params:,} | {flops / 1e9:.3f} | {speed} | '
                     f"{entry['seeds']} |")
    return '\n'.join(lines)


def markdown(summary: dict, rainy: dict, costs: dict, sizes: Sizes, seeds: list[int]) -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f'CPU ({os.cpu_count()} cores)'
    return '\n'.join([
        '# Rainmer ablation', '',
        f'Every variant trained for {sizes.iters} iterations (batch 4, crop {sizes.crop}, width {sizes.dim}) on the '
        'same synthetic day / heavy / night rain, then tested by `basicsr test` on the held-out photographs of each '
        f'domain; mean ± standard deviation over {len(seeds)} seed(s) ({", ".join(map(str, seeds))}); training on '
        f'{device}.', '',
        "## PSNR / SSIM, BasicSR's protocol (uint8 output, Y channel)", '',
        metric_table(summary, rainy, 'psnr', 'ssim'), '',
        "## PSNR / SSIM, the paper's protocol (float output, Y, pooled SSIM; docs/metrics.md)", '',
        metric_table(summary, rainy, 'psnr_paper', 'ssim_paper'), '',
        '## Cost', '', cost_table(summary, costs, sizes), '',
        '![PSNR and SSIM per domain, mean and standard deviation over seeds](results.png)', '',
        f'![held-out crops restored by every variant (seed {seeds[0]})](grid.png)', ''])


def write_csv(path: str, rows: list[dict], fields: list[str]) -> str:
    with open(path, 'w', encoding='utf-8', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval='')
        writer.writeheader()
        writer.writerows(rows)
    return path


SUMMARY_FIELDS = ['variant', 'domain', *(f'{m}_{s}' for m in METRICS for s in ('mean', 'std')), 'seeds', 'params',
                  'flops', 'sec_per_iter_mean', 'sec_per_iter_std']
RUN_FIELDS = ['variant', 'seed', 'domain', *METRICS, 'sec_per_iter']


def _blank(value: float | None) -> float | str:
    return '' if value is None else value


def summary_rows(summary: dict, rainy: dict, costs: dict) -> list[dict]:
    """results.csv (:data:`SUMMARY_FIELDS`): one row per (variant, domain or average), the rainy inputs first; a
    standard deviation is blank for a single seed."""
    rows = [{'variant': INPUT, 'domain': g, **{f'{m}_mean': rainy[g][m] for m in METRICS}} for g in GROUPS]
    for variant, entry in summary.items():
        speed = entry['speed'] or (None, None)
        for group in GROUPS:
            row = {'variant': variant, 'domain': group}
            for metric, (mean, std) in entry['metrics'][group].items():
                row.update({f'{metric}_mean': mean, f'{metric}_std': _blank(std)})
            row.update(seeds=entry['seeds'], params=costs[variant][0], flops=costs[variant][1],
                       sec_per_iter_mean=_blank(speed[0]), sec_per_iter_std=_blank(speed[1]))
            rows.append(row)
    return rows


def run_rows(runs: list[dict]) -> list[dict]:
    """runs.csv: every (variant, seed, domain or average), as ``basicsr test`` reported it."""
    return [{'variant': r['variant'], 'seed': r['seed'], 'domain': group, **r['metrics'][group],
             'sec_per_iter': _blank(r['sec_per_iter'])} for r in runs for group in GROUPS]


# ---------------------------------------------------------------------------------------------- chart
def variant_colour(variant: str) -> str:
    """The bar colour of a variant: fixed by its place in :data:`ALL_VARIANTS`, whatever else is selected."""
    return PALETTE[list(ALL_VARIANTS).index(variant) % len(PALETTE)]


def bar_chart(summary: dict, rainy: dict, path: str) -> str:
    """One panel per metric: a bar per variant in each domain group (error bar: std over seeds), the rainy input
    as a dashed line."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    variants = list(summary)
    width = 0.8 / len(variants)
    fig, axes = plt.subplots(2, 2, figsize=(min(14.0, 8.0 + 0.25 * len(GROUPS) * len(variants)), 7.5))
    for ax, metric in zip(axes.flat, METRICS):
        values = []
        for i, variant in enumerate(variants):
            stats = [summary[variant]['metrics'][g][metric] for g in GROUPS]
            means = [s[0] for s in stats]
            errors = [s[1] or 0.0 for s in stats]
            xs = [g + (i - (len(variants) - 1) / 2) * width for g in range(len(GROUPS))]
            ax.bar(xs, means, width, yerr=errors if any(errors) else None, capsize=3, label=variant,
                   color=variant_colour(variant))
            values += [m - e for m, e in zip(means, errors)] + [m + e for m, e in zip(means, errors)]
        for g, group in enumerate(GROUPS):
            ax.hlines(rainy[group][metric], g - 0.45, g + 0.45, colors='black', linestyles='dashed',
                      label=INPUT if g == 0 else None)
            values.append(rainy[group][metric])
        low, high = min(values), max(values)
        span = max(high - low, 1e-3)
        ax.set_ylim(low - 0.15 * span, high + 0.15 * span)
        ax.set_xticks(range(len(GROUPS)), GROUPS)
        ax.set_title(metric)
        ax.grid(axis='y', alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='lower center', ncol=min(len(labels), LEGEND_COLUMNS), fontsize='small')
    legend_rows = -(-len(labels) // LEGEND_COLUMNS)
    fig.tight_layout(rect=(0, 0.015 + 0.035 * legend_rows, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- grid
def grid_sources(out: str, per_domain: int) -> list[tuple[str, str]]:
    """(domain, rainy path) of the held-out images shown: the first version of the first photographs."""
    chosen = []
    for domain in DOMAINS:
        paths = sorted(glob.glob(osp.join(out, 'data', 'val', domain, 'input', '*.png')))
        first = [p for p in paths if p.endswith('_v0.png')] or paths
        chosen += [(domain, p) for p in first[:per_domain]]
    return chosen


def _centre_crop(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = (h - side) // 2, (w - side) // 2
    return image[top:top + side, left:left + side]


def _label(canvas: np.ndarray, text: str, x0: int, width: int, y: int) -> None:
    """``text`` centred in [x0, x0 + width), shrunk until it fits."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    while scale > 0.25 and cv2.getTextSize(text, font, scale, 1)[0][0] > width - 4:
        scale -= 0.05
    size = cv2.getTextSize(text, font, scale, 1)[0]
    cv2.putText(canvas, text, (x0 + max(0, (width - size[0]) // 2), y), font, scale, (0, 0, 0), 1, cv2.LINE_AA)


def write_grid(out: str, variants: list[str], seed: int, path: str, per_domain: int = 1, side: int = 128,
               gap: int = 4) -> str:
    """Rows: held-out crops (domain named); columns: rainy input, each variant's output (``seed``), clean."""
    columns = [INPUT, *variants, 'clean']
    rows = []
    for domain, rainy_path in grid_sources(out, per_domain):
        stem = osp.splitext(osp.basename(rainy_path))[0]
        images = [cv2.imread(rainy_path)]
        for variant in variants:
            images.append(cv2.imread(osp.join(out, 'results', f'{run_name(variant, seed)}_test', 'visualization',
                                              domain, f'{stem}_derained.png')))
        images.append(cv2.imread(_clean_path(rainy_path)))
        if any(image is None for image in images):
            raise UserError(f'{out}: a restored image of {domain}/{stem} is missing; run rainmer ablate again to test')
        crop = min(side, *images[0].shape[:2])
        factor = max(1, side // crop)
        panels = [cv2.resize(_centre_crop(im, crop), None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
                  for im in images]
        cv2.putText(panels[0], domain, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.putText(panels[0], domain, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(panels)
    panel = max(p.shape[0] for row in rows for p in row)  # every panel of the grid gets this size
    width = len(columns) * panel + (len(columns) - 1) * gap
    canvas = np.full((28 + len(rows) * (panel + gap), width, 3), 255, np.uint8)
    for c, label in enumerate(columns):
        _label(canvas, label, c * (panel + gap), panel, 19)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            y, x = 28 + r * (panel + gap), c * (panel + gap)
            canvas[y:y + image.shape[0], x:x + image.shape[1]] = image
    if not cv2.imwrite(path, canvas):
        raise OSError(f'could not write {path}')
    return path


# ---------------------------------------------------------------------------------------------- all
def write_report(out: str, variants: list[str], seeds: list[int], sizes: Sizes, grid_images: int = 1) -> dict:
    """results.md, results.csv, runs.csv, results.png and grid.png in ``out``; returns their paths."""
    runs = [dict(variant=v, seed=s, metrics=run_metrics(out, v, s),
                 sec_per_iter=seconds_per_iteration(out, v, s, sizes.iters)) for s in seeds for v in variants]
    summary = summarise(sorted(runs, key=lambda r: variants.index(r['variant'])))
    rainy = input_metrics(out)
    costs = {variant: network_cost(variant, sizes) for variant in variants}
    paths = {'md': osp.join(out, 'results.md'), 'csv': osp.join(out, 'results.csv'),
             'runs': osp.join(out, 'runs.csv'), 'png': osp.join(out, 'results.png'), 'grid': osp.join(out, 'grid.png')}
    with open(paths['md'], 'w', encoding='utf-8') as f:
        f.write(markdown(summary, rainy, costs, sizes, seeds))
    write_csv(paths['csv'], summary_rows(summary, rainy, costs), SUMMARY_FIELDS)
    write_csv(paths['runs'], run_rows(runs), RUN_FIELDS)
    bar_chart(summary, rainy, paths['png'])
    write_grid(out, variants, seeds[0], paths['grid'], per_domain=grid_images)
    return paths

