"""Reporters of CG MD: objects that say what they need and when, and receive it on the host.

The protocol follows OpenMM's ``describeNextReport``. A :class:`Reporter` has

- ``describe_next_report(simulation) -> ReportRequest``: how many steps from the current one until
  its next report (>= 1), and which quantities it will want then: positions, velocities, forces,
  energies (potential and kinetic energy, temperature: a device reduction, two numbers fetched),
  the generator's state, the neighbour list's build positions;
- ``report(simulation, snapshot)``: called at that step with a :class:`~thermocg.md.state.Snapshot`
  holding what the reporters due at this step asked for, and None in every other field;
- optionally ``close(*, success)``: the run is over; files written under a temporary name get their
  final name (``success``) or are removed.

The simulation asks a reporter for its next request when it first runs with it attached and again
right after each of its reports (not at every ``step(n)`` call, so a reporter may keep state), counts
the steps, and at a due step copies to the host only the union of what the due reporters asked for.
Steps at which no reporter is due cost no transfer at all (the blow-up check aside, which fetches
four numbers).

:class:`IntervalReporter` is the common base: reports at steps s with (s - phase_step) a multiple of
``interval_steps`` (phase_step = 0: multiples of the interval, as OpenMM's reporters), and states its
needs in :meth:`IntervalReporter.needs`. The file reporters (:class:`H5MDReporter`,
:class:`ExtXYZReporter`, :class:`ThermoCSVReporter`, :class:`RestartReporter`) write atomically:
under ``NAME.partial`` while running, renamed on a successful close, removed otherwise; on a blow-up
the run closes successfully, so the files keep every frame up to the last good state. With
``append=True`` they keep what the file at ``path`` already holds and add after it (a continued run);
the old file stays untouched until the new one replaces it.

Adding a reporter
-----------------
Subclass :class:`IntervalReporter`, override ``needs()`` to ask for exactly the fields you read (the
default asks for nothing) and ``write(snapshot)`` to use them, and ``close`` if you hold a file. Any
other object with ``describe_next_report`` and ``report`` works too (a reporter whose interval
changes as the run goes, for instance). Attach it with ``simulation.reporters.append(reporter)``.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

import numpy as np

from thermocg import units
from thermocg.frames import StatePoint
from thermocg.md.state import MDInputError, Snapshot, write_restart
from thermocg.rundir import finish_partial, partial_path
from thermocg.progress import Progress, ProgressMode

if TYPE_CHECKING:
    from thermocg.md.simulation import CGSimulation

__all__ = ["ReportRequest", "Reporter", "IntervalReporter", "CallbackReporter", "H5MDReporter", "ExtXYZReporter",
           "ThermoCSVReporter", "RestartReporter", "ThermoCollector", "FrameCollector", "ProgressReporter",
           "THERMO_COLUMNS"]

THERMO_COLUMNS = ("step", "time_ps", "temperature_K", "potential_kcal_mol", "kinetic_kcal_mol", "total_kcal_mol")


@dataclass(frozen=True)
class ReportRequest:
    """When a reporter reports next (``steps`` from the current step, >= 1) and what it will need."""

    steps: int
    positions: bool = False
    velocities: bool = False
    forces: bool = False
    energies: bool = False
    rng_state: bool = False
    neighbor_reference: bool = False

    @property
    def fetches(self) -> bool:
        """Whether anything is copied off the device for this report."""
        return any(getattr(self, f.name) for f in fields(self) if f.name != "steps")

    def needs(self) -> dict[str, bool]:
        """The quantity flags alone."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "steps"}


#: every quantity: what old-style callables get
EVERYTHING = {"positions": True, "velocities": True, "forces": True, "energies": True, "rng_state": True,
              "neighbor_reference": True}


@runtime_checkable
class Reporter(Protocol):
    def describe_next_report(self, simulation: "CGSimulation") -> ReportRequest: ...

    def report(self, simulation: "CGSimulation", snapshot: Snapshot) -> None: ...


class IntervalReporter:
    """Reports every ``interval_steps`` steps, at steps s with (s - phase_step) % interval_steps == 0.

    Subclasses override :meth:`needs` and :meth:`write`. Calling the reporter with a snapshot
    (``reporter(snapshot)``) writes it, as the callables of older thermocg versions did.
    """

    def __init__(self, interval_steps: int, *, phase_step: int = 0) -> None:
        if int(interval_steps) != interval_steps or interval_steps < 1:
            raise MDInputError(f"reporter {type(self).__name__}: interval_steps must be >= 1, got {interval_steps}")
        self.interval_steps = int(interval_steps)
        self.phase_step = int(phase_step)

    def needs(self) -> dict[str, bool]:
        """The quantities :meth:`write` reads (keys of :class:`ReportRequest`); none by default."""
        return {}

    def describe_next_report(self, simulation: "CGSimulation") -> ReportRequest:
        steps = self.interval_steps - (simulation.current_step - self.phase_step) % self.interval_steps
        return ReportRequest(steps, **self.needs())

    def report(self, simulation: "CGSimulation", snapshot: Snapshot) -> None:
        self.write(snapshot)

    def write(self, snapshot: Snapshot) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, snapshot: Snapshot) -> None:
        self.write(snapshot)

    def close(self, *, success: bool = True) -> None:
        pass


class CallbackReporter(IntervalReporter):
    """A function of a snapshot, called every ``interval_steps`` steps with everything fetched
    (or only ``needs``, a dict of :class:`ReportRequest` flags)."""

    def __init__(self, interval_steps: int, function: Callable[[Snapshot], None], *, phase_step: int = 0,
                 needs: dict[str, bool] | None = None) -> None:
        super().__init__(interval_steps, phase_step=phase_step)
        self.function = function
        self._needs = dict(EVERYTHING if needs is None else needs)

    def needs(self) -> dict[str, bool]:
        return self._needs

    def write(self, snapshot: Snapshot) -> None:
        self.function(snapshot)

    def close(self, *, success: bool = True) -> None:
        close = getattr(self.function, "close", None)
        if close is not None:
            close(success=success)


# --------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------

class H5MDReporter(IntervalReporter):
    """Trajectory as H5MD (kind "cg"): wrapped positions, box, optional velocities and forces.

    MDAnalysis reads it (``Universe(topology, path)``); the file appears under its final name when the
    run ends (on a blow-up too, holding the frames up to the last good one). Asks only for positions,
    and for velocities and forces when it saves them. ``append``: keep the frames of an existing file.
    """

    def __init__(self, path: str | os.PathLike, interval_steps: int, *, save_velocities: bool = True,
                 save_forces: bool = True, state: StatePoint | None = None,
                 molecule_ids: np.ndarray | None = None, metadata: dict[str, Any] | None = None,
                 phase_step: int = 0, append: bool = False) -> None:
        super().__init__(interval_steps, phase_step=phase_step)
        self.path = Path(path)
        self.save_velocities = save_velocities
        self.save_forces = save_forces
        self.state = state
        self.molecule_ids = molecule_ids
        self.metadata = metadata or {}
        self.append = append
        self._writer = None

    def needs(self) -> dict[str, bool]:
        return {"positions": True, "velocities": self.save_velocities, "forces": self.save_forces}

    def write(self, snap: Snapshot) -> None:
        if self._writer is None:
            self._open(snap)
        self._writer.append(
            snap.wrapped_positions, snap.box, forces=snap.forces if self.save_forces else None,
            velocities=snap.velocities if self.save_velocities else None, time_fs=snap.time_fs, step=snap.step,
        )

    def _open(self, snap: Snapshot) -> None:
        from thermocg.dataset import H5MDDataset, H5MDWriter

        self._writer = H5MDWriter(
            self.path, types=snap.types, type_names=snap.type_names, masses=snap.masses, kind="cg",
            state=self.state, has_forces=self.save_forces, has_velocities=self.save_velocities,
            molecule_ids=self.molecule_ids, metadata=self.metadata,
        )
        if self.append and self.path.exists():
            with H5MDDataset(self.path) as old:
                for start in range(0, len(old), 256):
                    block = slice(start, min(start + 256, len(old)))
                    frames = old.read(block)
                    self._writer.append(frames.positions, frames.box, forces=frames.forces,
                                        velocities=frames.velocities, time_fs=frames.time_fs,
                                        step=old.steps(block))

    def close(self, *, success: bool = True) -> None:
        if self._writer is not None:
            self._writer.close(success=success)
            self._writer = None


class _TextFileReporter(IntervalReporter):
    """A reporter writing one text file at ``path``: to ``NAME.partial`` while running, renamed on a
    successful close, removed on a failed one. ``append`` starts the partial file as a copy of the
    existing one."""

    def __init__(self, path: str | os.PathLike, interval_steps: int, *, phase_step: int = 0,
                 append: bool = False) -> None:
        super().__init__(interval_steps, phase_step=phase_step)
        self.path = Path(path)
        self.append = append
        self._partial = partial_path(self.path)
        self._handle = None

    def _open(self, newline: str | None = None) -> bool:
        """Open the partial file; True if it continues an existing file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        continued = self.append and self.path.exists()
        if continued:
            shutil.copyfile(self.path, self._partial)
        self._handle = open(self._partial, "a" if continued else "w", newline=newline)
        return continued

    def close(self, *, success: bool = True) -> None:
        if self._handle is None:
            return
        self._handle.close()
        self._handle = None
        finish_partial(self._partial, self.path, success=success)


class ExtXYZReporter(_TextFileReporter):
    """Trajectory as extended XYZ for ASE users (``ase.io.read(path, ":")``).

    Beads carry the dummy element ``X``; their bead type names are in the per-atom array
    ``bead_type`` and masses in ``masses``. Positions are wrapped, in A; the cell is the box.
    Written to ``NAME.partial`` and renamed on close. Asks for positions and energies.
    """

    def needs(self) -> dict[str, bool]:
        return {"positions": True, "energies": True}

    def write(self, snap: Snapshot) -> None:
        import ase
        import ase.io

        if self._handle is None:
            self._open()
        atoms = ase.Atoms(["X"] * len(snap.types), positions=snap.wrapped_positions, cell=snap.box, pbc=True)
        atoms.set_masses(snap.masses)
        atoms.new_array("bead_type", np.array([snap.type_names[t] for t in snap.types]))
        atoms.info["step"] = int(snap.step)
        atoms.info["time_fs"] = float(snap.time_fs)
        atoms.info["potential_energy_kcal_mol"] = float(snap.potential_energy_kcal_mol)
        ase.io.write(self._handle, atoms, format="extxyz")
        self._handle.flush()


def thermo_row(snap: Snapshot) -> list[Any]:
    """One row of the thermo CSV (:data:`THERMO_COLUMNS`), as text."""
    return [snap.step, f"{snap.time_fs * units.FS_TO_PS:.6f}", f"{snap.temperature_K:.6g}",
            f"{snap.potential_energy_kcal_mol:.10g}", f"{snap.kinetic_energy_kcal_mol:.10g}",
            f"{snap.total_energy_kcal_mol:.10g}"]


class ThermoCSVReporter(_TextFileReporter):
    """Thermo log: step, time_ps, temperature_K, potential/kinetic/total energy in kcal/mol.
    Asks for energies only."""

    def __init__(self, path: str | os.PathLike, interval_steps: int, *, phase_step: int = 0,
                 append: bool = False) -> None:
        super().__init__(path, interval_steps, phase_step=phase_step, append=append)
        self._writer = None

    def needs(self) -> dict[str, bool]:
        return {"energies": True}

    def write(self, snap: Snapshot) -> None:
        if self._handle is None:
            continued = self._open(newline="")
            self._writer = csv.writer(self._handle)
            if not continued:
                self._writer.writerow(THERMO_COLUMNS)
        self._writer.writerow(thermo_row(snap))
        self._handle.flush()


class RestartReporter(IntervalReporter):
    """Restart file (npz, written atomically): positions, velocities, box, step, time, RNG state and
    the neighbour list's build positions (see :mod:`thermocg.md.state`)."""

    def __init__(self, path: str | os.PathLike, interval_steps: int, *, phase_step: int = 0) -> None:
        super().__init__(interval_steps, phase_step=phase_step)
        self.path = Path(path)

    def needs(self) -> dict[str, bool]:
        return {"positions": True, "velocities": True, "rng_state": True, "neighbor_reference": True}

    def write(self, snap: Snapshot) -> None:
        write_restart(self.path, snap)


# --------------------------------------------------------------------------------------------------
# in memory, and progress
# --------------------------------------------------------------------------------------------------

class ThermoCollector(IntervalReporter):
    """Thermo rows in memory (full precision), as arrays per :data:`THERMO_COLUMNS` name."""

    def __init__(self, interval_steps: int, *, phase_step: int = 0) -> None:
        super().__init__(interval_steps, phase_step=phase_step)
        self.rows: list[tuple[float, ...]] = []

    def needs(self) -> dict[str, bool]:
        return {"energies": True}

    def write(self, snap: Snapshot) -> None:
        self.rows.append((snap.step, snap.time_fs * units.FS_TO_PS, snap.temperature_K,
                          snap.potential_energy_kcal_mol, snap.kinetic_energy_kcal_mol,
                          snap.total_energy_kcal_mol))

    def arrays(self) -> dict[str, np.ndarray]:
        data = np.array(self.rows, dtype=np.float64).reshape(-1, len(THERMO_COLUMNS))
        out = {name: data[:, k] for k, name in enumerate(THERMO_COLUMNS)}
        out["step"] = out["step"].astype(np.int64)
        return out


class FrameCollector(IntervalReporter):
    """Frames in memory: wrapped positions, velocities, forces, boxes and times."""

    def __init__(self, interval_steps: int, *, phase_step: int = 0) -> None:
        super().__init__(interval_steps, phase_step=phase_step)
        self.positions: list[np.ndarray] = []
        self.velocities: list[np.ndarray] = []
        self.forces: list[np.ndarray] = []
        self.boxes: list[np.ndarray] = []
        self.times: list[float] = []

    def needs(self) -> dict[str, bool]:
        return {"positions": True, "velocities": True, "forces": True}

    def write(self, snap: Snapshot) -> None:
        self.positions.append(snap.wrapped_positions)
        self.velocities.append(snap.velocities)
        self.forces.append(snap.forces)
        self.boxes.append(snap.box)
        self.times.append(snap.time_fs)


class ProgressReporter(IntervalReporter):
    """Progress over ``total_steps`` steps from ``start_step`` (a bar on a terminal, plain lines in a
    log: :class:`thermocg.progress.Progress`), with simulated ps and ns/day. Asks for nothing, so it
    costs no transfer."""

    def __init__(self, total_steps: int, *, start_step: int = 0, description: str = "MD",
                 mode: ProgressMode = "auto") -> None:
        super().__init__(max(1, min(100, total_steps // 200 or 1)), phase_step=start_step)
        self.start_step = int(start_step)
        self._progress = Progress(total_steps, description=description, unit="steps", leave=False, mode=mode)
        self._wall0 = time.perf_counter()

    def report(self, simulation: "CGSimulation", snapshot: Snapshot) -> None:
        done = snapshot.step - self.start_step
        elapsed = time.perf_counter() - self._wall0
        simulated_ps = done * simulation.timestep_fs * units.FS_TO_PS
        self._progress.set_postfix(f"{simulated_ps:.2f} ps, {simulated_ps * 1e-3 / elapsed * 86400:.3g} ns/day")
        self._progress.update(done - self._progress.n)

    def finish(self, step: int) -> None:
        """Show ``step`` as reached (the progress ends where the run ended)."""
        self._progress.update(max(0, (step - self.start_step) - self._progress.n))

    def close(self, *, success: bool = True) -> None:
        self._progress.close()
