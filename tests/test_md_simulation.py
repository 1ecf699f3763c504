"""CGSimulation and its parts: bit-identical stepping in pieces and across restarts, reporters that get
only what they asked for, integrator steps against closed forms, the blow-up detector on hand-made
states, and the wrap of positions on the cell boundary."""

import math

import numpy as np
import pytest
import torch

from helpers import lj_fluid
from thermocg import units
from thermocg.frames import Frames
from thermocg.mapping import wrap_positions as mapping_wrap
from thermocg.md import (
    BlowUpDetector,
    CGSimulation,
    H5MDReporter,
    IntegratorContext,
    IntervalReporter,
    LangevinBAOAB,
    MDInputError,
    MDState,
    ReportRequest,
    SimulationBlowUp,
    ThermoCollector,
    VelocityVerlet,
    load_restart,
    make_integrator,
    wrap_positions,
)
from thermocg.neighbors import NeighborList
from thermocg.potentials.lj import LennardJones

ARGON_MASS = 39.948


def argon(n: int, density: float, rng: np.random.Generator) -> Frames:
    pos, box = lj_fluid(n, density, rng=rng)
    return Frames(positions=pos, box=box, types=np.zeros(n, int), type_names=("Ar",), masses=np.full(n, ARGON_MASS))


def argon_lj() -> LennardJones:
    return LennardJones(["Ar"], epsilon_kcal_mol=0.238, sigma_A=3.4, cutoff_A=8.5, switch_width_A=1.0)


def langevin() -> LangevinBAOAB:
    return LangevinBAOAB(4.0, temperature_K=120.0, friction_per_ps=5.0)


def device_arrays(sim: CGSimulation) -> dict[str, np.ndarray]:
    s = sim.device_state
    return {"positions": s.positions.numpy().copy(), "velocities": s.velocities.numpy().copy(),
            "forces": s.forces.numpy().copy(), "energy": s.potential_energy.numpy().copy(),
            "rng": s.generator.get_state().numpy().copy()}


def assert_bit_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), f"{key} differs (max {np.abs(a[key] - b[key]).max()})"


# --------------------------------------------------------------------------------------------------
# stepping in pieces, restarts
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [langevin, lambda: VelocityVerlet(4.0)], ids=["langevin", "nve"])
def test_step_in_pieces_is_bit_identical_to_one_call(rng, make):
    frames = argon(64, 0.01, rng)
    whole = CGSimulation.from_frames(argon_lj(), frames, make(), seed=7, temperature_K=120.0,
                                     reporters=[ThermoCollector(10)])
    pieces = CGSimulation.from_frames(argon_lj(), frames, make(), seed=7, temperature_K=120.0,
                                      reporters=[ThermoCollector(10)])
    whole.step(150)
    for n in (1, 6, 23, 0, 47, 73):
        pieces.step(n)
    assert whole.current_step == pieces.current_step == 150
    assert whole.time_fs == pieces.time_fs == 600.0
    assert_bit_identical(device_arrays(whole), device_arrays(pieces))
    # the reporters saw the same steps and the same numbers
    assert whole.reporters[0].rows == pieces.reporters[0].rows
    assert [r[0] for r in whole.reporters[0].rows] == list(range(10, 151, 10))
    assert whole.n_neighbor_builds == pieces.n_neighbor_builds > 1


def test_restart_continuation_equals_the_uninterrupted_run(rng, tmp_path):
    """Stop at a step that is no multiple of any interval, save, load in a new object, carry on."""
    frames = argon(64, 0.01, rng)
    straight = CGSimulation.from_frames(argon_lj(), frames, langevin(), seed=5)
    straight.step(300)
    first = CGSimulation.from_frames(argon_lj(), frames, langevin(), seed=5)
    first.step(137)
    first.save_restart(tmp_path / "restart.npz")
    data = load_restart(tmp_path / "restart.npz")
    assert data["step"] == 137 and data["neighbor_reference_positions"].shape == (64, 3)
    second = CGSimulation.from_restart(tmp_path / "restart.npz", argon_lj(), langevin())  # no seed needed
    assert second.current_step == 137 and second.time_fs == 137 * 4.0
    second.step(163)
    assert second.time_fs == straight.time_fs
    assert_bit_identical(device_arrays(straight), device_arrays(second))


def test_an_old_restart_file_still_loads(rng, tmp_path):
    """Version-1 files without the optional arrays (as thermocg wrote them before): rng_state may be
    missing (then a seed is needed) and the neighbour list is built at the restart positions."""
    frames = argon(64, 0.01, rng)
    velocities = np.random.default_rng(1).normal(scale=3e-3, size=(64, 3))
    old = {"format": np.array("thermocg-restart"), "format_version": np.array(1),
           "positions": frames.positions[0], "velocities": velocities, "box": frames.box[0],
           "step": np.array(40, dtype=np.int64), "time_fs": np.array(160.0), "types": frames.types,
           "type_names": np.array(["Ar"]), "masses": frames.masses}
    np.savez(tmp_path / "old.npz", **old)
    with pytest.raises(MDInputError, match="no rng_state; give a seed"):
        CGSimulation.from_restart(tmp_path / "old.npz", argon_lj(), langevin())
    sim = CGSimulation.from_restart(tmp_path / "old.npz", argon_lj(), langevin(), seed=3)
    snap = sim.state()
    assert snap.step == 40 and snap.time_fs == 160.0
    np.testing.assert_array_equal(snap.positions, frames.positions[0])
    np.testing.assert_array_equal(snap.velocities, velocities)
    sim.step(10)
    assert sim.current_step == 50 and sim.time_fs == 200.0


# --------------------------------------------------------------------------------------------------
# reporters
# --------------------------------------------------------------------------------------------------

class PositionsOnly(IntervalReporter):
    def __init__(self, interval_steps: int) -> None:
        super().__init__(interval_steps)
        self.snapshots = []

    def needs(self):
        return {"positions": True}

    def write(self, snapshot):
        self.snapshots.append(snapshot)


def test_reporters_get_only_what_they_asked_for(rng, tmp_path):
    frames = argon(64, 0.01, rng)
    sim = CGSimulation.from_frames(argon_lj(), frames, langevin(), seed=1)
    positions_only = PositionsOnly(5)
    sim.reporters.append(positions_only)
    sim.step(50)
    assert [s.step for s in positions_only.snapshots] == list(range(5, 51, 5))
    last = positions_only.snapshots[-1]
    assert last.positions is not None and last.positions.shape == (64, 3)
    assert last.forces is None and last.velocities is None and last.rng_state is None
    assert last.potential_energy_kcal_mol is None and last.temperature_K is None
    assert dict(sim.host_fetches) == {"positions": 10}  # one copy per report, nothing else ever
    np.testing.assert_array_equal(last.positions, sim.state().positions)
    # an H5MD file without velocities and forces fetches positions alone; thermo adds energies
    sim.host_fetches.clear()
    sim.reporters[:] = [H5MDReporter(tmp_path / "t.h5md", 10, save_velocities=False, save_forces=False),
                        ThermoCollector(20)]
    with sim:
        sim.step(40)
    assert dict(sim.host_fetches) == {"positions": 4, "energies": 2}


class Doubling:
    """Reports at steps 1, 3, 7, 15, ... (gaps doubling): a schedule no fixed interval gives."""

    def __init__(self):
        self.gap, self.steps, self.temperatures = 1, [], []

    def describe_next_report(self, simulation):
        return ReportRequest(self.gap, energies=True)

    def report(self, simulation, snapshot):
        self.steps.append(snapshot.step)
        self.temperatures.append(snapshot.temperature_K)
        assert snapshot.positions is None
        self.gap *= 2


def test_a_reporter_decides_its_own_schedule(rng):
    sim = CGSimulation.from_frames(argon_lj(), argon(64, 0.01, rng), langevin(), seed=2)
    reporter = Doubling()
    sim.reporters.append(reporter)
    sim.step(20)
    sim.step(20)  # the schedule survives a new step() call
    assert reporter.steps == [1, 3, 7, 15, 31]
    assert all(0 < t < 1000 for t in reporter.temperatures)


def test_report_now_and_bad_intervals(rng):
    sim = CGSimulation.from_frames(argon_lj(), argon(64, 0.01, rng), langevin(), seed=2)
    collector = ThermoCollector(10)
    sim.reporters.append(collector)
    sim.report()  # step 0, outside the schedule
    sim.step(10)
    assert [row[0] for row in collector.rows] == [0, 10]
    with pytest.raises(MDInputError, match="interval_steps must be >= 1"):
        ThermoCollector(0)

    class Never:
        def describe_next_report(self, simulation):
            return ReportRequest(0)

        def report(self, simulation, snapshot):
            pass

    sim.reporters.append(Never())
    with pytest.raises(MDInputError, match="must be >= 1"):
        sim.step(1)


# --------------------------------------------------------------------------------------------------
# integrators
# --------------------------------------------------------------------------------------------------

def harmonic(k_kcal_mol_A2: float):
    """A force provider U = k/2 sum x^2 (about the origin), F = -k x: the interface needs no potential."""
    def compute(positions):
        return 0.5 * k_kcal_mol_A2 * (positions * positions).sum(), -k_kcal_mol_A2 * positions
    return compute


def bare_state(positions, velocities, masses, seed=0) -> MDState:
    x = torch.as_tensor(positions, dtype=torch.float64).clone()
    return MDState(positions=x, velocities=torch.as_tensor(velocities, dtype=torch.float64).clone(),
                   forces=torch.zeros_like(x), potential_energy=torch.zeros(()),
                   box=torch.eye(3, dtype=torch.float64) * 100, masses=torch.as_tensor(masses, dtype=torch.float64),
                   generator=torch.Generator().manual_seed(seed))


def bind(integrator, state):
    integrator.bind(IntegratorContext(masses=state.masses, force_provider=lambda potential: None))


def test_velocity_verlet_step_is_the_closed_form():
    """x1 = x0 + dt v0 + dt^2/2 a0,  v1 = v0 + dt/2 (a0 + a1), a = -k x / m * FORCE_TO_ACCEL."""
    k, dt = 2.0, 3.0
    masses = np.array([12.0, 30.0])
    x0 = np.array([[0.3, -0.2, 1.0], [0.0, 0.5, -0.7]])
    v0 = np.array([[0.01, 0.0, -0.02], [0.003, -0.004, 0.0]])
    integrator, force = VelocityVerlet(dt), harmonic(k)
    state = bare_state(x0, v0, masses)
    bind(integrator, state)
    integrator.initialize(state, force)
    integrator.step(state, force)
    accel = -k * units.FORCE_TO_ACCEL / masses[:, None]
    x1 = x0 + dt * v0 + 0.5 * dt**2 * accel * x0
    v1 = v0 + 0.5 * dt * (accel * x0 + accel * x1)
    np.testing.assert_allclose(state.positions.numpy(), x1, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(state.velocities.numpy(), v1, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(state.forces.numpy(), -k * x1, rtol=1e-13)
    assert float(state.potential_energy) == pytest.approx(0.5 * k * (x1**2).sum(), rel=1e-13)
    # and over many steps it conserves the oscillator's energy to O(dt^2)
    energy = []
    for _ in range(2000):
        integrator.step(state, force)
        kinetic = 0.5 * float((state.masses[:, None] * state.velocities**2).sum()) * units.MV2_TO_KCAL_MOL
        energy.append(kinetic + float(state.potential_energy))
    period_fs = 2 * math.pi / math.sqrt(k * units.FORCE_TO_ACCEL / masses.min())
    assert 2000 * dt > 5 * period_fs  # many periods
    assert np.ptp(energy) < 1e-3 * np.mean(energy)


def test_langevin_at_zero_kelvin_is_deterministic_friction():
    """T = 0: the O step is v -> c1 v with no noise; a free bead moves by dt/2 (1 + c1) v0."""
    dt, gamma = 2.0, 10.0
    integrator = LangevinBAOAB(dt, temperature_K=0.0, friction_per_ps=gamma)
    c1 = math.exp(-gamma * 1e-3 * dt)
    assert integrator.c1 == c1 and integrator.c2 == pytest.approx(math.sqrt(1 - c1 * c1))
    v0 = np.array([[0.01, -0.02, 0.005]])
    state = bare_state(np.zeros((1, 3)), v0, [16.0])
    bind(integrator, state)
    free = harmonic(0.0)
    integrator.initialize(state, free)
    integrator.step(state, free)
    np.testing.assert_allclose(state.velocities.numpy(), c1 * v0, rtol=1e-15)
    np.testing.assert_allclose(state.positions.numpy(), 0.5 * dt * (1 + c1) * v0, rtol=1e-15)


def test_integrator_objects_validate_and_count_degrees_of_freedom():
    assert VelocityVerlet(1.0).degrees_of_freedom(10) == 27
    assert langevin().degrees_of_freedom(10) == 30
    assert VelocityVerlet(1.0).degrees_of_freedom(1) == 1
    assert langevin().temperature_K == 120.0 and VelocityVerlet(1.0).temperature_K is None
    with pytest.raises(MDInputError, match="timestep_fs must be positive"):
        VelocityVerlet(0.0)
    with pytest.raises(MDInputError, match="friction_per_ps"):
        LangevinBAOAB(1.0, temperature_K=300.0, friction_per_ps=0.0)
    with pytest.raises(MDInputError, match="integrator must be one of"):
        make_integrator("respa", timestep_fs=1.0, temperature_K=300.0, friction_per_ps=1.0)
    with pytest.raises(RuntimeError, match="bind"):
        state = bare_state(np.zeros((1, 3)), np.zeros((1, 3)), [1.0])
        VelocityVerlet(1.0).step(state, harmonic(1.0))
    assert isinstance(make_integrator("nve", timestep_fs=1.0, temperature_K=300.0, friction_per_ps=1.0), VelocityVerlet)


# --------------------------------------------------------------------------------------------------
# blow-up detection
# --------------------------------------------------------------------------------------------------

def hand_state(positions, *, temperature_K=100.0, force=1.0, box_A=20.0) -> MDState:
    """Beads of 10 amu with velocities giving exactly ``temperature_K`` (n_dof = 3N) and given forces."""
    n = len(positions)
    masses = torch.full((n,), 10.0, dtype=torch.float64)
    velocities = torch.ones((n, 3), dtype=torch.float64)
    kinetic = 0.5 * 10.0 * 3 * n * units.MV2_TO_KCAL_MOL
    velocities *= math.sqrt(0.5 * 3 * n * units.KB_KCAL_MOL_K * temperature_K / kinetic)
    x = torch.as_tensor(positions, dtype=torch.float64)
    return MDState(positions=x, velocities=velocities, forces=torch.full((n, 3), force / math.sqrt(3)),
                   potential_energy=torch.tensor(-1.0, dtype=torch.float64),
                   box=torch.eye(3, dtype=torch.float64) * box_A, masses=masses,
                   generator=torch.Generator(), step=7, time_fs=14.0)


def verdict(state: MDState, detector: BlowUpDetector | None = None) -> str | None:
    detector = detector or BlowUpDetector()
    pairs = NeighborList(5.0, skin_A=0.0).get(state.positions, state.box)
    return detector.check(state, pairs=pairs, n_dof=3 * state.n_particles, reference_temperature_K=100.0)


def test_blowup_detector_on_hand_made_states():
    fine = [[1.0, 1.0, 1.0], [3.0, 1.0, 1.0], [1.0, 4.0, 1.0]]
    assert verdict(hand_state(fine)) is None
    assert verdict(hand_state(fine, temperature_K=499.0)) is None
    hot = verdict(hand_state(fine, temperature_K=600.0))
    assert hot == "step 7 (t = 0.014 ps): temperature 600.0 K exceeds 5 x the target 100 K"
    strong = verdict(hand_state(fine, force=2000.0))
    assert strong == "step 7 (t = 0.014 ps): a force of 2e+03 kcal/mol/A exceeds 1000"
    # two beads 0.3 A apart across the periodic boundary (x = 0.1 and x = L - 0.2)
    close = verdict(hand_state([[0.1, 1.0, 1.0], [19.8, 1.0, 1.0], [5.0, 5.0, 5.0]]))
    assert close == "step 7 (t = 0.014 ps): two beads are 0.300 A apart, closer than 0.5 A"
    assert verdict(hand_state([[0.1, 1.0, 1.0], [19.8, 1.0, 1.0], [5.0, 5.0, 5.0]]),
                   BlowUpDetector(min_distance_A=0.2)) is None
    broken = hand_state(fine, temperature_K=600.0)
    broken.velocities[1, 2] = float("nan")  # NaN is reported before the temperature
    assert verdict(broken) == "step 7 (t = 0.014 ps): NaN or inf in positions, velocities, forces or energy"
    broken = hand_state(fine)
    broken.potential_energy = torch.tensor(float("inf"), dtype=torch.float64)
    assert "NaN or inf" in verdict(broken)
    with pytest.raises(MDInputError, match="check_interval_steps"):
        BlowUpDetector(interval_steps=0)


def test_a_blowup_rolls_the_simulation_back_to_the_last_good_state(rng, tmp_path):
    frames = argon(125, 0.02, rng)
    sim = CGSimulation.from_frames(argon_lj(), frames, VelocityVerlet(60.0), seed=1, temperature_K=120.0,
                                   blowup=BlowUpDetector(interval_steps=1))
    with pytest.raises(SimulationBlowUp, match="exceeds") as info:
        sim.step(2000)
    assert info.value.step == sim.current_step + 1 == sim.last_good_step + 1
    snap = sim.state()
    assert np.all(np.isfinite(snap.positions)) and snap.temperature_K < 5 * 120.0
    sim.save_restart(tmp_path / "good.npz")
    assert load_restart(tmp_path / "good.npz")["step"] == sim.current_step
    # a state already unphysical is refused before any step
    pos = frames.positions.copy()
    pos[0, 1] = pos[0, 0] + [0.2, 0, 0]
    with pytest.raises(SimulationBlowUp, match="already unphysical"):
        CGSimulation(argon_lj(), langevin(), positions=pos[0], box=frames.box[0], types=frames.types,
                     type_names=frames.type_names, masses=frames.masses, seed=1)


# --------------------------------------------------------------------------------------------------
# wrapping
# --------------------------------------------------------------------------------------------------

def test_wrap_guards_the_cell_boundary():
    """-1e-17 - floor(-1e-17) rounds to exactly 1.0: the bead must land at 0, not at L (outside)."""
    box = np.diag([10.0, 12.0, 14.0])
    positions = np.array([[-1e-17, 5.0, 5.0], [10.0, -1e-300, 13.999], [23.5, -0.5, 7.0]])
    wrapped = wrap_positions(positions, box)
    frac = wrapped @ np.linalg.inv(box)
    assert frac.min() >= 0 and frac.max() < 1
    np.testing.assert_allclose(wrapped, [[0.0, 5.0, 5.0], [0.0, 0.0, 13.999], [3.5, 11.5, 7.0]], atol=1e-12)
    # one implementation: the same numbers as the mapping's, for one frame and for a stack
    triclinic = np.array([[10.0, 0, 0], [2.0, 11.0, 0], [-1.0, 1.5, 12.0]])
    stack = np.random.default_rng(0).uniform(-30, 30, (4, 6, 3))
    np.testing.assert_array_equal(wrap_positions(stack, triclinic), mapping_wrap(stack, triclinic))
    np.testing.assert_array_equal(wrap_positions(stack[1], triclinic), mapping_wrap(stack[1:2], triclinic)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_closest_distance_equals_the_minimum_image_brute_force(dtype):
    """The blow-up check's closest pair distance (the compiled kernel on CPU) equals the minimum-image
    distance over every pair, in a triclinic cell."""
    from thermocg.md.blowup import closest_distance
    from thermocg.neighbors import pair_index

    rng = np.random.default_rng(4)
    box = np.array([[12.0, 0.0, 0.0], [1.5, 11.0, 0.0], [-1.0, 2.0, 12.5]])
    positions = rng.uniform(0.0, 1.0, (40, 3)) @ box
    x, b = torch.as_tensor(positions, dtype=dtype), torch.as_tensor(box, dtype=dtype)
    pairs = pair_index(x.unsqueeze(0), b.unsqueeze(0), 5.0)
    inverse = np.linalg.inv(box)
    best = np.inf
    for i in range(40):
        for j in range(i + 1, 40):
            frac = (positions[j] - positions[i]) @ inverse
            for shift in np.array(np.meshgrid(*[[-1, 0, 1]] * 3)).T.reshape(-1, 3):
                best = min(best, float(np.linalg.norm((frac - np.round(frac) + shift) @ box)))
    assert float(closest_distance(x, b, pairs)) == pytest.approx(best, rel=1e-5 if dtype == torch.float32 else 1e-12)
