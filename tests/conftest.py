"""Shared pytest set-up: import the plugin first (it makes the toolbox importable), keep runs small."""
import torch

import rainmer  # noqa: F401  (applies the compat layer before any test imports basicsr)

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
