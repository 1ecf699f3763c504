"""H5MD frames on disk: round trip, lazy reads, atomic writes, MDAnalysis reads our files."""

import numpy as np
import pytest

from thermocg.dataset import DatasetError, H5MDDataset, H5MDWriter, read_frames, write_frames
from thermocg.frames import Frames, FramesError, StatePoint


def make_frames(rng, n_frames=5, n=8):
    box = np.diag([10.0, 11.0, 12.0])
    box[1, 0] = 1.5
    return Frames(
        positions=rng.uniform(0, 10, (n_frames, n, 3)),
        forces=rng.normal(size=(n_frames, n, 3)),
        velocities=rng.normal(size=(n_frames, n, 3)) * 0.01,
        box=box,
        types=np.array([0, 1] * (n // 2)),
        type_names=("A", "B"),
        masses=np.linspace(10, 20, n),
        time_fs=np.arange(n_frames) * 100.0,
        molecule_ids=np.arange(n) // 2,
        state=StatePoint(300.0, density_g_cm3=0.8),
        metadata={"seed": 3},
    )


def test_round_trip_and_lazy_read(tmp_path, rng):
    frames = make_frames(rng)
    path = write_frames(frames, tmp_path / "a.h5md", kind="cg")
    back = read_frames(path)
    for name in ("positions", "forces", "velocities", "box", "time_fs", "masses", "types", "molecule_ids"):
        np.testing.assert_array_equal(getattr(back, name), getattr(frames, name))
    assert back.state == frames.state and back.type_names == ("A", "B") and back.metadata["seed"] == 3
    with H5MDDataset(path) as ds:
        assert len(ds) == 5
        np.testing.assert_array_equal(ds.read(slice(1, 3)).positions, frames.positions[1:3])
        blocks = list(ds.iter_blocks(2))
        assert [b.n_frames for b in blocks] == [2, 2, 1]


def test_failed_write_leaves_no_file(tmp_path, rng):
    frames = make_frames(rng)
    with pytest.raises(RuntimeError):
        with H5MDWriter(tmp_path / "b.h5md", types=frames.types, type_names=frames.type_names,
                        masses=frames.masses, kind="cg") as w:
            w.append(frames.positions[0], frames.box[0], forces=frames.forces[0])
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_mdanalysis_reads_our_h5md(tmp_path, rng):
    mda = pytest.importorskip("MDAnalysis")
    frames = make_frames(rng)
    path = write_frames(frames, tmp_path / "c.h5md", kind="cg")
    u = mda.Universe(str(path))  # H5MD is its own topology for MDAnalysis
    assert u.trajectory.n_frames == 5
    u.trajectory[2]
    np.testing.assert_allclose(u.atoms.positions, frames.positions[2], rtol=1e-6)
    # MDAnalysis converts to its base units (kJ/mol/A), which checks our unit attributes
    np.testing.assert_allclose(u.atoms.forces, frames.forces[2] * 4.184, rtol=1e-5)
    np.testing.assert_allclose(u.atoms.velocities, frames.velocities[2] * 1000.0, rtol=1e-5)  # A/ps


def test_bad_files_are_named(tmp_path):
    bad = tmp_path / "x.h5md"
    bad.write_text("not hdf5")
    with pytest.raises(DatasetError, match="x.h5md"):
        read_frames(bad)
    with pytest.raises(DatasetError, match="no such file"):
        read_frames(tmp_path / "missing.h5md")


def test_frames_validation(rng):
    f = make_frames(rng)
    with pytest.raises(FramesError, match="NaN"):
        Frames(positions=np.full((1, 2, 3), np.nan), box=np.eye(3) * 5, types=[0, 0], type_names=("A",), masses=[1, 1])
    with pytest.raises(FramesError, match="box"):
        Frames(positions=f.positions, box=np.zeros((3, 3)), types=f.types, type_names=f.type_names, masses=f.masses)
    with pytest.raises(ValueError, match="temperature"):
        StatePoint(-5.0)


def test_potential_energies_are_an_h5md_observable(tmp_path, rng):
    """Per-frame potential energies (kcal/mol) round-trip as /observables/potential_energy (value, step,
    time, unit), follow frame selection and concatenation, and files without them read as before."""
    import dataclasses

    import h5py

    frames = dataclasses.replace(make_frames(rng), potential_energy_kcal_mol=rng.normal(-500.0, 5.0, 5),
                                 state=StatePoint(300.0, pressure_bar=1.0, mole_fractions={"a": 0.25, "b": 0.75}))
    path = write_frames(frames, tmp_path / "e.h5md", kind="allatom")
    with h5py.File(path, "r") as f:
        series = f["observables/potential_energy"]
        assert series["value"].attrs["unit"] == "kcal mol-1"
        np.testing.assert_array_equal(series["time"][:], frames.time_fs)
        np.testing.assert_array_equal(series["step"][:], np.arange(5))
    back = read_frames(path)
    np.testing.assert_array_equal(back.potential_energy_kcal_mol, frames.potential_energy_kcal_mol)
    assert back.state == frames.state and back.state.label == "T300_P1_x0.25"
    with H5MDDataset(path) as ds:
        assert ds.has_potential_energy
        np.testing.assert_array_equal(ds.potential_energies(slice(1, 3)), frames.potential_energy_kcal_mol[1:3])
        np.testing.assert_array_equal(ds.read([0, 4]).potential_energy_kcal_mol,
                                      frames.potential_energy_kcal_mol[[0, 4]])
    joined = Frames.concatenate([frames.select(slice(0, 2)), frames.select(slice(2, 5))])
    np.testing.assert_array_equal(joined.potential_energy_kcal_mol, frames.potential_energy_kcal_mol)
    plain = read_frames(write_frames(make_frames(rng), tmp_path / "plain.h5md", kind="cg"))
    assert plain.potential_energy_kcal_mol is None
    with H5MDDataset(tmp_path / "plain.h5md") as ds:
        assert not ds.has_potential_energy and ds.potential_energies() is None
    with pytest.raises(FramesError, match="potential_energy_kcal_mol must be"):
        dataclasses.replace(frames, potential_energy_kcal_mol=np.zeros(3))
    with pytest.raises(FramesError, match="potential_energy_kcal_mol holds NaN"):
        dataclasses.replace(frames, potential_energy_kcal_mol=np.array([0.0, np.nan, 0, 0, 0]))
    with pytest.raises(FramesError, match="stores the potential energy but none was given"):
        with H5MDWriter(tmp_path / "x.h5md", types=frames.types, type_names=frames.type_names, masses=frames.masses,
                        kind="cg", has_potential_energy=True) as writer:
            writer.append(frames.positions, frames.box, forces=frames.forces)
    assert not (tmp_path / "x.h5md").exists()


def test_a_negative_frame_index_counts_from_the_end_and_out_of_range_is_an_error(tmp_path):
    import pytest

    from thermocg.dataset import read_frames, write_frames
    from thermocg.frames import Frames

    rng = np.random.default_rng(0)
    frames = Frames(positions=rng.uniform(0, 10, (5, 4, 3)), box=np.eye(3) * 10, types=np.zeros(4, int),
                    type_names=("A",), masses=np.ones(4), forces=rng.normal(size=(5, 4, 3)))
    path = write_frames(frames, tmp_path / "f.h5md", kind="cg")
    np.testing.assert_array_equal(read_frames(path, -1).positions, frames.positions[-1:])
    np.testing.assert_array_equal(read_frames(path, -5).positions, frames.positions[:1])
    for bad in (5, -6):
        with pytest.raises(IndexError, match=f"frame {bad} out of range"):
            read_frames(path, bad)
