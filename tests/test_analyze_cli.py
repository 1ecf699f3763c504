"""`thermocg analyze`: RDF, ADF, MSD/D and density of any trajectory, with the study's comparison metrics.

Known answers: an ideal gas has g(r) = 1 (within its Poisson noise) and p(theta) = sin(theta) pi/360 per
degree; a Brownian walk with steps of variance sigma^2 per axis every dt has D = sigma^2 / (2 dt); a
trajectory against itself has RDF and ADF errors 0 and a D ratio of 1; the same walk with its clock
running twice as fast has D ratio 1/2; simple-cubic against body-centred-cubic nearest-neighbour
shells share only the 180-degree angles (3/15 and 4/28 of them), so the ADF error is 2 - 2/7 = 12/7;
a .gro/.xtc written by MDAnalysis gives what the same frames in H5MD give, to the precision of .xtc.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from thermocg.analysis.adf import ADFResult, adf_error
from thermocg.analysis.standalone import AnalyzeSettings, Source, analyze
from thermocg.cli import main
from thermocg.dataset import write_frames
from thermocg.frames import Frames

MASS = 30.0


def ideal_gas(n_frames: int = 40, n: int = 200, length_A: float = 30.0, seed: int = 0) -> Frames:
    rng = np.random.default_rng(seed)
    return Frames(positions=rng.uniform(0.0, length_A, (n_frames, n, 3)), box=np.eye(3) * length_A,
                  types=np.zeros(n, int), type_names=("G",), masses=np.full(n, MASS))


def random_walk(n_frames: int = 150, n: int = 64, length_A: float = 20.0, dt_fs: float = 100.0, sigma_A: float = 0.3,
                seed: int = 1) -> Frames:
    """Brownian beads: Gaussian steps of sigma_A per axis every dt_fs, wrapped into the box (D = sigma^2 / 2dt)."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(0.0, length_A, (1, n, 3))
    steps = rng.normal(0.0, sigma_A, (n_frames - 1, n, 3))
    positions = np.concatenate([start, start + np.cumsum(steps, axis=0)]) % length_A
    return Frames(positions=positions, box=np.eye(3) * length_A, types=np.zeros(n, int), type_names=("Rw",),
                  masses=np.full(n, MASS), time_fs=np.arange(n_frames) * dt_fs)


def lattice(kind: str, spacing_A: float = 4.0, cells: int = 6) -> Frames:
    """A simple-cubic or body-centred-cubic crystal whose nearest neighbours are ``spacing_A`` apart."""
    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(float)
    if kind == "sc":
        cell, points = spacing_A, grid
    else:
        cell = 2.0 * spacing_A / np.sqrt(3.0)
        points = np.concatenate([grid, grid + 0.5])
    n = len(points)
    return Frames(positions=(points * cell)[None], box=np.eye(3) * cell * cells, types=np.zeros(n, int),
                  type_names=("A",), masses=np.full(n, MASS))


def run_cli(tmp_path, *args) -> dict:
    out = tmp_path / "out"
    assert main(["analyze", *map(str, args), "--output", str(out)]) == 0
    return json.loads((out / "summary.json").read_text())


def test_ideal_gas(tmp_path):
    import ase.io

    from thermocg.ase_calculator import atoms_from_frames

    gas = ideal_gas()
    path = tmp_path / "gas.extxyz"
    ase.io.write(path, [atoms_from_frames(gas, k) for k in range(gas.n_frames)], format="extxyz")
    summary = run_cli(tmp_path, path, "--adf-cutoff-A", "5", "--rdf-bin-width-A", "0.25")
    rdf = json.loads((tmp_path / "out" / "rdf.json").read_text())
    g, r = np.array(rdf["g"]["G-G"]), np.array(rdf["r_A"])
    # g = 1 within the Poisson noise of each bin: sigma_k = 1 / sqrt(unordered pairs expected in bin k)
    n, volume = 200, 30.0**3
    edges = np.array(rdf["edges_A"])
    expected_pairs = 0.5 * n * (n - 1) / volume * 4 / 3 * np.pi * np.diff(edges**3) * gas.n_frames
    chi2 = np.mean(((g - 1.0) ** 2 * expected_pairs)[r > 2.0])
    assert 0.6 < chi2 < 1.5, chi2
    # p(theta) = sin(theta) pi / 360 per degree for isotropic neighbours
    adf = json.loads((tmp_path / "out" / "adf.json").read_text())
    theta = np.array(adf["angle_deg"])
    sine = ADFResult(angle_deg=theta, edges_deg=np.array(adf["edges_deg"]), p={"all": np.sin(np.radians(theta))
                     * np.pi / 360.0}, n_angles={"all": 1}, cutoff_A=5.0, n_frames=1)
    uniform = dataclasses.replace(sine, p={"all": np.full(len(theta), 1.0 / 180.0)})
    measured = ADFResult.from_dict(adf)
    assert adf_error(measured, sine) < 0.08 < 0.3 < adf_error(measured, uniform)
    # the density is the beads' mass over the volume; an extxyz without times gets no MSD, and says why
    assert summary["trajectory"]["density_g_cm3"] == pytest.approx(n * MASS / volume * 1.66053906660, rel=1e-12)
    assert summary["trajectory"]["diffusion_1e5_cm2_s"] is None
    assert any("--frame-interval-fs" in note for note in summary["trajectory"]["notes"])
    assert summary["reference"] is None and summary["comparison"] is None
    assert (tmp_path / "out" / "analysis.png").stat().st_size > 0


def test_a_trajectory_against_itself_and_a_known_diffusion_coefficient(tmp_path):
    walk = random_walk()
    path = tmp_path / "walk.h5md"
    write_frames(walk, path, kind="cg")
    summary = run_cli(tmp_path, path, "--reference", path, "--adf-cutoff-A", "5")
    comparison = summary["comparison"]
    assert comparison["rdf_error"] == 0.0 and comparison["adf_error"] == 0.0
    assert comparison["d_ratio"] == 1.0 and comparison["density_ratio"] == 1.0
    assert comparison["rdf"]["Rw-Rw"]["mean_abs_dg"] == 0.0 and comparison["adf"]["all"]["integrated_abs_dp"] == 0.0
    # D = sigma^2 / (2 dt) = 0.09 / 200 A^2/fs = 4.5 x 1e-5 cm^2/s (1 A^2/fs = 1e4 x 1e-5 cm^2/s)
    assert summary["trajectory"]["diffusion_1e5_cm2_s"] == pytest.approx(4.5, rel=0.1)
    for name in ("rdf", "adf", "msd", "density", "rdf_reference", "msd_reference", "summary", "figure"):
        assert name in summary["files"]
    # a discarded equilibration part is dropped from both alike
    again = run_cli(tmp_path, path, "--reference", path, "--adf-cutoff-A", "5", "--discard-fraction", "0.5")
    assert again["trajectory"]["first_frame"] == again["reference"]["first_frame"] == 75
    assert again["comparison"]["rdf_error"] == 0.0


def test_known_comparisons_of_different_trajectories():
    walk = random_walk()
    twice_as_fast = dataclasses.replace(walk, time_fs=walk.time_fs / 2.0)  # same path, half the time
    result = analyze(Source(walk, "trajectory"), Source(twice_as_fast, "reference"), AnalyzeSettings(adf_cutoff_A=5.0))
    assert result.comparison["d_ratio"] == pytest.approx(0.5, rel=1e-12)
    assert result.comparison["rdf_error"] == 0.0 and result.comparison["adf_error"] == 0.0
    # sc and bcc nearest-neighbour shells: angles 90 (12/15), 180 (3/15) against 70.5 and 109.5 (12/28 each),
    # 180 (4/28): only 180 degrees is shared, so the integral of |p - p_ref| is 2 - 2/7 = 12/7
    sc, bcc = lattice("sc"), lattice("bcc")
    result = analyze(Source(sc, "trajectory"), Source(bcc, "reference"), AnalyzeSettings(adf_cutoff_A=4.4))
    assert result.trajectory.adf.mean_neighbors == pytest.approx(6.0) and result.reference.adf.mean_neighbors == 8.0
    assert result.comparison["adf_error"] == pytest.approx(12.0 / 7.0, rel=1e-12)
    assert result.comparison["adf"]["all"]["integrated_abs_dp"] == result.comparison["adf_error"]
    # densities: 216 beads in (24 A)^3 against 432 in (6 x 4.6188 A)^3
    expected = (216 / 24.0**3) / (432 / (6 * 8.0 / np.sqrt(3.0)) ** 3)
    assert result.comparison["density_ratio"] == pytest.approx(expected, rel=1e-12)
    assert result.comparison["d_ratio"] is None  # one frame each: no MSD
    assert result.comparison["rdf_error"] > 0.1


def test_gro_and_xtc_written_by_mdanalysis(tmp_path, capsys):
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    walk = random_walk()
    h5md = tmp_path / "walk.h5md"
    # the reference: the same frames as .xtc stores them (1e-3 nm), in H5MD
    write_frames(dataclasses.replace(walk, positions=np.round(walk.positions * 100.0) / 100.0), h5md, kind="cg")
    n = walk.n_particles
    u = mda.Universe.empty(n, n_residues=n, atom_resindex=np.arange(n), trajectory=True)
    u.add_TopologyAttr("names", ["Rw"] * n)
    u.add_TopologyAttr("resnames", ["RW"] * n)
    u.add_TopologyAttr("resids", np.arange(1, n + 1))
    dims = np.tile([20.0, 20.0, 20.0, 90.0, 90.0, 90.0], (walk.n_frames, 1))
    u.load_new(walk.positions.astype(np.float32), format=MemoryReader, dimensions=dims, dt=0.1)  # dt in ps
    u.atoms.write(str(tmp_path / "walk.gro"))
    with mda.Writer(str(tmp_path / "walk.xtc"), n) as writer:
        for _ in u.trajectory:
            writer.write(u.atoms)
    summary = run_cli(tmp_path, tmp_path / "walk.xtc", "--topology", tmp_path / "walk.gro", "--reference", h5md,
                      "--reference-topology", tmp_path / "walk.gro", "--mass", f"Rw={MASS}", "--adf-cutoff-A", "5")
    assert summary["inputs"]["bead_types_from"]["trajectory"] == "atom name"
    assert summary["trajectory"]["frames_total"] == walk.n_frames
    comparison = summary["comparison"]
    print("xtc vs h5md:", {k: comparison[k] for k in ("rdf_error", "adf_error", "d_ratio", "density_ratio")})
    # the same numbers but for float32 round-off in MDAnalysis (a pair on a bin edge may change bins)
    assert comparison["rdf_error"] < 1e-3 and comparison["adf_error"] < 1e-3
    assert comparison["d_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert comparison["density_ratio"] == pytest.approx(1.0, abs=1e-6)
    # the .gro alone: one frame, no masses unless given
    out = tmp_path / "gro"
    assert main(["analyze", str(tmp_path / "walk.gro"), "--output", str(out), "--adf-cutoff-A", "5"]) == 0
    alone = json.loads((out / "summary.json").read_text())
    assert alone["trajectory"]["density_g_cm3"] is None and any("--mass" in n for n in alone["trajectory"]["notes"])
    # a trajectory without its topology, or a missing file: one clear line, exit 2
    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "walk.xtc"), "--output", str(tmp_path / "x")]) == 2
    assert "needs --topology" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "nothing.h5md"), "--output", str(tmp_path / "y")]) == 2
    assert "nothing.h5md: no such file" in capsys.readouterr().err


def test_lammps_data_and_dump(tmp_path):
    """A LAMMPS dump with its data file (types by number, renamed; masses from the data file; times given)."""
    from helpers import engine_test_liquid
    from thermocg.engines.lammps import LammpsEngine

    frames, model = engine_test_liquid(125, network=False)
    with LammpsEngine(model, frames, work_dir=tmp_path / "lammps") as engine:
        engine.velocities(300.0, seed=1)
        engine.langevin(temperature_K=300.0, friction_per_ps=1.0, seed=1, timestep_fs=2.0)
        engine.dump("traj.dump", 10, columns=("id", "type", "x", "y", "z"))
        engine.run(100)
    summary = run_cli(tmp_path, tmp_path / "lammps" / "traj.dump", "--topology", tmp_path / "lammps" / "data.lmp",
                      "--bead-type", "1=M", "--frame-interval-fs", "20")
    assert summary["trajectory"]["pairs"] == ["M-M"] and summary["trajectory"]["frames_total"] == 11
    assert summary["inputs"]["bead_types_from"]["trajectory"] == "LAMMPS atom type"
    expected = 125 * 32.0 / abs(np.linalg.det(frames.box[0])) * 1.66053906660
    assert summary["trajectory"]["density_g_cm3"] == pytest.approx(expected, rel=1e-6)
    assert summary["trajectory"]["diffusion_1e5_cm2_s"] > 0
