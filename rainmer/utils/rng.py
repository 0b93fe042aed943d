"""Random-number-generator states as tensors, so they fit a training state loaded with ``weights_only=True``."""
import random

import numpy as np
import torch


def capture_rng_states() -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """The states of Python's ``random``, NumPy's global generator, torch's CPU and CUDA generators."""
    version, mt_state, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    if np_kind != 'MT19937':
        raise RuntimeError(f'Unexpected NumPy generator {np_kind}')
    states = {
        'python': torch.tensor([version, *mt_state], dtype=torch.int64),
        'python_gauss': torch.tensor([float('nan') if gauss is None else gauss], dtype=torch.float64),
        'numpy': torch.from_numpy(np_keys.astype(np.int64)),
        'numpy_extra': torch.tensor([np_pos, np_has_gauss, np_gauss], dtype=torch.float64),
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    """Restore what :func:`capture_rng_states` captured."""
    python = states['python'].tolist()
    gauss = float(states['python_gauss'][0])
    random.setstate((python[0], tuple(python[1:]), None if gauss != gauss else gauss))
    pos, has_gauss, np_gauss = states['numpy_extra'].tolist()
    np.random.set_state(('MT19937', states['numpy'].numpy().astype(np.uint32), int(pos), int(has_gauss), np_gauss))
    torch.set_rng_state(states['torch'].cpu())
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states['cuda']])
