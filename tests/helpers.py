"""Builders shared by the tests: tiny systems with known answers.

Imported by test modules as ``from helpers import ...`` (pytest puts tests/ on the path); fixtures
stay in conftest.py.
"""

import numpy as np


def lj_force_frames(potential, n_frames: int, *, rng: np.random.Generator, n_particles: int = 216,
                    density: float = 0.0128, jitter: float = 0.09, types=None, state=None):
    """Frames of jittered-lattice configurations (Gaussian jitter, ``jitter`` x the lattice spacing)
    with the exact forces of ``potential``: the reference an MS-CG fit must recover."""
    from thermocg.frames import Frames
    from thermocg.potentials.base import energy_and_forces

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


def lj_pair_curve(lj, r, a: int = 0, b: int = 0):
    """u(r) (kcal/mol) and F(r) = -du/dr (kcal/mol/A) of a LennardJones potential's pair (a, b), numpy."""
    import torch

    r = torch.as_tensor(r, dtype=torch.float64).requires_grad_(True)
    u = lj.pair_energy(r, torch.full(r.shape, a), torch.full(r.shape, b))
    (grad,) = torch.autograd.grad(u.sum(), r)
    return u.detach().numpy(), -grad.numpy()


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


def engine_test_liquid(n_particles: int = 216, *, seed: int = 3, network: bool = True):
    """A one-type CG liquid (32 amu beads, 0.0128 beads/A^3, about methanol's) and a model for the
    engine referees: Lennard-Jones (eps 0.5 kcal/mol, sigma 4 A, r_c 9 A) plus, with ``network``, a
    small HIP-NN-TS with damped energy heads, so that dynamics exercise the network and stay stable.
    Float64."""
    import torch

    from thermocg.frames import Frames, StatePoint
    from thermocg.potentials.base import SumPotential
    from thermocg.potentials.hipnn import HipnnTS
    from thermocg.potentials.lj import LennardJones

    positions, box = lj_fluid(n_particles, 0.0128, rng=np.random.default_rng(seed))
    frames = Frames(positions=positions[None], box=box[None], types=np.zeros(n_particles, int), type_names=("M",),
                    masses=np.full(n_particles, 32.0), state=StatePoint(300.0))
    lj = LennardJones(["M"], epsilon_kcal_mol=0.5, sigma_A=4.0, cutoff_A=9.0, switch_width_A=1.5)
    if not network:
        return frames, lj.to(torch.float64)
    model = HipnnTS(["M"], n_features=8, n_sensitivities=6, dist_soft_min_A=3.0, dist_soft_max_A=8.0, cutoff_A=9.0,
                      n_atom_layers=1, seed=1)
    with torch.no_grad():
        for head in model.energy_heads:
            head.weight.mul_(0.05)
    return frames, SumPotential([lj, model]).to(torch.float64)


def kinetic_temperatures_K(frames) -> np.ndarray:
    """Kinetic temperature of every frame from its velocities (A/fs), 3N degrees of freedom."""
    from thermocg import units

    kinetic = 0.5 * (frames.masses[None, :, None] * frames.velocities**2).sum(axis=(1, 2)) * units.MV2_TO_KCAL_MOL
    return 2.0 * kinetic / (3 * frames.n_particles * units.KB_KCAL_MOL_K)


def structure_agreement(frames, reference, *, r_max_A: float = 10.0, bin_width_A: float = 0.1) -> dict:
    """Mean |g - g_ref| of ``frames`` against ``reference`` (the RDF of each pair, averaged), with the
    noise floor as the study estimates it: first half against second half of each run, the larger."""
    from thermocg.analysis.rdf import RDF, compare_rdf

    def rdf(f):
        return RDF(f, r_max_A=r_max_A, bin_width_A=bin_width_A).run().results

    def mean_abs_dg(a, b):
        return float(np.mean([m["mean_abs_dg"] for m in compare_rdf(rdf(a), rdf(b)).values()]))

    def halves(f):
        half = f.n_frames // 2
        return mean_abs_dg(f.select(slice(0, half)), f.select(slice(half, None)))

    return {"mean_abs_dg": mean_abs_dg(frames, reference), "noise_floor": max(halves(frames), halves(reference))}


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
