"""CG molecular dynamics with any thermocg potential: Langevin (BAOAB) NVT and velocity-Verlet NVE.

Equations of motion, in internal units (A, fs, kcal/mol, amu, K)::

    dR/dt = v,     m dv/dt = F(R) - m gamma v + sqrt(2 m gamma kT) xi(t)

with the acceleration a = F / m * FORCE_TO_ACCEL (A/fs^2) and kT = k_B T (kcal/mol). One BAOAB step
of length dt (Leimkuhler and Matthews, Appl. Math. Res. Express 2013)::

    B: v += dt/2 a(R)
    A: R += dt/2 v
    O: v  = c1 v + c2 sqrt(kT FORCE_TO_ACCEL / m) N(0, 1),   c1 = exp(-gamma dt), c2 = sqrt(1 - c1^2)
    A: R += dt/2 v
    (new forces)
    B: v += dt/2 a(R)

Without the O step this is velocity Verlet (NVE). BAOAB samples configurations with an error of
O(dt^2) that nearly vanishes for harmonic modes, and is exact for free particles (D = kT / (m gamma)).

The state (positions, velocities, forces) lives on the potential's device in float64; positions are
never re-wrapped into the box during a run, so the skin neighbour list
(:class:`thermocg.neighbors.NeighborList`) stays valid between rebuilds. Trajectory frames are wrapped
when written. Forces come from :func:`thermocg.potentials.energy_and_forces` (detached), so no autograd
history grows from step to step.

Reporters are callables with an ``interval_steps`` attribute (and optionally ``close(success=...)``),
called with a :class:`Snapshot` every ``interval_steps`` steps: an H5MD trajectory (MDAnalysis reads
it), an extxyz trajectory (ASE reads it), a thermo CSV and an atomic restart file.

Blow-up detection, every ``check_interval_steps`` and at every step a reporter runs: a NaN/inf, a
kinetic temperature above ``max_temperature_factor`` x the target, a force above
``max_force_kcal_mol_A``, or two beads closer than ``min_distance_A`` stops the run with
:class:`SimulationBlowUp`; the files keep every frame up to the last good one and the restart file
holds the last good state.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import numpy as np
import torch

from thermocg import units
from thermocg.frames import Frames, StatePoint
from thermocg.neighbors import NeighborList, check_cutoff_fits
from thermocg.potentials.base import Potential, energy_and_forces
from thermocg.rundir import atomic_path, finish_partial, partial_path

__all__ = [
    "MDInputError",
    "SimulationBlowUp",
    "Snapshot",
    "SimulationResult",
    "H5MDReporter",
    "ExtXYZReporter",
    "ThermoCSVReporter",
    "RestartReporter",
    "simulate",
    "load_restart",
    "write_restart",
    "maxwell_boltzmann_velocities",
    "kinetic_energy_kcal_mol",
    "wrap_positions",
    "run_simulate",
]

RESTART_FORMAT = "thermocg-restart"
RESTART_VERSION = 1


class MDInputError(ValueError):
    """Input that MD cannot start from (types, box, timestep, temperature, restart file)."""


class SimulationBlowUp(ValueError):
    """The run became unphysical; ``.result`` holds what was simulated up to the last good state."""

    def __init__(self, message: str, result: "SimulationResult | None" = None) -> None:
        super().__init__(message)
        self.result = result


# --------------------------------------------------------------------------------------------------
# small physics helpers
# --------------------------------------------------------------------------------------------------

def kinetic_energy_kcal_mol(velocities: torch.Tensor | np.ndarray, masses: torch.Tensor | np.ndarray) -> float:
    """K = 1/2 sum_i m_i |v_i|^2 in kcal/mol, v in A/fs (N, 3), m in amu (N,)."""
    v = torch.as_tensor(velocities)
    m = torch.as_tensor(masses, dtype=v.dtype, device=v.device)
    return float(0.5 * (m[:, None] * v * v).sum() * units.MV2_TO_KCAL_MOL)


def maxwell_boltzmann_velocities(masses: torch.Tensor, temperature_K: float, *, generator: torch.Generator,
                                 remove_com: bool = True) -> torch.Tensor:
    """Velocities (N, 3) A/fs drawn from exp(-m v^2 / 2kT), centre-of-mass motion removed.

    Each component has standard deviation sqrt(kT FORCE_TO_ACCEL / m). After removing the COM
    momentum the kinetic energy is rescaled to exactly (3N - 3)/2 kT, so the run starts at the target
    temperature (for one bead no rescaling is done).
    """
    n = masses.shape[0]
    sigma = torch.sqrt(units.kT(temperature_K) * units.FORCE_TO_ACCEL / masses)[:, None]
    noise = torch.randn((n, 3), generator=generator, device=masses.device, dtype=masses.dtype)
    v = sigma * noise
    if remove_com and n > 1:
        v = v - (masses[:, None] * v).sum(0) / masses.sum()
        if temperature_K > 0:
            target = 0.5 * (3 * n - 3) * units.kT(temperature_K)
            current = 0.5 * float((masses[:, None] * v * v).sum()) * units.MV2_TO_KCAL_MOL
            if current > 0:
                v = v * math.sqrt(target / current)
    return v


def wrap_positions(positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Positions (..., N, 3) mapped into the cell (fractional coordinates in [0, 1)); box rows = cell vectors."""
    frac = positions @ np.linalg.inv(box)
    frac = frac - np.floor(frac)
    return frac @ box


# --------------------------------------------------------------------------------------------------
# snapshots and reporters
# --------------------------------------------------------------------------------------------------

@dataclass
class Snapshot:
    """The state at one step, on the host. Positions are unwrapped (as integrated); see ``wrapped``."""

    step: int
    time_fs: float
    positions: np.ndarray  # (N, 3) A, unwrapped
    velocities: np.ndarray  # (N, 3) A/fs
    forces: np.ndarray  # (N, 3) kcal/mol/A
    box: np.ndarray  # (3, 3) A
    potential_energy_kcal_mol: float
    kinetic_energy_kcal_mol: float
    temperature_K: float
    types: np.ndarray
    type_names: tuple[str, ...]
    masses: np.ndarray
    rng_state: np.ndarray | None = None

    @property
    def wrapped_positions(self) -> np.ndarray:
        return wrap_positions(self.positions, self.box)

    @property
    def total_energy_kcal_mol(self) -> float:
        return self.potential_energy_kcal_mol + self.kinetic_energy_kcal_mol


class Reporter(Protocol):
    interval_steps: int

    def __call__(self, snapshot: Snapshot) -> None: ...


class _FunctionReporter:
    def __init__(self, interval_steps: int, function: Callable[[Snapshot], None]) -> None:
        self.interval_steps = int(interval_steps)
        self.function = function

    def __call__(self, snapshot: Snapshot) -> None:
        self.function(snapshot)


class H5MDReporter:
    """Trajectory as H5MD (kind "cg"): wrapped positions, box, optional velocities and forces.

    MDAnalysis reads it (``Universe(topology, path)``); the file appears under its final name when the
    run ends (on a blow-up too, holding the frames up to the last good one).
    """

    def __init__(self, path: str | os.PathLike, interval_steps: int, *, save_velocities: bool = True,
                 save_forces: bool = True, state: StatePoint | None = None,
                 molecule_ids: np.ndarray | None = None, metadata: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.interval_steps = int(interval_steps)
        self.save_velocities = save_velocities
        self.save_forces = save_forces
        self.state = state
        self.molecule_ids = molecule_ids
        self.metadata = metadata or {}
        self._writer = None

    def __call__(self, snap: Snapshot) -> None:
        from thermocg.dataset import H5MDWriter

        if self._writer is None:
            self._writer = H5MDWriter(
                self.path, types=snap.types, type_names=snap.type_names, masses=snap.masses, kind="cg",
                state=self.state, has_forces=self.save_forces, has_velocities=self.save_velocities,
                molecule_ids=self.molecule_ids, metadata=self.metadata,
            )
        self._writer.append(
            snap.wrapped_positions, snap.box, forces=snap.forces if self.save_forces else None,
            velocities=snap.velocities if self.save_velocities else None, time_fs=snap.time_fs, step=snap.step,
        )

    def close(self, *, success: bool = True) -> None:
        if self._writer is not None:
            self._writer.close(success=success)


class _TextFileReporter:
    """A reporter writing one text file at ``path``: to ``NAME.partial`` while running, renamed on a
    successful close, removed on a failed one."""

    def __init__(self, path: str | os.PathLike, interval_steps: int) -> None:
        self.path = Path(path)
        self.interval_steps = int(interval_steps)
        self._partial = partial_path(self.path)
        self._handle = None

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
    Written to ``NAME.partial`` and renamed on close.
    """

    def __call__(self, snap: Snapshot) -> None:
        import ase
        import ase.io

        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self._partial, "w")
        atoms = ase.Atoms(["X"] * len(snap.types), positions=snap.wrapped_positions, cell=snap.box, pbc=True)
        atoms.set_masses(snap.masses)
        atoms.new_array("bead_type", np.array([snap.type_names[t] for t in snap.types]))
        atoms.info["step"] = int(snap.step)
        atoms.info["time_fs"] = float(snap.time_fs)
        atoms.info["potential_energy_kcal_mol"] = float(snap.potential_energy_kcal_mol)
        ase.io.write(self._handle, atoms, format="extxyz")
        self._handle.flush()


THERMO_COLUMNS = ("step", "time_ps", "temperature_K", "potential_kcal_mol", "kinetic_kcal_mol", "total_kcal_mol")


class ThermoCSVReporter(_TextFileReporter):
    """Thermo log: step, time_ps, temperature_K, potential/kinetic/total energy in kcal/mol."""

    def __init__(self, path: str | os.PathLike, interval_steps: int) -> None:
        super().__init__(path, interval_steps)
        self._writer = None

    def __call__(self, snap: Snapshot) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self._partial, "w", newline="")
            self._writer = csv.writer(self._handle)
            self._writer.writerow(THERMO_COLUMNS)
        self._writer.writerow(_thermo_row(snap))
        self._handle.flush()


def _thermo_row(snap: Snapshot) -> list[Any]:
    return [snap.step, f"{snap.time_fs * units.FS_TO_PS:.6f}", f"{snap.temperature_K:.6g}",
            f"{snap.potential_energy_kcal_mol:.10g}", f"{snap.kinetic_energy_kcal_mol:.10g}",
            f"{snap.total_energy_kcal_mol:.10g}"]


class RestartReporter:
    """Restart file (npz, written atomically): positions, velocities, box, step, time, RNG state."""

    def __init__(self, path: str | os.PathLike, interval_steps: int) -> None:
        self.path = Path(path)
        self.interval_steps = int(interval_steps)

    def __call__(self, snap: Snapshot) -> None:
        write_restart(self.path, snap)


def write_restart(path: str | os.PathLike, snap: Snapshot) -> Path:
    """Write a restart file atomically (``NAME.partial`` then rename). No pickle: plain arrays only."""
    arrays = {
        "format": np.array(RESTART_FORMAT),
        "format_version": np.array(RESTART_VERSION),
        "positions": snap.positions,
        "velocities": snap.velocities,
        "box": snap.box,
        "step": np.array(snap.step, dtype=np.int64),
        "time_fs": np.array(snap.time_fs, dtype=np.float64),
        "types": snap.types,
        "type_names": np.array(snap.type_names, dtype=str),
        "masses": snap.masses,
    }
    if snap.rng_state is not None:
        arrays["rng_state"] = snap.rng_state
    with atomic_path(path) as partial, open(partial, "wb") as handle:  # np.savez would append ".npz" to a name
        np.savez(handle, **arrays)
    return Path(path)


def load_restart(path: str | os.PathLike) -> dict[str, Any]:
    """Read a restart file; raise :class:`MDInputError` naming the file if it cannot be used."""
    path = Path(path)
    if not path.exists():
        raise MDInputError(f"{path}: no such restart file")
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
    except Exception as exc:  # zipfile/np errors of many kinds: all mean "unreadable"
        raise MDInputError(f"{path}: unreadable restart file ({type(exc).__name__}: {exc})") from None
    if str(out.get("format", "")) != RESTART_FORMAT:
        raise MDInputError(f"{path}: not a thermocg restart file")
    required = ("positions", "velocities", "box", "step", "time_fs", "types", "type_names", "masses")
    missing = [k for k in required if k not in out]
    if missing:
        raise MDInputError(f"{path}: restart file lacks {missing}")
    n = out["positions"].shape[0]
    if out["positions"].shape != (n, 3) or out["velocities"].shape != (n, 3) or out["box"].shape != (3, 3):
        raise MDInputError(f"{path}: restart arrays have inconsistent shapes")
    for key in ("positions", "velocities", "box"):
        if not np.all(np.isfinite(out[key])):
            raise MDInputError(f"{path}: restart {key} hold NaN or inf")
    out["step"] = int(out["step"])
    out["time_fs"] = float(out["time_fs"])
    out["type_names"] = tuple(str(t) for t in out["type_names"])
    return out


# --------------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------------

@dataclass
class SimulationResult:
    """What a run produced.

    frames : the saved frames (wrapped positions, velocities, forces), or None if ``keep_frames=False``
    thermo : arrays per THERMO_COLUMNS name, one entry per thermo report
    n_steps : steps completed (up to the last good state if the run blew up)
    blowup : None, or the message saying why the run stopped
    """

    frames: Frames | None
    thermo: dict[str, np.ndarray]
    n_steps: int
    timestep_fs: float
    wall_time_s: float
    n_neighbor_builds: int
    final: Snapshot | None
    blowup: str | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def steps_per_s(self) -> float:
        return self.n_steps / self.wall_time_s if self.wall_time_s > 0 else float("nan")

    @property
    def ns_per_day(self) -> float:
        """Simulated ns per wall-clock day."""
        return self.steps_per_s * self.timestep_fs * 1e-6 * 86400.0

    def summary(self) -> dict[str, Any]:
        t = self.thermo.get("temperature_K", np.array([]))
        return {
            "n_steps": self.n_steps,
            "timestep_fs": self.timestep_fs,
            "simulated_ps": self.n_steps * self.timestep_fs * units.FS_TO_PS,
            "wall_time_s": self.wall_time_s,
            "steps_per_s": self.steps_per_s,
            "ns_per_day": self.ns_per_day,
            "n_neighbor_builds": self.n_neighbor_builds,
            "mean_temperature_K": float(t.mean()) if len(t) else None,
            "blowup": self.blowup,
            "paths": {k: str(v) for k, v in self.paths.items()},
        }


class _FrameCollector:
    def __init__(self, interval_steps: int) -> None:
        self.interval_steps = interval_steps
        self.positions, self.velocities, self.forces, self.boxes, self.times = [], [], [], [], []

    def __call__(self, snap: Snapshot) -> None:
        self.positions.append(snap.wrapped_positions)
        self.velocities.append(snap.velocities)
        self.forces.append(snap.forces)
        self.boxes.append(snap.box)
        self.times.append(snap.time_fs)


class _ThermoCollector:
    def __init__(self, interval_steps: int) -> None:
        self.interval_steps = interval_steps
        self.rows: list[tuple[float, ...]] = []

    def __call__(self, snap: Snapshot) -> None:
        self.rows.append((snap.step, snap.time_fs * units.FS_TO_PS, snap.temperature_K,
                          snap.potential_energy_kcal_mol, snap.kinetic_energy_kcal_mol,
                          snap.total_energy_kcal_mol))

    def arrays(self) -> dict[str, np.ndarray]:
        data = np.array(self.rows, dtype=np.float64).reshape(-1, len(THERMO_COLUMNS))
        out = {name: data[:, k] for k, name in enumerate(THERMO_COLUMNS)}
        out["step"] = out["step"].astype(np.int64)
        return out


# --------------------------------------------------------------------------------------------------
# simulate
# --------------------------------------------------------------------------------------------------

def _check_inputs(potential: Potential, initial: Frames, temperature_K: float, timestep_fs: float, n_steps: int,
                  friction_per_ps: float, save_interval_steps: int, integrator: str) -> None:
    if not isinstance(potential, Potential):
        raise MDInputError(f"potential must be a thermocg Potential, got {type(potential).__name__}")
    if not isinstance(initial, Frames) or initial.n_frames < 1:
        raise MDInputError("initial must be a Frames with at least one frame")
    if not (math.isfinite(timestep_fs) and timestep_fs > 0):
        raise MDInputError(f"timestep_fs must be positive, got {timestep_fs}")
    if not (math.isfinite(temperature_K) and temperature_K >= 0):
        raise MDInputError(f"temperature_K must be non-negative, got {temperature_K}")
    if integrator not in ("langevin", "nve"):
        raise MDInputError(f"integrator must be 'langevin' or 'nve', got {integrator!r}")
    if integrator == "langevin" and not (math.isfinite(friction_per_ps) and friction_per_ps > 0):
        raise MDInputError(f"friction_per_ps must be positive for Langevin dynamics, got {friction_per_ps}")
    if int(n_steps) != n_steps or n_steps < 0:
        raise MDInputError(f"n_steps must be a non-negative integer, got {n_steps}")
    if int(save_interval_steps) != save_interval_steps or save_interval_steps < 1:
        raise MDInputError(f"save_interval_steps must be a positive integer, got {save_interval_steps}")
    if np.any(initial.masses <= 0):
        raise MDInputError("every bead needs a positive mass")


def simulate(
    potential: Potential,
    initial: Frames,
    *,
    temperature_K: float,
    timestep_fs: float,
    n_steps: int,
    seed: int | torch.Generator,
    save_interval_steps: int = 100,
    friction_per_ps: float = 1.0,
    integrator: Literal["langevin", "nve"] = "langevin",
    out_dir: str | os.PathLike | None = None,
    thermo_interval_steps: int | None = None,
    restart_interval_steps: int | None = None,
    restart: str | os.PathLike | None = None,
    initial_velocities: Literal["maxwell", "frame"] = "maxwell",
    frame_index: int = -1,
    reporters: list[Reporter | tuple[int, Callable[[Snapshot], None]]] | None = None,
    keep_frames: bool = True,
    save_velocities: bool = True,
    save_forces: bool = True,
    extxyz: bool = False,
    skin_A: float = 1.0,
    check_interval_steps: int = 10,
    max_temperature_factor: float = 5.0,
    max_force_kcal_mol_A: float = 1.0e3,
    min_distance_A: float = 0.5,
    raise_on_blowup: bool = True,
    progress: bool = True,
) -> SimulationResult:
    """Run CG MD with ``potential`` from a frame of ``initial`` (or from a ``restart`` file).

    Parameters
    ----------
    potential : any thermocg Potential; the state lives on its device
    initial : CG Frames; frame ``frame_index`` gives positions and box, the Frames give bead types and
        masses (amu). Velocities: Maxwell-Boltzmann at ``temperature_K`` from ``seed`` (COM removed),
        or the frame's own velocities with ``initial_velocities="frame"``.
    temperature_K : Langevin target temperature (and the initial velocities' temperature for NVE), K
    timestep_fs : dt, fs;  n_steps : steps to run;  friction_per_ps : Langevin gamma, 1/ps
    seed : int or torch.Generator (on the potential's device) for velocities and Langevin noise
    save_interval_steps : trajectory frames (in memory and in ``out_dir/traj.h5md``) every that many steps
    out_dir : if given, writes traj.h5md, thermo.csv, restart.npz (and traj.extxyz when ``extxyz``)
    reporters : extra reporters (objects with ``interval_steps``, or ``(interval_steps, callable)``)
    check_interval_steps, max_temperature_factor, max_force_kcal_mol_A, min_distance_A : blow-up checks
    raise_on_blowup : raise :class:`SimulationBlowUp` (with ``.result``) or return with ``result.blowup`` set

    The step counter starts at 0 (or at the restart's step); frame k of the trajectory is step
    k * save_interval_steps, step 0 included.
    """
    integrator = str(integrator)
    _check_inputs(potential, initial, temperature_K, timestep_fs, n_steps, friction_per_ps,
                  save_interval_steps, integrator)
    thermo_interval_steps = int(thermo_interval_steps or save_interval_steps)
    restart_interval_steps = int(restart_interval_steps or max(save_interval_steps, n_steps // 10 or 1))
    device = potential.device
    state_dtype = torch.float64

    try:
        types_t = potential.type_indices(initial.type_names, initial.types).to(device)
    except ValueError as exc:
        raise MDInputError(f"the potential does not fit the frame: {exc}") from None
    masses_np = initial.masses
    positions_np = initial.positions[frame_index]
    box_np = initial.box[frame_index]
    velocities_np = None
    start_step, start_time_fs, rng_state = 0, 0.0, None
    if restart is not None:
        data = load_restart(restart)
        if data["positions"].shape[0] != initial.n_particles:
            raise MDInputError(f"{restart}: {data['positions'].shape[0]} beads, the initial frames have "
                               f"{initial.n_particles}")
        restart_names = [data["type_names"][t] for t in data["types"]]
        frame_names = [initial.type_names[t] for t in initial.types]
        if restart_names != frame_names:
            raise MDInputError(f"{restart}: bead types differ from those of the initial frames")
        positions_np, velocities_np, box_np = data["positions"], data["velocities"], data["box"]
        start_step, start_time_fs = data["step"], data["time_fs"]
        rng_state = data.get("rng_state")
    elif initial_velocities == "frame":
        if initial.velocities is None:
            raise MDInputError("initial_velocities='frame' but the initial frames carry no velocities")
        velocities_np = initial.velocities[frame_index]
    elif initial_velocities != "maxwell":
        raise MDInputError(f"initial_velocities must be 'maxwell' or 'frame', got {initial_velocities!r}")
    try:
        check_cutoff_fits(potential.cutoff_A, box_np, what="the potential's cutoff")
    except ValueError as exc:
        raise MDInputError(f"box too small: {exc}") from None

    if isinstance(seed, torch.Generator):
        generator = seed
    else:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed))
    if rng_state is not None:
        generator.set_state(torch.as_tensor(rng_state, dtype=torch.uint8))

    masses = torch.as_tensor(masses_np, dtype=state_dtype, device=device)
    inv_mass_accel = (units.FORCE_TO_ACCEL / masses)[:, None]
    box = torch.as_tensor(box_np, dtype=state_dtype, device=device)
    x = torch.as_tensor(positions_np, dtype=state_dtype, device=device).clone()
    if velocities_np is None:
        v = maxwell_boltzmann_velocities(masses, temperature_K, generator=generator)
    else:
        v = torch.as_tensor(velocities_np, dtype=state_dtype, device=device).clone()
    n_particles = x.shape[0]
    n_dof = 3 * n_particles - (3 if integrator == "nve" else 0)
    n_dof = max(n_dof, 1)
    dt = float(timestep_fs)
    half_dt = 0.5 * dt
    c1 = math.exp(-friction_per_ps * units.FS_TO_PS * dt) if integrator == "langevin" else 1.0
    c2 = math.sqrt(max(0.0, 1.0 - c1 * c1))
    sigma_v = torch.sqrt(units.kT(temperature_K) * units.FORCE_TO_ACCEL / masses)[:, None] * c2

    neighbors = NeighborList(potential.cutoff_A, skin_A=skin_A)

    def compute(x_now: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = neighbors.get(x_now, box)
        energy, forces = energy_and_forces(potential, x_now, box, types_t, pairs=pairs)
        return energy[0].to(state_dtype), forces[0].to(state_dtype)

    # reporters
    all_reporters: list[Any] = []
    paths: dict[str, Path] = {}
    metadata = {"potential": potential.kind, "integrator": integrator, "timestep_fs": dt,
                "temperature_K": temperature_K, "friction_per_ps": friction_per_ps}
    state = initial.state
    if out_dir is not None:
        out_dir = Path(out_dir)
        paths = {"trajectory": out_dir / "traj.h5md", "thermo": out_dir / "thermo.csv",
                 "restart": out_dir / "restart.npz"}
        all_reporters.append(H5MDReporter(paths["trajectory"], save_interval_steps, save_velocities=save_velocities,
                                          save_forces=save_forces, state=state,
                                          molecule_ids=initial.molecule_ids, metadata=metadata))
        all_reporters.append(ThermoCSVReporter(paths["thermo"], thermo_interval_steps))
        all_reporters.append(RestartReporter(paths["restart"], restart_interval_steps))
        if extxyz:
            paths["extxyz"] = out_dir / "traj.extxyz"
            all_reporters.append(ExtXYZReporter(paths["extxyz"], save_interval_steps))
    thermo_collector = _ThermoCollector(thermo_interval_steps)
    all_reporters.append(thermo_collector)
    frame_collector = _FrameCollector(save_interval_steps) if keep_frames else None
    if frame_collector is not None:
        all_reporters.append(frame_collector)
    for r in reporters or []:
        all_reporters.append(_FunctionReporter(*r) if isinstance(r, tuple) else r)
    for r in all_reporters:
        if int(r.interval_steps) < 1:
            raise MDInputError(f"reporter {r!r}: interval_steps must be >= 1")

    types_np = np.asarray(initial.types)
    type_names = initial.type_names

    def snapshot(step: int, x_now, v_now, f_now, e_now) -> Snapshot:
        ke = float(0.5 * (masses[:, None] * v_now * v_now).sum()) * units.MV2_TO_KCAL_MOL
        return Snapshot(
            step=step, time_fs=start_time_fs + (step - start_step) * dt,
            positions=x_now.cpu().numpy().copy(), velocities=v_now.cpu().numpy().copy(),
            forces=f_now.cpu().numpy().copy(), box=box_np.copy(),
            potential_energy_kcal_mol=float(e_now), kinetic_energy_kcal_mol=ke,
            temperature_K=2.0 * ke / (n_dof * units.KB_KCAL_MOL_K),
            types=types_np, type_names=type_names, masses=masses_np,
            rng_state=generator.get_state().cpu().numpy().copy(),
        )

    kT_target = units.kT(temperature_K)

    def check(step: int, x_now, v_now, f_now, e_now, pairs_now) -> str | None:
        ke = 0.5 * (masses[:, None] * v_now * v_now).sum() * units.MV2_TO_KCAL_MOL
        fmax = torch.linalg.vector_norm(f_now, dim=1).max()
        finite = torch.isfinite(x_now).all() & torch.isfinite(v_now).all() & torch.isfinite(f_now).all() \
            & torch.isfinite(e_now)
        if pairs_now.pair_i.numel():
            vec = x_now[pairs_now.pair_j] - x_now[pairs_now.pair_i] + pairs_now.shifts.to(state_dtype) @ box
            dmin = torch.linalg.vector_norm(vec, dim=1).min()
        else:
            dmin = torch.tensor(float("inf"), dtype=state_dtype, device=device)
        finite_v, ke_v, fmax_v, dmin_v = torch.stack([finite.to(state_dtype), ke, fmax, dmin]).tolist()
        where = f"step {step} (t = {(start_time_fs + (step - start_step) * dt) * units.FS_TO_PS:.3f} ps)"
        if finite_v < 1 or not math.isfinite(ke_v):
            return f"{where}: NaN or inf in positions, velocities, forces or energy"
        temp = 2.0 * ke_v / (n_dof * units.KB_KCAL_MOL_K)
        if kT_target > 0 and temp > max_temperature_factor * temperature_K:
            return (f"{where}: temperature {temp:.1f} K exceeds {max_temperature_factor:g} x the target "
                    f"{temperature_K:g} K")
        if fmax_v > max_force_kcal_mol_A:
            return f"{where}: a force of {fmax_v:.3g} kcal/mol/A exceeds {max_force_kcal_mol_A:g}"
        if dmin_v < min_distance_A:
            return f"{where}: two beads are {dmin_v:.3f} A apart, closer than {min_distance_A:g} A"
        return None

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, desc=f"MD {integrator}", unit="step", leave=False)
    progress_every = max(1, min(100, n_steps // 200 or 1))

    energy, forces = compute(x)
    blowup = None
    step = start_step
    last_good: tuple[Any, ...] | None = None
    success = True
    wall0 = time.perf_counter()
    try:
        with torch.no_grad():
            blowup = check(step, x, v, forces, energy, neighbors.get(x, box))
            if blowup is not None:
                raise SimulationBlowUp(f"the initial state is already unphysical: {blowup}")
            last_good = (step, x.clone(), v.clone(), forces.clone(), energy.clone(), generator.get_state())
            if start_step == 0 or restart is None:
                snap = snapshot(step, x, v, forces, energy)
                for r in all_reporters:
                    r(snap)
            end_step = start_step + int(n_steps)
            while step < end_step:
                # B A O A (forces) B
                v.add_(forces * inv_mass_accel, alpha=half_dt)
                if integrator == "langevin":
                    x.add_(v, alpha=half_dt)
                    noise = torch.randn(x.shape, generator=generator, device=device, dtype=state_dtype)
                    v.mul_(c1).add_(sigma_v * noise)
                    x.add_(v, alpha=half_dt)
                else:
                    x.add_(v, alpha=dt)
                energy, forces = compute(x)
                v.add_(forces * inv_mass_accel, alpha=half_dt)
                step += 1
                due = [r for r in all_reporters if (step - start_step) % r.interval_steps == 0]
                if due or (step - start_step) % check_interval_steps == 0:
                    blowup = check(step, x, v, forces, energy, neighbors.get(x, box))
                    if blowup is not None:
                        break
                    last_good = (step, x.clone(), v.clone(), forces.clone(), energy.clone(), generator.get_state())
                if due:
                    snap = snapshot(step, x, v, forces, energy)
                    for r in due:
                        r(snap)
                if bar is not None and (step - start_step) % progress_every == 0:
                    bar.update(progress_every)
                    elapsed = time.perf_counter() - wall0
                    sim_ps = (step - start_step) * dt * units.FS_TO_PS
                    bar.set_postfix(t_ps=f"{sim_ps:.2f}", ns_day=f"{sim_ps * 1e-3 / elapsed * 86400:.3g}")
    except BaseException:
        success = False
        raise
    finally:
        wall = time.perf_counter() - wall0
        if bar is not None:
            bar.update(max(0, (step - start_step) - bar.n))
            bar.close()
        final_snap = None
        if last_good is not None and success:
            g_step, gx, gv, gf, ge, g_rng = last_good
            generator_state_now = generator.get_state()
            generator.set_state(g_rng)
            final_snap = snapshot(g_step, gx, gv, gf, ge)
            generator.set_state(generator_state_now)
            if "restart" in paths:
                write_restart(paths["restart"], final_snap)
        for r in all_reporters:
            close = getattr(r, "close", None)
            if close is not None:
                close(success=success)

    frames = None
    if frame_collector is not None and frame_collector.positions:
        frames = Frames(
            positions=np.stack(frame_collector.positions), box=np.stack(frame_collector.boxes),
            types=initial.types, type_names=initial.type_names, masses=initial.masses,
            velocities=np.stack(frame_collector.velocities), forces=np.stack(frame_collector.forces),
            time_fs=np.array(frame_collector.times), molecule_ids=initial.molecule_ids,
            state=initial.state if initial.state is not None else None,
            metadata=dict(metadata, kind="cg-md"),
        )
    completed = (last_good[0] if last_good is not None else start_step) - start_step
    result = SimulationResult(
        frames=frames, thermo=thermo_collector.arrays(), n_steps=completed, timestep_fs=dt, wall_time_s=wall,
        n_neighbor_builds=neighbors.n_builds, final=final_snap, blowup=blowup, paths=paths,
    )
    if blowup is not None:
        message = (f"simulation blew up at {blowup}; kept {len(thermo_collector.rows)} thermo rows and the "
                   f"trajectory up to step {start_step + completed}"
                   + (f"; last good state in {paths['restart']}" if "restart" in paths else ""))
        result.blowup = message
        if raise_on_blowup:
            raise SimulationBlowUp(message, result)
    return result


# --------------------------------------------------------------------------------------------------
# the stage: RUN_DIR/md/<model>/<state>/...
# --------------------------------------------------------------------------------------------------

def _model_name(model: str | os.PathLike) -> str:
    path = Path(model)
    return path.parent.name if path.stem == "model" and path.parent.name else path.stem


def run_simulate(config: Any, run_dir: str | os.PathLike, *, model: str | os.PathLike,
                 state: list[str] | str | None = None, progress: bool = True) -> list[Path]:
    """CG MD with the model file ``model`` at every state point of the config (or those named in ``state``).

    For each state: the initial frame is the last frame of RUN_DIR/cg/<label>.h5md, the temperature is
    the state's (unless ``simulate.temperature_K`` overrides it); writes RUN_DIR/md/<model>/<label>/
    {traj.h5md, thermo.csv, restart.npz, summary.json, resolved.yaml}. A blow-up is recorded in
    summary.json (the run's files up to the last good state are kept) and does not stop other states.
    Returns the run directories.
    """
    from thermocg.config import SimulateConfig, write_resolved
    from thermocg.potentials.base import load_potential
    from thermocg.rundir import RunDir, atomic_write_text
    from thermocg import provenance

    settings = config.simulate if isinstance(config.simulate, SimulateConfig) else SimulateConfig(**(config.simulate or {}))
    rd = RunDir(run_dir)
    device = settings.resolved_device()
    potential = load_potential(model, device=device)
    name = _model_name(model)
    labels = [s.to_state().label for s in config.state_points()]
    if not labels:
        labels = [p.stem for p in rd.cg_datasets()]
    wanted = [state] if isinstance(state, str) else state
    if wanted:
        unknown = [w for w in wanted if w not in labels and not rd.cg_dataset(w).exists()]
        if unknown:
            raise ValueError(f"simulate: unknown state label(s) {unknown}; known: {labels}")
        labels = list(wanted)
    outputs = []
    for k, label in enumerate(labels):
        dataset = rd.cg_dataset(label)
        if not dataset.exists():
            raise FileNotFoundError(f"{dataset}: no CG dataset for state {label} (run `thermocg map` first)")
        from thermocg.dataset import H5MDDataset

        with H5MDDataset(dataset) as ds:
            initial = ds.read(len(ds) - 1)
        temperature = settings.temperature_K or (initial.state.temperature_K if initial.state else None)
        if temperature is None:
            raise ValueError(f"{dataset}: no state temperature stored; set simulate.temperature_K")
        out = rd.md(name, label)
        n_steps = settings.n_steps()
        seed = int(config.seed) + 7919 * k
        try:
            result = simulate(
                potential, initial, temperature_K=temperature, timestep_fs=settings.timestep_fs, n_steps=n_steps,
                seed=seed, save_interval_steps=settings.save_interval_steps(),
                thermo_interval_steps=settings.thermo_interval_steps(), friction_per_ps=settings.friction_per_ps,
                integrator=settings.integrator, out_dir=out, keep_frames=False,
                save_velocities=settings.save_velocities, extxyz=settings.extxyz, skin_A=settings.skin_A,
                check_interval_steps=settings.check_interval_steps,
                max_temperature_factor=settings.max_temperature_factor,
                max_force_kcal_mol_A=settings.max_force_kcal_mol_A, min_distance_A=settings.min_distance_A,
                raise_on_blowup=False, progress=progress,
            )
        except MDInputError as exc:
            raise MDInputError(f"simulate {name} at {label}: {exc}") from None
        summary = dict(result.summary(), model=name, model_file=str(model), state=label, temperature_K=temperature,
                       seed=seed, device=str(device))
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
        write_resolved(settings, out / "resolved.yaml",
                       extra={"inputs": provenance.collect([model, dataset]), "seed": seed, "state": label})
        outputs.append(out)
    return outputs
