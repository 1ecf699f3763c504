"""An ASE calculator for any thermocg potential, so ASE's integrators and optimisers can drive CG beads.

ASE works in eV and A (forces eV/A, stress eV/A^3, masses amu, time in ``ase.units.fs``); thermocg
potentials in kcal/mol and A. The calculator converts at this edge: E_eV = E_kcal_mol / EV_TO_KCAL_MOL.

Stress: the configurational (virial) stress of any potential, sigma = (1/V) dE/d(eps) = -W / V with W
the virial of :func:`thermocg.potentials.base.energy_forces_virial` (autograd through a homogeneous
strain), in ASE's Voigt order (xx, yy, zz, yz, xz, xy) and sign convention (negative under
compression; the pressure is -tr(sigma)/3). ASE adds the kinetic part itself
(``atoms.get_stress(include_ideal_gas=True)``), so ASE's NPT integrators and cell filters work.

Bead types: CG beads are not chemical elements. The calculator takes each atom's bead type from, in
order, the per-atom array ``bead_type`` (strings, as :class:`thermocg.md.ExtXYZReporter` writes),
the ``type_of_symbol`` mapping given to the constructor, the chemical symbol itself, or, for a
potential that knows a single bead type, that type. The box must be periodic in all three directions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from thermocg import units
from thermocg.frames import Frames
from thermocg.neighbors import NeighborList, check_cutoff_fits
from thermocg.potentials.base import Potential, energy_and_forces, energy_forces_virial

__all__ = ["ThermoCGCalculator", "atoms_from_frames"]


class ThermoCGCalculator(Calculator):
    """Energy (eV), forces (eV/A) and stress (eV/A^3) of a thermocg :class:`~thermocg.potentials.Potential`.

    Parameters
    ----------
    potential : any thermocg potential (on any device)
    type_of_symbol : optional mapping chemical symbol -> bead type name
    skin_A : neighbour-list skin; the list is reused while no bead moved more than skin/2
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, potential: Potential, *, type_of_symbol: dict[str, str] | None = None,
                 skin_A: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(potential, Potential):
            raise ValueError(f"ThermoCGCalculator needs a thermocg Potential, got {type(potential).__name__}")
        self.potential = potential
        self.type_of_symbol = dict(type_of_symbol or {})
        self._neighbors = NeighborList(potential.cutoff_A, skin_A=skin_A)

    def bead_types(self, atoms) -> list[str]:
        """The bead type name of every atom (see the module docstring for the order of sources)."""
        if "bead_type" in atoms.arrays:
            return [str(t) for t in atoms.arrays["bead_type"]]
        symbols = atoms.get_chemical_symbols()
        if self.type_of_symbol:
            missing = sorted(set(symbols) - set(self.type_of_symbol))
            if missing:
                raise ValueError(f"ThermoCGCalculator: no bead type for symbol(s) {missing} in type_of_symbol")
            return [self.type_of_symbol[s] for s in symbols]
        if all(s in self.potential.type_names for s in symbols):
            return symbols
        if len(self.potential.type_names) == 1:
            return [self.potential.type_names[0]] * len(symbols)
        raise ValueError(
            f"ThermoCGCalculator: cannot tell bead types of symbols {sorted(set(symbols))}; the potential knows "
            f"{list(self.potential.type_names)} (give type_of_symbol or a 'bead_type' array)"
        )

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if not all(atoms.pbc):
            raise ValueError("ThermoCGCalculator: thermocg potentials need periodic boundaries in x, y and z")
        box = np.asarray(atoms.cell.array, dtype=np.float64)
        check_cutoff_fits(self.potential.cutoff_A, box, what="the potential's cutoff")
        names = self.bead_types(atoms)
        table = sorted(set(names))
        types = self.potential.type_indices(table, np.array([table.index(n) for n in names]))
        positions = torch.as_tensor(atoms.get_positions(), dtype=torch.float64, device=self.potential.device)
        box_t = torch.as_tensor(box, dtype=torch.float64, device=self.potential.device)
        pairs = self._neighbors.get(positions, box_t)
        if "stress" in properties:
            energy, forces, virial = energy_forces_virial(self.potential, positions, box_t, types, pairs=pairs)
            w = virial[0].double().cpu().numpy()
            stress = -w / abs(float(np.linalg.det(box))) / units.EV_TO_KCAL_MOL
            self.results["stress"] = np.array([stress[0, 0], stress[1, 1], stress[2, 2],
                                               stress[1, 2], stress[0, 2], stress[0, 1]])
        else:
            energy, forces = energy_and_forces(self.potential, positions, box_t, types, pairs=pairs)
        e_ev = float(energy[0]) / units.EV_TO_KCAL_MOL
        self.results["energy"] = e_ev
        self.results["free_energy"] = e_ev
        self.results["forces"] = forces[0].double().cpu().numpy() / units.EV_TO_KCAL_MOL


def atoms_from_frames(frames: Frames, index: int = -1):
    """An ``ase.Atoms`` of frame ``index``: dummy element X, bead types in the ``bead_type`` array,
    masses (amu), cell = box, periodic; velocities (A/fs) converted to ASE's units when present."""
    import ase
    from ase import units as ase_units

    atoms = ase.Atoms(["X"] * frames.n_particles, positions=frames.positions[index], cell=frames.box[index], pbc=True)
    atoms.set_masses(frames.masses)
    atoms.new_array("bead_type", np.array([frames.type_names[t] for t in frames.types]))
    if frames.velocities is not None:
        atoms.set_velocities(frames.velocities[index] / ase_units.fs)
    return atoms
