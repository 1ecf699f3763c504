"""PairTable: the tabulated (B-spline) pair potential of the MS-CG baseline, against known answers."""

import numpy as np
import pytest
import torch

from helpers import lj_fluid
from thermocg.potentials.base import (TemperatureNotSetError, TemperatureRangeError, energy_and_forces,
                                      load_potential, save_potential)
from thermocg.potentials.pair import PairTable, PairTableThermal, bspline_basis, run_export


def _random_table(rng, n_types=2, n_basis=40, cutoff_A=8.0, r_min_A=2.0):
    coef = rng.normal(0.0, 1.0, (n_types, n_types, n_basis))
    coef = 0.5 * (coef + coef.transpose(1, 0, 2))
    r_s = np.full((n_types, n_types), 3.0)
    r_s[0, -1] = r_s[-1, 0] = 3.3
    names = [f"T{k}" for k in range(n_types)]
    return PairTable(names, cutoff_A=cutoff_A, r_min_A=r_min_A, coefficients=coef, r_sampled_min_A=r_s)


def test_basis_is_a_partition_of_unity_and_matches_scipy():
    from scipy.interpolate import BSpline

    r_min, rc, n = 2.0, 8.0, 30
    h = (rc - r_min) / n
    r = np.linspace(r_min, rc - 1e-9, 1000)
    _, cols, vals = bspline_basis(r, r_min, rc, n)
    knots = r_min + (np.arange(n + 4) - 3) * h
    for j in (0, 5, n - 1):
        ref = BSpline.basis_element(knots[j:j + 5], extrapolate=False)(r)
        ours = np.where(cols == j, vals, 0.0).sum(axis=1)
        np.testing.assert_allclose(ours, np.nan_to_num(ref), atol=1e-12)
    # with the cut functions put back, the basis sums to one
    x = (r - r_min) / h - np.floor((r - r_min) / h)
    assert np.all(vals.sum(axis=1) <= 1 + 1e-12)
    inner = r < rc - 3 * h
    np.testing.assert_allclose(vals.sum(axis=1)[inner], 1.0, atol=1e-12)
    assert x.shape == r.shape


def test_force_is_minus_energy_derivative_and_energy_integrates_force(rng):
    table = _random_table(rng)
    r = torch.linspace(1.0, 8.5, 4001, dtype=torch.float64, requires_grad=True)
    ti = torch.zeros_like(r, dtype=torch.long)
    tj = torch.ones_like(ti)
    u, f = table.pair_energy_force(r, ti, tj)
    (grad,) = torch.autograd.grad(u.sum(), r)
    np.testing.assert_allclose(-grad.numpy(), f.detach().numpy(), atol=1e-10)
    # U(r) = int_r^rc F ds (trapezoid on a fine grid, spline range only)
    rr = np.linspace(3.3, 8.0, 200001)
    uu, ff = table.curve(rr, 0, 1)
    integral = np.sum(0.5 * (ff[1:] + ff[:-1]) * np.diff(rr))
    assert uu[0] == pytest.approx(integral, rel=1e-8, abs=1e-9)


def test_zero_beyond_cutoff_smooth_at_cutoff_and_wall_below_r_s(rng):
    table = _random_table(rng)
    u, f = table.curve(np.array([8.0, 8.2, 50.0]), 0, 1)
    assert np.all(u == 0) and np.all(f == 0)
    # F, F' and F'' vanish at the cutoff: U ~ (rc - r)^4 just inside
    u_in, f_in = table.curve(np.array([8.0 - 1e-3]), 0, 1)
    assert abs(f_in[0]) < 1e-8 and abs(u_in[0]) < 1e-11
    # the wall matches value and slope at r_s = 3.3 and grows steeply below it
    r_s = 3.3
    _, f = table.curve(np.array([r_s - 1e-7, r_s + 1e-7]), 0, 1)
    assert f[0] == pytest.approx(f[1], abs=1e-5)
    # the wall is repulsive at 0.9 r_s whatever the data at r_s, and steeper below
    u_wall, f_wall = table.curve(np.array([1.5, 2.0, 2.5, 0.9 * r_s]), 0, 1)
    assert np.all(np.diff(f_wall) < 0) and np.all(f_wall > 0) and f_wall[0] > 1e2
    assert np.all(np.diff(u_wall) < 0)
    # a repulsive fitted force (F_s > 0, F' < 0): the wall matches value and slope
    coef = (100.0 * np.exp(-np.arange(40) / 3.0))[None, None, :]
    wall = PairTable(["A"], cutoff_A=8.0, r_min_A=2.0, coefficients=coef, r_sampled_min_A=[[2.6]])
    below, above = wall.force_derivative(2.6 - 1e-4, 0, 0), wall.force_derivative(2.6 + 1e-4, 0, 0)
    assert above < 0 and below == pytest.approx(above, rel=2e-3)


def test_two_beads_known_force():
    """Two beads on the x axis: F_1 = -F(r) x_hat, F_0 = +F(r)... and the energy is U(r)."""
    coef = np.zeros((1, 1, 30))
    coef[0, 0, 10] = 2.0  # one B-spline bump: F(r) = 2 B_10(r)
    table = PairTable(["A"], cutoff_A=8.0, r_min_A=2.0, coefficients=coef, r_sampled_min_A=[[2.0]])
    h = 0.2
    r = 2.0 + (10 - 3) * h + 2 * h  # the peak of B_10: value 2/3, so F = 4/3
    positions = np.array([[5.0, 5.0, 5.0], [5.0 + r, 5.0, 5.0]])
    energy, forces = energy_and_forces(table, positions, np.eye(3) * 30.0, np.array([0, 0]))
    assert forces[0, 1, 0].item() == pytest.approx(4.0 / 3.0, rel=1e-12)  # repulsive: pushes bead 1 to +x
    assert forces[0, 0, 0].item() == pytest.approx(-4.0 / 3.0, rel=1e-12)
    # energy: the area under the bump beyond its peak, half of 2 * h (the integral of B is h)
    assert energy.item() == pytest.approx(h, rel=1e-12)


def test_finite_difference_forces_in_a_periodic_fluid(rng):
    table = _random_table(rng, n_basis=30, cutoff_A=7.0, r_min_A=1.0)
    positions, box = lj_fluid(64, 0.02, rng=rng, triclinic=True)
    types = np.arange(64) % 2
    _, forces = energy_and_forces(table, positions, box, types)
    step = 1e-5
    for particle, axis in [(0, 0), (5, 1), (17, 2), (40, 0)]:
        plus, minus = positions.copy(), positions.copy()
        plus[particle, axis] += step
        minus[particle, axis] -= step
        e_plus, _ = energy_and_forces(table, plus, box, types, compute_forces=False)
        e_minus, _ = energy_and_forces(table, minus, box, types, compute_forces=False)
        fd = -(e_plus.item() - e_minus.item()) / (2 * step)
        assert forces[0, particle, axis].item() == pytest.approx(fd, rel=1e-6, abs=1e-7)


def test_save_load_round_trip_and_export_cli(tmp_path, rng):
    table = _random_table(rng, n_types=3)
    path = save_potential(table, tmp_path / "m" / "model.safetensors")
    loaded = load_potential(path)
    assert isinstance(loaded, PairTable) and loaded.type_names == table.type_names
    positions, box = lj_fluid(27, 0.01, rng=rng)
    types = np.arange(27) % 3
    e0, f0 = energy_and_forces(table, positions, box, types)
    e1, f1 = energy_and_forces(loaded, positions, box, types)
    torch.testing.assert_close(e1, e0, rtol=0, atol=0)
    torch.testing.assert_close(f1, f0, rtol=0, atol=0)
    out = run_export(path, "gromacs", tmp_path / "gmx")
    assert len(list(out.glob("table_*.xvg"))) == 6


def test_float32_matches_float64(rng):
    table = _random_table(rng)
    positions, box = lj_fluid(64, 0.02, rng=rng)
    types = np.arange(64) % 2
    e64, f64 = energy_and_forces(table, positions, box, types)
    e32, f32 = energy_and_forces(table.float(), positions, box, types)
    assert e32.dtype == torch.float32
    np.testing.assert_allclose(f32.numpy(), f64.numpy(), atol=1e-4 * np.abs(f64.numpy()).max())


def test_bad_tables_are_refused():
    coef = np.zeros((2, 2, 10))
    coef[0, 1, 3] = 1.0
    with pytest.raises(ValueError, match="symmetric"):
        PairTable(["A", "B"], cutoff_A=8.0, r_min_A=2.0, coefficients=coef, r_sampled_min_A=3.0)
    with pytest.raises(ValueError, match=r"\(2, 2, K >= 4\)"):
        PairTable(["A", "B"], cutoff_A=8.0, r_min_A=2.0, coefficients=np.zeros((1, 1, 10)), r_sampled_min_A=3.0)
    with pytest.raises(ValueError, match="r_min_A < cutoff_A"):
        PairTable(["A"], cutoff_A=8.0, r_min_A=9.0, coefficients=np.zeros((1, 1, 10)), r_sampled_min_A=3.0)


# --------------------------------------------------------------------------------------------------
# the temperature-dependent table: F(r; T) = F0(r) + (T - T_ref) F1(r)
# --------------------------------------------------------------------------------------------------

def _random_thermal(rng, n_types=2, n_basis=40):
    base = _random_table(rng, n_types=n_types, n_basis=n_basis)
    slope = rng.normal(0.0, 0.01, base.coefficients.shape)
    slope = 0.5 * (slope + slope.transpose(1, 0, 2))
    return PairTableThermal(base.type_names, cutoff_A=base.cutoff_A, r_min_A=base.r_min_A,
                            coefficients=base.coefficients.numpy(), temperature_coefficients=slope,
                            reference_temperature_K=300.0, r_sampled_min_A=base.r_sampled_min.numpy(),
                            valid_temperature_range_K=(250.0, 350.0))


def test_thermal_table_is_the_pair_table_of_c0_plus_w_c1(rng):
    """At every temperature the model is exactly the PairTable with coefficients c0 + (T - T_ref) c1
    (energies and forces of a periodic fluid, wall included)."""
    thermal = _random_thermal(rng)
    positions, box = lj_fluid(64, 0.02, rng=rng, triclinic=True)
    positions = positions + rng.normal(0.0, 0.4, positions.shape)  # some pairs below r_s: the wall
    types = np.arange(64) % 2
    c0, c1 = thermal.coefficients.numpy(), thermal.temperature_coefficients.numpy()
    for temperature in (250.0, 287.5, 350.0):
        thermal.set_temperature(temperature)
        explicit = PairTable(thermal.type_names, cutoff_A=8.0, r_min_A=2.0,
                             coefficients=c0 + (temperature - 300.0) * c1,
                             r_sampled_min_A=thermal.r_sampled_min.numpy())
        e, f = energy_and_forces(thermal, positions, box, types)
        e_ref, f_ref = energy_and_forces(explicit, positions, box, types)
        torch.testing.assert_close(f, f_ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(e, e_ref, rtol=0, atol=1e-12)
        e_at, f_at = energy_and_forces(thermal.at_temperature(temperature), positions, box, types)
        torch.testing.assert_close(f_at, f_ref, rtol=0, atol=1e-12)


def test_thermal_table_is_linear_in_temperature_above_r_s_with_a_wall_at_each_temperature(rng):
    thermal = _random_thermal(rng)
    r = np.linspace(3.3, 8.0, 500)  # at and above r_s of the 0-1 pair
    curves = {}
    for temperature in (250.0, 300.0, 350.0):
        thermal.set_temperature(temperature)
        curves[temperature] = thermal.curve(r, 0, 1)
    for column in (0, 1):  # U and F: the value at 300 K is the mean of those at 250 and 350 K
        np.testing.assert_allclose(curves[300.0][column], 0.5 * (curves[250.0][column] + curves[350.0][column]),
                                   atol=1e-12)
    # F0 is the curve at T_ref; F1 the slope
    slope = PairTable(thermal.type_names, cutoff_A=8.0, r_min_A=2.0,
                      coefficients=thermal.temperature_coefficients.numpy(), r_sampled_min_A=2.0).curve(r, 0, 1)[1]
    np.testing.assert_allclose((curves[350.0][1] - curves[250.0][1]) / 100.0, slope, atol=1e-12)
    # below r_s the wall is built from each temperature's spline: continuous there, and repulsive
    for temperature in (250.0, 350.0):
        thermal.set_temperature(temperature)
        _, f = thermal.curve(np.array([3.3 - 1e-7, 3.3 + 1e-7]), 0, 1)
        assert f[0] == pytest.approx(f[1], abs=1e-5)
        _, wall = thermal.curve(np.array([2.0, 2.5, 0.9 * 3.3]), 0, 1)
        assert np.all(wall > 0) and np.all(np.diff(wall) < 0)


def test_thermal_table_needs_a_temperature_and_checks_its_range(rng):
    thermal = _random_thermal(rng)
    with pytest.raises(TemperatureNotSetError, match="pair_table_thermal model is temperature-dependent"):
        thermal.curve(np.array([4.0]), 0, 0)
    with pytest.raises(TemperatureRangeError, match=r"\[250, 350\] K"):
        thermal.at_temperature(500.0)
    thermal.set_temperature(260.0)
    thermal.at_temperature(300.0)
    assert thermal.temperature_K == 260.0  # at_temperature leaves the set temperature alone


def test_thermal_table_save_load_keeps_both_splines(tmp_path, rng):
    thermal = _random_thermal(rng, n_types=3)
    path = save_potential(thermal, tmp_path / "model.safetensors")
    loaded = load_potential(path)
    assert isinstance(loaded, PairTableThermal) and loaded.hyperparameters() == thermal.hyperparameters()
    assert loaded.reference_temperature_K == 300.0 and loaded.valid_temperature_range_K == (250.0, 350.0)
    positions, box = lj_fluid(27, 0.01, rng=rng)
    types = np.arange(27) % 3
    for model in (thermal, loaded):
        model.set_temperature(333.0)
    torch.testing.assert_close(energy_and_forces(loaded, positions, box, types)[1],
                               energy_and_forces(thermal, positions, box, types)[1], rtol=0, atol=0)


def test_bad_thermal_tables_are_refused():
    coef = np.zeros((2, 2, 10))
    asymmetric = coef.copy()
    asymmetric[0, 1, 3] = 1.0
    common = dict(cutoff_A=8.0, r_min_A=2.0, coefficients=coef, r_sampled_min_A=3.0)
    with pytest.raises(ValueError, match="temperature_coefficients must be symmetric"):
        PairTableThermal(["A", "B"], temperature_coefficients=asymmetric, reference_temperature_K=300.0, **common)
    with pytest.raises(ValueError, match="the shape of coefficients"):
        PairTableThermal(["A", "B"], temperature_coefficients=coef[..., :5], reference_temperature_K=300.0, **common)
    with pytest.raises(ValueError, match="reference_temperature_K must be positive"):
        PairTableThermal(["A", "B"], temperature_coefficients=coef, reference_temperature_K=0.0, **common)
    with pytest.raises(ValueError, match="valid_temperature_range_K"):
        PairTableThermal(["A", "B"], temperature_coefficients=coef, reference_temperature_K=300.0,
                         valid_temperature_range_K=(350.0, 250.0), **common)
