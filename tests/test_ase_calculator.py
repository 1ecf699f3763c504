"""The ASE calculator: same energies and forces as thermocg (unit conversion at the edge), and ASE's own
integrators and optimisers run with it."""

import numpy as np
import pytest

pytest.importorskip("ase")

from ase import units as ase_units  # noqa: E402
from ase.calculators.fd import calculate_numerical_forces  # noqa: E402

from helpers import lj_fluid  # noqa: E402
from thermocg import units  # noqa: E402
from thermocg.ase_calculator import ThermoCGCalculator, atoms_from_frames  # noqa: E402
from thermocg.frames import Frames  # noqa: E402
from thermocg.potentials.base import energy_and_forces  # noqa: E402
from thermocg.potentials.lj import LennardJones  # noqa: E402


def two_type_system(rng):
    pos, box = lj_fluid(64, 0.01, rng=rng, triclinic=True)
    types = np.arange(64) % 2
    frames = Frames(positions=pos, box=box, types=types, type_names=("A", "B"), masses=np.where(types, 20.0, 40.0))
    lj = LennardJones(["A", "B"], epsilon_kcal_mol=[[0.2, 0.25], [0.25, 0.3]], sigma_A=[[3.4, 3.6], [3.6, 3.8]],
                      cutoff_A=7.5, switch_width_A=1.0)
    return frames, lj


def test_energy_and_forces_match_thermocg(rng):
    frames, lj = two_type_system(rng)
    atoms = atoms_from_frames(frames)
    atoms.calc = ThermoCGCalculator(lj)
    energy, forces = energy_and_forces(lj, frames.positions[0], frames.box[0], frames.types)
    assert atoms.get_potential_energy() == pytest.approx(float(energy[0]) / units.EV_TO_KCAL_MOL, rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), forces[0].numpy() / units.EV_TO_KCAL_MOL, rtol=1e-10, atol=1e-12)
    # and the forces are the derivative of the energy ASE sees (finite differences through ASE)
    numeric = calculate_numerical_forces(atoms, eps=1e-5, iatoms=[0, 7])
    np.testing.assert_allclose(numeric, atoms.get_forces()[[0, 7]], atol=1e-6)


def test_bead_types_from_symbols_mapping(rng):
    frames, lj = two_type_system(rng)
    atoms = atoms_from_frames(frames)
    reference = None
    atoms.calc = ThermoCGCalculator(lj)
    reference = atoms.get_potential_energy()
    del atoms.arrays["bead_type"]
    atoms.set_chemical_symbols(["C" if t == 0 else "O" for t in frames.types])
    atoms.calc = ThermoCGCalculator(lj, type_of_symbol={"C": "A", "O": "B"})
    assert atoms.get_potential_energy() == pytest.approx(reference, rel=1e-12)
    atoms.calc = ThermoCGCalculator(lj)
    with pytest.raises(ValueError, match="cannot tell bead types"):
        atoms.get_potential_energy()


def test_ase_velocity_verlet_conserves_energy(rng):
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    frames, lj = two_type_system(rng)
    atoms = atoms_from_frames(frames)
    atoms.calc = ThermoCGCalculator(lj)
    MaxwellBoltzmannDistribution(atoms, temperature_K=100.0, rng=np.random.default_rng(0))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=2.0 * ase_units.fs)
    energies = []
    dyn.attach(lambda: energies.append(atoms.get_total_energy()), interval=10)
    dyn.run(400)
    kinetic = atoms.get_kinetic_energy()
    assert np.ptp(energies) < 2e-3 * max(kinetic, 1e-3)


def test_ase_optimiser_reaches_a_minimum(rng):
    from ase.optimize import FIRE

    frames, lj = two_type_system(rng)
    atoms = atoms_from_frames(frames)
    atoms.calc = ThermoCGCalculator(lj)
    start = atoms.get_potential_energy()
    assert np.abs(atoms.get_forces()).max() > 0.04  # not at a minimum to begin with
    assert FIRE(atoms, logfile=None).run(fmax=0.01, steps=2000)
    assert atoms.get_potential_energy() < start
    assert np.abs(atoms.get_forces()).max() < 0.01


def test_non_periodic_atoms_are_refused(rng):
    frames, lj = two_type_system(rng)
    atoms = atoms_from_frames(frames)
    atoms.pbc = False
    atoms.calc = ThermoCGCalculator(lj)
    with pytest.raises(ValueError, match="periodic"):
        atoms.get_potential_energy()
