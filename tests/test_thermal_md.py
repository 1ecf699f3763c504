"""The temperature enters MD: a temperature-dependent model is evaluated at the thermostat's target.

The model is a pair_table_thermal made from a Lennard-Jones force whose epsilon grows by 60 % of
itself per 300 K (F1 = F0 / 500 K), valid 250-350 K. Each check compares the forces an MD run uses
with the model's forces at the temperature it should be at (``at_temperature``, the plain table).
"""

import json
import warnings

import numpy as np
import pytest
import yaml

from helpers import lj_fluid
from thermocg.config import load_config
from thermocg.dataset import H5MDDataset, write_frames
from thermocg.frames import Frames, StatePoint
from thermocg.md import CGSimulation, LangevinBAOAB, VelocityVerlet, run_simulate, simulate
from thermocg.potentials.base import (TemperatureRangeError, TemperatureRangeWarning, TemperatureWarning,
                                      energy_and_forces, save_potential)
from thermocg.potentials.lj import LennardJones
from thermocg.potentials.pair import PairTable, PairTableThermal

SIGMA, EPSILON, CUTOFF = 3.5, 0.25, 9.0


def thermal_model() -> PairTableThermal:
    def force(r, a, b):
        return 24 * EPSILON / r * (2 * (SIGMA / r) ** 12 - (SIGMA / r) ** 6) * np.clip((CUTOFF - r) / 2.0, 0, 1) ** 2

    base = PairTable.from_force_function(["CG"], force, cutoff_A=CUTOFF, r_min_A=2.0, spacing_A=0.1,
                                         r_sampled_min_A=3.0)
    coef = base.coefficients.numpy()
    return PairTableThermal(["CG"], cutoff_A=CUTOFF, r_min_A=2.0, coefficients=coef,
                            temperature_coefficients=coef / 500.0, reference_temperature_K=300.0,
                            r_sampled_min_A=3.0, valid_temperature_range_K=(250.0, 350.0))


def liquid(seed=0, n=125) -> Frames:
    positions, box = lj_fluid(n, 0.0128, rng=np.random.default_rng(seed))
    return Frames(positions=positions, box=box, types=np.zeros(n, int), type_names=("CG",), masses=np.full(n, 32.0),
                  state=StatePoint(300.0, 1.0))


def forces_at(model: PairTableThermal, temperature_K: float, positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    table = model.at_temperature(temperature_K)
    _, forces = energy_and_forces(table, positions, box, np.zeros(len(positions), int))
    return forces[0].numpy()


def assert_forces_at(sim: CGSimulation, model: PairTableThermal, temperature_K: float) -> np.ndarray:
    state = sim.state()
    expected = forces_at(model, temperature_K, state.positions, state.box)
    np.testing.assert_allclose(state.forces, expected, rtol=0, atol=1e-10 * np.abs(expected).max())
    return state.forces


def test_same_model_at_two_thermostat_temperatures_uses_two_force_fields():
    model = thermal_model()
    frames = liquid()
    initial = {}
    for temperature in (250.0, 350.0):
        thermostat = LangevinBAOAB(5.0, temperature_K=temperature, friction_per_ps=5.0)
        sim = CGSimulation.from_frames(model, frames, thermostat, seed=1)
        assert sim.model_temperature_K == temperature and model.temperature_K == temperature
        initial[temperature] = assert_forces_at(sim, model, temperature)  # step 0
        sim.step(20)
        assert_forces_at(sim, model, temperature)  # during the run
    # the same positions, two force fields: F(250) / F(350) = (1 - 0.1) / (1 + 0.1) wherever F is the spline
    difference = np.abs(initial[350.0] - initial[250.0]).max()
    assert difference > 0.05 * np.abs(initial[250.0]).max()
    np.testing.assert_allclose(initial[250.0] * 1.1 / 0.9, initial[350.0], atol=1e-9 * np.abs(initial[350.0]).max())


def test_simulations_sharing_a_model_keep_their_own_temperatures():
    model = thermal_model()
    cold = CGSimulation.from_frames(model, liquid(1), LangevinBAOAB(5.0, temperature_K=260.0, friction_per_ps=5.0),
                                    seed=2)
    hot = CGSimulation.from_frames(model, liquid(2), LangevinBAOAB(5.0, temperature_K=340.0, friction_per_ps=5.0),
                                   seed=3)
    assert model.temperature_K == 340.0
    cold.step(5)  # the model was last set to 340 K by the hot simulation
    assert_forces_at(cold, model, 260.0)
    hot.step(5)
    assert_forces_at(hot, model, 340.0)


def test_nve_takes_an_explicit_temperature_or_warns_and_uses_t_ref():
    frames = liquid(3)
    model = thermal_model()
    sim = CGSimulation.from_frames(model, frames, VelocityVerlet(2.0), temperature_K=270.0, seed=1)
    assert sim.model_temperature_K == 270.0
    assert_forces_at(sim, model, 270.0)
    # no temperature anywhere: T_ref, said out loud
    velocities = np.zeros_like(frames.positions[0])
    fresh = thermal_model()
    with pytest.warns(TemperatureWarning, match="no thermostat.*reference temperature T_ref = 300 K"):
        sim = CGSimulation(fresh, VelocityVerlet(2.0), positions=frames.positions[0], box=frames.box[0],
                           types=frames.types, type_names=frames.type_names, masses=frames.masses,
                           velocities=velocities, seed=1)
    assert sim.model_temperature_K == 300.0
    assert_forces_at(sim, fresh, 300.0)
    # a temperature already set on the model is an explicit choice: kept, silently
    fresh.set_temperature(320.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sim = CGSimulation(fresh, VelocityVerlet(2.0), positions=frames.positions[0], box=frames.box[0],
                           types=frames.types, type_names=frames.type_names, masses=frames.masses,
                           velocities=velocities, seed=1)
    assert sim.model_temperature_K == 320.0


def test_thermostat_outside_the_valid_range():
    frames = liquid(4)
    model = thermal_model()
    with pytest.warns(TemperatureRangeWarning, match=r"T = 380 K is 30 K outside.*\[250, 350\] K"):
        sim = CGSimulation.from_frames(model, frames, LangevinBAOAB(5.0, temperature_K=380.0, friction_per_ps=5.0),
                                       seed=1)
    with pytest.warns(TemperatureRangeWarning):  # the reference table at 380 K is out of range too
        assert_forces_at(sim, model, 380.0)
    with pytest.raises(TemperatureRangeError, match=r"T = 500 K is 150 K outside.*at most 50 K"):
        CGSimulation.from_frames(model, frames, LangevinBAOAB(5.0, temperature_K=500.0, friction_per_ps=5.0), seed=1)


def test_temperature_agnostic_models_are_untouched():
    lj = LennardJones(["CG"], epsilon_kcal_mol=EPSILON, sigma_A=SIGMA, cutoff_A=CUTOFF, switch_width_A=2.0)
    sim = CGSimulation.from_frames(lj, liquid(5), LangevinBAOAB(5.0, temperature_K=900.0, friction_per_ps=5.0), seed=1)
    assert sim.model_temperature_K is None and lj.temperature_K is None


def test_simulate_at_two_temperatures_through_the_stage(tmp_path):
    """simulate() (Langevin and NVE) and run_simulate (the CLI stage, one run per state temperature):
    the saved forces are the model's at each run's temperature."""
    model = thermal_model()
    frames = liquid(6)
    for integrator, temperature in (("langevin", 260.0), ("langevin", 340.0), ("nve", 330.0)):
        result = simulate(model, frames, temperature_K=temperature, timestep_fs=5.0, n_steps=10, seed=4,
                          save_interval_steps=5, integrator=integrator, progress=False)
        assert result.frames.metadata["model_temperature_K"] == temperature
        for k in range(result.frames.n_frames):
            expected = forces_at(model, temperature, result.frames.positions[k], result.frames.box[k])
            np.testing.assert_allclose(result.frames.forces[k], expected, atol=1e-10 * np.abs(expected).max())

    run_dir = tmp_path / "run"
    states = [StatePoint(255.0, 1.0), StatePoint(345.0, 1.0)]
    for k, state in enumerate(states):
        start = liquid(7 + k)
        start.state = state
        write_frames(start, run_dir / "cg" / f"{state.label}.h5md", kind="cg")
    model_path = save_potential(model, run_dir / "models" / "thermal" / "model.safetensors")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "run_dir": str(run_dir), "seed": 1, "states": [s.to_dict() for s in states],
        "simulate": {"duration_ps": 0.05, "timestep_fs": 5.0, "save_interval_fs": 25.0, "device": "cpu"}}))
    config = load_config(config_path)
    summaries = run_simulate(config, config.run_dir, model=model_path, progress=False)
    assert [s.temperature_K for s in summaries] == [255.0, 345.0]
    for summary, state in zip(summaries, states):
        assert summary.blowup is None
        with H5MDDataset(summary.trajectory) as ds:
            saved = ds.read(np.arange(len(ds)))
        for k in range(saved.n_frames):
            expected = forces_at(model, state.temperature_K, saved.positions[k], saved.box[k])
            np.testing.assert_allclose(saved.forces[k], expected, atol=1e-9 * np.abs(expected).max())
        assert json.loads((summary.out_dir / "summary.json").read_text())["temperature_K"] == state.temperature_K
