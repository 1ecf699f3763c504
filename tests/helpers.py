"""Builders shared by the tests: tiny systems with known answers.

Imported by test modules as ``from helpers import ...`` (pytest puts tests/ on the path); fixtures
stay in conftest.py.
"""

import numpy as np


def lj_force_frames(potential, n_frames: int, *, rng: np.random.Generator, n_particles: int = 216,
                    density: float = 0.0128, jitter: float = 0.09, types=None, state=None):
    """Frames of jittered-lattice configurations (Gaussian jitter, ``jitter`` x the lattice spacing)
    with the exact forces of ``potential``: the reference an MS-CG fit must recover."""
    from thermocg.frames import Frames
    from thermocg.potentials.base import energy_and_forces

    side = round(n_particles ** (1 / 3))
    positions, boxes = [], []
    for _ in range(n_frames):
        p, box = lj_fluid(n_particles, density, rng=rng)
        positions.append(p + rng.normal(0.0, jitter * box[0, 0] / side, p.shape))
        boxes.append(box)
    positions, boxes = np.array(positions), np.array(boxes)
    if types is None:
        types = np.zeros(n_particles, dtype=np.int64)
    _, forces = energy_and_forces(potential, positions, boxes, types)
    return Frames(positions=positions, box=boxes, types=types, type_names=potential.type_names,
                  masses=np.full(n_particles, 32.0), forces=forces.numpy(), state=state)


def lj_pair_curve(lj, r, a: int = 0, b: int = 0):
    """u(r) (kcal/mol) and F(r) = -du/dr (kcal/mol/A) of a LennardJones potential's pair (a, b), numpy."""
    import torch

    r = torch.as_tensor(r, dtype=torch.float64).requires_grad_(True)
    u = lj.pair_energy(r, torch.full(r.shape, a), torch.full(r.shape, b))
    (grad,) = torch.autograd.grad(u.sum(), r)
    return u.detach().numpy(), -grad.numpy()


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
