"""Temperature-dependent MS-CG, F(r; T) = F0(r) + (T - T_ref) F1(r): known answers.

The reference is a Lennard-Jones fluid whose epsilon varies linearly with T,

    eps(T) = eps_0 (1 + a (T - T_ref) / T_ref),

so its exact pair force at temperature T is F_LJ(r; eps(T)) = F0(r) + (T - T_ref) F1(r) with
F0 = F_LJ(r; eps_0) and F1 = (a / T_ref) F0: the linear model holds exactly. "The force at temperature T"
is the force of a configuration sampled at T evaluated with that temperature's epsilon (for a pair
potential without mapping the mean force is the force itself); configurations of a fixed potential
sampled at several temperatures carry no temperature dependence at all (F1 = 0), which is the null test.
"""

import json
import warnings

import numpy as np
import pytest

from helpers import lj_fluid, lj_force_frames, lj_pair_curve
from thermocg.config import Config, ConfigError, PairConfig, StateConfig, from_dict
from thermocg.dataset import write_frames
from thermocg.frames import Frames, StatePoint
from thermocg.mscg import MSCGError, MSCGWarning, NormalEquations, fit_pair_potential, force_errors, run_fit_pair
from thermocg.potentials.base import load_potential, read_model_header
from thermocg.potentials.lj import LennardJones
from thermocg.potentials.pair import PairTable, PairTableThermal

CUTOFF = 9.0
EPS_0, SIGMA, SLOPE_A, T_REF = 0.25, 3.5, 0.6, 300.0
TEMPERATURES = (250.0, 300.0, 350.0)  # equal frames at each: their mean is T_REF


def lj_at(temperature_K, *, slope_a=SLOPE_A):
    epsilon = EPS_0 * (1.0 + slope_a * (temperature_K - T_REF) / T_REF)
    return LennardJones(["CG"], epsilon_kcal_mol=epsilon, sigma_A=SIGMA, cutoff_A=CUTOFF, switch_width_A=2.0)


def lattice_frames(n_frames, *, seed, slope_a=SLOPE_A, temperatures=TEMPERATURES):
    """Jittered lattices per temperature, the jitter growing as sqrt(T) (hotter: closer contacts),
    with the forces of that temperature's epsilon."""
    rng = np.random.default_rng(seed)
    return [lj_force_frames(lj_at(t, slope_a=slope_a), n_frames, rng=rng, jitter=0.09 * np.sqrt(t / T_REF),
                            state=StatePoint(t, 1.0)) for t in temperatures]


def spline_curve(table, coefficients, r):
    """F(r) of the plain spline with ``coefficients`` (no wall) on ``table``'s grid."""
    spline = PairTable(table.type_names, cutoff_A=table.cutoff_A, r_min_A=table.r_min_A,
                       coefficients=coefficients.numpy(), r_sampled_min_A=table.r_min_A)
    return spline.curve(r, 0, 0)


def recovery_errors(table, *, slope_a=SLOPE_A):
    """max |F0_fit - F0| / max |F0| and the same for F1 over the well-sampled range [r_s, r_c]."""
    r = np.linspace(float(table.r_sampled_min[0, 0]), CUTOFF, 800)
    u0_ref, f0_ref = lj_pair_curve(lj_at(T_REF, slope_a=0.0), r)
    u0, f0 = spline_curve(table, table.coefficients, r)
    _, f1 = spline_curve(table, table.temperature_coefficients, r)
    f1_ref = slope_a / T_REF * f0_ref
    error_u0 = np.abs(u0 - u0_ref).max() / np.abs(u0_ref).max()
    return (np.abs(f0 - f0_ref).max() / np.abs(f0_ref).max(), np.abs(f1 - f1_ref).max() / np.abs(f1_ref).max(),
            error_u0)


def fit_quietly(frames, config):
    with warnings.catch_warnings():
        warnings.simplefilter("error", MSCGWarning)  # a clean data set fits without any warning
        return fit_pair_potential(frames, config)


LINEAR = PairConfig(cutoff_A=CUTOFF, spacing_A=0.1, temperature_dependence="linear")


def test_linear_fit_recovers_f0_and_f1_on_lattice_configurations():
    table = fit_quietly(lattice_frames(8, seed=5), LINEAR)
    assert isinstance(table, PairTableThermal)
    assert table.reference_temperature_K == T_REF  # the mean of the fitted frames' temperatures
    assert table.valid_temperature_range_K == (250.0, 350.0)
    error_f0, error_f1, error_u0 = recovery_errors(table)
    print(f"lattice data: F0 error {error_f0:.2e}, F1 error {error_f1:.2e} (of max |F|), U0 error {error_u0:.2e}")
    assert error_f0 < 0.01 and error_f1 < 0.03 and error_u0 < 0.01
    assert float(table.r_sampled_min[0, 0]) < 3.3  # the wall itself is in the sampled range
    # the model at each temperature is that temperature's LJ (energy too), also between and a little beyond
    r = np.linspace(float(table.r_sampled_min[0, 0]), CUTOFF, 400)
    for temperature in (250.0, 275.0, 350.0):
        table.set_temperature(temperature)
        u, f = table.curve(r, 0, 0)
        u_ref, f_ref = lj_pair_curve(lj_at(temperature), r)
        assert np.abs(f - f_ref).max() < 0.01 * np.abs(f_ref).max()
        assert np.abs(u - u_ref).max() < 0.01 * np.abs(u_ref).max()
    info = table.fit_info
    assert info["temperature_dependence"] == "linear" and info["training_temperatures_K"] == list(TEMPERATURES)
    assert info["frames_per_temperature"] == {"250": 8, "300": 8, "350": 8}
    assert info["train_r2"] > 0.9999 and info["n_coefficients"] == 2 * 80
    assert set(info["pairs"]["CG-CG"]["walls"]) == {"250", "300", "350"}


def test_linear_fit_recovers_f0_and_f1_on_langevin_configurations():
    """Configurations from short Langevin runs (thermocg.md) of the LJ fluid at each temperature, with
    that temperature's epsilon: the forces are those MD saved."""
    from thermocg.md import simulate

    frames = []
    for k, temperature in enumerate(TEMPERATURES):
        lj = lj_at(temperature)
        positions, box = lj_fluid(125, 0.0128, rng=np.random.default_rng(k))
        start = Frames(positions=positions, box=box, types=np.zeros(125, int), type_names=("CG",),
                       masses=np.full(125, 32.0), state=StatePoint(temperature, 1.0))
        settled = simulate(lj, start, temperature_K=temperature, timestep_fs=10.0, n_steps=200, seed=k,
                           save_interval_steps=200, friction_per_ps=10.0, progress=False)
        run = simulate(lj, settled.frames.select([-1]), temperature_K=temperature, timestep_fs=10.0, n_steps=160,
                       seed=10 + k, save_interval_steps=20, friction_per_ps=2.0, progress=False)
        assert run.frames.state.temperature_K == temperature
        frames.append(run.frames.select(slice(1, None)))
    table = fit_quietly(frames, LINEAR)
    error_f0, error_f1, error_u0 = recovery_errors(table)
    print(f"Langevin data: F0 error {error_f0:.2e}, F1 error {error_f1:.2e} (of max |F|), U0 error {error_u0:.2e}")
    assert error_f0 < 0.01 and error_f1 < 0.03 and error_u0 < 0.01


def test_temperature_independent_forces_give_f1_zero():
    """The same epsilon at every temperature: only the sampling changes with T, and the fit must not
    turn that into a temperature dependence."""
    table = fit_quietly(lattice_frames(6, seed=9, slope_a=0.0), LINEAR)
    r = np.linspace(float(table.r_sampled_min[0, 0]), CUTOFF, 800)
    _, f0 = spline_curve(table, table.coefficients, r)
    _, f1 = spline_curve(table, table.temperature_coefficients, r)
    # over the whole 100 K range F1 changes the force by less than 1e-3 of its scale
    assert 100.0 * np.abs(f1).max() < 1e-3 * np.abs(f0).max()


def test_one_temperature_reduces_to_the_agnostic_fit():
    """Frames of one temperature: the linear fit warns and gives today's pair_table, coefficient for
    coefficient (bit for bit)."""
    frames = lattice_frames(6, seed=3, temperatures=(300.0,))
    agnostic = fit_quietly(frames, PairConfig(cutoff_A=CUTOFF, spacing_A=0.1))
    with pytest.warns(MSCGWarning, match=r"every frame is at one temperature \(300 K\)"):
        linear = fit_pair_potential(frames, LINEAR)
    assert type(linear) is PairTable and not linear.temperature_dependent
    np.testing.assert_array_equal(linear.coefficients.numpy(), agnostic.coefficients.numpy())
    np.testing.assert_array_equal(linear.r_sampled_min.numpy(), agnostic.r_sampled_min.numpy())
    assert linear.fit_info["train_rmse_kcal_mol_A"] == agnostic.fit_info["train_rmse_kcal_mol_A"]
    assert linear.fit_info["temperature_dependence"] == "none"
    assert linear.fit_info["training_temperatures_K"] == [300.0]


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # unregularised on purpose
def test_streamed_normal_equations_equal_one_direct_least_squares():
    """The moments accumulated frame by frame about the first temperature, shifted to T_ref at the
    end, give the solution of the stacked problem [G, (T - T_ref) G] c = f solved directly; T_ref
    given in the config or by default the frame-weighted mean temperature."""
    rng = np.random.default_rng(21)
    frames = []
    for temperature, n_frames in ((240.0, 2), (310.0, 3), (335.0, 1)):
        lj = lj_at(temperature)
        frames.append(lj_force_frames(lj, n_frames, rng=rng, n_particles=64, density=0.01, jitter=0.12,
                                      state=StatePoint(temperature, 1.0)))
    mean_temperature = (2 * 240.0 + 3 * 310.0 + 335.0) / 6
    for reference in (None, 280.0):
        eq = NormalEquations(["CG"], cutoff_A=7.0, r_min_A=1.0, spacing_A=0.5, temperature_dependence="linear")
        probe = NormalEquations(["CG"], cutoff_A=7.0, r_min_A=1.0, spacing_A=0.5)
        rows, targets = [], []
        t_ref = mean_temperature if reference is None else reference
        for block in frames:
            eq.add(block)
            for f in range(block.n_frames):
                g = probe.design_matrix(block.positions[f], block.box[f], block.types)
                rows.append(np.hstack([g, (block.state.temperature_K - t_ref) * g]))
                targets.append(block.forces[f].reshape(-1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MSCGWarning)
            table = eq.solve(ridge=0.0, smoothness=0.0, min_pairs_per_interval=1, reference_temperature_K=reference)
        assert table.reference_temperature_K == pytest.approx(t_ref, rel=1e-14)
        design, target = np.vstack(rows), np.concatenate(targets)
        active = np.abs(design).sum(axis=0) > 0
        direct = np.zeros(design.shape[1])
        direct[active] = np.linalg.lstsq(design[:, active], target, rcond=None)[0]
        ours = np.concatenate([table.coefficients.numpy()[0, 0], table.temperature_coefficients.numpy()[0, 0]])
        # the same fitted forces; the same coefficients wherever the data determine them well (the
        # first few basis functions see a handful of close pairs: their normal equations are
        # ill-conditioned, so only their contribution to the forces is compared)
        np.testing.assert_allclose(design @ ours, design @ direct, atol=1e-7 * np.abs(target).max())
        well = np.r_[4:eq.n_basis, eq.n_basis + 4:2 * eq.n_basis]
        np.testing.assert_allclose(ours[well], direct[well], rtol=1e-6, atol=1e-9 * np.abs(direct[well]).max())
        residual = design @ direct - target
        assert table.fit_info["train_rmse_kcal_mol_A"] == pytest.approx(np.sqrt(np.mean(residual**2)), rel=1e-5)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # unregularised on purpose
def test_reference_temperature_moves_f0_but_not_the_model():
    """T_ref is a choice of origin: F0 becomes the force at T_ref, F1 stays, F(r; T) is unchanged
    (exactly without regularisation, which is the only part of the fit that sees the origin)."""
    frames = lattice_frames(6, seed=4)
    plain = dict(cutoff_A=CUTOFF, spacing_A=0.1, temperature_dependence="linear", ridge=0.0, smoothness=0.0)
    by_mean = fit_quietly(frames, PairConfig(**plain))
    at_250 = fit_quietly(frames, PairConfig(**plain, reference_temperature_K=250.0))
    assert at_250.reference_temperature_K == 250.0
    r = np.linspace(float(at_250.r_sampled_min[0, 0]), CUTOFF, 300)
    _, f0 = spline_curve(at_250, at_250.coefficients, r)
    _, f_250 = lj_pair_curve(lj_at(250.0), r)
    assert np.abs(f0 - f_250).max() < 0.01 * np.abs(f_250).max()
    for temperature in (250.0, 330.0):
        by_mean.set_temperature(temperature)
        at_250.set_temperature(temperature)
        scale = np.abs(by_mean.curve(r, 0, 0)[1]).max()
        np.testing.assert_allclose(at_250.curve(r, 0, 0)[1], by_mean.curve(r, 0, 0)[1], atol=1e-8 * scale)


def test_sampled_range_needs_two_temperatures():
    """r_s is the first interval well sampled at two or more temperatures: the closest contacts, seen
    only at the hottest temperature, cannot separate F0 from F1 and stay below r_s."""
    frames = lattice_frames(4, seed=6, temperatures=(150.0, 300.0, 600.0))
    eq = NormalEquations(["CG"], cutoff_A=CUTOFF, r_min_A=1.0, spacing_A=0.1, temperature_dependence="linear")
    for block in frames:
        eq.add(block)
    counts = {t: c[0] for t, c in eq.counts_per_temperature.items()}
    well = {t: np.nonzero(c >= 20)[0][0] for t, c in counts.items()}
    assert well[600.0] < well[300.0] < well[150.0]  # hotter samples closer
    expected = 1.0 + 0.1 * well[300.0]  # the second-closest temperature's first well-sampled interval
    pooled = 1.0 + 0.1 * np.nonzero(eq.counts[0] >= 20)[0][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MSCGWarning)
        table = eq.solve()
    assert float(table.r_sampled_min[0, 0]) == pytest.approx(max(expected, eq.min_distance[0]))
    assert float(table.r_sampled_min[0, 0]) > pooled


def test_bad_input_for_a_linear_fit():
    frames = lattice_frames(1, seed=1)
    stateless = Frames(positions=frames[0].positions, box=frames[0].box, types=frames[0].types,
                       type_names=frames[0].type_names, masses=frames[0].masses, forces=frames[0].forces)
    with pytest.raises(MSCGError, match="carries no state point.*temperature_dependence: linear"):
        fit_pair_potential([frames[1], stateless], LINEAR)
    with pytest.raises(MSCGError, match="temperature_dependence must be 'none' or 'linear'"):
        NormalEquations(["CG"], cutoff_A=CUTOFF, r_min_A=1.0, spacing_A=0.1, temperature_dependence="quadratic")
    with pytest.raises(ConfigError, match="pair.temperature_dependence"):
        from_dict(PairConfig, {"temperature_dependence": "quadratic"}, "pair")
    with pytest.raises(ConfigError, match="pair.reference_temperature_K: must be positive"):
        PairConfig(temperature_dependence="linear", reference_temperature_K=-3.0)
    with pytest.raises(ConfigError, match="pair.max_temperature_extrapolation_K: must be non-negative"):
        PairConfig(temperature_dependence="linear", max_temperature_extrapolation_K=-1.0)
    with pytest.raises(ConfigError, match="reference_temperature_K is set but pair.temperature_dependence is 'none'"):
        PairConfig(reference_temperature_K=300.0)


def test_run_fit_pair_linear_writes_the_thermal_model(tmp_path):
    frames = lattice_frames(5, seed=8)
    run_dir = tmp_path / "run"
    states = [StateConfig(t, density_g_cm3=0.68) for t in TEMPERATURES]
    for state, block in zip(states, frames):
        block.state = state.to_state()
        write_frames(block, run_dir / "cg" / f"{state.to_state().label}.h5md", kind="cg")
    config = Config(states=states, pair=PairConfig(
        cutoff_A=CUTOFF, name="thermal", test_fraction=0.2, lammps_table_points=300, progress=False,
        temperature_dependence="linear", max_temperature_extrapolation_K=30.0))
    summary = run_fit_pair(config, run_dir)
    out = run_dir / "models" / "thermal"
    header = read_model_header(summary.model_path)
    assert header["description"]["kind"] == "pair_table_thermal"
    assert header["description"]["temperature"] == {"dependent": True, "reference_K": 300.0,
                                                    "valid_range_K": [250.0, 350.0], "max_extrapolation_K": 30.0}
    fit = json.loads((out / "fit.json").read_text())
    assert fit["temperature_dependence"] == "linear" and fit["n_frames"] == 12
    model = load_potential(summary.model_path)
    assert model.temperature_K is None and model.extrapolation_limit_K() == 30.0
    # every state's held-out frame is tested at that state's temperature, and no other
    for state, block in zip(states, frames):
        label, held_out = state.to_state().label, block.select([4])
        reported = fit["test_force_errors"][label]["rmse"]
        for temperature in TEMPERATURES:
            model.set_temperature(temperature)
            same = reported == pytest.approx(force_errors(model, held_out)["rmse"], rel=1e-12)
            assert same == (temperature == state.temperature_K), (label, temperature)
    for temperature in ("T250", "T300", "T350"):
        text = (out / "lammps" / temperature / "pair_table.table").read_text()
        assert f"at T = {temperature[1:]} K" in text.splitlines()[0]
    assert (out / "pair_CG_CG.png").exists()
    error_f0, error_f1, _ = recovery_errors(model)
    assert error_f0 < 0.01 and error_f1 < 0.05
