"""Fault injection (issue 11): damaged files, garbage coordinates, the wrong kind of file, colliding
state labels, densities that cannot be built or that contradict the data, float32 times, junk input.
Each test injects the fault and checks the message names the file (frame, particle, state) and that
nothing was written."""

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from helpers import lj_fluid
from thermocg.config import Config, ConfigError, ImportConfig, StateConfig, from_dict, load_config
from thermocg.dataset import DatasetError, H5MDDataset, read_frames, write_frames
from thermocg.frames import POSITION_RANGE_BOXES, Frames, StatePoint

STATE = StatePoint(300.0, density_g_cm3=0.5)
LABEL = STATE.label


def cg_frames(rng, n_frames=12, *, kind_types=("A", "B")) -> Frames:
    """A small CG dataset: 27 beads of two types in a 15 A box, with forces."""
    pos, box = lj_fluid(27, 0.008, rng=rng)
    positions = pos[None] + rng.normal(scale=0.2, size=(n_frames, 27, 3))
    return Frames(positions=positions, box=box, forces=rng.normal(size=(n_frames, 27, 3)),
                  types=np.arange(27) % 2, type_names=kind_types, masses=np.full(27, 32.0),
                  time_fs=np.arange(n_frames) * 100.0, state=STATE)


def cg_run(tmp_path, frames: Frames, *, kind: str = "cg") -> tuple[Config, Path, Path]:
    """A run directory holding RUN_DIR/cg/<label>.h5md, and a config for it."""
    run = tmp_path / "run"
    path = write_frames(frames, run / "cg" / f"{LABEL}.h5md", kind=kind)
    config = from_dict(Config, {"run_dir": str(run), "states": [STATE.to_dict()],
                                "pair": {"cutoff_A": 6.0, "r_min_A": 1.0, "progress": False}})
    return config, run, path


def outputs(run: Path) -> set[str]:
    """Every file of a run directory but its inputs (the cg/ datasets)."""
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and p.parent.name != "cg"}


# ------------------------------------------------------------------------------ HDF5 checksums

def chunk_location(path, dataset: str, frame: int) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info_by_coord((frame,) + (0,) * (f[dataset].ndim - 1))
        return info.byte_offset, info.size


def flip_bytes(path, offset: int, n: int = 4) -> None:
    raw = bytearray(Path(path).read_bytes())
    for k in range(n):
        raw[offset + k] ^= 0x5A
    Path(path).write_bytes(bytes(raw))


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_a_flipped_byte_in_a_frame_is_an_error_naming_file_and_frame(tmp_path, rng, capfd, compression):
    from thermocg.dataset import H5MDWriter

    frames = cg_frames(rng)
    path = tmp_path / "cg.h5md"
    with H5MDWriter(path, types=frames.types, type_names=frames.type_names, masses=frames.masses, kind="cg",
                    state=STATE, compression=compression) as writer:
        writer.append(frames.positions, frames.box, forces=frames.forces, time_fs=frames.time_fs)
    # every dataset of the file carries a Fletcher-32 checksum
    with h5py.File(path, "r") as f:
        datasets = []
        f.visititems(lambda name, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset) else None)
        assert len(datasets) >= 10 and all(d.fletcher32 for d in datasets), [d.name for d in datasets]
    offset, size = chunk_location(path, "particles/trajectory/position/value", 7)
    flip_bytes(path, offset + size // 2)
    with H5MDDataset(path) as ds:
        np.testing.assert_array_equal(ds.read(slice(0, 7)).positions, frames.positions[:7])  # intact frames read
        with pytest.raises(DatasetError, match=r"cg\.h5md: cannot read frame 7: the file is damaged"):
            ds.read(7)
        with pytest.raises(DatasetError, match=r"cg\.h5md: cannot read frame 7: the file is damaged"):
            list(ds.iter_blocks(4))
    assert capfd.readouterr().err == ""  # no HDF5 error stack printed besides


def test_a_flipped_byte_in_the_metadata_is_an_error(tmp_path, rng):
    frames = cg_frames(rng)
    path = write_frames(dataclasses_replace(frames, metadata={"source": "zqzqzqzq-marker"}), tmp_path / "m.h5md",
                        kind="cg")
    raw = Path(path).read_bytes()
    flip_bytes(path, raw.index(b"zqzqzqzq-marker"), n=1)
    with pytest.raises(DatasetError, match=r"m\.h5md: cannot read its layout or metadata: the file is damaged"):
        read_frames(path)


def dataclasses_replace(frames, **changes):
    import dataclasses

    return dataclasses.replace(frames, **changes)


# ------------------------------------------------------------------------ positions in range

def with_garbage(frames: Frames, frame: int, particle: int, value: float = 1e30) -> Frames:
    positions = frames.positions.copy()
    positions[frame, particle, 1] = value
    return dataclasses_replace(frames, positions=positions)


def test_a_coordinate_of_1e30_is_refused_by_every_reader(tmp_path, rng):
    from thermocg.analysis.rdf import run_rdf
    from thermocg.mscg import run_fit_pair
    from thermocg.train import run_train

    config, run, path = cg_run(tmp_path, with_garbage(cg_frames(rng), 9, 5))
    message = (rf"{LABEL}\.h5md: frame 9, particle 5: position \(.*, 1e\+30, .*\) A lies 6\.67e\+28 box lengths "
               "outside the box")
    for stage in (lambda: run_rdf(config, run, progress=False), lambda: run_fit_pair(config, run),
                  lambda: run_train(config, run)):
        with pytest.raises(DatasetError, match=message):
            stage()
    assert outputs(run) == set()  # no RDF, no model, nothing half-written
    # the Python API's entry checks: training on frames in memory
    from thermocg.train.data import TrainError, prepare_states

    with pytest.raises(TrainError, match=r"state T300_rho0\.5: frame 9, particle 5: position"):
        prepare_states([with_garbage(cg_frames(rng), 9, 5)], config.train)


def test_unwrapped_positions_are_legal(tmp_path, rng):
    frames = cg_frames(rng)
    length = frames.box[0, 0, 0]
    far = with_garbage(frames, 3, 2, value=-0.9 * POSITION_RANGE_BOXES * length)  # far, but within the range
    np.testing.assert_array_equal(read_frames(write_frames(far, tmp_path / "u.h5md", kind="cg")).positions,
                                  far.positions)
    beyond = with_garbage(frames, 3, 2, value=-1.01 * POSITION_RANGE_BOXES * length)
    with pytest.raises(DatasetError, match="frame 3, particle 2"):
        read_frames(write_frames(beyond, tmp_path / "b.h5md", kind="cg"))


def test_nan_is_reported_at_its_frame_in_the_file(tmp_path, rng):
    from thermocg.mscg import run_fit_pair

    config, run, path = cg_run(tmp_path, cg_frames(rng, n_frames=40))
    with h5py.File(path, "r+") as f:  # (Frames refuse NaN in memory: inject it into the file)
        f["particles/trajectory/force/value"][33, 4, 0] = np.nan
    config.pair.block_frames = 8  # the frame falls in the fifth block, at index 1 of it
    with pytest.raises(DatasetError, match=r"forces hold NaN or inf \(frame 33, particle 4\)"):
        run_fit_pair(config, run)
    with H5MDDataset(path) as ds, pytest.raises(DatasetError, match=r"\(frame 33, particle 4\)"):
        ds.read(np.arange(30, 40, 3))


# ------------------------------------------------------------------- the kind of the file

def test_an_allatom_trajectory_is_refused_where_a_cg_dataset_is_expected(tmp_path, rng):
    from thermocg.analysis.rdf import run_rdf
    from thermocg.md import run_simulate
    from thermocg.mscg import run_fit_pair
    from thermocg.potentials.base import save_potential
    from thermocg.potentials.lj import LennardJones
    from thermocg.train import run_train

    config, run, path = cg_run(tmp_path, cg_frames(rng, kind_types=("CH3", "O")), kind="allatom")
    model = save_potential(LennardJones(["CH3", "O"], epsilon_kcal_mol=0.2, sigma_A=3.4, cutoff_A=6.0),
                           tmp_path / "lj" / "model.safetensors")
    message = (rf"{LABEL}\.h5md: an all-atom trajectory \(27 particles, types \['CH3', 'O'\]\), where a CG dataset is "
               r"expected; map all-atom data to beads first")
    stages = {"rdf": lambda: run_rdf(config, run, progress=False), "fit-pair": lambda: run_fit_pair(config, run),
              "train": lambda: run_train(config, run),
              "simulate": lambda: run_simulate(config, run, model=model, progress=False)}
    for name, stage in stages.items():
        with pytest.raises(DatasetError, match=message):
            stage()
    assert outputs(run) == set()
    # and the other way round: mapping wants an all-atom trajectory
    from thermocg.mapping import map_trajectory

    cg_path = write_frames(cg_frames(rng), tmp_path / "cg.h5md", kind="cg")
    with pytest.raises(DatasetError, match="a CG bead dataset, where an all-atom trajectory is expected"):
        map_trajectory(cg_path, None, None, tmp_path / "out.h5md")
    assert not (tmp_path / "out.h5md").exists()


# ------------------------------------------------------------------------- state labels

def test_state_points_whose_labels_collide_are_refused_naming_both(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"states": [{"temperature_K": 300.0, "density_g_cm3": 0.786},
                                               {"temperature_K": 300.0001, "density_g_cm3": 0.786}]}))
    with pytest.raises(ConfigError, match=(
            r"study\.yaml: states\[0\] \(temperature_K 300\.0, density_g_cm3 0\.786\) and states\[1\] "
            r"\(temperature_K 300\.0001, density_g_cm3 0\.786\) have the same label T300_rho0\.786")):
        load_config(path)
    # a grid point against an explicit state, and an import against a generated state
    with pytest.raises(ConfigError, match=r"states\[0\] .* and state_grid \(temperature_K 300\.00001"):
        from_dict(Config, {"states": [{"temperature_K": 300.0, "pressure_bar": 1.0}],
                           "state_grid": {"temperature_K": [300.00001, 350.0], "pressure_bar": [1.0]}})
    with pytest.raises(ConfigError, match=r"states\[0\] .* and imports\[0\]\.state \(a\.xyz\) .* same label"):
        from_dict(Config, {"states": [{"temperature_K": 300.0, "density_g_cm3": 0.786}],
                           "imports": [{"path": "a.xyz", "format": "extxyz",
                                        "state": {"temperature_K": 300.0, "density_g_cm3": 0.7860001}}]})
    with pytest.raises(ConfigError, match=r"imports\[0\]\.state \(a\.xyz\) and imports\[1\]\.state \(b\.xyz\): the "
                                          r"state point T300_rho0\.786 is imported twice"):
        from_dict(Config, {"imports": [{"path": p, "format": "extxyz",
                                        "state": {"temperature_K": 300.0, "density_g_cm3": 0.786}}
                                       for p in ("a.xyz", "b.xyz")]})
    # the same values twice are one state point; an import may supply a generated state point
    config = from_dict(Config, {"states": [{"temperature_K": 300.0, "density_g_cm3": 0.786}] * 2,
                                "imports": [{"path": "a.xyz", "format": "extxyz",
                                             "state": {"temperature_K": 300.0, "density_g_cm3": 0.786}}]})
    assert [s.to_state().label for s in config.state_points()] == ["T300_rho0.786"]
    # a temperature alone is for imports only
    with pytest.raises(ConfigError, match=r"states\[0\]: give density_g_cm3 or pressure_bar"):
        from_dict(Config, {"states": [{"temperature_K": 300.0}]})


# ------------------------------------------------------------- import densities and states

def methanol_extxyz(path, rng, *, n_molecules=8, density_g_cm3=0.786, n_frames=3, box_scale=None):
    """An extxyz of TraPPE methanol molecules (3 sites) at a known box density, with forces."""
    import ase
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    masses = np.tile([15.035, 15.999, 1.008], n_molecules)
    volume = masses.sum() / 0.602214076 / density_g_cm3  # A^3
    lengths = volume ** (1 / 3) * np.ones(n_frames) if box_scale is None else volume ** (1 / 3) * np.asarray(box_scale)
    images = []
    for f in range(n_frames):
        atoms = ase.Atoms(symbols=["C", "O", "H"] * n_molecules,
                          positions=rng.uniform(0, lengths[f], (3 * n_molecules, 3)), cell=np.eye(3) * lengths[f],
                          pbc=True, masses=masses)
        atoms.arrays["mol_id"] = np.repeat(np.arange(n_molecules), 3)
        atoms.calc = SinglePointCalculator(atoms, forces=rng.normal(size=(3 * n_molecules, 3)))
        images.append(atoms)
    ase.io.write(path, images, format="extxyz")
    return path


def test_import_density_declared_wrong_is_warned_and_a_temperature_alone_takes_the_data(tmp_path, rng):
    from thermocg.allatom.readers import ImportDensityWarning, peek_import, run_import

    path = methanol_extxyz(tmp_path / "meoh.extxyz", rng)
    wrong = ImportConfig(path=str(path), format="extxyz", molecule="methanol_trappe",
                         state=StateConfig(temperature_K=300.0, density_g_cm3=0.5))
    with pytest.warns(ImportDensityWarning, match=r"meoh\.extxyz: the state declares density_g_cm3 = 0\.5, but its "
                                                  r"boxes hold 0\.786 g/cm\^3 \(-36\.4 %\); the frames are labelled "
                                                  r"T300_rho0\.5 as declared"):
        run_import(Config(imports=[wrong]), tmp_path / "wrong")
    # within 2 %: no warning
    close = ImportConfig(path=str(path), format="extxyz", molecule="methanol_trappe",
                         state=StateConfig(temperature_K=300.0, density_g_cm3=0.79))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImportDensityWarning)
        run_import(Config(imports=[close]), tmp_path / "close")
    # a temperature alone: the density comes from the data (first frame, 4 significant digits)
    peek = peek_import(close)
    assert peek.n_molecules == 8 and peek.n_atoms == 24 and peek.density_g_cm3 == pytest.approx(0.786, rel=1e-9)
    assert peek.box_A.shape == (3, 3) and peek.molecule_counts == {"methanol_trappe": 8}
    alone = ImportConfig(path=str(path), format="extxyz", molecule="methanol_trappe",
                         state=StateConfig(temperature_K=300.0))
    config = Config(imports=[alone])
    with pytest.raises(ConfigError, match="no density or pressure"):
        alone.state.to_state()  # (not before the data have been read)
    [out] = run_import(config, tmp_path / "alone")
    assert out.parent.name == "T300_rho0.786" and alone.state.density_g_cm3 == 0.786
    meta = json.loads((out.parent / "metadata.json").read_text())
    assert meta["density_source"] == "first frame of the data"
    assert meta["box_density_g_cm3"]["mean"] == pytest.approx(0.786, rel=1e-9)
    assert read_frames(out).state == StatePoint(300.0, density_g_cm3=0.786)


def test_metadata_records_the_sha256_of_every_source_file(tmp_path, rng):
    from thermocg import provenance
    from thermocg.allatom.readers import run_import

    molecule_yaml = tmp_path / "my_methanol.yaml"
    molecule_yaml.write_text(yaml.safe_dump({"name": "my_methanol", "sites": [
        {"name": name, "mass_amu": mass, "charge_e": 0.0, "sigma_A": sigma, "epsilon_kcal_mol": 0.1,
         "position_A": [1.4 * k, 0.0, 0.0]}
        for k, (name, mass, sigma) in enumerate((("CH3", 15.035, 3.75), ("O", 15.999, 3.02), ("H", 1.008, 0.0)))]}))
    path = methanol_extxyz(tmp_path / "meoh.extxyz", rng)
    item = ImportConfig(path=str(path), format="extxyz", molecule=str(molecule_yaml),
                        state=StateConfig(temperature_K=300.0, density_g_cm3=0.786))
    [out] = run_import(Config(imports=[item]), tmp_path / "run")
    inputs = json.loads((out.parent / "metadata.json").read_text())["provenance"]["inputs"]
    assert inputs == {str(path): provenance.file_sha256(path),
                      str(molecule_yaml): provenance.file_sha256(molecule_yaml)}


def test_import_positions_far_outside_the_box_name_the_frame_and_atom(tmp_path, rng):
    import ase.io

    from thermocg.allatom.readers import TrajectoryImportError, read_trajectory

    path = methanol_extxyz(tmp_path / "meoh.extxyz", rng)
    images = ase.io.read(path, index=":")
    positions = images[2].get_positions()
    positions[17, 0] = 1e30
    images[2].set_positions(positions)
    ase.io.write(path, images, format="extxyz")
    with pytest.raises(TrajectoryImportError, match=r"meoh\.extxyz: frame 2, atom 17: position \(1e\+30, .*\) A lies"):
        read_trajectory(path, "extxyz", molecule="methanol_trappe")


# ------------------------------------------------------------------------ absurd densities

def test_a_density_that_cannot_be_built_is_refused_before_building(tmp_path):
    from thermocg.allatom.build import (
        BuildError,
        build_box,
        max_density_g_cm3,
        molecule_volume_A3,
        packing_fraction,
    )
    from thermocg.allatom.molecules import get_molecule
    from thermocg.allatom.runner import run_generate

    # the molecular volume against known answers: one sphere (SPC/E's oxygen; hydrogens have sigma 0),
    # and two overlapping spheres (TraPPE methanol's CH3 and O 1.43 A apart; H has sigma 0)
    water, methanol = get_molecule("water_spce"), get_molecule("methanol_trappe")
    r_o = water.sites[0].sigma_A / 2
    assert molecule_volume_A3(water) == pytest.approx(4 / 3 * math.pi * r_o**3, rel=5e-3)
    r1, r2 = (s.sigma_A / 2 for s in methanol.sites[:2])
    d = np.linalg.norm(np.subtract(methanol.sites[0].position_A, methanol.sites[1].position_A))
    lens = math.pi * (r1 + r2 - d) ** 2 * (d * d + 2 * d * (r1 + r2) - 3 * (r1 - r2) ** 2) / (12 * d)
    assert molecule_volume_A3(methanol) == pytest.approx(4 / 3 * math.pi * (r1**3 + r2**3) - lens, rel=5e-3)
    assert 0.45 < packing_fraction(methanol, 0.786) < 0.55  # a liquid
    assert max_density_g_cm3(methanol) == pytest.approx(0.786 / packing_fraction(methanol, 0.786), rel=1e-9)
    with pytest.raises(BuildError, match="cannot be built"):
        build_box(methanol, 8, 10.0, rng=np.random.default_rng(0))
    config = from_dict(Config, {"system": {"n_molecules": 8},
                                "states": [{"temperature_K": 300.0, "density_g_cm3": 0.786},
                                           {"temperature_K": 300.0, "density_g_cm3": 10.0}]})
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"state T300_rho10: density_g_cm3 = 10 cannot be built for methanol_trappe: "
                                          r".* would fill 6\.41 times the box .* the largest density that can be "
                                          r"built is 1\.56 g/cm\^3"):
        run_generate(config, run, progress=False)
    assert not run.exists()  # refused before the first state was built


# ------------------------------------------------------------------------ GROMACS times

def test_trr_float32_times_are_restored(tmp_path):
    from MDAnalysis.lib.formats.libmdaxdr import TRRFile

    from thermocg.allatom.readers import read_trajectory
    from thermocg.analysis.msd import MSD

    n_molecules, n_frames = 4, 40
    steps = np.arange(n_frames) * 1234 + 50000  # dt 0.002 ps from t_init 100.1 ps: not float32 numbers
    true_ps = np.array([float(f"{100.1 + s * 0.002:.12g}") for s in steps])
    rng = np.random.default_rng(1)
    gro = tmp_path / "conf.gro"
    lines = ["methanol", str(3 * n_molecules)]
    for m in range(n_molecules):
        for k, name in enumerate(("CH3", "O", "H")):
            lines.append(f"{m + 1:5d}{'MOH':<5}{name:>5}{3 * m + k + 1:5d}{0.1 * m:8.3f}{0.1 * k:8.3f}{0.0:8.3f}")
    lines.append("   2.00000   2.00000   2.00000")
    gro.write_text("\n".join(lines) + "\n")
    trr = tmp_path / "traj.trr"
    with TRRFile(str(trr), "w") as f:
        for k in range(n_frames):
            xyz = rng.uniform(0, 2.0, (3 * n_molecules, 3)).astype(np.float32)
            f.write(xyz, xyz * 0, rng.normal(size=xyz.shape).astype(np.float32), np.eye(3, dtype=np.float32) * 2.0,
                    int(steps[k]), float(true_ps[k]), 0.0, 3 * n_molecules)
    with TRRFile(str(trr)) as f:
        raw = np.array([frame.time for frame in f], dtype=np.float64)
    assert np.abs(raw - true_ps).max() > 5e-6  # the file's float32 times are off (up to one float32 step)
    assert not np.allclose(np.diff(raw), np.diff(raw)[0], rtol=1e-6, atol=1e-9)
    frames, _ = read_trajectory(trr, "gromacs", topology=gro, molecule="methanol_trappe")
    np.testing.assert_array_equal(frames.time_fs, true_ps * 1000.0)
    MSD(frames).run()  # evenly spaced: the MSD accepts them (it refused the raw float32 times)


def test_a_lammps_dump_cut_off_in_its_last_frame_is_said_so(tmp_path):
    from thermocg.allatom.readers import TrajectoryImportWarning, read_trajectory

    data = tmp_path / "system.data"
    data.write_text("LAMMPS data\n\n6 atoms\n3 atom types\n\n0 20 xlo xhi\n0 20 ylo yhi\n0 20 zlo zhi\n\nMasses\n\n"
                    "1 15.035\n2 15.999\n3 1.008\n\nAtoms # full\n\n"
                    + "".join(f"{a + 1} {a // 3 + 1} {a % 3 + 1} 0.0 {2.0 * a} 1.0 1.0\n" for a in range(6)))
    frames = [f"ITEM: TIMESTEP\n{10 * f}\nITEM: NUMBER OF ATOMS\n6\nITEM: BOX BOUNDS pp pp pp\n0 20\n0 20\n0 20\n"
              "ITEM: ATOMS id mol type x y z fx fy fz\n"
              + "".join(f"{a + 1} {a // 3 + 1} {a % 3 + 1} {2.0 * a + 0.1 * f} 1.0 1.0 0.1 0.2 0.3\n" for a in range(6))
              for f in range(4)]
    dump = tmp_path / "cut.lammpstrj"
    dump.write_text("".join(frames)[:-50])
    with pytest.warns(TrajectoryImportWarning, match=r"cut\.lammpstrj: 4 frame headers but 3 complete frames"):
        cut, _ = read_trajectory(dump, "lammps", topology=data, lammps_units="real", molecule="methanol_trappe")
    assert cut.n_frames == 3
    dump.write_text("".join(frames))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrajectoryImportWarning)
        assert read_trajectory(dump, "lammps", topology=data, lammps_units="real",
                               molecule="methanol_trappe")[0].n_frames == 4


# ------------------------------------------------------------------------------ junk input

def test_empty_and_junk_extxyz_name_the_file(tmp_path):
    from thermocg.allatom.readers import TrajectoryImportError, read_trajectory

    (tmp_path / "empty.extxyz").write_text("")
    (tmp_path / "blank.extxyz").write_text("\n\n")
    (tmp_path / "junk.extxyz").write_text("hello world\nthis is not xyz\n")
    for name in ("empty", "blank"):
        with pytest.raises(TrajectoryImportError, match=rf"{name}\.extxyz: no frames \(the file is empty or blank\)"):
            read_trajectory(tmp_path / f"{name}.extxyz", "extxyz", molecule="methanol_trappe")
    with pytest.raises(TrajectoryImportError, match=r"junk\.extxyz: not a readable extxyz file \(Expected xyz header "
                                                    r"but got: invalid literal") as info:
        read_trajectory(tmp_path / "junk.extxyz", "extxyz", molecule="methanol_trappe")
    assert "StopIteration" not in str(info.value) and "ase.io" not in str(info.value)


GRO = ("t\n3\n    1MOH    CH3    1   0.000   0.000   0.000\n    1MOH      O    2   0.140   0.000   0.000\n"
       "    1MOH      H    3   0.180   0.050   0.000\n   2.0 2.0 2.0\n")


def test_junk_trr_and_gro_give_one_line_and_no_stray_traceback(tmp_path):
    """Through the command line in a fresh interpreter: stderr holds our one-line error and nothing else
    (MDAnalysis printed "Exception ignored in ... TRRReader.__del__" at exit; a junk .gro gave a
    traceback of a bare StopIteration)."""
    good_trr = write_trr(tmp_path / "good.trr", n_atoms=3, n_frames=2)
    cases = {"junk.trr": (b"\x00\x01garbage" * 100, GRO, "junk.trr: not a GROMACS .trr file"),
             "empty.trr": (b"", GRO, "empty.trr: empty file"),
             "good.trr": (None, "not a gro file\n", "conf.gro: not a readable topology for")}
    for name, (content, gro_text, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        gro = tmp_path / "conf.gro"
        gro.write_text(gro_text)
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({"imports": [{
            "path": str(tmp_path / name), "format": "gromacs", "topology": str(gro), "molecule": "methanol_trappe",
            "state": {"temperature_K": 300.0, "density_g_cm3": 0.786}}]}))
        result = subprocess.run([sys.executable, "-m", "thermocg", "import", str(config), "--run-dir",
                                 str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("thermocg import: error: ") and message in lines[0], result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
    assert good_trr.exists()
    assert not (tmp_path / "run" / "allatom").exists() or not any((tmp_path / "run" / "allatom").iterdir())


def write_trr(path, *, n_atoms: int, n_frames: int):
    """A .trr with forces (MDAnalysis's writer), in a 20 A box."""
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    rng = np.random.default_rng(1)
    u = mda.Universe.empty(n_atoms, trajectory=False)
    u.load_new(rng.uniform(0, 20.0, (n_frames, n_atoms, 3)), format=MemoryReader,
               forces=rng.normal(size=(n_frames, n_atoms, 3)),
               dimensions=np.array([[20.0, 20.0, 20.0, 90.0, 90.0, 90.0]] * n_frames))
    with mda.Writer(str(path), n_atoms=n_atoms) as writer:
        for _ in u.trajectory:
            writer.write(u.atoms)
    return path


def test_a_trr_cut_off_in_its_last_frame_is_imported_without_it_and_said_so(tmp_path):
    from thermocg.allatom.readers import TrajectoryImportError, TrajectoryImportWarning, read_trajectory

    trr = write_trr(tmp_path / "cut.trr", n_atoms=3, n_frames=4)
    (tmp_path / "conf.gro").write_text(GRO)
    whole, _ = read_trajectory(trr, "gromacs", topology=tmp_path / "conf.gro", molecule="methanol_trappe")
    raw = trr.read_bytes()
    trr.write_bytes(raw[: len(raw) - len(raw) // 8])  # half of the last frame
    with pytest.warns(TrajectoryImportWarning, match=r"cut\.trr: the last frame \(frame 3\) is cut off.* importing "
                                                     r"the 3 complete frames"):
        cut, _ = read_trajectory(trr, "gromacs", topology=tmp_path / "conf.gro", molecule="methanol_trappe")
    np.testing.assert_array_equal(cut.positions, whole.positions[:3])
    # a frame damaged in the middle is an error, not three frames quietly
    frame_bytes = len(raw) // 4
    trr.write_bytes(raw[:frame_bytes] + b"\xff" * 40 + raw[frame_bytes + 40:])
    with pytest.raises(TrajectoryImportError, match=r"cut\.trr: not a readable TRR trajectory"):
        read_trajectory(trr, "gromacs", topology=tmp_path / "conf.gro", molecule="methanol_trappe")
