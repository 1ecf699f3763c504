"""Run any thermocg potential in OpenMM: a ``System`` of CG beads whose forces come from an
``openmm.PythonForce``.

OpenMM (8.6 and later, as on PyPI) calls a Python function with a ``State`` (positions, periodic box)
at every force evaluation; :class:`OpenMMEngine` gives it one that evaluates our potential. So every
OpenMM integrator (``LangevinMiddleIntegrator``, ``VerletIntegrator``, ...), the
``MonteCarloBarostat`` (the box it proposes is the box the potential sees), reporters (DCD, XTC,
StateData, checkpoints) and platforms work with a thermocg model, with no compiled plugin and no
TorchScript. Forces are computed on the potential's device (CUDA if the model is there) and handed
to whichever OpenMM platform runs the integrator.

Units at this edge: OpenMM speaks nm, ps, kJ/mol, amu, K, bar; thermocg A, fs, kcal/mol. Positions
nm -> A (``NM_TO_A``), energy kcal/mol -> kJ/mol (``KCAL_TO_KJ``), forces kcal/mol/A -> kJ/mol/nm
(``KCAL_MOL_A_TO_KJ_MOL_NM``).

Frame: OpenMM wants a lower-triangular, reduced box; the engine rotates the input frame into one
(:func:`thermocg.engines.common.standard_cell`; ``engine.cell.rotation`` maps back). The beads of one
``System`` are one residue each in :attr:`OpenMMEngine.topology`, named by bead type, no element.

Caveats: the Python call costs a few microseconds per step plus the model itself (see
bench/bench_engines.py); the ``System`` cannot be serialised to XML (it holds a live model: build it
again from the model file); OpenMM's CPU and CUDA platforms accumulate forces in single precision
(mixed precision on CUDA), the Reference platform in double.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import openmm
from openmm import app
from openmm import unit as u

from thermocg import units
from thermocg.engines.common import EngineInputError, PotentialEvaluator, StandardCell, engine_inputs
from thermocg.frames import Frames
from thermocg.potentials.base import Potential

__all__ = ["OpenMMEngine", "FramesReporter", "openmm_seed"]


def openmm_seed(seed: int) -> int:
    """A seed in 1..2^31-1 derived from ``seed`` (OpenMM reads 0 as "pick one at random")."""
    return int(np.random.default_rng(int(seed)).integers(1, 2**31 - 1))


class _PotentialForce:
    """The computation handed to ``openmm.PythonForce``: State -> (kJ/mol, kJ/mol/nm).

    Not picklable on purpose (it holds a live torch model): OpenMM then stores no pickled function,
    and serialising the System fails loudly instead of pickling the model.
    """

    def __init__(self, evaluator: PotentialEvaluator) -> None:
        self.evaluator = evaluator

    def __call__(self, state: openmm.State) -> tuple[float, np.ndarray]:
        positions = state.getPositions(asNumpy=True).value_in_unit(u.nanometer) * units.NM_TO_A
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer) * units.NM_TO_A
        energy, forces, _ = self.evaluator(positions, box)
        return energy * units.KCAL_TO_KJ, forces * units.KCAL_MOL_A_TO_KJ_MOL_NM

    def __reduce__(self):
        raise TypeError("a thermocg PythonForce holds a live model and cannot be pickled; "
                        "build the System again with thermocg.engines.openmm.OpenMMEngine")


class OpenMMEngine:
    """An OpenMM ``System`` (and ``Topology``) of CG beads driven by a thermocg potential.

    Parameters
    ----------
    potential : any thermocg potential (its device is where forces are computed)
    frames : CG Frames; frame ``frame_index`` gives the positions and the box, the Frames give the bead
        types (names must be known to the potential) and masses (amu)
    skin_A : skin of the evaluator's neighbour list (see :class:`~thermocg.engines.common.PotentialEvaluator`)
    force_group : OpenMM force group of the PythonForce

    Attributes: ``system``, ``topology``, ``force`` (the ``openmm.PythonForce``), ``evaluator``
    (call counts, the last box the potential saw), ``cell`` (the rotated frame), ``positions``
    (OpenMM quantity, nm).

    Use :meth:`simulation` for a ready ``app.Simulation`` (Langevin NVT, optionally with a
    Monte Carlo barostat), or build your own from ``system`` and ``topology`` with any integrator.
    """

    def __init__(self, potential: Potential, frames: Frames, *, frame_index: int = -1, skin_A: float = 1.0,
                 force_group: int = 0) -> None:
        if not hasattr(openmm, "PythonForce"):
            raise EngineInputError(f"OpenMM {openmm.__version__} has no openmm.PythonForce; install a newer OpenMM "
                                   "(8.6.1 from PyPI has it)")
        cell, types = engine_inputs(potential, frames, frame_index)
        self.potential = potential
        self.frames = frames
        self.frame_index = frame_index
        self.cell: StandardCell = cell
        self.evaluator = PotentialEvaluator(potential, types, skin_A=skin_A)
        self.system = openmm.System()
        for mass in np.asarray(frames.masses, dtype=np.float64):
            self.system.addParticle(float(mass))
        box_nm = cell.box_A * units.A_TO_NM
        self.system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in box_nm))
        self.force = openmm.PythonForce(_PotentialForce(self.evaluator))
        self.force.setUsesPeriodicBoundaryConditions(True)
        self.force.setForceGroup(int(force_group))
        self.force.setName(f"thermocg {potential.kind}")
        self.system.addForce(self.force)
        self.topology = self._topology(frames, box_nm)
        self.positions = u.Quantity(cell.positions_A * units.A_TO_NM, u.nanometer)

    @staticmethod
    def _topology(frames: Frames, box_nm: np.ndarray) -> app.Topology:
        topology = app.Topology()
        chain = topology.addChain()
        for index, type_index in enumerate(np.asarray(frames.types)):
            name = frames.type_names[int(type_index)]
            residue = topology.addResidue(name[:4], chain, id=str(index + 1))
            topology.addAtom(name[:4], None, residue)
        topology.setPeriodicBoxVectors(u.Quantity([openmm.Vec3(*row) for row in box_nm], u.nanometer))
        return topology

    def simulation(self, *, temperature_K: float, timestep_fs: float, seed: int, friction_per_ps: float = 1.0,
                   pressure_bar: float | None = None, barostat_interval_steps: int = 25,
                   platform: str = "CPU", platform_properties: dict[str, str] | None = None,
                   velocities: str = "maxwell") -> app.Simulation:
        """An ``app.Simulation`` with a ``LangevinMiddleIntegrator`` at ``temperature_K`` (friction
        ``friction_per_ps``, step ``timestep_fs``), positions set, velocities drawn at the temperature
        (``velocities="maxwell"``) or taken from the frame (``"frame"``, A/fs). With ``pressure_bar``
        an isotropic ``MonteCarloBarostat`` (every ``barostat_interval_steps``) makes it NPT.
        ``seed`` fixes the integrator's, the barostat's and the velocities' random numbers.
        """
        for name, value in (("temperature_K", temperature_K), ("timestep_fs", timestep_fs),
                            ("friction_per_ps", friction_per_ps)):
            if not (math.isfinite(value) and value > 0):
                raise EngineInputError(f"{name} must be positive, got {value}")
        if velocities not in ("maxwell", "frame"):
            raise EngineInputError(f"velocities must be 'maxwell' or 'frame', got {velocities!r}")
        if pressure_bar is not None and not math.isfinite(pressure_bar):
            raise EngineInputError(f"pressure_bar must be finite, got {pressure_bar}")
        # the System cannot be copied (its PythonForce holds a live model), so the barostat is set on
        # it here; a Context keeps what the System held when the Context was made
        self._set_barostat(pressure_bar, temperature_K, barostat_interval_steps, seed)
        integrator = openmm.LangevinMiddleIntegrator(temperature_K * u.kelvin, friction_per_ps / u.picosecond,
                                                     timestep_fs * units.FS_TO_PS * u.picosecond)
        integrator.setRandomNumberSeed(openmm_seed(seed))
        try:
            chosen = openmm.Platform.getPlatformByName(platform)
        except Exception:  # OpenMMException: the platform is not available here
            names = [openmm.Platform.getPlatform(k).getName() for k in range(openmm.Platform.getNumPlatforms())]
            raise EngineInputError(f"OpenMM platform {platform!r} is not available; available: {names}") from None
        simulation = app.Simulation(self.topology, self.system, integrator, chosen, platform_properties or {})
        simulation.context.setPositions(self.positions)
        if velocities == "frame":
            if self.frames.velocities is None:
                raise EngineInputError("velocities='frame' but the frames carry no velocities")
            v = self.frames.velocities[self.frame_index] @ self.cell.rotation  # A/fs, rotated like the positions
            simulation.context.setVelocities(u.Quantity(v * units.A_TO_NM / units.FS_TO_PS, u.nanometer / u.picosecond))
        else:
            simulation.context.setVelocitiesToTemperature(temperature_K * u.kelvin, openmm_seed(seed + 1))
        return simulation

    def _set_barostat(self, pressure_bar: float | None, temperature_K: float, interval_steps: int, seed: int) -> None:
        """Put an isotropic Monte Carlo barostat on the System (pressure_bar None: take it off)."""
        if int(interval_steps) != interval_steps or interval_steps < 1:
            raise EngineInputError(f"barostat_interval_steps must be a positive integer, got {interval_steps}")
        for k in reversed(range(self.system.getNumForces())):
            if isinstance(self.system.getForce(k), openmm.MonteCarloBarostat):
                self.system.removeForce(k)
        if pressure_bar is None:
            return
        barostat = openmm.MonteCarloBarostat(pressure_bar * u.bar, temperature_K * u.kelvin, int(interval_steps))
        barostat.setRandomNumberSeed(openmm_seed(seed + 2))
        self.system.addForce(barostat)

    def energy_and_forces(self, context: openmm.Context) -> tuple[float, np.ndarray]:
        """The potential energy (kcal/mol) and forces (kcal/mol/A, (N, 3)) OpenMM reports for the
        current state of ``context``, in the engine's (rotated) frame."""
        state = context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.KJ_TO_KCAL
        forces = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
        return energy, np.asarray(forces) * units.KJ_MOL_NM_TO_KCAL_MOL_A


class FramesReporter:
    """An OpenMM reporter that keeps every ``interval_steps``-th state in memory, for thermocg's
    analyses: :meth:`frames` returns :class:`~thermocg.frames.Frames` (positions wrapped into the
    box, A; box A; velocities A/fs; time fs) with the bead types and masses of ``like``."""

    def __init__(self, interval_steps: int, like: Frames) -> None:
        if int(interval_steps) != interval_steps or interval_steps < 1:
            raise EngineInputError(f"interval_steps must be a positive integer, got {interval_steps}")
        self.interval_steps = int(interval_steps)
        self.like = like
        self.positions: list[np.ndarray] = []
        self.boxes: list[np.ndarray] = []
        self.velocities: list[np.ndarray] = []
        self.times_fs: list[float] = []

    def describeNextReport(self, simulation: app.Simulation) -> dict[str, Any]:  # noqa: N802 - OpenMM's name
        steps = self.interval_steps - simulation.currentStep % self.interval_steps
        return {"steps": steps, "periodic": True, "include": ["positions", "velocities"]}

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        self.positions.append(np.asarray(state.getPositions(asNumpy=True).value_in_unit(u.nanometer)) * units.NM_TO_A)
        self.boxes.append(np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer))
                          * units.NM_TO_A)
        velocities = state.getVelocities(asNumpy=True).value_in_unit(u.nanometer / u.picosecond)
        self.velocities.append(np.asarray(velocities) * units.NM_TO_A * units.FS_TO_PS)
        self.times_fs.append(state.getTime().value_in_unit(u.picosecond) * units.PS_TO_FS)

    def frames(self) -> Frames:
        if not self.positions:
            raise EngineInputError("the reporter holds no frames yet (run the simulation first)")
        return Frames(positions=np.stack(self.positions), box=np.stack(self.boxes), types=self.like.types,
                      type_names=self.like.type_names, masses=self.like.masses,
                      velocities=np.stack(self.velocities), time_fs=np.array(self.times_fs),
                      state=self.like.state, metadata={"kind": "cg-md", "engine": "openmm"})
