"""Builders shared by the tests: tiny systems with known answers.

Imported by test modules as ``from helpers import ...`` (pytest puts tests/ on the path); fixtures
stay in conftest.py.
"""

import numpy as np


def lj_fluid(n_particles: int = 64, density_per_A3: float = 0.02, *, rng: np.random.Generator,
             triclinic: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Positions (N, 3) on a jittered lattice and a box (3, 3) at the given number density."""
    side = round(n_particles ** (1 / 3))
    assert side**3 == n_particles
    length = (n_particles / density_per_A3) ** (1 / 3)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    frac = (grid + 0.5 + rng.uniform(-0.1, 0.1, grid.shape)) / side
    box = np.eye(3) * length
    if triclinic:
        box[1, 0] = 0.2 * length
        box[2, 0] = -0.1 * length
        box[2, 1] = 0.15 * length
    return frac @ box, box


# ------------------------------------------------------------------------------------------------
# all-atom trajectories as other engines write them (for the imported-data study)
# ------------------------------------------------------------------------------------------------

def write_engine_files(frames, topology, folder, stem: str, engine: str, *, ns_per_day: float | None = None):
    """Write all-atom ``frames`` (thermocg Frames: A, kcal/mol/A, fs) with their ``topology`` (thermocg
    Topology) as ``engine`` writes them, into ``folder``; returns (trajectory, topology file or None).

    - "lammps": a ``dump custom id mol type x y z fx fy fz`` (real units, step = time in fs) and a data
      file (atom_style full: masses, molecule ids, types), both written by hand as LAMMPS writes them;
    - "gromacs": a .gro (residue = molecule) and a .trr (nm, kJ/mol/nm, ps) through MDAnalysis;
    - "extxyz": one file through ASE (eV/A forces, per-atom mol_id and atom_names, time_fs in the
      comment line, and ns_per_day when given).
    """
    from pathlib import Path

    from thermocg import units

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_atoms = topology.n_atoms
    type_index = {name: k + 1 for k, name in enumerate(topology.type_names)}
    if engine == "lammps":
        data = folder / f"{stem}.data"
        box0 = frames.box[0]
        lines = ["LAMMPS data file (thermocg tests)", "", f"{n_atoms} atoms", f"{len(type_index)} atom types", "",
                 f"0.0 {float(box0[0, 0])!r} xlo xhi", f"0.0 {float(box0[1, 1])!r} ylo yhi",
                 f"0.0 {float(box0[2, 2])!r} zlo zhi", "",
                 "Masses", ""]
        for name, t in type_index.items():
            lines.append(f"{t} {float(topology.masses[topology.types == t - 1][0])!r}")
        lines += ["", "Atoms # full", ""]
        for a in range(n_atoms):
            x, y, z = (float(v) for v in frames.positions[0, a])
            lines.append(f"{a + 1} {topology.molecule_ids[a] + 1} {topology.types[a] + 1} 0.0 {x!r} {y!r} {z!r}")
        data.write_text("\n".join(lines) + "\n")
        dump_lines = []
        for f in range(frames.n_frames):
            b = frames.box[f]
            dump_lines += ["ITEM: TIMESTEP", str(int(round(frames.time_fs[f]))), "ITEM: NUMBER OF ATOMS", str(n_atoms),
                           "ITEM: BOX BOUNDS pp pp pp", f"0.0 {float(b[0, 0])!r}", f"0.0 {float(b[1, 1])!r}",
                           f"0.0 {float(b[2, 2])!r}",
                           "ITEM: ATOMS id mol type x y z fx fy fz"]
            for a in range(n_atoms):
                row = [*frames.positions[f, a], *frames.forces[f, a]]
                dump_lines.append(f"{a + 1} {topology.molecule_ids[a] + 1} {topology.types[a] + 1} "
                                  + " ".join(repr(float(v)) for v in row))
        dump = folder / f"{stem}.lammpstrj"
        dump.write_text("\n".join(dump_lines) + "\n")
        return dump, data
    if engine == "gromacs":
        import MDAnalysis as mda
        from MDAnalysis.coordinates.memory import MemoryReader
        from MDAnalysis.lib.mdamath import triclinic_box

        n_mol = int(topology.molecule_ids.max()) + 1
        u = mda.Universe.empty(n_atoms, n_residues=n_mol, atom_resindex=topology.molecule_ids, trajectory=False)
        u.add_TopologyAttr("names", list(topology.atom_names))
        u.add_TopologyAttr("resnames", ["MOH"] * n_mol)
        u.add_TopologyAttr("resids", np.arange(1, n_mol + 1))
        dims = np.array([triclinic_box(*b) for b in frames.box])
        u.load_new(np.asarray(frames.positions, dtype=np.float32), format=MemoryReader, dimensions=dims,
                   forces=frames.forces * units.KCAL_TO_KJ,  # MDAnalysis units: kJ/mol/A
                   dt=float(frames.time_fs[1] - frames.time_fs[0]) * units.FS_TO_PS if frames.n_frames > 1 else 1.0)
        gro = folder / f"{stem}.gro"
        u.atoms.write(str(gro))
        trr = folder / f"{stem}.trr"
        with mda.Writer(str(trr), n_atoms=n_atoms) as w:
            for _ in u.trajectory:
                w.write(u.atoms)
        return trr, gro
    if engine == "extxyz":
        import ase
        import ase.io
        from ase.calculators.singlepoint import SinglePointCalculator

        images = []
        for f in range(frames.n_frames):
            atoms = ase.Atoms(symbols=["X"] * n_atoms, positions=frames.positions[f], cell=frames.box[f], pbc=True,
                              masses=topology.masses)
            atoms.arrays["mol_id"] = np.asarray(topology.molecule_ids)
            atoms.arrays["atom_names"] = np.array(topology.atom_names)
            atoms.info["time_fs"] = float(frames.time_fs[f])
            if ns_per_day is not None:
                atoms.info["ns_per_day"] = float(ns_per_day)
            atoms.calc = SinglePointCalculator(atoms, forces=frames.forces[f] / units.EV_TO_KCAL_MOL, energy=0.0)
            images.append(atoms)
        path = folder / f"{stem}.extxyz"
        ase.io.write(path, images, format="extxyz")
        return path, None
    raise ValueError(f"unknown engine {engine!r}")
