"""The in-memory data every stage passes on: :class:`Frames` and :class:`StatePoint`.

Shapes and units (see ``units.py``):

- ``positions``  (n_frames, n_particles, 3) A
- ``forces``     (n_frames, n_particles, 3) kcal/mol/A, or None
- ``velocities`` (n_frames, n_particles, 3) A/fs, or None
- ``box``        (n_frames, 3, 3) A; rows are the cell vectors a, b, c (triclinic allowed)
- ``types``      (n_particles,) int, indices into ``type_names``
- ``masses``     (n_particles,) amu
- ``time_fs``    (n_frames,) fs
- ``molecule_ids`` (n_particles,) int, or None (all-atom frames carry it; CG frames may)
- ``potential_energy_kcal_mol`` (n_frames,) kcal/mol, or None: the all-atom potential energy of each
  frame (a CG frame mapped from an all-atom one carries the same number)
- ``state``      the thermodynamic state point the frames were sampled at
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from thermocg import units


class FramesError(ValueError):
    """Frames whose arrays do not fit together, or hold NaN/inf."""


@dataclass(frozen=True)
class StatePoint:
    """A thermodynamic state point: a temperature with either a density or a pressure, and for a
    mixture its composition.

    ``density_g_cm3`` means NVT at that density; ``pressure_bar`` means NPT equilibration (then NVT
    production at the equilibrated mean volume). After an NPT run both may be set: the pressure that
    was asked for and the density that resulted.

    ``mole_fractions`` (mixtures only): the mole fraction of every molecule type, in the system's
    order, as ``((name, x), ...)`` (a mapping is accepted and kept in its order); the fractions are
    in [0, 1] and sum to 1. None for a one-component system.
    """

    temperature_K: float
    density_g_cm3: float | None = None
    pressure_bar: float | None = None
    mole_fractions: tuple[tuple[str, float], ...] | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature_K) and self.temperature_K > 0):
            raise ValueError(f"state point: temperature_K must be positive, got {self.temperature_K}")
        if self.density_g_cm3 is not None and not (
            math.isfinite(self.density_g_cm3) and self.density_g_cm3 > 0
        ):
            raise ValueError(f"state point: density_g_cm3 must be positive, got {self.density_g_cm3}")
        if self.pressure_bar is not None and not math.isfinite(self.pressure_bar):
            raise ValueError(f"state point: pressure_bar must be finite, got {self.pressure_bar}")
        if self.mole_fractions is not None:
            items = (self.mole_fractions.items() if isinstance(self.mole_fractions, dict)
                     else self.mole_fractions)
            fractions = tuple((str(name), float(x)) for name, x in items)
            names = [name for name, _ in fractions]
            if len(fractions) < 2 or len(set(names)) != len(names):
                raise ValueError(f"state point: mole_fractions needs two or more distinct molecule types, "
                                 f"got {names}")
            if any(not (math.isfinite(x) and 0.0 <= x <= 1.0) for _, x in fractions):
                raise ValueError(f"state point: mole fractions must be in [0, 1], got {dict(fractions)}")
            if abs(sum(x for _, x in fractions) - 1.0) > 1e-6:
                raise ValueError(f"state point: mole fractions must sum to 1, got {dict(fractions)}")
            object.__setattr__(self, "mole_fractions", fractions)

    @property
    def label(self) -> str:
        """A short name usable in file names, e.g. ``T298_rho0.786``, ``T298_P1``, ``T298_P1_x0.25``.

        The composition part ``_x...`` (mixtures only) gives the mole fractions of every molecule
        type but the last, in the system's order, each with ``%g`` and joined by ``-``: a binary
        mixture with x(first) = 0.25 gets ``_x0.25``, a ternary one ``_x0.2-0.3``. One-component
        labels have no composition part.
        """
        t = f"T{self.temperature_K:g}"
        if self.pressure_bar is not None:
            label = f"{t}_P{self.pressure_bar:g}"
        elif self.density_g_cm3 is not None:
            label = f"{t}_rho{self.density_g_cm3:g}"
        else:
            label = t
        if self.mole_fractions is not None:
            label += "_x" + "-".join(f"{x:g}" for _, x in self.mole_fractions[:-1])
        return label

    @property
    def composition(self) -> dict[str, float] | None:
        """The mole fractions as a mapping (system order), or None."""
        return None if self.mole_fractions is None else dict(self.mole_fractions)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in (("temperature_K", self.temperature_K),
                                                 ("density_g_cm3", self.density_g_cm3),
                                                 ("pressure_bar", self.pressure_bar)) if v is not None}
        if self.mole_fractions is not None:
            out["mole_fractions"] = dict(self.mole_fractions)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StatePoint":
        allowed = {"temperature_K", "density_g_cm3", "pressure_bar", "mole_fractions"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"state point: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        if "temperature_K" not in data:
            raise ValueError("state point: temperature_K is required")
        values = {k: (None if v is None else float(v)) for k, v in data.items() if k != "mole_fractions"}
        fractions = data.get("mole_fractions")
        return cls(**values, mole_fractions=None if fractions is None else dict(fractions))


#: how far outside the box a position may lie, in box lengths (fractional coordinates within
#: [-POSITION_RANGE_BOXES, 1 + POSITION_RANGE_BOXES]); see :func:`check_positions_in_range`
POSITION_RANGE_BOXES = 1000.0


def first_nonfinite(array: np.ndarray) -> tuple[int, ...] | None:
    """The index of the first NaN or inf of ``array``, or None when every value is finite."""
    array = np.asarray(array)
    if np.all(np.isfinite(array)):
        return None
    return tuple(int(b) for b in np.argwhere(~np.isfinite(array))[0])


def check_positions_in_range(positions: np.ndarray, box: np.ndarray, *,
                             frame_numbers: np.ndarray | None = None,
                             max_boxes: float = POSITION_RANGE_BOXES) -> None:
    """Refuse positions that lie absurdly far outside their periodic box.

    ``positions`` (F, N, 3) A and ``box`` (F, 3, 3) A (rows are the cell vectors) must be finite.
    A position r has fractional coordinates s = r B^-1; every s must lie within [-k, 1 + k] with
    k = ``max_boxes`` (default :data:`POSITION_RANGE_BOXES` = 1000). Positions outside the box are
    legal (unwrapped trajectories, molecules made whole across the boundary), so k is generous: an
    unwrapped liquid trajectory moves a molecule by sqrt(6 D t), about 80 box lengths of a 30 A box
    in a microsecond even at D = 1e-4 cm^2/s; what the check catches is garbage such as a coordinate
    of 1e30 (which wraps to an arbitrary point and gave an RDF with g(0.05 A) = 5245), or lengths in
    the wrong unit by many orders of magnitude. At 1000 box lengths a float32 file still resolves
    positions to ~2e-3 A.

    Raises :class:`FramesError` naming the frame (``frame_numbers[f]`` when given, e.g. the frame's
    index in its file), the particle and its position.
    """
    positions = np.asarray(positions, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64)
    if positions.size == 0:
        return
    fractional = np.einsum("fni,fij->fnj", positions, np.linalg.inv(box))
    outside = (fractional < -max_boxes) | (fractional > 1.0 + max_boxes)
    if not np.any(outside):
        return
    f, n = (int(i) for i in np.argwhere(outside)[0][:2])
    s = fractional[f, n]
    distance = float(np.max(np.maximum(-s, s - 1.0)))
    frame = int(frame_numbers[f]) if frame_numbers is not None else f
    x, y, z = positions[f, n]
    raise FramesError(
        f"frame {frame}, particle {n}: position ({x:.4g}, {y:.4g}, {z:.4g}) A lies {distance:.3g} box lengths "
        f"outside the box (at most {max_boxes:g} are accepted, for unwrapped trajectories); the data are "
        "corrupt or not in A")


def per_frame_boxes(box: np.ndarray, n_frames: int) -> np.ndarray:
    """Boxes (F, 3, 3) A (float64, rows are the cell vectors) from one box (3, 3) or one per frame:
    a single box is broadcast (a read-only view) to ``n_frames`` frames."""
    box = np.asarray(box, dtype=np.float64).reshape(-1, 3, 3)
    if box.shape[0] == 1 and n_frames > 1:
        box = np.broadcast_to(box, (n_frames, 3, 3))
    return box


def _check_finite(name: str, array: np.ndarray | None) -> None:
    bad = None if array is None else first_nonfinite(array)
    if bad is not None:
        raise FramesError(f"{name} holds NaN or inf (first at index {bad})")


@dataclass
class Frames:
    """A trajectory of particles (atoms or CG beads) with forces, box, types and state point."""

    positions: np.ndarray
    box: np.ndarray
    types: np.ndarray
    type_names: tuple[str, ...]
    masses: np.ndarray
    forces: np.ndarray | None = None
    velocities: np.ndarray | None = None
    time_fs: np.ndarray | None = None
    molecule_ids: np.ndarray | None = None
    state: StatePoint | None = None
    #: (n_frames,) kcal/mol: the all-atom potential energy of each frame, when known
    potential_energy_kcal_mol: np.ndarray | None = None
    #: free-form provenance (source file, force field, seed, versions); JSON-serialisable
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64)
        if self.positions.ndim == 2:
            self.positions = self.positions[None]
        if self.positions.ndim != 3 or self.positions.shape[-1] != 3:
            raise FramesError(f"positions must be (n_frames, n_particles, 3), got {self.positions.shape}")
        n_frames, n_particles, _ = self.positions.shape
        self.box = np.asarray(self.box, dtype=np.float64)
        if self.box.shape == (3, 3):
            self.box = np.broadcast_to(self.box, (n_frames, 3, 3)).copy()
        elif self.box.shape == (3,):
            self.box = np.broadcast_to(np.diag(self.box), (n_frames, 3, 3)).copy()
        elif self.box.shape == (n_frames, 3):
            self.box = np.einsum("fi,ij->fij", self.box, np.eye(3))
        if self.box.shape != (n_frames, 3, 3):
            raise FramesError(f"box must be (n_frames, 3, 3) A, got {self.box.shape} for {n_frames} frames")
        volumes = np.abs(np.linalg.det(self.box))
        if not np.all(volumes > 0):
            raise FramesError("box is missing or degenerate (zero volume) in at least one frame")
        self.types = np.asarray(self.types, dtype=np.int64)
        self.masses = np.asarray(self.masses, dtype=np.float64)
        self.type_names = tuple(str(t) for t in self.type_names)
        if self.types.shape != (n_particles,):
            raise FramesError(f"types must be ({n_particles},), got {self.types.shape}")
        if self.masses.shape != (n_particles,):
            raise FramesError(f"masses must be ({n_particles},), got {self.masses.shape}")
        if n_particles and (self.types.min() < 0 or self.types.max() >= len(self.type_names)):
            raise FramesError(f"types index outside type_names {self.type_names}")
        for name in ("forces", "velocities"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.float64)
                if value.shape != self.positions.shape:
                    raise FramesError(f"{name} shape {value.shape} != positions shape {self.positions.shape}")
                setattr(self, name, value)
        if self.time_fs is None:
            self.time_fs = np.arange(n_frames, dtype=np.float64)
        self.time_fs = np.asarray(self.time_fs, dtype=np.float64)
        if self.time_fs.shape != (n_frames,):
            raise FramesError(f"time_fs must be ({n_frames},), got {self.time_fs.shape}")
        if self.molecule_ids is not None:
            self.molecule_ids = np.asarray(self.molecule_ids, dtype=np.int64)
            if self.molecule_ids.shape != (n_particles,):
                raise FramesError(f"molecule_ids must be ({n_particles},), got {self.molecule_ids.shape}")
        if self.potential_energy_kcal_mol is not None:
            self.potential_energy_kcal_mol = np.asarray(self.potential_energy_kcal_mol, dtype=np.float64)
            if self.potential_energy_kcal_mol.shape != (n_frames,):
                raise FramesError(f"potential_energy_kcal_mol must be ({n_frames},), got "
                                  f"{self.potential_energy_kcal_mol.shape}")
        for name in ("positions", "forces", "velocities", "box", "masses", "potential_energy_kcal_mol"):
            _check_finite(name, getattr(self, name))

    @property
    def n_frames(self) -> int:
        return self.positions.shape[0]

    @property
    def n_particles(self) -> int:
        return self.positions.shape[1]

    @property
    def volume_A3(self) -> np.ndarray:
        """Box volume per frame, A^3."""
        return np.abs(np.linalg.det(self.box))

    @property
    def density_g_cm3(self) -> np.ndarray:
        """Mass density per frame, g/cm^3."""
        return units.mass_density_g_cm3(float(self.masses.sum()), 1.0) / self.volume_A3

    def select(self, index: slice | np.ndarray | list[int]) -> "Frames":
        """A new Frames with the frames picked by ``index`` (a slice or integer array)."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return dataclasses.replace(
            self,
            positions=self.positions[index],
            box=self.box[index],
            forces=pick(self.forces),
            velocities=pick(self.velocities),
            time_fs=pick(self.time_fs),
            potential_energy_kcal_mol=pick(self.potential_energy_kcal_mol),
        )

    @staticmethod
    def concatenate(parts: list["Frames"]) -> "Frames":
        """Frames of one system (same particles) joined in time."""
        if not parts:
            raise FramesError("nothing to concatenate")
        first = parts[0]
        for p in parts[1:]:
            if p.n_particles != first.n_particles or not np.array_equal(p.types, first.types):
                raise FramesError("cannot concatenate frames of different systems")

        def cat(name: str) -> np.ndarray | None:
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else np.concatenate(values)

        return dataclasses.replace(
            first,
            positions=cat("positions"),
            box=cat("box"),
            forces=cat("forces"),
            velocities=cat("velocities"),
            time_fs=cat("time_fs"),
            potential_energy_kcal_mol=cat("potential_energy_kcal_mol"),
        )


def merged_type_names(frames_list: Sequence[Frames]) -> tuple[str, ...]:
    """The bead types of several frame sets (state points), in order of first appearance."""
    names: list[str] = []
    for frames in frames_list:
        for name in frames.type_names:
            if name not in names:
                names.append(name)
    return tuple(names)


@dataclass
class Topology:
    """Who is who in an all-atom system: what mapping needs beyond the coordinates.

    atom_names     (n_atoms,) name of each atom within its molecule (e.g. "CH3", "O", "H")
    molecule_ids   (n_atoms,) int, 0-based molecule index of each atom (atoms of a molecule contiguous
                   or not: mapping does not assume contiguity)
    molecule_names (n_molecules,) the molecule-type name of each molecule (e.g. "methanol")
    masses         (n_atoms,) amu
    type_names / types: atom types (force-field types) as in Frames
    """

    atom_names: list[str]
    molecule_ids: np.ndarray
    molecule_names: list[str]
    masses: np.ndarray
    type_names: tuple[str, ...]
    types: np.ndarray

    def __post_init__(self) -> None:
        self.molecule_ids = np.asarray(self.molecule_ids, dtype=np.int64)
        self.masses = np.asarray(self.masses, dtype=np.float64)
        self.types = np.asarray(self.types, dtype=np.int64)
        self.atom_names = [str(a) for a in self.atom_names]
        self.molecule_names = [str(m) for m in self.molecule_names]
        self.type_names = tuple(str(t) for t in self.type_names)
        n = len(self.atom_names)
        for name in ("molecule_ids", "masses", "types"):
            if getattr(self, name).shape != (n,):
                raise FramesError(f"topology: {name} has shape {getattr(self, name).shape}, expected ({n},)")
        if n and (self.molecule_ids.min() < 0 or self.molecule_ids.max() >= len(self.molecule_names)):
            raise FramesError("topology: molecule_ids index outside molecule_names")

    @property
    def n_atoms(self) -> int:
        return len(self.atom_names)

    def molecule_atoms(self) -> list[np.ndarray]:
        """Atom indices (sorted) of each molecule, indexed by molecule id: ``molecule_atoms()[m]``
        are the atoms of molecule ``m`` (an empty array when no atom has that id)."""
        order = np.argsort(self.molecule_ids, kind="stable")
        bounds = np.flatnonzero(np.diff(self.molecule_ids[order])) + 1
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(self.molecule_names)
        for group in np.split(order, bounds):
            if len(group):
                out[int(self.molecule_ids[group[0]])] = group
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "atom_names": self.atom_names,
            "molecule_ids": self.molecule_ids.tolist(),
            "molecule_names": self.molecule_names,
            "masses": self.masses.tolist(),
            "type_names": list(self.type_names),
            "types": self.types.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Topology":
        return cls(**{k: data[k] for k in ("atom_names", "molecule_ids", "molecule_names", "masses", "type_names", "types")})

    def save(self, path: str | Path) -> None:
        """Write as JSON (atomically)."""
        import json

        from thermocg.rundir import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> "Topology":
        import json

        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError) as exc:
            raise FramesError(f"{path}: not a readable topology file ({exc})") from None
