"""MS-CG force matching: known answers from Lennard-Jones fluids with exact forces."""

import json
import warnings

import numpy as np
import pytest
import torch
import yaml

from helpers import lj_fluid
from thermocg.config import Config, PairConfig, StateConfig
from thermocg.dataset import write_frames
from thermocg.frames import Frames, StatePoint
from thermocg.mscg import MSCGError, MSCGWarning, NormalEquations, fit_pair_potential, force_errors, run_fit_pair
from thermocg.potentials.base import energy_and_forces, load_potential
from thermocg.potentials.lj import LennardJones
from thermocg.potentials.pair import PairTable

CUTOFF = 9.0


def lj_frames(potential, n_frames, *, rng, n_particles=216, density=0.0128, jitter=0.09, types=None,
              state=None):
    """Jittered-lattice configurations (Gaussian jitter, ``jitter`` x lattice spacing) with the exact
    forces of ``potential``: the reference the fit must recover."""
    side = round(n_particles ** (1 / 3))
    positions, boxes = [], []
    for _ in range(n_frames):
        p, box = lj_fluid(n_particles, density, rng=rng)
        positions.append(p + rng.normal(0.0, jitter * box[0, 0] / side, p.shape))
        boxes.append(box)
    positions, boxes = np.array(positions), np.array(boxes)
    if types is None:
        types = np.zeros(n_particles, dtype=np.int64)
    _, forces = energy_and_forces(potential, positions, boxes, types)
    return Frames(positions=positions, box=boxes, types=types, type_names=potential.type_names,
                  masses=np.full(n_particles, 32.0), forces=forces.numpy(), state=state)


def exact_lj_force(lj, r, a, b):
    r = torch.as_tensor(r, dtype=torch.float64).requires_grad_(True)
    u = lj.pair_energy(r, torch.full(r.shape, a), torch.full(r.shape, b))
    (grad,) = torch.autograd.grad(u.sum(), r)
    return u.detach().numpy(), -grad.numpy()


def assert_curve_recovered(table, lj, a, b, *, tolerance=0.01):
    """max |F_fit - F_LJ| <= tolerance * max |F_LJ| over the well-sampled range [r_s, r_c]."""
    r_s = float(table.r_sampled_min[a, b])
    r = np.linspace(r_s, CUTOFF, 800)
    u_fit, f_fit = table.curve(r, a, b)
    u_ref, f_ref = exact_lj_force(lj, r, a, b)
    error = np.abs(f_fit - f_ref).max() / np.abs(f_ref).max()
    assert error <= tolerance, f"pair {a}-{b}: force error {error:.2e} of max |F| over [{r_s:.2f}, {CUTOFF}] A"
    assert np.abs(u_fit - u_ref).max() <= tolerance * np.abs(u_ref).max()
    return r_s, error


@pytest.fixture(scope="module")
def one_type():
    rng = np.random.default_rng(2005)
    lj = LennardJones(["CG"], epsilon_kcal_mol=0.25, sigma_A=3.5, cutoff_A=CUTOFF, switch_width_A=2.0)
    return lj, lj_frames(lj, 24, rng=rng)


def test_lj_force_curve_recovered_within_one_percent(one_type):
    lj, frames = one_type
    table = fit_pair_potential(frames.select(slice(0, 20)), PairConfig(cutoff_A=CUTOFF, spacing_A=0.1))
    r_s, error = assert_curve_recovered(table, lj, 0, 0)
    assert r_s < 3.3  # the wall itself is in the sampled range
    # the fit gives back sigma and epsilon: F = 0 at 2^(1/6) sigma, U_min = -epsilon
    r = np.linspace(3.6, 4.4, 8001)
    u, f = table.curve(r, 0, 0)
    assert r[np.argmin(np.abs(f))] == pytest.approx(2 ** (1 / 6) * 3.5, rel=1e-3)
    assert u.min() == pytest.approx(-0.25, rel=1e-2)
    info = table.fit_info
    assert info["train_r2"] > 0.9999 and info["n_frames"] == 20
    # held-out frames, reported the way the network's errors are; they hold a few pairs closer than
    # r_s (down to 2.3 A), where the power-law wall stands in for the unsampled LJ wall
    held_out = force_errors(table, frames.select(slice(20, 24)))
    rms = np.sqrt((frames.forces[20:] ** 2).mean())
    assert held_out["r2"] > 0.99 and held_out["rmse"] < 0.1 * rms
    assert set(held_out["per_type"]) == {"CG"}


def test_two_type_mixture_each_pair_recovered():
    rng = np.random.default_rng(2008)
    lj = LennardJones(["A", "B"], epsilon_kcal_mol=[[0.2, 0.1], [0.1, 0.4]], sigma_A=[[3.4, 3.6], [3.6, 4.0]],
                      cutoff_A=CUTOFF, switch_width_A=2.0)
    types = rng.permutation(np.arange(216) % 2)
    frames = lj_frames(lj, 24, rng=rng, types=types)
    table = fit_pair_potential([frames], PairConfig(cutoff_A=CUTOFF, spacing_A=0.1))
    for a, b in [(0, 0), (0, 1), (1, 1)]:
        assert_curve_recovered(table, lj, a, b)
    # the three curves really differ (the fit did not average them)
    _, f = zip(*(table.curve(np.array([3.9]), a, b) for a, b in [(0, 0), (0, 1), (1, 1)]))
    assert len({round(float(x[0]), 1) for x in f}) == 3


def test_pooled_states_and_a_table_is_its_own_fixed_point():
    """Forces made by a PairTable on the fit's own grid are recovered exactly (to round-off);
    frames of two densities pooled give the same answer."""
    rng = np.random.default_rng(3)
    n_basis = 80
    centres = 1.0 + (np.arange(n_basis) - 1.0) * (CUTOFF - 1.0) / n_basis
    coef = (50.0 * np.exp(-(centres - 2.0) * 2.0) - 2.0 * np.exp(-((centres - 4.5) ** 2)))[None, None, :]
    truth = PairTable(["A"], cutoff_A=CUTOFF, r_min_A=1.0, coefficients=coef, r_sampled_min_A=[[1.0]])
    dense = lj_frames(truth, 6, rng=rng, density=0.02, state=StatePoint(300.0, 1.0))
    sparse = lj_frames(truth, 6, rng=rng, density=0.012, state=StatePoint(350.0, 0.6))
    config = PairConfig(cutoff_A=CUTOFF, r_min_A=1.0, spacing_A=(CUTOFF - 1.0) / n_basis, smoothness=0.0,
                        ridge=0.0, min_pairs_per_interval=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MSCGWarning)
        table = fit_pair_potential([dense, sparse], config)
    sampled = np.array(table.fit_info["pairs"]["A-A"]["min_distance_A"])
    first = int(np.ceil((sampled - 1.0) / table.spacing_A)) + 3  # support wholly in the sampled range
    np.testing.assert_allclose(table.coefficients[0, 0, first:].numpy(), coef[0, 0, first:], rtol=1e-6, atol=1e-7)
    assert table.fit_info["train_rmse_kcal_mol_A"] < 1e-6


def test_design_matrix_matches_a_naive_loop():
    from scipy.interpolate import BSpline

    rng = np.random.default_rng(11)
    positions, box = lj_fluid(27, 0.01, rng=rng, triclinic=True)
    types = np.arange(27) % 2
    eq = NormalEquations(["A", "B"], cutoff_A=6.0, r_min_A=1.0, spacing_A=0.5)
    g = eq.design_matrix(positions, box, types)
    knots = 1.0 + (np.arange(eq.n_basis + 4) - 3) * eq.spacing_A
    basis = [BSpline.basis_element(knots[j:j + 5], extrapolate=False) for j in range(eq.n_basis)]
    naive = np.zeros_like(g)
    inverse = np.linalg.inv(box)
    for i in range(27):
        for j in range(i + 1, 27):
            d = positions[j] - positions[i]
            d -= np.round(d @ inverse) @ box  # minimum image (cutoff < half the box)
            r = np.linalg.norm(d)
            if r >= 6.0:
                continue
            pair = eq.pair_index[types[i], types[j]]
            for k, bk in enumerate(basis):
                value = np.nan_to_num(bk(r))
                naive[3 * i:3 * i + 3, pair * eq.n_basis + k] -= value * d / r
                naive[3 * j:3 * j + 3, pair * eq.n_basis + k] += value * d / r
    np.testing.assert_allclose(g, naive, atol=1e-12)


def test_bad_input_gives_clear_messages(one_type):
    lj, frames = one_type
    few = frames.select(slice(0, 1))
    no_forces = Frames(positions=few.positions, box=few.box, types=few.types, type_names=few.type_names,
                       masses=few.masses)
    with pytest.raises(MSCGError, match="no forces"):
        fit_pair_potential(no_forces)
    with pytest.raises(MSCGError, match="below the spline grid start pair.r_min_A"):
        fit_pair_potential(few, PairConfig(cutoff_A=CUTOFF, r_min_A=3.0))
    with pytest.raises(ValueError, match="half the shortest perpendicular box width"):
        fit_pair_potential(few, PairConfig(cutoff_A=15.0))
    # one B bead: the pair B-B is never sampled
    two = Frames(positions=few.positions, box=few.box, types=(np.arange(216) == 0).astype(int),
                 type_names=("A", "B"), masses=few.masses, forces=few.forces)
    with pytest.raises(MSCGError, match="B-B is never within"):
        fit_pair_potential(two, PairConfig(cutoff_A=CUTOFF))
    with pytest.warns(MSCGWarning, match="B-B is never within"):
        table = fit_pair_potential(two, PairConfig(cutoff_A=CUTOFF, unsampled_pairs="zero"))
    assert table.curve(np.array([5.0]), 1, 1)[1][0] == 0.0
    # a grid finer than one frame of 27 beads can support
    tiny = lj_frames(lj, 1, rng=np.random.default_rng(0), n_particles=27, density=0.01)
    with pytest.raises(MSCGError, match="finer than the data support"), warnings.catch_warnings():
        warnings.simplefilter("ignore", MSCGWarning)
        fit_pair_potential(tiny, PairConfig(cutoff_A=6.9, spacing_A=0.01))
    # sparse intervals: warned and regularised (the coefficients stay bounded)
    with pytest.warns(MSCGWarning, match="finer than the data support: use a larger pair.spacing_A"):
        table = fit_pair_potential(few, PairConfig(cutoff_A=CUTOFF, spacing_A=0.02, min_pairs_per_interval=50))
    assert np.abs(table.coefficients.numpy()).max() < 1e3


def test_run_fit_pair_and_cli(tmp_path, one_type):
    from thermocg.cli import main

    lj, frames = one_type
    state = StatePoint(300.0, density_g_cm3=0.68)
    frames.state = state
    run_dir = tmp_path / "run"
    write_frames(frames.select(slice(0, 12)), run_dir / "cg" / f"{state.label}.h5md", kind="cg")
    config = Config(states=[StateConfig(300.0, density_g_cm3=0.68)],
                    pair=PairConfig(cutoff_A=CUTOFF, name="pairs", test_fraction=0.25, lammps_table_points=500,
                                    progress=False))
    summary = run_fit_pair(config, run_dir)
    model = summary.model_path
    out = run_dir / "models" / "pairs"
    assert model == out / "model.safetensors"
    for name in ("fit.json", "pair_CG_CG.png", "resolved.yaml", "lammps/pair_table.table", "lammps/pair_table.lammps"):
        assert (out / name).exists(), name
    fit = json.loads((out / "fit.json").read_text())
    assert fit["n_frames"] == 9 and fit["train_states"] == [state.label]
    assert fit["test_force_errors"][state.label]["r2"] > 0.95  # held-out pairs below r_s meet the wall
    table = load_potential(model)
    assert isinstance(table, PairTable)
    assert_curve_recovered(table, lj, 0, 0, tolerance=0.02)

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "run_dir": str(run_dir), "states": [{"temperature_K": 300.0, "density_g_cm3": 0.68}],
        "pair": {"cutoff_A": CUTOFF, "lammps_table_points": 0, "progress": False}}))
    assert main(["fit-pair", str(tmp_path / "config.yaml"), "--name", "cli"]) == 0
    assert (run_dir / "models" / "cli" / "model.safetensors").exists()
    assert main(["export", str(run_dir / "models" / "cli" / "model.safetensors"), "--format", "gromacs",
                 "--output", str(tmp_path / "gmx")]) == 0
    assert (tmp_path / "gmx" / "table_CG_CG.xvg").exists()
    assert main(["fit-pair", str(tmp_path / "config.yaml"), "--train-states", "T1_rho1"]) == 2


def test_run_fit_pair_returns_pooled_test_errors(tmp_path, one_type):
    """The summary's test errors pool the held-out frames of every state: RMSE^2 and MAE are the
    component-weighted means of the per-state values written to fit.json."""
    from thermocg.model_summary import ModelSummary

    lj, frames = one_type
    run_dir = tmp_path / "run"
    states = [StateConfig(300.0, density_g_cm3=0.68), StateConfig(320.0, density_g_cm3=0.68)]
    for state, part in zip(states, (slice(0, 10), slice(10, 20))):
        write_frames(frames.select(part), run_dir / "cg" / f"{state.to_state().label}.h5md", kind="cg")
    config = Config(states=states, pair=PairConfig(cutoff_A=CUTOFF, test_fraction=0.2, lammps_table_points=0,
                                                   progress=False))
    summary = run_fit_pair(config, run_dir, name="two")
    assert isinstance(summary, ModelSummary) and summary.family == "mscg" and summary.name == "two"
    assert summary.model_path == run_dir / "models" / "two" / "model.safetensors" and summary.model_path.exists()
    assert summary.train_states == tuple(s.to_state().label for s in states)
    assert summary.n_epochs is None and summary.best_epoch is None and not summary.stopped_at_max_epochs
    assert summary.cutoff_A == CUTOFF and summary.wall_s > 0
    per_state = json.loads((run_dir / "models" / "two" / "fit.json").read_text())["test_force_errors"]
    n = np.array([e["n_components"] for e in per_state.values()])
    rmse = np.array([e["rmse"] for e in per_state.values()])
    mae = np.array([e["mae"] for e in per_state.values()])
    assert summary.test_force_rmse_kcal_mol_A == pytest.approx(np.sqrt(np.sum(n * rmse**2) / n.sum()), rel=1e-12)
    assert summary.test_force_mae_kcal_mol_A == pytest.approx(np.sum(n * mae) / n.sum(), rel=1e-12)
    assert 0.95 < summary.test_r2 < 1
    # no held-out frames: no test errors
    config.pair.test_fraction = 0.0
    assert run_fit_pair(config, run_dir, name="all").test_force_rmse_kcal_mol_A is None
