"""Build a periodic box of molecules at a target density: lattice sites, random orientations with
overlap rejection. Energy minimisation follows in the OpenMM runner.

The cubic box holds every molecule of the system (one molecule type, or a mixture: see
:mod:`thermocg.allatom.mixture`) in its reference geometry. Molecule centres sit on the sites of a
simple cubic lattice (``ceil(n^(1/3))`` per side, a random subset of sites when ``n`` is not a cube);
in a mixture the sites are dealt to the molecules in random order, so the kinds are randomly mixed.
Each molecule gets a uniformly random rotation, rejected when any of its sites comes closer than
``min_distance_A`` (minimum image) to a site already placed; after ``max_attempts`` rejections the
best rotation found (largest closest approach) is kept and the minimiser resolves the rest. At
liquid densities the lattice spacing (~4 A for methanol, ~3.6 A for methanol-water) is larger than
the molecules' radius, so overlaps are rare. Atoms come out in the system's order (component by
component, molecule by molecule).
"""

from __future__ import annotations

import math

import numpy as np

from thermocg import units
from thermocg.allatom.mixture import Mixture, as_mixture
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


def box_length_A(system: Molecule | Mixture, n_molecules: int | None = None,
                 density_g_cm3: float | None = None) -> float:
    """Edge of the cubic box holding the system (a molecule and ``n_molecules``, or a mixture with its
    own counts) at ``density_g_cm3``, in A: (M / rho)^(1/3) with M the total mass."""
    if isinstance(system, Molecule) and (n_molecules is None or n_molecules < 1):
        raise BuildError(f"n_molecules must be positive, got {n_molecules}")
    mixture = as_mixture(system, n_molecules)
    if density_g_cm3 is None or not (math.isfinite(density_g_cm3) and density_g_cm3 > 0):
        raise BuildError(f"density_g_cm3 must be positive, got {density_g_cm3}")
    return units.volume_for_density_A3(mixture.mass_amu, density_g_cm3) ** (1.0 / 3.0)


def build_box(system: Molecule | Mixture, n_molecules: int | None = None, density_g_cm3: float | None = None, *,
              rng: np.random.Generator, min_distance_A: float = 1.8,
              max_attempts: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Positions (n_atoms, 3) A in the system's atom order, and the cubic box (3, 3) A.

    ``system``: a molecule with ``n_molecules``, or a :class:`~thermocg.allatom.mixture.Mixture`
    (``n_molecules`` left out)."""
    mixture = as_mixture(system, n_molecules)
    length = box_length_A(mixture, None, density_g_cm3)
    n_total = mixture.n_molecules
    per_side = math.ceil(n_total ** (1.0 / 3.0) - 1e-9)
    grid = np.stack(np.meshgrid(*[np.arange(per_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    chosen = np.sort(rng.choice(len(grid), size=n_total, replace=False))
    if mixture.is_mixture:
        chosen = rng.permutation(chosen)  # the kinds randomly mixed over the lattice
    centres = (grid[chosen] + 0.5) * (length / per_side)
    templates = {m.name: m.positions_A - m.positions_A.T @ m.masses_amu / m.mass_amu for m in mixture.molecules}
    positions = np.empty((mixture.n_atoms, 3))
    for _, molecule, m, start in mixture.molecule_blocks():
        centre = centres[m]
        placed = positions[:start]
        template = templates[molecule.name]
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
        positions[start:start + molecule.n_sites] = best
    return positions, np.eye(3) * length
