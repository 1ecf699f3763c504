"""Multiple time stepping (r-RESPA): what it must preserve.

Known answers and referees: with one inner step it is the single-step integrator; its NVE trajectory
equals OpenMM's MTSIntegrator on the same split; NVE energy is conserved no worse than by velocity
Verlet at the same outer step (a Lennard-Jones fluid split at 5 A, and a small HIP-NN-TS + repulsive
prior split into the prior and the network); the Langevin kind holds its temperature within 2%; a
restart continues bit for bit (the fast list's build positions travel in the restart file); the fast
part fitted to a pair model's own forces gives that pair force back. The slow test compares the RDF
and ADF of RESPA runs with the noise floor of a single-step run.
"""

import math

import numpy as np
import pytest
import torch

from helpers import lj_fluid
from thermocg import units
from thermocg.frames import Frames, StatePoint
from thermocg.md import (
    CGSimulation,
    LangevinBAOAB,
    MDInputError,
    RespaLangevinBAOAB,
    RespaVelocityVerlet,
    SimulationBlowUp,
    ThermoCollector,
    VelocityVerlet,
    load_restart,
    make_integrator,
    simulate,
)
from thermocg.md.splitting import TabulatedPair, fast_part, fit_pair_part, prior_part, split_statistics
from thermocg.potentials.base import SumPotential
from thermocg.potentials.lj import LennardJones

ARGON_MASS = 39.948
EPSILON, SIGMA = 0.238, 3.4


def argon(n: int, density: float, rng: np.random.Generator) -> Frames:
    pos, box = lj_fluid(n, density, rng=rng)
    return Frames(positions=pos, box=box, types=np.zeros(n, int), type_names=("Ar",), masses=np.full(n, ARGON_MASS),
                  state=StatePoint(120.0, density_g_cm3=1.0))


def lj(cutoff_A: float, switch_width_A: float = 1.0) -> LennardJones:
    return LennardJones(["Ar"], epsilon_kcal_mol=EPSILON, sigma_A=SIGMA, cutoff_A=cutoff_A,
                        switch_width_A=switch_width_A).double()


#: the LJ fluid's split: the whole model (8.5 A) and its short-range part (switched off over 4-5 A)
FULL, FAST = lj(8.5), lj(5.0)


@pytest.fixture(scope="module")
def liquid() -> Frames:
    """125 argon beads at 0.02 /A^3, melted and equilibrated at 120 K (2 ps), with velocities."""
    frames = argon(125, 0.02, np.random.default_rng(5))
    result = simulate(FULL, frames, temperature_K=120.0, timestep_fs=4.0, n_steps=500, seed=1,
                      save_interval_steps=500, friction_per_ps=5.0, progress=False)
    return result.frames.select(slice(-1, None))


def run(potential, frames, integrator, n_steps: int, *, interval: int = 5, seed: int = 2, **kwargs):
    sim = CGSimulation.from_frames(potential, frames, integrator, velocities="frame", seed=seed, **kwargs)
    thermo = ThermoCollector(interval)
    sim.reporters.append(thermo)
    sim.step(n_steps)
    return sim, thermo.arrays()


def energy_error(thermo: dict[str, np.ndarray]) -> tuple[float, float]:
    """(fluctuation, drift) of the total energy, kcal/mol: its standard deviation and the change over
    the run of a straight-line fit."""
    total, time_ps = thermo["total_kcal_mol"], thermo["time_ps"]
    slope = np.polyfit(time_ps, total, 1)[0]
    return float(total.std()), float(abs(slope) * (time_ps[-1] - time_ps[0]))


# --------------------------------------------------------------------------------------------------
# the integrator itself
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["nve", "langevin"])
def test_one_inner_step_is_the_single_step_integrator(liquid, kind):
    """B_s B_f = B: with k = 1, RESPA is velocity Verlet / BAOAB at the outer step (to round-off)."""
    if kind == "nve":
        single, respa = VelocityVerlet(8.0), RespaVelocityVerlet(8.0, fast_potential=FAST, inner_steps=1)
    else:
        single = LangevinBAOAB(8.0, temperature_K=120.0, friction_per_ps=5.0)
        respa = RespaLangevinBAOAB(8.0, fast_potential=FAST, inner_steps=1, temperature_K=120.0, friction_per_ps=5.0)
    a, _ = run(FULL, liquid, single, 40)
    b, _ = run(FULL, liquid, respa, 40)
    sa, sb = a.device_state, b.device_state
    assert torch.allclose(sa.positions, sb.positions, rtol=0, atol=1e-9)
    assert torch.allclose(sa.velocities, sb.velocities, rtol=0, atol=1e-11)
    assert torch.allclose(sa.forces, sb.forces, rtol=0, atol=1e-8)
    assert sb.extra["fast_forces"].abs().max() > 0  # the fast part was evaluated, and is not the whole force
    assert not torch.allclose(sb.extra["fast_forces"], sb.forces)


def test_respa_nve_agrees_with_openmm_mts_integrator(liquid):
    """OpenMM's MTSIntegrator (Reference platform, double precision) on the same split: the slow group
    is the whole LJ minus its short-range part, the fast group the short-range part, 4 inner steps."""
    openmm = pytest.importorskip("openmm")
    n, dt_fs, k, n_steps = liquid.n_particles, 8.0, 4, 25
    box = liquid.box[0]

    def lj_force(cutoff_A: float, sign: float, group: int):
        force = openmm.CustomNonbondedForce(f"{sign}*4*eps*((sig/r)^12 - (sig/r)^6)")
        force.addGlobalParameter("eps", EPSILON * units.KCAL_TO_KJ)
        force.addGlobalParameter("sig", SIGMA * units.A_TO_NM)
        force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
        force.setCutoffDistance(cutoff_A * units.A_TO_NM)
        force.setUseSwitchingFunction(True)
        force.setSwitchingDistance((cutoff_A - 1.0) * units.A_TO_NM)
        force.setUseLongRangeCorrection(False)
        for _ in range(n):
            force.addParticle([])
        force.setForceGroup(group)
        return force

    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box * units.A_TO_NM])
    for _ in range(n):
        system.addParticle(ARGON_MASS)
    for force in (lj_force(8.5, +1.0, 0), lj_force(5.0, -1.0, 0), lj_force(5.0, +1.0, 1)):
        system.addForce(force)
    from openmm.mtsintegrator import MTSIntegrator

    integrator = MTSIntegrator(dt_fs * units.FS_TO_PS, [(0, 1), (1, k)])
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(liquid.positions[0] * units.A_TO_NM)
    a_fs_to_nm_ps = units.A_TO_NM / units.FS_TO_PS
    context.setVelocities(liquid.velocities[0] * a_fs_to_nm_ps)
    integrator.step(n_steps)
    state = context.getState(getPositions=True, getVelocities=True)
    theirs_x = np.asarray(state.getPositions(asNumpy=True)._value) / units.A_TO_NM
    theirs_v = np.asarray(state.getVelocities(asNumpy=True)._value) / a_fs_to_nm_ps

    ours, _ = run(FULL, liquid, RespaVelocityVerlet(dt_fs, fast_potential=FAST, inner_steps=k), n_steps)
    x, v = ours.device_state.positions.numpy(), ours.device_state.velocities.numpy()
    moved = np.abs(x - liquid.positions[0]).max()
    assert moved > 0.3  # the beads went somewhere: 0.2 ps of liquid dynamics
    assert np.abs(x - theirs_x).max() < 1e-8
    assert np.abs(v - theirs_v).max() < 1e-10 * np.abs(theirs_v).max() * 1e3


def test_nve_energy_no_worse_than_velocity_verlet_on_a_split_lj_fluid(liquid):
    """At the same outer step, RESPA (4 inner steps of the 5 A part) conserves the total energy at least
    as well as velocity Verlet; both over 4 ps. Measured at 8 fs: fluctuations 6.5x smaller, drift 2.5x
    smaller (at 4, 12, 16 fs: 7x, 7.5x, 7x smaller fluctuations)."""
    dt_fs = 8.0
    n_steps = int(4000 / dt_fs)
    _, single = run(FULL, liquid, VelocityVerlet(dt_fs), n_steps)
    _, respa = run(FULL, liquid, RespaVelocityVerlet(dt_fs, fast_potential=FAST, inner_steps=4), n_steps)
    kinetic = single["kinetic_kcal_mol"]
    assert kinetic.max() - kinetic.min() > 2.0  # potential and kinetic energy are exchanged
    single_std, single_drift = energy_error(single)
    respa_std, respa_drift = energy_error(respa)
    assert respa_std <= single_std and respa_drift <= single_drift
    assert respa_std < 2e-4 * kinetic.mean()  # and it is small: 1e-5 of <K> at 8 fs


def small_hipnn_with_prior(taper_A: float = 3.6) -> SumPotential:
    hipnn = pytest.importorskip("thermocg.potentials.hipnn")
    from thermocg.potentials.priors import RepulsivePrior

    return SumPotential([
        hipnn.HipnnTS(["MeOH"], n_features=16, n_sensitivities=8, dist_soft_min_A=2.0, dist_soft_max_A=6.0,
                      cutoff_A=7.0, seed=3),
        RepulsivePrior(["MeOH"], taper_A=[[taper_A]], strength_kcal_mol_A=[[5.0]]),
    ]).double()


@pytest.fixture(scope="module")
def methanol_liquid() -> tuple[SumPotential, Frames]:
    """125 one-bead methanols at 0.79 g/cm^3, equilibrated 1 ps at 300 K with a small untrained
    HIP-NN-TS + repulsive prior (taper 3.6 A: beads meet its wall)."""
    model = small_hipnn_with_prior()
    pos, box = lj_fluid(125, 0.0148, rng=np.random.default_rng(8))
    frames = Frames(positions=pos, box=box, types=np.zeros(125, int), type_names=("MeOH",),
                    masses=np.full(125, 32.04), state=StatePoint(300.0, density_g_cm3=0.79))
    result = simulate(model, frames, temperature_K=300.0, timestep_fs=2.0, n_steps=500, seed=4, friction_per_ps=5.0,
                      save_interval_steps=50, progress=False)
    return model, result.frames


@pytest.mark.parametrize("split", ["prior", "pair"])
def test_nve_energy_no_worse_than_velocity_verlet_on_hipnn_with_prior(methanol_liquid, split):
    """HIP-NN-TS + prior, the two splits: fast = the prior, or a 5 A pair fitted to the model's forces
    (both tabulated, as the stage runs them). Measured at 4 fs: fluctuations 15x (prior) and 8x (pair)
    smaller than velocity Verlet's."""
    model, frames = methanol_liquid
    fast = fast_part(model, split, frames=frames, cutoff_A=5.0)
    start = frames.select(slice(-1, None))
    dt_fs, n_steps = 4.0, 250
    _, single = run(model, start, VelocityVerlet(dt_fs), n_steps)
    sim, respa = run(model, start, RespaVelocityVerlet(dt_fs, fast_potential=fast, inner_steps=4), n_steps)
    single_std, single_drift = energy_error(single)
    respa_std, respa_drift = energy_error(respa)
    assert respa_std <= single_std
    assert respa_drift <= max(single_drift, 0.2 * single_std)  # a drift below the fluctuations is none
    assert sim.integrator.n_fast_neighbor_builds >= 1


def test_langevin_respa_holds_its_temperature(rng):
    """<T> within 2% of the target and var(K) = (3N/2) (kT)^2, with 8 fs outer steps of 4 inner steps."""
    n, temperature = 64, 120.0
    frames = argon(n, 0.01, rng)
    fast = TabulatedPair.from_pair_potential(FAST)
    integrator = RespaLangevinBAOAB(8.0, fast_potential=fast, inner_steps=4, temperature_K=temperature,
                                    friction_per_ps=20.0)
    sim = CGSimulation.from_frames(FULL, frames, integrator, seed=11)
    thermo = ThermoCollector(5)
    sim.reporters.append(thermo)
    sim.step(2000)
    data = thermo.arrays()
    kinetic, temps = data["kinetic_kcal_mol"][50:], data["temperature_K"][50:]  # 2 ps dropped
    # 350 samples 40 fs apart, velocity memory 1/gamma = 50 fs: <T> scatters by ~0.7%
    assert abs(temps.mean() / temperature - 1) < 0.02
    kT = units.kT(temperature)
    assert kinetic.var() == pytest.approx(1.5 * n * kT**2, rel=0.3)


def test_restart_continues_a_respa_run_bit_for_bit(liquid, tmp_path):
    def make():
        return RespaLangevinBAOAB(8.0, fast_potential=FAST, inner_steps=4, temperature_K=120.0, friction_per_ps=5.0)

    whole = CGSimulation.from_frames(FULL, liquid, make(), velocities="frame", seed=3, skin_A=0.6)
    whole.step(30)
    first = CGSimulation.from_frames(FULL, liquid, make(), velocities="frame", seed=3, skin_A=0.6)
    first.step(17)
    path = first.save_restart(tmp_path / "restart.npz")
    data = load_restart(path)
    reference = data["integrator_arrays"]["fast_neighbor_reference_positions"]
    assert reference.shape == (liquid.n_particles, 3)
    assert not np.array_equal(reference, data["positions"])  # the fast list was built before step 17
    second = CGSimulation.from_restart(path, FULL, make(), skin_A=0.6)
    second.step(13)
    for name in ("positions", "velocities", "forces", "potential_energy"):
        a, b = getattr(whole.device_state, name), getattr(second.device_state, name)
        assert a.numpy().tobytes() == b.numpy().tobytes(), name
    assert whole.device_state.extra["fast_forces"].numpy().tobytes() == \
        second.device_state.extra["fast_forces"].numpy().tobytes()


def test_a_blowup_rolls_back_the_fast_list_too(liquid):
    """After a roll-back the fast list is the one of the last good state (its build positions)."""
    integrator = RespaVelocityVerlet(8.0, fast_potential=FAST, inner_steps=4)
    sim = CGSimulation.from_frames(FULL, liquid, integrator, velocities="frame", seed=3, skin_A=0.6)
    sim.step(20)
    good = integrator.saved_arrays()["fast_neighbor_reference_positions"].clone()
    sim.device_state.velocities.mul_(50.0)  # far too hot: the next check fails
    with pytest.raises(SimulationBlowUp):
        sim.step(30)
    assert sim.current_step == 20
    assert torch.equal(integrator.saved_arrays()["fast_neighbor_reference_positions"], good)


def test_respa_parameters_are_checked():
    with pytest.raises(MDInputError, match="inner_steps"):
        RespaVelocityVerlet(8.0, fast_potential=FAST, inner_steps=0)
    with pytest.raises(MDInputError, match="inner_steps"):
        RespaVelocityVerlet(8.0, fast_potential=FAST, inner_steps=2.5)
    with pytest.raises(MDInputError, match="fast_potential"):
        RespaVelocityVerlet(8.0, fast_potential="prior", inner_steps=2)
    with pytest.raises(MDInputError, match="friction"):
        RespaLangevinBAOAB(8.0, fast_potential=FAST, inner_steps=2, temperature_K=300.0, friction_per_ps=0.0)
    with pytest.raises(MDInputError, match="fast part"):
        make_integrator("respa_langevin", timestep_fs=8.0, temperature_K=300.0, friction_per_ps=1.0)
    made = make_integrator("respa_langevin", timestep_fs=8.0, temperature_K=300.0, friction_per_ps=1.0,
                           fast_potential=FAST, inner_steps=4)
    assert isinstance(made, RespaLangevinBAOAB) and made.inner_timestep_fs == 2.0
    assert made.describe()["inner_steps"] == 4 and made.temperature_K == 300.0
    assert math.isclose(made._inner.c1, math.exp(-1.0 * 2.0e-3))  # the O step acts over an inner step
    with pytest.raises(MDInputError, match="prior"):
        prior_part(FULL)


def test_a_restart_with_a_damaged_integrator_array_is_refused(liquid, tmp_path):
    sim = CGSimulation.from_frames(FULL, liquid, RespaVelocityVerlet(8.0, fast_potential=FAST, inner_steps=2),
                                   velocities="frame", seed=3)
    path = sim.save_restart(tmp_path / "restart.npz")
    with np.load(path) as data:
        arrays = dict(data)
    arrays["integrator.fast_neighbor_reference_positions"] = arrays["positions"][:5]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(MDInputError, match="fast_neighbor_reference_positions"):
        CGSimulation.from_restart(tmp_path / "bad.npz", FULL, RespaVelocityVerlet(8.0, fast_potential=FAST,
                                                                                  inner_steps=2))
    arrays["integrator.fast_neighbor_reference_positions"] = np.full_like(arrays["positions"], np.nan)
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(MDInputError, match="not finite"):
        load_restart(tmp_path / "nan.npz")


# --------------------------------------------------------------------------------------------------
# the fast part
# --------------------------------------------------------------------------------------------------

def test_the_fitted_fast_pair_gives_a_pair_models_force_back(liquid):
    """MS-CG on the model's own forces: for a pair model (LJ, 8.5 A), the fitted pair force is the LJ
    force on the sampled range, and the slow remainder is nearly nothing."""
    frames = simulate(FULL, liquid, temperature_K=120.0, timestep_fs=4.0, n_steps=400, seed=6,
                      save_interval_steps=20, progress=False).frames
    table = fit_pair_part(FULL, frames, cutoff_A=8.5, spacing_A=0.1)
    assert table.fit_info["train_r2"] > 0.9999
    r = np.linspace(3.4, 8.0, 47)
    _, fitted = table.curve(r, 0, 0)
    distance = torch.tensor(r, dtype=torch.float64, requires_grad=True)
    zeros = torch.zeros(len(r), dtype=torch.long)
    (grad,) = torch.autograd.grad(FULL.pair_energy(distance, zeros, zeros).sum(), distance)
    exact = -grad.numpy()  # F(r) = -du/dr of one pair
    assert np.abs(fitted - exact).max() < 0.01 * np.abs(exact).max()
    stats = split_statistics(FULL, table, frames)
    assert stats["slow_fraction"] < 1e-3
    with pytest.raises(MDInputError, match="exceeds the model's"):
        fit_pair_part(FULL, frames, cutoff_A=9.0)


def test_the_tabulated_fast_part_equals_the_potential_it_tabulates(liquid, methanol_liquid):
    """TabulatedPair of an LJ, of the HIP-NN-TS model's prior and of a fitted pair: energy and forces on a
    liquid frame within 1e-6 of the originals' (float64), its direct path equal to autograd of its own
    energy, zero beyond the cutoff."""
    from thermocg.md.simulation import PotentialForces
    from thermocg.neighbors import NeighborList
    from thermocg.potentials.base import energy_and_forces

    model, frames = methanol_liquid
    cases = [(FAST, liquid), (prior_part(model), frames.select(slice(-1, None))),
             (fit_pair_part(model, frames, cutoff_A=5.0), frames.select(slice(-1, None)))]
    for original, frame in cases:
        table = TabulatedPair.from_pair_potential(original)
        x, box = torch.as_tensor(frame.positions[0]), torch.as_tensor(frame.box[0])
        types = torch.zeros(frame.n_particles, dtype=torch.long)
        e0, f0 = energy_and_forces(original.double(), x, box, types)
        direct = PotentialForces(table, types, box, skin_A=1.0)
        e1, f1 = direct(x)
        scale = float(f0.abs().max())
        assert scale > 0
        assert float(e1) == pytest.approx(float(e0[0]), rel=1e-6, abs=1e-9)
        assert torch.allclose(f1, f0[0], rtol=0, atol=1e-6 * scale)
        pairs = NeighborList(table.cutoff_A, skin_A=1.0).get(x, box)
        e2, f2 = energy_and_forces(table, x, box, types, pairs=pairs)  # the differentiable path
        assert torch.allclose(f2[0], f1, rtol=0, atol=1e-10 * scale) and float(e2[0]) == pytest.approx(float(e1))
    r = torch.tensor([0.3, table.cutoff_A, table.cutoff_A + 0.5], dtype=torch.float64)
    u, slope = table.pair_energy_derivative(r, torch.zeros(3, dtype=torch.long))
    assert torch.all(u[1:].abs() < 1e-20) and torch.all(slope[1:].abs() < 1e-20)  # zero, to round-off
    assert slope[0] < 0 and u[0] > 0  # below r_min: the wall continues, linearly


@pytest.mark.slow
def test_rdf_and_adf_of_respa_runs_are_within_the_noise_floor(liquid):
    """Langevin RESPA at 12 fs outer steps (4 inner) and at 20 fs (5 inner) against a single-step BAOAB
    run at 4 fs of the same length: RDF and ADF errors (the study's) below the single-step run's noise
    floor (its first half against its second half), and the temperature within 2%."""
    from thermocg.analysis.adf import ADF, adf_error
    from thermocg.analysis.rdf import RDF, rdf_error

    duration_fs, temperature = 60000.0, 120.0

    def structure(frames: Frames) -> dict:
        rdf = RDF(frames, r_max_A=8.5, bin_width_A=0.1).run().results
        adf = ADF(frames, cutoff_A=5.3, bin_width_deg=4.0).run().results
        return {"rdf": rdf, "adf": adf}

    def langevin_run(integrator) -> tuple[Frames, float]:
        n_steps = int(duration_fs / integrator.timestep_fs)
        every = int(200 / integrator.timestep_fs)
        sim = CGSimulation.from_frames(FULL, liquid, integrator, velocities="frame", seed=9)
        from thermocg.md import FrameCollector

        frames, thermo = FrameCollector(every), ThermoCollector(every)
        sim.reporters += [frames, thermo]
        sim.step(n_steps)
        out = Frames(positions=np.stack(frames.positions), box=np.stack(frames.boxes), types=liquid.types,
                     type_names=liquid.type_names, masses=liquid.masses)
        return out, float(thermo.arrays()["temperature_K"].mean())

    reference, _ = langevin_run(LangevinBAOAB(4.0, temperature_K=temperature, friction_per_ps=1.0))
    half = reference.n_frames // 2
    ref = structure(reference)
    first, second = structure(reference.select(slice(0, half))), structure(reference.select(slice(half, None)))
    floor_rdf, floor_adf = rdf_error(second["rdf"], first["rdf"]), adf_error(second["adf"], first["adf"])
    for outer, inner in ((12.0, 4), (20.0, 5)):
        frames, mean_t = langevin_run(RespaLangevinBAOAB(outer, fast_potential=FAST, inner_steps=inner,
                                                         temperature_K=temperature, friction_per_ps=1.0))
        got = structure(frames)
        assert rdf_error(got["rdf"], ref["rdf"]) < floor_rdf, (outer, inner)
        assert adf_error(got["adf"], ref["adf"]) < floor_adf, (outer, inner)
        assert abs(mean_t / temperature - 1) < 0.02


# --------------------------------------------------------------------------------------------------
# the stage: simulate.integrator respa_langevin
# --------------------------------------------------------------------------------------------------

def respa_run_dir(tmp_path, name: str, liquid: Frames, **simulate_keys):
    """A run directory with one CG state (20 frames of the LJ liquid) and the LJ model."""
    import yaml

    from thermocg.dataset import write_frames
    from thermocg.potentials.base import save_potential

    frames = simulate(FULL, liquid, temperature_K=120.0, timestep_fs=4.0, n_steps=200, seed=6,
                      save_interval_steps=10, progress=False).frames.select(slice(1, None))
    frames.state = StatePoint(120.0, density_g_cm3=1.0)
    run_dir = tmp_path / name
    write_frames(frames, run_dir / "cg" / f"{frames.state.label}.h5md", kind="cg")
    model = save_potential(lj(8.5), run_dir / "models" / "lj" / "model.safetensors")
    settings = {"integrator": "respa_langevin", "timestep_fs": 8.0, "respa_inner_steps": 4, "respa_fast": "pair",
                "respa_pair_cutoff_A": 5.0, "respa_pair_fit_frames": 10, "duration_ps": 0.4,
                "save_interval_fs": 40.0, "thermo_interval_fs": 40.0, "device": "cpu", **simulate_keys}
    config = {"run_dir": str(run_dir), "seed": 3, "states": [{"temperature_K": 120.0, "density_g_cm3": 1.0}],
              "simulate": settings}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, model, run_dir / "md" / "lj" / frames.state.label


def test_the_stage_runs_respa_and_continues_it_bit_for_bit(liquid, tmp_path):
    import h5py
    import yaml

    from thermocg.cli import main
    from thermocg.potentials.base import load_potential

    straight, model_a, out_a = respa_run_dir(tmp_path, "straight", liquid)
    split, model_b, out_b = respa_run_dir(tmp_path, "split", liquid, duration_ps=0.2)
    assert main(["simulate", str(straight), "--model", str(model_a)]) == 0
    assert main(["simulate", str(split), "--model", str(model_b)]) == 0
    config = yaml.safe_load(split.read_text())
    config["simulate"]["duration_ps"] = 0.4
    split.write_text(yaml.safe_dump(config))
    assert main(["simulate", str(split), "--model", str(model_b), "--continue"]) == 0
    # the fast part: a pair fitted to the model's own forces, saved beside the run and reused
    fast = load_potential(out_a / "respa_fast.safetensors")
    assert fast.kind == "pair_table" and fast.cutoff_A == 5.0
    assert fast.provenance["fit"]["train_r2"] > 0.99
    summary = yaml.safe_load((out_a / "summary.json").read_text())
    assert summary["n_steps"] == 50 and summary["timestep_fs"] == 8.0 and summary["blowup"] is None
    assert summary["paths"]["respa_fast"].endswith("respa_fast.safetensors")
    def datasets(path) -> dict[str, np.ndarray]:
        out = {}
        with h5py.File(path, "r") as f:
            f["particles"].visititems(lambda name, obj: out.__setitem__(name, obj[()])
                                      if isinstance(obj, h5py.Dataset) else None)
        return out

    traj_a, traj_b = datasets(out_a / "traj.h5md"), datasets(out_b / "traj.h5md")
    assert traj_a.keys() == traj_b.keys() and len(traj_a["trajectory/position/step"]) == 11
    for key in traj_a:
        assert traj_a[key].tobytes() == traj_b[key].tobytes(), key
    assert (out_a / "thermo.csv").read_bytes() == (out_b / "thermo.csv").read_bytes()
    # a continuation without its fitted fast part is refused
    (out_b / "respa_fast.safetensors").unlink()
    config["simulate"]["duration_ps"] = 0.6
    split.write_text(yaml.safe_dump(config))
    assert main(["simulate", str(split), "--model", str(model_b), "--continue"]) == 2


def test_config_keys_of_respa(tmp_path):
    from thermocg.config import ConfigError, SimulateConfig, from_dict

    settings = from_dict(SimulateConfig, {"integrator": "respa_langevin", "respa_inner_steps": 3,
                                          "respa_fast": "prior"}, "simulate")
    assert settings.is_respa and not SimulateConfig().is_respa
    with pytest.raises(ConfigError, match="simulate.respa_inner_steps"):
        from_dict(SimulateConfig, {"respa_inner_steps": 0}, "simulate")
    with pytest.raises(ConfigError, match="simulate.respa_inner_steps"):
        from_dict(SimulateConfig, {"respa_inner_steps": 2.5}, "simulate")
    with pytest.raises(ConfigError, match="simulate.respa_fast"):
        from_dict(SimulateConfig, {"respa_fast": "network"}, "simulate")
    with pytest.raises(ConfigError, match="did you mean 'respa_nve'"):
        from_dict(SimulateConfig, {"integrator": "respa_nvt"}, "simulate")
