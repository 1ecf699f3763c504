"""The ASE calculator: same energies and forces as thermocg (unit conversion at the edge), the virial stress
of every potential kind (ASE's finite differences under strain, ASE's own Lennard-Jones, a pair sum), and
ASE's own integrators, optimisers, cell filters and NPT run with it."""

import numpy as np
import pytest

pytest.importorskip("ase")

from ase import units as ase_units  # noqa: E402
from ase.calculators.fd import calculate_numerical_forces  # noqa: E402

from helpers import lj_fluid  # noqa: E402
from test_potential_contract import POTENTIAL_FACTORIES, configuration  # noqa: E402
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


# ------------------------------------------------------------------------------------------ stress

def test_virial_is_the_pair_sum_of_r_times_f(rng):
    """W = sum over pairs r_ij (x) f_ij for a truncated and shifted LJ (known pair forces)."""
    import torch

    from thermocg.neighbors import neighbor_pairs
    from thermocg.potentials.base import energy_forces_virial

    pos, box = lj_fluid(64, 0.02, rng=rng, triclinic=True)
    eps, sigma, cutoff = 0.25, 3.5, 7.0
    lj = LennardJones(["A"], epsilon_kcal_mol=eps, sigma_A=sigma, cutoff_A=cutoff, switch_width_A=0.0)
    i, j, shifts = neighbor_pairs(pos, box, cutoff)
    vec = pos[j] - pos[i] + shifts @ box
    r = np.linalg.norm(vec, axis=1)
    du_dr = 4 * eps * (-12 * sigma**12 / r**13 + 6 * sigma**6 / r**7)
    expected = -0.5 * np.einsum("p,pa,pb->ab", du_dr / r, vec, vec)  # each pair twice in a full list
    energy, forces, virial = energy_forces_virial(lj, torch.as_tensor(pos), torch.as_tensor(box), np.zeros(64, int))
    np.testing.assert_allclose(virial[0].numpy(), expected, rtol=1e-10, atol=1e-10)
    # and a batch of two frames gives each frame its own virial
    batch = np.stack([pos, pos * 1.01]), np.stack([box, box * 1.01])
    _, _, virials = energy_forces_virial(lj, *batch, np.zeros(64, int))
    np.testing.assert_allclose(virials[0].numpy(), expected, rtol=1e-10, atol=1e-10)
    _, _, second = energy_forces_virial(lj, batch[0][1], batch[1][1], np.zeros(64, int))
    np.testing.assert_allclose(virials[1].numpy(), second[0].numpy(), rtol=1e-12)


def test_stress_equals_ase_lennard_jones():
    """ASE's own Lennard-Jones calculator (shifted to zero at rc) against ours: energy, forces, stress."""
    from ase.build import bulk
    from ase.calculators.lj import LennardJones as AseLennardJones

    atoms = bulk("Ar", "fcc", a=5.3, cubic=True).repeat(3)
    atoms.rattle(0.1, seed=3)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.0, 0.0], [0.05, 1.0, 0.0], [-0.04, 0.03, 1.0]]),
                   scale_atoms=True)
    eps_ev, sigma, cutoff = 0.0104, 3.4, 7.5
    reference = atoms.copy()
    reference.calc = AseLennardJones(epsilon=eps_ev, sigma=sigma, rc=cutoff, smooth=False)
    lj = LennardJones(["Ar"], epsilon_kcal_mol=eps_ev * units.EV_TO_KCAL_MOL, sigma_A=sigma, cutoff_A=cutoff,
                      switch_width_A=0.0)
    atoms.calc = ThermoCGCalculator(lj.double())
    assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), rtol=0, atol=1e-10)
    stress, ase_stress = atoms.get_stress(), reference.get_stress()
    assert np.abs(ase_stress).max() > 1e-4
    np.testing.assert_allclose(stress, ase_stress, rtol=0, atol=1e-9 * np.abs(ase_stress).max() + 1e-14)


@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
@pytest.mark.parametrize("kind", sorted(POTENTIAL_FACTORIES))
def test_stress_is_the_strain_derivative_of_the_energy(kind, triclinic):
    """Every kind: the stress equals ASE's finite differences of the energy under strain."""
    from ase.calculators.fd import calculate_numerical_stress

    pos, box, types = configuration(8, triclinic=triclinic)
    frames = Frames(positions=pos[None], box=box[None], types=types, type_names=("A", "B"),
                    masses=np.full(len(pos), 30.0))
    atoms = atoms_from_frames(frames)
    atoms.calc = ThermoCGCalculator(POTENTIAL_FACTORIES[kind](("A", "B")))
    stress = atoms.get_stress()
    numeric = calculate_numerical_stress(atoms, eps=1e-5, voigt=True)
    scale = np.abs(numeric).max()
    print(f"{kind} triclinic={triclinic}: max |stress - FD| / max |FD| {np.abs(stress - numeric).max() / scale:.1e}")
    assert scale > 1e-6
    np.testing.assert_allclose(stress, numeric, rtol=0, atol=1e-6 * scale)


def test_cell_filter_finds_the_lattice_constant_of_the_energy_minimum():
    """An fcc LJ crystal relaxed with FrechetCellFilter (it moves the cell by our stress) reaches the
    lattice constant that minimises the energy per atom (found from energies alone)."""
    from ase.build import bulk
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from scipy.optimize import minimize_scalar

    lj = LennardJones(["Ar"], epsilon_kcal_mol=0.24, sigma_A=3.4, cutoff_A=7.5, switch_width_A=1.0).double()

    def energy_at(a):
        crystal = bulk("Ar", "fcc", a=a, cubic=True).repeat(3)
        crystal.calc = ThermoCGCalculator(lj)
        return crystal.get_potential_energy() / len(crystal)

    best = minimize_scalar(energy_at, bracket=(5.1, 5.3, 5.6), tol=1e-10).x
    atoms = bulk("Ar", "fcc", a=5.6, cubic=True).repeat(3)
    atoms.calc = ThermoCGCalculator(lj)
    start = atoms.get_potential_energy()
    assert FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-5, steps=1000)
    relaxed_a = atoms.cell.lengths()[0] / 3
    print(f"lattice constant: cell filter {relaxed_a:.6f} A, energy minimum {best:.6f} A")
    assert atoms.get_potential_energy() < start
    assert relaxed_a == pytest.approx(best, abs=1e-4)
    assert np.abs(atoms.get_stress()).max() < 1e-5


def test_ase_npt_expands_a_compressed_fluid(rng):
    """ASE's Berendsen NPT with our stress: a fluid compressed far above 1 bar expands, its pressure falls."""
    from ase.md.nptberendsen import NPTBerendsen
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    pos, box = lj_fluid(125, 0.03, rng=rng)
    frames = Frames(positions=pos[None], box=box[None], types=np.zeros(125, int), type_names=("A",),
                    masses=np.full(125, 40.0))
    atoms = atoms_from_frames(frames)
    atoms.calc = ThermoCGCalculator(LennardJones(["A"], epsilon_kcal_mol=0.3, sigma_A=3.4, cutoff_A=6.0).double())
    MaxwellBoltzmannDistribution(atoms, temperature_K=300.0, rng=np.random.default_rng(1))

    def pressure_bar():
        return -atoms.get_stress(include_ideal_gas=True)[:3].mean() / ase_units.bar

    volume0, pressure0 = atoms.get_volume(), pressure_bar()
    dyn = NPTBerendsen(atoms, timestep=4 * ase_units.fs, temperature_K=300.0, pressure_au=1.0 * ase_units.bar,
                       taut=200 * ase_units.fs, taup=1000 * ase_units.fs, compressibility_au=4.5e-5 / ase_units.bar)
    dyn.run(200)
    print(f"volume {volume0:.0f} -> {atoms.get_volume():.0f} A^3, pressure {pressure0:.0f} -> {pressure_bar():.0f} bar")
    assert pressure0 > 1000.0
    assert atoms.get_volume() > 1.05 * volume0
    assert pressure_bar() < 0.5 * pressure0
