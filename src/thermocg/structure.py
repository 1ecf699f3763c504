"""CG structures and trajectories written by other programs, read into :class:`~thermocg.frames.Frames`.

What ``thermocg run-md`` starts from and what ``thermocg analyze`` reads. Formats, and the library
that reads each (positions A, box A with rows the cell vectors, time fs, at this edge):

==========================  ===========================  ============================================
file                        read by                      bead type names (in order of preference)
==========================  ===========================  ============================================
our H5MD (.h5md, .h5)       :mod:`thermocg.dataset`      the file's type names
extxyz (.extxyz, .xyz)      ASE                          the per-atom ``bead_type`` array (as
                                                         thermocg's ExtXYZReporter and
                                                         ``atoms_from_frames`` write it), else the
                                                         chemical symbols
LAMMPS data                 MDAnalysis (the atom style   the ``Atom Type Labels`` section, else a
                            from the ``Atoms # style``   comment after each type in ``Masses``
                            comment)                     (``1 32.04 # MeOH``), else the type number
.gro, .pdb                  MDAnalysis                   atom names, else residue names
any trajectory MDAnalysis   MDAnalysis, with             as its topology
reads (.xtc, .trr, .dcd,    ``topology=`` (.gro, .pdb,
LAMMPS dump, H5MD of other  LAMMPS data, .tpr, ...)
programs), ASE .traj
==========================  ===========================  ============================================

Bead types are matched **by name**. With the names a model knows (``type_names=``, as run-md
passes), the first of the candidate name sets above whose every name the model knows is taken, so a
.gro whose atom names are bead names and one whose residue names are both work; when none fits, a
:class:`StructureError` names the unknown types and where they came from. ``bead_types`` renames
names of the file first (``{"1": "MeOH"}`` for a LAMMPS type number, ``{"MEOH": "MeOH"}`` for a name
cut to the 4 or 5 characters .pdb and .gro allow).

Masses (amu) come from the file where it states them: our H5MD, a LAMMPS data ``Masses`` section, an
extxyz ``masses`` array, a topology that carries masses (.tpr, .psf). .gro and .pdb files have none
(MDAnalysis would guess them from element names, which CG bead names are not), nor does a model file
(a potential has no masses). ``masses_amu`` (``{"MeOH": 32.04}``, per bead type after renaming)
overrides the file. :func:`read_structure` requires a mass for every bead; :func:`load_trajectory`
reports whether the masses are known (the mass density needs them; the other analyses do not).

Time: our H5MD, extxyz files with a ``time_fs`` entry (thermocg writes it) and MDAnalysis readers
that know it (.xtc, .trr, .dcd) give each frame's time (single-precision times that are evenly spaced
to that precision are put back on their even grid); ``frame_interval_fs`` overrides it (a LAMMPS
dump's frames are numbered by step, not time).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thermocg.frames import Frames, FramesError, StatePoint

__all__ = ["StructureError", "read_structure", "load_trajectory", "LoadedTrajectory", "parse_assignments",
           "lammps_data_header"]

#: suffixes of our H5MD files and of ASE's formats; every other file goes to MDAnalysis
H5MD_SUFFIXES = (".h5md", ".h5")
EXTXYZ_SUFFIXES = (".extxyz", ".xyz")
ASE_SUFFIXES = (".traj",)
#: LAMMPS atom styles (``Atoms # style``) and their columns as MDAnalysis's DATAParser names them
LAMMPS_ATOM_STYLES = {
    "atomic": "id type x y z",
    "charge": "id type charge x y z",
    "molecular": "id resid type x y z",
    "bond": "id resid type x y z",
    "angle": "id resid type x y z",
    "full": "id resid type charge x y z",
}


class StructureError(ValueError):
    """A structure or trajectory file that cannot be used; the message names the file and the problem."""


@dataclass
class _Raw:
    """What a reader found in a file, before bead types are chosen.

    positions (F, N, 3) A; boxes (F, 3, 3) A; times_fs (F,) or None (unknown); candidates:
    (description, names (N,)) in order of preference; masses (N,) amu or None (the file has none).
    """

    path: Path
    positions: np.ndarray
    boxes: np.ndarray
    times_fs: np.ndarray | None
    candidates: list[tuple[str, np.ndarray]]
    masses: np.ndarray | None


@dataclass
class LoadedTrajectory:
    """A trajectory for the analyses: ``frames`` (in memory, or an open H5MD file read lazily),
    ``masses_known`` (False: masses were neither in the file nor given; ``frames.masses`` are zeros),
    ``type_source`` (where the bead type names came from), ``path``."""

    frames: Any
    masses_known: bool
    type_source: str
    path: Path

    def close(self) -> None:
        close = getattr(self.frames, "close", None)
        if close is not None:
            close()


def parse_assignments(values: Sequence[str] | Mapping[str, Any] | None, flag: str, *,
                      number: bool = False) -> dict[str, Any]:
    """``["A=1", "B=2"]`` (a repeated command-line option ``flag``; commas also separate) as a dict;
    values are positive floats with ``number``. A mapping is returned as a dict, checked the same way."""
    if values is None:
        return {}
    if isinstance(values, Mapping):
        items = [(str(k), v) for k, v in values.items()]
    else:
        items = []
        for value in values:
            for part in str(value).split(","):
                if not part.strip():
                    continue
                if "=" not in part:
                    raise StructureError(f"{flag}: expected NAME=VALUE, got {part.strip()!r}")
                name, _, text = part.partition("=")
                items.append((name.strip(), text.strip()))
    out: dict[str, Any] = {}
    for name, value in items:
        if not name or value in ("", None):
            raise StructureError(f"{flag}: expected NAME=VALUE, got {name}={value}")
        if number:
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise StructureError(f"{flag}: {name}={value}: the value is not a number") from None
            if not (np.isfinite(value) and value > 0):
                raise StructureError(f"{flag}: {name}={value}: must be positive")
        if name in out and out[name] != value:
            raise StructureError(f"{flag}: {name} is given twice ({out[name]} and {value})")
        out[name] = value
    return out


# --------------------------------------------------------------------------------------------------
# the public readers
# --------------------------------------------------------------------------------------------------

def read_structure(path: str | os.PathLike, *, type_names: Sequence[str] | None = None,
                   bead_types: Mapping[str, str] | None = None, masses_amu: Mapping[str, float] | None = None,
                   frame_index: int = -1, temperature_K: float | None = None) -> Frames:
    """One frame of a structure file as Frames (module docstring for the formats).

    type_names : the bead types a model knows; the file's names must all be among them (after
        ``bead_types``); None: take the file's preferred names as they are
    bead_types : renames of the file's names, ``{name in file: bead type}``
    masses_amu : bead type -> mass (amu), overriding the file's
    frame_index : which frame of a multi-frame file (default the last)
    temperature_K : the state point's temperature, stored with the frame

    Raises :class:`StructureError` naming the file: unreadable, no periodic box, unknown bead types,
    beads without a mass.
    """
    path = Path(path)
    raw = _read(path, topology=None, frame_index=frame_index)
    names, source = _choose_names(raw, type_names, dict(bead_types or {}))
    masses, missing = _masses(raw, names, dict(masses_amu or {}))
    if missing:
        why = "the file gives no masses" if raw.masses is None else "the file gives none, or a non-positive one"
        raise StructureError(f"{path}: no mass for bead type(s) {missing} ({why}); pass "
                             + " ".join(f"--mass {name}=AMU" for name in missing))
    return _frames(raw, names, masses, source, state=None if temperature_K is None else StatePoint(temperature_K))


def load_trajectory(path: str | os.PathLike, *, topology: str | os.PathLike | None = None,
                    bead_types: Mapping[str, str] | None = None, masses_amu: Mapping[str, float] | None = None,
                    frame_interval_fs: float | None = None) -> LoadedTrajectory:
    """Every frame of a trajectory, for the analyses (module docstring for the formats).

    Our H5MD files are opened lazily (nothing is read until an analysis asks) unless names are
    renamed, masses given or times overridden; every other format is read into memory, where
    ``frames.metadata["time_known"]`` says whether the frame times came from the file or from
    ``frame_interval_fs`` (False: the times are placeholders 0, 1, 2 ... fs, and no MSD can be made).
    """
    from thermocg.dataset import DatasetError, H5MDDataset

    path = Path(path)
    if frame_interval_fs is not None and not (np.isfinite(frame_interval_fs) and frame_interval_fs > 0):
        raise StructureError(f"--frame-interval-fs must be positive, got {frame_interval_fs}")
    if not path.exists():
        raise StructureError(f"{path}: no such file")
    if path.suffix.lower() in H5MD_SUFFIXES and not (bead_types or masses_amu or frame_interval_fs):
        try:
            return LoadedTrajectory(H5MDDataset(path), True, "type names of the H5MD file", path)
        except DatasetError:
            if topology is None:
                raise
    raw = _read(path, topology=topology, frame_index=None)
    names, source = _choose_names(raw, None, dict(bead_types or {}))
    masses, missing = _masses(raw, names, dict(masses_amu or {}))
    time_known = raw.times_fs is not None or frame_interval_fs is not None
    if frame_interval_fs is not None:
        raw.times_fs = np.arange(len(raw.positions)) * float(frame_interval_fs)
    frames = _frames(raw, names, masses, source, state=None)
    frames.metadata["time_known"] = time_known
    return LoadedTrajectory(frames, not missing, source, path)


# --------------------------------------------------------------------------------------------------
# names and masses
# --------------------------------------------------------------------------------------------------

def _choose_names(raw: _Raw, known: Sequence[str] | None, renames: dict[str, str]) -> tuple[np.ndarray, str]:
    """Bead type names (N,) and where they came from: the first candidate whose every name (after
    ``renames``) is in ``known``; with ``known`` None the first candidate."""
    candidates = [(what, np.array([renames.get(str(n), str(n)) for n in names], dtype=object))
                  for what, names in raw.candidates]
    if not candidates:
        raise StructureError(f"{raw.path}: the file names no atom or bead types")
    if known is None:
        return candidates[0][1], candidates[0][0]
    known = [str(k) for k in known]
    unknown_of = []
    for what, names in candidates:
        unknown = sorted(set(names) - set(known), key=str)
        if not unknown:
            return names, what
        unknown_of.append((len(unknown), what, unknown))
    _, what, unknown = min(unknown_of, key=lambda item: item[0])
    tried = ", ".join(w for w, _ in candidates)
    raise StructureError(
        f"{raw.path}: bead type(s) {unknown} ({what}s) are unknown to the model, which knows {known} "
        f"(looked at: {tried}); name the beads as the model does, or map names with --bead-type NAME=TYPE")


def _masses(raw: _Raw, names: np.ndarray, given: dict[str, float]) -> tuple[np.ndarray, list[str]]:
    """Masses (N,) amu: the file's, overridden per bead type by ``given``; 0 where unknown. Also
    returns the bead types without a positive mass."""
    unknown_given = sorted(set(given) - {str(n) for n in names})
    if unknown_given:
        raise StructureError(f"--mass: bead type(s) {unknown_given} are not in {raw.path} "
                             f"(its types: {sorted({str(n) for n in names})})")
    masses = np.zeros(len(names)) if raw.masses is None else np.asarray(raw.masses, dtype=np.float64).copy()
    for name, value in given.items():
        masses[names == name] = float(value)
    missing = sorted({str(n) for n, m in zip(names, masses) if not m > 0})
    return masses, missing


def _frames(raw: _Raw, names: np.ndarray, masses: np.ndarray, source: str, *, state: StatePoint | None) -> Frames:
    type_names = tuple(dict.fromkeys(str(n) for n in names))
    lookup = {name: k for k, name in enumerate(type_names)}
    types = np.array([lookup[str(n)] for n in names], dtype=np.int64)
    try:
        return Frames(positions=raw.positions, box=raw.boxes, types=types, type_names=type_names, masses=masses,
                      time_fs=raw.times_fs, state=state,
                      metadata={"source": str(raw.path), "bead_types_from": source})
    except FramesError as exc:
        raise StructureError(f"{raw.path}: {exc}") from None


# --------------------------------------------------------------------------------------------------
# readers per format
# --------------------------------------------------------------------------------------------------

def _read(path: Path, *, topology: str | os.PathLike | None, frame_index: int | None) -> _Raw:
    """Dispatch on the format; ``frame_index`` None reads every frame."""
    if not path.exists():
        raise StructureError(f"{path}: no such file")
    if topology is not None and not Path(topology).exists():
        raise StructureError(f"{topology}: no such topology file")
    suffix = path.suffix.lower()
    if suffix in EXTXYZ_SUFFIXES + ASE_SUFFIXES:  # self-contained: a topology is not used
        return _read_ase(path, frame_index)
    if suffix in H5MD_SUFFIXES:
        try:
            return _read_h5md(path, frame_index)
        except StructureError:
            if topology is None:
                raise  # an H5MD file of another program: MDAnalysis reads it with a topology
    return _read_mdanalysis(path, None if topology is None else Path(topology), frame_index)


def _read_h5md(path: Path, frame_index: int | None) -> _Raw:
    from thermocg.dataset import DatasetError, H5MDDataset

    try:
        with H5MDDataset(path) as ds:
            if frame_index is not None and not -len(ds) <= frame_index < len(ds):
                raise StructureError(f"{path}: frame {frame_index} is outside its {len(ds)} frames")
            frames = ds.read(None if frame_index is None else frame_index % len(ds))
    except DatasetError as exc:
        raise StructureError(str(exc)) from None
    names = np.array([frames.type_names[t] for t in frames.types], dtype=object)
    return _Raw(path, frames.positions, frames.box, frames.time_fs, [("H5MD type name", names)], frames.masses)


def _read_ase(path: Path, frame_index: int | None) -> _Raw:
    import ase.io

    try:
        images = ase.io.read(str(path), index=":" if frame_index is None else frame_index)
    except Exception as exc:  # ASE raises many error types for a file it cannot parse
        raise StructureError(f"{path}: ASE cannot read it ({type(exc).__name__}: {exc})") from None
    images = images if isinstance(images, list) else [images]
    if not images:
        raise StructureError(f"{path}: no frames")
    n = len(images[0])
    positions, boxes, times = [], [], []
    for k, atoms in enumerate(images):
        if len(atoms) != n:
            raise StructureError(f"{path}: frame {k} has {len(atoms)} atoms, frame 0 has {n}")
        if not all(atoms.pbc) or atoms.cell.rank != 3:
            raise StructureError(f"{path}: frame {k} has no periodic 3D cell (extxyz needs a Lattice and pbc)")
        positions.append(atoms.get_positions())
        boxes.append(np.array(atoms.cell[:], dtype=np.float64))
        times.append(atoms.info.get("time_fs"))
    first = images[0]
    candidates = []
    if "bead_type" in first.arrays:
        candidates.append(("bead_type array entry", np.asarray(first.arrays["bead_type"], dtype=object)))
    candidates.append(("chemical symbol", np.asarray(first.get_chemical_symbols(), dtype=object)))
    masses = np.asarray(first.arrays["masses"], dtype=np.float64) if "masses" in first.arrays else None
    time_fs = None if any(t is None for t in times) else np.asarray(times, dtype=np.float64)
    return _Raw(path, np.asarray(positions), np.asarray(boxes), time_fs, candidates, masses)


def lammps_data_header(path: str | os.PathLike) -> dict[str, Any] | None:
    """What MDAnalysis does not read from a LAMMPS data file: the atom style of its ``Atoms # style``
    comment, the type labels (``Atom Type Labels``) and the names in ``Masses`` comments, as
    ``{"atom_style": str | None, "labels": {type: name}, "mass_comments": {type: name}}``; None
    when the file is not a LAMMPS data file (no ``xlo xhi`` line before its first section)."""
    section = None
    is_data = False
    out: dict[str, Any] = {"atom_style": None, "labels": {}, "mass_comments": {}}
    try:
        handle = open(path, errors="replace")
    except OSError:
        return None
    with handle:
        for k, line in enumerate(handle):
            text, _, comment = line.partition("#")
            stripped = text.strip()
            if k > 0 and re.fullmatch(r"[A-Z][A-Za-z ]*", stripped or "-"):
                section = stripped
                if section == "Atoms":
                    out["atom_style"] = comment.strip().split()[0] if comment.strip() else None
                    break  # the header sections come before Atoms
                continue
            if section is None:
                if stripped.endswith("xlo xhi"):
                    is_data = True
                if k > 200 and not is_data:
                    return None
                continue
            fields = stripped.split()
            if not fields:
                continue
            if section == "Atom Type Labels" and len(fields) >= 2:
                out["labels"][fields[0]] = fields[1]
            elif section == "Masses" and comment.strip():
                out["mass_comments"][fields[0]] = comment.strip().split()[0]
    return out if is_data else None


def _universe(path: Path, topology: Path | None) -> tuple[Any, dict[str, Any] | None]:
    """An MDAnalysis Universe of ``topology`` + ``path`` (or ``path`` alone), and the LAMMPS data
    header of the topology file when it is one."""
    import MDAnalysis as mda

    top = topology or path
    header = lammps_data_header(top)
    kwargs: dict[str, Any] = {}
    if header is not None:
        style = header["atom_style"] or "atomic"
        if style not in LAMMPS_ATOM_STYLES:
            raise StructureError(f"{top}: LAMMPS atom style {style!r} is not supported here; use one of "
                                 f"{sorted(LAMMPS_ATOM_STYLES)}")
        kwargs.update(topology_format="DATA", atom_style=LAMMPS_ATOM_STYLES[style])
        if topology is None:
            kwargs["format"] = "DATA"
    if topology is not None and path.suffix.lower() in (".dump", ".lammpstrj", ".lammpsdump"):
        kwargs["format"] = "LAMMPSDUMP"
    args = [str(top)] if topology is None else [str(topology), str(path)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # guessed masses and elements: masses are taken from the file only
        try:
            return mda.Universe(*args, **kwargs), header
        except Exception as exc:  # MDAnalysis raises many error types for a file it cannot parse
            what = f"{path} with topology {topology}" if topology is not None else str(path)
            hint = "" if topology is not None or path.suffix.lower() in (".gro", ".pdb") else \
                " (a trajectory needs --topology)"
            raise StructureError(f"{what}: MDAnalysis cannot read it ({type(exc).__name__}: {exc}){hint}") from None


def _read_mdanalysis(path: Path, topology: Path | None, frame_index: int | None) -> _Raw:
    from MDAnalysis.lib.mdamath import triclinic_vectors

    u, header = _universe(path, topology)
    atoms = u.atoms
    candidates: list[tuple[str, np.ndarray]] = []
    read = {getattr(a, "attrname", "") for a in getattr(u._topology, "read_attributes", [])}
    if header is not None:
        types = np.asarray(atoms.types, dtype=object)
        for what, table in (("LAMMPS type label", header["labels"]),
                            ("LAMMPS Masses comment", header["mass_comments"])):
            if table and all(t in table for t in types):
                candidates.append((what, np.array([table[t] for t in types], dtype=object)))
        candidates.append(("LAMMPS atom type", types))
        masses = np.asarray(atoms.masses, dtype=np.float64)
    else:
        for attr, what in (("names", "atom name"), ("resnames", "residue name"), ("types", "atom type")):
            if hasattr(atoms, attr) and (attr != "types" or attr in read):
                candidates.append((what, np.asarray(getattr(atoms, attr), dtype=object)))
        masses = np.asarray(atoms.masses, dtype=np.float64) if "masses" in read else None
    if not candidates:
        raise StructureError(f"{path}: the file names no atom or bead types; a trajectory needs --topology "
                             "(.gro, .pdb, LAMMPS data, .tpr ...)" if topology is None else
                             f"{topology}: the topology names no atom or bead types")
    trajectory = u.trajectory
    n_frames = len(trajectory)
    if frame_index is not None:
        if not -n_frames <= frame_index < n_frames:
            raise StructureError(f"{path}: frame {frame_index} is outside its {n_frames} frames")
        selected = [frame_index % n_frames]
    else:
        selected = range(n_frames)
    positions, boxes, times = [], [], []
    time_known = n_frames == 1 or _mda_knows_time(trajectory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no dt information": then the times are not used
        for k in selected:
            ts = trajectory[k]
            if ts.dimensions is None or not np.all(np.asarray(ts.dimensions[:3]) > 0):
                raise StructureError(f"{path}: frame {k} has no periodic box")
            positions.append(np.array(ts.positions, dtype=np.float64))
            boxes.append(triclinic_vectors(np.asarray(ts.dimensions, dtype=np.float64)).astype(np.float64))
            times.append(float(ts.time) * 1000.0)  # MDAnalysis time is in ps
    time_fs = _snap_to_grid(np.asarray(times)) if time_known else None
    return _Raw(path, np.asarray(positions), np.asarray(boxes), time_fs, candidates, masses)


def _snap_to_grid(times_fs: np.ndarray) -> np.ndarray:
    """Times kept in single precision (.xtc, .dcd) put back on their even grid when they are even to
    that precision (1e-6 of the largest time), so that the MSD sees evenly spaced frames."""
    if len(times_fs) < 3:
        return times_fs
    grid = np.linspace(times_fs[0], times_fs[-1], len(times_fs))
    tolerance = 1e-6 * max(float(np.abs(times_fs).max()), 1.0)
    return grid if np.abs(times_fs - grid).max() <= tolerance else times_fs


def _mda_knows_time(trajectory: Any) -> bool:
    """Whether an MDAnalysis reader's frame times come from the file (not its 1 ps default spacing)."""
    name = type(trajectory).__name__
    return name in ("XTCReader", "TRRReader", "DCDReader", "H5MDReader", "NCDFReader", "TNGReader")
