"""The stages a study calls, and the typed results they return.

Each stage is a function ``(config, run_dir, ...) -> result``; :class:`Stages` gathers them,
:func:`default_stages` wires the real thermocg stages, and tests pass small stand-ins. The results
are typed and round-trip through JSON (``to_dict`` / ``from_dict``), so a unit's manifest holds its
result and later units receive it as the same object, without rereading the files the stage wrote:

    unit     stage       result
    aa       allatom     AllAtomResult   (trajectory, AA speed)
    map      map         MapResult       (the CG dataset)
    ref      reference   ReferenceResult (RDF, ADF, D and the noise floor of the mapped AA data)
    model    train       ModelSummary    (thermocg.model_summary: model file, training metrics)
    md       simulate    MDRunSummary    (thermocg.md: trajectory, speed, blow-up)
    eval     evaluate    Evaluation      (force errors, CG structure and its errors)
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from thermocg.config import Config
from thermocg.dataset import H5MDDataset, read_frames
from thermocg.model_summary import ModelSummary
from thermocg.rundir import RunDir
from thermocg.study.metrics import measure_structure, structure_errors
from thermocg.study.per_type import per_type_errors, per_type_noise
from thermocg.progress import Progress, progress_mode
from thermocg.study.plan import (ModelSpec, base_family, family_section, family_settings, import_of, models_trained_at,
                                 state_points)

if TYPE_CHECKING:  # pragma: no cover
    from thermocg.analysis.adf import ADFResult
    from thermocg.analysis.rdf import RDFResult
    from thermocg.md import MDRunSummary

__all__ = ["AllAtomResult", "MapResult", "ReferenceResult", "Evaluation", "Stages", "default_stages",
           "result_type", "reference_observables", "evaluate_model"]


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _float_dict(value: Any) -> dict[str, float] | None:
    """A JSON mapping of numbers (None stays None; a null value reads as NaN)."""
    return None if value is None else {str(k): math.nan if v is None else float(v) for k, v in value.items()}


def _nested_float_dict(value: Any) -> dict[str, dict[str, float]] | None:
    return None if value is None else {str(k): _float_dict(v) or {} for k, v in value.items()}


# --------------------------------------------------------------------------------------------------
# typed results
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AllAtomResult:
    """All-atom data of one state: its H5MD trajectory and the speed of the AA run (ns/day): for
    generated data the runner's measurement, for imported data what the engine's own log says
    (:func:`imported_ns_per_day`). ``speed_note`` says where the speed comes from, or why it is
    missing; for generated data ``platform`` and ``n_threads`` are the OpenMM platform and CPU
    threads the runner used (None for imported data)."""

    state: str
    trajectory: Path
    ns_per_day: float | None = None
    speed_note: str | None = None
    platform: str | None = None
    n_threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "trajectory": str(self.trajectory), "ns_per_day": self.ns_per_day,
                "speed_note": self.speed_note, "platform": self.platform, "n_threads": self.n_threads}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AllAtomResult":
        threads = data.get("n_threads")
        return cls(data["state"], Path(data["trajectory"]), _optional_float(data.get("ns_per_day")),
                   data.get("speed_note"), data.get("platform"), None if threads is None else int(threads))


@dataclass(frozen=True)
class MapResult:
    """The CG dataset (H5MD, mapped positions and forces) of one state."""

    state: str
    dataset: Path

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "dataset": str(self.dataset)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MapResult":
        return cls(data["state"], Path(data["dataset"]))


@dataclass
class ReferenceResult:
    """Observables of the mapped AA data of one state: the reference of every CG run there.

    ``adf_cutoff_A``: the shell of the ADF (the CG runs at this state use the same one);
    ``diffusion_A2_fs``: D from the MSD (None for fewer than 3 frames); ``noise``: the RDF and ADF
    errors of the first half of the data against the second (the noise floor of the errors), None
    for fewer than 4 frames; ``density_g_cm3``: the mean mass density of the frames' boxes (for
    imported data the real one, beside the declared state point). Per bead type
    (:mod:`thermocg.study.per_type`): ``diffusion_per_type_A2_fs``, D of each type, and
    ``noise_per_type``, the noise floor of the RDF error of each type pair (``rdf_pair_errors``) and
    of the ADF error of each centre type (``adf_centre_errors``)."""

    rdf: RDFResult
    adf: ADFResult
    adf_cutoff_A: float
    diffusion_A2_fs: float | None
    noise: dict[str, float] | None
    n_frames: int
    n_beads: int
    density_g_cm3: float | None = None
    diffusion_per_type_A2_fs: dict[str, float] | None = None
    noise_per_type: dict[str, dict[str, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rdf": self.rdf.to_dict(), "adf": self.adf.to_dict(), "adf_cutoff_A": self.adf_cutoff_A,
                "diffusion_A2_fs": self.diffusion_A2_fs, "noise": self.noise, "n_frames": self.n_frames,
                "n_beads": self.n_beads, "density_g_cm3": self.density_g_cm3,
                "diffusion_per_type_A2_fs": self.diffusion_per_type_A2_fs, "noise_per_type": self.noise_per_type}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ReferenceResult":
        from thermocg.analysis.adf import ADFResult
        from thermocg.analysis.rdf import RDFResult

        noise = data.get("noise")
        return cls(rdf=RDFResult.from_dict(data["rdf"]), adf=ADFResult.from_dict(data["adf"]),
                   adf_cutoff_A=float(data["adf_cutoff_A"]), diffusion_A2_fs=_optional_float(data["diffusion_A2_fs"]),
                   noise=None if noise is None else {k: float(v) for k, v in noise.items()},
                   n_frames=int(data["n_frames"]), n_beads=int(data["n_beads"]),
                   density_g_cm3=_optional_float(data.get("density_g_cm3")),
                   diffusion_per_type_A2_fs=_float_dict(data.get("diffusion_per_type_A2_fs")),
                   noise_per_type=_nested_float_dict(data.get("noise_per_type")))


@dataclass
class Evaluation:
    """One model at one state: force errors on held-out mapped AA frames, and the structure and
    mobility of its CG MD run against the reference (:mod:`thermocg.study.metrics` defines the errors).

    ``force``: :class:`thermocg.analysis.forces.ForceErrorAccumulator` report of the frames named by
    ``force_frames`` (``rmse``, ``mae``, ``r2``, ... in kcal/mol/A) with ``rmse_halves``, the RMSE of
    the first and the second half of those frames (their difference is the noise floor of the
    force error); ``parity``: (k, 2) sampled force components, mapped AA and model;
    ``force_frames``: which frames, in words; ``ns_per_day`` and ``blowup`` of the MD run;
    ``friction_per_ps``: the Langevin friction the run used; ``friction_fit_per_ps``: the friction
    at which this model's diffusion would match the AA one
    (:func:`thermocg.analysis.msd.friction_matching_diffusion`; None when either D is unknown). An
    unstable run (``blowup`` set) has no structure: ``rdf``, ``adf``, ``diffusion_A2_fs``, the
    three errors and the friction fit are None.

    Per bead type (:mod:`thermocg.study.per_type`; None for an unstable run): ``rdf_pair_errors``
    (type pair -> RDF error; ``rdf_error`` is their mean), ``adf_centre_errors`` (centre bead type ->
    ADF error of the angles around it), ``diffusion_per_type_A2_fs`` and ``d_ratio_per_type``; the
    force errors per type are in ``force["per_type"]``, with ``force["per_type_rmse_halves"]``."""

    force: dict[str, Any]
    parity: np.ndarray
    ns_per_day: float | None = None
    blowup: str | None = None
    rdf: RDFResult | None = None
    adf: ADFResult | None = None
    diffusion_A2_fs: float | None = None
    rdf_error: float | None = None
    adf_error: float | None = None
    d_ratio: float | None = None
    force_frames: str | None = None
    friction_per_ps: float | None = None
    friction_fit_per_ps: float | None = None
    rdf_pair_errors: dict[str, float] | None = None
    adf_centre_errors: dict[str, float] | None = None
    diffusion_per_type_A2_fs: dict[str, float] | None = None
    d_ratio_per_type: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"force": self.force, "parity": np.asarray(self.parity).tolist(), "ns_per_day": self.ns_per_day,
                "blowup": self.blowup, "rdf": None if self.rdf is None else self.rdf.to_dict(),
                "adf": None if self.adf is None else self.adf.to_dict(), "diffusion_A2_fs": self.diffusion_A2_fs,
                "rdf_error": self.rdf_error, "adf_error": self.adf_error, "d_ratio": self.d_ratio,
                "force_frames": self.force_frames, "friction_per_ps": self.friction_per_ps,
                "friction_fit_per_ps": self.friction_fit_per_ps, "rdf_pair_errors": self.rdf_pair_errors,
                "adf_centre_errors": self.adf_centre_errors, "diffusion_per_type_A2_fs": self.diffusion_per_type_A2_fs,
                "d_ratio_per_type": self.d_ratio_per_type}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Evaluation":
        from thermocg.analysis.adf import ADFResult
        from thermocg.analysis.rdf import RDFResult

        return cls(force=dict(data["force"]), parity=np.asarray(data["parity"], dtype=np.float64).reshape(-1, 2),
                   ns_per_day=_optional_float(data.get("ns_per_day")), blowup=data.get("blowup"),
                   rdf=None if data.get("rdf") is None else RDFResult.from_dict(data["rdf"]),
                   adf=None if data.get("adf") is None else ADFResult.from_dict(data["adf"]),
                   diffusion_A2_fs=_optional_float(data.get("diffusion_A2_fs")),
                   rdf_error=_optional_float(data.get("rdf_error")), adf_error=_optional_float(data.get("adf_error")),
                   d_ratio=_optional_float(data.get("d_ratio")), force_frames=data.get("force_frames"),
                   friction_per_ps=_optional_float(data.get("friction_per_ps")),
                   friction_fit_per_ps=_optional_float(data.get("friction_fit_per_ps")),
                   rdf_pair_errors=_float_dict(data.get("rdf_pair_errors")),
                   adf_centre_errors=_float_dict(data.get("adf_centre_errors")),
                   diffusion_per_type_A2_fs=_float_dict(data.get("diffusion_per_type_A2_fs")),
                   d_ratio_per_type=_float_dict(data.get("d_ratio_per_type")))


def result_type(kind: str) -> type:
    """The class of the result of a unit of kind ``kind`` (see the module docstring)."""
    if kind == "md":
        from thermocg.md import MDRunSummary  # (thermocg.md imports torch: only when an MD result is read)

        return MDRunSummary
    types = {"aa": AllAtomResult, "map": MapResult, "ref": ReferenceResult, "model": ModelSummary, "eval": Evaluation}
    if kind not in types:
        raise ValueError(f"unknown unit kind {kind!r}")
    return types[kind]


# --------------------------------------------------------------------------------------------------
# the stages
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stages:
    """The functions a study calls; each reads/writes the run directory and returns its typed result.

    - ``allatom(config, run_dir, label) -> AllAtomResult``: all-atom data of state ``label`` into
      RUN_DIR/allatom/<label>, generated or imported
    - ``map(config, run_dir, label) -> MapResult``: its CG dataset RUN_DIR/cg/<label>.h5md
    - ``reference(config, run_dir, label) -> ReferenceResult``: see :func:`reference_observables`
    - ``train(config, run_dir, model: ModelSpec) -> ModelSummary``
    - ``simulate(config, run_dir, model, trained: ModelSummary, label) -> MDRunSummary``: CG MD
      (with ``study.langevin_friction: match_diffusion`` also ``reference=ReferenceResult``, the
      target of the friction fit)
    - ``evaluate(config, run_dir, model, trained, label, md: MDRunSummary, reference: ReferenceResult)
      -> Evaluation``: see :func:`evaluate_model`

    All must be picklable (module-level functions) to run on Dask workers.
    """

    allatom: Callable[..., AllAtomResult]
    map: Callable[..., MapResult]
    reference: Callable[..., ReferenceResult]
    train: Callable[..., ModelSummary]
    simulate: Callable[..., "MDRunSummary"]
    evaluate: Callable[..., Evaluation]


def _inner_progress(config: Config) -> bool:
    """Progress of the long stages: only in-process (Dask workers' output would interleave)."""
    return config.study.progress and config.study.max_workers == 1 and config.study.scheduler_address is None


def _bar_progress(config: Config) -> bool:
    """Progress of the stages that still draw their own tqdm bars (generation, mapping, training, MD):
    only where a bar belongs, on a terminal; in a log file their carriage returns would pile up."""
    return _inner_progress(config) and progress_mode() == "bar"


def _progress(config: Config, total: int, description: str, unit: str = "frames") -> Progress:
    """The progress of a stage's inner work (off on Dask workers and when study.progress is false)."""
    return Progress(total, description=description, unit=unit, leave=False,
                    mode="auto" if _inner_progress(config) else "off")


def _only(paths: list[Any], what: str, label: str) -> Path:
    if len(paths) != 1:
        raise RuntimeError(f"the {what} stage made {len(paths)} outputs for state {label}, expected one")
    return Path(paths[0])


# --------------------------------------------------------------------------------------------------
# all-atom data, mapping
# --------------------------------------------------------------------------------------------------

def _performance_ns_per_day(log: Path) -> float | None:
    """The last ns/day a LAMMPS or GROMACS log reports, or None.

    LAMMPS: ``Performance: 12.3 ns/day, 1.95 hours/ns, ...``; GROMACS (md.log): a header line
    holding ``(ns/day)`` followed by ``Performance:  70.1  0.342``."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    found = None
    for k, line in enumerate(lines):
        text = line.strip()
        if not text.startswith("Performance:"):
            continue
        fields = text.split()
        if len(fields) >= 3 and fields[2].rstrip(",") == "ns/day":
            found = float(fields[1])
        elif k > 0 and "(ns/day)" in lines[k - 1] and len(fields) >= 2:
            found = float(fields[1])
    return found


def imported_ns_per_day(path: str | Path, format: str) -> tuple[float | None, str]:
    """The speed (ns/day) of the run that wrote an imported trajectory, from the engine's own
    metadata, and a note saying where it came from or why there is none.

    GROMACS: the ``Performance`` line of ``<name>.log`` or ``md.log`` beside the trajectory; LAMMPS:
    that of ``<name>.log`` or ``log.lammps`` beside the dump; extxyz: the ``ns_per_day`` key of the
    first frame's comment line."""
    path = Path(path)
    if format == "extxyz":
        import ase.io

        try:
            info = ase.io.read(str(path), index=0, format="extxyz").info
        except Exception:  # the import itself reports an unreadable file
            info = {}
        if "ns_per_day" in info:
            return float(info["ns_per_day"]), f"ns_per_day in the first frame of {path.name}"
        return None, f"the first frame of {path.name} has no ns_per_day key"
    names = [f"{path.stem}.log", "md.log"] if format == "gromacs" else [f"{path.stem}.log", "log.lammps"]
    engine = "GROMACS" if format == "gromacs" else "LAMMPS"
    for name in names:
        value = _performance_ns_per_day(path.parent / name)
        if value is not None:
            return value, f"the {engine} log {name} beside the trajectory"
    return None, f"no {engine} log with a Performance line beside {path.name} ({' or '.join(names)})"


def generate_or_import(config: Config, run_dir: Path, label: str) -> AllAtomResult:
    """All-atom data of one state: imported (only that state's trajectory) or generated with OpenMM."""
    found = import_of(config, label)
    if found is not None:
        from thermocg.allatom.readers import run_import

        trajectory = _only(run_import(config, run_dir, state=[label]), "import", label)
        ns_per_day, note = imported_ns_per_day(found[1].path, found[1].format)
    else:
        from thermocg.allatom.runner import run_generate

        generate = dataclasses.replace(config.generate, n_threads=config.study.threads_per_worker)
        trajectory = _only(run_generate(dataclasses.replace(config, generate=generate), run_dir, state=[label],
                                        progress=_bar_progress(config)), "generate", label)
        metadata_file = trajectory.parent / "metadata.json"
        metadata = json.loads(metadata_file.read_text()) if metadata_file.exists() else {}
        ns_per_day = metadata.get("ns_per_day")
        note = "measured by the all-atom runner" if ns_per_day is not None else "the runner's metadata.json has none"
        platform = metadata.get("platform")
        threads = (metadata.get("settings") or {}).get("n_threads") if platform == "CPU" else None
    if not trajectory.exists():
        raise FileNotFoundError(f"{trajectory}: the all-atom stage did not write it")
    if found is not None:
        return AllAtomResult(label, trajectory, _optional_float(ns_per_day), note)
    return AllAtomResult(label, trajectory, _optional_float(ns_per_day), note, platform,
                         None if threads is None else int(threads))


def map_state(config: Config, run_dir: Path, label: str) -> MapResult:
    """The CG dataset of one state (:func:`thermocg.mapping.run_map`)."""
    from thermocg import mapping

    dataset = _only(mapping.run_map(config, run_dir, state=[label], progress=_bar_progress(config)), "map", label)
    if not dataset.exists():
        raise FileNotFoundError(f"{dataset}: the mapping stage did not write it")
    return MapResult(label, dataset)


# --------------------------------------------------------------------------------------------------
# models and their runs
# --------------------------------------------------------------------------------------------------

def hipnn_cutoff_A(config: Config, run_dir: Path) -> float:
    """The HIP-NN-TS cutoff when ``train.cutoff_A`` is None: thermocg.train's automatic rule applied to
    the boxes of the CG datasets of *every* state of the study, so that each model can be run at each
    state (the trainer alone would look only at its training states' boxes)."""
    from thermocg.train import automatic_cutoff_A

    boxes = []
    for label in state_points(config):
        with H5MDDataset(RunDir(run_dir).cg_dataset(label), kind="cg") as ds:
            boxes.append(ds.boxes())
    return automatic_cutoff_A(boxes)


def train_model(config: Config, run_dir: Path, model: ModelSpec) -> ModelSummary:
    """Train one model (HIP-NN-TS or MS-CG, temperature-agnostic or not) on its states, from the family's
    section (:func:`thermocg.study.plan.family_settings`); returns the trainer's ModelSummary."""
    threads = config.study.threads_per_worker
    settings = family_settings(config, model)
    if family_section(model.family) == "train":
        from thermocg.train import run_train

        cutoff_A = settings.cutoff_A if settings.cutoff_A is not None else hipnn_cutoff_A(config, run_dir)
        train = dataclasses.replace(settings, n_threads=threads, name=model.name, cutoff_A=cutoff_A,
                                    train_states=list(model.train_states), progress=_bar_progress(config))
        return run_train(dataclasses.replace(config, train=train), run_dir, name=model.name,
                         train_states=list(model.train_states))
    from thermocg.mscg import run_fit_pair

    pair = dataclasses.replace(settings, n_threads=threads, name=model.name, progress=_bar_progress(config))
    return run_fit_pair(dataclasses.replace(config, pair=pair), run_dir, name=model.name,
                        train_states=list(model.train_states))


#: added to the study seed for the pilot run of the diffusion-matching friction (its own noise)
_PILOT_SEED_OFFSET = 15485863


def _run_temperature_K(config: Config, frames: Any) -> float:
    if config.simulate.temperature_K is not None:
        return float(config.simulate.temperature_K)
    if frames.state is None:
        raise ValueError("the CG dataset stores no state temperature; set simulate.temperature_K")
    return float(frames.state.temperature_K)


def diffusion_matching_friction(config: Config, run_dir: Path, trained: ModelSummary, label: str,
                                reference: ReferenceResult) -> tuple[float, str]:
    """The Langevin friction (1/ps) for the runs of one model at one state that makes its diffusion
    match the AA one, and how it was found.

    A pilot run (``study.friction_pilot_ps``, default half of ``simulate.duration_ps``) from the last
    mapped AA frame at ``simulate.friction_per_ps`` measures D_CG (after ``analysis.discard_fraction``
    of its frames), and :func:`thermocg.analysis.msd.friction_matching_diffusion` gives the friction
    for D_AA. Falls back to ``simulate.friction_per_ps`` when D_AA or D_CG cannot be measured (a
    pilot that blew up, too few frames), and to a twentieth of it when no positive friction slows
    the model down enough."""
    from thermocg.analysis.msd import MSD, friction_matching_diffusion
    from thermocg.md import simulate
    from thermocg.potentials.base import load_potential

    settings = config.simulate
    gamma0 = float(settings.friction_per_ps)
    if reference.diffusion_A2_fs is None or reference.diffusion_A2_fs <= 0:
        return gamma0, "no AA diffusion coefficient (too few AA frames): simulate.friction_per_ps kept"
    with H5MDDataset(RunDir(run_dir).cg_dataset(label), kind="cg") as ds:
        initial = ds.read(len(ds) - 1)
    temperature = _run_temperature_K(config, initial)
    pilot_ps = config.study.friction_pilot_ps or settings.duration_ps / 2.0
    n_steps = max(1, int(round(pilot_ps * 1000.0 / settings.timestep_fs)))
    potential = load_potential(trained.model_path, device=settings.resolved_device())
    run = simulate(potential, initial, temperature_K=temperature, timestep_fs=settings.timestep_fs, n_steps=n_steps,
                   seed=int(config.seed) + _PILOT_SEED_OFFSET, save_interval_steps=settings.save_interval_steps(),
                   friction_per_ps=gamma0, integrator="langevin", out_dir=None, keep_frames=True,
                   save_velocities=False, skin_A=settings.skin_A, check_interval_steps=settings.check_interval_steps,
                   max_temperature_factor=settings.max_temperature_factor,
                   max_force_kcal_mol_A=settings.max_force_kcal_mol_A, min_distance_A=settings.min_distance_A,
                   raise_on_blowup=False, progress=_bar_progress(config))
    frames = run.frames
    start = int(0 if frames is None else frames.n_frames * config.analysis.discard_fraction)
    if run.blowup or frames is None or frames.n_frames - start < 3:
        return gamma0, f"the {pilot_ps:g} ps pilot run could not measure D ({run.blowup or 'too few frames'}): " \
                       "simulate.friction_per_ps kept"
    msd = MSD(frames, fit_start_fraction=config.analysis.msd_fit_start_fraction,
              fit_end_fraction=config.analysis.msd_fit_end_fraction).run(start).results
    d_cg = float(msd.diffusion_A2_fs["all"])
    if not d_cg > 0:
        return gamma0, f"the pilot run's D is not positive ({d_cg:.3g} A^2/fs): simulate.friction_per_ps kept"
    gamma = friction_matching_diffusion(d_cg, reference.diffusion_A2_fs, friction_per_ps=gamma0,
                                        temperature_K=temperature, mass_amu=float(np.mean(initial.masses)))
    note = (f"pilot {pilot_ps:g} ps at {gamma0:g}/ps: D_CG/D_AA {d_cg / reference.diffusion_A2_fs:.3g}, "
            f"fitted friction {gamma:.4g}/ps")
    if gamma < gamma0 / 20.0:
        return gamma0 / 20.0, note + f" (below {gamma0 / 20.0:g}/ps, a twentieth of simulate.friction_per_ps: used that)"
    return gamma, note


def simulate_model(config: Config, run_dir: Path, model: ModelSpec, trained: ModelSummary, label: str, *,
                   reference: ReferenceResult | None = None) -> "MDRunSummary":
    """NVT CG MD of one model at one state; returns the MD stage's MDRunSummary.

    With ``study.langevin_friction: match_diffusion`` the run's Langevin friction is the one that
    matches the AA diffusion (:func:`diffusion_matching_friction`, needs ``reference``), passed to the
    MD stage as this run's ``simulate.friction_per_ps``."""
    from thermocg.md import run_simulate

    if config.study.langevin_friction == "match_diffusion":
        if reference is None:
            raise ValueError(f"simulate {model.name} at {label}: matching the AA diffusion needs the reference")
        friction, _ = diffusion_matching_friction(config, run_dir, trained, label, reference)
        config = dataclasses.replace(config, simulate=dataclasses.replace(config.simulate, friction_per_ps=friction))
    runs = run_simulate(config, run_dir, model=str(trained.model_path), state=[label],
                        progress=_bar_progress(config))
    if len(runs) != 1:
        raise RuntimeError(f"the MD stage made {len(runs)} runs of {model.name} at {label}, expected one")
    return runs[0]


# --------------------------------------------------------------------------------------------------
# reference observables and evaluations
# --------------------------------------------------------------------------------------------------

def reference_observables(config: Config, run_dir: Path, label: str) -> ReferenceResult:
    """RDF, ADF, diffusion coefficient and mean density of the mapped AA data of state ``label``.

    All frames are used (the AA run was equilibrated before production); the ADF shell is the
    first minimum of this RDF unless ``analysis.adf_cutoff_A`` is set, and the CG runs at this state
    use the same shell. The noise floor of the errors: the same data, second half against first."""
    from thermocg.analysis.density import Density

    frames = read_frames(RunDir(run_dir).cg_dataset(label), kind="cg")
    half = frames.n_frames // 2
    passes = 3 if frames.n_frames >= 3 else 2  # RDF, ADF (and MSD) over the whole, then over each half
    total = passes * frames.n_frames * (2 if half >= 2 else 1)
    with _progress(config, total, f"ref {label}") as progress:
        whole = measure_structure(frames, config.rdf, config.analysis, adf_cutoff_A=config.analysis.adf_cutoff_A,
                                  progress=progress)
        noise, noise_per_type = None, None
        if half >= 2:
            first = measure_structure(frames, config.rdf, config.analysis, adf_cutoff_A=whole.adf_cutoff_A, stop=half,
                                      progress=progress)
            second = measure_structure(frames, config.rdf, config.analysis, adf_cutoff_A=whole.adf_cutoff_A,
                                       start=half, progress=progress)
            errors = structure_errors(second, first)
            noise = {"rdf_error": errors["rdf_error"], "adf_error": errors["adf_error"]}
            noise_per_type = per_type_noise(second, first)
    density = Density(frames).run().results.mean_density_g_cm3
    return ReferenceResult(rdf=whole.rdf, adf=whole.adf, adf_cutoff_A=whole.adf_cutoff_A,
                           diffusion_A2_fs=whole.diffusion_A2_fs, noise=noise, n_frames=frames.n_frames,
                           n_beads=frames.n_particles, density_g_cm3=float(density),
                           diffusion_per_type_A2_fs=whole.diffusion_per_type_A2_fs, noise_per_type=noise_per_type)


def mscg_fit_frames(n_frames: int, pair: Any) -> np.ndarray:
    """The frames MS-CG fits on out of ``n_frames``: every ``pair.frame_stride``-th, at most
    ``pair.max_frames``, without the last ``pair.test_fraction`` of them (thermocg.mscg's selection;
    a test checks that the two agree)."""
    index = np.arange(0, n_frames, pair.frame_stride)
    if pair.max_frames is not None:
        index = index[: pair.max_frames]
    n_test = int(round(pair.test_fraction * len(index)))
    return index[: len(index) - n_test]


def held_out_frames(config: Config, label: str, n_frames: int) -> tuple[np.ndarray, str]:
    """The frames of state ``label``'s CG dataset that no model of the study trained on, and a
    sentence saying which they are.

    A frame counts as used by a model trained at the state when the trainer fitted or validated on
    it, or on the frame its stride picked just before it (frames in between, a few fs from training
    frames, are not independent of them): for HIP-NN-TS the training and validation segments of
    ``train.split`` over every ``train.frame_stride``-th frame, for MS-CG the frames before its
    held-out ``pair.test_fraction``. What remains are the trainers' test segments (the last frames of
    each block). With no model trained at the state every frame is held out; when nothing remains,
    every frame is used and the sentence says so."""
    from thermocg.train.data import split_indices

    used = np.zeros(n_frames, dtype=bool)
    families = {base_family(m.family) for m in models_trained_at(config, label)}
    if "hipnn_ts" in families:
        stride = config.train.frame_stride
        train, val, _ = split_indices(len(range(0, n_frames, stride)), config.train.split,
                                      n_blocks=config.train.n_blocks, where=f"state {label}")
        fitted = np.concatenate([train, val])
        used |= np.isin(np.arange(n_frames) // stride, fitted)
    if "mscg" in families:
        fit = mscg_fit_frames(n_frames, config.pair)
        stride = config.pair.frame_stride
        used |= np.isin(np.arange(n_frames) // stride, fit // stride)
    free = np.flatnonzero(~used)
    if not families:
        return np.arange(n_frames), f"all {n_frames} frames (no model of the study trained at this state)"
    if len(free) == 0:
        return np.arange(n_frames), (f"all {n_frames} frames, training frames included (the trainers hold "
                                     f"none of this state's frames out)")
    return free, (f"the {len(free)} of {n_frames} frames that no model trained on "
                  f"({_frame_ranges(free)}: the trainers' held-out frames)")


def _frame_ranges(indices: np.ndarray) -> str:
    """"frames 216-239" / "frames 20-23, 44-47" for sorted indices."""
    breaks = np.flatnonzero(np.diff(indices) != 1)
    starts = np.concatenate([[indices[0]], indices[breaks + 1]])
    ends = np.concatenate([indices[breaks], [indices[-1]]])
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in zip(starts, ends)]
    shown = ", ".join(parts[:4]) + (f" and {len(parts) - 4} more ranges" if len(parts) > 4 else "")
    return f"frame{'s' if len(indices) > 1 else ''} {shown}"


def force_eval_frames(config: Config, label: str, n_frames: int) -> tuple[np.ndarray, str]:
    """The frames of state ``label`` the force errors use: at most ``study.force_eval_frames``, evenly
    spaced, of its held-out frames (:func:`held_out_frames`), and the sentence naming them."""
    candidates, which = held_out_frames(config, label, n_frames)
    limit = config.study.force_eval_frames
    n_eval = len(candidates) if limit is None else min(len(candidates), limit)
    idx = candidates[np.unique(np.linspace(0, len(candidates) - 1, n_eval).round().astype(int))]
    if len(idx) < len(candidates):
        which += f"; {len(idx)} of them, evenly spaced"
    return idx, which


def _force_evaluation(config: Config, run_dir: Path, model_path: Path, label: str,
                      progress: Progress) -> tuple[dict[str, Any], np.ndarray, str]:
    """Force errors of the model on the frames :func:`force_eval_frames` picks, the RMSE of each half of
    them (``rmse_halves``), (k, 2) parity samples (mapped AA, model), and the sentence naming the frames."""
    from thermocg.analysis.forces import ForceErrorAccumulator, force_errors
    from thermocg.potentials.base import load_potential

    study = config.study
    aa_path = RunDir(run_dir).cg_dataset(label)
    potential = load_potential(model_path)
    with H5MDDataset(aa_path, kind="cg") as ds:
        if potential.temperature_dependent:  # judged at the temperature of the mapped AA frames
            if ds.state is None or ds.state.temperature_K is None:
                raise ValueError(f"{aa_path}: the CG dataset stores no state temperature, which the "
                                 f"temperature-dependent model {model_path} needs")
            potential.set_temperature(float(ds.state.temperature_K))
        idx, which = force_eval_frames(config, label, len(ds))
        accumulator = ForceErrorAccumulator(ds.type_names)
        chunk = max(1, 4 * config.analysis.force_batch_frames)
        pieces = [(h, part) for h, half in enumerate(np.array_split(idx, 2)) if len(half)
                  for part in np.array_split(half, -(-len(half) // chunk))]
        per_piece = -(-study.parity_samples // len(pieces)) if study.parity_samples else 0
        parity = []
        for k, (h, part) in enumerate(pieces):
            out = force_errors(potential, ds, frame_indices=part, parity_samples=per_piece,
                               batch_frames=config.analysis.force_batch_frames, seed=config.seed + k,
                               accumulator=accumulator, state=f"half{h}")
            if "parity" in out:
                parity.append(np.stack([np.asarray(out["parity"]["reference"]),
                                        np.asarray(out["parity"]["predicted"])], 1))
            progress.update(len(part))
    force = accumulator.report()
    halves = [accumulator.metrics(state=f"half{h}").rmse for h in (0, 1)]
    force["rmse_halves"] = halves if accumulator.n_frames("half1") else None
    force["per_type_rmse_halves"] = ({name: [accumulator.metrics(state=f"half{h}", bead_type=name).rmse for h in (0, 1)]
                                      for name in force["per_type"]} if accumulator.n_frames("half1") else None)
    samples = np.concatenate(parity)[:study.parity_samples] if parity else np.zeros((0, 2))
    return force, samples, which


def _run_friction_per_ps(config: Config, trajectory_metadata: dict[str, Any]) -> float | None:
    """The Langevin friction a CG run used (its trajectory's metadata), None for NVE."""
    if trajectory_metadata.get("integrator", config.simulate.integrator) != "langevin":
        return None
    return _optional_float(trajectory_metadata.get("friction_per_ps", config.simulate.friction_per_ps))


def evaluate_model(config: Config, run_dir: Path, model: ModelSpec, trained: ModelSummary, label: str,
                   md: "MDRunSummary", reference: ReferenceResult) -> Evaluation:
    """Errors of one model at one state: forces on held-out mapped AA frames, structure and mobility
    of its CG MD (after ``analysis.discard_fraction`` of its frames) against the mapped AA reference,
    and the Langevin friction that would match the AA diffusion."""
    from thermocg.analysis.msd import friction_matching_diffusion

    with H5MDDataset(RunDir(run_dir).cg_dataset(label), kind="cg") as ds:
        n_force = len(force_eval_frames(config, label, len(ds))[0])
    frames = None if md.blowup else read_frames(md.trajectory, kind="cg")
    start = 0 if frames is None else int(frames.n_frames * config.analysis.discard_fraction)
    n_md = 0 if frames is None else (frames.n_frames - start) * (3 if frames.n_frames - start >= 3 else 2)
    with _progress(config, n_force + n_md, f"eval {model.name} at {label}") as progress:
        force, parity, which = _force_evaluation(config, run_dir, Path(trained.model_path), label, progress)
        out = Evaluation(force=force, parity=parity, ns_per_day=md.ns_per_day, blowup=md.blowup, force_frames=which)
        if frames is None:  # an unstable model: no structure to compare (the matrices show n/a)
            return out
        structure = measure_structure(frames, config.rdf, config.analysis, adf_cutoff_A=reference.adf_cutoff_A,
                                      start=start, progress=progress)
    friction = _run_friction_per_ps(config, frames.metadata)
    fit = None
    d_cg, d_aa = structure.diffusion_A2_fs, reference.diffusion_A2_fs
    if friction is not None and d_cg is not None and d_aa is not None and d_cg > 0 and d_aa > 0:
        temperature = md.temperature_K or _run_temperature_K(config, frames)
        fit = friction_matching_diffusion(d_cg, d_aa, friction_per_ps=friction, temperature_K=temperature,
                                          mass_amu=float(np.mean(frames.masses)))
    return dataclasses.replace(out, rdf=structure.rdf, adf=structure.adf, diffusion_A2_fs=structure.diffusion_A2_fs,
                               friction_per_ps=friction, friction_fit_per_ps=fit,
                               diffusion_per_type_A2_fs=structure.diffusion_per_type_A2_fs,
                               **structure_errors(structure, reference), **per_type_errors(structure, reference))


def default_stages() -> Stages:
    """The real thermocg stages."""
    return Stages(allatom=generate_or_import, map=map_state, reference=reference_observables, train=train_model,
                  simulate=simulate_model, evaluate=evaluate_model)
