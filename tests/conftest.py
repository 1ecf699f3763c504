"""Shared test set-up: few threads (the CI machine has 2 cores), fixed seeds, tiny systems."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
