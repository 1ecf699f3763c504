"""Integrators of CG MD: small objects with one interface, each advancing an :class:`MDState` by one step.

Equations of motion, in internal units (A, fs, kcal/mol, amu, K)::

    dR/dt = v,     m dv/dt = F(R) - m gamma v + sqrt(2 m gamma kT) xi(t)

with the acceleration a = F / m * FORCE_TO_ACCEL (A/fs^2) and kT = k_B T (kcal/mol). One BAOAB step
of length dt (Leimkuhler and Matthews, Appl. Math. Res. Express 2013), :class:`LangevinBAOAB`::

    B: v += dt/2 a(R)
    A: R += dt/2 v
    O: v  = c1 v + c2 sqrt(kT FORCE_TO_ACCEL / m) N(0, 1),   c1 = exp(-gamma dt), c2 = sqrt(1 - c1^2)
    A: R += dt/2 v
    (new forces)
    B: v += dt/2 a(R)

Without the O step this is velocity Verlet (NVE), :class:`VelocityVerlet`. BAOAB samples
configurations with an error of O(dt^2) that nearly vanishes for harmonic modes, and is exact for free
particles (D = kT / (m gamma)). The arithmetic is done in place on the state's float64 tensors, in the
order written above; a run is reproducible bit for bit from the same state and generator.

The interface
-------------
An :class:`Integrator` is built with its parameters (timestep, thermostat), then bound once to a
simulation with :meth:`Integrator.bind`, which hands it an :class:`IntegratorContext`: the masses
and a factory that turns any :class:`~thermocg.potentials.base.Potential` into a
:class:`ForceProvider` (positions (N, 3) -> energy () kcal/mol and forces (N, 3) kcal/mol/A, with its
own neighbour list). The simulation then calls :meth:`Integrator.initialize` once at the start (it
fills ``state.forces`` and ``state.potential_energy``) and :meth:`Integrator.step` once per step with
the simulation's force provider (the whole potential). ``step`` must leave ``state.forces`` and
``state.potential_energy`` those of the new positions (the reporters and the blow-up detector read
them); the simulation, not the integrator, advances ``state.step`` and ``state.time_fs``.
:meth:`Integrator.degrees_of_freedom` gives the n_dof of the kinetic temperature.

Adding an integrator
--------------------
Write one class: subclass :class:`Integrator`, give it a ``name``, validate its parameters in
``__init__`` (raise :class:`MDInputError`), precompute per-bead constants in ``bind`` and do one step
in ``step``; add it to :data:`INTEGRATORS` if a config should be able to name it. Nothing in the
simulation loop changes.

Multiple time stepping (r-RESPA)
--------------------------------
Tuckerman, Berne and Martyna (J. Chem. Phys. 97, 1990, 1992) split the force into a fast part F_f
(cheap, short-ranged, stiff) and a slow remainder F_s = F - F_f, and take k inner steps of length
dt_in = dt / k with F_f inside one outer step of length dt with F_s. :class:`RespaVelocityVerlet`
(NVE) is the Trotter splitting

    B_s(dt/2) [ B_f(dt_in/2) A(dt_in) B_f(dt_in/2) ]^k B_s(dt/2)

(B_x(h): v += h F_x / m * FORCE_TO_ACCEL; A(h): R += h v): time reversible and symplectic, with a
shadow Hamiltonian as long as dt stays below the resonance limit of the slow force (about the
period of the fastest motion the slow force drives, divided by pi). :class:`RespaLangevinBAOAB` puts
the Ornstein-Uhlenbeck step inside the innermost loop, as BAOAB-RESPA (Lagardere et al., J. Phys.
Chem. Lett. 10, 2593, 2019; OpenMM's ``MTSLangevinIntegrator`` does the same):

    B_s(dt/2) [ B_f(dt_in/2) A(dt_in/2) O(dt_in) A(dt_in/2) B_f(dt_in/2) ]^k B_s(dt/2)

Why the O step inside: (1) with k = 1 the scheme is exactly :class:`LangevinBAOAB` at dt (B_s and
B_f merge into B), so RESPA changes nothing but the force split; (2) the fast motion is thermostatted
at its own time scale with BAOAB's accurate configurational sampling, and the friction acts on the
resonances of the outer step every inner step, which damps them (an outer O step would leave k inner
steps of pure Hamiltonian motion between two frictions). The price is k noise draws per outer step.

The *simulation's* potential stays the whole model F; the RESPA object is given the fast part as
``fast_potential``. In ``bind`` it turns the fast part into a second force provider
(``context.force_provider(fast_potential)``: the same beads, box and device, its own skin neighbour
list at its own, shorter cutoff). ``initialize`` evaluates both; the fast forces and energy are
kept in ``state.extra`` (checkpointed and rolled back with the state on a blow-up). ``step`` kicks
with the slow forces F - F_f for half an outer step, runs the k inner steps with the fast forces,
evaluates the whole model once at the new positions (the simulation's provider: once per outer step,
the expensive call) and takes F_s = F - F_f there, with F_f already known from the last inner step.
So ``state.forces`` and ``state.potential_energy`` are those of the whole model, as every reporter
and the blow-up detector expect, and the slow part needs no potential of its own (no "network minus
pair" class): for the prior split F_s is the network's force, for a fitted pair it is the network's
force minus the pair's. The extra cost over a single-step run at dt is k cheap fast evaluations.

A restart continues a RESPA run bit for bit: the integrator reports the fast list's build positions
through :meth:`Integrator.saved_arrays` (the simulation writes them to the restart file beside the
main list's, and checkpoints them), and takes them back through :meth:`Integrator.load_arrays`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol

import torch

from thermocg import units
from thermocg.md.state import MDInputError, MDState
from thermocg.potentials.base import Potential

__all__ = ["ForceProvider", "ListedForceProvider", "IntegratorContext", "Integrator", "VelocityVerlet",
           "LangevinBAOAB", "RespaVelocityVerlet", "RespaLangevinBAOAB", "INTEGRATORS", "RESPA_INTEGRATORS",
           "make_integrator"]


class ForceProvider(Protocol):
    """Energy () kcal/mol and forces (N, 3) kcal/mol/A at positions (N, 3) A, float64 and detached."""

    def __call__(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class ListedForceProvider(ForceProvider, Protocol):
    """A :class:`ForceProvider` with its own skin neighbour list, as ``context.force_provider`` makes:
    ``reference_positions`` (N, 3) A where the list was last built (None before the first call),
    ``rebuild_at`` starts a list built there (``counted=False``: a list restored, not a new one), and
    ``n_builds`` counts the builds."""

    reference_positions: torch.Tensor | None
    n_builds: int

    def rebuild_at(self, reference_positions: torch.Tensor, *, counted: bool = True) -> None: ...


@dataclass(frozen=True)
class IntegratorContext:
    """What a simulation gives its integrator once, at :meth:`Integrator.bind`.

    masses : (N,) amu, float64 on the state's device
    force_provider : builds a :class:`ListedForceProvider` for another potential (a part of the
        model), on the same beads, box and device, with its own neighbour list
    """

    masses: torch.Tensor
    force_provider: Callable[[Potential], ListedForceProvider]


class Integrator(ABC):
    """One step of an MD integrator; see the module docstring for the contract."""

    #: the registry name (``simulate.integrator`` in a config)
    name: ClassVar[str] = ""
    #: whether the total momentum is conserved (then n_dof = 3N - 3 in the kinetic temperature)
    conserves_momentum: ClassVar[bool] = True

    def __init__(self, timestep_fs: float) -> None:
        if not (math.isfinite(timestep_fs) and timestep_fs > 0):
            raise MDInputError(f"timestep_fs must be positive, got {timestep_fs}")
        self.timestep_fs = float(timestep_fs)
        self._inv_mass_accel: torch.Tensor | None = None

    @property
    def temperature_K(self) -> float | None:
        """The thermostat's target temperature, K (None without a thermostat)."""
        return None

    def bind(self, context: IntegratorContext) -> None:
        """Precompute per-bead constants: here a/F = FORCE_TO_ACCEL / m, (N, 1) fs^-2 A mol/kcal."""
        self._inv_mass_accel = (units.FORCE_TO_ACCEL / context.masses)[:, None]

    def initialize(self, state: MDState, compute_forces: ForceProvider) -> None:
        """Fill ``state.potential_energy`` and ``state.forces`` for the current positions."""
        state.potential_energy, state.forces = compute_forces(state.positions)

    @abstractmethod
    def step(self, state: MDState, compute_forces: ForceProvider) -> None:
        """Advance ``state`` by one timestep in place (positions, velocities, forces, energy)."""

    def degrees_of_freedom(self, n_particles: int) -> int:
        """n_dof of the kinetic temperature (at least 1)."""
        return max(3 * n_particles - (3 if self.conserves_momentum else 0), 1)

    def saved_arrays(self) -> dict[str, torch.Tensor]:
        """Device tensors, beyond the :class:`MDState`, that a continuation needs to repeat this run bit
        for bit (e.g. the build positions of the integrator's own neighbour lists). The simulation
        checkpoints them and writes them to restart files; none by default."""
        return {}

    def load_arrays(self, arrays: dict[str, torch.Tensor], *, counted: bool = True) -> None:
        """Take back what :meth:`saved_arrays` gave (from a restart file, or a checkpoint on a roll-back:
        ``counted=False``). Names this integrator does not know are ignored (a restart of a run made
        with another integrator); none by default."""

    def describe(self) -> dict[str, Any]:
        """The parameters, for metadata."""
        return {"integrator": self.name, "timestep_fs": self.timestep_fs}

    def _bound(self) -> torch.Tensor:
        if self._inv_mass_accel is None:
            raise RuntimeError(f"{type(self).__name__}: bind() it to a simulation before stepping")
        return self._inv_mass_accel


class VelocityVerlet(Integrator):
    """NVE: B (dt/2) - A (dt) - forces - B (dt/2). Conserves the total momentum and, to O(dt^2), energy."""

    name = "nve"
    conserves_momentum = True

    def step(self, state: MDState, compute_forces: ForceProvider) -> None:
        inv_mass_accel = self._bound()
        half_dt = 0.5 * self.timestep_fs
        state.velocities.add_(state.forces * inv_mass_accel, alpha=half_dt)
        state.positions.add_(state.velocities, alpha=self.timestep_fs)
        state.potential_energy, state.forces = compute_forces(state.positions)
        state.velocities.add_(state.forces * inv_mass_accel, alpha=half_dt)


class LangevinBAOAB(Integrator):
    """NVT Langevin dynamics, BAOAB splitting (module docstring), friction gamma in 1/ps.

    The noise comes from ``state.generator``: N(0, 1) of shape (N, 3), one draw per step.
    """

    name = "langevin"
    conserves_momentum = False

    def __init__(self, timestep_fs: float, *, temperature_K: float, friction_per_ps: float) -> None:
        super().__init__(timestep_fs)
        if not (math.isfinite(temperature_K) and temperature_K >= 0):
            raise MDInputError(f"temperature_K must be non-negative, got {temperature_K}")
        if not (math.isfinite(friction_per_ps) and friction_per_ps > 0):
            raise MDInputError(f"friction_per_ps must be positive for Langevin dynamics, got {friction_per_ps}")
        self._temperature_K = float(temperature_K)
        self.friction_per_ps = float(friction_per_ps)
        self.c1 = math.exp(-friction_per_ps * units.FS_TO_PS * self.timestep_fs)
        self.c2 = math.sqrt(max(0.0, 1.0 - self.c1 * self.c1))
        self._sigma_v: torch.Tensor | None = None

    @property
    def temperature_K(self) -> float:
        return self._temperature_K

    def bind(self, context: IntegratorContext) -> None:
        """Also the O step's noise amplitude c2 sqrt(kT FORCE_TO_ACCEL / m), (N, 1) A/fs."""
        super().bind(context)
        masses = context.masses
        self._sigma_v = torch.sqrt(units.kT(self._temperature_K) * units.FORCE_TO_ACCEL / masses)[:, None] * self.c2

    def step(self, state: MDState, compute_forces: ForceProvider) -> None:
        inv_mass_accel = self._bound()
        half_dt = 0.5 * self.timestep_fs
        x, v = state.positions, state.velocities
        v.add_(state.forces * inv_mass_accel, alpha=half_dt)
        x.add_(v, alpha=half_dt)
        self.o_step(state)
        x.add_(v, alpha=half_dt)
        state.potential_energy, state.forces = compute_forces(x)
        v.add_(state.forces * inv_mass_accel, alpha=half_dt)

    def o_step(self, state: MDState) -> None:
        """The O step, in place: v = c1 v + c2 sqrt(kT FORCE_TO_ACCEL / m) N(0, 1), one draw of (N, 3)."""
        v = state.velocities
        if self._sigma_v is None:
            raise RuntimeError(f"{type(self).__name__}: bind() it to a simulation before stepping")
        noise = torch.randn(v.shape, generator=state.generator, device=v.device, dtype=v.dtype)
        v.mul_(self.c1).add_(self._sigma_v * noise)

    def describe(self) -> dict[str, Any]:
        return dict(super().describe(), temperature_K=self._temperature_K, friction_per_ps=self.friction_per_ps)


class _Respa(Integrator):
    """r-RESPA on a split force F = F_f + F_s (module docstring): the base of the NVE and Langevin kinds.

    ``timestep_fs`` is the outer step dt; ``inner_steps`` k >= 1 inner steps of dt / k each use the
    forces of ``fast_potential`` (F_f); F_s = F - F_f, with F the simulation's potential, is applied
    once per outer step. Subclasses define the inner step.
    """

    #: key of the fast list's build positions in :meth:`saved_arrays` (and restart files)
    FAST_REFERENCE = "fast_neighbor_reference_positions"

    def __init__(self, timestep_fs: float, *, fast_potential: Potential, inner_steps: int) -> None:
        super().__init__(timestep_fs)
        if not isinstance(fast_potential, Potential):
            raise MDInputError(f"{self.name}: fast_potential must be a thermocg Potential, "
                               f"got {type(fast_potential).__name__}")
        if isinstance(inner_steps, bool) or int(inner_steps) != inner_steps or inner_steps < 1:
            raise MDInputError(f"{self.name}: inner_steps must be a positive integer, got {inner_steps!r}")
        self.fast_potential = fast_potential
        self.inner_steps = int(inner_steps)
        self.inner_timestep_fs = self.timestep_fs / self.inner_steps
        self._fast: ListedForceProvider | None = None

    def bind(self, context: IntegratorContext) -> None:
        """Also the fast part's force provider, with its own neighbour list."""
        super().bind(context)
        self._fast = context.force_provider(self.fast_potential)

    def _fast_provider(self) -> ListedForceProvider:
        if self._fast is None:
            raise RuntimeError(f"{type(self).__name__}: bind() it to a simulation before stepping")
        return self._fast

    def initialize(self, state: MDState, compute_forces: ForceProvider) -> None:
        """The whole model's energy and forces into the state, the fast part's into ``state.extra``."""
        super().initialize(state, compute_forces)
        state.extra["fast_energy"], state.extra["fast_forces"] = self._fast_provider()(state.positions)

    def step(self, state: MDState, compute_forces: ForceProvider) -> None:
        inv_mass_accel = self._bound()
        fast = self._fast_provider()
        half_dt = 0.5 * self.timestep_fs
        v = state.velocities
        fast_energy, fast_forces = state.extra["fast_energy"], state.extra["fast_forces"]
        v.add_((state.forces - fast_forces) * inv_mass_accel, alpha=half_dt)
        for _ in range(self.inner_steps):
            fast_energy, fast_forces = self._inner_step(state, fast, fast_forces, inv_mass_accel)
        state.potential_energy, state.forces = compute_forces(state.positions)
        v.add_((state.forces - fast_forces) * inv_mass_accel, alpha=half_dt)
        state.extra["fast_energy"], state.extra["fast_forces"] = fast_energy, fast_forces

    @abstractmethod
    def _inner_step(self, state: MDState, fast: ForceProvider, fast_forces: torch.Tensor,
                    inv_mass_accel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One inner step with the fast forces (those at the current positions given); returns the
        fast energy and forces at the new positions."""

    def saved_arrays(self) -> dict[str, torch.Tensor]:
        reference = self._fast_provider().reference_positions
        return {} if reference is None else {self.FAST_REFERENCE: reference}

    def load_arrays(self, arrays: dict[str, torch.Tensor], *, counted: bool = True) -> None:
        reference = arrays.get(self.FAST_REFERENCE)
        if reference is None:
            return
        n = self._bound().shape[0]
        if tuple(reference.shape) != (n, 3):
            raise MDInputError(f"{self.name}: {self.FAST_REFERENCE} has shape {tuple(reference.shape)}, "
                               f"expected {(n, 3)}")
        self._fast_provider().rebuild_at(reference, counted=counted)

    @property
    def n_fast_neighbor_builds(self) -> int:
        """Builds of the fast part's neighbour list."""
        return self._fast_provider().n_builds

    def describe(self) -> dict[str, Any]:
        return dict(super().describe(), inner_steps=self.inner_steps, inner_timestep_fs=self.inner_timestep_fs,
                    fast_potential=self.fast_potential.kind, fast_cutoff_A=self.fast_potential.cutoff_A)


class RespaVelocityVerlet(_Respa):
    """NVE r-RESPA: B_s(dt/2) [B_f(dt_in/2) A(dt_in) B_f(dt_in/2)]^k B_s(dt/2) (module docstring).

    With ``inner_steps=1`` it is :class:`VelocityVerlet` at dt (to round-off: the kicks are split).
    """

    name = "respa_nve"
    conserves_momentum = True

    def _inner_step(self, state: MDState, fast: ForceProvider, fast_forces: torch.Tensor,
                    inv_mass_accel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dt = self.inner_timestep_fs
        v = state.velocities
        v.add_(fast_forces * inv_mass_accel, alpha=0.5 * dt)
        state.positions.add_(v, alpha=dt)
        energy, forces = fast(state.positions)
        v.add_(forces * inv_mass_accel, alpha=0.5 * dt)
        return energy, forces


class RespaLangevinBAOAB(_Respa):
    """NVT r-RESPA with BAOAB inner steps (BAOAB-RESPA, module docstring), friction gamma in 1/ps.

    B_s(dt/2) [B_f A O A B_f]^k B_s(dt/2), each inner B A O A B a :class:`LangevinBAOAB` step of
    dt_in = dt / k with the fast forces (c1 = exp(-gamma dt_in)); k noise draws N(0, 1) of shape (N, 3)
    from ``state.generator`` per outer step. With ``inner_steps=1`` it is :class:`LangevinBAOAB` at dt.
    """

    name = "respa_langevin"
    conserves_momentum = False

    def __init__(self, timestep_fs: float, *, fast_potential: Potential, inner_steps: int, temperature_K: float,
                 friction_per_ps: float) -> None:
        super().__init__(timestep_fs, fast_potential=fast_potential, inner_steps=inner_steps)
        # the inner step's thermostat: LangevinBAOAB's checks and constants at dt_in
        self._inner = LangevinBAOAB(self.inner_timestep_fs, temperature_K=temperature_K,
                                    friction_per_ps=friction_per_ps)
        self.friction_per_ps = self._inner.friction_per_ps

    @property
    def temperature_K(self) -> float:
        return self._inner.temperature_K

    def bind(self, context: IntegratorContext) -> None:
        super().bind(context)
        self._inner.bind(context)

    def _inner_step(self, state: MDState, fast: ForceProvider, fast_forces: torch.Tensor,
                    inv_mass_accel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half_dt = 0.5 * self.inner_timestep_fs
        inner = self._inner
        x, v = state.positions, state.velocities
        v.add_(fast_forces * inv_mass_accel, alpha=half_dt)
        x.add_(v, alpha=half_dt)
        inner.o_step(state)
        x.add_(v, alpha=half_dt)
        energy, forces = fast(x)
        v.add_(forces * inv_mass_accel, alpha=half_dt)
        return energy, forces

    def describe(self) -> dict[str, Any]:
        return dict(super().describe(), temperature_K=self.temperature_K, friction_per_ps=self.friction_per_ps)


#: integrators by registry name
INTEGRATORS: dict[str, type[Integrator]] = {"langevin": LangevinBAOAB, "nve": VelocityVerlet,
                                            "respa_langevin": RespaLangevinBAOAB, "respa_nve": RespaVelocityVerlet}
#: the multiple-time-step kinds (they need a fast potential)
RESPA_INTEGRATORS = ("respa_langevin", "respa_nve")


def make_integrator(name: str, *, timestep_fs: float, temperature_K: float, friction_per_ps: float,
                    fast_potential: Potential | None = None, inner_steps: int = 1) -> Integrator:
    """The integrator ``name`` (a key of :data:`INTEGRATORS`) from the parameters a config gives.

    The r-RESPA kinds also need ``fast_potential`` and ``inner_steps``; ``timestep_fs`` is then the
    outer step.
    """
    if name not in INTEGRATORS:
        raise MDInputError(f"integrator must be one of {sorted(INTEGRATORS)}, got {name!r}")
    if name in RESPA_INTEGRATORS:
        if fast_potential is None:
            raise MDInputError(f"integrator {name!r} needs the fast part of the model (fast_potential)")
        if name == "respa_langevin":
            return RespaLangevinBAOAB(timestep_fs, fast_potential=fast_potential, inner_steps=inner_steps,
                                      temperature_K=temperature_K, friction_per_ps=friction_per_ps)
        return RespaVelocityVerlet(timestep_fs, fast_potential=fast_potential, inner_steps=inner_steps)
    if name == "langevin":
        return LangevinBAOAB(timestep_fs, temperature_K=temperature_K, friction_per_ps=friction_per_ps)
    return INTEGRATORS[name](timestep_fs)
