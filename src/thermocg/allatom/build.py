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

**Densities that cannot be built.** Each molecule occupies at least the union of its sites' spheres
of diameter sigma (the Lennard-Jones size; sites with sigma = 0, such as hydroxyl hydrogens, occupy
none). The packing fraction of a box is the molecules' total volume over the box volume; liquids sit
near 0.5 (TraPPE methanol at 0.786 g/cm^3: 0.50; SPC/E water at 0.997 g/cm^3: 0.56), close-packed
spheres fill 0.74, and hydrogen bonds let water's oxygens approach closer than sigma (ice VII at
1.65 g/cm^3 would be 0.92). A density whose packing fraction exceeds :data:`MAX_PACKING_FRACTION`
= 1 (the spheres would more than fill the box) is refused before any box is built
(:func:`check_density`), naming the largest density the system allows (:func:`max_density_g_cm3`);
the built-in molecules' limits are 1.56 (TraPPE methanol), 1.44 (OPLS-AA methanol) and 1.79 g/cm^3
(SPC/E water). Past about three times that fill, OpenMM fails deep inside with "Particle coordinate
is NaN".
"""

from __future__ import annotations

import functools
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


#: the largest packing fraction (molecules' sigma-sphere volume / box volume) that is built
MAX_PACKING_FRACTION = 1.0


@functools.lru_cache(maxsize=64)
def molecule_volume_A3(molecule: Molecule, *, max_points: int = 2_000_000) -> float:
    """Volume (A^3) of the union of a molecule's site spheres of diameter sigma, in its reference
    geometry, counted on a cubic grid (at most ``max_points`` cells, none coarser than 1/25 of the
    smallest radius: about 0.1 % for the built-in molecules). Sites with sigma = 0 add nothing."""
    centres = np.array([site.position_A for site in molecule.sites if site.sigma_A > 0], dtype=np.float64)
    radii = np.array([site.sigma_A / 2.0 for site in molecule.sites if site.sigma_A > 0], dtype=np.float64)
    if len(radii) == 0:
        return 0.0
    low, high = (centres - radii[:, None]).min(0), (centres + radii[:, None]).max(0)
    spacing = max(float(radii.min()) / 25.0, (float(np.prod(high - low)) / max_points) ** (1.0 / 3.0))
    axes = [low[k] + spacing * (np.arange(math.ceil((high[k] - low[k]) / spacing)) + 0.5) for k in range(3)]
    xy = np.stack(np.meshgrid(axes[0], axes[1], indexing="ij"), -1).reshape(-1, 2)
    inside = 0
    for z in axes[2]:  # one plane at a time keeps the memory small
        points = np.column_stack([xy, np.full(len(xy), z)])
        hit = np.zeros(len(points), dtype=bool)
        for centre, radius in zip(centres, radii):
            hit |= ((points - centre) ** 2).sum(1) <= radius * radius
        inside += int(hit.sum())
    return inside * spacing ** 3


def packing_fraction(system: Molecule | Mixture, density_g_cm3: float) -> float:
    """The fraction of the box the molecules' sigma spheres fill at ``density_g_cm3`` (module
    docstring): a molecule type alone, or a mixture at its counts."""
    mixture = system if isinstance(system, Mixture) else as_mixture(system, 1)
    occupied = sum(c.n_molecules * molecule_volume_A3(c.molecule) for c in mixture.components)
    return occupied / units.volume_for_density_A3(mixture.mass_amu, density_g_cm3)


def max_density_g_cm3(system: Molecule | Mixture) -> float:
    """The largest density (g/cm^3) whose packing fraction is :data:`MAX_PACKING_FRACTION`
    (a molecule alone, or a mixture at its own composition); inf for point-like molecules."""
    fraction = packing_fraction(system, 1.0)
    return math.inf if fraction == 0 else MAX_PACKING_FRACTION / fraction


def check_density(system: Molecule | Mixture, density_g_cm3: float, *, where: str = "") -> None:
    """Raise :class:`BuildError` when ``density_g_cm3`` packs the molecules beyond
    :data:`MAX_PACKING_FRACTION`; the message names ``where`` (e.g. the state), the density, its
    packing fraction and the largest density that can be built."""
    fraction = packing_fraction(system, density_g_cm3)
    if fraction > MAX_PACKING_FRACTION:
        name = system.name
        raise BuildError(
            f"{where + ': ' if where else ''}density_g_cm3 = {density_g_cm3:g} cannot be built for {name}: its "
            f"molecules' Lennard-Jones spheres (diameter sigma) would fill {fraction:.2f} times the box (liquids fill "
            f"about 0.5, close-packed spheres 0.74); the largest density that can be built is "
            f"{max_density_g_cm3(system):.3g} g/cm^3 (packing fraction {MAX_PACKING_FRACTION:g})")


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
    check_density(mixture, density_g_cm3)
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
