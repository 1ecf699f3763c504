"""Frames on disk: H5MD files, written frame by frame and read lazily.

Why H5MD (HDF5, https://www.nongnu.org/h5md/): it is binary, chunked and compressed, holds
positions, **forces**, velocities and a time-dependent triclinic box in one file, and MDAnalysis reads
it directly (``MDAnalysis.Universe(topology, "traj.h5md")``, forces included). A text format (extxyz,
a LAMMPS dump) of 10^4 frames of 10^4 particles would be tens of GB and slow to parse. thermocg uses
the same layout for all-atom trajectories and for CG datasets.

Layout (units in each dataset's ``unit`` attribute, as H5MD prescribes)::

    /h5md                          version [1, 1]; author/creator groups
    /particles/trajectory/box             dimension 3, boundary [periodic]*3
    /particles/trajectory/box/edges/{value (F, 3, 3) Angstrom, step (F,), time (F,) fs}
    /particles/trajectory/position/{value (F, N, 3) Angstrom, step, time}
    /particles/trajectory/force/{value (F, N, 3) kcal mol-1 Angstrom-1, step, time}      (optional)
    /particles/trajectory/velocity/{value (F, N, 3) Angstrom fs-1, step, time}           (optional)
    /particles/trajectory/mass            (N,) amu
    /particles/trajectory/species         (N,) int, indices into /parameters/thermocg type_names
    /observables/potential_energy/{value (F,) kcal mol-1, step, time}                     (optional)
    /parameters/thermocg           attributes: format_version, kind ("allatom" or "cg"),
                                   type_names (JSON), state (JSON), metadata (JSON);
                                   dataset molecule_ids (N,) when known

Box rows are the cell vectors a, b, c. The potential energy is the all-atom system's total potential
energy of each frame (an H5MD observable: a time series of the whole system); a CG dataset carries the
energies of the all-atom frames it was mapped from. Files are written to ``NAME.partial`` and renamed on
successful close, so a killed run never leaves a file that a later stage would trust.

**Integrity.** Every dataset is chunked with HDF5's Fletcher-32 checksum filter (after compression
when compression is on), and the file is written with the HDF5 1.10 format (``libver v110``), whose
object headers, and so the ``/parameters/thermocg`` attributes (stored as fixed-length strings, inside
the headers), carry checksums too. A flipped byte in a frame's chunk or in the metadata is then an
error when it is read (:class:`DatasetError` naming the file and what could not be read), not silently
wrong numbers. Reading also checks what enters: every value finite, and every position within
:data:`thermocg.frames.POSITION_RANGE_BOXES` box lengths of its box (errors name the frame by its
index in the file and the particle); ``kind="cg"`` refuses an all-atom file where a CG dataset is
expected. Files written before checksums were added (HDF5's earliest format, variable-length string
attributes) are still read.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from thermocg import __version__
from thermocg.frames import Frames, FramesError, StatePoint, check_positions_in_range, first_nonfinite, per_frame_boxes
from thermocg.rundir import finish_partial, partial_path

FORMAT_VERSION = 1
#: dataset kinds: all-atom trajectories (generated or imported) and CG bead datasets
KINDS = ("allatom", "cg")
#: HDF5 file format bounds: the 1.10 format checksums object headers (attributes included)
_LIBVER = ("v110", "v110")
_GROUP = "particles/trajectory"  # the group name MDAnalysis looks for
_UNITS = {
    "position": "Angstrom",
    "force": "kcal mol-1 Angstrom-1",
    "velocity": "Angstrom fs-1",
    "potential_energy": "kcal mol-1",
}


class DatasetError(ValueError):
    """A dataset file that cannot be read as thermocg frames; the message names the file."""


def _time_series(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any, unit: str | None,
                 compression: str | None) -> h5py.Dataset:
    sub = group.create_group(name)
    value = sub.create_dataset(
        "value", shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
        chunks=(1, *shape) if shape else (1024,), compression=compression, fletcher32=True,
    )
    if unit:
        value.attrs["unit"] = unit
    sub.create_dataset("step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,), fletcher32=True)
    time = sub.create_dataset("time", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,),
                              fletcher32=True)
    time.attrs["unit"] = "fs"
    return value


def _fixed_array(group: h5py.Group, name: str, data: np.ndarray) -> h5py.Dataset:
    """A per-particle array, checksummed (Fletcher-32 needs chunks; an empty array cannot have them)."""
    return group.create_dataset(name, data=data, **({"chunks": True, "fletcher32": True} if data.size else {}))


def _text_attribute(value: str) -> np.bytes_:
    """A string attribute stored fixed-length (UTF-8) inside the object header, which the 1.10 format
    checksums; a variable-length string would sit in the unchecked global heap."""
    return np.bytes_(value.encode("utf-8"))


def _text(value: Any) -> str:
    """An attribute read back as text (fixed-length bytes, or a variable-length str of older files)."""
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _damaged(path: Path, what: str, exc: BaseException) -> DatasetError:
    return DatasetError(
        f"{path}: cannot read {what}: the file is damaged (an HDF5 checksum failed or the data cannot be "
        f"decoded: {exc}); regenerate it, or restore it from a copy")


class H5MDWriter:
    """Write frames to an H5MD file, a block at a time, atomically.

    Use as a context manager: the file appears under its final name only when the ``with`` block
    ends without an exception; otherwise the partial file is removed.

    Parameters
    ----------
    path : output file (``.h5md``)
    types, type_names, masses : the particles (fixed in time)
    kind : ``"allatom"`` or ``"cg"``
    state : the state point, stored as metadata
    has_forces, has_velocities : which time series to store
    has_potential_energy : store ``/observables/potential_energy`` (kcal/mol per frame)
    molecule_ids : optional (N,) molecule index per particle
    metadata : JSON-serialisable provenance
    dtype : storage dtype of positions/forces/velocities (float64 keeps summed forces exact)
    """

    def __init__(self, path: str | os.PathLike, *, types: np.ndarray, type_names: tuple[str, ...],
                 masses: np.ndarray, kind: str, state: StatePoint | None = None,
                 has_forces: bool = True, has_velocities: bool = False,
                 molecule_ids: np.ndarray | None = None, metadata: dict[str, Any] | None = None,
                 dtype: Any = np.float64, compression: str | None = None,
                 has_potential_energy: bool = False) -> None:
        self.path = Path(path)
        if kind not in KINDS:
            raise ValueError(f"{self.path}: kind must be one of {KINDS}, got {kind!r}")
        self._partial = partial_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        n = len(types)
        self.n_particles = n
        self._file = h5py.File(self._partial, "w", libver=_LIBVER)
        f = self._file
        h5 = f.create_group("h5md")
        h5.attrs["version"] = np.array([1, 1])
        h5.create_group("author").attrs["name"] = "thermocg"
        creator = h5.create_group("creator")
        creator.attrs["name"] = "thermocg"
        creator.attrs["version"] = __version__
        g = f.create_group(_GROUP)
        box = g.create_group("box")
        box.attrs["dimension"] = 3
        box.attrs["boundary"] = np.array([b"periodic"] * 3)
        self._edges = _time_series(box, "edges", (3, 3), np.float64, "Angstrom", None)
        self._series = {"position": _time_series(g, "position", (n, 3), dtype, _UNITS["position"], compression)}
        if has_forces:
            self._series["force"] = _time_series(g, "force", (n, 3), dtype, _UNITS["force"], compression)
        if has_velocities:
            self._series["velocity"] = _time_series(g, "velocity", (n, 3), dtype, _UNITS["velocity"], compression)
        self._energy = None
        if has_potential_energy:
            self._energy = _time_series(f.require_group("observables"), "potential_energy", (), np.float64,
                                        _UNITS["potential_energy"], None)
        mass = _fixed_array(g, "mass", np.asarray(masses, dtype=np.float64))
        mass.attrs["unit"] = "amu"
        _fixed_array(g, "species", np.asarray(types, dtype=np.int64))
        p = f.create_group("parameters/thermocg")
        p.attrs["format_version"] = FORMAT_VERSION
        p.attrs["kind"] = _text_attribute(kind)
        p.attrs["type_names"] = _text_attribute(json.dumps(list(type_names)))
        p.attrs["state"] = _text_attribute(json.dumps(state.to_dict() if state else None))
        p.attrs["metadata"] = _text_attribute(json.dumps(metadata or {}))
        if molecule_ids is not None:
            _fixed_array(p, "molecule_ids", np.asarray(molecule_ids, dtype=np.int64))
        self.n_frames = 0

    def append(self, positions: np.ndarray, box: np.ndarray, *, forces: np.ndarray | None = None,
               velocities: np.ndarray | None = None, time_fs: np.ndarray | float | None = None,
               step: np.ndarray | int | None = None,
               potential_energy_kcal_mol: np.ndarray | float | None = None) -> None:
        """Append one frame ((N, 3) arrays) or a block of frames ((F, N, 3) arrays); the potential
        energy is one number per frame (kcal/mol)."""
        positions = np.asarray(positions)
        if positions.ndim == 2:
            positions = positions[None]
        k = positions.shape[0]
        box = per_frame_boxes(box, k)
        arrays = {"position": positions, "force": forces, "velocity": velocities}
        for name, ds in self._series.items():
            data = arrays[name]
            if data is None:
                raise FramesError(f"{self.path}: this file stores {name} but none was given")
            data = np.asarray(data).reshape(k, self.n_particles, 3)
            self._extend(ds.parent, data)
        self._extend(self._edges.parent, box)
        series_groups = [self._edges.parent, *[d.parent for d in self._series.values()]]
        if self._energy is not None:
            if potential_energy_kcal_mol is None:
                raise FramesError(f"{self.path}: this file stores the potential energy but none was given")
            energy = np.asarray(potential_energy_kcal_mol, dtype=np.float64).reshape(k)
            self._extend(self._energy.parent, energy)
            series_groups.append(self._energy.parent)
        t = np.arange(self.n_frames, self.n_frames + k, dtype=np.float64) if time_fs is None else time_fs
        s = np.arange(self.n_frames, self.n_frames + k) if step is None else step
        for series in series_groups:
            for name, values in (("time", t), ("step", s)):
                ds = series[name]
                ds.resize((self.n_frames + k,))
                ds[self.n_frames:] = np.broadcast_to(np.asarray(values), (k,))
        self.n_frames += k

    def append_frames(self, frames: Frames) -> None:
        """Append a block of :class:`Frames` (their positions, box, forces, velocities, times and
        potential energies; step numbers continue the file's frame count)."""
        self.append(frames.positions, frames.box, forces=frames.forces, velocities=frames.velocities,
                    time_fs=frames.time_fs, potential_energy_kcal_mol=frames.potential_energy_kcal_mol)

    def _extend(self, series: h5py.Group, data: np.ndarray) -> None:
        ds = series["value"]
        ds.resize((self.n_frames + data.shape[0], *ds.shape[1:]))
        ds[self.n_frames:] = data

    def close(self, *, success: bool = True) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        finish_partial(self._partial, self.path, success=success)

    def __enter__(self) -> "H5MDWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(success=exc_type is None)


def write_frames(frames: Frames, path: str | os.PathLike, *, kind: str, dtype: Any = np.float64) -> Path:
    """Write a whole :class:`Frames` to an H5MD file atomically; returns the path."""
    with H5MDWriter(
        path, types=frames.types, type_names=frames.type_names, masses=frames.masses, kind=kind,
        state=frames.state, has_forces=frames.forces is not None,
        has_velocities=frames.velocities is not None, molecule_ids=frames.molecule_ids,
        metadata=frames.metadata, dtype=dtype, has_potential_energy=frames.potential_energy_kcal_mol is not None,
    ) as w:
        w.append_frames(frames)
    return Path(path)


class H5MDDataset:
    """Lazy read access to an H5MD file written by thermocg (or any H5MD file with the same groups).

    ``len(ds)`` is the number of frames; ``ds.read(index)`` returns a :class:`Frames` holding just the
    frames picked by ``index`` (int, slice or sorted integer array); ``ds.iter_blocks(n)`` yields
    Frames of at most ``n`` frames, so a 10^4 x 10^4 dataset never sits in memory at once.

    ``kind``: the kind the caller expects (``"cg"`` where CG beads are needed: training, fitting, CG
    MD start frames, RDFs of CG datasets; ``"allatom"`` where atoms are); a file of the other kind is
    a :class:`DatasetError`. None accepts both. Damaged files, non-finite values and positions far
    outside the box are errors naming the file (module docstring).
    """

    def __init__(self, path: str | os.PathLike, *, kind: str | None = None) -> None:
        self.path = Path(path)
        if kind is not None and kind not in KINDS:
            raise ValueError(f"H5MDDataset: kind must be one of {KINDS} or None, got {kind!r}")
        if not self.path.exists():
            raise DatasetError(f"{self.path}: no such file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            if "truncated file" in str(exc):
                raise DatasetError(f"{self.path}: the file is cut off ({self.path.stat().st_size} bytes of a longer "
                                   f"HDF5 file: a copy or a write was interrupted); regenerate it ({exc})") from None
            raise DatasetError(f"{self.path}: not an HDF5/H5MD file ({exc})") from None
        try:
            self._open(kind)
        except BaseException:
            self._file.close()
            raise

    def _open(self, kind: str | None) -> None:
        try:
            g = self._file[_GROUP]
            self._position = g["position/value"]
            self._box = g["box/edges/value"]
            self._time = g["position/time"]
            self._force = g["force/value"] if "force" in g else None
            self._velocity = g["velocity/value"] if "velocity" in g else None
            self._energy = (self._file["observables/potential_energy/value"]
                            if "observables/potential_energy" in self._file else None)
            with self._reading("the particle masses and species"):
                self.masses = np.asarray(g["mass"], dtype=np.float64)
                self.types = np.asarray(g["species"], dtype=np.int64)
            p = self._file["parameters/thermocg"]
            version = int(p.attrs["format_version"])
            if version > FORMAT_VERSION:
                raise DatasetError(
                    f"{self.path}: dataset format version {version} is newer than this thermocg "
                    f"understands ({FORMAT_VERSION}); upgrade thermocg"
                )
            self.kind = _text(p.attrs["kind"])
            self.type_names = tuple(json.loads(_text(p.attrs["type_names"])))
            state = json.loads(_text(p.attrs["state"]))
            self.state = StatePoint.from_dict(state) if state else None
            self.metadata = json.loads(_text(p.attrs["metadata"]))
            with self._reading("the molecule ids"):
                self.molecule_ids = np.asarray(p["molecule_ids"]) if "molecule_ids" in p else None
        except KeyError as exc:
            if "checksum" in str(exc):  # h5py reports a damaged object header as a KeyError
                raise _damaged(self.path, "its layout or metadata", exc) from None
            raise DatasetError(f"{self.path}: not a thermocg H5MD file (missing {exc})") from None
        except (ValueError, TypeError) as exc:  # JSON of the attributes, or a bad state point
            if isinstance(exc, DatasetError):
                raise
            raise DatasetError(f"{self.path}: the thermocg metadata cannot be read ({exc})") from None
        if kind is not None and self.kind != kind:
            raise DatasetError(self._kind_message(kind))
        if self._position.shape[1] != len(self.types):
            raise DatasetError(
                f"{self.path}: {self._position.shape[1]} particles in positions but "
                f"{len(self.types)} in species"
            )

    def _kind_message(self, expected: str) -> str:
        found = {"allatom": "an all-atom trajectory", "cg": "a CG bead dataset"}.get(self.kind, f"kind {self.kind!r}")
        if expected == "cg":
            return (f"{self.path}: {found} ({self.n_particles} particles, types {list(self.type_names)}), where a CG "
                    "dataset is expected; map all-atom data to beads first (thermocg map writes "
                    "RUN_DIR/cg/<state>.h5md)")
        return f"{self.path}: {found}, where an all-atom trajectory is expected"

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """Turn HDF5's read errors (a failed checksum, undecodable data) into a DatasetError naming the file."""
        try:
            yield
        except OSError as exc:
            raise _damaged(self.path, what, exc) from None

    @property
    def has_forces(self) -> bool:
        return self._force is not None

    @property
    def has_velocities(self) -> bool:
        return self._velocity is not None

    @property
    def has_potential_energy(self) -> bool:
        return self._energy is not None

    def potential_energies(self, index: int | slice | np.ndarray | None = None) -> np.ndarray | None:
        """The all-atom potential energies (F,) kcal/mol of the frames picked by ``index`` (all when
        None), read without the positions; None when the file has none."""
        if self._energy is None:
            return None
        with self._reading("the potential energies"):
            energies = np.asarray(self._energy[:], dtype=np.float64)
        return energies if index is None else energies[index]

    @property
    def n_particles(self) -> int:
        return int(self._position.shape[1])

    def __len__(self) -> int:
        return int(self._position.shape[0])

    def boxes(self, index: int | slice | np.ndarray | None = None) -> np.ndarray:
        """The boxes (F, 3, 3) A (rows are cell vectors) of the frames picked by ``index`` (all when
        None), read without the positions."""
        with self._reading("the boxes"):
            boxes = np.asarray(self._box[:], dtype=np.float64)
        return boxes if index is None else boxes[index]

    def steps(self, index: int | slice | np.ndarray | None = None) -> np.ndarray:
        """The MD step numbers (F,) of the frames picked by ``index`` (all when None)."""
        with self._reading("the step numbers"):
            steps = np.asarray(self._file[_GROUP]["position/step"][:], dtype=np.int64)
        return steps if index is None else steps[index]

    def read(self, index: int | slice | np.ndarray | None = None) -> Frames:
        """Frames picked by ``index`` (all when None).

        Checked on the way in: a damaged chunk, a NaN or inf, or a position beyond
        :data:`~thermocg.frames.POSITION_RANGE_BOXES` box lengths of the box is a
        :class:`DatasetError` naming the file, the frame (its index in the file) and the particle."""
        if index is None:
            index = slice(None)
        if isinstance(index, (int, np.integer)):
            position = int(index) + (len(self) if index < 0 else 0)  # -1: the last frame, as for a list
            if not 0 <= position < len(self):
                raise IndexError(f"{self.path}: frame {int(index)} out of range ({len(self)} frames)")
            index = slice(position, position + 1)
        if not isinstance(index, slice):
            index = np.asarray(index, dtype=np.int64)
        frame_numbers = np.arange(len(self))[index]
        try:
            arrays = self._arrays(index)
        except OSError as exc:
            # name the damaged frame: the first of the selection that does not read on its own
            damaged = next((f for f in frame_numbers if not self._readable(int(f))), None)
            where = (f"frame {damaged}" if damaged is not None else
                     f"frames {frame_numbers[0]}..{frame_numbers[-1]}" if len(frame_numbers) else "frames")
            raise _damaged(self.path, where, exc) from None
        for name, array in arrays.items():
            bad = None if array is None else first_nonfinite(array)
            if bad is not None:
                rest = f", particle {bad[1]}" if name in ("positions", "forces", "velocities") else ""
                raise DatasetError(f"{self.path}: {name} hold NaN or inf (frame {frame_numbers[bad[0]]}{rest})")
        try:
            check_positions_in_range(arrays["positions"], np.reshape(arrays["box"], (-1, 3, 3)),
                                     frame_numbers=frame_numbers)
        except (FramesError, np.linalg.LinAlgError) as exc:
            message = "a box is degenerate (zero volume)" if isinstance(exc, np.linalg.LinAlgError) else exc
            raise DatasetError(f"{self.path}: {message}") from None
        try:
            return Frames(
                **arrays,
                types=self.types,
                type_names=self.type_names,
                masses=self.masses,
                molecule_ids=self.molecule_ids,
                state=self.state,
                metadata=dict(self.metadata, source=str(self.path)),
            )
        except FramesError as exc:
            raise DatasetError(f"{self.path}: {exc}") from None

    def _arrays(self, index: slice | np.ndarray) -> dict[str, np.ndarray | None]:
        return {
            "positions": self._position[index],
            "box": self._box[index],
            "forces": None if self._force is None else self._force[index],
            "velocities": None if self._velocity is None else self._velocity[index],
            "time_fs": self._time[index],
            "potential_energy_kcal_mol": None if self._energy is None else self._energy[index],
        }

    def _readable(self, frame: int) -> bool:
        try:
            self._arrays(slice(frame, frame + 1))
        except OSError:
            return False
        return True

    def iter_blocks(self, block_size: int = 256) -> Iterator[Frames]:
        for start in range(0, len(self), block_size):
            yield self.read(slice(start, min(start + block_size, len(self))))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "H5MDDataset":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_frames(path: str | os.PathLike, index: int | slice | np.ndarray | None = None, *,
                kind: str | None = None) -> Frames:
    """Read frames of an H5MD file into memory (all of them, or those picked by ``index``);
    ``kind``: the kind of file expected (``"cg"`` or ``"allatom"``; None: either)."""
    with H5MDDataset(path, kind=kind) as ds:
        return ds.read(index)
