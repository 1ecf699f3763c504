"""A CG MD simulation as an object: state, potential, integrator, blow-up detector and reporters.

:class:`CGSimulation` owns the state of a run (:class:`~thermocg.md.state.MDState`: positions,
velocities, forces and potential energy as float64 tensors on the potential's device, the box, the
masses, the random generator, the step and the time) and a potential, wrapped as a force provider
(:class:`PotentialForces`: energy and forces of positions (N, 3) through a skin neighbour list,
detached so no autograd history grows from step to step). It is advanced by ``step(n)`` or
``run(duration_ps)``; one step is one call of the integrator (:mod:`thermocg.md.integrators`),
after which the simulation sets step += 1 and time_fs = step dt + (time_0 - step_0 dt), so that a run
continued from a restart of a run started at step 0 counts time exactly as the uninterrupted run.

Positions are never re-wrapped into the box during a run, so the neighbour list stays valid between
rebuilds (it is rebuilt when a bead moved more than skin/2 since the last build).

Reporters (:mod:`thermocg.md.reporters`) are asked when they next report and what they will need
(``describe_next_report``); at a step where some are due, only the union of what those asked for is
copied to the host (counted in :attr:`CGSimulation.host_fetches`). The blow-up detector
(:mod:`thermocg.md.blowup`) runs every ``interval_steps`` steps, at every step where a reporter
fetches data, and at the last step of every ``step(n)``; a state that passes becomes the *last good
state* (a device copy). A state that fails rolls the simulation back to the last good state (positions,
velocities, forces, generator, step, neighbour list) and raises
:class:`~thermocg.md.blowup.SimulationBlowUp`; reporters are not called at the failed step, so files
end at the last good frame, and ``save_restart`` then writes the last good state.

Splitting ``step(n)`` into pieces gives the same trajectory bit for bit; so does continuing from a
restart file written by this class (it records the generator state and the neighbour list's build
positions; see :mod:`thermocg.md.state`).

The model's temperature. A temperature-dependent potential (``potential.temperature_dependent``,
e.g. a W(R; T) fitted at several temperatures) is evaluated at :attr:`CGSimulation.model_temperature_K`:
the thermostat's target when the integrator has one (Langevin); without a thermostat (NVE) the
``temperature_K`` given to the simulation, else a temperature already set on the potential, else the
model's reference temperature T_ref with a :class:`~thermocg.potentials.base.TemperatureWarning`.
The potential's own range check applies (a warning a little outside its training temperatures, an
error far outside). The force provider sets that temperature on the potential before every
evaluation where it differs, so two simulations sharing one potential object at different
temperatures each get their own force field. Temperature-agnostic potentials ignore it.
"""

from __future__ import annotations

import collections
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import torch

from thermocg import units
from thermocg.frames import Frames
from thermocg.md.blowup import BlowUpDetector, SimulationBlowUp
from thermocg.md.integrators import Integrator, IntegratorContext
from thermocg.md.reporters import Reporter, ReportRequest
from thermocg.md.state import MDInputError, MDState, Snapshot, load_restart, maxwell_boltzmann_velocities, write_restart
from thermocg.neighbors import NeighborList, PairIndex, check_cutoff_fits
from thermocg.potentials.base import Potential, TemperatureWarning, energy_and_forces

__all__ = ["CGSimulation", "PotentialForces"]

STATE_DTYPE = torch.float64


class PotentialForces:
    """Energy () kcal/mol and forces (N, 3) kcal/mol/A of a potential at positions (N, 3) A.

    A :class:`~thermocg.md.integrators.ForceProvider` with its own skin neighbour list; results are
    detached and cast to float64. ``types`` are the potential's type indices (N,); ``box`` (3, 3).
    ``reference_positions`` are the positions the list was last built at. A potential with a method
    ``direct_energy_and_forces(positions, box, types, pairs) -> (energy (), forces (N, 3))`` is
    evaluated through it instead of autograd (the tabulated fast part of r-RESPA,
    :class:`~thermocg.md.splitting.TabulatedPair`).
    """

    def __init__(self, potential: Potential, types: torch.Tensor, box: torch.Tensor, *, skin_A: float,
                 temperature_K: float | None = None) -> None:
        self.potential = potential
        self.types = types
        self.box = box
        self.skin_A = float(skin_A)
        #: the temperature the potential is evaluated at (None: whatever it has; agnostic potentials)
        self.temperature_K = temperature_K
        self.neighbors = NeighborList(potential.cutoff_A, skin_A=skin_A)
        self.reference_positions: torch.Tensor | None = None
        self._earlier_builds = 0

    def pairs(self, positions: torch.Tensor) -> PairIndex:
        """The neighbour pairs valid at ``positions`` (rebuilding the list if a bead moved > skin/2)."""
        builds = self.neighbors.n_builds
        pairs = self.neighbors.get(positions, self.box)
        if self.neighbors.n_builds != builds:
            self.reference_positions = positions.detach().clone()
        return pairs

    def __call__(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = self.pairs(positions)
        if self.temperature_K is not None and self.potential.temperature_K != self.temperature_K:
            self.potential.set_temperature(self.temperature_K)
        direct = getattr(self.potential, "direct_energy_and_forces", None)
        if direct is not None:  # a potential that gives its forces without autograd
            energy, forces = direct(positions, self.box, self.types, pairs)
            return energy.to(STATE_DTYPE), forces.to(STATE_DTYPE)
        energy, forces = energy_and_forces(self.potential, positions, self.box, self.types, pairs=pairs)
        return energy[0].to(STATE_DTYPE), forces[0].to(STATE_DTYPE)

    def rebuild_at(self, reference_positions: torch.Tensor, *, counted: bool = True) -> None:
        """Start a new list built at ``reference_positions`` (a restart's, or a checkpoint's);
        ``counted=False`` leaves it out of :attr:`n_builds` (a list restored, not a new one)."""
        self._earlier_builds += self.neighbors.n_builds - (0 if counted else 1)
        self.neighbors = NeighborList(self.potential.cutoff_A, skin_A=self.skin_A)
        self.pairs(reference_positions)

    @property
    def n_builds(self) -> int:
        return self._earlier_builds + self.neighbors.n_builds


@dataclass
class _Checkpoint:
    """A device copy of a state that passed the blow-up check."""

    step: int
    time_fs: float
    positions: torch.Tensor
    velocities: torch.Tensor
    forces: torch.Tensor
    potential_energy: torch.Tensor
    rng_state: torch.Tensor
    extra: dict[str, torch.Tensor]
    neighbor_reference: torch.Tensor | None
    #: the integrator's saved arrays (never modified in place by their owners: not copied)
    integrator_arrays: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class _Scheduled:
    reporter: Any
    step: int
    request: ReportRequest


@dataclass
class _Topology:
    """The beads, on the host: types (N,) indices into type_names, masses (N,) amu."""

    types: np.ndarray
    type_names: tuple[str, ...]
    masses: np.ndarray = field(repr=False)


class CGSimulation:
    """CG MD of N beads with ``potential``, advanced by ``integrator`` (module docstring).

    Parameters
    ----------
    potential : any thermocg Potential; the state lives on its device
    integrator : an :class:`~thermocg.md.integrators.Integrator` (bound to this simulation)
    positions : (N, 3) A;  box : (3, 3) A, rows are cell vectors
    types : (N,) indices into ``type_names``;  masses : (N,) amu, positive
    velocities : (N, 3) A/fs, or None: Maxwell-Boltzmann at ``temperature_K`` (COM removed)
    temperature_K : reference temperature (initial velocities, the blow-up check); default: the
        integrator's thermostat temperature
    seed : int or torch.Generator (on the potential's device) for initial velocities and noise;
        may be None when ``rng_state`` is given
    rng_state : a generator state (bytes, as :meth:`state` reports) to continue from
    step, time_fs : the counters of the initial state
    neighbor_reference_positions : (N, 3) A: build the neighbour list there (continuing a run)
    integrator_arrays : the integrator's own arrays of a restart (name -> array; continuing a run),
        given to :meth:`~thermocg.md.integrators.Integrator.load_arrays`
    skin_A : neighbour-list skin;  blowup : the :class:`BlowUpDetector` (default thresholds if None)
    reporters : attached reporters (more can be appended to :attr:`reporters`)

    Raises :class:`MDInputError` for input it cannot start from, and
    :class:`SimulationBlowUp` if the initial state is already unphysical.
    """

    def __init__(self, potential: Potential, integrator: Integrator, *, positions: np.ndarray, box: np.ndarray,
                 types: np.ndarray, type_names: tuple[str, ...] | list[str], masses: np.ndarray,
                 velocities: np.ndarray | None = None, temperature_K: float | None = None,
                 seed: int | torch.Generator | None = None, rng_state: np.ndarray | torch.Tensor | None = None,
                 step: int = 0, time_fs: float = 0.0, neighbor_reference_positions: np.ndarray | None = None,
                 integrator_arrays: dict[str, np.ndarray] | None = None, skin_A: float = 1.0, blowup: BlowUpDetector | None = None,
                 reporters: Iterable[Reporter] = ()) -> None:
        if not isinstance(potential, Potential):
            raise MDInputError(f"potential must be a thermocg Potential, got {type(potential).__name__}")
        if not isinstance(integrator, Integrator):
            raise MDInputError(f"integrator must be a thermocg.md Integrator, got {type(integrator).__name__}")
        self.potential = potential
        self.integrator = integrator
        self.blowup = blowup if blowup is not None else BlowUpDetector()
        self.reporters: list[Reporter] = list(reporters)
        #: how often each quantity was copied to the host by :meth:`state` (for reporters, restarts, callers)
        self.host_fetches: collections.Counter[str] = collections.Counter()
        self._topology, types_t, box_np = self._check_beads(potential, positions, box, types, type_names, masses)
        self._box_host = box_np
        self.reference_temperature_K = self._reference_temperature(temperature_K, integrator, velocities)
        #: the temperature the potential is evaluated at (None for a temperature-agnostic potential)
        self.model_temperature_K = self._model_temperature(potential, integrator, temperature_K)
        self._temperature_request = temperature_K
        device = potential.device
        generator = self._generator(seed, rng_state, device)
        masses_t = torch.as_tensor(self._topology.masses, dtype=STATE_DTYPE, device=device)
        box_t = torch.as_tensor(box_np, dtype=STATE_DTYPE, device=device)
        x = torch.as_tensor(np.asarray(positions, dtype=np.float64), dtype=STATE_DTYPE, device=device).clone()
        if velocities is None:
            v = maxwell_boltzmann_velocities(masses_t, self.reference_temperature_K, generator=generator)
        else:
            v = torch.as_tensor(np.asarray(velocities, dtype=np.float64), dtype=STATE_DTYPE, device=device).clone()
        self._forces = PotentialForces(potential, types_t, box_t, skin_A=skin_A,
                                       temperature_K=self.model_temperature_K)
        if neighbor_reference_positions is not None:
            self._forces.rebuild_at(torch.as_tensor(neighbor_reference_positions, dtype=STATE_DTYPE, device=device))
        integrator.bind(IntegratorContext(masses=masses_t, force_provider=self._force_provider))
        if integrator_arrays:
            integrator.load_arrays({name: torch.as_tensor(np.asarray(array, dtype=np.float64), dtype=STATE_DTYPE,
                                                          device=device)
                                    for name, array in integrator_arrays.items()})
        self.n_dof = integrator.degrees_of_freedom(x.shape[0])
        self._time_offset_fs = float(time_fs) - int(step) * integrator.timestep_fs
        zeros = torch.zeros_like(x)
        self._state = MDState(positions=x, velocities=v, forces=zeros, potential_energy=zeros.new_zeros(()),
                              box=box_t, masses=masses_t, generator=generator, step=int(step), time_fs=float(time_fs))
        self._check_phase = int(step)
        self._pending: list[_Scheduled] = []
        with torch.no_grad():
            integrator.initialize(self._state, self._forces)
            message = self._check()
        if message is not None:
            raise SimulationBlowUp(f"the initial state is already unphysical: {message}", step=int(step))
        self._last_good = self._checkpoint()

    # ----------------------------------------------------------------------------------------------
    # construction helpers
    # ----------------------------------------------------------------------------------------------

    @staticmethod
    def _check_beads(potential: Potential, positions: np.ndarray, box: np.ndarray, types: np.ndarray,
                     type_names: tuple[str, ...] | list[str], masses: np.ndarray
                     ) -> tuple[_Topology, torch.Tensor, np.ndarray]:
        types_np = np.asarray(types)
        masses_np = np.asarray(masses, dtype=np.float64)
        n = len(types_np)
        if np.shape(positions) != (n, 3) or masses_np.shape != (n,):
            raise MDInputError(f"positions {np.shape(positions)}, types ({n},) and masses {masses_np.shape} "
                               "do not fit together: need (N, 3), (N,), (N,)")
        if np.any(masses_np <= 0):
            raise MDInputError("every bead needs a positive mass")
        try:
            types_t = potential.type_indices(tuple(type_names), types_np).to(potential.device)
        except ValueError as exc:
            raise MDInputError(f"the potential does not fit the frame: {exc}") from None
        box_np = np.array(box, dtype=np.float64).reshape(3, 3)
        try:
            check_cutoff_fits(potential.cutoff_A, box_np, what="the potential's cutoff")
        except ValueError as exc:
            raise MDInputError(f"box too small: {exc}") from None
        return _Topology(types_np, tuple(str(t) for t in type_names), masses_np), types_t, box_np

    @staticmethod
    def _reference_temperature(temperature_K: float | None, integrator: Integrator,
                               velocities: np.ndarray | None) -> float:
        if temperature_K is None:
            temperature_K = integrator.temperature_K
        if temperature_K is None:
            if velocities is None:
                raise MDInputError("temperature_K is needed to draw initial velocities (the integrator has none)")
            return 0.0
        if not (np.isfinite(temperature_K) and temperature_K >= 0):
            raise MDInputError(f"temperature_K must be non-negative, got {temperature_K}")
        return float(temperature_K)

    @staticmethod
    def _model_temperature(potential: Potential, integrator: Integrator, temperature_K: float | None) -> float | None:
        """The temperature a temperature-dependent potential is evaluated at (module docstring), set
        on it now (range-checked); None for an agnostic potential."""
        if not potential.temperature_dependent:
            return None
        chosen = integrator.temperature_K
        if chosen is None:
            chosen = temperature_K if temperature_K is not None else potential.temperature_K
        if chosen is None:
            chosen = potential.reference_temperature_K
            if chosen is None:
                raise MDInputError(f"{potential._model_label()} is temperature-dependent and has no reference "
                                   "temperature; give temperature_K")
            warnings.warn(TemperatureWarning(
                f"{potential._model_label()} is temperature-dependent and the integrator has no thermostat: it is "
                f"evaluated at its reference temperature T_ref = {chosen:g} K; give temperature_K to choose"),
                stacklevel=4)
        potential.set_temperature(chosen)
        return float(chosen)

    @staticmethod
    def _generator(seed: int | torch.Generator | None, rng_state: Any, device: torch.device) -> torch.Generator:
        if isinstance(seed, torch.Generator):
            generator = seed
        else:
            if seed is None and rng_state is None:
                raise MDInputError("a seed is needed (or the rng_state of a restart)")
            generator = torch.Generator(device=device)
            if seed is not None:
                generator.manual_seed(int(seed))
        if rng_state is not None:
            generator.set_state(torch.as_tensor(rng_state, dtype=torch.uint8))
        return generator

    def _force_provider(self, potential: Potential) -> PotentialForces:
        try:
            types = potential.type_indices(self._topology.type_names, self._topology.types).to(potential.device)
        except ValueError as exc:
            raise MDInputError(f"the potential does not fit the beads: {exc}") from None
        if potential.device != self.potential.device:
            raise MDInputError(f"a {potential.kind} part on {potential.device} for a simulation on "
                               f"{self.potential.device}: move it to the same device")
        try:
            check_cutoff_fits(potential.cutoff_A, self._box_host, what=f"the {potential.kind} part's cutoff")
        except ValueError as exc:
            raise MDInputError(f"box too small: {exc}") from None
        # a part of the model (e.g. a multiple-time-step integrator's fast part) gets its temperature by
        # the same rule as the whole
        model_temperature = self.model_temperature_K
        if potential.temperature_dependent and model_temperature is None:
            model_temperature = self._model_temperature(potential, self.integrator, self._temperature_request)
        return PotentialForces(potential, types, self._forces.box, skin_A=self._forces.skin_A,
                               temperature_K=model_temperature if potential.temperature_dependent else None)

    @classmethod
    def from_frames(cls, potential: Potential, frames: Frames, integrator: Integrator, *, frame_index: int = -1,
                    velocities: Literal["maxwell", "frame"] = "maxwell", **kwargs: Any) -> "CGSimulation":
        """Start from frame ``frame_index`` of ``frames`` (positions, box; types and masses of the Frames).

        ``velocities="frame"`` takes the frame's velocities; ``"maxwell"`` draws them. Other keyword
        arguments are those of the constructor (``seed``, ``temperature_K``, ``skin_A``, ...).
        """
        if not isinstance(frames, Frames) or frames.n_frames < 1:
            raise MDInputError("initial must be a Frames with at least one frame")
        if velocities == "frame":
            if frames.velocities is None:
                raise MDInputError("initial_velocities='frame' but the initial frames carry no velocities")
            v = frames.velocities[frame_index]
        elif velocities == "maxwell":
            v = None
        else:
            raise MDInputError(f"initial_velocities must be 'maxwell' or 'frame', got {velocities!r}")
        return cls(potential, integrator, positions=frames.positions[frame_index], box=frames.box[frame_index],
                   types=frames.types, type_names=frames.type_names, masses=frames.masses, velocities=v, **kwargs)

    @classmethod
    def from_restart(cls, path: str | os.PathLike, potential: Potential, integrator: Integrator,
                     **kwargs: Any) -> "CGSimulation":
        """Continue from a restart file (any version-1 file; see :mod:`thermocg.md.state`).

        Positions, velocities, box, beads, step, time, and (when the file has them) the generator
        state, the neighbour list's build positions and the integrator's own arrays come from the file; other keyword arguments are
        those of the constructor (``seed`` is needed only for a file without ``rng_state``).
        """
        data = load_restart(path)
        if data.get("rng_state") is None and kwargs.get("seed") is None:
            raise MDInputError(f"{path}: the restart file holds no rng_state; give a seed")
        return cls(potential, integrator, positions=data["positions"], velocities=data["velocities"],
                   box=data["box"], types=data["types"], type_names=data["type_names"], masses=data["masses"],
                   step=data["step"], time_fs=data["time_fs"], rng_state=data.get("rng_state"),
                   neighbor_reference_positions=data.get("neighbor_reference_positions"),
                   integrator_arrays=data.get("integrator_arrays"), **kwargs)

    # ----------------------------------------------------------------------------------------------
    # running
    # ----------------------------------------------------------------------------------------------

    def step(self, n_steps: int) -> None:
        """Advance ``n_steps`` steps, reporting and checking on the way (module docstring).

        Raises :class:`SimulationBlowUp` (after rolling back to the last good state) if a checked
        state is unphysical.
        """
        if int(n_steps) != n_steps or n_steps < 0:
            raise MDInputError(f"n_steps must be a non-negative integer, got {n_steps}")
        state = self._state
        end = state.step + int(n_steps)
        schedule = self._schedule()
        check_every = self.blowup.interval_steps
        with torch.no_grad():
            while state.step < end:
                self.integrator.step(state, self._forces)
                state.step += 1
                state.time_fs = state.step * self.integrator.timestep_fs + self._time_offset_fs
                due = [entry for entry in schedule if entry.step == state.step]
                fetching = any(entry.request.fetches for entry in due)
                if fetching or (state.step - self._check_phase) % check_every == 0 or state.step == end:
                    message = self._check()
                    if message is not None:
                        failed_step = state.step
                        self._roll_back()
                        raise SimulationBlowUp(message, step=failed_step)
                    self._last_good = self._checkpoint()
                if due:
                    self._deliver([entry.reporter for entry in due], [entry.request for entry in due])
                    for entry in due:
                        entry.request = self._describe(entry.reporter)
                        entry.step = state.step + entry.request.steps

    def run(self, duration_ps: float) -> None:
        """Advance by ``duration_ps`` (rounded to whole steps)."""
        self.step(int(round(duration_ps * units.PS_TO_FS / self.integrator.timestep_fs)))

    def report(self, reporters: Iterable[Reporter] | None = None) -> None:
        """Report the current state now to every attached reporter (or to ``reporters``), whatever
        their schedule: a run's first frame."""
        chosen = list(self.reporters if reporters is None else reporters)
        if chosen:
            self._deliver(chosen, [reporter.describe_next_report(self) for reporter in chosen])

    def _schedule(self) -> list[_Scheduled]:
        """Each attached reporter's next report: kept from earlier ``step`` calls, asked for when new."""
        kept = {id(entry.reporter): entry for entry in self._pending if entry.step > self._state.step}
        schedule = []
        for reporter in self.reporters:
            entry = kept.get(id(reporter))
            if entry is None or entry.reporter is not reporter:
                request = self._describe(reporter)
                entry = _Scheduled(reporter, self._state.step + request.steps, request)
            schedule.append(entry)
        self._pending = schedule
        return schedule

    def _describe(self, reporter: Reporter) -> ReportRequest:
        request = reporter.describe_next_report(self)
        if int(request.steps) != request.steps or request.steps < 1:
            raise MDInputError(f"reporter {reporter!r}: its next report is {request.steps} steps away; must be >= 1")
        return request

    def _deliver(self, reporters: list[Reporter], requests: list[ReportRequest]) -> None:
        wanted = {name: any(request.needs()[name] for request in requests) for name in requests[0].needs()}
        snapshot = self.state(**wanted)
        for reporter in reporters:
            reporter.report(self, snapshot)

    # ----------------------------------------------------------------------------------------------
    # blow-up checks and the last good state
    # ----------------------------------------------------------------------------------------------

    def _check(self) -> str | None:
        state = self._state
        return self.blowup.check(state, pairs=self._forces.pairs(state.positions), n_dof=self.n_dof,
                                 reference_temperature_K=self.reference_temperature_K)

    def _checkpoint(self) -> _Checkpoint:
        s = self._state
        return _Checkpoint(step=s.step, time_fs=s.time_fs, positions=s.positions.clone(),
                           velocities=s.velocities.clone(), forces=s.forces.clone(),
                           potential_energy=s.potential_energy.clone(), rng_state=s.generator.get_state(),
                           extra={k: t.clone() for k, t in s.extra.items()},
                           neighbor_reference=self._forces.reference_positions,
                           integrator_arrays=dict(self.integrator.saved_arrays()))

    def _roll_back(self) -> None:
        good, s = self._last_good, self._state
        s.positions, s.velocities = good.positions.clone(), good.velocities.clone()
        s.forces, s.potential_energy = good.forces.clone(), good.potential_energy.clone()
        s.extra = {k: t.clone() for k, t in good.extra.items()}
        s.generator.set_state(good.rng_state)
        s.step, s.time_fs = good.step, good.time_fs
        if good.neighbor_reference is not None:
            self._forces.rebuild_at(good.neighbor_reference, counted=False)
        if good.integrator_arrays:
            self.integrator.load_arrays(good.integrator_arrays, counted=False)

    # ----------------------------------------------------------------------------------------------
    # the state on the host
    # ----------------------------------------------------------------------------------------------

    def state(self, *, positions: bool = True, velocities: bool = True, forces: bool = True, energies: bool = True,
              rng_state: bool = True, neighbor_reference: bool = True) -> Snapshot:
        """A host copy of the current state: the fields asked for, None for the others."""
        s, top = self._state, self._topology
        out = Snapshot(step=s.step, time_fs=s.time_fs, box=self._box_host.copy(), types=top.types,
                       type_names=top.type_names, masses=top.masses)
        if positions:
            out.positions = s.positions.cpu().numpy().copy()
        if velocities:
            out.velocities = s.velocities.cpu().numpy().copy()
        if forces:
            out.forces = s.forces.cpu().numpy().copy()
        if energies:
            ke = float(0.5 * (s.masses[:, None] * s.velocities * s.velocities).sum()) * units.MV2_TO_KCAL_MOL
            out.potential_energy_kcal_mol = float(s.potential_energy)
            out.kinetic_energy_kcal_mol = ke
            out.temperature_K = 2.0 * ke / (self.n_dof * units.KB_KCAL_MOL_K)
        if rng_state:
            out.rng_state = s.generator.get_state().cpu().numpy().copy()
        reference = self._forces.reference_positions
        if neighbor_reference and reference is not None:
            out.neighbor_reference_positions = reference.cpu().numpy().copy()
            saved = self.integrator.saved_arrays()
            if saved:
                out.integrator_arrays = {name: t.cpu().numpy().copy() for name, t in saved.items()}
        fetched = {"positions": positions, "velocities": velocities, "forces": forces, "energies": energies,
                   "rng_state": rng_state, "neighbor_reference": neighbor_reference and reference is not None}
        self.host_fetches.update(name for name, done in fetched.items() if done)
        return out

    def save_restart(self, path: str | os.PathLike) -> Path:
        """Write the current state as a restart file (atomically); returns the path."""
        return write_restart(path, self.state(forces=False, energies=False))

    def close(self, *, success: bool = True) -> None:
        """Close every reporter that has a ``close`` (files get their final names, or are removed)."""
        for reporter in self.reporters:
            close = getattr(reporter, "close", None)
            if close is not None:
                close(success=success)

    def __enter__(self) -> "CGSimulation":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(success=exc_type is None or issubclass(exc_type, SimulationBlowUp))

    # ----------------------------------------------------------------------------------------------
    # read-only views
    # ----------------------------------------------------------------------------------------------

    @property
    def current_step(self) -> int:
        return self._state.step

    @property
    def time_fs(self) -> float:
        return self._state.time_fs

    @property
    def timestep_fs(self) -> float:
        return self.integrator.timestep_fs

    @property
    def n_particles(self) -> int:
        return self._state.n_particles

    @property
    def device(self) -> torch.device:
        return self._state.positions.device

    @property
    def types(self) -> np.ndarray:
        return self._topology.types

    @property
    def type_names(self) -> tuple[str, ...]:
        return self._topology.type_names

    @property
    def masses(self) -> np.ndarray:
        return self._topology.masses

    @property
    def box(self) -> np.ndarray:
        """(3, 3) A, rows are the cell vectors."""
        return self._box_host.copy()

    @property
    def last_good_step(self) -> int:
        """The step of the last state that passed the blow-up check."""
        return self._last_good.step

    @property
    def n_neighbor_builds(self) -> int:
        return self._forces.n_builds

    @property
    def device_state(self) -> MDState:
        """The live state on the device (for integrators and tests; mutate with care)."""
        return self._state
