"""Shared pytest set-up: import the plugin first (it makes the toolbox importable), keep runs small."""
import os

import pytest
import torch

import rainmer  # noqa: F401  (applies the compat layer before any test imports basicsr)

torch.set_num_threads(1)  # tiny networks: threads cost more than they give (subprocesses use OMP_NUM_THREADS=1)


@pytest.fixture(autouse=True, scope='session')
def _private_cache_dir(tmp_path_factory):
    """Data-check outcomes go to a folder of this test session (commands run in subprocesses inherit it)."""
    os.environ['RAINMER_CACHE_DIR'] = str(tmp_path_factory.mktemp('rainmer_cache'))
