"""``thermocg run-md``: a trained model on a structure file of one's own, in thermocg's MD, OpenMM or
LAMMPS, without a study config.

::

    thermocg run-md --model model.safetensors --structure start.gro --temperature-K 300 --duration-ps 100 \\
        [--engine thermocg|openmm|lammps] [--timestep-fs 2] [--friction-per-ps 1] [--save-interval-fs 200]
        [--seed 0] [--pressure-bar 1 (openmm, lammps)] [--mass MeOH=32.04] [--bead-type 1=MeOH]
        [--output DIR] [--continue]

The structure (:mod:`thermocg.structure`: .gro, .pdb, LAMMPS data, extxyz, our H5MD) gives the
positions and box of the start (its last frame, or ``--frame``), the bead types (matched to the
model's by name) and the masses (from the file, or ``--mass`` per bead type); velocities are drawn
from Maxwell-Boltzmann at the temperature. The MD settings are those of ``thermocg simulate``
(:class:`thermocg.config.SimulateConfig`, with the same defaults): Langevin dynamics at
``--temperature-K`` (OpenMM: ``LangevinMiddleIntegrator``; LAMMPS: ``fix langevin`` with ``fix nve``,
or ``fix nph`` with ``--pressure-bar``; OpenMM's NPT is its ``MonteCarloBarostat``). A
temperature-dependent model is evaluated at that temperature in every engine.

Every engine writes the same files to ``DIR`` (default ``runmd``), as a study's run does:

- ``traj.h5md``: frames every ``--save-interval-fs`` from step 0 (wrapped positions, velocities, the
  model's forces, the box), read by ``thermocg analyze`` and MDAnalysis;
- ``thermo.csv``: step, time_ps, temperature_K, potential/kinetic/total energy (kcal/mol), every
  ``--thermo-interval-fs``; the temperature is 2K / (3N k_B) in every engine;
- ``restart.npz``: the last good state (positions, velocities, box, step);
- ``summary.json`` (:class:`~thermocg.md.stage.MDRunSummary`), ``resolved.yaml`` (the settings, the
  engine, the input files' hashes, versions), ``initial.h5md`` (the starting frame as read);
- with ``--engine lammps`` also ``lammps/`` (LAMMPS's data file and log).

Blow-ups are checked as in the study's runs (:class:`~thermocg.md.blowup.BlowUpDetector`, every
``check_interval_steps`` = 10 steps and at every report): NaN, a temperature above 5 x the target, a
force above 1000 kcal/mol/A, two beads closer than 0.5 A, or an engine that stops on its own (OpenMM's
NaN coordinates, LAMMPS's lost atoms). The files then keep the run up to the last good state, and the
command exits with status 1 after one line on stderr. In OpenMM and LAMMPS each check evaluates the
model once more at the current positions (the engines do not hand back the forces they used; LAMMPS's
include the Langevin forces): with the files, 15-35 % more per step than the bare engine
(bench/bench_runmd.py).

``--continue`` extends the run in ``DIR`` to ``--duration-ps`` in total from its restart.npz, appending
to its files, with the same model, structure, engine and settings (the duration and the blow-up
thresholds may change). With the thermocg engine the extended files equal those of one uninterrupted
run bit for bit (:mod:`thermocg.md.stage`). OpenMM and LAMMPS runs continue from the restart's
positions, velocities and box with a new random stream (seeded from ``--seed`` and the restart's step):
the same ensemble, not the same trajectory. A fresh run into a ``DIR`` that holds one is refused
unless ``--overwrite``.

The command holds ``DIR``'s run-directory lock (:func:`thermocg.rundir.run_dir_lock`) while it runs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from thermocg import units
from thermocg.frames import Frames
from thermocg.md.blowup import BlowUpDetector, SimulationBlowUp
from thermocg.md.reporters import (
    ExtXYZReporter,
    H5MDReporter,
    RestartReporter,
    ThermoCollector,
    ThermoCSVReporter,
)
from thermocg.md.stage import (
    MDRunSummary,
    SimulationResult,
    check_continuable,
    continue_state,
    finish_state,
    simulate_state,
    StateJob,
    model_name,
)
from thermocg.md.state import MDInputError, Snapshot, load_restart, write_restart
from thermocg.progress import Progress

__all__ = ["ENGINES", "RunMDOptions", "run_md", "run_md_exit_status"]

ENGINES = ("thermocg", "openmm", "lammps")
#: the ``thermocg simulate`` keys run-md sets from its command-line options (option = --key-with-dashes)
_SIMULATE_OPTIONS = ("timestep_fs", "friction_per_ps", "save_interval_fs", "thermo_interval_fs", "device")


@dataclass
class RunMDOptions:
    """What run-md needs beyond :class:`~thermocg.config.SimulateConfig`; recorded in resolved.yaml
    (``run_md``) and compared on ``--continue``.

    engine : "thermocg", "openmm" or "lammps"
    structure : the structure file; frame_index : its frame used (default the last)
    seed : velocities and thermostat noise
    pressure_bar : NPT at this pressure (openmm, lammps); None: NVT
    bead_types : renames of the file's type names; masses_amu : masses per bead type (override the file's)
    openmm_platform : OpenMM platform of the integrator (the model runs on its own device)
    barostat_interval_steps : OpenMM's Monte Carlo barostat interval
    """

    engine: Literal["thermocg", "openmm", "lammps"]
    structure: str
    seed: int = 0
    frame_index: int = -1
    pressure_bar: float | None = None
    bead_types: dict[str, str] = field(default_factory=dict)
    masses_amu: dict[str, float] = field(default_factory=dict)
    openmm_platform: str = "CPU"
    barostat_interval_steps: int = 25

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise MDInputError(f"--engine: must be one of {list(ENGINES)}, got {self.engine!r}")
        if self.pressure_bar is not None:
            if self.engine == "thermocg":
                raise MDInputError("--pressure-bar needs --engine openmm or lammps (thermocg's own MD runs NVT)")
            if not math.isfinite(self.pressure_bar):
                raise MDInputError(f"--pressure-bar must be finite, got {self.pressure_bar}")
        if int(self.barostat_interval_steps) != self.barostat_interval_steps or self.barostat_interval_steps < 1:
            raise MDInputError("barostat_interval_steps must be a positive integer, got "
                               f"{self.barostat_interval_steps}")

    def comparable(self) -> dict[str, Any]:
        """The options a continuation must share with the run (all but the structure's path and the
        OpenMM platform, which do not change the ensemble)."""
        data = dataclasses.asdict(self)
        for key in ("structure", "openmm_platform"):
            data.pop(key)
        return data


def _option_names(message: str) -> str:
    """``message`` with the ``simulate.key`` names of the MD stage as run-md's ``--key`` options."""
    for key in (*_SIMULATE_OPTIONS, "temperature_K", "duration_ps"):
        message = message.replace(f"simulate.{key}", "--" + key.replace("_", "-"))
    return message


def _simulate_settings(temperature_K: float, duration_ps: float, given: dict[str, Any]) -> Any:
    """A SimulateConfig from run-md's options; its errors name the command-line options."""
    from thermocg.config import ConfigError, SimulateConfig

    values = {k: v for k, v in given.items() if v is not None}
    try:
        return SimulateConfig(temperature_K=temperature_K, duration_ps=duration_ps, **values)
    except ConfigError as exc:
        raise MDInputError(_option_names(str(exc))) from None


def run_md(*, model: str | os.PathLike, structure: str | os.PathLike, temperature_K: float, duration_ps: float,
           output: str | os.PathLike = "runmd", engine: str = "thermocg", timestep_fs: float | None = None,
           friction_per_ps: float | None = None, save_interval_fs: float | None = None,
           thermo_interval_fs: float | None = None, seed: int = 0, pressure_bar: float | None = None,
           mass: list[str] | dict[str, float] | None = None, bead_type: list[str] | dict[str, str] | None = None,
           frame: int = -1, device: str | None = None, openmm_platform: str = "CPU", continue_run: bool = False,
           overwrite: bool = False, progress: bool = True) -> MDRunSummary:
    """Run ``model`` from ``structure`` at ``temperature_K`` for ``duration_ps`` into ``output``
    (module docstring); returns the :class:`MDRunSummary` (a blow-up is in ``summary.blowup``, not raised).

    ``mass`` and ``bead_type``: ``["NAME=VALUE", ...]`` as on the command line, or dicts. The
    simulate settings left None take :class:`~thermocg.config.SimulateConfig`'s defaults.
    """
    from thermocg.potentials.base import load_potential
    from thermocg.structure import parse_assignments, read_structure

    settings = _simulate_settings(temperature_K, duration_ps, {
        "timestep_fs": timestep_fs, "friction_per_ps": friction_per_ps, "save_interval_fs": save_interval_fs,
        "thermo_interval_fs": thermo_interval_fs, "device": device})
    options = RunMDOptions(engine=str(engine), structure=str(structure), seed=int(seed), frame_index=int(frame),
                           pressure_bar=None if pressure_bar is None else float(pressure_bar),
                           bead_types=parse_assignments(bead_type, "--bead-type"),
                           masses_amu=parse_assignments(mass, "--mass", number=True), openmm_platform=openmm_platform)
    if settings.integrator != "langevin":
        raise MDInputError(f"run-md runs Langevin dynamics; integrator {settings.integrator!r} is not offered here")
    out = Path(output)
    if not continue_run and (out / "summary.json").exists() and not overwrite:
        raise MDInputError(f"{out}: holds a run already (summary.json); continue it with --continue, overwrite it "
                           "with --overwrite, or choose another --output")
    if not Path(model).exists():
        raise FileNotFoundError(f"{model}: no such model file")
    device_name = settings.resolved_device()
    potential = load_potential(model, device=device_name)
    initial = read_structure(structure, type_names=potential.type_names, bead_types=options.bead_types,
                             masses_amu=options.masses_amu, frame_index=options.frame_index,
                             temperature_K=temperature_K)
    job = StateJob(potential=potential, settings=settings, model_file=str(model), model=model_name(model),
                    label=initial.state.label, dataset=out / "initial.h5md", out_dir=out, seed=options.seed,
                    device=str(device_name), progress=progress)
    if continue_run:
        _check_same_start(job, initial, options)
        try:
            summary = (continue_state(job) if options.engine == "thermocg"
                       else _continue_external(job, options))
        except ValueError as exc:  # the MD stage names config keys: name run-md's options instead
            raise type(exc)(_option_names(str(exc))) from None
    else:
        from thermocg.dataset import write_frames

        write_frames(initial, job.dataset, kind="cg")
        summary = (simulate_state(job) if options.engine == "thermocg"
                   else _simulate_external(job, options))
    _record_options(job, options, summary)
    return summary


def run_md_exit_status(summary: MDRunSummary) -> int:
    """The CLI's exit status: 1 after one line on stderr if the run blew up, else 0 after one line on
    stdout saying where the run is."""
    if summary.blowup:
        print(f"thermocg run-md: {summary.model} at {summary.state}: {summary.blowup}", file=sys.stderr)
        return 1
    print(f"thermocg run-md: {summary.simulated_ps:g} ps of {summary.model} at {summary.state} in {summary.out_dir} "
          f"({summary.ns_per_day:.3g} ns/day)")
    return 0


# --------------------------------------------------------------------------------------------------
# resolved.yaml's run_md block, and the checks of a continuation
# --------------------------------------------------------------------------------------------------

def _record_options(job: StateJob, options: RunMDOptions, summary: MDRunSummary) -> None:
    """Add run-md's options (``run_md``) to the resolved.yaml the MD stage wrote beside the run."""
    import yaml

    from thermocg import provenance
    from thermocg.rundir import atomic_write_text

    path = job.out_dir / "resolved.yaml"
    data = yaml.safe_load(path.read_text()) or {}
    data["run_md"] = {**dataclasses.asdict(options), "comparable": options.comparable(),
                      "structure_sha256": provenance.file_sha256(options.structure),
                      "model_temperature_K": job.potential.temperature_K
                      if job.potential.temperature_dependent else None}
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def _check_same_start(job: StateJob, initial: Frames, options: RunMDOptions) -> None:
    """Refuse a continuation whose structure, engine or run-md options differ from the run's."""
    import yaml

    from thermocg.dataset import read_frames

    out = job.out_dir
    for name in ("initial.h5md", "resolved.yaml"):
        if not (out / name).exists():
            raise FileNotFoundError(f"{out / name}: no run-md run to continue here (run without --continue first)")
    recorded = (yaml.safe_load((out / "resolved.yaml").read_text()) or {}).get("run_md") or {}
    before, now = recorded.get("comparable") or {}, options.comparable()
    changed = sorted(k for k in now if before.get(k) != now[k])
    if changed:
        raise ValueError(f"{out / 'resolved.yaml'}: cannot continue: {', '.join(changed)} differ from the run's "
                         f"({', '.join(f'{k}={before.get(k)!r}' for k in changed)})")
    stored = read_frames(out / "initial.h5md")
    same = (stored.type_names == initial.type_names and np.array_equal(stored.types, initial.types)
            and np.array_equal(stored.masses, initial.masses) and np.array_equal(stored.positions, initial.positions)
            and np.array_equal(stored.box, initial.box))
    if not same:
        raise ValueError(f"{options.structure}: not the structure the run in {out} started from "
                         f"({out / 'initial.h5md'} holds that one)")


# --------------------------------------------------------------------------------------------------
# OpenMM and LAMMPS
# --------------------------------------------------------------------------------------------------

class _EngineStopped(Exception):
    """The engine refused to go on (NaN coordinates, lost atoms): a blow-up."""


class _OpenMMDriver:
    """Langevin (optionally Monte Carlo barostat) dynamics of :class:`~thermocg.engines.openmm.OpenMMEngine`."""

    def __init__(self, potential: Any, frames: Frames, *, settings: Any, options: RunMDOptions, temperature_K: float,
                 seed: int, velocities: str, work_dir: Path) -> None:
        import openmm

        from thermocg.engines.openmm import OpenMMEngine

        self._exception = openmm.OpenMMException
        self.engine = OpenMMEngine(potential, frames, skin_A=settings.skin_A)
        self.cell = self.engine.cell
        self.simulation = self.engine.simulation(
            temperature_K=temperature_K, timestep_fs=settings.timestep_fs, seed=seed,
            friction_per_ps=settings.friction_per_ps, pressure_bar=options.pressure_bar,
            barostat_interval_steps=options.barostat_interval_steps, platform=options.openmm_platform,
            velocities=velocities)

    def advance(self, n_steps: int) -> None:
        try:
            self.simulation.step(n_steps)
        except self._exception as exc:
            raise _EngineStopped(f"OpenMM stopped: {exc}") from None

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions (N, 3) A, velocities (N, 3) A/fs and box (3, 3) A in the engine's frame."""
        from openmm import unit as u

        state = self.simulation.context.getState(getPositions=True, getVelocities=True)
        positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(u.nanometer)) * units.NM_TO_A
        velocities = np.asarray(state.getVelocities(asNumpy=True).value_in_unit(u.nanometer / u.picosecond))
        box = np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)) * units.NM_TO_A
        return positions, velocities * units.NM_TO_A * units.FS_TO_PS, box

    @property
    def n_neighbor_builds(self) -> int:
        return self.engine.evaluator.n_neighbor_builds

    def close(self) -> None:
        self.simulation = None


class _LammpsDriver:
    """``fix langevin`` + ``fix nve`` (or ``fix nph`` at a pressure) of
    :class:`~thermocg.engines.lammps.LammpsEngine`."""

    #: LAMMPS errors that mean the dynamics fell apart (a blow-up), not a set-up mistake
    _BLOWUP_MESSAGES = ("Lost atoms", "Out of range atoms", "Non-numeric atom coords", "Bond atoms missing")

    def __init__(self, potential: Any, frames: Frames, *, settings: Any, options: RunMDOptions, temperature_K: float,
                 seed: int, velocities: str, work_dir: Path) -> None:
        from thermocg.engines.lammps import LammpsEngine, lammps_seed

        self.engine = LammpsEngine(potential, frames, work_dir=work_dir, skin_A=settings.skin_A,
                                   virial=options.pressure_bar is not None)
        self.cell = self.engine.cell
        try:
            if velocities == "frame":
                self._set_velocities(frames.velocities[-1] @ self.cell.rotation)
            else:
                self.engine.velocities(temperature_K, seed=seed)
            if options.pressure_bar is None:
                self.engine.langevin(temperature_K=temperature_K, friction_per_ps=settings.friction_per_ps, seed=seed,
                                     timestep_fs=settings.timestep_fs)
            else:
                # units real: pressure in atm; the barostat's damping of 1000 steps is LAMMPS's advice
                pressure_atm = options.pressure_bar * units.BAR_TO_ATM
                dt = settings.timestep_fs
                damp_fs = 1000.0 / settings.friction_per_ps
                self.engine.command(
                    f"timestep {dt:.10g}",
                    f"fix thermocg_nph all nph iso {pressure_atm:.10g} {pressure_atm:.10g} {1000.0 * dt:.10g}",
                    f"fix thermocg_langevin all langevin {temperature_K:.10g} {temperature_K:.10g} {damp_fs:.10g} "
                    f"{lammps_seed(seed)}")
            self.engine.command("run 0 post no")  # forces of the first state
        except BaseException:
            self.engine.close()
            raise

    def _set_velocities(self, velocities: np.ndarray) -> None:
        lmp = self.engine.lmp
        n_local = lmp.extract_setting("nlocal")
        tags = np.array(lmp.numpy.extract_atom("id")[:n_local], dtype=np.int64)
        lmp.numpy.extract_atom("v")[:n_local] = velocities[tags - 1]

    def advance(self, n_steps: int) -> None:
        try:
            self.engine.command(f"run {int(n_steps)} pre no post no")
        except Exception as exc:  # the lammps module raises plain Exceptions for LAMMPS errors
            if any(m in str(exc) for m in self._BLOWUP_MESSAGES):
                raise _EngineStopped(f"LAMMPS stopped: {exc}") from None
            raise

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.engine.positions_A(), self.engine.velocities_A_fs(), self.engine.box_A()

    @property
    def n_neighbor_builds(self) -> int:
        return self.engine.evaluator.n_neighbor_builds

    def close(self) -> None:
        self.engine.close()


_DRIVERS = {"openmm": _OpenMMDriver, "lammps": _LammpsDriver}


class _Sampler:
    """Snapshots of an engine's state in the structure's frame, with the model's energy and forces,
    and the blow-up verdict on them."""

    def __init__(self, driver: Any, potential: Any, start: Frames, detector: BlowUpDetector, *,
                 temperature_K: float, timestep_fs: float, skin_A: float) -> None:
        from thermocg.engines.common import PotentialEvaluator

        self.driver = driver
        self.rotation_back = driver.cell.rotation.T  # engine frame -> the structure's frame
        self.evaluator = PotentialEvaluator(potential, potential.type_indices(start.type_names, start.types),
                                            skin_A=skin_A)
        self.start = start
        self.detector = detector
        self.temperature_K = temperature_K
        self.timestep_fs = timestep_fs

    def snapshot(self, step: int) -> Snapshot:
        positions, velocities, box = self.driver.state()
        energy, forces, _ = self.evaluator(positions, box)
        back = self.rotation_back
        masses = np.asarray(self.start.masses, dtype=np.float64)
        velocities = velocities @ back
        kinetic = 0.5 * float(np.sum(masses[:, None] * velocities**2)) * units.MV2_TO_KCAL_MOL
        n_dof = 3 * len(masses)
        return Snapshot(step=int(step), time_fs=step * self.timestep_fs, box=box @ back, types=self.start.types,
                        type_names=tuple(self.start.type_names), masses=masses, positions=positions @ back,
                        velocities=velocities, forces=forces @ back, potential_energy_kcal_mol=energy,
                        kinetic_energy_kcal_mol=kinetic,
                        temperature_K=2.0 * kinetic / (n_dof * units.KB_KCAL_MOL_K))

    def verdict(self, snap: Snapshot) -> str | None:
        from thermocg.neighbors import neighbor_pairs

        finite = bool(np.all(np.isfinite(snap.positions)) and np.all(np.isfinite(snap.velocities))
                      and np.all(np.isfinite(snap.forces)) and math.isfinite(snap.potential_energy_kcal_mol))
        min_distance = math.inf
        if finite and self.detector.min_distance_A > 0:
            i, j, shifts = neighbor_pairs(snap.positions, snap.box, self.detector.min_distance_A)
            if len(i):
                vectors = snap.positions[j] - snap.positions[i] + shifts @ snap.box
                min_distance = float(np.sqrt(np.einsum("pk,pk->p", vectors, vectors)).min())
        max_force = float(np.linalg.norm(snap.forces, axis=1).max()) if finite else math.inf
        return self.detector.judge(step=snap.step, time_fs=snap.time_fs, finite=finite,
                                   kinetic_kcal_mol=snap.kinetic_energy_kcal_mol, max_force_kcal_mol_A=max_force,
                                   min_distance_A=min_distance, n_dof=3 * len(snap.masses),
                                   reference_temperature_K=self.temperature_K)


def _external_reporters(job: StateJob, start: Frames, *, append: bool, metadata: dict[str, Any]) -> list[Any]:
    """The file reporters of a run (counted from step 0) and the thermo collector, last."""
    settings, out = job.settings, job.out_dir
    reporters: list[Any] = [
        H5MDReporter(out / "traj.h5md", settings.save_interval_steps(), save_velocities=settings.save_velocities,
                     save_forces=True, state=start.state, metadata=metadata, append=append),
        ThermoCSVReporter(out / "thermo.csv", settings.thermo_interval_steps(), append=append),
        RestartReporter(out / "restart.npz", max(settings.save_interval_steps(), settings.n_steps() // 10 or 1)),
    ]
    if settings.extxyz:
        reporters.append(ExtXYZReporter(out / "traj.extxyz", settings.save_interval_steps(), append=append))
    reporters.append(ThermoCollector(settings.thermo_interval_steps()))
    return reporters


def _run_external(job: StateJob, options: RunMDOptions, start: Frames, *, start_step: int, seed: int,
                  velocities: str) -> SimulationResult:
    """Run the engine from ``start`` (at step ``start_step``) to ``simulate.duration_ps`` in total, with
    the reporters of a thermocg run and its blow-up checks; return what a thermocg run returns."""
    settings, potential = job.settings, job.potential
    temperature = float(settings.temperature_K)
    if potential.temperature_dependent:
        potential.set_temperature(temperature)  # the thermostat's temperature (range-checked)
    detector = BlowUpDetector(interval_steps=settings.check_interval_steps,
                              max_temperature_factor=settings.max_temperature_factor,
                              max_force_kcal_mol_A=settings.max_force_kcal_mol_A,
                              min_distance_A=settings.min_distance_A)
    metadata = {"potential": potential.kind, "engine": options.engine, "integrator": "langevin",
                "timestep_fs": float(settings.timestep_fs), "temperature_K": temperature,
                "friction_per_ps": settings.friction_per_ps, "pressure_bar": options.pressure_bar}
    if potential.temperature_dependent:
        metadata["model_temperature_K"] = temperature
    reporters = _external_reporters(job, start, append=start_step > 0, metadata=metadata)
    thermo = reporters[-1]
    driver = _DRIVERS[options.engine](potential, start, settings=settings, options=options, temperature_K=temperature,
                                      seed=seed, velocities=velocities, work_dir=job.out_dir / "lammps")
    end = settings.n_steps()
    intervals = [r.interval_steps for r in reporters] + [detector.interval_steps]
    success, blowup, step = False, None, start_step
    bar = Progress(end - start_step, description=f"MD {options.engine}", unit="steps", leave=False,
                   mode="auto" if job.progress else "off")
    wall0 = time.perf_counter()
    try:
        sampler = _Sampler(driver, potential, start, detector, temperature_K=temperature,
                           timestep_fs=settings.timestep_fs, skin_A=settings.skin_A)
        last_good = sampler.snapshot(step)
        message = sampler.verdict(last_good)
        if message is not None:
            raise SimulationBlowUp(f"the initial state is already unphysical: {message}", step=step)
        if start_step == 0:
            for r in reporters:
                r.write(last_good)
        while step < end:
            target = min([end] + [step + k - step % k for k in intervals])
            try:
                driver.advance(target - step)
            except _EngineStopped as exc:
                blowup = f"step {target} (t = {target * settings.timestep_fs * units.FS_TO_PS:.3f} ps): {exc}"
                break
            step = target
            snap = sampler.snapshot(step)
            blowup = sampler.verdict(snap)
            if blowup is not None:
                break
            last_good = snap
            for r in reporters:
                if step % r.interval_steps == 0:
                    r.write(snap)
            bar.update(step - start_step - bar.n)
        success = True
    finally:
        wall = time.perf_counter() - wall0
        bar.close()
        for r in reporters:
            r.close(success=success)
        builds = driver.n_neighbor_builds
        driver.close()
    write_restart(job.out_dir / "restart.npz", last_good)
    paths = {"trajectory": job.out_dir / "traj.h5md", "thermo": job.out_dir / "thermo.csv",
             "restart": job.out_dir / "restart.npz"}
    if settings.extxyz:
        paths["extxyz"] = job.out_dir / "traj.extxyz"
    result = SimulationResult(frames=None, thermo=thermo.arrays(), n_steps=last_good.step - start_step,
                              timestep_fs=settings.timestep_fs, wall_time_s=wall, n_neighbor_builds=builds,
                              final=last_good, paths=paths)
    if blowup is not None:
        result.blowup = (f"simulation blew up at {blowup}; kept {len(thermo.rows)} thermo rows and the trajectory "
                         f"up to step {last_good.step}; last good state in {paths['restart']}")
    return result


def _simulate_external(job: StateJob, options: RunMDOptions) -> MDRunSummary:
    """A fresh OpenMM or LAMMPS run from the job's initial frame."""
    from thermocg.md.stage import read_initial_state

    initial, temperature = read_initial_state(job)
    result = _run_external(job, options, initial, start_step=0, seed=job.seed, velocities="maxwell")
    temps = result.thermo["temperature_K"]
    return finish_state(job, result, temperature, start_step=0, seed=job.seed,
                         mean_temperature_K=float(temps.mean()) if len(temps) else None, n_thermo_samples=len(temps))


def _continue_external(job: StateJob, options: RunMDOptions) -> MDRunSummary:
    """Continue an OpenMM or LAMMPS run from its restart.npz to ``simulate.duration_ps`` in total."""
    from thermocg.md.stage import read_initial_state

    restart = job.out_dir / "restart.npz"
    if not restart.exists():
        raise FileNotFoundError(f"{restart}: no restart file to continue from (run without --continue first)")
    data = load_restart(restart)
    restart_step = data["step"]
    previous, n_before = check_continuable(job, restart_step)
    if restart_step >= job.settings.n_steps():
        print(f"run-md: the run in {job.out_dir} already has {restart_step} steps (--duration-ps "
              f"{job.settings.duration_ps:g} asks for {job.settings.n_steps()}); nothing to do", file=sys.stderr)
        return MDRunSummary.from_dict(previous)
    initial, temperature = read_initial_state(job)
    start = dataclasses.replace(initial, positions=data["positions"][None], velocities=data["velocities"][None],
                                box=data["box"][None], time_fs=np.array([data["time_fs"]]), forces=None)
    seed = int(np.random.SeedSequence([job.seed, restart_step]).generate_state(1)[0] % (2**31 - 1))
    result = _run_external(job, options, start, start_step=restart_step, seed=seed, velocities="frame")
    new_temps = result.thermo["temperature_K"]
    n_total = n_before + len(new_temps)
    mean_before = previous.get("mean_temperature_K") or 0.0
    mean = (mean_before * n_before + float(new_temps.sum())) / n_total if n_total else None
    return finish_state(job, result, temperature, start_step=restart_step, seed=int(previous.get("seed", job.seed)),
                         mean_temperature_K=mean, n_thermo_samples=n_total)
