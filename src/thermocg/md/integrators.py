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

A multiple-time-step (r-RESPA) integrator is the case this interface was cut for. The simulation is
given the expensive part of the model (the network) as its potential, and the RESPA object the cheap
short-range part (a prior) as a ``fast_potential`` with an inner-step count k; its ``timestep_fs`` is
the outer step, k inner steps long. In ``bind`` it turns the fast part into a second force provider
(``context.force_provider(fast_potential)``, with its own neighbour list); ``initialize`` evaluates
both parts and keeps the slow forces in ``state.extra`` (arrays there are checkpointed and rolled
back with the rest of the state on a blow-up); ``step`` kicks the velocities with the slow forces for half an
outer step, runs k inner velocity-Verlet (or BAOAB) steps with the fast forces, evaluates the slow
forces (the simulation's provider) once at the new positions and kicks again, and stores the sums in
``state.forces`` and ``state.potential_energy``. A restart file records the build positions of the
main neighbour list only, so such a run would continue from a restart equal to the uninterrupted one
to round-off rather than bit for bit, unless the fast list is rebuilt at the same positions too.
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

__all__ = ["ForceProvider", "IntegratorContext", "Integrator", "VelocityVerlet", "LangevinBAOAB", "INTEGRATORS",
           "make_integrator"]


class ForceProvider(Protocol):
    """Energy () kcal/mol and forces (N, 3) kcal/mol/A at positions (N, 3) A, float64 and detached."""

    def __call__(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class IntegratorContext:
    """What a simulation gives its integrator once, at :meth:`Integrator.bind`.

    masses : (N,) amu, float64 on the state's device
    force_provider : builds a :class:`ForceProvider` for another potential (a part of the model), on
        the same beads, box and device, with its own neighbour list
    """

    masses: torch.Tensor
    force_provider: Callable[[Potential], ForceProvider]


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
        noise = torch.randn(x.shape, generator=state.generator, device=x.device, dtype=x.dtype)
        v.mul_(self.c1).add_(self._sigma_v * noise)
        x.add_(v, alpha=half_dt)
        state.potential_energy, state.forces = compute_forces(x)
        v.add_(state.forces * inv_mass_accel, alpha=half_dt)

    def describe(self) -> dict[str, Any]:
        return dict(super().describe(), temperature_K=self._temperature_K, friction_per_ps=self.friction_per_ps)


#: integrators by registry name
INTEGRATORS: dict[str, type[Integrator]] = {"langevin": LangevinBAOAB, "nve": VelocityVerlet}


def make_integrator(name: str, *, timestep_fs: float, temperature_K: float, friction_per_ps: float) -> Integrator:
    """The integrator ``name`` ("langevin" or "nve") from the parameters a config gives."""
    if name not in INTEGRATORS:
        raise MDInputError(f"integrator must be one of {sorted(INTEGRATORS)}, got {name!r}")
    if name == "langevin":
        return LangevinBAOAB(timestep_fs, temperature_K=temperature_K, friction_per_ps=friction_per_ps)
    return INTEGRATORS[name](timestep_fs)
