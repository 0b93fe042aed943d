"""Test pipeline: ``basicsr test -opt X.yml`` or ``python -m rainmer.test -opt X.yml``.

Runs the model on every ``datasets`` entry, then prints one metric table and writes it to
``results/<name>/metrics.md`` and ``metrics.json``.
"""
import argparse
import json
import os
import os.path as osp
import sys

import torch

from rainmer.plugins import load_plugins

load_plugins()

from basicsr.data import build_dataloader, build_dataset  # noqa: E402
from basicsr.models import build_model  # noqa: E402
from basicsr.utils import get_env_info, get_time_str, make_exp_dirs  # noqa: E402
from basicsr.utils.options import dict2str  # noqa: E402

from rainmer.options import add_toolbox_flags, parse_options  # noqa: E402
from rainmer.utils.allocator import tune_malloc  # noqa: E402
from rainmer.utils.run_logger import run_logger  # noqa: E402


def metric_table(results: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per test set (plus the average), one column per metric."""
    metrics = sorted({m for values in results.values() for m in values})
    lines = ['| test set | ' + ' | '.join(metrics) + ' |', '|---' * (len(metrics) + 1) + '|']
    for name, values in results.items():
        lines.append(f'| {name} | ' + ' | '.join(f'{values[m]:.4f}' if m in values else '-' for m in metrics) + ' |')
    if len(results) > 1:
        means = [sum(v[m] for v in results.values() if m in v) / sum(m in v for v in results.values()) for m in metrics]
        lines.append('| average | ' + ' | '.join(f'{v:.4f}' for v in means) + ' |')
    return '\n'.join(lines)


def test_pipeline(args: argparse.Namespace, root_path: str | None = None) -> dict[str, dict[str, float]]:
    """Test from parsed flags; results go under ``root_path/results/<name>``. Returns the metrics per set."""
    root_path = osp.abspath(root_path or os.getcwd())
    tune_malloc()  # reuse activation memory between steps (rainmer/utils/allocator.py)
    opt = parse_options(args, root_path, is_train=False)
    torch.backends.cudnn.benchmark = True
    make_exp_dirs(opt)
    log_file = osp.join(opt['path']['log'], f"test_{opt['name']}_{get_time_str()}.log")
    logger = run_logger(log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))

    test_loaders = []
    for _, dataset_opt in sorted(opt['datasets'].items()):
        test_set = build_dataset(dataset_opt)
        test_loaders.append(build_dataloader(test_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                                             sampler=None, seed=opt['manual_seed']))
        logger.info(f"Number of test images in {dataset_opt['name']}: {len(test_set)}")

    model = build_model(opt)
    results: dict[str, dict[str, float]] = {}
    val_opt = opt.get('val') or {}
    for test_loader in test_loaders:
        name = test_loader.dataset.opt['name']
        logger.info(f'Testing {name}...')
        model.validation(test_loader, current_iter=opt['name'], tb_logger=None, save_img=val_opt.get('save_img', False))
        if val_opt.get('metrics') and hasattr(model, 'metric_results'):
            results[name] = {metric: float(value) for metric, value in model.metric_results.items()}
    if results and opt['rank'] == 0:
        table = metric_table(results)
        logger.info(f"Metrics of {opt['name']}:\n{table}")
        with open(osp.join(opt['path']['results_root'], 'metrics.md'), 'w', encoding='utf-8') as f:
            f.write(table + '\n')
        with open(osp.join(opt['path']['results_root'], 'metrics.json'), 'w', encoding='utf-8') as f:
            json.dump(results, f, indent=2)
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m rainmer.test -opt X.yml``"""
    from rainmer.errors import run_guarded

    parser = add_toolbox_flags(argparse.ArgumentParser(prog='python -m rainmer.test', description=__doc__))
    args = parser.parse_args(argv)
    return run_guarded(test_pipeline, args, returns_code=False)


if __name__ == '__main__':
    sys.exit(main())
