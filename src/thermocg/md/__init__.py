"""CG molecular dynamics with any thermocg potential: Langevin (BAOAB) NVT and velocity-Verlet NVE, each
also with multiple time steps (r-RESPA).

Equations of motion, in internal units (A, fs, kcal/mol, amu, K)::

    dR/dt = v,     m dv/dt = F(R) - m gamma v + sqrt(2 m gamma kT) xi(t)

with a = F / m * FORCE_TO_ACCEL (A/fs^2) and kT = k_B T (kcal/mol); the integrators and their
splitting are in :mod:`thermocg.md.integrators`.

The package, one job per module:

- :mod:`~thermocg.md.state`: the state on the device (:class:`MDState`), its host snapshot
  (:class:`Snapshot`), restart files, kinetic energy, Maxwell-Boltzmann velocities, wrapping;
- :mod:`~thermocg.md.integrators`: :class:`Integrator` and its kinds (:class:`LangevinBAOAB`,
  :class:`VelocityVerlet`, and the multiple-time-step :class:`RespaLangevinBAOAB` and
  :class:`RespaVelocityVerlet`), and how to add one;
- :mod:`~thermocg.md.splitting`: the fast part of a model for r-RESPA (its repulsive prior, or a pair
  potential fitted to the model's own forces);
- :mod:`~thermocg.md.blowup`: :class:`BlowUpDetector` and :class:`SimulationBlowUp`;
- :mod:`~thermocg.md.reporters`: reporters that say when they report and what they need (H5MD,
  extxyz, thermo CSV, restart, in-memory collectors, progress), and how to add one;
- :mod:`~thermocg.md.simulation`: :class:`CGSimulation`, the object that owns a run;
- :mod:`~thermocg.md.stage`: :func:`simulate` (a run from a frame, with files) and
  :func:`run_simulate` (the CLI's stage, returning :class:`MDRunSummary` per state).

A minimal run::

    sim = CGSimulation.from_frames(potential, frames, LangevinBAOAB(2.0, temperature_K=300, friction_per_ps=1),
                                   seed=1)
    sim.reporters.append(H5MDReporter("traj.h5md", 100))
    with sim:
        sim.report()          # step 0
        sim.run(10.0)         # 10 ps
        sim.save_restart("restart.npz")
"""

from thermocg.md.blowup import BlowUpDetector, SimulationBlowUp
from thermocg.md.integrators import (
    INTEGRATORS,
    ForceProvider,
    Integrator,
    IntegratorContext,
    RESPA_INTEGRATORS,
    LangevinBAOAB,
    ListedForceProvider,
    RespaLangevinBAOAB,
    RespaVelocityVerlet,
    VelocityVerlet,
    make_integrator,
)
from thermocg.md.reporters import (
    THERMO_COLUMNS,
    CallbackReporter,
    ExtXYZReporter,
    FrameCollector,
    H5MDReporter,
    IntervalReporter,
    ProgressReporter,
    Reporter,
    ReportRequest,
    RestartReporter,
    ThermoCollector,
    ThermoCSVReporter,
)
from thermocg.md.simulation import CGSimulation, PotentialForces
from thermocg.md.stage import (
    MDRunSummary,
    SimulationResult,
    model_name,
    run_simulate,
    simulate,
    simulate_exit_status,
)
from thermocg.md.state import (
    RESTART_FORMAT,
    RESTART_VERSION,
    MDInputError,
    MDState,
    Snapshot,
    kinetic_energy_kcal_mol,
    load_restart,
    maxwell_boltzmann_velocities,
    wrap_positions,
    write_restart,
)

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
    # the object API
    "CGSimulation",
    "PotentialForces",
    "MDState",
    "Integrator",
    "IntegratorContext",
    "ForceProvider",
    "LangevinBAOAB",
    "VelocityVerlet",
    "RespaVelocityVerlet",
    "RespaLangevinBAOAB",
    "ListedForceProvider",
    "INTEGRATORS",
    "RESPA_INTEGRATORS",
    "make_integrator",
    "BlowUpDetector",
    "Reporter",
    "ReportRequest",
    "IntervalReporter",
    "CallbackReporter",
    "ThermoCollector",
    "FrameCollector",
    "ProgressReporter",
    "THERMO_COLUMNS",
    "MDRunSummary",
    "model_name",
    "simulate_exit_status",
    "RESTART_FORMAT",
    "RESTART_VERSION",
]
