"""Training pipeline: ``basicsr train -opt X.yml`` or ``python -m rainmer.train -opt X.yml`` (torchrun).

The toolbox's loop with the compat fixes, experiments under the current folder, and a graceful stop:
SIGINT/SIGTERM finish the current iteration, save network and training state, and exit, so
``--auto_resume`` continues from there (a second signal stops at once).
"""
import argparse
import datetime
import os
import os.path as osp
import signal
import sys
import time

import torch

from rainmer.plugins import load_plugins

load_plugins()

from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher  # noqa: E402
from basicsr.models import build_model  # noqa: E402
from basicsr.utils import (  # noqa: E402
    AvgTimer,
    MessageLogger,
    get_env_info,
    get_root_logger,
    get_time_str,
    init_tb_logger,
    init_wandb_logger,
    make_exp_dirs,
    mkdir_and_rename,
)
from basicsr.utils.options import dict2str  # noqa: E402

from rainmer.compat.checkpoint import load_resume_state, remove_stale_partials  # noqa: E402
from rainmer.data_loading import create_train_val_dataloaders  # noqa: E402
from rainmer.options import add_toolbox_flags, copy_options_file, parse_options  # noqa: E402
from rainmer.utils.allocator import tune_malloc  # noqa: E402
from rainmer.utils.rng import restore_rng_states  # noqa: E402
from rainmer.utils.run_logger import run_logger  # noqa: E402


class GracefulStop:
    """Turn the first SIGINT/SIGTERM into a request to stop at the next iteration boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second signal: stop now
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum
        get_root_logger().warning(f'Received {signal.Signals(signum).name}: saving at the end of this iteration '
                                  '(send it again to stop immediately).')

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _init_loggers(opt: dict, root_path: str):
    log_file = osp.join(opt['path']['log'], f"train_{opt['name']}_{get_time_str()}.log")
    logger = run_logger(log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))
    tb_logger = None
    logger_opt = opt['logger']
    if logger_opt.get('wandb') is not None and logger_opt['wandb'].get('project') and 'debug' not in opt['name']:
        init_wandb_logger(opt)
    if logger_opt.get('use_tb_logger') and 'debug' not in opt['name']:
        tb_logger = init_tb_logger(log_dir=osp.join(root_path, 'tb_logger', opt['name']))
    return logger, tb_logger


def _make_prefetcher(opt: dict, train_loader):
    prefetch_mode = opt['datasets']['train'].get('prefetch_mode')
    if prefetch_mode in (None, 'cpu'):
        return CPUPrefetcher(train_loader)
    if prefetch_mode == 'cuda':
        if opt['datasets']['train'].get('pin_memory') is not True:
            raise ValueError('datasets.train.prefetch_mode: cuda needs pin_memory: true')
        return CUDAPrefetcher(train_loader, opt)
    raise ValueError(f"datasets.train.prefetch_mode: '{prefetch_mode}' is not one of None, 'cpu', 'cuda'")


def _position_sampler(sampler, loader, epoch: int, current_iter: int, logger) -> int:
    """Continue where the saved run was: the next epoch after a full one, else after the batches it used."""
    iters_per_epoch = len(loader)
    consumed = current_iter - epoch * iters_per_epoch
    if consumed >= iters_per_epoch:
        return epoch + 1 + (consumed - iters_per_epoch) // iters_per_epoch
    if consumed > 0:
        sampler.start_index = consumed * loader.batch_size
        logger.info(f'Resuming inside epoch {epoch}: skipping its first {consumed} batches.')
    return epoch


def _restore_rng(resume_state: dict, opt: dict, logger) -> None:
    if 'rng' not in resume_state:
        return
    if opt['world_size'] > 1:
        logger.info('Distributed resume: random states are reseeded per rank (exact resume is single-process).')
        return
    restore_rng_states(resume_state['rng'])


def train_pipeline(args: argparse.Namespace, root_path: str | None = None) -> int:
    """Train from parsed flags; experiments and tb_logger go under ``root_path`` (default: current folder)."""
    root_path = osp.abspath(root_path or os.getcwd())
    tune_malloc()  # reuse activation memory between steps (rainmer/utils/allocator.py)
    opt = parse_options(args, root_path, is_train=True)
    opt['root_path'] = root_path
    torch.backends.cudnn.benchmark = True

    notes = []  # logged once the log file exists (the toolbox's logger takes its file only when first created)
    if opt['rank'] == 0:
        removed = remove_stale_partials([opt['path']['models'], opt['path']['training_states']])
        if removed:
            notes.append(f'Removed {len(removed)} unfinished checkpoint writes of stopped runs: {", ".join(removed)}')
    resume_state = load_resume_state(opt, notes)
    if resume_state is None:
        make_exp_dirs(opt)
        if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name'] and opt['rank'] == 0:
            mkdir_and_rename(osp.join(root_path, 'tb_logger', opt['name']))
    if opt['rank'] == 0:  # one writer: the other ranks may run before rank 0 has made the folder
        copy_options_file(args.opt, opt['path']['experiments_root'], args.force_yml)
    logger, tb_logger = _init_loggers(opt, root_path)
    for note in notes:
        logger.warning(note)

    train_loader, train_sampler, val_loaders, total_epochs, total_iters = create_train_val_dataloaders(opt, logger)
    model = build_model(opt)
    start_epoch, current_iter = 0, 0
    if resume_state:
        model.resume_training(resume_state)
        start_epoch, current_iter = resume_state['epoch'], resume_state['iter']
        logger.info(f"Resuming training from {opt['path']['resume_state']}: epoch {start_epoch}, iter {current_iter}.")
        start_epoch = _position_sampler(train_sampler, train_loader, start_epoch, current_iter, logger)
        _restore_rng(resume_state, opt, logger)
    elif hasattr(model, 'before_training'):
        model.before_training(train_loader)  # e.g. RainmerModel pre-fills its archive of negatives

    msg_logger = MessageLogger(opt, current_iter, tb_logger)
    prefetcher = _make_prefetcher(opt, train_loader)
    stop = GracefulStop()
    logger.info(f'Start training from epoch: {start_epoch}, iter: {current_iter}')
    data_timer, iter_timer = AvgTimer(), AvgTimer()
    start_time = time.time()
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, total_epochs + 1):
            if epoch != start_epoch:
                train_sampler.start_index = 0
            train_sampler.set_epoch(epoch)
            prefetcher.reset()
            train_data = prefetcher.next()
            while train_data is not None:
                data_timer.record()
                current_iter += 1
                if current_iter > total_iters:
                    break
                model.update_learning_rate(current_iter, warmup_iter=opt['train'].get('warmup_iter', -1))
                model.feed_data(train_data)
                model.optimize_parameters(current_iter)
                iter_timer.record()
                if current_iter == 1:
                    msg_logger.reset_start_time()
                if current_iter % opt['logger']['print_freq'] == 0:
                    log_vars = {'epoch': epoch, 'iter': current_iter, 'lrs': model.get_current_learning_rate(),
                                'time': iter_timer.get_avg_time(), 'data_time': data_timer.get_avg_time()}
                    log_vars.update(model.get_current_log())
                    msg_logger(log_vars)
                if current_iter % opt['logger']['save_checkpoint_freq'] == 0:
                    logger.info('Saving models and training states.')
                    model.save(epoch, current_iter)
                if opt.get('val') is not None and current_iter % opt['val']['val_freq'] == 0:
                    for val_loader in val_loaders:
                        model.validation(val_loader, current_iter, tb_logger, opt['val']['save_img'])
                if stop.requested:
                    logger.warning(f'Stopping at iter {current_iter}: saving models and training states.')
                    model.save(epoch, current_iter)
                    return 128 + stop.signum
                data_timer.start()
                iter_timer.start()
                train_data = prefetcher.next()
            if current_iter > total_iters:
                break
        current_iter = min(current_iter, total_iters)
        logger.info(f'End of training. Time consumed: {datetime.timedelta(seconds=int(time.time() - start_time))}')
        logger.info('Save the latest model.')
        model.save(epoch=-1, current_iter=-1)
        if opt.get('val') is not None:
            for val_loader in val_loaders:
                model.validation(val_loader, current_iter, tb_logger, opt['val']['save_img'])
    finally:
        stop.restore()
        if tb_logger:
            tb_logger.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m rainmer.train -opt X.yml [--launcher pytorch] ...``"""
    from rainmer.errors import run_guarded

    parser = add_toolbox_flags(argparse.ArgumentParser(prog='python -m rainmer.train', description=__doc__))
    args = parser.parse_args(argv)
    return run_guarded(train_pipeline, args)


if __name__ == '__main__':
    sys.exit(main())
