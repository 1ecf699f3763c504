"""Mapping: summed forces, COM of molecules split across triclinic boxes, multi-bead maps, bad maps,
streaming H5MD -> H5MD, and the map stage."""

import numpy as np
import pytest

from thermocg.config import BeadConfig, Config, MappingConfig
from thermocg.dataset import H5MDDataset, read_frames, write_frames
from thermocg.frames import Frames, StatePoint, Topology
from thermocg.mapping import MappingError, build_mapping, make_whole, map_trajectory, run_map

# a TraPPE-like 3-site methanol: CH3, O, H (masses amu, geometry A)
METHANOL_SITES = ["CH3", "O", "H"]
METHANOL_MASSES = np.array([15.035, 15.999, 1.008])
METHANOL_GEOMETRY = np.array([[0.0, 0.0, 0.0], [1.43, 0.0, 0.0], [1.73, 0.896, 0.0]])
TRICLINIC = np.array([[18.0, 0.0, 0.0], [5.0, 17.0, 0.0], [-4.0, 3.0, 16.0]])


def random_rotations(rng, n):
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


def methanol_system(rng, *, n_molecules=20, n_frames=3, box=TRICLINIC, shuffle=False):
    """Whole molecules (F, N, 3), the same wrapped into the box, forces, velocities, topology."""
    n_atoms = 3 * n_molecules
    centres = rng.uniform(size=(n_frames, n_molecules, 3)) @ box
    rot = random_rotations(rng, n_frames * n_molecules).reshape(n_frames, n_molecules, 3, 3)
    whole = centres[:, :, None, :] + np.einsum("fmij,aj->fmai", rot, METHANOL_GEOMETRY)
    whole = whole.reshape(n_frames, n_atoms, 3)
    frac = whole @ np.linalg.inv(box)
    wrapped = (frac - np.floor(frac)) @ box
    molecule_ids = np.repeat(np.arange(n_molecules), 3)
    names = METHANOL_SITES * n_molecules
    masses = np.tile(METHANOL_MASSES, n_molecules)
    perm = rng.permutation(n_atoms) if shuffle else np.arange(n_atoms)
    topology = Topology(atom_names=[names[p] for p in perm], molecule_ids=molecule_ids[perm],
                        molecule_names=["methanol"] * n_molecules, masses=masses[perm],
                        type_names=("CH3", "O", "H"), types=np.tile([0, 1, 2], n_molecules)[perm])
    forces = rng.normal(scale=10.0, size=whole.shape)
    velocities = rng.normal(scale=0.01, size=whole.shape)
    frames = Frames(positions=wrapped[:, perm], box=box, types=topology.types, type_names=topology.type_names,
                    masses=topology.masses, forces=forces[:, perm], velocities=velocities[:, perm],
                    molecule_ids=topology.molecule_ids, state=StatePoint(298.0, density_g_cm3=0.79))
    return frames, topology, whole[:, perm], perm


@pytest.mark.parametrize("shuffle", [False, True])
def test_forces_masses_velocities_are_exact_sums(rng, shuffle):
    frames, topology, _, _ = methanol_system(rng, shuffle=shuffle)
    cg = build_mapping(topology).apply(frames)
    assert cg.type_names == ("methanol",)
    for m in range(20):
        atoms = np.flatnonzero(topology.molecule_ids == m)
        k = int(np.flatnonzero(cg.molecule_ids == m)[0])
        expected = np.zeros((frames.n_frames, 3))
        for a in atoms:  # summed in atom order, as the map does
            expected = expected + frames.forces[:, a]
        np.testing.assert_array_equal(cg.forces[:, k], expected)
        assert cg.masses[k] == pytest.approx(METHANOL_MASSES.sum(), abs=1e-12)
        v = (frames.velocities[:, atoms] * topology.masses[atoms, None]).sum(1) / topology.masses[atoms].sum()
        np.testing.assert_allclose(cg.velocities[:, k], v, rtol=1e-12, atol=1e-15)
    # the total force and momentum are conserved
    np.testing.assert_allclose(cg.forces.sum(1), frames.forces.sum(1), atol=1e-9)


@pytest.mark.parametrize("center", ["com", "cog"])
def test_split_molecules_in_triclinic_box(rng, center):
    frames, topology, whole, _ = methanol_system(rng, n_molecules=60, shuffle=True)
    # many molecules really are split by the wrapping
    split = np.any(np.abs(frames.positions - whole) > 1e-9, axis=-1)
    assert split.any(axis=1).all()
    mapping = build_mapping(topology, MappingConfig(center=center))
    cg = mapping.apply(frames)
    inv = np.linalg.inv(TRICLINIC)
    for m in range(60):
        atoms = np.flatnonzero(topology.molecule_ids == m)
        w = topology.masses[atoms] if center == "com" else np.ones(len(atoms))
        expected = (whole[:, atoms] * w[None, :, None]).sum(1) / w.sum()
        k = int(np.flatnonzero(cg.molecule_ids == m)[0])
        # equal up to a lattice vector, and inside the primary cell
        d = (cg.positions[:, k] - expected) @ inv
        np.testing.assert_allclose(d, np.round(d), atol=1e-10)
        frac = cg.positions[:, k] @ inv
        assert np.all((frac >= 0) & (frac < 1))
    # make_whole puts every atom back next to its molecule's first atom
    restored = make_whole(frames.positions, frames.box, mapping.reference_atom)
    d = (restored - whole) @ inv
    np.testing.assert_allclose(d - d[:, mapping.reference_atom], 0.0, atol=1e-10)


@pytest.mark.parametrize("shuffle", [False, True])
def test_multi_bead_map_by_names_and_indices(rng, shuffle):
    frames, topology, whole, _ = methanol_system(rng, n_molecules=8, shuffle=shuffle)
    # indices count atoms of a molecule in topology order, so only the unshuffled system uses one
    oh = ["O", "H"] if shuffle else [1, "H"]
    config = MappingConfig(beads={"methanol": [BeadConfig("C", ["CH3"]), BeadConfig("OH", oh)]})
    mapping = build_mapping(topology, config)
    cg = mapping.apply(frames)
    assert cg.type_names == ("C", "OH")
    assert cg.n_particles == 16
    np.testing.assert_array_equal(cg.types, np.tile([0, 1], 8))
    np.testing.assert_allclose(cg.masses, np.tile([15.035, 15.999 + 1.008], 8))
    inv = np.linalg.inv(TRICLINIC)
    for m in range(8):
        atoms = np.flatnonzero(topology.molecule_ids == m)
        atoms = atoms[np.argsort(atoms)]
        o, h = [a for a in atoms if topology.atom_names[a] == "O"][0], [a for a in atoms if topology.atom_names[a] == "H"][0]
        oh = (whole[:, o] * 15.999 + whole[:, h] * 1.008) / (15.999 + 1.008)
        k = 2 * m + 1
        assert cg.molecule_ids[k] == m
        d = (cg.positions[:, k] - oh) @ inv
        np.testing.assert_allclose(d, np.round(d), atol=1e-10)
        np.testing.assert_array_equal(cg.forces[:, k], frames.forces[:, o] + frames.forces[:, h])


@pytest.mark.parametrize("beads, message", [
    ([BeadConfig("C", ["CH3"]), BeadConfig("O", ["O"])], "not in any bead"),
    ([BeadConfig("C", ["CH3", "O"]), BeadConfig("OH", ["O", "H"])], "more than one bead"),
    ([BeadConfig("C", ["CH3"]), BeadConfig("OH", ["O", "HO"])], "unknown atom name 'HO'"),
    ([BeadConfig("C", [0]), BeadConfig("OH", [1, 3])], "atom index 3"),
])
def test_bad_maps(rng, beads, message):
    _, topology, _, _ = methanol_system(rng, n_molecules=2, n_frames=1)
    with pytest.raises(MappingError, match=message):
        build_mapping(topology, MappingConfig(beads={"methanol": beads}))


def test_unknown_molecule_and_wrong_atom_count(rng):
    frames, topology, _, _ = methanol_system(rng, n_molecules=2, n_frames=1)
    with pytest.raises(MappingError, match="'ethanol' is not in the topology"):
        build_mapping(topology, MappingConfig(beads={"ethanol": [BeadConfig("X", [0])]}))
    other = methanol_system(rng, n_molecules=3, n_frames=1)[0]
    with pytest.raises(MappingError, match="9 atoms but the map was built for 6"):
        build_mapping(topology).apply(other)


def test_two_molecule_types_get_their_own_bead_types(rng):
    frames, topology, _, _ = methanol_system(rng, n_molecules=4, n_frames=1)
    topology.molecule_names = ["methanol", "methanol", "water", "water"]
    with pytest.raises(MappingError, match="not in any bead"):  # a water map that leaves CH3 and H out
        build_mapping(topology, MappingConfig(beads={"water": [BeadConfig("W", ["O"])]}))
    cg = build_mapping(topology).apply(frames)
    assert cg.type_names == ("methanol", "water")
    np.testing.assert_array_equal(cg.types, [0, 0, 1, 1])


def test_map_trajectory_streams_and_matches_apply(tmp_path, rng):
    frames, topology, _, _ = methanol_system(rng, n_molecules=10, n_frames=7, shuffle=True)
    aa = write_frames(frames, tmp_path / "allatom" / "traj.h5md", kind="allatom")
    mapping = build_mapping(topology)
    out = map_trajectory(aa, topology, mapping, tmp_path / "cg.h5md", block_size=3)
    cg = read_frames(out)
    direct = mapping.apply(frames)
    np.testing.assert_array_equal(cg.positions, direct.positions)
    np.testing.assert_array_equal(cg.forces, direct.forces)
    np.testing.assert_array_equal(cg.velocities, direct.velocities)
    np.testing.assert_array_equal(cg.molecule_ids, direct.molecule_ids)
    assert cg.state == frames.state
    with H5MDDataset(out) as ds:
        assert ds.kind == "cg"
        assert ds.metadata["mapping"]["molecules"]["methanol"]["beads"][0]["name"] == "methanol"
    # a trajectory without forces is refused, and nothing is left behind
    no_forces = Frames(positions=frames.positions, box=frames.box, types=frames.types,
                       type_names=frames.type_names, masses=frames.masses)
    bare = write_frames(no_forces, tmp_path / "bare.h5md", kind="allatom")
    with pytest.raises(MappingError, match="bare.h5md: the trajectory has no forces"):
        map_trajectory(bare, topology, mapping, tmp_path / "cg2.h5md")
    assert not (tmp_path / "cg2.h5md").exists()
    assert not list(tmp_path.glob("*.partial"))


def test_run_map_writes_cg_datasets(tmp_path, rng):
    labels = []
    for temperature in (280.0, 320.0):
        frames, topology, _, _ = methanol_system(rng, n_molecules=6, n_frames=2)
        frames.state = StatePoint(temperature, density_g_cm3=0.79)
        labels.append(frames.state.label)
        write_frames(frames, tmp_path / "allatom" / frames.state.label / "traj.h5md", kind="allatom")
        topology.save(tmp_path / "allatom" / frames.state.label / "topology.json")
    config = Config()
    outputs = run_map(config, tmp_path, state=[labels[1]], progress=False)
    assert outputs == [tmp_path / "cg" / f"{labels[1]}.h5md"]
    outputs = run_map(config, tmp_path, progress=False)
    assert sorted(p.stem for p in outputs) == sorted(labels)
    cg = read_frames(outputs[0])
    assert cg.n_particles == 6 and cg.type_names == ("methanol",)
    assert "provenance" in cg.metadata and (tmp_path / "cg" / f"{labels[0]}.resolved.yaml").exists()
    with pytest.raises(FileNotFoundError, match="T999"):
        run_map(config, tmp_path, state=["T999_rho1"], progress=False)


def test_two_bead_opls_methanol_from_the_molecule_library():
    from thermocg.allatom.molecules import get_molecule
    from thermocg.allatom.runner import topology_for

    topology = topology_for(get_molecule("methanol_opls"), 4)
    config = MappingConfig(beads={"methanol_opls": [BeadConfig("CH3", ["C", "H1", "H2", "H3"]),
                                                    BeadConfig("OH", ["O", "HO"])]})
    mapping = build_mapping(topology, config)
    assert mapping.bead_type_names == ("CH3", "OH")
    np.testing.assert_allclose(mapping.bead_masses, np.tile([12.011 + 3 * 1.008, 15.999 + 1.008], 4))
    np.testing.assert_array_equal(mapping.bead_molecule_ids, np.repeat(np.arange(4), 2))
    np.testing.assert_array_equal(mapping.bead_of_atom, np.repeat(np.arange(8), [4, 2] * 4))
