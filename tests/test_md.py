"""CG MD: known answers (NVE energy conservation, Langevin temperature and kinetic-energy fluctuations),
restarts, reporters, blow-up detection and bad input."""

import csv
import os

import numpy as np
import pytest

from helpers import lj_fluid
from thermocg import units
from thermocg.dataset import read_frames
from thermocg.frames import Frames, StatePoint
from thermocg.md import MDInputError, SimulationBlowUp, load_restart, simulate
from thermocg.potentials.lj import LennardJones

ARGON_MASS = 39.948


def argon(n: int, density: float, rng: np.random.Generator) -> Frames:
    pos, box = lj_fluid(n, density, rng=rng)
    return Frames(positions=pos, box=box, types=np.zeros(n, int), type_names=("Ar",), masses=np.full(n, ARGON_MASS),
                  state=StatePoint(120.0, density_g_cm3=1.0))


def argon_lj(cutoff_A: float = 8.5) -> LennardJones:
    return LennardJones(["Ar"], epsilon_kcal_mol=0.238, sigma_A=3.4, cutoff_A=cutoff_A, switch_width_A=1.0)


def test_nve_conserves_energy(rng):
    frames = argon(125, 0.02, rng)
    result = simulate(argon_lj(), frames, temperature_K=120.0, timestep_fs=4.0, n_steps=1000, seed=3,
                      save_interval_steps=10, integrator="nve", progress=False)
    th = result.thermo
    total, kinetic = th["total_kcal_mol"], th["kinetic_kcal_mol"]
    # the fluid exchanges kinetic and potential energy (the lattice melts: T changes a lot) ...
    assert kinetic.max() - kinetic.min() > 5.0
    # ... while the total stays put: drift from a linear fit and fluctuations bounded by 1e-3 of <K>
    slope = np.polyfit(th["time_ps"], total, 1)[0]
    duration = th["time_ps"][-1] - th["time_ps"][0]
    assert abs(slope * duration) < 1e-3 * kinetic.mean()
    assert total.std() < 1e-3 * kinetic.mean()
    assert result.n_neighbor_builds < result.n_steps / 5  # the skin list is reused


def _langevin_ensemble_check(rng, n_steps: int, variance_rel: float) -> None:
    """<T> within 2% of the target and var(K) = (3N/2) (kT)^2 (canonical ensemble, 3N velocity dofs)."""
    n, temperature = 64, 120.0
    frames = argon(n, 0.01, rng)
    result = simulate(argon_lj(), frames, temperature_K=temperature, timestep_fs=4.0, n_steps=n_steps, seed=11,
                      save_interval_steps=500, thermo_interval_steps=10, friction_per_ps=20.0, progress=False)
    kinetic = result.thermo["kinetic_kcal_mol"][50:]  # 2 ps of equilibration dropped
    temps = result.thermo["temperature_K"][50:]
    # samples 40 fs apart, velocity memory 1/gamma = 50 fs: <T> scatters by ~12%/sqrt(n_samples)
    assert abs(temps.mean() / temperature - 1) < 0.02
    kT = units.kT(temperature)
    assert kinetic.mean() == pytest.approx(1.5 * n * kT, rel=0.02)
    # the variance estimate scatters by ~sqrt(2 / n_samples) (~9% at 4,000 steps, ~4% at 20,000)
    assert kinetic.var() == pytest.approx(1.5 * n * kT**2, rel=variance_rel)


def test_langevin_temperature_and_kinetic_fluctuations(rng):
    _langevin_ensemble_check(rng, n_steps=4000, variance_rel=0.3)


@pytest.mark.slow
def test_langevin_kinetic_fluctuations_long(rng):
    _langevin_ensemble_check(rng, n_steps=20000, variance_rel=0.12)


def test_restart_continues_the_same_trajectory(rng, tmp_path):
    frames = argon(64, 0.01, rng)
    lj = argon_lj()
    kwargs = dict(temperature_K=120.0, timestep_fs=4.0, save_interval_steps=50, friction_per_ps=5.0, progress=False)
    straight = simulate(lj, frames, n_steps=200, seed=5, **kwargs)
    first = simulate(lj, frames, n_steps=100, seed=5, out_dir=tmp_path / "a", **kwargs)
    assert first.final.step == 100
    second = simulate(lj, frames, n_steps=100, seed=999, restart=tmp_path / "a" / "restart.npz",
                      out_dir=tmp_path / "b", **kwargs)
    assert second.final.step == 200
    np.testing.assert_allclose(second.final.positions, straight.final.positions, atol=1e-8)
    np.testing.assert_allclose(second.final.velocities, straight.final.velocities, atol=1e-10)
    traj = read_frames(tmp_path / "b" / "traj.h5md")
    np.testing.assert_allclose(traj.time_fs, [600.0, 800.0])  # steps 150 and 200; step 100 was in the first file


def test_reporters_write_readable_files(rng, tmp_path):
    frames = argon(64, 0.01, rng)
    seen = []
    result = simulate(argon_lj(), frames, temperature_K=120.0, timestep_fs=4.0, n_steps=100, seed=1,
                      save_interval_steps=25, thermo_interval_steps=10, out_dir=tmp_path, extxyz=True,
                      reporters=[(20, lambda s: seen.append(s.step))], progress=False)
    assert seen == [0, 20, 40, 60, 80, 100]
    traj = read_frames(tmp_path / "traj.h5md")
    assert traj.n_frames == 5 and traj.velocities is not None and traj.forces is not None
    np.testing.assert_allclose(traj.time_fs, [0, 100, 200, 300, 400])
    frac = traj.positions @ np.linalg.inv(traj.box[0])
    assert frac.min() >= 0 and frac.max() < 1  # written wrapped
    np.testing.assert_allclose(traj.positions, result.frames.positions)
    with open(tmp_path / "thermo.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "time_ps", "temperature_K", "potential_kcal_mol", "kinetic_kcal_mol",
                             "total_kcal_mol"]
    assert [int(r["step"]) for r in rows] == list(range(0, 101, 10))
    import ase.io

    atoms = ase.io.read(tmp_path / "traj.extxyz", ":")
    assert len(atoms) == 5
    np.testing.assert_allclose(atoms[-1].get_positions(), traj.positions[-1], atol=1e-6)
    assert list(atoms[0].arrays["bead_type"][:2]) == ["Ar", "Ar"]
    restart = load_restart(tmp_path / "restart.npz")
    assert restart["step"] == 100
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_mdanalysis_reads_the_trajectory(rng, tmp_path):
    mda = pytest.importorskip("MDAnalysis")
    frames = argon(64, 0.01, rng)
    simulate(argon_lj(), frames, temperature_K=120.0, timestep_fs=4.0, n_steps=40, seed=1,
             save_interval_steps=20, out_dir=tmp_path, progress=False)
    traj = read_frames(tmp_path / "traj.h5md")
    u = mda.Universe.empty(64, trajectory=True)
    u.load_new(str(tmp_path / "traj.h5md"), format="H5MD")
    assert len(u.trajectory) == 3
    u.trajectory[2]
    np.testing.assert_allclose(u.atoms.positions, traj.positions[2], atol=1e-4)


def test_blowup_stops_keeps_good_frames_and_restart(rng, tmp_path):
    frames = argon(125, 0.02, rng)
    run = dict(temperature_K=120.0, timestep_fs=60.0, n_steps=2000, seed=1, integrator="nve",  # dt far too long
               save_interval_steps=2, check_interval_steps=1, progress=False)
    with pytest.raises(SimulationBlowUp, match="exceeds") as info:
        simulate(argon_lj(), frames, out_dir=tmp_path, **run)
    result = info.value.result
    assert result is not None and result.blowup and result.n_steps < 2000
    traj = read_frames(tmp_path / "traj.h5md")  # final name: the good part of the run is kept
    assert np.all(np.isfinite(traj.positions))
    restart = load_restart(tmp_path / "restart.npz")
    assert restart["step"] == result.n_steps
    assert result.n_steps >= 4 and traj.n_frames == result.n_steps // 2 + 1
    # without raising: the same run returns with the flag set
    quiet = simulate(argon_lj(), frames, raise_on_blowup=False, **run)
    assert quiet.blowup and quiet.n_steps == result.n_steps


def test_close_beads_are_caught_before_any_step(rng):
    frames = argon(64, 0.01, rng)
    pos = frames.positions.copy()
    pos[0, 1] = pos[0, 0] + [0.2, 0, 0]
    bad = Frames(positions=pos, box=frames.box, types=frames.types, type_names=frames.type_names, masses=frames.masses)
    with pytest.raises(SimulationBlowUp, match="already unphysical"):
        simulate(argon_lj(), bad, temperature_K=120.0, timestep_fs=2.0, n_steps=10, seed=1, progress=False)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_memory_stays_flat(rng):
    """No autograd history or per-step buffers accumulate (hippynn's MD leaks here)."""
    frames = argon(64, 0.01, rng)
    lj = argon_lj()
    kwargs = dict(temperature_K=120.0, timestep_fs=4.0, seed=2, save_interval_steps=100, keep_frames=False,
                  progress=False)
    simulate(lj, frames, n_steps=200, **kwargs)
    before = _rss_bytes()
    result = simulate(lj, frames, n_steps=800, **kwargs)
    growth = _rss_bytes() - before
    # a leaked autograd graph would hold the ~2,000 pair vectors and distances of every step: > 50 MB
    assert growth < 6e6, f"RSS grew by {growth / 1e6:.1f} MB over {result.n_steps} steps"


def test_bad_input_is_refused_before_any_step(rng, tmp_path):
    frames = argon(64, 0.01, rng)
    lj = argon_lj()
    ok = dict(temperature_K=120.0, timestep_fs=2.0, n_steps=10, seed=1, out_dir=tmp_path / "run", progress=False)
    other = LennardJones(["CH3OH"], epsilon_kcal_mol=0.2, sigma_A=3.7, cutoff_A=8.0)
    with pytest.raises(MDInputError, match="bead type 'Ar' is unknown"):
        simulate(other, frames, **ok)
    with pytest.raises(MDInputError, match="box too small"):
        simulate(argon_lj(cutoff_A=12.0), frames, **ok)
    with pytest.raises(MDInputError, match="timestep_fs"):
        simulate(lj, frames, **{**ok, "timestep_fs": 0.0})
    with pytest.raises(MDInputError, match="temperature_K"):
        simulate(lj, frames, **{**ok, "temperature_K": -5.0})
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(MDInputError, match="unreadable restart"):
        simulate(lj, frames, **ok, restart=garbage)
    with pytest.raises(MDInputError, match="no such restart"):
        simulate(lj, frames, **ok, restart=tmp_path / "missing.npz")
    assert not (tmp_path / "run").exists()


def test_short_hipnn_ts_run_on_cg_methanol_is_stable_with_flat_memory(rng):
    """A (small, untrained) HIP-NN-TS plus a repulsive prior drives 1-bead methanol at liquid density."""
    hipnn = pytest.importorskip("thermocg.potentials.hipnn")
    priors = pytest.importorskip("thermocg.potentials.priors")
    from thermocg.potentials.base import SumPotential

    n = 125
    pos, box = lj_fluid(n, 0.0148, rng=rng)  # 0.0148 beads/A^3: methanol at 0.79 g/cm^3
    frames = Frames(positions=pos, box=box, types=np.zeros(n, int), type_names=("MeOH",), masses=np.full(n, 32.04),
                    state=StatePoint(300.0, density_g_cm3=0.79))
    model = SumPotential([
        hipnn.HipnnTS(["MeOH"], n_features=16, n_sensitivities=8, dist_soft_min_A=2.0, dist_soft_max_A=6.0,
                      cutoff_A=7.0, seed=3),
        priors.RepulsivePrior(["MeOH"], taper_A=[[3.2]], strength_kcal_mol_A=[[5.0]]),
    ])
    kwargs = dict(temperature_K=300.0, timestep_fs=2.0, seed=4, save_interval_steps=50, keep_frames=False,
                  progress=False)
    simulate(model, frames, n_steps=30, **kwargs)
    before = _rss_bytes()
    result = simulate(model, frames, n_steps=150, **kwargs)
    growth = _rss_bytes() - before
    assert result.blowup is None and result.n_steps == 150
    temps = result.thermo["temperature_K"]
    assert np.all(np.isfinite(result.thermo["total_kcal_mol"])) and 150 < temps[-4:].mean() < 600
    # a leaked graph would keep the (pairs x sensitivities x features) tensors of every step: > 1 MB each
    assert growth < 8e6, f"RSS grew by {growth / 1e6:.1f} MB"


def test_run_simulate_stage_and_cli(rng, tmp_path):
    """The stage reads RUN_DIR/cg/<label>.h5md, writes RUN_DIR/md/<model>/<label>/...; the CLI calls it."""
    import json

    import yaml

    from thermocg.cli import main
    from thermocg.dataset import write_frames
    from thermocg.potentials.base import save_potential

    state = StatePoint(120.0, density_g_cm3=1.0)
    frames = argon(64, 0.01, rng)
    run_dir = tmp_path / "run"
    write_frames(frames, run_dir / "cg" / f"{state.label}.h5md", kind="cg")
    model = save_potential(argon_lj(), run_dir / "models" / "lj" / "model.safetensors")
    config = {
        "run_dir": str(run_dir), "seed": 3,
        "states": [{"temperature_K": 120.0, "density_g_cm3": 1.0}],
        "simulate": {"duration_ps": 0.2, "timestep_fs": 4.0, "save_interval_fs": 40.0, "thermo_interval_fs": 20.0,
                     "device": "cpu"},
    }
    config_path = tmp_path / "study.yaml"
    config_path.write_text(yaml.safe_dump(config))
    assert main(["simulate", str(config_path), "--model", str(model)]) == 0
    out = run_dir / "md" / "lj" / state.label
    traj = read_frames(out / "traj.h5md")
    assert traj.n_frames == 6 and traj.state == state
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_steps"] == 50 and summary["blowup"] is None and summary["ns_per_day"] > 0
    assert load_restart(out / "restart.npz")["step"] == 50
    assert (out / "thermo.csv").exists() and (out / "resolved.yaml").exists()
    # a state without a dataset, and a bad config key, are clear errors
    assert main(["simulate", str(config_path), "--model", str(model), "--state", "T999_rho1"]) == 2
    config["simulate"]["timestep"] = 1.0
    config_path.write_text(yaml.safe_dump(config))
    assert main(["simulate", str(config_path), "--model", str(model)]) == 2
