"""Train/val dataloaders as the toolbox builds them, with a sampler that can resume inside an epoch."""
import math

from basicsr.data import build_dataloader, build_dataset
from basicsr.data.data_sampler import EnlargedSampler


class ResumableSampler(EnlargedSampler):
    """The toolbox's ``EnlargedSampler`` that can start an epoch after its first ``start_index`` samples."""

    def __init__(self, dataset, num_replicas: int, rank: int, ratio: int = 1):
        super().__init__(dataset, num_replicas, rank, ratio)
        self.start_index = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start_index:])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


def create_train_val_dataloaders(opt: dict, logger):
    """``(train_loader, train_sampler, val_loaders, total_epochs, total_iters)`` from ``opt['datasets']``."""
    train_loader = train_sampler = None
    val_loaders = []
    for phase, dataset_opt in opt['datasets'].items():
        if phase == 'train':
            ratio = dataset_opt.get('dataset_enlarge_ratio', 1)
            train_set = build_dataset(dataset_opt)
            train_sampler = ResumableSampler(train_set, opt['world_size'], opt['rank'], ratio)
            train_loader = build_dataloader(train_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                                            sampler=train_sampler, seed=opt['manual_seed'])
            iters_per_epoch = len(train_loader)
            if iters_per_epoch == 0:
                raise ValueError(f"datasets.train: {len(train_set)} samples give no full batch of "
                                 f"batch_size_per_gpu={dataset_opt['batch_size_per_gpu']} per process")
            total_iters = int(opt['train']['total_iter'])
            total_epochs = math.ceil(total_iters / iters_per_epoch)
            logger.info(f'Training statistics:\n\tNumber of train images: {len(train_set)}'
                        f'\n\tDataset enlarge ratio: {ratio}'
                        f'\n\tBatch size per gpu: {dataset_opt["batch_size_per_gpu"]}'
                        f'\n\tWorld size (gpu number): {opt["world_size"]}'
                        f'\n\tRequire iter number per epoch: {iters_per_epoch}'
                        f'\n\tTotal epochs: {total_epochs}; iters: {total_iters}.')
        elif phase.split('_')[0] == 'val':
            val_set = build_dataset(dataset_opt)
            val_loaders.append(build_dataloader(val_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                                                sampler=None, seed=opt['manual_seed']))
            logger.info(f'Number of val images/folders in {dataset_opt["name"]}: {len(val_set)}')
        else:
            raise ValueError(f"datasets.{phase}: phase must be 'train' or start with 'val'")
    if train_loader is None:
        raise ValueError("datasets.train is missing from the training options")
    return train_loader, train_sampler, val_loaders, total_epochs, total_iters
