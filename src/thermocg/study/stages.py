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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from thermocg.config import Config
from thermocg.dataset import H5MDDataset, read_frames
from thermocg.model_summary import ModelSummary
from thermocg.rundir import RunDir
from thermocg.study.metrics import measure_structure, structure_errors
from thermocg.study.plan import ModelSpec, imported_labels, state_points

if TYPE_CHECKING:  # pragma: no cover
    from thermocg.analysis.adf import ADFResult
    from thermocg.analysis.rdf import RDFResult
    from thermocg.md import MDRunSummary

__all__ = ["AllAtomResult", "MapResult", "ReferenceResult", "Evaluation", "Stages", "default_stages",
           "result_type", "reference_observables", "evaluate_model"]


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


# --------------------------------------------------------------------------------------------------
# typed results
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AllAtomResult:
    """All-atom data of one state: its H5MD trajectory and, for generated data, the speed of the AA
    run (ns/day, from the runner's metadata.json; None for imported data)."""

    state: str
    trajectory: Path
    ns_per_day: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "trajectory": str(self.trajectory), "ns_per_day": self.ns_per_day}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AllAtomResult":
        return cls(data["state"], Path(data["trajectory"]), _optional_float(data.get("ns_per_day")))


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
    for fewer than 4 frames."""

    rdf: RDFResult
    adf: ADFResult
    adf_cutoff_A: float
    diffusion_A2_fs: float | None
    noise: dict[str, float] | None
    n_frames: int
    n_beads: int

    def to_dict(self) -> dict[str, Any]:
        return {"rdf": self.rdf.to_dict(), "adf": self.adf.to_dict(), "adf_cutoff_A": self.adf_cutoff_A,
                "diffusion_A2_fs": self.diffusion_A2_fs, "noise": self.noise, "n_frames": self.n_frames,
                "n_beads": self.n_beads}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ReferenceResult":
        from thermocg.analysis.adf import ADFResult
        from thermocg.analysis.rdf import RDFResult

        noise = data.get("noise")
        return cls(rdf=RDFResult.from_dict(data["rdf"]), adf=ADFResult.from_dict(data["adf"]),
                   adf_cutoff_A=float(data["adf_cutoff_A"]), diffusion_A2_fs=_optional_float(data["diffusion_A2_fs"]),
                   noise=None if noise is None else {k: float(v) for k, v in noise.items()},
                   n_frames=int(data["n_frames"]), n_beads=int(data["n_beads"]))


@dataclass
class Evaluation:
    """One model at one state: force errors on the mapped AA frames, and the structure of its CG MD
    run against the reference (:mod:`thermocg.study.metrics` defines the errors).

    ``force``: :func:`thermocg.analysis.forces.force_errors` without its parity samples (``rmse``,
    ``mae``, ``r2``, ... in kcal/mol/A); ``parity``: (k, 2) sampled force components, mapped AA and
    model; ``ns_per_day`` and ``blowup`` of the MD run. An unstable run (``blowup`` set) has no
    structure: ``rdf``, ``adf``, ``diffusion_A2_fs`` and the three errors are None."""

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

    def to_dict(self) -> dict[str, Any]:
        return {"force": self.force, "parity": np.asarray(self.parity).tolist(), "ns_per_day": self.ns_per_day,
                "blowup": self.blowup, "rdf": None if self.rdf is None else self.rdf.to_dict(),
                "adf": None if self.adf is None else self.adf.to_dict(), "diffusion_A2_fs": self.diffusion_A2_fs,
                "rdf_error": self.rdf_error, "adf_error": self.adf_error, "d_ratio": self.d_ratio}

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
                   d_ratio=_optional_float(data.get("d_ratio")))


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
    """Progress bars of the long stages: only in-process (Dask workers' bars would interleave)."""
    return config.study.progress and config.study.max_workers == 1 and config.study.scheduler_address is None


def _only(paths: list[Any], what: str, label: str) -> Path:
    if len(paths) != 1:
        raise RuntimeError(f"the {what} stage made {len(paths)} outputs for state {label}, expected one")
    return Path(paths[0])


def generate_or_import(config: Config, run_dir: Path, label: str) -> AllAtomResult:
    """All-atom data of one state: imported (only that state's trajectory) or generated with OpenMM."""
    if label in imported_labels(config):
        from thermocg.allatom.readers import run_import

        trajectory = _only(run_import(config, run_dir, state=[label]), "import", label)
    else:
        from thermocg.allatom.runner import run_generate

        generate = dataclasses.replace(config.generate, n_threads=config.study.threads_per_worker)
        trajectory = _only(run_generate(dataclasses.replace(config, generate=generate), run_dir, state=[label],
                                        progress=_inner_progress(config)), "generate", label)
    if not trajectory.exists():
        raise FileNotFoundError(f"{trajectory}: the all-atom stage did not write it")
    metadata = trajectory.parent / "metadata.json"
    ns_per_day = json.loads(metadata.read_text()).get("ns_per_day") if metadata.exists() else None
    return AllAtomResult(label, trajectory, _optional_float(ns_per_day))


def map_state(config: Config, run_dir: Path, label: str) -> MapResult:
    """The CG dataset of one state (:func:`thermocg.mapping.run_map`)."""
    from thermocg import mapping

    dataset = _only(mapping.run_map(config, run_dir, state=[label], progress=_inner_progress(config)), "map", label)
    if not dataset.exists():
        raise FileNotFoundError(f"{dataset}: the mapping stage did not write it")
    return MapResult(label, dataset)


def hipnn_cutoff_A(config: Config, run_dir: Path) -> float:
    """The HIP-NN-TS cutoff when ``train.cutoff_A`` is None: thermocg.train's automatic rule applied to
    the boxes of the CG datasets of *every* state of the study, so that each model can be run at each
    state (the trainer alone would look only at its training states' boxes)."""
    from thermocg.train import automatic_cutoff_A

    boxes = []
    for label in state_points(config):
        with H5MDDataset(RunDir(run_dir).cg_dataset(label)) as ds:
            boxes.append(ds.boxes())
    return automatic_cutoff_A(boxes)


def train_model(config: Config, run_dir: Path, model: ModelSpec) -> ModelSummary:
    """Train one model (HIP-NN-TS or MS-CG) on its states; returns the trainer's ModelSummary."""
    threads = config.study.threads_per_worker
    if model.family == "hipnn_ts":
        from thermocg.train import run_train

        cutoff_A = config.train.cutoff_A if config.train.cutoff_A is not None else hipnn_cutoff_A(config, run_dir)
        train = dataclasses.replace(config.train, n_threads=threads, name=model.name, cutoff_A=cutoff_A,
                                    train_states=list(model.train_states), progress=_inner_progress(config))
        return run_train(dataclasses.replace(config, train=train), run_dir, name=model.name,
                         train_states=list(model.train_states))
    from thermocg.mscg import run_fit_pair

    pair = dataclasses.replace(config.pair, n_threads=threads, name=model.name, progress=_inner_progress(config))
    return run_fit_pair(dataclasses.replace(config, pair=pair), run_dir, name=model.name,
                        train_states=list(model.train_states))


def simulate_model(config: Config, run_dir: Path, model: ModelSpec, trained: ModelSummary,
                   label: str) -> "MDRunSummary":
    """NVT CG MD of one model at one state; returns the MD stage's MDRunSummary."""
    from thermocg.md import run_simulate

    runs = run_simulate(config, run_dir, model=str(trained.model_path), state=[label],
                        progress=_inner_progress(config))
    if len(runs) != 1:
        raise RuntimeError(f"the MD stage made {len(runs)} runs of {model.name} at {label}, expected one")
    return runs[0]


def reference_observables(config: Config, run_dir: Path, label: str) -> ReferenceResult:
    """RDF, ADF and diffusion coefficient of the mapped AA data of state ``label``.

    All frames are used (the AA run was equilibrated before production); the ADF shell is the
    first minimum of this RDF unless ``analysis.adf_cutoff_A`` is set, and the CG runs at this state
    use the same shell. The noise floor of the errors: the same data, second half against first."""
    frames = read_frames(RunDir(run_dir).cg_dataset(label))
    whole = measure_structure(frames, config.rdf, config.analysis, adf_cutoff_A=config.analysis.adf_cutoff_A)
    noise = None
    half = frames.n_frames // 2
    if half >= 2:
        first = measure_structure(frames, config.rdf, config.analysis, adf_cutoff_A=whole.adf_cutoff_A, stop=half)
        second = measure_structure(frames, config.rdf, config.analysis, adf_cutoff_A=whole.adf_cutoff_A, start=half)
        errors = structure_errors(second, first)
        noise = {"rdf_error": errors["rdf_error"], "adf_error": errors["adf_error"]}
    return ReferenceResult(rdf=whole.rdf, adf=whole.adf, adf_cutoff_A=whole.adf_cutoff_A,
                           diffusion_A2_fs=whole.diffusion_A2_fs, noise=noise, n_frames=frames.n_frames,
                           n_beads=frames.n_particles)


def _force_evaluation(config: Config, run_dir: Path, model_path: Path, label: str) -> tuple[dict[str, Any], np.ndarray]:
    """Force errors of the model on ``study.force_eval_frames`` evenly spaced mapped AA frames, and
    (k, 2) parity samples (mapped AA, model)."""
    from thermocg.analysis.forces import force_errors
    from thermocg.potentials.base import load_potential

    study = config.study
    aa_path = RunDir(run_dir).cg_dataset(label)
    with H5MDDataset(aa_path) as ds:
        n_total = len(ds)
    n_eval = n_total if study.force_eval_frames is None else min(n_total, study.force_eval_frames)
    idx = np.unique(np.linspace(0, n_total - 1, n_eval).round().astype(int))
    force = force_errors(load_potential(model_path), aa_path, frame_indices=idx, parity_samples=study.parity_samples,
                         batch_frames=config.analysis.force_batch_frames, seed=config.seed)
    parity = force.pop("parity", None)
    if parity is None:
        return force, np.zeros((0, 2))
    return force, np.stack([np.asarray(parity["reference"]), np.asarray(parity["predicted"])], 1)


def evaluate_model(config: Config, run_dir: Path, model: ModelSpec, trained: ModelSummary, label: str,
                   md: "MDRunSummary", reference: ReferenceResult) -> Evaluation:
    """Errors of one model at one state: forces on the mapped AA frames, structure and mobility of
    its CG MD (after ``analysis.discard_fraction`` of its frames) against the mapped AA reference."""
    force, parity = _force_evaluation(config, run_dir, Path(trained.model_path), label)
    out = Evaluation(force=force, parity=parity, ns_per_day=md.ns_per_day, blowup=md.blowup)
    if md.blowup:  # an unstable model: no structure to compare (the matrices show n/a)
        return out
    frames = read_frames(md.trajectory)
    structure = measure_structure(frames, config.rdf, config.analysis, adf_cutoff_A=reference.adf_cutoff_A,
                                  start=int(frames.n_frames * config.analysis.discard_fraction))
    return dataclasses.replace(out, rdf=structure.rdf, adf=structure.adf, diffusion_A2_fs=structure.diffusion_A2_fs,
                               **structure_errors(structure, reference))


def default_stages() -> Stages:
    """The real thermocg stages."""
    return Stages(allatom=generate_or_import, map=map_state, reference=reference_observables, train=train_model,
                  simulate=simulate_model, evaluate=evaluate_model)
