"""Shared pytest set-up: import the plugin first (it makes the toolbox importable), keep runs small."""
import torch

import rainmer  # noqa: F401  (applies the compat layer before any test imports basicsr)

torch.set_num_threads(1)  # tiny networks: threads cost more than they give (subprocesses use OMP_NUM_THREADS=1)
