"""Import all-atom trajectories with forces written by other engines, through MDAnalysis and ASE.

Formats and the units converted at this edge (internal: A, fs, kcal/mol, amu):

=========  =====================================  ==============================================
format     files                                   units in the files
=========  =====================================  ==============================================
lammps     dump (``dump custom ... id [mol type]    ``real``: A, kcal/mol/A, A/fs (no conversion);
           x y z [vx vy vz] fx fy fz``, read by     ``metal``: A, eV/A, A/ps. The unit style must
           MDAnalysis) + data file (masses,         be declared (``lammps_units``): a dump does not
           molecule ids, types)                     say which it is.
gromacs    .trr (positions, forces, velocities)     nm, kJ/mol/nm, nm/ps; MDAnalysis converts to A,
           + .tpr / .gro / .top                     kJ/mol/A, A/ps, then kJ -> kcal and ps -> fs here
extxyz     one file (ASE); forces as the per-atom   A, eV/A (ASE convention), ASE velocity units
           ``forces`` array                         (A / (A sqrt(amu/eV)))
=========  =====================================  ==============================================

Potential energies (kcal/mol per frame, kept with the frames as ``potential_energy_kcal_mol``) come
from the file where the format has them: extxyz frames' ``energy`` (eV, like the forces); a LAMMPS log
whose thermo table has ``Step`` and ``PotEng`` columns (``energy_file``; real: kcal/mol, metal: eV),
matched to the dump by step; a GROMACS .edr (``energy_file``, or the .edr next to the .trr with the
same stem; kJ/mol), read with pyedr and matched to the .trr by time. A LAMMPS dump's per-atom energy
column is not read (a per-atom ``pe`` leaves out the k-space part); write a log.

**Mixtures.** ``molecules`` declares the molecule types of the file, each a definition (built-in name
or YAML) plus where its molecules are: a GROMACS moleculetype name (.tpr/.top) or an extxyz per-atom
molecule-type array entry (``name_in_file``, default the definition's name), or a range of LAMMPS data
file molecule IDs (``molecule_ids: [first, last]``). Every molecule of the file must belong to a
declared type, have that type's number of atoms in its site order, and every declared type must occur;
the definitions' atom names, masses and types replace the file's. Errors name the file.

Which atoms form molecules comes from the topology (LAMMPS data molecule ids; GROMACS .tpr molecule
numbers or residues of a .gro/.top; an extxyz per-atom ``molecule_ids``/``mol_id`` array, with an
optional per-atom ``molecule_types``/``mol_type`` array of molecule-type names), or from a
``molecule`` definition (a built-in name or a YAML file, :func:`thermocg.allatom.molecules.get_molecule`):
with one, the atoms are taken to be molecule after molecule, each in the definition's site order, and
the definition's atom names, masses and types replace the file's. A .gro or an extxyz file without
molecule information needs a ``molecule``.

Bad input (a trajectory without forces, an atom count that does not match the topology, NaN
coordinates, a missing box, positions more than :data:`thermocg.frames.POSITION_RANGE_BOXES` box
lengths outside the box, an empty or unreadable file) raises :class:`TrajectoryImportError` naming
the file (and the frame and atom where there is one).

**GROMACS frame times.** A single-precision .trr stores each frame's time as a float32, so a frame
at 400 ps may read 400.00003 ps (one float32 step, 3e-5 ps, away), and frames that were written
evenly spaced come out unevenly spaced by that much (which an MSD or a time-correlation check then
refuses). The times are therefore restored to the precision the format has: GROMACS computes
t = t_init + step x dt, so the first block of frames gives dt per MD step and t_init, each rounded
to the fewest decimal digits that reproduce every time of the block to one float32 step; a frame whose
time fits t_init + step x dt to one float32 step gets that value exactly, any other frame (a
trajectory joined from runs with different settings) gets its time rounded to the shortest decimal
that reads back as the same float32.

**State points from the data.** An import whose state gives only a temperature (and, for a mixture,
its composition) takes the density of its first frame's box, rounded to 4 significant digits
(:func:`resolve_import_states`, which the import stage calls and a study's validation calls, and
:func:`peek_import`, which reads just that frame). A declared density that differs from the mean
density of the imported boxes by more than 2 % is warned about (:class:`ImportDensityWarning`):
the frames keep the declared label, which then misnames them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import json
import os
import sys
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np

from thermocg import units
from thermocg.frames import Frames, FramesError, StatePoint, Topology, check_positions_in_range, first_nonfinite

if TYPE_CHECKING:  # pragma: no cover
    from thermocg.allatom.molecules import Molecule
    from thermocg.config import Config

__all__ = ["TrajectoryImportError", "TrajectoryImportWarning", "ImportDensityWarning", "ImportPeek",
           "read_trajectory", "iter_trajectory", "peek_import", "resolve_import_states", "check_import_density",
           "run_import", "FORMATS"]

FORMATS = ("lammps", "gromacs", "extxyz")

#: per format and unit style: multiply file values by these to get A, kcal/mol/A, A/fs
_LAMMPS_UNITS = {
    "real": {"force": 1.0, "velocity": 1.0, "time_fs": 1.0},
    "metal": {"force": units.EV_TO_KCAL_MOL, "velocity": units.FS_TO_PS, "time_fs": units.PS_TO_FS},
}


class TrajectoryImportError(ValueError):
    """A trajectory that cannot be imported; the message names the file and the problem."""


class TrajectoryImportWarning(UserWarning):
    """Imported, but not quite as the files say (a cut-off last frame, a density off by more than 2 %)."""


class ImportDensityWarning(TrajectoryImportWarning):
    """An import whose declared density differs from the density of its boxes by more than 2 %."""


#: a declared density further than this (relative) from the boxes' density is warned about
DENSITY_TOLERANCE = 0.02
#: significant digits of a density taken from the data (it becomes part of the state label)
DATA_DENSITY_DIGITS = 4


# --------------------------------------------------------------------------------------------------
# the public reader
# --------------------------------------------------------------------------------------------------

def read_trajectory(path: str | os.PathLike, format: str, *, topology: str | os.PathLike | None = None,
                    lammps_units: str | None = None, state: StatePoint | None = None,
                    molecule: "str | Molecule | None" = None,
                    timestep_fs: float | None = None, molecules: "Sequence[Any] | None" = None,
                    energy_file: str | os.PathLike | None = None) -> tuple[Frames, Topology]:
    """Read an all-atom trajectory with forces into internal units (all frames in memory).

    Parameters
    ----------
    path : the trajectory (LAMMPS dump, GROMACS .trr, extxyz)
    format : ``"lammps"``, ``"gromacs"`` or ``"extxyz"``
    topology : LAMMPS data file; GROMACS .tpr, .gro or .top; for extxyz optionally a thermocg
        ``topology.json``
    lammps_units : ``"real"`` or ``"metal"`` (required for LAMMPS)
    state : the state point the user declares for these frames (stored with them)
    molecule : a molecule definition (name, YAML path or Molecule) giving atom names, masses and
        molecules when the files lack them
    timestep_fs : LAMMPS only: the MD timestep, so that dump step numbers become times (default:
        time = step number)
    molecules : a mixture's molecule types (module docstring): objects or mappings with ``molecule``
        (name, YAML path or Molecule), optional ``name_in_file`` and ``molecule_ids`` ([first, last])
    energy_file : LAMMPS log or GROMACS .edr with the potential energies (module docstring)

    Returns
    -------
    (Frames, Topology): positions (F, N, 3) A, forces kcal/mol/A, velocities A/fs (when present), box
    (F, 3, 3) A, time_fs, potential energies kcal/mol (when the files have them), and the matching
    topology. :func:`iter_trajectory` reads block by block.
    """
    topo, blocks = iter_trajectory(path, format, topology=topology, lammps_units=lammps_units, state=state,
                                   molecule=molecule, timestep_fs=timestep_fs, molecules=molecules,
                                   energy_file=energy_file)
    parts = list(blocks)
    frames = parts[0] if len(parts) == 1 else Frames.concatenate(parts)
    return frames, topo


def _check_arguments(path: Path, format: str, *, topology: str | os.PathLike | None, block_size: int,
                     molecule: Any, molecules: Any, energy_file: str | os.PathLike | None) -> None:
    """What :func:`iter_trajectory` can check before reading: a known format, the files present,
    a positive block size, one molecule type or a mixture (not both)."""
    if format not in FORMATS:
        raise TrajectoryImportError(f"{path}: unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise TrajectoryImportError(f"{path}: no such trajectory file")
    if topology is not None and not Path(topology).is_file():
        raise TrajectoryImportError(f"{topology}: no such topology file (for {path})")
    if block_size < 1:
        raise ValueError(f"iter_trajectory: block_size must be >= 1, got {block_size}")
    if molecule is not None and molecules is not None:
        raise TrajectoryImportError(f"{path}: give molecule (one molecule type) or molecules (a mixture), not both")
    if energy_file is not None and not Path(energy_file).is_file():
        raise TrajectoryImportError(f"{energy_file}: no such energy file (for {path})")


def _open_trajectory(path: Path, format: str, *, topology: str | os.PathLike | None, lammps_units: str | None,
                     timestep_fs: float | None, block_size: int, specs: list[_MoleculeSpec] | None,
                     energy_file: str | os.PathLike | None, first_block_only: bool
                     ) -> tuple[Topology | None, int, Iterator[dict[str, Any]]]:
    """The format's reader: the file's topology (None when it has none), its atom count and its raw
    blocks of arrays in internal units. A LAMMPS dump needs its unit style and data file, a .trr its
    topology; the potential energies come from the log or .edr (a .trr's: the .edr beside it
    unless ``energy_file`` names one), not read with ``first_block_only``."""
    if format == "lammps":
        if lammps_units not in _LAMMPS_UNITS:
            raise TrajectoryImportError(
                f"{path}: a LAMMPS dump needs its unit style declared (lammps_units: real or metal), "
                f"got {lammps_units!r}"
            )
        if topology is None:
            raise TrajectoryImportError(f"{path}: a LAMMPS dump needs its data file (topology) for masses")
        energies = (None if energy_file is None or first_block_only
                    else _lammps_log_energies(Path(energy_file), lammps_units))
        return _read_lammps(path, Path(topology), lammps_units, timestep_fs, block_size,
                            specs=specs, energies=energies, check_frames=not first_block_only)
    if format == "gromacs":
        if topology is None:
            raise TrajectoryImportError(f"{path}: a GROMACS .trr needs a topology (.tpr, .gro or .top)")
        edr = Path(energy_file) if energy_file is not None else path.with_suffix(".edr")
        energies = (_edr_energies(edr, required=energy_file is not None)
                    if edr.is_file() and not first_block_only else None)
        return _read_gromacs(path, Path(topology), block_size, energies=energies, energy_source=edr)
    if energy_file is not None and not first_block_only:
        raise TrajectoryImportError(f"{energy_file}: an extxyz file carries its own energies (each frame's "
                                    "'energy'); energy_file is for LAMMPS logs and GROMACS .edr files")
    return _read_extxyz(path, None if topology is None else Path(topology), block_size)


def _import_topology(topo: Topology | None, n_atoms: int, path: Path, format: str, *,
                     topology: str | os.PathLike | None, mol: "Molecule | None",
                     specs: list[_MoleculeSpec] | None) -> Topology:
    """The topology of the imported atoms: the file's, rebuilt from the declared molecule types
    (:func:`_apply_molecules`) or from one molecule definition (:func:`_apply_molecule`), and
    checked to have the trajectory's atom count."""
    if specs is not None:
        # LAMMPS data files and GROMACS topologies state masses; an extxyz may carry element masses only
        topo = _apply_molecules(topo, specs, n_atoms, path, check_masses=format != "extxyz")
    topo = _apply_molecule(topo, mol, n_atoms, path)
    if topo is None:
        raise TrajectoryImportError(
            f"{path}: the files do not say which atoms form molecules (or their masses); give a molecule "
            "definition (molecule: a built-in name or a YAML file)"
        )
    if topo.n_atoms != n_atoms:
        raise TrajectoryImportError(
            f"{path}: {n_atoms} atoms in the trajectory but {topo.n_atoms} in the topology"
            + (f" {topology}" if topology else "")
        )
    return topo


def _frames_of(arrays: dict[str, Any], offset: int, path: Path, topo: Topology, state: StatePoint | None,
               metadata: dict[str, Any]) -> Frames:
    """A raw block of arrays (its first frame is frame ``offset`` of the file) as checked Frames:
    forces present, values finite, a box in every frame, positions within range of the box."""
    _check_arrays(arrays, path, offset)
    try:
        check_positions_in_range(arrays["positions"], arrays["box"],
                                 frame_numbers=offset + np.arange(len(arrays["positions"])))
    except FramesError as exc:
        raise TrajectoryImportError(f"{path}: {str(exc).replace('particle', 'atom', 1)}") from None
    try:
        return Frames(
            positions=arrays["positions"], box=arrays["box"], forces=arrays["forces"],
            velocities=arrays.get("velocities"), time_fs=arrays["time_fs"], types=topo.types,
            type_names=topo.type_names, masses=topo.masses, molecule_ids=topo.molecule_ids, state=state,
            potential_energy_kcal_mol=arrays.get("potential_energy"), metadata=dict(metadata),
        )
    except FramesError as exc:
        raise TrajectoryImportError(f"{path}: frames {offset}..: {exc}") from None


def _later_blocks(first: Frames, raw_iter: Iterator[dict[str, Any]], path: Path,
                  to_frames: Callable[[dict[str, Any], int], Frames]) -> Iterator[Frames]:
    """``first``, then the Frames of the remaining raw blocks, each with velocities and potential
    energies present exactly when the first block has them."""
    offset = first.n_frames
    yield first
    for arrays in raw_iter:
        block = to_frames(arrays, offset)
        if (block.velocities is None) != (first.velocities is None):
            raise TrajectoryImportError(f"{path}: velocities present in some frames only (frame {offset})")
        if (block.potential_energy_kcal_mol is None) != (first.potential_energy_kcal_mol is None):
            raise TrajectoryImportError(f"{path}: potential energies present in some frames only (frame {offset})")
        offset += block.n_frames
        yield block


def iter_trajectory(path: str | os.PathLike, format: str, *, topology: str | os.PathLike | None = None,
                    lammps_units: str | None = None, state: StatePoint | None = None,
                    molecule: "str | Molecule | None" = None, timestep_fs: float | None = None,
                    block_size: int = 256, molecules: "Sequence[Any] | None" = None,
                    energy_file: str | os.PathLike | None = None,
                    first_block_only: bool = False) -> tuple[Topology, Iterator[Frames]]:
    """The topology and an iterator over :class:`Frames` of at most ``block_size`` frames each.

    Same arguments and checks as :func:`read_trajectory`; a trajectory larger than memory can be
    converted this way (``run_import`` does). Problems in later frames (NaN, a lost box) are raised
    when the iterator reaches them, naming the file and the frame. ``first_block_only=True``: only
    the first block is wanted (:func:`peek_import`): no potential energies (no log or .edr is read)
    and no whole-file scan for a cut-off last frame.
    """
    path = Path(path)
    _check_arguments(path, format, topology=topology, block_size=block_size, molecule=molecule,
                     molecules=molecules, energy_file=energy_file)
    mol = _resolve_molecule(molecule, path)
    specs = None if molecules is None else _resolve_specs(molecules, path)
    topo, n_atoms, raw_blocks = _open_trajectory(
        path, format, topology=topology, lammps_units=lammps_units, timestep_fs=timestep_fs, block_size=block_size,
        specs=specs, energy_file=energy_file, first_block_only=first_block_only)
    topo = _import_topology(topo, n_atoms, path, format, topology=topology, mol=mol, specs=specs)
    metadata = {"source": str(path), "format": format, **({"topology": str(topology)} if topology else {}),
                **({"lammps_units": lammps_units} if format == "lammps" else {})}

    def to_frames(arrays: dict[str, Any], offset: int) -> Frames:
        return _frames_of(arrays, offset, path, topo, state, metadata)

    # the first block is read now, so that a file without forces or box fails at once
    raw_iter = iter(raw_blocks)
    first = next(raw_iter, None)
    if first is None:
        raise TrajectoryImportError(f"{path}: no frames")
    return topo, _later_blocks(to_frames(first, 0), raw_iter, path, to_frames)


# --------------------------------------------------------------------------------------------------
# checks and molecule definitions
# --------------------------------------------------------------------------------------------------

def _check_arrays(arrays: dict[str, Any], path: Path, offset: int = 0) -> None:
    """Forces present, everything finite, a box in every frame; ``offset``: index of the first frame."""
    if arrays.get("forces") is None:
        raise TrajectoryImportError(
            f"{path}: the trajectory has no forces (LAMMPS: dump fx fy fz; GROMACS: nstfout; extxyz: a "
            "per-atom 'forces' array); force matching needs them"
        )
    for name in ("positions", "forces", "velocities"):
        value = arrays.get(name)
        bad = None if value is None else first_nonfinite(value)
        if bad is not None:
            frame, atom = bad[:2]
            raise TrajectoryImportError(f"{path}: {name} hold NaN or inf (frame {offset + frame}, atom {atom})")
    box = arrays["box"]
    if box is None or not np.all(np.isfinite(box)) or np.any(np.abs(np.linalg.det(box)) < 1e-9):
        raise TrajectoryImportError(
            f"{path}: the box (unit cell) is missing or has zero volume in at least one frame "
            f"(of frames {offset}..{offset + len(arrays['positions']) - 1}); "
            "periodic all-atom data need it"
        )


def _resolve_molecule(molecule: "str | Molecule | None", path: Path) -> "Molecule | None":
    if molecule is None or not isinstance(molecule, (str, os.PathLike)):
        return molecule
    from thermocg.allatom.molecules import get_molecule

    try:
        return get_molecule(molecule)
    except ValueError as exc:
        raise TrajectoryImportError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class _MoleculeSpec:
    """A declared molecule type of an imported mixture."""

    molecule: "Molecule"
    name_in_file: str
    molecule_ids: tuple[int, int] | None


def _resolve_specs(molecules: "Sequence[Any]", path: Path) -> list[_MoleculeSpec]:
    specs = []
    for k, item in enumerate(molecules):
        get = item.get if isinstance(item, dict) else (lambda key, default=None, _i=item: getattr(_i, key, default))
        if get("molecule") is None:
            raise TrajectoryImportError(f"{path}: molecules[{k}] names no molecule")
        molecule = _resolve_molecule(get("molecule"), path)
        ids = get("molecule_ids")
        specs.append(_MoleculeSpec(molecule, str(get("name_in_file") or molecule.name),
                                   None if ids is None else (int(ids[0]), int(ids[1]))))
    names = [s.molecule.name for s in specs]
    in_file = [s.name_in_file for s in specs]
    if len(set(names)) != len(names) or len(set(in_file)) != len(in_file):
        raise TrajectoryImportError(f"{path}: molecules declares a molecule type twice ({names}, in the file "
                                    f"{in_file})")
    return specs


def _apply_molecules(topo: Topology | None, specs: list[_MoleculeSpec], n_atoms: int, path: Path, *,
                     check_masses: bool = True) -> Topology:
    """Check the file's molecules against the declared molecule types (atom counts, contiguity and,
    with ``check_masses``, the file's atom masses to 1 %) and rebuild the topology from their
    definitions (atom names, masses, types), in the file's atom order."""
    from thermocg.allatom.mixture import site_type_names

    if topo is None or topo.n_atoms != n_atoms:
        raise TrajectoryImportError(
            f"{path}: a mixture needs the file's molecules and their types (a GROMACS .tpr or .top, a "
            "LAMMPS data file with molecule IDs, an extxyz with molecule ids and molecule types)")
    by_name = {s.name_in_file: k for k, s in enumerate(specs)}
    groups = topo.molecule_atoms()
    component_of = np.empty(len(groups), dtype=np.int64)
    unknown: dict[str, int] = {}
    for m, atoms in enumerate(groups):
        name = topo.molecule_names[m]
        if name not in by_name:
            unknown[name] = unknown.get(name, 0) + 1
            continue
        component_of[m] = by_name[name]
    if unknown:
        raise TrajectoryImportError(
            f"{path}: molecule type(s) {', '.join(f'{n!r} ({c} molecules)' for n, c in unknown.items())} of the "
            f"file are not declared in molecules (declared, as named in the file: {list(by_name)})")
    counts = np.bincount(component_of, minlength=len(specs))
    absent = [specs[k].molecule.name for k in np.flatnonzero(counts == 0)]
    if absent:
        raise TrajectoryImportError(f"{path}: declared molecule type(s) {absent} do not occur in the file")
    # (no cross interactions are needed to name the types: the file's forces are what they are)
    site_types = site_type_names([s.molecule for s in specs])
    atom_names: list[str] = [""] * n_atoms
    atom_types: list[str] = [""] * n_atoms
    masses = np.zeros(n_atoms)
    for m, atoms in enumerate(groups):
        spec = specs[component_of[m]]
        molecule = spec.molecule
        if len(atoms) != molecule.n_sites:
            raise TrajectoryImportError(
                f"{path}: molecule {m + 1} ({spec.name_in_file}) has {len(atoms)} atoms, but {molecule.name} "
                f"has {molecule.n_sites} sites")
        if not np.array_equal(atoms, np.arange(atoms[0], atoms[0] + len(atoms))):
            raise TrajectoryImportError(
                f"{path}: the atoms of molecule {m + 1} ({spec.name_in_file}) are not contiguous in "
                f"{molecule.name}'s site order, as a molecule definition requires")
        if check_masses and not np.allclose(topo.masses[atoms], molecule.masses_amu, rtol=1e-2):
            raise TrajectoryImportError(
                f"{path}: the atom masses of molecule {m + 1} ({spec.name_in_file}: "
                f"{np.round(topo.masses[atoms], 3).tolist()} amu) are not those of {molecule.name} "
                f"({np.round(molecule.masses_amu, 3).tolist()}); is it declared as the right molecule type?")
        for site, atom in enumerate(atoms):
            atom_names[atom] = molecule.sites[site].name
            atom_types[atom] = site_types[component_of[m]][site]
            masses[atom] = molecule.sites[site].mass_amu
    type_names = tuple(dict.fromkeys(t for types in site_types for t in types))
    return Topology(atom_names=atom_names, molecule_ids=topo.molecule_ids,
                    molecule_names=[specs[k].molecule.name for k in component_of], masses=masses,
                    type_names=type_names, types=np.array([type_names.index(t) for t in atom_types]))


# --------------------------------------------------------------------------------------------------
# potential energies: LAMMPS logs, GROMACS .edr
# --------------------------------------------------------------------------------------------------

def _lammps_log_energies(path: Path, unit_style: str | None) -> dict[int, float]:
    """Step -> potential energy (kcal/mol) from the thermo tables of a LAMMPS log (columns Step, PotEng)."""
    conv = 1.0 if unit_style == "real" else units.EV_TO_KCAL_MOL
    energies: dict[int, float] = {}
    step_col = pe_col = None
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise TrajectoryImportError(f"{path}: cannot read the LAMMPS log ({exc.strerror})") from None
    for line in lines:
        tokens = line.split()
        if tokens and tokens[0] == "Step":
            step_col = 0
            pe_col = tokens.index("PotEng") if "PotEng" in tokens else None
            continue
        if step_col is None or pe_col is None:
            continue
        try:
            step, energy = int(float(tokens[step_col])), float(tokens[pe_col])
        except (ValueError, IndexError):
            step_col = pe_col = None  # the table ended ("Loop time of ...")
            continue
        energies[step] = energy * conv
    if not energies:
        raise TrajectoryImportError(f"{path}: no thermo table with Step and PotEng columns (thermo_style custom "
                                    "step pe ... writes one)")
    return energies


def _edr_energies(path: Path, *, required: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """(times ps, potential energies kcal/mol) of a GROMACS .edr, read with pyedr."""
    try:
        import pyedr
    except ImportError:
        message = f"{path}: reading a GROMACS .edr needs pyedr (pip install pyedr)"
        if required:
            raise TrajectoryImportError(message) from None
        warnings.warn(message + "; importing without potential energies", stacklevel=4)
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = pyedr.edr_to_dict(str(path))
    except Exception as exc:  # pyedr raises plain Exceptions for damaged files
        raise TrajectoryImportError(f"{path}: not a readable GROMACS .edr ({type(exc).__name__}: {exc})") from None
    if "Potential" not in data or "Time" not in data:
        raise TrajectoryImportError(f"{path}: the .edr has no Potential energy term")
    return np.asarray(data["Time"], dtype=np.float64), np.asarray(data["Potential"], dtype=np.float64) * units.KJ_TO_KCAL


def _energies_at_times(table: tuple[np.ndarray, np.ndarray], times_ps: np.ndarray, source: Path,
                       path: Path) -> np.ndarray:
    """The .edr energies at the trajectory's frame times (a frame without an energy is an error)."""
    edr_times, energies = table
    order = np.argsort(edr_times)
    edr_times, energies = edr_times[order], energies[order]
    spacing = np.diff(edr_times)
    tolerance = 0.25 * float(spacing[spacing > 0].min()) if np.any(spacing > 0) else 1e-6
    index = np.clip(np.searchsorted(edr_times, times_ps), 1, max(len(edr_times) - 1, 1))
    nearest = np.where(np.abs(edr_times[index - 1] - times_ps) <= np.abs(edr_times[index] - times_ps),
                       index - 1, index) if len(edr_times) > 1 else np.zeros(len(times_ps), dtype=np.int64)
    missing = np.abs(edr_times[nearest] - times_ps) > tolerance
    if np.any(missing):
        raise TrajectoryImportError(
            f"{source}: no potential energy at time {times_ps[np.argmax(missing)]:g} ps of {path} (write "
            "energies at least as often as frames: nstenergy dividing nstxout)")
    return energies[nearest]


def _apply_molecule(topo: Topology | None, molecule: "Molecule | None", n_atoms: int,
                    path: Path) -> Topology | None:
    """With a molecule definition, rebuild the topology as n_atoms / n_sites copies of it."""
    if molecule is None:
        return topo
    n_sites = molecule.n_sites
    if n_atoms % n_sites:
        raise TrajectoryImportError(
            f"{path}: {n_atoms} atoms is not a whole number of {molecule.name} molecules ({n_sites} sites)"
        )
    n_molecules = n_atoms // n_sites
    type_names = molecule.type_names
    site_types = [type_names.index(s.type) for s in molecule.sites]
    if topo is not None and topo.n_atoms == n_atoms:
        # the file's molecules (numbered by first appearance) must be the definition's, atom after atom
        ids, n_found = _numbered_by_first_appearance(topo.molecule_ids)
        expected = np.repeat(np.arange(n_molecules), n_sites)
        if n_found == n_molecules and not np.array_equal(ids, expected):
            raise TrajectoryImportError(
                f"{path}: the atoms of each molecule in the file are not contiguous in {molecule.name}'s "
                "site order, as a molecule definition requires"
            )
    return Topology(
        atom_names=molecule.site_names * n_molecules,
        molecule_ids=np.repeat(np.arange(n_molecules), n_sites),
        molecule_names=[molecule.name] * n_molecules,
        masses=np.tile(molecule.masses_amu, n_molecules),
        type_names=type_names,
        types=np.tile(site_types, n_molecules),
    )


def _numbered_by_first_appearance(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-atom molecule keys (any values) as ids 0.. numbered in order of first appearance (equal
    keys, equal ids), and the number of distinct keys."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse.reshape(-1)], len(first)


def _topology_from_arrays(names: list[str], molecule_keys: np.ndarray, molecule_names_per_atom: list[str],
                          masses: np.ndarray, atom_types: list[str]) -> Topology:
    """A Topology from per-atom arrays; molecules numbered 0.. in order of first appearance."""
    molecule_ids, n_molecules = _numbered_by_first_appearance(molecule_keys)
    molecule_names = [""] * n_molecules
    for atom, mol in enumerate(molecule_ids):
        if not molecule_names[mol]:
            molecule_names[mol] = molecule_names_per_atom[atom]
    type_names = tuple(dict.fromkeys(atom_types))
    types = np.array([type_names.index(t) for t in atom_types], dtype=np.int64)
    return Topology(atom_names=names, molecule_ids=molecule_ids, molecule_names=molecule_names,
                    masses=np.asarray(masses, dtype=np.float64), type_names=type_names, types=types)


# --------------------------------------------------------------------------------------------------
# MDAnalysis (LAMMPS, GROMACS)
# --------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_failed_readers() -> Iterator[None]:
    """Keep MDAnalysis from printing a stray traceback after a file it could not open.

    A reader whose ``__init__`` failed half-way (a junk .trr) is collected later, and its
    ``__del__`` then fails too ("'TRRReader' object has no attribute '_xdr'"), which Python prints as
    "Exception ignored in ...". On a failure, collect such readers here, with those exceptions (from
    MDAnalysis only) dropped: the error we raise names the file and says enough."""
    try:
        yield
    except BaseException:
        previous = sys.unraisablehook

        def hook(unraisable: Any) -> None:
            owner = getattr(unraisable.object, "__module__", "") or ""
            if not owner.startswith("MDAnalysis"):
                previous(unraisable)

        sys.unraisablehook = hook
        try:
            gc.collect()
        finally:
            sys.unraisablehook = previous
        raise


def _check_trr(path: Path) -> int:
    """The number of complete frames of a .trr. The first frame must read (an empty or junk file is
    refused before MDAnalysis sees it); a last frame cut off (a killed run) is left out with a
    :class:`TrajectoryImportWarning`, where MDAnalysis would drop it without a word."""
    from MDAnalysis.lib.formats.libmdaxdr import TRRFile

    if path.stat().st_size == 0:
        raise TrajectoryImportError(f"{path}: empty file (no GROMACS .trr frames)")
    try:
        with TRRFile(str(path)) as trr:
            trr.read()
            n_frames = len(trr.offsets)
            if n_frames > 1:
                trr.seek(n_frames - 1)
                try:
                    trr.read()
                except (OSError, EOFError, ValueError, RuntimeError, StopIteration):
                    n_frames -= 1
                    warnings.warn(f"{path}: the last frame (frame {n_frames}) is cut off, as when a run is killed "
                                  f"while writing; importing the {n_frames} complete frames", TrajectoryImportWarning,
                                  stacklevel=5)
    except (OSError, EOFError, ValueError, RuntimeError, StopIteration) as exc:
        raise TrajectoryImportError(
            f"{path}: not a GROMACS .trr file, or damaged in its first frame (the XDR reader says: {exc})"
        ) from None
    return n_frames


def _library_message(exc: BaseException) -> str:
    """A reading library's complaint on one line (a bare StopIteration means the file ended early)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, (StopIteration, EOFError)) and not text:
        return "the file is empty or ends early"
    return text or type(exc).__name__


def _universe(topology: Path, trajectory: Path, *, format: str, topology_format: str | None = None,
              **kwargs: Any):
    """An MDAnalysis Universe: the topology read first, then the trajectory, so that an error names
    the file it comes from. MDAnalysis raises many kinds (ValueError, OSError, StopIteration for a
    junk .gro, ...): every one becomes a TrajectoryImportError."""
    import MDAnalysis as mda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with _quiet_failed_readers():
                universe = mda.Universe(str(topology), **({"topology_format": topology_format}
                                                          if topology_format else {}))
        except Exception as exc:
            raise TrajectoryImportError(
                f"{topology}: not a readable topology for {trajectory} ({_library_message(exc)})") from None
        try:
            with _quiet_failed_readers():
                universe.load_new(str(trajectory), format=format, **kwargs)
        except Exception as exc:
            msg = _library_message(exc)
            if "number of atoms" in msg.lower() or "same number" in msg.lower():
                raise TrajectoryImportError(
                    f"{trajectory}: the atom count does not match the topology {topology} ({msg})"
                ) from None
            raise TrajectoryImportError(f"{trajectory}: not a readable {format} trajectory ({msg})") from None
    return universe


def _mda_blocks(universe: Any, path: Path, block_size: int, *,
                n_frames: int | None = None) -> Iterator[dict[str, Any]]:
    """Positions, forces, velocities, boxes, times and steps, ``block_size`` frames at a time, in
    MDAnalysis units (which keeps coordinates in float32: relative precision ~6e-8).

    ``n_frames``: the frames to read (default: all MDAnalysis counts). MDAnalysis's XDR readers stop
    quietly at a frame they cannot read; a block that comes up short is an error naming the frame."""
    from MDAnalysis.exceptions import NoDataError
    from MDAnalysis.lib.mdamath import triclinic_vectors

    n_frames = len(universe.trajectory) if n_frames is None else n_frames
    has_forces = has_velocities = True
    for start in range(0, n_frames, block_size):
        positions, forces, velocities, boxes, times, steps = [], [], [], [], [], []
        try:
            for ts in universe.trajectory[start:start + block_size]:
                positions.append(np.array(ts.positions, dtype=np.float64))
                if has_forces:
                    try:
                        forces.append(np.array(ts.forces, dtype=np.float64))
                    except (NoDataError, AttributeError):
                        has_forces = False
                if has_velocities:
                    try:
                        velocities.append(np.array(ts.velocities, dtype=np.float64))
                    except (NoDataError, AttributeError):
                        has_velocities = False
                dims = ts.dimensions
                boxes.append(None if dims is None else triclinic_vectors(np.asarray(dims, dtype=np.float64)))
                times.append(float(ts.time))
                steps.append(ts.data.get("step", ts.frame))
        except (ValueError, OSError, EOFError, IndexError) as exc:
            raise TrajectoryImportError(f"{path}: cannot read frame {start + len(positions)} ({exc}); the file "
                                        "is damaged or truncated") from None
        expected = min(block_size, n_frames - start)
        if len(positions) < expected:
            raise TrajectoryImportError(f"{path}: frame {start + len(positions)} of {n_frames} cannot be read; the "
                                        "file is damaged or truncated")
        yield {
            "positions": np.array(positions),
            "forces": np.array(forces) if has_forces and forces else None,
            "velocities": np.array(velocities) if has_velocities and velocities else None,
            "box": None if any(b is None for b in boxes) else np.array(boxes, dtype=np.float64),
            "time": np.array(times, dtype=np.float64),
            "step": np.array(steps, dtype=np.float64),
        }


def _check_lammps_frames(path: Path, n_read: int) -> None:
    """Warn when a dump holds more frame headers (``ITEM: TIMESTEP``) than MDAnalysis reads: its last
    frame is cut off (a killed run), and MDAnalysis leaves it out without a word."""
    marker, n_headers, tail = b"ITEM: TIMESTEP", 0, b""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            # (the last len(marker) - 1 bytes carry over: a marker split by the chunk is counted once, in
            # the next block; a whole marker cannot fit in them, so none is counted twice)
            block = tail + chunk
            n_headers += block.count(marker)
            tail = block[-(len(marker) - 1):]
    if n_headers > n_read:
        warnings.warn(f"{path}: {n_headers} frame headers but {n_read} complete frames: the last frame is cut off, "
                      f"as when a run is killed while writing; importing the {n_read} complete frames",
                      TrajectoryImportWarning, stacklevel=6)


def _read_lammps(path: Path, data_file: Path, unit_style: str, timestep_fs: float | None, block_size: int, *,
                 specs: list[_MoleculeSpec] | None = None, energies: dict[int, float] | None = None,
                 check_frames: bool = True) -> tuple[Topology, int, Iterator[dict[str, Any]]]:
    u = _universe(data_file, path, format="LAMMPSDUMP", topology_format="DATA", dt=1.0)  # times from steps
    if check_frames:
        _check_lammps_frames(path, len(u.trajectory))
    conv = _LAMMPS_UNITS[unit_style]
    atoms = u.atoms
    if not hasattr(atoms, "masses") or np.any(np.asarray(atoms.masses) <= 0):
        raise TrajectoryImportError(f"{data_file}: the LAMMPS data file gives no (positive) masses")
    type_labels = [str(t) for t in atoms.types]
    resids = np.asarray(atoms.resids) if hasattr(atoms, "resids") else np.arange(len(atoms))
    names = ["molecule"] * len(atoms)
    if specs is not None:
        names = _lammps_molecule_types(resids, specs, data_file)
    topo = _topology_from_arrays(type_labels, resids, names, np.asarray(atoms.masses), type_labels)

    def blocks() -> Iterator[dict[str, Any]]:
        for raw in _mda_blocks(u, path, block_size):
            energy = None
            if energies is not None:
                steps = raw["step"].astype(np.int64)
                missing = [int(st) for st in steps if int(st) not in energies]
                if missing:
                    raise TrajectoryImportError(f"{path}: the LAMMPS log gives no PotEng at dump step {missing[0]}")
                energy = np.array([energies[int(st)] for st in steps])
            yield {
                "positions": raw["positions"],
                "forces": None if raw["forces"] is None else raw["forces"] * conv["force"],
                "velocities": None if raw["velocities"] is None else raw["velocities"] * conv["velocity"],
                "box": raw["box"],
                "time_fs": raw["step"] * (timestep_fs if timestep_fs is not None else 1.0),
                "potential_energy": energy,
            }

    return topo, len(atoms), blocks()


def _lammps_molecule_types(molecule_ids: np.ndarray, specs: list[_MoleculeSpec], data_file: Path) -> list[str]:
    """The declared molecule type of every atom from the ranges of LAMMPS molecule IDs."""
    if any(s.molecule_ids is None for s in specs):
        raise TrajectoryImportError(
            f"{data_file}: a LAMMPS data file has no molecule-type names; give molecule_ids: [first, last] for "
            "every declared molecule type")
    names = np.full(len(molecule_ids), "", dtype=object)
    for spec in specs:
        first, last = spec.molecule_ids
        inside = (molecule_ids >= first) & (molecule_ids <= last)
        if np.any(inside & (names != "")):
            raise TrajectoryImportError(f"{data_file}: the molecule_ids ranges of the molecule types overlap")
        names[inside] = spec.name_in_file
    if np.any(names == ""):
        orphans = np.unique(molecule_ids[names == ""])
        raise TrajectoryImportError(
            f"{data_file}: molecule ID(s) {orphans[:5].tolist()}{' ...' if len(orphans) > 5 else ''} are in no "
            "declared molecule_ids range")
    return [str(n) for n in names]


def _shortest_float32(values: np.ndarray) -> np.ndarray:
    """Each value as the shortest decimal that reads back as the same float32 (400.000030517578 -> 400.00003)."""
    return np.array([float(str(np.float32(v))) for v in np.asarray(values, dtype=np.float64)], dtype=np.float64)


def _fewest_digits(value: float, fits: Any) -> float | None:
    """``value`` rounded to the fewest significant digits (1..15) for which ``fits(rounded)`` holds."""
    if value == 0.0:
        return 0.0 if fits(0.0) else None
    for digits in range(1, 16):
        rounded = float(f"{value:.{digits}g}")
        if fits(rounded):
            return rounded
    return None


class _Float32Times:
    """Frame times (ps) of a .trr restored to the precision the format has (module docstring).

    Called block by block with the times (float32 values, as MDAnalysis reads them) and step numbers:
    the first block with two or more frames fixes t = t_init + step x dt; every frame within one
    float32 step of that line gets its exact value, the others their shortest float32 decimal."""

    def __init__(self) -> None:
        self.t_init: float | None = None
        self.dt_per_step: float | None = None
        self._fitted = False

    @staticmethod
    def _tolerance(times: np.ndarray) -> np.ndarray:
        return np.spacing(np.abs(times).astype(np.float32)).astype(np.float64) * 1.0001

    def _fit(self, times: np.ndarray, steps: np.ndarray) -> None:
        if len(times) < 2:
            return  # (the next block decides)
        self._fitted = True
        if not np.all(np.diff(steps) > 0):
            return
        tolerance = self._tolerance(times)
        estimate = (times[-1] - times[0]) / (steps[-1] - steps[0])

        def line_fits(dt: float) -> bool:
            t_init = _fewest_digits(float(np.median(times - steps * dt)),
                                    lambda t0: bool(np.all(np.abs(times - (t0 + steps * dt)) <= tolerance)))
            if t_init is None:
                return False
            self.t_init = t_init
            return True

        dt = _fewest_digits(float(estimate), line_fits)
        if dt is None:
            self.t_init = None
            return
        line_fits(dt)  # (sets t_init for the dt found)
        self.dt_per_step = dt

    def __call__(self, times_ps: np.ndarray, steps: np.ndarray) -> np.ndarray:
        times = np.asarray(times_ps, dtype=np.float64)
        steps = np.asarray(steps, dtype=np.float64)
        if not self._fitted:
            self._fit(times, steps)
        rounded = _shortest_float32(times)
        if self.dt_per_step is None or self.t_init is None:
            return rounded
        # (the decimal t_init + step dt, as the nearest double: 0.002 x 200000 would give 400.00000000000006)
        exact = np.array([float(f"{t:.12g}") for t in self.t_init + steps * self.dt_per_step])
        return np.where(np.abs(times - exact) <= self._tolerance(times), exact, rounded)


def _read_gromacs(path: Path, topology: Path, block_size: int, *,
                  energies: tuple[np.ndarray, np.ndarray] | None = None, energy_source: Path | None = None
                  ) -> tuple[Topology | None, int, Iterator[dict[str, Any]]]:
    kwargs: dict[str, Any] = {"format": "TRR"}
    if topology.suffix == ".top":
        kwargs["topology_format"] = "ITP"
    n_frames = _check_trr(path)
    u = _universe(topology, path, **kwargs)
    atoms = u.atoms
    topo = None  # a .gro has names and residues but no masses: a molecule definition supplies them
    if topology.suffix in (".tpr", ".top"):
        keys = np.asarray(atoms.molnums) if hasattr(atoms, "molnums") else np.asarray(atoms.resindices)
        mol_names = [str(m) for m in atoms.moltypes] if hasattr(atoms, "moltypes") else [str(r) for r in atoms.resnames]
        types = [str(t) for t in atoms.types] if hasattr(atoms, "types") else [str(n) for n in atoms.names]
        topo = _topology_from_arrays([str(n) for n in atoms.names], keys, mol_names, np.asarray(atoms.masses), types)

    def blocks() -> Iterator[dict[str, Any]]:
        # MDAnalysis base units: A, ps, kJ/mol/A, A/ps (it converts the TRR's nm on reading)
        times = _Float32Times()
        for raw in _mda_blocks(u, path, block_size, n_frames=n_frames):
            time_ps = times(raw["time"], raw["step"])
            yield {
                "positions": raw["positions"],
                "forces": None if raw["forces"] is None else raw["forces"] * units.KJ_TO_KCAL,
                "velocities": None if raw["velocities"] is None else raw["velocities"] * units.FS_TO_PS,
                "box": raw["box"],
                "time_fs": time_ps * units.PS_TO_FS,
                "potential_energy": None if energies is None else _energies_at_times(
                    energies, time_ps, energy_source, path),
            }

    return topo, len(atoms), blocks()


# --------------------------------------------------------------------------------------------------
# ASE (extxyz)
# --------------------------------------------------------------------------------------------------

_MOLECULE_ARRAYS = ("molecule_ids", "molecule_id", "mol_id", "mol-id", "molid")
_MOLECULE_TYPE_ARRAYS = ("molecule_types", "molecule_type", "mol_type", "moltype", "molecule_names")


def _extxyz_energy(atoms: Any) -> float | None:
    """The frame's potential energy in eV (ASE's extxyz reader puts ``energy`` on a calculator), or None."""
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    value = results.get("energy", atoms.info.get("energy"))
    return None if value is None else float(value)


def _extxyz_arrays(images: list[Any], path: Path, offset: int) -> dict[str, Any]:
    from ase import units as ase_units

    n_atoms = len(images[0])
    for k, atoms in enumerate(images):
        if len(atoms) != n_atoms:
            raise TrajectoryImportError(f"{path}: frame {offset + k} has {len(atoms)} atoms, not {n_atoms}")
    forces: list[np.ndarray] | None = []
    for atoms in images:
        f = None
        if atoms.calc is not None and "forces" in getattr(atoms.calc, "results", {}):
            f = atoms.calc.results["forces"]
        elif "forces" in atoms.arrays:
            f = atoms.arrays["forces"]
        if f is None:
            forces = None
            break
        forces.append(np.asarray(f, dtype=np.float64))
    boxes = []
    for atoms in images:
        cell = np.asarray(atoms.get_cell(), dtype=np.float64)
        boxes.append(cell if atoms.pbc.all() and abs(np.linalg.det(cell)) > 1e-9 else None)
    velocities = None
    if all("momenta" in a.arrays for a in images):
        # ASE velocity unit: A / (A sqrt(amu/eV)); ase.units.fs is one femtosecond in that time unit
        velocities = np.array([a.get_velocities() for a in images], dtype=np.float64) * ase_units.fs
    times = [a.info.get("time_fs", a.info.get("time", offset + k)) for k, a in enumerate(images)]
    energies = [_extxyz_energy(a) for a in images]
    if any(e is None for e in energies) and not all(e is None for e in energies):
        frame = next(k for k, e in enumerate(energies) if e is None)
        raise TrajectoryImportError(f"{path}: potential energies present in some frames only (frame {offset + frame})")
    return {
        "potential_energy": None if energies[0] is None else np.array(energies) * units.EV_TO_KCAL_MOL,
        "positions": np.array([a.get_positions() for a in images], dtype=np.float64),
        "forces": None if forces is None else np.array(forces) * units.EV_TO_KCAL_MOL,
        "velocities": velocities,
        "box": None if any(b is None for b in boxes) else np.array(boxes),
        "time_fs": np.asarray(times, dtype=np.float64),
    }


def _ase_message(exc: BaseException) -> str:
    """ASE's complaint without its module prefix (``ase.io.extxyz: ...``), or the exception's kind
    when it says nothing."""
    text = str(exc).strip()
    for prefix in ("ase.io.extxyz:", "ase.io.extxyz :"):
        if text.startswith(prefix):
            text = text[len(prefix):].strip()
    return " ".join(text.split()) or f"{type(exc).__name__} while parsing"


def _read_extxyz(path: Path, topology: Path | None,
                 block_size: int) -> tuple[Topology | None, int, Iterator[dict[str, Any]]]:
    import ase.io

    def read(index: Any) -> Any:
        try:
            return ase.io.read(str(path), index=index, format="extxyz")
        except StopIteration:  # what ASE raises for a file without a single frame
            raise TrajectoryImportError(f"{path}: no frames (the file is empty or blank)") from None
        except Exception as exc:  # ASE raises many kinds (XYZError, ValueError, IndexError, ...)
            raise TrajectoryImportError(f"{path}: not a readable extxyz file ({_ase_message(exc)})") from None

    first = read(0)
    n_atoms = len(first)

    def blocks() -> Iterator[dict[str, Any]]:
        images: list[Any] = []
        offset = 0
        try:
            for atoms in ase.io.iread(str(path), index=":", format="extxyz"):
                images.append(atoms)
                if len(images) == block_size:
                    yield _extxyz_arrays(images, path, offset)
                    offset += len(images)
                    images = []
        except TrajectoryImportError:
            raise
        except Exception as exc:
            raise TrajectoryImportError(
                f"{path}: cannot read frame {offset + len(images)} ({_ase_message(exc)}); the file is damaged or "
                "truncated"
            ) from None
        if images:
            yield _extxyz_arrays(images, path, offset)

    if topology is not None:
        if topology.suffix != ".json":
            raise TrajectoryImportError(f"{topology}: an extxyz topology must be a thermocg topology.json")
        try:
            return Topology.load(topology), n_atoms, blocks()
        except ValueError as exc:
            raise TrajectoryImportError(str(exc)) from None
    key = next((k for k in _MOLECULE_ARRAYS if k in first.arrays), None)
    if key is None:
        return None, n_atoms, blocks()
    names = list(first.arrays["atom_names"]) if "atom_names" in first.arrays else first.get_chemical_symbols()
    type_key = next((k for k in _MOLECULE_TYPE_ARRAYS if k in first.arrays), None)
    if type_key is not None:
        per_atom = [str(t) for t in first.arrays[type_key]]
    else:
        per_atom = [str(first.info.get("molecule", "molecule"))] * n_atoms
    topo = _topology_from_arrays([str(n) for n in names], np.asarray(first.arrays[key]), per_atom,
                                 first.get_masses(), first.get_chemical_symbols())
    return topo, n_atoms, blocks()


# --------------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------------

def _molecule_counts(topology: Topology) -> dict[str, int]:
    """Molecule type -> number of molecules, in order of first appearance."""
    counts: dict[str, int] = {}
    for name in topology.molecule_names:
        counts[name] = counts.get(name, 0) + 1
    return counts


def check_import_composition(topology: Topology, state: StatePoint, item: Any) -> dict[str, int] | None:
    """The molecule counts of an imported mixture, checked against the declared state's mole fractions
    (each within half a molecule); None for one molecule type. A mixture's state must declare them."""
    counts = _molecule_counts(topology)
    if len(counts) < 2:
        if state.mole_fractions is not None:
            raise TrajectoryImportError(f"{item.path}: the state declares mole_fractions, but the file holds one "
                                        f"molecule type ({', '.join(counts)})")
        return None
    if state.mole_fractions is None:
        raise TrajectoryImportError(
            f"{item.path}: the file holds a mixture ({counts}); declare its composition in the state "
            "(state.mole_fractions)")
    from thermocg.config import molecule_key

    # composition keys are the config's names (built-in names or YAML stems) of the declared molecules
    key_of = {}
    for spec in item.molecules or []:
        key_of[_resolve_molecule(spec.molecule, Path(item.path)).name] = molecule_key(str(spec.molecule))
    total = sum(counts.values())
    declared = dict(state.mole_fractions)
    found = {key_of.get(name, name): n for name, n in counts.items()}
    if set(found) != set(declared):
        raise TrajectoryImportError(f"{item.path}: the file holds {sorted(found)}, the state declares mole fractions "
                                    f"of {sorted(declared)}")
    for name, n in found.items():
        if abs(declared[name] * total - n) > 0.5 + 1e-9:
            raise TrajectoryImportError(
                f"{item.path}: {n} of the {total} molecules are {name} (x = {n / total:.4g}), but the state "
                f"declares x = {declared[name]:g}")
    return counts


class ImportPeek(NamedTuple):
    """What the first frame of an import says (:func:`peek_import`)."""

    #: (3, 3) A, rows are the cell vectors
    box_A: np.ndarray
    n_molecules: int
    #: total mass / box volume of the first frame
    density_g_cm3: float
    n_atoms: int
    mass_amu: float
    #: molecule type -> count (the file's names, or the molecule definitions')
    molecule_counts: dict[str, int]
    time_fs: float


def _import_arguments(item: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`iter_trajectory` that an import (an ImportConfig) gives."""
    return {"topology": item.topology, "lammps_units": item.lammps_units, "molecule": item.molecule,
            "timestep_fs": item.timestep_fs, "molecules": item.molecules, "energy_file": item.energy_file}


def peek_import(item: Any) -> ImportPeek:
    """The box, molecule count and density of an import's first frame, read cheaply (one frame, no
    energies), with the same checks as the import (errors are :class:`TrajectoryImportError`
    naming the file).

    ``item``: an :class:`~thermocg.config.ImportConfig` (or anything with its attributes). A study
    calls this in its validation (the density of a temperature-only state, the cutoffs against the
    box); :func:`resolve_import_states` uses it."""
    with warnings.catch_warnings():
        # (a cut-off last frame concerns the import, which says so; the first frame is whole)
        warnings.simplefilter("ignore", TrajectoryImportWarning)
        topo, blocks = iter_trajectory(item.path, item.format, block_size=1, first_block_only=True,
                                       **_import_arguments(item))
        first = next(blocks)
    counts = _molecule_counts(topo)
    return ImportPeek(box_A=first.box[0].copy(), n_molecules=len(topo.molecule_names),
                      density_g_cm3=float(first.density_g_cm3[0]), n_atoms=topo.n_atoms,
                      mass_amu=float(topo.masses.sum()), molecule_counts=counts, time_fs=float(first.time_fs[0]))


def resolve_import_states(config: "Config") -> "Config":
    """Give every import whose state has a temperature only the density of its data (its first frame's,
    :data:`DATA_DENSITY_DIGITS` significant digits), in place; then check the state labels again
    (:meth:`~thermocg.config.Config.check_state_labels`). Returns ``config``.

    The import stage calls it; so must anything that needs the imports' labels before importing (a
    study's validation and plan)."""
    for item in config.imports:
        if item.state is None or not item.state.density_from_data:
            continue
        density = peek_import(item).density_g_cm3
        item.state = dataclasses.replace(item.state, density_g_cm3=float(f"{density:.{DATA_DENSITY_DIGITS}g}"))
    config.check_state_labels()
    return config


def check_import_density(item: Any, box_density_g_cm3: float, *, from_first_frame: bool = False) -> None:
    """Warn (:class:`ImportDensityWarning`) when the density of an import's state differs from its
    boxes' (``box_density_g_cm3``: the first frame's in a validation, the mean of all frames in the
    import) by more than :data:`DENSITY_TOLERANCE` (2 %). ``from_first_frame``: the state's density
    was taken from the first frame (then a difference means the box changes along the trajectory)."""
    state = item.state
    if state is None or state.density_g_cm3 is None:
        return
    declared = float(state.density_g_cm3)
    difference = (declared - box_density_g_cm3) / box_density_g_cm3
    if abs(difference) > DENSITY_TOLERANCE and from_first_frame:
        warnings.warn(
            f"{item.path}: the state took the density of the first frame, {declared:g} g/cm^3, but the boxes "
            f"hold {box_density_g_cm3:.4g} g/cm^3 on average ({100 * difference:+.1f} %): the box changes along the "
            f"trajectory (NPT data?); the frames are labelled {state.to_state().label}. Declare the density "
            "(or the pressure) the state should carry", ImportDensityWarning, stacklevel=2)
    elif abs(difference) > DENSITY_TOLERANCE:
        warnings.warn(
            f"{item.path}: the state declares density_g_cm3 = {declared:g}, but its boxes hold "
            f"{box_density_g_cm3:.4g} g/cm^3 ({100 * difference:+.1f} %); the frames are labelled "
            f"{state.to_state().label} as declared. Declare the density the data have, or give temperature_K "
            "alone to take it from the data", ImportDensityWarning, stacklevel=2)


def _source_files(item: Any) -> list[str]:
    """Every file an import reads: the trajectory, its topology, the energy file (or the .edr found
    beside a .trr) and the molecule definitions given as YAML files (their sha256 go to metadata.json)."""
    files = [item.path, item.topology, item.energy_file]
    if item.format == "gromacs" and item.energy_file is None:
        edr = Path(item.path).with_suffix(".edr")
        files.append(str(edr) if edr.is_file() else None)
    molecules = [item.molecule] + [m.molecule if not isinstance(m, dict) else m.get("molecule")
                                   for m in (item.molecules or [])]
    files += [str(m) for m in molecules if m is not None and Path(str(m)).is_file()]
    return [str(f) for f in dict.fromkeys(files) if f is not None]


def _imports_to_run(config: "Config", state: str | list[str] | None) -> list[tuple[Any, str, bool]]:
    """(import, state label, density taken from the data) of every import of ``config`` to run (those
    labelled ``state`` when given). Every import declares a state, the temperature-only ones get
    the density of their data (:func:`resolve_import_states`), no two share a label, and every
    wanted label is declared."""
    if not config.imports:
        raise TrajectoryImportError("imports: the config lists no trajectories to import")
    for k, item in enumerate(config.imports):
        if item.state is None:
            raise TrajectoryImportError(f"imports[{k}] ({item.path}): declare the state point "
                                        "(state: temperature_K ...)")
    from_data = [item.state.density_from_data for item in config.imports]
    resolve_import_states(config)
    labels = [item.state.to_state().label for item in config.imports]
    for k, (item, label) in enumerate(zip(config.imports, labels)):
        if labels.count(label) > 1:
            raise TrajectoryImportError(f"imports[{k}] ({item.path}): state {label} is imported twice")
    if state is not None:
        wanted = {state} if isinstance(state, str) else set(state)
        missing = sorted(wanted - set(labels))
        if missing:
            raise TrajectoryImportError(f"imports: no trajectory declared for state(s) {missing} (declared: {labels})")
    return [(item, label, density_from_data) for item, label, density_from_data in zip(config.imports, labels, from_data)
            if state is None or label in wanted]


def _import_one(item: Any, label: str, rd: Any, *, density_from_data: bool) -> Path:
    """Import one trajectory into ``rd.allatom(label)`` (:func:`run_import`), streaming it block by
    block to traj.h5md while thermo.csv gathers each frame's time (ps), volume (A^3) and density
    (g/cm^3); the mean density is checked against the state's (:func:`check_import_density`)."""
    from thermocg import provenance
    from thermocg.config import to_dict, write_resolved
    from thermocg.dataset import H5MDWriter
    from thermocg.rundir import atomic_write_text

    point = item.state.to_state()
    topo, blocks = iter_trajectory(item.path, item.format, state=point, **_import_arguments(item))
    composition = check_import_composition(topo, point, item)
    out_dir = rd.allatom(label)
    prov = provenance.collect(_source_files(item))
    first = next(blocks)
    rows = ["time_ps,volume_A3,density_g_cm3"]
    densities_list: list[np.ndarray] = []
    with H5MDWriter(
        rd.allatom_trajectory(label), types=topo.types, type_names=topo.type_names, masses=topo.masses,
        kind="allatom", state=point, has_forces=True, has_velocities=first.velocities is not None,
        molecule_ids=topo.molecule_ids, metadata={**first.metadata, "provenance": prov},
        has_potential_energy=first.potential_energy_kcal_mol is not None,
    ) as writer:
        for block in itertools.chain([first], blocks):
            writer.append_frames(block)
            densities_list.append(block.density_g_cm3)
            for t, v, d in zip(block.time_fs * units.FS_TO_PS, block.volume_A3, block.density_g_cm3):
                rows.append(f"{t:.6f},{v:.6f},{d:.6f}")
        n_frames = writer.n_frames
    densities = np.concatenate(densities_list)
    check_import_density(item, float(densities.mean()), from_first_frame=density_from_data)
    topo.save(out_dir / "topology.json")
    atomic_write_text(out_dir / "thermo.csv", "\n".join(rows) + "\n")
    metadata = {
        "state": point.to_dict(),
        "source": {"format": item.format, **to_dict(item)},
        "n_frames": n_frames,
        "n_atoms": topo.n_atoms,
        "box_density_g_cm3": {"mean": float(densities.mean()), "min": float(densities.min()),
                              "max": float(densities.max())},
        "density_source": "first frame of the data" if density_from_data else "declared",
        "potential_energies": first.potential_energy_kcal_mol is not None,
        **({"molecule_counts": composition} if composition else {}),
        "provenance": prov,
    }
    atomic_write_text(out_dir / "metadata.json", json.dumps(metadata, indent=2, default=str))
    write_resolved(item, out_dir / "resolved.yaml")
    return rd.allatom_trajectory(label)


def run_import(config: "Config", run_dir: str | os.PathLike, *,
               state: str | list[str] | None = None) -> list[Path]:
    """Import every trajectory of ``config.imports`` (or those whose state label is in ``state``)
    into ``RUN_DIR/allatom/<state label>/``.

    Writes the same layout as generation: ``traj.h5md`` (all-atom H5MD with forces),
    ``topology.json``, ``thermo.csv`` (time_ps, volume_A3, density_g_cm3 per frame),
    ``metadata.json`` (state point, source files and their sha256, versions) and ``resolved.yaml``.
    Relative paths in the config are relative to the working directory. Returns the trajectories.
    """
    from thermocg.rundir import RunDir

    to_run = _imports_to_run(config, state)
    rd = RunDir(run_dir)
    return [_import_one(item, label, rd, density_from_data=from_data) for item, label, from_data in to_run]
