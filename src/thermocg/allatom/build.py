"""Build a periodic box of molecules at a target density: lattice sites, random orientations with
overlap rejection. Energy minimisation follows in the OpenMM runner.

The cubic box holds ``n_molecules`` copies of the molecule's reference geometry. Molecule centres
sit on the sites of a simple cubic lattice (``ceil(n^(1/3))`` per side, a random subset of sites when
``n`` is not a cube), each with a uniformly random rotation. A rotation is rejected when any of its
sites comes closer than ``min_distance_A`` (minimum image) to a site already placed; after
``max_attempts`` rejections the best rotation found (largest closest approach) is kept and the
minimiser resolves the rest. At liquid densities the lattice spacing (~4 A for methanol) is larger
than the molecules' radius, so overlaps are rare.
"""

from __future__ import annotations

import math

import numpy as np

from thermocg import units
from thermocg.allatom.molecules import Molecule


class BuildError(ValueError):
    """A box that cannot be built (bad count or density)."""


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix (3, 3) drawn uniformly from SO(3) (a unit quaternion of four normals)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def box_length_A(molecule: Molecule, n_molecules: int, density_g_cm3: float) -> float:
    """Edge of the cubic box holding ``n_molecules`` at ``density_g_cm3``, in A."""
    if n_molecules < 1:
        raise BuildError(f"n_molecules must be positive, got {n_molecules}")
    if not (math.isfinite(density_g_cm3) and density_g_cm3 > 0):
        raise BuildError(f"density_g_cm3 must be positive, got {density_g_cm3}")
    volume = units.volume_for_density_A3(molecule.mass_amu * n_molecules, density_g_cm3)
    return volume ** (1.0 / 3.0)


def build_box(molecule: Molecule, n_molecules: int, density_g_cm3: float, *, rng: np.random.Generator,
              min_distance_A: float = 1.8, max_attempts: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Positions (n_molecules * n_sites, 3) A, molecules contiguous, and the cubic box (3, 3) A."""
    length = box_length_A(molecule, n_molecules, density_g_cm3)
    per_side = math.ceil(n_molecules ** (1.0 / 3.0) - 1e-9)
    grid = np.stack(np.meshgrid(*[np.arange(per_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    chosen = np.sort(rng.choice(len(grid), size=n_molecules, replace=False))
    centres = (grid[chosen] + 0.5) * (length / per_side)
    template = molecule.positions_A - molecule.positions_A.T @ molecule.masses_amu / molecule.mass_amu
    n_sites = molecule.n_sites
    positions = np.empty((n_molecules * n_sites, 3))
    for m, centre in enumerate(centres):
        placed = positions[: m * n_sites]
        best, best_d = None, -1.0
        for _ in range(max_attempts):
            trial = template @ random_rotation(rng).T + centre
            if m == 0:
                best = trial
                break
            diff = trial[:, None, :] - placed[None, :, :]
            diff -= length * np.round(diff / length)
            closest = float(np.sqrt((diff * diff).sum(-1).min()))
            if closest > best_d:
                best, best_d = trial, closest
            if closest >= min_distance_A:
                break
        positions[m * n_sites:(m + 1) * n_sites] = best
    return positions, np.eye(3) * length
