"""MSD known answers: ballistic motion through a periodic (triclinic) box, the FFT against the direct
average, Langevin free particles diffusing with D = kT / (m gamma); freud's windowed MSD as a referee."""

import numpy as np
import pytest

from thermocg import units
from thermocg.analysis.msd import (MSD, friction_matching_diffusion, langevin_diffusion_A2_fs, msd_fft,
                                   unwrap_positions)
from thermocg.frames import Frames
from thermocg.md import simulate
from thermocg.potentials.lj import LennardJones


def test_ballistic_motion_across_a_triclinic_box(rng):
    box = np.array([[20.0, 0, 0], [4.0, 18.0, 0], [-3.0, 2.0, 22.0]])
    n, n_frames, dt = 50, 120, 10.0
    start = rng.uniform(0, 1, (n, 3)) @ box
    velocity = rng.normal(0, 0.3, (n, 3))  # up to ~1 A/fs: each bead crosses the box several times
    t = np.arange(n_frames) * dt
    true = start[None] + t[:, None, None] * velocity[None]
    frac = true @ np.linalg.inv(box)
    wrapped = (frac - np.floor(frac)) @ box
    frames = Frames(positions=wrapped, box=box, types=np.arange(n) % 2, type_names=("A", "B"), masses=np.ones(n),
                    time_fs=t)
    np.testing.assert_allclose(unwrap_positions(wrapped, box) - wrapped[0], true - true[0], atol=1e-9)
    res = MSD(frames).run().results
    speed2 = np.sum(velocity**2, axis=1)
    np.testing.assert_allclose(res.msd_A2["all"], speed2.mean() * res.lag_fs**2, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res.msd_A2["B"], speed2[1::2].mean() * res.lag_fs**2, rtol=1e-9, atol=1e-9)
    assert res.fit_start_fs == pytest.approx(0.1 * res.lag_fs[-1], abs=dt)


def test_fft_equals_the_direct_average(rng):
    walk = np.cumsum(rng.normal(size=(40, 7, 3)), axis=0)
    direct = np.array([np.mean(np.sum((walk[m:] - walk[:len(walk) - m]) ** 2, axis=2), axis=0)
                       for m in range(len(walk))])
    np.testing.assert_allclose(msd_fft(walk), direct, rtol=1e-9, atol=1e-9)


def test_msd_matches_freud(rng):
    """Wrapped random walks in a triclinic box: our unwrapping + FFT MSD against freud 3's windowed MSD
    given the true image flags (freud works in float32 positions: agreement to its precision)."""
    import freud

    box = np.array([[15.0, 0, 0], [3.0, 14.0, 0], [-2.0, 1.5, 16.0]])
    walk = rng.uniform(0, 1, (1, 30, 3)) @ box + np.cumsum(rng.normal(0, 1.5, (200, 30, 3)), axis=0)
    frac = walk @ np.linalg.inv(box)
    images = np.floor(frac)
    wrapped = (frac - images) @ box
    frames = Frames(positions=wrapped, box=box, types=np.zeros(30, dtype=int), type_names=("A",),
                    masses=np.ones(30), time_fs=np.arange(200) * 5.0)
    ours = MSD(frames).run().results.msd_A2["all"]
    fbox = freud.box.Box.from_matrix(box.T)  # freud: columns are the cell vectors
    shift = 0.5 * box.sum(axis=0)  # freud's box is centred on the origin
    theirs = freud.msd.MSD(fbox, mode="window").compute(wrapped - shift, images=images.astype(np.int32)).msd
    assert np.max(theirs) > 900.0  # the walkers crossed the box (15 A) several times
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=1e-3)


def test_langevin_free_particles_diffuse_with_kT_over_m_gamma(rng):
    """Zero force (epsilon = 0): MSD -> 6 D t with D = kT / (m gamma) (BAOAB is exact here up to
    (gamma dt)^2 / 12 = 2e-4)."""
    n, box_length, mass, temperature, friction_per_ps = 400, 30.0, 10.0, 300.0, 10.0
    frames = Frames(positions=rng.uniform(0, box_length, (n, 3)), box=np.eye(3) * box_length, types=np.zeros(n, int),
                    type_names=("X",), masses=np.full(n, mass))
    free = LennardJones(["X"], epsilon_kcal_mol=0.0, sigma_A=1.0, cutoff_A=1.0, switch_width_A=0.0)
    result = simulate(free, frames, temperature_K=temperature, timestep_fs=5.0, n_steps=3000, seed=7,
                      save_interval_steps=10, friction_per_ps=friction_per_ps, min_distance_A=0.0, progress=False)
    res = MSD(result.frames).run().results
    expected = units.kT(temperature) * units.FORCE_TO_ACCEL / (mass * friction_per_ps * units.FS_TO_PS)
    assert res.diffusion_A2_fs["all"] == pytest.approx(expected, rel=0.08)
    assert res.diffusion_1e5_cm2_s["X"] == pytest.approx(expected * 1e4, rel=0.08)
    assert 1400 <= res.fit_start_fs <= 1600 and 7400 <= res.fit_end_fs <= 7600


def test_friction_matching_diffusion_algebra():
    """Free particles (no conservative friction): D(gamma) = kT / (m gamma) exactly, so from a run at
    gamma_0 the fit gives back any target's friction; with a conservative part zeta_c the frictions add."""
    temperature, mass = 300.0, 32.0
    d1 = langevin_diffusion_A2_fs(temperature, mass, 1.0)
    # kT/m = 0.5962 kcal/mol / 32 amu = 7.795e-6 A^2/fs^2 (1 kcal/mol/amu = 4.184e-4 A^2/fs^2); at 1/ps,
    # D = kT / (m gamma) = 7.795e-3 A^2/fs (7.8 A^2/ps, 7.8e-5 cm^2/s)
    assert d1 == pytest.approx(units.kT(300.0) * 4.184e-4 / 32.0 / 1e-3, rel=1e-6)
    assert d1 == pytest.approx(7.795e-3, rel=1e-3)
    for target in (0.3, 5.0, 40.0):
        d_target = langevin_diffusion_A2_fs(temperature, mass, target)
        assert friction_matching_diffusion(d1, d_target, friction_per_ps=1.0, temperature_K=temperature,
                                           mass_amu=mass) == pytest.approx(target, rel=1e-12)
    # conservative friction zeta_c = m * 3/ps: at gamma_0 = 1/ps, D = kT / (m (3 + 1)); to reach kT / (m 10), 7/ps
    kt_m = d1 * 1e-3  # kT/m in A^2/fs^2
    d_run, d_aa = kt_m / 4e-3, kt_m / 10e-3
    assert friction_matching_diffusion(d_run, d_aa, friction_per_ps=1.0, temperature_K=temperature,
                                       mass_amu=mass) == pytest.approx(7.0, rel=1e-12)
    # a model slower than the target even without a bath: no positive friction
    assert friction_matching_diffusion(kt_m / 20e-3, d_aa, friction_per_ps=1.0, temperature_K=temperature,
                                       mass_amu=mass) < 0
    with pytest.raises(ValueError, match="diffusion_A2_fs must be positive"):
        friction_matching_diffusion(0.0, d_aa, friction_per_ps=1.0, temperature_K=temperature, mass_amu=mass)


def test_free_langevin_particles_recover_their_friction(rng):
    """Known answer: free particles simulated by thermocg's Langevin MD at 10/ps stand in for the AA
    data, the same particles at 4/ps for the CG run; the friction fitted from the two MSDs is 10/ps.
    (1000 particles, lags up to 4.5 ps: D to about 2%, the fitted friction to about 3%; three seeds
    gave 9.73, 9.69 and 10.34.)"""
    n, box_length, mass, temperature = 1000, 40.0, 10.0, 300.0
    frames = Frames(positions=rng.uniform(0, box_length, (n, 3)), box=np.eye(3) * box_length, types=np.zeros(n, int),
                    type_names=("X",), masses=np.full(n, mass))
    free = LennardJones(["X"], epsilon_kcal_mol=0.0, sigma_A=1.0, cutoff_A=1.0, switch_width_A=0.0)
    diffusion = {}
    for friction, seed in ((10.0, 11), (4.0, 12)):
        run = simulate(free, frames, temperature_K=temperature, timestep_fs=5.0, n_steps=3000, seed=seed,
                       save_interval_steps=10, friction_per_ps=friction, min_distance_A=0.0, progress=False)
        diffusion[friction] = MSD(run.frames, fit_start_fraction=0.1, fit_end_fraction=0.3).run().results \
            .diffusion_A2_fs["all"]
    fitted = friction_matching_diffusion(diffusion[4.0], diffusion[10.0], friction_per_ps=4.0,
                                         temperature_K=temperature, mass_amu=mass)
    assert fitted == pytest.approx(10.0, rel=0.1)


def test_times_even_to_float32_precision_are_evenly_spaced(rng):
    """Times as a GROMACS .trr stores them (ps in float32: 400.00003 for 400) still count as evenly spaced;
    a real gap (one frame missing) does not."""
    n = 50
    times_fs = (np.arange(n) * np.float32(0.05) + np.float32(400.0)).astype(np.float32).astype(np.float64) * 1000.0
    assert not np.all(np.diff(times_fs) == np.diff(times_fs)[0])  # float32 jitter
    frames = Frames(positions=rng.uniform(0, 10, (n, 4, 3)), box=np.eye(3) * 10, types=np.zeros(4, int),
                    type_names=("A",), masses=np.ones(4), time_fs=times_fs)
    assert MSD(frames).run().results.lag_fs[1] == pytest.approx(50.0, rel=1e-3)
    gap = np.delete(np.arange(n + 1) * 50.0, 20)
    with pytest.raises(ValueError, match="evenly spaced"):
        MSD(Frames(positions=frames.positions, box=frames.box, types=frames.types, type_names=("A",),
                   masses=frames.masses, time_fs=gap)).run()


def test_bad_input():
    frames = Frames(positions=np.zeros((4, 2, 3)), box=np.eye(3) * 10, types=[0, 0], type_names=("A",),
                    masses=[1.0, 1.0], time_fs=[0.0, 1.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="evenly spaced"):
        MSD(frames).run()
    with pytest.raises(ValueError, match="at least 3 frames"):
        MSD(frames.select(slice(0, 2)))
    with pytest.raises(ValueError, match="fit_start_fraction"):
        MSD(frames, fit_start_fraction=0.6, fit_end_fraction=0.5)


def test_run_chooses_the_frames(rng):
    """run(start, stop, step): the MSD of the frames [start:stop:step]; steps of 2 double the lag spacing."""
    walk = np.cumsum(rng.normal(size=(30, 6, 3)), axis=0)
    frames = Frames(positions=walk, box=np.eye(3) * 1000.0, types=np.zeros(6, int), type_names=("A",),
                    masses=np.ones(6), time_fs=np.arange(30) * 5.0)
    got = MSD(frames).run(4, 28, 2).results
    want = MSD(frames.select(np.arange(4, 28, 2))).run().results
    np.testing.assert_array_equal(got.msd_A2["all"], want.msd_A2["all"])
    np.testing.assert_array_equal(got.lag_fs, np.arange(12) * 10.0)
    assert got.diffusion_A2_fs == want.diffusion_A2_fs
    with pytest.raises(ValueError, match="at least 3 frames, got 2 selected"):
        MSD(frames).run(0, 2)
