"""OpenMM runs thermocg potentials through openmm.PythonForce (thermocg.engines.openmm).

Referees: the forces and energy OpenMM reports equal thermocg's (float64 models, every potential kind of
the contract suite, orthorhombic, triclinic and a rotated general cell, Reference and CPU platforms);
an NVT run with OpenMM's LangevinMiddleIntegrator has the temperature and the RDF of a thermocg.md run of
the same model within the noise floor; the Monte Carlo barostat moves the box and the potential sees
the box OpenMM holds; DCD and StateData reporters write what the run did.
"""

import numpy as np
import pytest

openmm = pytest.importorskip("openmm")

from openmm import app  # noqa: E402
from openmm import unit as u  # noqa: E402

from helpers import engine_test_liquid, kinetic_temperatures_K, lj_fluid, structure_agreement  # noqa: E402
from test_potential_contract import POTENTIAL_FACTORIES, configuration  # noqa: E402
from thermocg import units  # noqa: E402
from thermocg.allatom.runner import block_stderr  # noqa: E402
from thermocg.engines.common import EngineInputError, standard_cell  # noqa: E402
from thermocg.engines.openmm import FramesReporter, OpenMMEngine  # noqa: E402
from thermocg.frames import Frames  # noqa: E402
from thermocg.md import simulate  # noqa: E402
from thermocg.potentials.base import energy_and_forces  # noqa: E402
from thermocg.potentials.lj import LennardJones  # noqa: E402

TYPES = ("A", "B")


def rotated_general_cell(rng):
    """A configuration whose cell is neither lower triangular nor reduced: the engine must rotate it."""
    pos, box, types = configuration(5, triclinic=True)
    angle = 0.7
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    box = box @ rotation
    box[2] = box[2] + box[0]  # a lattice change: same periodic system, unreduced basis
    return pos @ rotation, box, types


def frames_of(pos, box, types, masses=None):
    masses = np.full(len(pos), 30.0) if masses is None else masses
    return Frames(positions=pos[None], box=box[None], types=types, type_names=TYPES, masses=masses)


@pytest.mark.parametrize("cell", ["orthorhombic", "triclinic", "rotated"])
@pytest.mark.parametrize("kind", sorted(POTENTIAL_FACTORIES))
def test_openmm_forces_and_energy_equal_thermocg(kind, cell):
    if cell == "rotated":
        pos, box, types = rotated_general_cell(np.random.default_rng(0))
    else:
        pos, box, types = configuration(5, triclinic=(cell == "triclinic"))
    potential = POTENTIAL_FACTORIES[kind](TYPES)
    engine = OpenMMEngine(potential, frames_of(pos, box, types))
    energy, forces = energy_and_forces(potential, pos, box, types)
    energy, forces = float(energy[0]), forces[0].numpy()
    scale = np.abs(forces).max()
    assert scale > 0.1  # real forces
    for platform in ("Reference", "CPU"):
        context = openmm.Context(engine.system, openmm.VerletIntegrator(0.001),
                                 openmm.Platform.getPlatformByName(platform))
        context.setPositions(engine.positions)
        e_omm, f_omm = engine.energy_and_forces(context)
        f_back = f_omm @ engine.cell.rotation.T  # OpenMM's frame -> the input's
        print(f"{kind} {cell} {platform}: |dE| {abs(e_omm - energy):.2e} kcal/mol, "
              f"max |dF| / max |F| {np.abs(f_back - forces).max() / scale:.2e}")
        assert e_omm == pytest.approx(energy, rel=1e-10, abs=1e-10)
        np.testing.assert_allclose(f_back, forces, rtol=0, atol=1e-10 * scale)
        del context


def test_standard_cell_is_the_same_periodic_system(rng):
    pos, box, _ = rotated_general_cell(rng)
    cell = standard_cell(box, pos)
    a, b, c = cell.box_A
    assert a[1] == a[2] == b[2] == 0.0 and np.all(np.diag(cell.box_A) > 0)
    assert abs(b[0]) <= a[0] / 2 and abs(c[0]) <= a[0] / 2 and abs(c[1]) <= b[1] / 2
    np.testing.assert_allclose(cell.rotation @ cell.rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(cell.rotation) == pytest.approx(1.0)
    assert abs(np.linalg.det(cell.box_A)) == pytest.approx(abs(np.linalg.det(box)), rel=1e-12)
    # the new cell vectors are integer combinations of the rotated old ones
    combination = cell.box_A @ np.linalg.inv(box @ cell.rotation)
    np.testing.assert_allclose(combination, np.round(combination), atol=1e-9)


@pytest.mark.parametrize("network", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["lj", "lj+hipnn"])
def test_nvt_run_matches_thermocg_md(network):
    """LangevinMiddle in OpenMM against thermocg's BAOAB, same model, temperature and friction: the mean
    temperatures agree with each other and the target within 4 standard errors (5 blocks), the RDFs
    within the noise floor."""
    frames, potential = engine_test_liquid(125, network=network)
    temperature, timestep, friction, n_steps, every, discard = 300.0, 4.0, 5.0, 1600, 16, 480
    reference = simulate(potential, frames, temperature_K=temperature, timestep_fs=timestep, n_steps=n_steps, seed=1,
                         save_interval_steps=every, friction_per_ps=friction, progress=False).frames
    reference = reference.select(slice(discard // every + 1, None))
    engine = OpenMMEngine(potential, frames)
    simulation = engine.simulation(temperature_K=temperature, timestep_fs=timestep, friction_per_ps=friction, seed=1)
    reporter = FramesReporter(every, frames)
    simulation.reporters.append(reporter)
    simulation.step(n_steps)
    run = reporter.frames().select(slice(discard // every, None))
    assert run.n_frames == reference.n_frames

    t_run, t_ref = kinetic_temperatures_K(run), kinetic_temperatures_K(reference)
    se = np.hypot(block_stderr(t_run), block_stderr(t_ref))
    structure = structure_agreement(run, reference)
    print(f"T openmm {t_run.mean():.1f} K, thermocg.md {t_ref.mean():.1f} K (combined stderr {se:.1f} K); "
          f"RDF mean |dg| {structure['mean_abs_dg']:.4f}, noise floor {structure['noise_floor']:.4f}")
    assert abs(t_run.mean() - t_ref.mean()) < 4 * se
    assert abs(t_run.mean() - temperature) < 4 * block_stderr(t_run)
    assert structure["mean_abs_dg"] < 1.5 * structure["noise_floor"]


def test_monte_carlo_barostat_moves_the_box_the_potential_sees():
    """A compressed LJ fluid at 1 bar expands; every box OpenMM proposes reaches the potential, and the
    energy OpenMM reports at the final box is thermocg's energy at that box."""
    rng = np.random.default_rng(4)
    pos, box = lj_fluid(125, 0.03, rng=rng)
    lj = LennardJones(["A"], epsilon_kcal_mol=0.3, sigma_A=3.4, cutoff_A=6.0, switch_width_A=1.0)
    frames = Frames(positions=pos[None], box=box[None], types=np.zeros(125, int), type_names=("A",),
                    masses=np.full(125, 40.0))
    engine = OpenMMEngine(lj, frames)
    simulation = engine.simulation(temperature_K=300.0, timestep_fs=4.0, friction_per_ps=5.0, seed=2,
                                   pressure_bar=1.0, barostat_interval_steps=2)
    simulation.step(300)
    state = simulation.context.getState(getPositions=True, getEnergy=True)
    box_now = np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)) * units.NM_TO_A
    volume_ratio = np.linalg.det(box_now) / np.linalg.det(engine.cell.box_A)
    print(f"volume ratio {volume_ratio:.3f}, box changes seen by the potential {engine.evaluator.n_box_changes}")
    assert volume_ratio > 1.05
    assert engine.evaluator.n_box_changes >= 10
    np.testing.assert_allclose(engine.evaluator.last_box_A, box_now, rtol=1e-12)
    positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(u.nanometer)) * units.NM_TO_A
    energy, _ = energy_and_forces(lj, positions, box_now, np.zeros(125, int))
    reported = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.KJ_TO_KCAL
    assert reported == pytest.approx(float(energy[0]), rel=1e-9)


def test_dcd_and_state_data_reporters(tmp_path):
    mda = pytest.importorskip("MDAnalysis")
    frames, potential = engine_test_liquid(125, network=False)
    engine = OpenMMEngine(potential, frames)
    simulation = engine.simulation(temperature_K=300.0, timestep_fs=4.0, seed=3)
    keep = FramesReporter(10, frames)
    simulation.reporters += [app.DCDReporter(str(tmp_path / "traj.dcd"), 10),
                             app.StateDataReporter(str(tmp_path / "state.csv"), 10, step=True, potentialEnergy=True,
                                                   temperature=True, volume=True),
                             keep]
    simulation.step(50)
    del simulation  # closes the reporters' files
    universe = mda.Universe.empty(frames.n_particles, trajectory=True)
    universe.load_new(str(tmp_path / "traj.dcd"))
    assert len(universe.trajectory) == 5
    kept = keep.frames()
    for k, ts in enumerate(universe.trajectory):
        # DCD stores float32 A; the reporter wraps nothing (no molecules to wrap), both hold the run's positions
        delta = ts.positions - kept.positions[k]
        delta -= np.round(delta @ np.linalg.inv(kept.box[k])) @ kept.box[k]
        assert np.abs(delta).max() < 1e-3
    table = np.genfromtxt(tmp_path / "state.csv", delimiter=",", names=True)
    assert list(table['Step']) == [10, 20, 30, 40, 50]
    for k in range(5):
        energy, _ = energy_and_forces(potential, kept.positions[k], kept.box[k], frames.types)
        assert table["Potential_Energy_kJmole"][k] == pytest.approx(float(energy[0]) * units.KCAL_TO_KJ, rel=1e-6)
    np.testing.assert_allclose(table["Box_Volume_nm3"], np.linalg.det(frames.box[0]) * 1e-3, rtol=1e-6)


def test_velocities_from_the_frame():
    frames, potential = engine_test_liquid(125, network=False)
    velocities = np.random.default_rng(1).normal(0.0, 0.003, (1, 125, 3))  # A/fs
    frames = Frames(positions=frames.positions, box=frames.box, types=frames.types, type_names=frames.type_names,
                    masses=frames.masses, velocities=velocities)
    simulation = OpenMMEngine(potential, frames).simulation(temperature_K=300.0, timestep_fs=2.0, seed=1,
                                                             velocities="frame")
    state = simulation.context.getState(getVelocities=True)
    v = np.asarray(state.getVelocities(asNumpy=True).value_in_unit(u.nanometer / u.picosecond))
    np.testing.assert_allclose(v * units.NM_TO_A * units.FS_TO_PS, velocities[0], rtol=1e-12)
    no_velocities = Frames(positions=frames.positions, box=frames.box, types=frames.types,
                           type_names=frames.type_names, masses=frames.masses)
    with pytest.raises(EngineInputError, match="carry no velocities"):
        OpenMMEngine(potential, no_velocities).simulation(temperature_K=300.0, timestep_fs=2.0, seed=1,
                                                          velocities="frame")


def test_bad_inputs_are_refused(rng):
    pos, box, types = configuration(5, triclinic=False)
    potential = POTENTIAL_FACTORIES["lennard_jones"](TYPES)
    unknown = Frames(positions=pos[None], box=box[None], types=types, type_names=("A", "C"),
                     masses=np.full(len(pos), 1.0))
    with pytest.raises(EngineInputError, match="bead type 'C' is unknown"):
        OpenMMEngine(potential, unknown)
    with pytest.raises(EngineInputError, match="box too small"):
        OpenMMEngine(potential, frames_of(pos * 0.5, box * 0.5, types))
    with pytest.raises(EngineInputError, match="right-handed"):
        OpenMMEngine(potential, frames_of(pos, box[[1, 0, 2]], types))
    engine = OpenMMEngine(potential, frames_of(pos, box, types))
    with pytest.raises(EngineInputError, match="platform 'NoSuchPlatform' is not available"):
        engine.simulation(temperature_K=300.0, timestep_fs=2.0, seed=1, platform="NoSuchPlatform")
    with pytest.raises(EngineInputError, match="timestep_fs must be positive"):
        engine.simulation(temperature_K=300.0, timestep_fs=0.0, seed=1)
    with pytest.raises(openmm.OpenMMException, match="could not be pickled"):
        openmm.XmlSerializer.serialize(engine.system)


@pytest.mark.slow
def test_docs_engines_examples_run(tmp_path, monkeypatch):
    """Every Python block of docs/engines.md, in order, in a fresh directory (the examples are runnable)."""
    import re
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "engines.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/engines.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert (tmp_path / "traj.dcd").exists() and (tmp_path / "lammps_run" / "traj.dump").exists()
    assert (tmp_path / "model.mliap.pkl").exists()
    assert namespace["sampled"].n_frames == 20
