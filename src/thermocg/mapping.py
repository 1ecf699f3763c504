"""Atoms to coarse-grained beads: centre of mass under periodic boundaries, force aggregation.

A :class:`Mapping` sends each atom to exactly one bead. For a bead :math:`I` with atoms
:math:`a \\in I` (masses :math:`m_a`, :math:`M_I = \\sum_{a\\in I} m_a`):

- position  :math:`R_I = \\sum_{a\\in I} w_a \\tilde r_a` with :math:`w_a = m_a / M_I` (``center="com"``)
  or :math:`w_a = 1/n_I` (``center="cog"``), where :math:`\\tilde r_a` are the atoms made whole
  (below), then wrapped into the primary cell;
- force     :math:`F_I = \\sum_{a\\in I} f_a` (kcal/mol/A): the force-matching CG force of a linear
  map whose atoms belong to one bead only (Noid et al., J. Chem. Phys. 128, 244114 (2008));
- mass      :math:`M_I` (amu);
- velocity  :math:`V_I = \\sum_{a\\in I} m_a v_a / M_I` (A/fs), the momentum-conserving mean.

**Making molecules whole.** Every atom is unwrapped relative to a reference atom of its molecule
(its first atom) by the minimum image in fractional coordinates,

    s = (r_a - r_ref) B^{-1},   s <- s - round(s),   r~_a = r_ref + s B        (B: rows = cell vectors)

which is exact for any triclinic cell as long as every atom lies within half the shortest
perpendicular box width of its reference atom (a fractional component is d.n_i / w_i, with n_i the
unit normal of the i-th cell face and w_i its width). Molecules are small; boxes are not.

Everything is vectorised over frames and beads: the k-th atoms of all beads are gathered and added in
one step (k = 0 .. largest bead size - 1), so a bead's sum runs over its atoms in a fixed order and
the CG force is bit-for-bit the plain sum of its atomic forces. :func:`map_trajectory` streams blocks of frames from an all-atom H5MD
file to a CG H5MD file, so no trajectory is ever held in memory whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from thermocg.frames import Frames, Topology, per_frame_boxes

if TYPE_CHECKING:  # pragma: no cover
    from thermocg.config import Config, MappingConfig

__all__ = ["Mapping", "MappingError", "build_mapping", "make_whole", "map_trajectory", "run_map"]


class MappingError(ValueError):
    """A bead map that does not fit the topology (unassigned, doubly assigned or unknown atoms)."""


@dataclass(frozen=True, eq=False)
class Mapping:
    """A linear atom -> bead map, ready to apply to any number of frames.

    Attributes (n_atoms atoms, n_beads beads)
    ----------
    n_atoms         atoms of the all-atom system the map was built for
    atom_order      (n_atoms,) atom indices grouped bead by bead (bead 0's atoms first, ...)
    bead_starts     (n_beads,) offset of each bead's first atom in ``atom_order``
    bead_of_atom    (n_atoms,) bead index of each atom (in the original atom order)
    reference_atom  (n_atoms,) the atom each atom is unwrapped against (first atom of its molecule)
    position_weights (n_atoms,) w_a in ``atom_order`` (mass fractions or 1/n_I); sum to 1 per bead
    mass_weights    (n_atoms,) m_a / M_I in ``atom_order``, for velocities
    bead_types      (n_beads,) int indices into ``bead_type_names``
    bead_type_names names of the bead types
    bead_masses     (n_beads,) amu
    bead_molecule_ids (n_beads,) the molecule each bead belongs to
    center          ``"com"`` or ``"cog"``
    description     JSON-ready summary: per molecule name, the beads and their atoms
    """

    n_atoms: int
    atom_order: np.ndarray
    bead_starts: np.ndarray
    bead_of_atom: np.ndarray
    reference_atom: np.ndarray
    position_weights: np.ndarray
    mass_weights: np.ndarray
    bead_types: np.ndarray
    bead_type_names: tuple[str, ...]
    bead_masses: np.ndarray
    bead_molecule_ids: np.ndarray
    center: str
    description: dict[str, Any]

    @property
    def n_beads(self) -> int:
        return len(self.bead_starts)

    # ---------------------------------------------------------------- the arithmetic, on arrays
    def _bead_sum(self, per_atom: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """(F, n_atoms, 3) -> (F, n_beads, 3): sum over each bead's atoms (optionally weighted).

        The k-th atoms of all beads are added in one vectorised step, k = 0, 1, ...; so each bead's
        sum runs left to right in its atom order, bit-for-bit what a plain loop gives.
        """
        table, valid = self._atom_table()
        out = None
        for k in range(table.shape[1]):
            beads = slice(None) if valid[:, k].all() else np.flatnonzero(valid[:, k])
            atoms = table[beads, k]
            term = per_atom[:, atoms]
            if weights is not None:
                term = term * weights[self._position_in_order[atoms]][None, :, None]
            if out is None:
                out = np.zeros((per_atom.shape[0], self.n_beads, 3), dtype=np.float64)
                out[:, beads] = term
            else:
                out[:, beads] += term
        if out is None:
            out = np.zeros((per_atom.shape[0], 0, 3), dtype=np.float64)
        return out

    def _atom_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(n_beads, max_atoms) atom indices per bead (padded with 0) and the mask of real entries."""
        cached = self.__dict__.get("_table_cache")
        if cached is None:
            sizes = np.diff(np.append(self.bead_starts, len(self.atom_order)))
            width = int(sizes.max()) if len(sizes) else 0
            column = np.arange(width)
            valid = column[None, :] < sizes[:, None]
            index = np.where(valid, self.bead_starts[:, None] + column[None, :], 0)
            table = self.atom_order[index] if len(self.atom_order) else np.zeros_like(index)
            position = np.empty(self.n_atoms, dtype=np.int64)
            position[self.atom_order] = np.arange(len(self.atom_order))
            object.__setattr__(self, "_position_in_order", position)
            cached = (table, valid)
            object.__setattr__(self, "_table_cache", cached)
        return cached

    def map_positions(self, positions: np.ndarray, box: np.ndarray, *, wrap: bool = True) -> np.ndarray:
        """Bead positions (F, n_beads, 3) A from atom positions (F, n_atoms, 3) and boxes (F, 3, 3).

        Molecules are made whole first (see the module docstring); with ``wrap`` the bead positions
        are put back into the primary cell (fractional coordinates in [0, 1)).
        """
        positions = np.asarray(positions, dtype=np.float64)
        box = np.asarray(box, dtype=np.float64)
        whole = make_whole(positions, box, self.reference_atom)
        beads = self._bead_sum(whole, self.position_weights)
        if wrap:
            beads = wrap_positions(beads, box)
        return beads

    def map_forces(self, forces: np.ndarray) -> np.ndarray:
        """Bead forces (F, n_beads, 3) kcal/mol/A: the sum of the atomic forces of each bead."""
        return self._bead_sum(np.asarray(forces, dtype=np.float64))

    def map_velocities(self, velocities: np.ndarray) -> np.ndarray:
        """Bead velocities (F, n_beads, 3) A/fs: the mass-weighted mean of the atomic velocities."""
        return self._bead_sum(np.asarray(velocities, dtype=np.float64), self.mass_weights)

    # ---------------------------------------------------------------- on Frames
    def apply(self, frames: Frames) -> Frames:
        """The CG :class:`Frames` of all-atom ``frames`` (positions, forces, velocities, box, time)."""
        if frames.n_particles != self.n_atoms:
            raise MappingError(
                f"mapping: frames have {frames.n_particles} atoms but the map was built for {self.n_atoms}"
                + (f" (frames from {frames.metadata['source']})" if "source" in frames.metadata else "")
            )
        box = frames.box
        return Frames(
            positions=self.map_positions(frames.positions, box),
            box=box.copy(),
            types=self.bead_types,
            type_names=self.bead_type_names,
            masses=self.bead_masses,
            forces=None if frames.forces is None else self.map_forces(frames.forces),
            velocities=None if frames.velocities is None else self.map_velocities(frames.velocities),
            time_fs=None if frames.time_fs is None else frames.time_fs.copy(),
            molecule_ids=self.bead_molecule_ids,
            state=frames.state,
            # the CG frame's all-atom potential energy is the all-atom frame's: the same number
            potential_energy_kcal_mol=(None if frames.potential_energy_kcal_mol is None
                                       else frames.potential_energy_kcal_mol.copy()),
            metadata={**frames.metadata, "mapping": self.description},
        )


def make_whole(positions: np.ndarray, box: np.ndarray, reference_atom: np.ndarray) -> np.ndarray:
    """Atom positions (F, N, 3) with every atom moved to the image nearest its reference atom.

    ``reference_atom`` (N,) gives, per atom, the index of the atom it is unwrapped against (its
    molecule's first atom). Exact while molecules span less than half the shortest perpendicular
    box width; boxes (F, 3, 3) may be triclinic.
    """
    positions = np.asarray(positions, dtype=np.float64)
    box = per_frame_boxes(box, positions.shape[0])
    reference = positions[:, reference_atom]
    inverse = np.linalg.inv(box)
    frac = (positions - reference) @ inverse  # batched matmul: far faster than the equivalent einsum
    frac -= np.round(frac)
    return reference + frac @ box


def wrap_positions(positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Positions (F, N, 3) put into the primary cell: fractional coordinates in [0, 1)."""
    box = per_frame_boxes(box, positions.shape[0])
    frac = positions @ np.linalg.inv(box)
    frac -= np.floor(frac)
    frac[frac >= 1.0] = 0.0  # -1e-17 - floor(-1e-17) rounds to exactly 1.0
    return frac @ box


def _resolve_bead_atoms(spec: Iterable[str | int], names: list[str], molecule: str, bead: str) -> list[int]:
    """Local (0-based, within the molecule) indices of the atoms a bead lists by name or index."""
    picked: list[int] = []
    for item in spec:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= int(item) < len(names):
                raise MappingError(
                    f"mapping.beads.{molecule}: bead {bead!r} lists atom index {item}, but {molecule} has "
                    f"{len(names)} atoms (0-based indices 0..{len(names) - 1})"
                )
            picked.append(int(item))
        else:
            hits = [k for k, n in enumerate(names) if n == str(item)]
            if not hits:
                raise MappingError(
                    f"mapping.beads.{molecule}: bead {bead!r} lists unknown atom name {item!r}; "
                    f"{molecule} has atoms {names}"
                )
            picked.extend(hits)
    return picked


def _molecule_beads(mol_name: str, names: list[str], config: "MappingConfig") -> list[tuple[str, list[int]]]:
    """The beads (bead name, local atom indices) of a molecule of type ``mol_name`` whose atoms are
    named ``names``: the configured beads, which must hold every atom exactly once, or else one bead
    of all its atoms named after the molecule type."""
    if mol_name not in config.beads:
        return [(mol_name, list(range(len(names))))]
    beads = [(b.name, _resolve_bead_atoms(b.atoms, names, mol_name, b.name)) for b in config.beads[mol_name]]
    count = np.bincount(np.concatenate([np.asarray(a, dtype=np.int64) for _, a in beads]
                                       or [np.zeros(0, np.int64)]), minlength=len(names))
    if np.any(count == 0):
        missing = [names[k] + f" (index {k})" for k in np.flatnonzero(count == 0)]
        raise MappingError(f"mapping.beads.{mol_name}: atoms not in any bead: {missing}")
    if np.any(count > 1):
        twice = [names[k] + f" (index {k})" for k in np.flatnonzero(count > 1)]
        raise MappingError(f"mapping.beads.{mol_name}: atoms assigned to more than one bead: {twice}")
    return beads


def _assemble_mapping(topology: Topology, center: str, bead_atoms: list[np.ndarray], bead_types: list[int],
                      type_names: list[str], bead_molecules: list[int], reference: np.ndarray,
                      description: dict[str, Any]) -> Mapping:
    """The :class:`Mapping` of beads given by their atoms (``bead_atoms``, bead by bead), types and
    molecules: bead masses M_I = sum of m_a (amu, each positive), velocity weights m_a / M_I, and
    position weights m_a / M_I (``center="com"``) or 1 / n_I (``"cog"``)."""
    order = np.concatenate(bead_atoms) if bead_atoms else np.zeros(0, dtype=np.int64)
    sizes = np.asarray([len(atoms) for atoms in bead_atoms], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    bead_index = np.repeat(np.arange(len(sizes)), sizes)
    bead_of_atom = np.empty(topology.n_atoms, dtype=np.int64)
    bead_of_atom[order] = bead_index
    atom_mass = topology.masses[order]
    bead_masses = np.add.reduceat(atom_mass, starts) if len(sizes) else np.zeros(0)
    if np.any(bead_masses <= 0):
        bad = int(np.flatnonzero(bead_masses <= 0)[0])
        raise MappingError(f"mapping: bead {bad} ({type_names[bead_types[bad]]}) has zero total mass")
    mass_weights = atom_mass / bead_masses[bead_index]
    position_weights = mass_weights if center == "com" else 1.0 / sizes[bead_index]
    return Mapping(
        n_atoms=topology.n_atoms,
        atom_order=order,
        bead_starts=starts,
        bead_of_atom=bead_of_atom,
        reference_atom=reference,
        position_weights=np.asarray(position_weights, dtype=np.float64),
        mass_weights=mass_weights,
        bead_types=np.asarray(bead_types, dtype=np.int64),
        bead_type_names=tuple(type_names),
        bead_masses=bead_masses,
        bead_molecule_ids=np.asarray(bead_molecules, dtype=np.int64),
        center=center,
        description=description,
    )


def build_mapping(topology: Topology, mapping_config: "MappingConfig | None" = None) -> Mapping:
    """The atom -> bead map of an all-atom ``topology``.

    Default (no beads configured for a molecule type): one bead per molecule at its centre of mass
    (or geometry), its bead type named after the molecule. With ``mapping_config.beads[name]`` a list
    of beads, each listing atoms by name (every atom of that name in the molecule) or by 0-based index
    within the molecule (atoms ordered by their index in the topology); every atom must belong to
    exactly one bead. Beads with the same name share a bead type.
    """
    from thermocg.config import MappingConfig

    config = mapping_config or MappingConfig()
    if config.center not in ("com", "cog"):
        raise MappingError(f"mapping.center: must be 'com' or 'cog', got {config.center!r}")
    present = set(topology.molecule_names)
    for name in config.beads:
        if name not in present:
            raise MappingError(
                f"mapping.beads: molecule {name!r} is not in the topology (molecules: {sorted(present)})"
            )
    type_names: list[str] = []
    bead_atoms: list[np.ndarray] = []
    bead_types: list[int] = []
    bead_molecules: list[int] = []
    reference = np.empty(topology.n_atoms, dtype=np.int64)
    description: dict[str, Any] = {"center": config.center, "molecules": {}}
    # resolved once per molecule name and atom-name sequence (indices refer to that sequence)
    local_maps: dict[tuple[str, tuple[str, ...]], list[tuple[str, list[int]]]] = {}
    for mol_id, atoms in enumerate(topology.molecule_atoms()):
        if len(atoms) == 0:
            continue
        mol_name = topology.molecule_names[mol_id]
        names = [topology.atom_names[a] for a in atoms]
        reference[atoms] = atoms[0]
        key = (mol_name, tuple(names))
        if key not in local_maps:
            local_maps[key] = beads = _molecule_beads(mol_name, names, config)
            description["molecules"].setdefault(mol_name, {
                "atom_names": names,
                "beads": [{"name": b, "atoms": idx} for b, idx in beads],
            })
        for bead_name, local in local_maps[key]:
            bead_atoms.append(atoms[np.asarray(local, dtype=np.int64)])
            if bead_name not in type_names:
                type_names.append(bead_name)
            bead_types.append(type_names.index(bead_name))
            bead_molecules.append(mol_id)
    return _assemble_mapping(topology, config.center, bead_atoms, bead_types, type_names, bead_molecules,
                             reference, description)


def map_trajectory(aa_h5md: str | os.PathLike, topology: Topology, mapping: Mapping,
                   out_h5md: str | os.PathLike, *, block_size: int = 256, progress: bool = False,
                   metadata: dict[str, Any] | None = None) -> Path:
    """Map an all-atom H5MD trajectory to a CG H5MD dataset, ``block_size`` frames at a time.

    Only one block of frames is in memory at once; the output appears under its final name only
    when every frame has been written (``out_h5md.partial`` before). Returns the output path.
    """
    from thermocg.dataset import H5MDDataset, H5MDWriter

    aa_h5md, out_h5md = Path(aa_h5md), Path(out_h5md)
    if block_size < 1:
        raise ValueError(f"map_trajectory: block_size must be >= 1, got {block_size}")
    with H5MDDataset(aa_h5md, kind="allatom") as ds:
        if ds.n_particles != topology.n_atoms or ds.n_particles != mapping.n_atoms:
            raise MappingError(
                f"{aa_h5md}: {ds.n_particles} atoms in the trajectory but {topology.n_atoms} in the topology"
                f" and {mapping.n_atoms} in the map"
            )
        if not np.allclose(ds.masses, topology.masses, rtol=1e-6, atol=1e-6):
            raise MappingError(f"{aa_h5md}: atom masses differ from those of the topology")
        if not ds.has_forces:
            raise MappingError(f"{aa_h5md}: the trajectory has no forces; force matching needs them")
        meta = {**ds.metadata, **(metadata or {}), "source": str(aa_h5md), "mapping": mapping.description}
        bar = None
        if progress:
            from thermocg.progress import Progress

            bar = Progress(len(ds), description=f"map {aa_h5md.parent.name or aa_h5md.name}", unit="frames")
        with H5MDWriter(
            out_h5md, types=mapping.bead_types, type_names=mapping.bead_type_names,
            masses=mapping.bead_masses, kind="cg", state=ds.state, has_forces=True,
            has_velocities=ds.has_velocities, molecule_ids=mapping.bead_molecule_ids, metadata=meta,
            has_potential_energy=ds.has_potential_energy,
        ) as writer:
            for block in ds.iter_blocks(block_size):
                writer.append_frames(mapping.apply(block))
                if bar is not None:
                    bar.update(block.n_frames)
        if bar is not None:
            bar.close()
    return out_h5md


def _selected_labels(state: str | list[str] | tuple[str, ...] | None) -> set[str] | None:
    if state is None:
        return None
    return {state} if isinstance(state, str) else set(state)


def run_map(config: "Config", run_dir: str | os.PathLike, *, state: str | list[str] | None = None,
            progress: bool = True) -> list[Path]:
    """Map every ``RUN_DIR/allatom/<label>/traj.h5md`` (or those of ``state``) to ``RUN_DIR/cg/<label>.h5md``.

    Each CG dataset carries the map and provenance (versions, input hashes) in its metadata; the
    resolved mapping config is written beside it as ``cg/<label>.resolved.yaml``.
    """
    from thermocg import provenance
    from thermocg.config import write_resolved
    from thermocg.rundir import RunDir

    rd = RunDir(run_dir)
    wanted = _selected_labels(state)
    found = sorted(p.parent.name for p in (rd.root / "allatom").glob("*/traj.h5md"))
    if wanted is not None:
        missing = sorted(wanted - set(found))
        if missing:
            raise FileNotFoundError(
                f"{rd.root / 'allatom'}: no all-atom trajectory for state(s) {missing} (found: {found})"
            )
        found = [label for label in found if label in wanted]
    if not found:
        raise FileNotFoundError(f"{rd.root / 'allatom'}: no all-atom trajectories (*/traj.h5md) to map")
    outputs = []
    for label in found:
        trajectory = rd.allatom_trajectory(label)
        topology_path = rd.allatom(label) / "topology.json"
        if not topology_path.exists():
            raise FileNotFoundError(f"{topology_path}: missing; the trajectory {trajectory} needs its topology")
        topology = Topology.load(topology_path)
        try:
            mapping = build_mapping(topology, config.mapping)
        except MappingError as exc:
            raise MappingError(f"{topology_path}: {exc}") from None
        meta = {"provenance": provenance.collect([trajectory, topology_path])}
        out = map_trajectory(trajectory, topology, mapping, rd.cg_dataset(label), progress=progress,
                             metadata=meta)
        write_resolved(config.mapping, out.with_name(f"{label}.resolved.yaml"),
                       extra={"input": str(trajectory), "output": str(out)})
        outputs.append(out)
    return outputs
