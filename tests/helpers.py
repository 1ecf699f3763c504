"""Builders shared by the tests: tiny systems with known answers.

Imported by test modules as ``from helpers import ...`` (pytest puts tests/ on the path); fixtures
stay in conftest.py.
"""

import numpy as np


def lj_fluid(n_particles: int = 64, density_per_A3: float = 0.02, *, rng: np.random.Generator,
             triclinic: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Positions (N, 3) on a jittered lattice and a box (3, 3) at the given number density."""
    side = round(n_particles ** (1 / 3))
    assert side**3 == n_particles
    length = (n_particles / density_per_A3) ** (1 / 3)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    frac = (grid + 0.5 + rng.uniform(-0.1, 0.1, grid.shape)) / side
    box = np.eye(3) * length
    if triclinic:
        box[1, 0] = 0.2 * length
        box[2, 0] = -0.1 * length
        box[2, 1] = 0.15 * length
    return frac @ box, box
