"""The state of a CG MD run: on the device while it runs, on the host when reported, on disk as a restart.

Units are the internal ones: positions A, velocities A/fs, forces kcal/mol/A, energies kcal/mol,
masses amu, time fs, temperature K. N is the number of beads.

- :class:`MDState` is what an integrator advances: positions (N, 3), velocities (N, 3), forces (N, 3)
  and the potential energy () as float64 tensors on the potential's device, the box (3, 3), the
  masses (N,), the random generator, and the step and time. Positions are never re-wrapped during a
  run (the skin neighbour list needs continuous trajectories).
- :class:`Snapshot` is a host (numpy) copy of part of that state, as reporters receive it: a field a
  reporter did not ask for is None, so it was never copied off the device. Kinetic energy and
  temperature are

      K = 1/2 sum_i m_i |v_i|^2 * MV2_TO_KCAL_MOL,      T = 2 K / (n_dof k_B)

  with n_dof = 3N under a thermostat and 3N - 3 when the centre-of-mass momentum is conserved (NVE).
- A restart file (npz, no pickle; format ``thermocg-restart`` version 1) holds positions, velocities,
  box, step, time_fs, types, type_names and masses, and optionally ``rng_state`` (the torch
  generator's state bytes) and ``neighbor_reference_positions`` (the positions the neighbour list
  was last built at). With both, a run continued from the file repeats the uninterrupted run bit for
  bit: the same noise, and the same pair list, so the same order of the force sums. Files without
  the optional arrays (older ones) still load; the list is then built at the restart positions.
  Arrays an integrator keeps beyond the state (the build positions of a multiple-time-step
  integrator's own neighbour list, :meth:`~thermocg.md.integrators.Integrator.saved_arrays`) are
  stored as ``integrator.<name>`` and given back to the integrator of the continuation.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thermocg import units
from thermocg.mapping import wrap_positions as _wrap_frames
from thermocg.rundir import atomic_path

RESTART_FORMAT = "thermocg-restart"
RESTART_VERSION = 1
#: arrays every restart file holds; ``rng_state`` and ``neighbor_reference_positions`` are optional
RESTART_REQUIRED = ("positions", "velocities", "box", "step", "time_fs", "types", "type_names", "masses")
#: prefix of the integrator's own arrays in a restart file
INTEGRATOR_PREFIX = "integrator."


class MDInputError(ValueError):
    """Input that MD cannot start from (types, box, timestep, temperature, restart file)."""


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
    """Positions (..., N, 3) A put into one cell ``box`` (3, 3) (rows are the cell vectors).

    Fractional coordinates land in [0, 1), boundary included: this is
    :func:`thermocg.mapping.wrap_positions` (the one implementation, which guards the case where
    ``x - floor(x)`` rounds to exactly 1 for x = -1e-17), reshaped for any leading dimensions.
    """
    positions = np.asarray(positions, dtype=np.float64)
    shape = positions.shape
    frames = positions.reshape(-1, shape[-2], 3)
    return _wrap_frames(frames, np.asarray(box, dtype=np.float64).reshape(3, 3)).reshape(shape)


# --------------------------------------------------------------------------------------------------
# the state on the device, and a host snapshot of it
# --------------------------------------------------------------------------------------------------

@dataclass
class MDState:
    """The dynamical state an integrator advances, on the potential's device (float64 tensors).

    positions, velocities, forces : (N, 3) A, A/fs, kcal/mol/A; positions unwrapped
    potential_energy : () kcal/mol, of the current positions (forces too)
    box : (3, 3) A, rows are the cell vectors;  masses : (N,) amu
    generator : the random generator (Langevin noise, initial velocities)
    step, time_fs : the step counter and the simulated time (kept by the simulation, not the integrator)
    extra : tensors an integrator carries from step to step (e.g. the slow forces of a multiple-time-step
        scheme); they are checkpointed and rolled back with the rest, but not written to restart files
    """

    positions: torch.Tensor
    velocities: torch.Tensor
    forces: torch.Tensor
    potential_energy: torch.Tensor
    box: torch.Tensor
    masses: torch.Tensor
    generator: torch.Generator
    step: int = 0
    time_fs: float = 0.0
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def n_particles(self) -> int:
        return int(self.positions.shape[0])


@dataclass(kw_only=True)
class Snapshot:
    """The state at one step, on the host. Fields nobody asked for are None (never fetched).

    positions (N, 3) A are unwrapped, as integrated (see :attr:`wrapped_positions`); velocities
    (N, 3) A/fs; forces (N, 3) kcal/mol/A; energies in kcal/mol; ``rng_state`` the generator's
    state bytes; ``neighbor_reference_positions`` (N, 3) A where the neighbour list was last built.
    """

    step: int
    time_fs: float
    box: np.ndarray  # (3, 3) A
    types: np.ndarray
    type_names: tuple[str, ...]
    masses: np.ndarray
    positions: np.ndarray | None = None
    velocities: np.ndarray | None = None
    forces: np.ndarray | None = None
    potential_energy_kcal_mol: float | None = None
    kinetic_energy_kcal_mol: float | None = None
    temperature_K: float | None = None
    rng_state: np.ndarray | None = None
    neighbor_reference_positions: np.ndarray | None = None
    #: the integrator's own arrays (:meth:`~thermocg.md.integrators.Integrator.saved_arrays`), or None
    integrator_arrays: dict[str, np.ndarray] | None = None

    @property
    def wrapped_positions(self) -> np.ndarray:
        if self.positions is None:
            raise ValueError(f"snapshot of step {self.step} holds no positions (no reporter asked for them)")
        return wrap_positions(self.positions, self.box)

    @property
    def total_energy_kcal_mol(self) -> float:
        if self.potential_energy_kcal_mol is None or self.kinetic_energy_kcal_mol is None:
            raise ValueError(f"snapshot of step {self.step} holds no energies (no reporter asked for them)")
        return self.potential_energy_kcal_mol + self.kinetic_energy_kcal_mol


# --------------------------------------------------------------------------------------------------
# restart files
# --------------------------------------------------------------------------------------------------

def write_restart(path: str | os.PathLike, snap: Snapshot) -> Path:
    """Write a restart file atomically (``NAME.partial`` then rename). No pickle: plain arrays only.

    ``snap`` needs positions and velocities; its ``rng_state`` and ``neighbor_reference_positions``
    are written when present.
    """
    if snap.positions is None or snap.velocities is None:
        raise ValueError("write_restart: the snapshot needs positions and velocities")
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
    if snap.neighbor_reference_positions is not None:
        arrays["neighbor_reference_positions"] = snap.neighbor_reference_positions
    for name, array in (snap.integrator_arrays or {}).items():
        arrays[INTEGRATOR_PREFIX + name] = array
    with atomic_path(path) as partial, open(partial, "wb") as handle:  # np.savez would append ".npz" to a name
        np.savez(handle, **arrays)
    return Path(path)


def load_restart(path: str | os.PathLike) -> dict[str, Any]:
    """Read a restart file; raise :class:`MDInputError` naming the file if it cannot be used.

    Returns a dict of the arrays (``step`` an int, ``time_fs`` a float, ``type_names`` a tuple).
    """
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
    missing = [k for k in RESTART_REQUIRED if k not in out]
    if missing:
        raise MDInputError(f"{path}: restart file lacks {missing}")
    n = out["positions"].shape[0]
    if out["positions"].shape != (n, 3) or out["velocities"].shape != (n, 3) or out["box"].shape != (3, 3):
        raise MDInputError(f"{path}: restart arrays have inconsistent shapes")
    reference = out.get("neighbor_reference_positions")
    if reference is not None and reference.shape != (n, 3):
        raise MDInputError(f"{path}: neighbor_reference_positions has shape {reference.shape}, expected {(n, 3)}")
    integrator_arrays = {key[len(INTEGRATOR_PREFIX):]: out.pop(key) for key in list(out)
                         if key.startswith(INTEGRATOR_PREFIX)}
    for key, array in integrator_arrays.items():
        if array.dtype.kind != "f" or not np.all(np.isfinite(array)):
            raise MDInputError(f"{path}: restart array {INTEGRATOR_PREFIX}{key} is not finite floating-point data")
    for key in ("positions", "velocities", "box", "neighbor_reference_positions"):
        if key in out and not np.all(np.isfinite(out[key])):
            raise MDInputError(f"{path}: restart {key} hold NaN or inf")
    out["integrator_arrays"] = integrator_arrays or None
    out["step"] = int(out["step"])
    out["time_fs"] = float(out["time_fs"])
    out["type_names"] = tuple(str(t) for t in out["type_names"])
    return out
