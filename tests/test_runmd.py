"""`thermocg run-md`: a model on a structure file of one's own, in thermocg's MD, OpenMM and LAMMPS.

Known answers: the structure read from each format is the frame written to it (to the format's
precision); every saved frame's forces are the model's forces at its saved positions, in the
structure's own frame (also for a rotated triclinic cell, which OpenMM and LAMMPS run rotated); a
temperature-dependent model is run at the thermostat's temperature; a continued run's files line up
(thermocg: bit for bit with one uninterrupted run); a blown-up run exits 1 with one line.
"""

from __future__ import annotations

import fcntl
import json

import h5py
import numpy as np
import pytest
import torch
import yaml

from helpers import lj_fluid
from thermocg.cli import main
from thermocg.dataset import H5MDDataset, read_frames, write_frames
from thermocg.frames import Frames
from thermocg.md.standalone import run_md
from thermocg.potentials.base import energy_and_forces, load_potential, save_potential
from thermocg.potentials.lj import LennardJones
from thermocg.potentials.pair import PairTable, PairTableThermal, write_lammps_data
from thermocg.structure import StructureError, read_structure

MASS = 39.948
SHORT = ["--temperature-K", "120", "--timestep-fs", "4", "--save-interval-fs", "40", "--thermo-interval-fs", "20"]


def argon(seed: int = 1, *, triclinic: bool = False, rotate: bool = False) -> Frames:
    """64 argon-like beads at 0.01 /A^3 (box 18.6 A); optionally a triclinic cell turned by a rotation,
    so that a is not along x (the engines must rotate it into their frame and back)."""
    positions, box = lj_fluid(64, 0.01, rng=np.random.default_rng(seed), triclinic=triclinic)
    if rotate:
        angle = 0.7
        c, s = np.cos(angle), np.sin(angle)
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
            [[1.0, 0.0, 0.0], [0.0, np.cos(0.4), -np.sin(0.4)], [0.0, np.sin(0.4), np.cos(0.4)]])
        positions, box = positions @ rotation.T, box @ rotation.T
    return Frames(positions=positions[None], box=box[None], types=np.zeros(64, int), type_names=("Ar",),
                  masses=np.full(64, MASS))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    lj = LennardJones(["Ar"], epsilon_kcal_mol=0.238, sigma_A=3.4, cutoff_A=7.5, switch_width_A=1.0)
    return save_potential(lj.to(torch.float64), tmp_path_factory.mktemp("model") / "lj.safetensors")


def write_mdanalysis(frames: Frames, path, *, name: str = "Ar") -> None:
    """A .gro or .pdb of the frame, written by MDAnalysis (atom name and residue name ``name``)."""
    import MDAnalysis as mda
    from MDAnalysis.lib.mdamath import triclinic_box

    n = frames.n_particles
    u = mda.Universe.empty(n, n_residues=n, atom_resindex=np.arange(n), trajectory=True)
    u.add_TopologyAttr("names", [name] * n)
    u.add_TopologyAttr("resnames", [name] * n)
    u.add_TopologyAttr("resids", np.arange(1, n + 1))
    u.atoms.positions = frames.positions[-1]
    u.dimensions = triclinic_box(*frames.box[-1])
    u.atoms.write(str(path))


def write_structure(frames: Frames, path) -> list[str]:
    """``frames`` in the format of ``path``'s suffix; returns the run-md options that file needs."""
    from thermocg.ase_calculator import atoms_from_frames

    suffix = path.suffix
    if suffix in (".gro", ".pdb"):
        write_mdanalysis(frames, path)
        return ["--mass", f"Ar={MASS}"]
    if suffix == ".data":
        write_lammps_data(path, frames.positions[-1], frames.box[-1], frames.types, [MASS])
        return ["--bead-type", "1=Ar"]
    if suffix == ".extxyz":
        import ase.io

        ase.io.write(path, atoms_from_frames(frames), format="extxyz")
        return []
    write_frames(frames, path, kind="cg")
    return []


def saved_frames(out) -> Frames:
    return read_frames(out / "traj.h5md")


def assert_forces_are_the_models(out, model_path, *, rtol: float = 1e-9) -> Frames:
    """Every saved frame's forces equal the model's at its saved positions and box."""
    frames = saved_frames(out)
    potential = load_potential(model_path).to(torch.float64)
    _, forces = energy_and_forces(potential, frames.positions, frames.box, frames.types)
    scale = np.abs(forces.numpy()).max()
    np.testing.assert_allclose(frames.forces, forces.numpy(), rtol=0, atol=rtol * scale)
    return frames


def same_periodic_positions(a: np.ndarray, b: np.ndarray, box: np.ndarray, atol: float) -> None:
    """a and b are the same points modulo the lattice of ``box``."""
    frac = (a - b) @ np.linalg.inv(box)
    np.testing.assert_allclose((frac - np.round(frac)) @ box, 0.0, atol=atol)


# ---------------------------------------------------------------------------------------------- structures

@pytest.mark.parametrize("suffix,precision_A", [(".gro", 5e-3), (".pdb", 5e-4), (".data", 1e-5),
                                                (".extxyz", 1e-7), (".h5md", 0.0)])
def test_run_md_from_each_structure_format(suffix, precision_A, model, tmp_path, capsys):
    frames = argon()
    structure = tmp_path / f"start{suffix}"
    extra = write_structure(frames, structure)
    read = read_structure(structure, type_names=["Ar"], masses_amu={"Ar": MASS} if "--mass" in extra else None,
                          bead_types={"1": "Ar"} if "--bead-type" in extra else None)
    assert read.type_names == ("Ar",) and np.array_equal(read.masses, frames.masses)
    np.testing.assert_allclose(read.box, frames.box, atol=precision_A)
    same_periodic_positions(read.positions[0], frames.positions[0], frames.box[0], atol=precision_A)
    out = tmp_path / "run"
    assert main(["run-md", "--model", str(model), "--structure", str(structure), "--duration-ps", "0.2", *SHORT,
                 "--output", str(out), *extra]) == 0
    assert capsys.readouterr().out.startswith(f"thermocg run-md: 0.2 ps of lj at T120 in {out}")
    saved = assert_forces_are_the_models(out, model)
    assert saved.n_frames == 6 and np.array_equal(saved.time_fs, np.arange(6) * 40.0)
    np.testing.assert_array_equal(read_frames(out / "initial.h5md").positions, read.positions)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_steps"] == 50 and summary["blowup"] is None and summary["n_thermo_samples"] == 11
    resolved = yaml.safe_load((out / "resolved.yaml").read_text())
    assert resolved["run_md"]["engine"] == "thermocg" and resolved["config"]["temperature_K"] == 120.0
    assert len(resolved["run_md"]["structure_sha256"]) == 64


def test_bead_types_are_matched_by_name(model, tmp_path, capsys):
    frames = argon()
    gro = tmp_path / "x.gro"
    write_mdanalysis(frames, gro, name="XX")
    args = ["run-md", "--model", str(model), "--duration-ps", "0.04", *SHORT, "--mass", f"Ar={MASS}"]
    assert main(args + ["--structure", str(gro), "--output", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "bead type(s) ['XX'] (atom names) are unknown to the model, which knows ['Ar']" in err
    assert "--bead-type" in err
    assert main(args + ["--structure", str(gro), "--output", str(tmp_path / "b"), "--bead-type", "XX=Ar"]) == 0
    # a LAMMPS data file names its types by number, unless it has type labels or Masses comments
    data = tmp_path / "start.data"
    write_lammps_data(data, frames.positions[0], frames.box[0], frames.types, [MASS])
    assert main(args[:-2] + ["--structure", str(data), "--output", str(tmp_path / "c")]) == 2
    assert "bead type(s) ['1'] (LAMMPS atom types) are unknown" in capsys.readouterr().err
    text = data.read_text()
    data.write_text(text.replace("\nMasses\n", "\nAtom Type Labels\n\n1 Ar\n\nMasses\n"))
    assert read_structure(data, type_names=["Ar"]).metadata["bead_types_from"] == "LAMMPS type label"
    data.write_text(text.replace(f"1 {MASS:.8f}", f"1 {MASS:.8f} # Ar"))
    assert read_structure(data, type_names=["Ar"]).metadata["bead_types_from"] == "LAMMPS Masses comment"
    # a .gro has no masses: run-md asks for them, naming the option
    write_mdanalysis(frames, gro)
    assert main(args[:-2] + ["--structure", str(gro), "--output", str(tmp_path / "d")]) == 2
    assert "no mass for bead type(s) ['Ar'] (the file gives no masses); pass --mass Ar=AMU" in capsys.readouterr().err
    with pytest.raises(StructureError, match="--mass: Ar=-1"):
        run_md(model=model, structure=gro, temperature_K=120, duration_ps=0.04, mass=["Ar=-1"], output=tmp_path / "e")


# ---------------------------------------------------------------------------------------------- engines

@pytest.mark.parametrize("engine", ["thermocg", "openmm", "lammps"])
def test_each_engine_writes_the_study_files_in_the_structures_frame(engine, model, tmp_path):
    frames = argon(triclinic=True, rotate=True)
    structure = tmp_path / "start.h5md"
    write_frames(frames, structure, kind="cg")
    out = tmp_path / engine
    summary = run_md(model=model, structure=structure, temperature_K=120.0, duration_ps=0.4, timestep_fs=4.0,
                     save_interval_fs=40.0, thermo_interval_fs=20.0, engine=engine, output=out, seed=3,
                     progress=False)
    assert summary.blowup is None and summary.n_steps == 100 and summary.n_thermo_samples == 21
    saved = assert_forces_are_the_models(out, model)
    assert saved.n_frames == 11 and np.array_equal(H5MDDataset(out / "traj.h5md").steps(), np.arange(0, 101, 10))
    # frame 0 is the structure, in the structure's own (rotated, triclinic) frame
    same_periodic_positions(saved.positions[0], frames.positions[0], frames.box[0], atol=1e-9)
    basis_change = saved.box[0] @ np.linalg.inv(frames.box[0])  # the same lattice: an integer matrix, det +-1
    np.testing.assert_allclose(basis_change, np.round(basis_change), atol=1e-9)
    assert abs(np.linalg.det(np.round(basis_change))) == 1.0
    # the velocities' kinetic temperature is the thermo.csv temperature (2K / 3N k_B)
    thermo = np.genfromtxt(out / "thermo.csv", delimiter=",", names=True)
    assert len(thermo) == 21 and np.all((thermo["temperature_K"] > 30) & (thermo["temperature_K"] < 400))
    from helpers import kinetic_temperatures_K

    np.testing.assert_allclose(kinetic_temperatures_K(saved), thermo["temperature_K"][::2], rtol=1e-5)
    restart = np.load(out / "restart.npz")
    assert int(restart["step"]) == 100
    assert not any(p.name.endswith(".partial") for p in out.iterdir())


@pytest.mark.parametrize("engine", ["openmm", "lammps"])
def test_npt_moves_the_box(engine, model, tmp_path, capsys):
    structure = tmp_path / "start.extxyz"
    write_structure(argon(), structure)
    out = tmp_path / engine
    assert main(["run-md", "--model", str(model), "--structure", str(structure), "--duration-ps", "0.4", *SHORT,
                 "--engine", engine, "--pressure-bar", "500", "--output", str(out)]) == 0
    volumes = np.abs(np.linalg.det(saved_frames(out).box))
    assert len(np.unique(volumes)) > 1
    assert_forces_are_the_models(out, model)
    assert main(["run-md", "--model", str(model), "--structure", str(structure), "--duration-ps", "0.4", *SHORT,
                 "--pressure-bar", "1", "--output", str(tmp_path / "thermocg")]) == 2
    assert "--pressure-bar needs --engine openmm or lammps" in capsys.readouterr().err


def thermal_table() -> PairTableThermal:
    """A LJ-like table whose force grows by 1/500 K of itself per kelvin above 300 K, valid 250-350 K."""
    def force(r, a, b):
        return 24 * 0.238 / r * (2 * (3.4 / r) ** 12 - (3.4 / r) ** 6) * np.clip((7.5 - r) / 1.5, 0, 1) ** 2

    base = PairTable.from_force_function(["Ar"], force, cutoff_A=7.5, r_min_A=2.0, spacing_A=0.1, r_sampled_min_A=3.0)
    coefficients = base.coefficients.numpy()
    return PairTableThermal(["Ar"], cutoff_A=7.5, r_min_A=2.0, coefficients=coefficients,
                            temperature_coefficients=coefficients / 500.0, reference_temperature_K=300.0,
                            r_sampled_min_A=3.0, valid_temperature_range_K=(250.0, 350.0))


@pytest.mark.parametrize("engine", ["thermocg", "openmm", "lammps"])
def test_a_temperature_dependent_model_runs_at_the_thermostat_temperature(engine, tmp_path):
    model_path = save_potential(thermal_table(), tmp_path / "thermal.safetensors")
    structure = tmp_path / "start.h5md"
    write_frames(argon(), structure, kind="cg")
    run_md(model=model_path, structure=structure, temperature_K=330.0, duration_ps=0.04, timestep_fs=4.0,
           save_interval_fs=40.0, engine=engine, output=tmp_path / "run", progress=False)
    frames = saved_frames(tmp_path / "run")
    model = load_potential(model_path)
    for temperature, matches in ((330.0, True), (300.0, False)):
        _, forces = energy_and_forces(model.at_temperature(temperature), frames.positions, frames.box, frames.types)
        assert np.allclose(frames.forces, forces.numpy(), rtol=0, atol=1e-9 * np.abs(forces.numpy()).max()) == matches
    assert yaml.safe_load((tmp_path / "run" / "resolved.yaml").read_text())["run_md"]["model_temperature_K"] == 330.0


# ---------------------------------------------------------------------------------------------- continue, blow-up

def h5md_arrays(path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f["particles"].visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                                  else None)
    return out


def test_continue_thermocg_equals_one_run_and_refuses_other_inputs(model, tmp_path, capsys):
    structure = tmp_path / "start.extxyz"
    write_structure(argon(), structure)
    base = ["run-md", "--model", str(model), "--structure", str(structure), *SHORT, "--seed", "4"]
    assert main(base + ["--duration-ps", "0.44", "--output", str(tmp_path / "straight")]) == 0
    assert main(base + ["--duration-ps", "0.216", "--output", str(tmp_path / "split")]) == 0
    assert main(base + ["--duration-ps", "0.44", "--output", str(tmp_path / "split")]) == 2  # a run is there
    assert "--continue" in capsys.readouterr().err
    assert main(base + ["--duration-ps", "0.44", "--output", str(tmp_path / "split"), "--continue"]) == 0
    a, b = h5md_arrays(tmp_path / "straight" / "traj.h5md"), h5md_arrays(tmp_path / "split" / "traj.h5md")
    assert a.keys() == b.keys() and len(a["trajectory/position/step"]) == 12
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert (tmp_path / "straight" / "thermo.csv").read_bytes() == (tmp_path / "split" / "thermo.csv").read_bytes()
    # a continuation with another structure, engine or time step is refused, naming what differs
    other = tmp_path / "other.extxyz"
    write_structure(argon(seed=2), other)
    split = ["--duration-ps", "0.6", "--output", str(tmp_path / "split"), "--continue"]
    assert main(base[:4] + [str(other)] + base[5:] + split) == 2
    assert "not the structure the run" in capsys.readouterr().err
    assert main(base + split + ["--engine", "openmm"]) == 2
    assert "engine" in capsys.readouterr().err
    assert main(base[:-4] + ["--timestep-fs", "2"] + base[-2:] + split) == 2
    assert "--timestep-fs" in capsys.readouterr().err


@pytest.mark.parametrize("engine", ["openmm", "lammps"])
def test_continue_an_engine_run(engine, model, tmp_path):
    structure = tmp_path / "start.h5md"
    write_frames(argon(), structure, kind="cg")
    options = dict(model=model, structure=structure, temperature_K=120.0, timestep_fs=4.0, save_interval_fs=40.0,
                   thermo_interval_fs=20.0, engine=engine, output=tmp_path / "run", progress=False)
    first = run_md(duration_ps=0.216, **options)
    assert first.n_steps == 54
    restart = np.load(tmp_path / "run" / "restart.npz")
    summary = run_md(duration_ps=0.44, continue_run=True, **options)
    assert summary.start_step == 54 and summary.n_steps == 110 and summary.n_thermo_samples == 23
    steps = H5MDDataset(tmp_path / "run" / "traj.h5md").steps()
    assert np.array_equal(steps, np.arange(0, 111, 10))
    thermo = np.genfromtxt(tmp_path / "run" / "thermo.csv", delimiter=",", names=True)
    assert np.array_equal(thermo["step"], np.arange(0, 111, 5))
    frames = assert_forces_are_the_models(tmp_path / "run", model)
    # the continuation starts from the restart's state: frame 6 (step 60) is 6 steps (24 fs) on from it
    step = frames.positions[6] - restart["positions"]
    frac = step @ np.linalg.inv(frames.box[6])
    assert np.linalg.norm((frac - np.round(frac)) @ frames.box[6], axis=1).max() < 0.5


@pytest.mark.parametrize("engine", ["thermocg", "openmm", "lammps"])
def test_a_blown_up_run_exits_1_with_one_line(engine, model, tmp_path, capsys):
    structure = tmp_path / "start.h5md"
    write_frames(argon(), structure, kind="cg")
    out = tmp_path / "run"
    code = main(["run-md", "--model", str(model), "--structure", str(structure), "--temperature-K", "120",
                 "--duration-ps", "20", "--timestep-fs", "120", "--save-interval-fs", "1200", "--engine", engine,
                 "--output", str(out)])
    assert code == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("thermocg")]  # not the progress bar
    assert len(lines) == 1 and lines[0].startswith("thermocg run-md: lj at T120: simulation blew up at step")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["blowup"] and summary["n_steps"] < 167
    frames = saved_frames(out)
    assert np.all(np.isfinite(frames.positions)) and frames.n_frames == summary["n_steps"] // 10 + 1
    assert int(np.load(out / "restart.npz")["step"]) == summary["n_steps"]


def test_the_output_directory_is_locked(model, tmp_path, capsys):
    structure = tmp_path / "start.h5md"
    write_frames(argon(), structure, kind="cg")
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".thermocg.lock", "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["run-md", "--model", str(model), "--structure", str(structure), "--duration-ps", "0.04",
                     *SHORT, "--output", str(out)]) == 2
    assert "in use by" in capsys.readouterr().err
    assert not (out / "traj.h5md").exists()


def test_docs_cli_examples_run(tmp_path, monkeypatch):
    """The Python block and every `thermocg` command of docs/cli.md, in order, in a fresh directory."""
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        exec(compile(block, "docs/cli.md", "exec"), namespace)  # noqa: S102 - our own documentation
    commands = [line for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
                for line in block.replace("\\\n", " ").splitlines() if line.startswith("thermocg ")]
    assert len(commands) == 6
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0, command
    summary = json.loads((tmp_path / "openmm_vs_thermocg" / "summary.json").read_text())
    assert summary["comparison"]["rdf_error"] < 0.2
    assert json.loads((tmp_path / "run_thermocg" / "summary.json").read_text())["n_steps"] == 1000
