"""``rainmer compare``: every model on every test set, in one paper-style table and a bar chart.

Each MODEL is a test option file (``options/test/x_test.yml``: its network and checkpoint), a training option
file (``options/x.yml``: the checkpoint ``experiments/<name>/models/net_g_latest.pth``) or an experiment folder
(``experiments/<name>``: its copied option file and newest network file). ``MODEL=CHECKPOINT`` uses another
network file, e.g. a released one (the parameter key, ``params`` or ``state_dict``, is detected).

The test sets and metrics are those of ``--test-opt`` (``datasets`` and ``val``), or each test option file's own.
Every (model, set) runs the toolbox's validation, exactly as ``basicsr test`` does, so the numbers are those of
separate ``basicsr test`` runs. Parameters are the trainable ones; FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` for one ``--size`` x ``--size`` image (matmuls and convolutions, a
multiply-add = 2 FLOPs; ptflops/thop report MACs, half of it); latency is the fastest of ``--repeat`` forward
passes after one warm-up, on the device the models run on.

Writes ``<out>/comparison.md``, ``.csv``, ``.json`` and ``.png`` (matplotlib when installed, else OpenCV).
"""
import argparse
import csv
import glob
import json
import logging
import os
import os.path as osp
import re
import sys
import time
from dataclasses import dataclass, field

import torch

from rainmer.plugins import load_plugins

load_plugins()

from basicsr.data import build_dataloader, build_dataset  # noqa: E402
from basicsr.models import build_model  # noqa: E402
from basicsr.utils import get_root_logger, get_time_str  # noqa: E402
from tqdm import tqdm  # noqa: E402

from rainmer.options import OptionError, load_yaml, parse_options  # noqa: E402
from rainmer.utils.benchmarking import flop_counter  # noqa: E402


@dataclass
class ModelEntry:
    """One model to compare: its options (network, model type, ...) and network file."""

    label: str
    opt: dict
    checkpoint: str
    is_test_opt: bool


@dataclass
class ModelResult:
    label: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # set -> metric -> value
    params: int = 0
    flops: int | None = None
    latency_ms: float | None = None
    device: str = ''


# ---------------------------------------------------------------------------------------------- models
def _newest_network(models_dir: str) -> str | None:
    latest = osp.join(models_dir, 'net_g_latest.pth')
    if osp.isfile(latest):
        return latest
    numbered = [(int(m.group(1)), path) for path in glob.glob(osp.join(models_dir, 'net_g_*.pth'))
                if (m := re.search(r'net_g_(\d+)\.pth$', path))]
    return max(numbered)[1] if numbered else None


def resolve_model(spec: str) -> ModelEntry:
    """A MODEL argument (option file or experiment folder, optionally ``=CHECKPOINT``) as a :class:`ModelEntry`."""
    path, _, checkpoint = spec.partition('=')
    if osp.isdir(path):
        option_files = sorted(glob.glob(osp.join(path, '*.yml')), key=osp.getmtime)
        if not option_files:
            raise OptionError(f'{path}: no option file (*.yml) in this experiment folder')
        opt, label, is_test = load_yaml(option_files[-1]), osp.basename(osp.normpath(path)), False
        checkpoint = checkpoint or _newest_network(osp.join(path, 'models')) or ''
    else:
        opt = load_yaml(path)
        is_test = not opt.get('train') and bool(opt.get('datasets'))
        label = re.sub(r'_test$', '', opt.get('name', osp.splitext(osp.basename(path))[0]))
        if is_test:
            checkpoint = checkpoint or (opt.get('path') or {}).get('pretrain_network_g') or ''
        else:
            checkpoint = checkpoint or _newest_network(osp.join('experiments', opt['name'], 'models')) or ''
    for key in ('network_g', 'model_type'):
        if key not in opt:
            raise OptionError(f'{path}: the option {key!r} is missing')
    if not checkpoint or not osp.isfile(checkpoint):
        raise FileNotFoundError(f'{spec}: no network file found ({checkpoint or "none given"}); '
                                'train it first or give MODEL=CHECKPOINT')
    return ModelEntry(label, opt, checkpoint, is_test)


def comparison_options(entry: ModelEntry, test_opt: dict | None, num_gpu) -> dict:
    """A test option dict: the entry's network and checkpoint on the test sets of ``test_opt`` (or its own)."""
    sets = test_opt if test_opt is not None else (entry.opt if entry.is_test_opt else None)
    if sets is None:
        raise OptionError(f'{entry.label}: a training config or experiment needs --test-opt for its test sets')
    val = dict(sets.get('val') or {})
    val.update(save_img=False, pbar=False)
    path_opt = entry.opt.get('path') or {}
    return {
        'name': entry.label, 'model_type': entry.opt['model_type'], 'scale': entry.opt.get('scale', 1),
        'num_gpu': num_gpu if num_gpu is not None else entry.opt.get('num_gpu', 'auto'),
        'manual_seed': entry.opt.get('manual_seed', 0),
        'datasets': {k: dict(v) for k, v in sets['datasets'].items()},
        'network_g': dict(entry.opt['network_g']),
        'path': {'pretrain_network_g': entry.checkpoint, 'strict_load_g': True,
                 # load_network reads every released layout (rainmer.compat.checkpoint.network_state)
                 'param_key_g': path_opt.get('param_key_g') or 'params'},
        'val': val,
    }


# ---------------------------------------------------------------------------------------------- cost
def _input_channels(network_opt: dict) -> int:
    for key in ('inp_channels', 'in_chans', 'num_in_ch', 'in_channels'):
        if key in network_opt:
            return int(network_opt[key])
    return 3


def describe_device(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'CPU, {torch.get_num_threads()} threads'


def count_flops(net: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass (FlopCounterMode: matmuls and convolutions, a multiply-add = 2)."""
    counter = flop_counter()
    with torch.no_grad(), counter:
        net(x)
    return int(counter.get_total_flops())


def measure_latency_ms(net: torch.nn.Module, x: torch.Tensor, repeat: int) -> float:
    """Fastest of ``repeat`` forward passes after one warm-up, in milliseconds."""
    def synchronise() -> None:
        if x.device.type == 'cuda':
            torch.cuda.synchronize(x.device)

    times = []
    with torch.no_grad():
        for step in range(repeat + 1):
            synchronise()
            start = time.perf_counter()
            net(x)
            synchronise()
            if step:
                times.append((time.perf_counter() - start) * 1000)
    return min(times)


# ---------------------------------------------------------------------------------------------- running
def run_comparison(entries: list[ModelEntry], test_opt: dict | None, out_dir: str, size: int = 256,
                   repeat: int = 5, num_gpu=None, root_path: str | None = None) -> list[ModelResult]:
    """Run every model on every test set; returns one :class:`ModelResult` per entry (in order)."""
    root_path = osp.abspath(root_path or os.getcwd())
    os.makedirs(osp.join(out_dir, 'options'), exist_ok=True)
    plans = []
    for entry in entries:
        opt_file = osp.join(out_dir, 'options', f'{entry.label}.yml')
        _write_yaml(opt_file, comparison_options(entry, test_opt, num_gpu))
        args = argparse.Namespace(opt=opt_file, force_yml=None, launcher='none', auto_resume=False, debug=False)
        opt = parse_options(args, root_path, is_train=False)
        results_root = osp.join(out_dir, entry.label)
        opt['path'].update(results_root=results_root, log=results_root,
                           visualization=osp.join(results_root, 'visualization'))
        plans.append((entry, opt))

    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO)
    file_handler = logging.FileHandler(osp.join(out_dir, f'compare_{get_time_str()}.log'), mode='w')
    file_handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s: %(message)s'))
    logger.addHandler(file_handler)
    quieted = [(h, h.level) for h in logger.handlers if type(h) is logging.StreamHandler]
    for handler, _ in quieted:
        handler.setLevel(logging.WARNING)
    try:
        return _run_plans(plans, size, repeat)
    finally:
        for handler, level in quieted:
            handler.setLevel(level)
        logger.removeHandler(file_handler)
        file_handler.close()


def _run_plans(plans: list, size: int, repeat: int) -> list[ModelResult]:
    loaders: dict[str, object] = {}
    total = sum(len(opt['datasets']) for _, opt in plans)
    results = []
    with tqdm(total=total, unit='set', desc='compare') as bar:
        for entry, opt in plans:
            result = ModelResult(entry.label)
            model = build_model(opt)
            for _, dataset_opt in sorted(opt['datasets'].items()):
                key = json.dumps(dataset_opt, sort_keys=True, default=str)
                if key not in loaders:
                    loaders[key] = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=opt['num_gpu'],
                                                    dist=False, sampler=None, seed=opt['manual_seed'])
                bar.set_description(f"{entry.label} / {dataset_opt['name']}")
                model.validation(loaders[key], current_iter=entry.label, tb_logger=None, save_img=False)
                result.metrics[dataset_opt['name']] = {k: float(v) for k, v in model.metric_results.items()}
                bar.update(1)
            net = model.get_bare_model(getattr(model, 'net_g_ema', model.net_g)).eval()
            result.params = sum(p.numel() for p in net.parameters() if p.requires_grad)
            x = torch.rand(1, _input_channels(opt['network_g']), size, size, device=model.device)
            result.flops = count_flops(net, x)
            result.latency_ms = measure_latency_ms(net, x, repeat)
            result.device = describe_device(x.device)
            results.append(result)
            del model, net
    return results


def _plain(value):
    """Option values with OrderedDicts (the toolbox's YAML loader) as plain dicts, for ``yaml.safe_dump``."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _write_yaml(path: str, opt: dict) -> None:
    import yaml

    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(_plain(opt), f, sort_keys=False)


# ---------------------------------------------------------------------------------------------- reports
def _sets_and_metrics(results: list[ModelResult]) -> tuple[list[str], list[str]]:
    sets, metrics = [], []
    for result in results:
        for name, values in result.metrics.items():
            if name not in sets:
                sets.append(name)
            metrics += [m for m in values if m not in metrics]
    return sets, metrics


def averages(result: ModelResult, metrics: list[str]) -> dict[str, float]:
    """Mean of each metric over the sets that report it (as ``basicsr test``'s table)."""
    means = {}
    for metric in metrics:
        values = [v[metric] for v in result.metrics.values() if metric in v]
        if values:
            means[metric] = sum(values) / len(values)
    return means


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return '-'
    return f'{value:.2f}' if 'psnr' in metric.lower() else f'{value:.4f}'


def markdown_table(results: list[ModelResult], size: int, device: str) -> str:
    """One row per model: ``PSNR / SSIM`` per set and on average, parameters, FLOPs and latency."""
    sets, metrics = _sets_and_metrics(results)
    metric_names = ' / '.join(m.upper() for m in metrics)
    header = ['model', *sets, 'average', 'params (M)', f'GFLOPs ({size}x{size})', f'latency (ms, {device})']
    lines = ['| ' + ' | '.join(header) + ' |', '|---' * len(header) + '|']
    for result in results:
        cells = [result.label]
        for values in [*(result.metrics.get(s, {}) for s in sets), averages(result, metrics)]:
            cells.append(' / '.join(_fmt(m, values.get(m)) for m in metrics) if values else '-')
        cells += [f'{result.params / 1e6:.2f}', '-' if result.flops is None else f'{result.flops / 1e9:.1f}',
                  '-' if result.latency_ms is None else f'{result.latency_ms:.1f}']
        lines.append('| ' + ' | '.join(cells) + ' |')
    return f'Test sets: {metric_names} per set.\n\n' + '\n'.join(lines)


def csv_rows(results: list[ModelResult]) -> list[dict[str, object]]:
    """Full-precision rows: ``<set>_<metric>`` and ``average_<metric>`` columns, params, flops, latency_ms."""
    sets, metrics = _sets_and_metrics(results)
    rows = []
    for result in results:
        row: dict[str, object] = {'model': result.label}
        for name in sets:
            for metric in metrics:
                row[f'{name}_{metric}'] = result.metrics.get(name, {}).get(metric, '')
        for metric, value in averages(result, metrics).items():
            row[f'average_{metric}'] = value
        row.update(params=result.params, flops=result.flops, latency_ms=result.latency_ms)
        rows.append(row)
    return rows


def _chart_series(results: list[ModelResult], metric: str) -> tuple[list[str], list[list[float]]]:
    sets, _ = _sets_and_metrics(results)
    groups = [*sets, 'average']
    series = [[r.metrics.get(s, {}).get(metric, float('nan')) for s in sets] + [averages(r, [metric]).get(metric)]
              for r in results]
    return groups, [[float('nan') if v is None else v for v in values] for values in series]


def bar_chart(results: list[ModelResult], path: str, use_matplotlib: bool | None = None) -> str:
    """Grouped bars (one group per set and the average, one bar per model), one panel per metric.
    Returns the backend used ('matplotlib' or 'opencv')."""
    _, metrics = _sets_and_metrics(results)
    if use_matplotlib is None:
        try:
            import matplotlib  # noqa: F401
            use_matplotlib = True
        except ImportError:
            use_matplotlib = False
    panels = [(m.upper(), *_chart_series(results, m)) for m in metrics]
    labels = [r.label for r in results]
    if use_matplotlib:
        _bar_chart_matplotlib(panels, labels, path)
        return 'matplotlib'
    _bar_chart_opencv(panels, labels, path)
    return 'opencv'


def _value_range(series: list[list[float]]) -> tuple[float, float]:
    values = [v for row in series for v in row if v == v]
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    span = max(high - low, 1e-6)
    return max(0.0, low - 0.5 * span), high + 0.15 * span


def _bar_chart_matplotlib(panels, labels: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, 1.2 * len(panels[0][1]) * max(1, len(labels)) / 2),
                                                      3.2 * len(panels)), squeeze=False)
    for ax, (title, groups, series) in zip(axes[:, 0], panels):
        width = 0.8 / max(len(series), 1)
        for i, (label, values) in enumerate(zip(labels, series)):
            ax.bar([g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))], values, width, label=label)
        ax.set_xticks(range(len(groups)), groups, rotation=20)
        ax.set_ylim(*_value_range(series))
        ax.set_ylabel(title)
        ax.grid(axis='y', alpha=0.3)
    axes[0, 0].legend(ncol=min(len(labels), 4), fontsize='small')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


_PALETTE_BGR = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140)]


def _opencv_panel(title: str, groups: list[str], series: list[list[float]], labels: list[str]):
    import cv2
    import numpy as np

    panel_h, left, bottom, top = 300, 70, 60, 40
    group_w = max(60, 26 * len(series) + 20)
    width = max(left + group_w * len(groups) + 20, left + 150 * len(labels))
    img = np.full((panel_h, width, 3), 255, np.uint8)
    low, high = _value_range(series)

    def y_of(value: float) -> int:
        return int(top + (panel_h - top - bottom) * (1 - (value - low) / (high - low)))

    font, black = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0)
    cv2.line(img, (left, top), (left, panel_h - bottom), black, 1)
    cv2.line(img, (left, panel_h - bottom), (width - 10, panel_h - bottom), black, 1)
    for tick in np.linspace(low, high, 5):
        cv2.putText(img, f'{tick:.2f}', (5, y_of(tick) + 4), font, 0.35, black, 1)
    cv2.putText(img, title, (5, 20), font, 0.5, black, 1)
    for g, group in enumerate(groups):
        x0 = left + g * group_w + 10
        for i, values in enumerate(series):
            if values[g] == values[g]:  # not NaN
                x = x0 + i * 26
                cv2.rectangle(img, (x, y_of(values[g])), (x + 22, panel_h - bottom), _PALETTE_BGR[i % 6], -1)
        cv2.putText(img, group[:12], (x0, panel_h - bottom + 18), font, 0.35, black, 1)
    for i, label in enumerate(labels):
        x = left + 10 + i * 150
        cv2.rectangle(img, (x, panel_h - 22), (x + 12, panel_h - 10), _PALETTE_BGR[i % 6], -1)
        cv2.putText(img, label[:20], (x + 16, panel_h - 11), font, 0.35, black, 1)
    return img


def _bar_chart_opencv(panels, labels: list[str], path: str) -> None:
    import cv2
    import numpy as np

    images = [_opencv_panel(title, groups, series, labels) for title, groups, series in panels]
    width = max(im.shape[1] for im in images)
    images = [np.pad(im, ((0, 0), (0, width - im.shape[1]), (0, 0)), constant_values=255) for im in images]
    if not cv2.imwrite(path, np.concatenate(images, axis=0)):
        raise OSError(f'could not write {path}')


def write_reports(results: list[ModelResult], out_dir: str, size: int, device: str) -> dict[str, str]:
    """comparison.md/.csv/.json/.png in ``out_dir``; returns their paths."""
    paths = {ext: osp.join(out_dir, f'comparison.{ext}') for ext in ('md', 'csv', 'json', 'png')}
    with open(paths['md'], 'w', encoding='utf-8') as f:
        f.write(markdown_table(results, size, device) + '\n')
    rows = csv_rows(results)
    with open(paths['csv'], 'w', encoding='utf-8', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(paths['json'], 'w', encoding='utf-8') as f:
        json.dump({'size': size, 'device': device, 'models': [
            {'model': r.label, 'metrics': r.metrics, 'average': averages(r, _sets_and_metrics(results)[1]),
             'params': r.params, 'flops': r.flops, 'latency_ms': r.latency_ms} for r in results]}, f, indent=2)
    bar_chart(results, paths['png'])
    return paths


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='rainmer compare', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='+', metavar='MODEL',
                        help='test option file, training option file or experiment folder [=CHECKPOINT]')
    parser.add_argument('--test-opt', help='option file whose datasets and val (metrics, tile) every model uses')
    parser.add_argument('--out', default=osp.join('results', 'comparison'), help='output folder')
    parser.add_argument('--size', type=int, default=256, help='square input size for FLOPs and latency')
    parser.add_argument('--repeat', type=int, default=5, help='timed forward passes for the latency')
    parser.add_argument('--num-gpu', default=None, help="override num_gpu of every model (0: CPU, 'auto')")
    return parser


def compare(args: argparse.Namespace) -> int:
    entries = [resolve_model(spec) for spec in args.models]
    seen: dict[str, int] = {}
    for entry in entries:  # unique labels: the same config with two checkpoints
        seen[entry.label] = seen.get(entry.label, 0) + 1
        if seen[entry.label] > 1:
            entry.label = f'{entry.label}_{seen[entry.label]}'
    test_opt = load_yaml(args.test_opt) if args.test_opt else None
    num_gpu = None if args.num_gpu is None else (args.num_gpu if args.num_gpu == 'auto' else int(args.num_gpu))
    results = run_comparison(entries, test_opt, args.out, size=args.size, repeat=args.repeat, num_gpu=num_gpu)
    devices = sorted({r.device for r in results})
    paths = write_reports(results, args.out, args.size, ' + '.join(devices))
    print(open(paths['md'], encoding='utf-8').read())
    print('written: ' + ', '.join(paths.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``rainmer compare MODEL [MODEL ...] [--test-opt X_test.yml] [--out DIR]``"""
    from rainmer.errors import run_guarded

    return run_guarded(compare, build_parser().parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
