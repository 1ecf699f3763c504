"""Readers: round trips through files written by MDAnalysis, ASE (and a LAMMPS dump checked against
ASE's reader), with units converted; bad input; the import stage."""

import json

import numpy as np
import pytest

from thermocg import units
from thermocg.allatom.readers import TrajectoryImportError, iter_trajectory, read_trajectory, run_import
from thermocg.frames import StatePoint

N_MOL = 4
SITES = ["CH3", "O", "H"]
MASSES = np.array([15.035, 15.999, 1.008])
BOX = np.array([[20.0, 0.0, 0.0], [3.0, 19.0, 0.0], [-2.0, 2.5, 18.0]])  # LAMMPS-style triclinic
STATE = StatePoint(298.0, density_g_cm3=0.79)


@pytest.fixture
def system(rng):
    """Known arrays in internal units: 3 frames of 4 three-site molecules (positions inside the box)."""
    n_frames, n_atoms = 3, 3 * N_MOL
    frac = rng.uniform(0.05, 0.95, size=(n_frames, n_atoms, 3))
    return {
        "positions": frac @ BOX,
        "forces": rng.normal(scale=5.0, size=(n_frames, n_atoms, 3)),  # kcal/mol/A
        "velocities": rng.normal(scale=0.005, size=(n_frames, n_atoms, 3)),  # A/fs
        "masses": np.tile(MASSES, N_MOL),
        "molecule_ids": np.repeat(np.arange(N_MOL), 3),
    }


# ---------------------------------------------------------------------------------------- extxyz

def write_extxyz(path, system, *, forces=True, box=True, molecule_ids=True):
    import ase
    import ase.io
    from ase import units as ase_units
    from ase.calculators.singlepoint import SinglePointCalculator

    images = []
    n = system["positions"].shape[1]
    for f in range(len(system["positions"])):
        atoms = ase.Atoms(symbols=(["C", "O", "H"] * N_MOL)[:n], positions=system["positions"][f],
                          cell=BOX if box else None, pbc=box, masses=system["masses"])
        atoms.set_velocities(system["velocities"][f] / ase_units.fs)
        if molecule_ids:
            atoms.arrays["mol_id"] = system["molecule_ids"]
            atoms.arrays["atom_names"] = np.array(SITES * N_MOL)
        atoms.info["molecule"] = "methanol"
        if forces:
            atoms.calc = SinglePointCalculator(atoms, forces=system["forces"][f] / units.EV_TO_KCAL_MOL, energy=0.0)
        images.append(atoms)
    ase.io.write(path, images, format="extxyz")
    return path


def test_extxyz_round_trip(tmp_path, system):
    path = write_extxyz(tmp_path / "traj.extxyz", system)
    frames, topo = read_trajectory(path, "extxyz", state=STATE)
    np.testing.assert_allclose(frames.positions, system["positions"], atol=1e-7)
    np.testing.assert_allclose(frames.forces, system["forces"], rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(frames.velocities, system["velocities"], rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(frames.box, np.broadcast_to(BOX, (3, 3, 3)), atol=1e-9)
    np.testing.assert_allclose(frames.masses, system["masses"])
    assert topo.atom_names == SITES * N_MOL
    assert topo.molecule_names == ["methanol"] * N_MOL
    np.testing.assert_array_equal(topo.molecule_ids, system["molecule_ids"])
    assert frames.state == STATE


def test_blocks_of_frames_are_the_same_frames(tmp_path, system):
    path = write_extxyz(tmp_path / "traj.extxyz", system)
    whole, _ = read_trajectory(path, "extxyz")
    topo, blocks = iter_trajectory(path, "extxyz", block_size=2)
    parts = list(blocks)
    assert [p.n_frames for p in parts] == [2, 1]
    np.testing.assert_array_equal(np.concatenate([p.forces for p in parts]), whole.forces)
    np.testing.assert_array_equal(np.concatenate([p.time_fs for p in parts]), whole.time_fs)
    # a NaN in a later block is found when the iterator gets there, with its frame number
    bad = dict(system, forces=system["forces"].copy())
    bad["forces"][2, 7, 0] = np.inf
    _, blocks = iter_trajectory(write_extxyz(tmp_path / "late.extxyz", bad), "extxyz", block_size=2)
    next(blocks)
    with pytest.raises(TrajectoryImportError, match=r"late.extxyz: forces hold NaN or inf \(frame 2, atom 7\)"):
        next(blocks)


def test_extxyz_bad_input(tmp_path, system):
    with pytest.raises(TrajectoryImportError, match="nof.extxyz: the trajectory has no forces"):
        read_trajectory(write_extxyz(tmp_path / "nof.extxyz", system, forces=False), "extxyz")
    with pytest.raises(TrajectoryImportError, match="nobox.extxyz: the box .* is missing"):
        read_trajectory(write_extxyz(tmp_path / "nobox.extxyz", system, box=False), "extxyz")
    with pytest.raises(TrajectoryImportError, match="nomol.extxyz: the files do not say which atoms form molecules"):
        read_trajectory(write_extxyz(tmp_path / "nomol.extxyz", system, molecule_ids=False), "extxyz")
    bad = dict(system, positions=system["positions"].copy())
    bad["positions"][1, 5, 2] = np.nan
    with pytest.raises(TrajectoryImportError, match=r"nan.extxyz: positions hold NaN or inf \(frame 1, atom 5\)"):
        read_trajectory(write_extxyz(tmp_path / "nan.extxyz", bad), "extxyz")
    with pytest.raises(TrajectoryImportError, match="missing.extxyz: no such trajectory file"):
        read_trajectory(tmp_path / "missing.extxyz", "extxyz")
    with pytest.raises(TrajectoryImportError, match="unknown format"):
        read_trajectory(tmp_path / "nan.extxyz", "pdb")


# ---------------------------------------------------------------------------------------- GROMACS

def write_gromacs(tmp_path, system, *, forces=True, n_atoms_gro=None):
    """A .gro (MDAnalysis GROWriter) and a .trr (MDAnalysis TRRWriter, which writes nm, kJ/mol/nm)."""
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader
    from MDAnalysis.lib.mdamath import triclinic_box

    n = n_atoms_gro or len(system["masses"])
    u = mda.Universe.empty(n, n_residues=n // 3, atom_resindex=np.repeat(np.arange(n // 3), 3), trajectory=False)
    u.add_TopologyAttr("names", (SITES * N_MOL)[:n] if n <= 3 * N_MOL else ["X"] * n)
    u.add_TopologyAttr("resnames", ["MOH"] * (n // 3))
    u.add_TopologyAttr("resids", np.arange(1, n // 3 + 1))
    dims = np.array([triclinic_box(*BOX)] * 3)
    pos = system["positions"][:, :n]
    kwargs = {"forces": system["forces"][:, :n] * units.KCAL_TO_KJ} if forces else {}  # MDAnalysis: kJ/mol/A
    u.load_new(pos, format=MemoryReader, dimensions=dims, velocities=system["velocities"][:, :n] * 1e3,  # A/ps
               **kwargs)
    gro = tmp_path / "conf.gro"
    u.atoms.write(str(gro))
    trr = tmp_path / "traj.trr"
    with mda.Writer(str(trr), n_atoms=n) as w:
        for _ in u.trajectory:
            w.write(u.atoms)
    return gro, trr


def test_gromacs_round_trip(tmp_path, system):
    gro, trr = write_gromacs(tmp_path, system)
    frames, topo = read_trajectory(trr, "gromacs", topology=gro, molecule="methanol_trappe", state=STATE)
    # the TRR stores single precision in nm: relative 1e-6
    np.testing.assert_allclose(frames.positions, system["positions"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(frames.forces, system["forces"], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(frames.velocities, system["velocities"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(frames.box[0], BOX, atol=1e-4)
    assert topo.n_atoms == 3 * N_MOL
    np.testing.assert_array_equal(topo.molecule_ids, system["molecule_ids"])
    np.testing.assert_allclose(frames.masses, system["masses"], rtol=1e-3)
    # the raw file holds nm and kJ/mol/nm: check the conversion against the TRR's own numbers
    from MDAnalysis.lib.formats.libmdaxdr import TRRFile

    with TRRFile(str(trr)) as f:
        raw = f.read()
    # (MDAnalysis converts in float32: agreement to float32 precision)
    np.testing.assert_allclose(frames.positions[0], raw.x * units.NM_TO_A, rtol=3e-7)
    np.testing.assert_allclose(frames.forces[0], raw.f * units.KJ_MOL_NM_TO_KCAL_MOL_A, rtol=3e-7)


GROMACS_TOP = """[ defaults ]
1 2 no 1.0 1.0

[ atomtypes ]
CH3 15.035 0.0 A 0.375 0.8148
OH  15.999 0.0 A 0.302 0.7732
HO  1.008  0.0 A 0.0 0.0

[ moleculetype ]
MOH 3

[ atoms ]
1 CH3 1 MOH CH3 1 0.265 15.035
2 OH  1 MOH O   1 -0.700 15.999
3 HO  1 MOH H   1 0.435 1.008

[ system ]
test

[ molecules ]
MOH 4
"""


def test_gromacs_top_gives_names_masses_molecules(tmp_path, system):
    _, trr = write_gromacs(tmp_path, system)
    top = tmp_path / "topol.top"
    top.write_text(GROMACS_TOP)
    frames, topo = read_trajectory(trr, "gromacs", topology=top, state=STATE)
    assert topo.atom_names == SITES * N_MOL
    assert topo.molecule_names == ["MOH"] * N_MOL
    assert topo.type_names == ("CH3", "OH", "HO")
    np.testing.assert_array_equal(topo.molecule_ids, system["molecule_ids"])
    np.testing.assert_allclose(frames.masses, system["masses"])
    np.testing.assert_allclose(frames.forces, system["forces"], rtol=1e-6, atol=1e-5)


def test_gromacs_bad_input(tmp_path, system):
    gro, trr = write_gromacs(tmp_path, system, forces=False)
    with pytest.raises(TrajectoryImportError, match="traj.trr: the trajectory has no forces"):
        read_trajectory(trr, "gromacs", topology=gro, molecule="methanol_trappe")
    with pytest.raises(TrajectoryImportError, match="traj.trr: the files do not say"):
        read_trajectory(trr, "gromacs", topology=gro)
    sub = tmp_path / "sub"
    sub.mkdir()
    gro9, _ = write_gromacs(sub, system, n_atoms_gro=9)
    with pytest.raises(TrajectoryImportError, match="traj.trr: the atom count does not match"):
        read_trajectory(trr, "gromacs", topology=gro9, molecule="methanol_trappe")


# ---------------------------------------------------------------------------------------- LAMMPS

def write_lammps(tmp_path, system, unit_style, *, forces=True):
    """A data file (ASE's writer) and a dump written as LAMMPS does (dump custom, triclinic bounds)."""
    import ase
    from ase.io.lammpsdata import write_lammps_data

    conv_f = 1.0 if unit_style == "real" else 1.0 / units.EV_TO_KCAL_MOL
    conv_v = 1.0 if unit_style == "real" else 1.0e3
    atoms = ase.Atoms(symbols=["C", "O", "H"] * N_MOL, positions=system["positions"][0], cell=BOX, pbc=True,
                      masses=system["masses"])
    atoms.arrays["mol-id"] = system["molecule_ids"] + 1
    data = tmp_path / f"{unit_style}.data"
    write_lammps_data(str(data), atoms, atom_style="full", masses=True, units=unit_style,
                      specorder=["C", "O", "H"])
    # ASE's data file gives masses per element; ours are united-atom, so patch the Masses section
    text = data.read_text().split("\n")
    k = text.index("Masses")
    for t, m in enumerate(MASSES):
        text[k + 2 + t] = f"{t + 1} {m}"
    data.write_text("\n".join(text))
    (xlo, xhi), (ylo, yhi), (zlo, zhi) = (0.0, float(BOX[0, 0])), (0.0, float(BOX[1, 1])), (0.0, float(BOX[2, 2]))
    xy, xz, yz = float(BOX[1, 0]), float(BOX[2, 0]), float(BOX[2, 1])
    lines = []
    for f in range(len(system["positions"])):
        lines += ["ITEM: TIMESTEP", str(100 * f), "ITEM: NUMBER OF ATOMS", str(3 * N_MOL),
                  "ITEM: BOX BOUNDS xy xz yz pp pp pp",
                  f"{xlo + min(0, xy, xz, xy + xz)!r} {xhi + max(0, xy, xz, xy + xz)!r} {xy!r}",
                  f"{ylo + min(0, yz)!r} {yhi + max(0, yz)!r} {xz!r}", f"{zlo!r} {zhi!r} {yz!r}",
                  "ITEM: ATOMS id mol type x y z vx vy vz" + (" fx fy fz" if forces else "")]
        order = np.random.default_rng(f).permutation(3 * N_MOL)  # LAMMPS writes atoms in any order
        for a in order:
            row = [a + 1, a // 3 + 1, a % 3 + 1, *system["positions"][f, a], *(system["velocities"][f, a] * conv_v)]
            if forces:
                row += list(system["forces"][f, a] * conv_f)
            lines.append(" ".join(repr(float(x)) if isinstance(x, float) else str(x) for x in row))
    dump = tmp_path / f"{unit_style}.lammpstrj"
    dump.write_text("\n".join(lines) + "\n")
    return data, dump


@pytest.mark.parametrize("unit_style", ["real", "metal"])
def test_lammps_round_trip(tmp_path, system, unit_style):
    data, dump = write_lammps(tmp_path, system, unit_style)
    frames, topo = read_trajectory(dump, "lammps", topology=data, lammps_units=unit_style, state=STATE,
                                   timestep_fs=2.0)
    np.testing.assert_allclose(frames.positions, system["positions"], atol=1e-9)
    np.testing.assert_allclose(frames.forces, system["forces"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(frames.velocities, system["velocities"], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(frames.box[0], BOX, atol=1e-5)  # MDAnalysis keeps cells in float32
    np.testing.assert_allclose(frames.masses, system["masses"], rtol=1e-6)
    np.testing.assert_array_equal(topo.molecule_ids, system["molecule_ids"])
    np.testing.assert_allclose(frames.time_fs, [0.0, 200.0, 400.0])
    # peer: ASE's own LAMMPS dump reader, in eV/A, on the same file
    import ase.io

    images = ase.io.read(str(dump), index=":", format="lammps-dump-text", units=unit_style)
    ase_forces = np.array([a.get_forces() for a in images]) * units.EV_TO_KCAL_MOL
    np.testing.assert_allclose(frames.forces, ase_forces, rtol=2e-7, atol=1e-9)  # MDAnalysis: float32
    # and a molecule definition renames the atoms
    _, topo = read_trajectory(dump, "lammps", topology=data, lammps_units=unit_style, molecule="methanol_trappe")
    assert topo.molecule_ids.tolist() == system["molecule_ids"].tolist()
    assert len(set(topo.molecule_names)) == 1


def test_lammps_bad_input(tmp_path, system):
    data, dump = write_lammps(tmp_path, system, "real", forces=False)
    with pytest.raises(TrajectoryImportError, match="real.lammpstrj: the trajectory has no forces"):
        read_trajectory(dump, "lammps", topology=data, lammps_units="real")
    with pytest.raises(TrajectoryImportError, match="unit style declared"):
        read_trajectory(dump, "lammps", topology=data)
    with pytest.raises(TrajectoryImportError, match="not a whole number of"):
        short = {key: value[..., :10, :] if value.ndim == 3 else value[:10] for key, value in system.items()}
        read_trajectory(write_extxyz(tmp_path / "short.extxyz", short, molecule_ids=False), "extxyz",
                        molecule="methanol_trappe")


# ---------------------------------------------------------------------------------------- the stage

@pytest.mark.filterwarnings("ignore::thermocg.allatom.readers.ImportDensityWarning")
def test_run_import_writes_generation_layout(tmp_path, system):
    from thermocg.allatom.readers import ImportDensityWarning
    from thermocg.config import Config, ConfigError, ImportConfig, StateConfig
    from thermocg.dataset import read_frames
    from thermocg.frames import Topology

    path = write_extxyz(tmp_path / "traj.extxyz", system)
    config = Config(imports=[ImportConfig(path=str(path), format="extxyz",
                                          state=StateConfig(temperature_K=310.0, density_g_cm3=0.77))])
    run = tmp_path / "run"
    # (4 molecules in a 6800 A^3 box hold 0.031 g/cm^3, not the declared 0.77)
    with pytest.warns(ImportDensityWarning, match="declares density_g_cm3 = 0.77, but its boxes hold 0.03112"):
        outputs = run_import(config, run)
    label = "T310_rho0.77"
    assert outputs == [run / "allatom" / label / "traj.h5md"]
    frames = read_frames(outputs[0])
    np.testing.assert_allclose(frames.forces, system["forces"], rtol=1e-7, atol=1e-7)
    assert frames.state == StatePoint(310.0, density_g_cm3=0.77)
    topo = Topology.load(run / "allatom" / label / "topology.json")
    assert topo.atom_names == SITES * N_MOL
    meta = json.loads((run / "allatom" / label / "metadata.json").read_text())
    assert str(path) in meta["provenance"]["inputs"]
    assert (run / "allatom" / label / "thermo.csv").read_text().startswith("time_ps,volume_A3,density_g_cm3\n")
    assert not list(run.rglob("*.partial"))
    # the import feeds the mapping stage directly
    from thermocg.mapping import run_map

    cg = read_frames(run_map(config, run, progress=False)[0])
    assert cg.n_particles == N_MOL
    np.testing.assert_allclose(cg.forces.sum(1), system["forces"].sum(1), atol=1e-9)
    assert run_import(config, run, state=[label]) == outputs
    with pytest.raises(TrajectoryImportError, match="no trajectory declared for state"):
        run_import(config, run, state="T1_rho1")
    with pytest.raises(TrajectoryImportError, match="declare the state point"):
        run_import(Config(imports=[ImportConfig(path=str(path), format="extxyz")]), run)
    with pytest.raises(ConfigError, match="lammps_units"):
        ImportConfig(path="x", format="lammps")
    # the same through the command line, restricted to one state
    import yaml

    from thermocg.cli import main

    config_path = tmp_path / "import.yaml"
    config_path.write_text(yaml.safe_dump({"imports": [{
        "path": str(path), "format": "extxyz",
        "state": {"temperature_K": 310.0, "density_g_cm3": 0.77}}]}))
    assert main(["import", str(config_path), "--run-dir", str(tmp_path / "cli"), "--state", label]) == 0
    assert (tmp_path / "cli" / "allatom" / label / "traj.h5md").exists()
    assert main(["import", str(config_path), "--run-dir", str(tmp_path / "cli2"), "--state", "T1_rho1"]) == 2
    assert not (tmp_path / "cli2" / "allatom").exists() or not list((tmp_path / "cli2" / "allatom").iterdir())


def test_molecule_definition_needs_contiguous_molecules(tmp_path, system):
    interleaved = dict(system, molecule_ids=np.tile(np.arange(N_MOL), 3))
    path = write_extxyz(tmp_path / "mixed.extxyz", interleaved)
    with pytest.raises(TrajectoryImportError, match="mixed.extxyz: the atoms of each molecule .* not contiguous"):
        read_trajectory(path, "extxyz", molecule="methanol_trappe")
    # molecules numbered in any order but contiguous are fine
    reordered = dict(system, molecule_ids=N_MOL - 1 - system["molecule_ids"])
    _, topo = read_trajectory(write_extxyz(tmp_path / "rev.extxyz", reordered), "extxyz", molecule="methanol_trappe")
    np.testing.assert_array_equal(topo.molecule_ids, system["molecule_ids"])
