"""The MD stage: ``simulate`` (a run in memory and optionally on disk) and ``run_simulate`` (the CLI's stage).

:func:`simulate` builds a :class:`~thermocg.md.simulation.CGSimulation` from a frame (or a restart
file), attaches the file reporters of ``out_dir`` (traj.h5md, thermo.csv, restart.npz and optionally
traj.extxyz) and in-memory collectors, runs it, writes the last good state as the restart file and
returns a :class:`SimulationResult`. Reporters report at step 0 and then every interval counted from
the start step (for a restart: from the restart's step).

:func:`run_simulate` runs one model at the state points of a config: for each state the initial
frame is the last frame of RUN_DIR/cg/<label>.h5md; it writes RUN_DIR/md/<model>/<label>/
{traj.h5md, thermo.csv, restart.npz, summary.json, resolved.yaml} and returns one
:class:`MDRunSummary` per state. With an r-RESPA integrator (``simulate.integrator: respa_langevin``)
the fast part is the model's prior or a pair potential fitted to the model's forces on the state's CG
frames (``simulate.respa_fast``; :mod:`thermocg.md.splitting`), saved as respa_fast.safetensors. A
blow-up is recorded in the summary (the files keep the run up to the last good state) and does not
stop the other states; the CLI exits with status 1 when any state blew up
(:func:`simulate_exit_status`).

Continuing a run (``continue_run=True``, ``thermocg simulate --continue``): ``simulate.duration_ps``
is the total length of the run. The run continues from its restart.npz to that length, and its files
are *extended* in place: traj.h5md, thermo.csv (and traj.extxyz) keep their frames and rows and gain
the new ones, written through temporary files, so an interrupted continuation leaves the old files as
they were. Reporters are counted from step 0 in both the first run and the continuation, and the
restart file holds the generator state and the neighbour list's build positions, so the extended
files equal those of one uninterrupted run of the total length, bit for bit (on a deterministic
device). Settings that change the trajectory or the file layout must not change between the two
(the blow-up thresholds and the duration may); the model file must be the same.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from thermocg import units
from thermocg.frames import Frames
from thermocg.md.blowup import BlowUpDetector, SimulationBlowUp
from thermocg.md.integrators import INTEGRATORS, RESPA_INTEGRATORS, make_integrator
from thermocg.md.reporters import (
    CallbackReporter,
    ExtXYZReporter,
    FrameCollector,
    H5MDReporter,
    ProgressReporter,
    RestartReporter,
    ThermoCollector,
    ThermoCSVReporter,
)
from thermocg.md.simulation import CGSimulation
from thermocg.md.state import MDInputError, Snapshot, load_restart, write_restart
from thermocg.potentials.base import Potential

if TYPE_CHECKING:
    from thermocg.config import Config, SimulateConfig

__all__ = ["SimulationResult", "simulate", "MDRunSummary", "run_simulate", "simulate_exit_status", "StateJob",
           "read_initial_state", "simulate_state", "continue_state", "finish_state", "check_continuable"]


# --------------------------------------------------------------------------------------------------
# the result of simulate()
# --------------------------------------------------------------------------------------------------

@dataclass
class SimulationResult:
    """What a run produced.

    frames : the saved frames (wrapped positions, velocities, forces), or None if ``keep_frames=False``
    thermo : arrays per THERMO_COLUMNS name, one entry per thermo report
    n_steps : steps completed (up to the last good state if the run blew up)
    final : the last good state (everything fetched)
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
    if integrator not in INTEGRATORS:
        raise MDInputError(f"integrator must be one of {sorted(INTEGRATORS)}, got {integrator!r}")
    if integrator in ("langevin", "respa_langevin") and not (math.isfinite(friction_per_ps) and friction_per_ps > 0):
        raise MDInputError(f"friction_per_ps must be positive for Langevin dynamics, got {friction_per_ps}")
    if int(n_steps) != n_steps or n_steps < 0:
        raise MDInputError(f"n_steps must be a non-negative integer, got {n_steps}")
    if int(save_interval_steps) != save_interval_steps or save_interval_steps < 1:
        raise MDInputError(f"save_interval_steps must be a positive integer, got {save_interval_steps}")
    if np.any(initial.masses <= 0):
        raise MDInputError("every bead needs a positive mass")


def _restart_simulation(restart: str | os.PathLike, potential: Potential, initial: Frames, integrator: Any,
                        **kwargs: Any) -> CGSimulation:
    """A simulation continued from ``restart``, whose beads must be those of ``initial``."""
    data = load_restart(restart)
    if data["positions"].shape[0] != initial.n_particles:
        raise MDInputError(f"{restart}: {data['positions'].shape[0]} beads, the initial frames have "
                           f"{initial.n_particles}")
    restart_names = [data["type_names"][t] for t in data["types"]]
    frame_names = [initial.type_names[t] for t in initial.types]
    if restart_names != frame_names:
        raise MDInputError(f"{restart}: bead types differ from those of the initial frames")
    return CGSimulation.from_restart(restart, potential, integrator, **kwargs)


def _metadata(potential: Potential, stepper: Any, temperature_K: float, friction_per_ps: float) -> dict[str, Any]:
    """What the trajectory file records about the run's dynamics."""
    out = {"potential": potential.kind, "integrator": stepper.name, "timestep_fs": float(stepper.timestep_fs),
           "temperature_K": temperature_K, "friction_per_ps": friction_per_ps}
    if stepper.name in RESPA_INTEGRATORS:
        out.update(respa_inner_steps=stepper.inner_steps, respa_fast_potential=stepper.fast_potential.kind,
                   respa_fast_cutoff_A=stepper.fast_potential.cutoff_A)
    return out


@dataclass
class _Outputs:
    """The reporters :func:`simulate` attaches, and where its files go."""

    paths: dict[str, Path]
    thermo: ThermoCollector
    frames: FrameCollector | None
    progress: ProgressReporter | None


def _attach_reporters(sim: CGSimulation, out_dir: str | os.PathLike | None, *, save_interval_steps: int,
                      thermo_interval_steps: int, restart_interval_steps: int, save_velocities: bool,
                      save_forces: bool, extxyz: bool, initial: Frames, metadata: dict[str, Any], phase_step: int,
                      append: bool, keep_frames: bool, extra: list[Any], progress_steps: int | None) -> _Outputs:
    """Attach, in this order, the file reporters of ``out_dir``, the in-memory collectors, the
    ``extra`` reporters and a progress bar over ``progress_steps`` steps (None: no bar)."""
    paths: dict[str, Path] = {}
    reporters: list[Any] = []
    if out_dir is not None:
        out_dir = Path(out_dir)
        paths = {"trajectory": out_dir / "traj.h5md", "thermo": out_dir / "thermo.csv",
                 "restart": out_dir / "restart.npz"}
        reporters.append(H5MDReporter(paths["trajectory"], save_interval_steps, save_velocities=save_velocities,
                                      save_forces=save_forces, state=initial.state, molecule_ids=initial.molecule_ids,
                                      metadata=metadata, phase_step=phase_step, append=append))
        reporters.append(ThermoCSVReporter(paths["thermo"], thermo_interval_steps, phase_step=phase_step,
                                           append=append))
        reporters.append(RestartReporter(paths["restart"], restart_interval_steps, phase_step=phase_step))
        if extxyz:
            paths["extxyz"] = out_dir / "traj.extxyz"
            reporters.append(ExtXYZReporter(paths["extxyz"], save_interval_steps, phase_step=phase_step,
                                            append=append))
    thermo = ThermoCollector(thermo_interval_steps, phase_step=phase_step)
    frames = FrameCollector(save_interval_steps, phase_step=phase_step) if keep_frames else None
    reporters += [thermo] + ([frames] if frames is not None else [])
    for r in extra:
        if isinstance(r, tuple):
            r = CallbackReporter(*r, phase_step=phase_step)
        elif not hasattr(r, "describe_next_report"):  # an object with interval_steps, called with a snapshot
            r = CallbackReporter(r.interval_steps, r, phase_step=phase_step)
        reporters.append(r)
    bar = None
    if progress_steps is not None:
        bar = ProgressReporter(progress_steps, start_step=sim.current_step, description=f"MD {metadata['integrator']}")
        reporters.append(bar)
    sim.reporters.extend(reporters)
    return _Outputs(paths, thermo, frames, bar)


def _execute(sim: CGSimulation, n_steps: int, outputs: _Outputs, *, initial_report: bool, initial: Frames,
             metadata: dict[str, Any]) -> SimulationResult:
    """Run ``n_steps`` steps; on success or blow-up write the last good state as the restart file and
    close the reporters (files keep their frames); on any other exception remove the partial files."""
    start_step = sim.current_step
    blowup = None
    success = True
    final = None
    wall0 = time.perf_counter()
    try:
        if initial_report:
            sim.report()
        try:
            sim.step(n_steps)
        except SimulationBlowUp as exc:
            blowup = str(exc)
    except BaseException:
        success = False
        raise
    finally:
        wall = time.perf_counter() - wall0
        if outputs.progress is not None:
            outputs.progress.finish(sim.current_step)
        if success:
            final = sim.state()
            if "restart" in outputs.paths:
                write_restart(outputs.paths["restart"], final)
        sim.close(success=success)
    collected = outputs.frames
    frames = None
    if collected is not None and collected.positions:
        frames = Frames(
            positions=np.stack(collected.positions), box=np.stack(collected.boxes),
            types=initial.types, type_names=initial.type_names, masses=initial.masses,
            velocities=np.stack(collected.velocities), forces=np.stack(collected.forces),
            time_fs=np.array(collected.times), molecule_ids=initial.molecule_ids,
            state=initial.state if initial.state is not None else None,
            metadata=dict(metadata, kind="cg-md"),
        )
    completed = final.step - start_step
    result = SimulationResult(
        frames=frames, thermo=outputs.thermo.arrays(), n_steps=completed, timestep_fs=sim.timestep_fs,
        wall_time_s=wall, n_neighbor_builds=sim.n_neighbor_builds, final=final, blowup=None, paths=outputs.paths,
    )
    if blowup is not None:
        result.blowup = (f"simulation blew up at {blowup}; kept {len(outputs.thermo.rows)} thermo rows and the "
                         f"trajectory up to step {start_step + completed}"
                         + (f"; last good state in {outputs.paths['restart']}" if "restart" in outputs.paths else ""))
    return result


def _model_temperature(sim: CGSimulation) -> dict[str, float]:
    """``{"model_temperature_K": T}`` for a temperature-dependent model (the temperature its force field
    was evaluated at, see :class:`CGSimulation`), else nothing: the run's metadata."""
    return {} if sim.model_temperature_K is None else {"model_temperature_K": sim.model_temperature_K}


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
    integrator: Literal["langevin", "nve", "respa_langevin", "respa_nve"] = "langevin",
    fast_potential: Potential | None = None,
    respa_inner_steps: int = 1,
    out_dir: str | os.PathLike | None = None,
    thermo_interval_steps: int | None = None,
    restart_interval_steps: int | None = None,
    restart: str | os.PathLike | None = None,
    initial_velocities: Literal["maxwell", "frame"] = "maxwell",
    frame_index: int = -1,
    reporters: list[Any] | None = None,
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
    integrator : "langevin", "nve", or their multiple-time-step kinds "respa_langevin", "respa_nve";
        these need ``fast_potential`` (the fast part of ``potential``, e.g.
        :func:`thermocg.md.splitting.prior_part`) and take ``respa_inner_steps`` inner steps of it per
        step; ``timestep_fs`` and ``n_steps`` are then the outer step and their number
    seed : int or torch.Generator (on the potential's device) for velocities and Langevin noise
    save_interval_steps : trajectory frames (in memory and in ``out_dir/traj.h5md``) every that many steps
    out_dir : if given, writes traj.h5md, thermo.csv, restart.npz (and traj.extxyz when ``extxyz``)
    reporters : extra reporters: :class:`~thermocg.md.reporters.Reporter` objects, objects with
        ``interval_steps`` called with a snapshot, or ``(interval_steps, callable)``; the last two
        get every quantity
    check_interval_steps, max_temperature_factor, max_force_kcal_mol_A, min_distance_A : blow-up checks
    raise_on_blowup : raise :class:`SimulationBlowUp` (with ``.result``) or return with ``result.blowup`` set

    The step counter starts at 0 (or at the restart's step); frame k of the trajectory is step
    k * save_interval_steps, step 0 included. The final state is always checked, so ``n_steps`` steps
    are reported done unless the run blew up.

    (Over 80 lines only for its keyword parameters and their documentation: the body builds a
    :class:`CGSimulation`, attaches reporters and runs it.)
    """
    integrator = str(integrator)
    _check_inputs(potential, initial, temperature_K, timestep_fs, n_steps, friction_per_ps,
                  save_interval_steps, integrator)
    thermo_interval_steps = int(thermo_interval_steps or save_interval_steps)
    restart_interval_steps = int(restart_interval_steps or max(save_interval_steps, n_steps // 10 or 1))
    stepper = make_integrator(integrator, timestep_fs=float(timestep_fs), temperature_K=temperature_K,
                              friction_per_ps=friction_per_ps, fast_potential=fast_potential,
                              inner_steps=respa_inner_steps)
    options = dict(seed=seed, temperature_K=temperature_K, skin_A=skin_A,
                   blowup=BlowUpDetector(interval_steps=check_interval_steps,
                                         max_temperature_factor=max_temperature_factor,
                                         max_force_kcal_mol_A=max_force_kcal_mol_A, min_distance_A=min_distance_A))
    if restart is not None:
        sim = _restart_simulation(restart, potential, initial, stepper, **options)
    else:
        sim = CGSimulation.from_frames(potential, initial, stepper, frame_index=frame_index,
                                       velocities=initial_velocities, **options)
    metadata = {**_metadata(potential, stepper, temperature_K, friction_per_ps), **_model_temperature(sim)}
    start_step = sim.current_step
    outputs = _attach_reporters(
        sim, out_dir, save_interval_steps=int(save_interval_steps), thermo_interval_steps=thermo_interval_steps,
        restart_interval_steps=restart_interval_steps, save_velocities=save_velocities, save_forces=save_forces,
        extxyz=extxyz, initial=initial, metadata=metadata, phase_step=start_step, append=False,
        keep_frames=keep_frames, extra=list(reporters or []), progress_steps=int(n_steps) if progress else None)
    result = _execute(sim, int(n_steps), outputs, initial_report=(start_step == 0 or restart is None),
                      initial=initial, metadata=metadata)
    if result.blowup is not None and raise_on_blowup:
        raise SimulationBlowUp(result.blowup, result)
    return result


# --------------------------------------------------------------------------------------------------
# the stage: RUN_DIR/md/<model>/<state>/...
# --------------------------------------------------------------------------------------------------

@dataclass
class MDRunSummary:
    """What one MD run of one model at one state produced (summary.json holds :meth:`to_dict`).

    n_steps, simulated_ps : the length of the run in its directory (for a continued run: in total,
        from step 0); ns_per_day, steps_per_s, wall_s : of this invocation's steps only
    mean_temperature_K : over the thermo samples of the whole run (None if none); n_thermo_samples
    start_step : where this invocation started (0, or the restart's step with --continue)
    blowup : None, or why the run stopped (its files hold it up to the last good state)
    n_threads : the torch threads this invocation ran with (None in summaries of older versions)
    """

    model: str
    model_file: str
    state: str
    out_dir: Path
    trajectory: Path
    ns_per_day: float
    blowup: str | None
    simulated_ps: float
    n_steps: int
    mean_temperature_K: float | None
    seed: int
    wall_s: float
    temperature_K: float | None = None
    timestep_fs: float | None = None
    steps_per_s: float | None = None
    n_neighbor_builds: int | None = None
    n_thermo_samples: int | None = None
    start_step: int = 0
    device: str | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    n_threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (paths as strings)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, dict):
                value = {k: str(v) for k, v in value.items()}
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MDRunSummary":
        """Inverse of :meth:`to_dict`; also reads the summary.json of older thermocg versions."""
        data = dict(data)
        if "wall_s" not in data and "wall_time_s" in data:
            data["wall_s"] = data["wall_time_s"]
        paths = {k: Path(v) for k, v in (data.get("paths") or {}).items()}
        data["paths"] = paths
        data.setdefault("trajectory", paths.get("trajectory"))
        if data.get("out_dir") is None and data.get("trajectory") is not None:
            data["out_dir"] = Path(data["trajectory"]).parent
        for key in ("out_dir", "trajectory"):
            if data.get(key) is not None:
                data[key] = Path(data[key])
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def model_name(model: str | os.PathLike) -> str:
    """The name a model file is known by: its directory for ``.../<name>/model.safetensors``, else its stem."""
    path = Path(model)
    return path.parent.name if path.stem == "model" and path.parent.name else path.stem


def _state_labels(config: "Config", run_dir: Any, state: list[str] | str | None) -> list[str]:
    labels = [s.to_state().label for s in config.state_points()]
    if not labels:
        labels = [p.stem for p in run_dir.cg_datasets()]
    wanted = [state] if isinstance(state, str) else state
    if wanted:
        unknown = [w for w in wanted if w not in labels and not run_dir.cg_dataset(w).exists()]
        if unknown:
            raise ValueError(f"simulate: unknown state label(s) {unknown}; known: {labels}")
        labels = list(wanted)
    return labels


@dataclass
class StateJob:
    """One state of :func:`run_simulate`: the inputs a run needs, typed."""

    potential: Potential
    settings: "SimulateConfig"
    model_file: str
    model: str
    label: str
    dataset: Path
    out_dir: Path
    seed: int
    device: str
    progress: bool


def run_simulate(config: "Config", run_dir: str | os.PathLike, *, model: str | os.PathLike,
                 state: list[str] | str | None = None, progress: bool = True,
                 continue_run: bool = False) -> list[MDRunSummary]:
    """CG MD with the model file ``model`` at every state point of the config (or those named in ``state``).

    Reads ``config.simulate`` (a :class:`~thermocg.config.SimulateConfig`) and ``config.seed`` (state k
    of the config's list uses seed + 7919 k). Writes RUN_DIR/md/<model>/<label>/... (module
    docstring) and returns one :class:`MDRunSummary` per state, in order; a blow-up is reported in its
    summary, not raised. ``continue_run`` continues each state's run to ``simulate.duration_ps`` from
    its restart.npz, extending its files (module docstring).
    """
    from thermocg.config import SimulateConfig
    from thermocg.potentials.base import load_potential
    from thermocg.rundir import RunDir

    settings = config.simulate
    if not isinstance(settings, SimulateConfig):
        raise TypeError(f"run_simulate: config.simulate must be a SimulateConfig (load the config with "
                        f"thermocg.config.load_config), got {type(settings).__name__}")
    rd = RunDir(run_dir)
    device = settings.resolved_device()
    potential = load_potential(model, device=device)
    name = model_name(model)
    summaries = []
    for k, label in enumerate(_state_labels(config, rd, state)):
        job = StateJob(potential=potential, settings=settings, model_file=str(model), model=name, label=label,
                        dataset=rd.cg_dataset(label), out_dir=rd.md(name, label), seed=int(config.seed) + 7919 * k,
                        device=str(device), progress=progress)
        try:
            summaries.append(continue_state(job) if continue_run else simulate_state(job))
        except MDInputError as exc:
            raise MDInputError(f"simulate {name} at {label}: {exc}") from None
    return summaries


def read_initial_state(job: StateJob) -> tuple[Frames, float]:
    """The last frame of the state's CG dataset, and the run's temperature."""
    from thermocg.dataset import H5MDDataset

    if not job.dataset.exists():
        raise FileNotFoundError(f"{job.dataset}: no CG dataset for state {job.label} (run `thermocg map` first)")
    with H5MDDataset(job.dataset, kind="cg") as ds:
        initial = ds.read(len(ds) - 1)
    temperature = job.settings.temperature_K or (initial.state.temperature_K if initial.state else None)
    if temperature is None:
        raise ValueError(f"{job.dataset}: no state temperature stored; set simulate.temperature_K")
    return initial, temperature


def _fast_part(job: StateJob, *, continuing: bool) -> tuple[Potential | None, dict[str, Path]]:
    """The fast part of the model for an r-RESPA run (None otherwise), tabulated for the inner loop
    (:class:`~thermocg.md.splitting.TabulatedPair`), and the file it was saved to.

    ``respa_fast: pair`` is fitted to the model's forces on ``respa_pair_fit_frames`` frames of the
    state's CG dataset and saved as OUT_DIR/respa_fast.safetensors; a continuation loads that file,
    so it integrates with the very same fast part.
    """
    from thermocg.md.splitting import TabulatedPair, fit_pair_part, prior_part
    from thermocg.potentials.base import load_potential, save_potential

    settings = job.settings
    if not settings.is_respa:
        return None, {}
    if settings.respa_fast == "prior":
        return TabulatedPair.from_pair_potential(prior_part(job.potential)), {}
    path = job.out_dir / "respa_fast.safetensors"
    if continuing:
        if not path.exists():
            raise FileNotFoundError(f"{path}: the run's fitted fast part is missing; cannot continue it "
                                    "(rerun without --continue)")
        return TabulatedPair.from_pair_potential(load_potential(path, device=job.device)), {"respa_fast": path}
    from thermocg import provenance
    from thermocg.dataset import H5MDDataset

    with H5MDDataset(job.dataset) as ds:
        index = np.unique(np.linspace(0, len(ds) - 1, min(len(ds), settings.respa_pair_fit_frames)).round()
                          .astype(int))
        frames = ds.read(index)
    table = fit_pair_part(job.potential, frames, cutoff_A=settings.respa_pair_cutoff_A,
                          spacing_A=settings.respa_pair_spacing_A, max_frames=None)
    save_potential(table, path, provenance=provenance.collect(
        [job.model_file, job.dataset], stage="simulate: r-RESPA fast pair part, fitted to the model's forces",
        fit=json.loads(json.dumps(table.fit_info, default=float))))
    return TabulatedPair.from_pair_potential(table), {"respa_fast": path}


def simulate_state(job: StateJob) -> MDRunSummary:
    """A fresh run of one state."""
    settings = job.settings
    initial, temperature = read_initial_state(job)
    fast, fast_paths = _fast_part(job, continuing=False)
    result = simulate(
        job.potential, initial, temperature_K=temperature, timestep_fs=settings.timestep_fs,
        n_steps=settings.n_steps(), seed=job.seed, save_interval_steps=settings.save_interval_steps(),
        thermo_interval_steps=settings.thermo_interval_steps(), friction_per_ps=settings.friction_per_ps,
        integrator=settings.integrator, fast_potential=fast, respa_inner_steps=settings.respa_inner_steps,
        out_dir=job.out_dir, keep_frames=False,
        save_velocities=settings.save_velocities, extxyz=settings.extxyz, skin_A=settings.skin_A,
        check_interval_steps=settings.check_interval_steps,
        max_temperature_factor=settings.max_temperature_factor,
        max_force_kcal_mol_A=settings.max_force_kcal_mol_A, min_distance_A=settings.min_distance_A,
        raise_on_blowup=False, progress=job.progress,
    )
    result.paths.update(fast_paths)
    temps = result.thermo["temperature_K"]
    mean = float(temps.mean()) if len(temps) else None
    return finish_state(job, result, temperature, start_step=0, seed=job.seed,
                         mean_temperature_K=mean, n_thermo_samples=len(temps))


def finish_state(job: StateJob, result: SimulationResult, temperature: float, *, start_step: int, seed: int,
                  mean_temperature_K: float | None, n_thermo_samples: int) -> MDRunSummary:
    """The summary of a state's run, written with the resolved settings beside its files."""
    from thermocg import provenance
    from thermocg.config import write_resolved
    from thermocg.rundir import atomic_write_text

    total_steps = start_step + result.n_steps
    summary = MDRunSummary(
        model=job.model, model_file=job.model_file, state=job.label, out_dir=job.out_dir,
        trajectory=job.out_dir / "traj.h5md", ns_per_day=result.ns_per_day, blowup=result.blowup,
        simulated_ps=total_steps * result.timestep_fs * units.FS_TO_PS, n_steps=total_steps,
        mean_temperature_K=mean_temperature_K, seed=seed, wall_s=result.wall_time_s, temperature_K=temperature,
        timestep_fs=result.timestep_fs, steps_per_s=result.steps_per_s, n_neighbor_builds=result.n_neighbor_builds,
        n_thermo_samples=n_thermo_samples, start_step=start_step, device=job.device, paths=dict(result.paths),
        n_threads=torch.get_num_threads(),
    )
    atomic_write_text(job.out_dir / "summary.json", json.dumps(summary.to_dict(), indent=1))
    write_resolved(job.settings, job.out_dir / "resolved.yaml",
                   extra={"inputs": provenance.collect([job.model_file, job.dataset]), "seed": seed,
                          "state": job.label})
    return summary


# --------------------------------------------------------------------------------------------------
# continuing a run
# --------------------------------------------------------------------------------------------------

#: simulate keys that may change between a run and its continuation (they do not change the trajectory)
CONTINUE_MAY_CHANGE = ("duration_ps", "check_interval_steps", "max_temperature_factor", "max_force_kcal_mol_A",
                       "min_distance_A")


def check_continuable(job: StateJob, restart_step: int) -> tuple[dict[str, Any], int]:
    """Refuse to continue a run whose settings, model or files do not fit; returns its summary.json
    and the number of rows of its thermo.csv."""
    import yaml

    from thermocg import provenance
    from thermocg.config import result_dict
    from thermocg.dataset import H5MDDataset

    out = job.out_dir
    for name in ("traj.h5md", "thermo.csv", "summary.json", "resolved.yaml"):
        if not (out / name).exists():
            raise FileNotFoundError(f"{out / name}: cannot continue without it (run without --continue first)")
    resolved = yaml.safe_load((out / "resolved.yaml").read_text()) or {}
    before = {k: v for k, v in (resolved.get("config") or {}).items() if k not in CONTINUE_MAY_CHANGE}
    now = result_dict(job.settings, drop=CONTINUE_MAY_CHANGE)
    changed = sorted(k for k in now if before.get(k) != now[k])
    if changed:
        raise ValueError(f"{out / 'resolved.yaml'}: cannot continue: simulate.{', simulate.'.join(changed)} "
                         f"differ from the run's ({', '.join(f'{k}={before.get(k)!r}' for k in changed)})")
    hashes = set(((resolved.get("inputs") or {}).get("inputs") or {}).values())
    if provenance.file_sha256(job.model_file) not in hashes:
        raise ValueError(f"{job.model_file}: not the model file the run in {out} was made with")
    expected = {"traj.h5md": restart_step - restart_step % job.settings.save_interval_steps(),
                "thermo.csv": restart_step - restart_step % job.settings.thermo_interval_steps()}
    with H5MDDataset(out / "traj.h5md") as ds:
        last = {"traj.h5md": int(ds.steps()[-1]) if len(ds) else None}
    rows = (out / "thermo.csv").read_text().splitlines()
    last["thermo.csv"] = int(rows[-1].split(",")[0]) if len(rows) > 1 else None
    for name, step in last.items():
        if step != expected[name]:
            raise ValueError(f"{out / name}: ends at step {step}, but the restart file is at step {restart_step} "
                             f"(a run ending there writes up to step {expected[name]}); cannot continue without a "
                             "gap: rerun without --continue")
    return json.loads((out / "summary.json").read_text()), len(rows) - 1


def continue_state(job: StateJob) -> MDRunSummary:
    """Continue one state's run from its restart.npz to ``simulate.duration_ps`` in total."""
    settings = job.settings
    restart = job.out_dir / "restart.npz"
    if not restart.exists():
        raise FileNotFoundError(f"{restart}: no restart file to continue from (run without --continue first)")
    restart_step = load_restart(restart)["step"]
    previous, n_before = check_continuable(job, restart_step)
    remaining = settings.n_steps() - restart_step
    if remaining <= 0:
        print(f"simulate {job.model} at {job.label}: the run already has {restart_step} steps "
              f"(simulate.duration_ps = {settings.duration_ps} ps asks for {settings.n_steps()}); nothing to do",
              file=sys.stderr)
        return MDRunSummary.from_dict(previous)
    initial, temperature = read_initial_state(job)
    fast, fast_paths = _fast_part(job, continuing=True)
    stepper = make_integrator(settings.integrator, timestep_fs=settings.timestep_fs, temperature_K=temperature,
                              friction_per_ps=settings.friction_per_ps, fast_potential=fast,
                              inner_steps=settings.respa_inner_steps)
    detector = BlowUpDetector(interval_steps=settings.check_interval_steps,
                              max_temperature_factor=settings.max_temperature_factor,
                              max_force_kcal_mol_A=settings.max_force_kcal_mol_A,
                              min_distance_A=settings.min_distance_A)
    sim = _restart_simulation(restart, job.potential, initial, stepper, temperature_K=temperature,
                              skin_A=settings.skin_A, blowup=detector)
    metadata = {**_metadata(job.potential, stepper, temperature, settings.friction_per_ps), **_model_temperature(sim)}
    outputs = _attach_reporters(
        sim, job.out_dir, save_interval_steps=settings.save_interval_steps(),
        thermo_interval_steps=settings.thermo_interval_steps(),
        restart_interval_steps=max(settings.save_interval_steps(), settings.n_steps() // 10 or 1),
        save_velocities=settings.save_velocities, save_forces=True, extxyz=settings.extxyz, initial=initial,
        metadata=metadata, phase_step=0, append=True, keep_frames=False, extra=[],
        progress_steps=remaining if job.progress else None)
    result = _execute(sim, remaining, outputs, initial_report=False, initial=initial, metadata=metadata)
    result.paths.update(fast_paths)
    new_temps = result.thermo["temperature_K"]
    mean_before = previous.get("mean_temperature_K") or 0.0
    n_total = n_before + len(new_temps)
    mean = (mean_before * n_before + float(new_temps.sum())) / n_total if n_total else None
    return finish_state(job, result, temperature, start_step=restart_step, seed=int(previous.get("seed", job.seed)),
                         mean_temperature_K=mean, n_thermo_samples=n_total)


def simulate_exit_status(summaries: list[MDRunSummary]) -> int:
    """The CLI's exit status after ``thermocg simulate``: 1 (and one line per state on stderr) if any
    state blew up, else 0."""
    blown = [s for s in summaries if s.blowup]
    for s in blown:
        print(f"thermocg simulate: {s.model} at {s.state}: {s.blowup}", file=sys.stderr)
    return 1 if blown else 0
