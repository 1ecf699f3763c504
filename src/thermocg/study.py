"""The transferability study: every CG model at every state point, against the all-atom truth.

``thermocg study CONFIG.yaml`` runs, for the config's state points::

    aa/<state>            all-atom data (generated with OpenMM, or imported)
    map/<state>           atoms -> beads (RUN_DIR/cg/<state>.h5md)
    ref/<state>           observables of the mapped AA data: RDF, ADF, diffusion coefficient
    model/<name>          a potential trained on one state or a pooled set (HIP-NN-TS or MS-CG)
    md/<name>/<state>     NVT CG MD of that model at that state's AA temperature and density
    eval/<name>/<state>   force error on the mapped AA frames, RDF/ADF error and D ratio vs ref
    report                transferability matrices, figures, index.html and summary.md

Each of these is a *unit of work*. Its **key** is the sha256 of the config sections it reads and
of the keys of the units it depends on, so a change anywhere upstream reaches every unit
downstream and nothing else. When a unit finishes, a manifest ``RUN_DIR/study/units/<unit>.json``
(key, result, wall time) is written atomically *after* its outputs; a rerun skips every unit whose
manifest holds the current key. A study killed at any point therefore resumes losing at most the
units in flight (their outputs are removed and rebuilt).

Independent units run in parallel through Dask's distributed scheduler (``study.max_workers``
worker processes, ``study.threads_per_worker`` threads each; ``study.scheduler_address`` attaches
to a running scheduler, e.g. one that dask-jobqueue started on an HPC cluster). With
``max_workers: 1`` everything runs in this process, in dependency order, without a cluster.

The stage functions are gathered in :class:`Stages`; :func:`default_stages` wires the real
thermocg stages, and tests pass small stand-ins.

Error metrics (written to the matrices, defined once here):

- force error: RMSE of the force components (kcal/mol/A) of the model on the mapped AA frames;
- RDF error: mean over bead-type pairs of the mean over r in (0, r_max] of |g_CG(r) - g_AA(r)|;
- ADF error: integral over theta of |p_CG(theta) - p_AA(theta)| (p normalised to 1; 0 = identical,
  2 = disjoint), angles between neighbours within the first RDF shell;
- D ratio: D_CG / D_AA from the mean-square displacement (1 = same mobility; CG models with
  Langevin friction are usually faster, a known artefact of coarse-graining).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from thermocg.config import Config, ConfigError, StateConfig, result_dict, to_dict
from thermocg.rundir import RunDir, atomic_write_text

#: bump when the meaning of a unit's outputs changes, so old manifests are not trusted
STUDY_FORMAT_VERSION = 1
METRICS = ("force_rmse", "rdf_error", "adf_error", "d_ratio")
METRIC_LABELS = {
    "force_rmse": "force RMSE on mapped AA frames (kcal/mol/A)",
    "rdf_error": "RDF error: mean |g_CG - g_AA|",
    "adf_error": "ADF error: integral |p_CG - p_AA|",
    "d_ratio": "D_CG / D_AA",
}
FAMILY_LABELS = {"hipnn_ts": "HIP-NN-TS", "mscg": "MS-CG"}

#: molar masses (amu) of the built-in molecules, for estimating boxes before anything runs
_MOLAR_MASS = {"methanol_trappe": 32.042, "methanol_opls": 32.042, "water_spce": 18.015}


class StudyError(ValueError):
    """Some units of work failed; the message lists them and their errors (a ValueError, so the CLI
    prints it as an error message)."""


# --------------------------------------------------------------------------------------------------
# the plan: models and units of work
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    """One CG model of the study: a family trained on a set of state points."""

    family: str  # "hipnn_ts" or "mscg"
    train_set: str  # a state label (single-state model) or a pooled-set name
    train_states: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.family}-{self.train_set}"

    @property
    def pooled(self) -> bool:
        return len(self.train_states) > 1 or not self.train_set.startswith("T")


@dataclass(frozen=True)
class Unit:
    """A unit of work: what it is, what it needs, and the key of its inputs."""

    name: str  # e.g. "md/hipnn_ts-T300_rho0.75/T350_rho0.75"
    kind: str  # aa, map, ref, model, md, eval
    key: str
    deps: tuple[str, ...]
    state: str | None = None
    model: ModelSpec | None = None

    @property
    def file_stem(self) -> str:
        return self.name.replace("/", "__")


def _hash(*parts: Any) -> str:
    text = json.dumps([to_dict(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def state_points(config: Config) -> dict[str, StateConfig]:
    """label -> state point, for every generated and imported state point of the config."""
    out: dict[str, StateConfig] = {}
    for s in config.state_points():
        out[s.to_state().label] = s
    for imp in config.imports:
        if imp.state is not None:
            out.setdefault(imp.state.to_state().label, imp.state)
    return out


def plan_models(config: Config) -> list[ModelSpec]:
    """Every model of the study, single-state models first (in state order), then pooled sets."""
    labels = list(state_points(config))
    study = config.study
    singles = labels if study.single_states is None else list(study.single_states)
    models = []
    for family in study.families:
        for label in singles:
            models.append(ModelSpec(family, label, (label,)))
        for name, members in study.pooled.items():
            models.append(ModelSpec(family, name, tuple(members) if members else tuple(labels)))
    return models


def plan_units(config: Config) -> list[Unit]:
    """Every unit of work in dependency order, each with the key of its inputs."""
    states = state_points(config)
    imported = {imp.state.to_state().label: imp for imp in config.imports if imp.state is not None}
    units: list[Unit] = []
    keys: dict[str, str] = {}

    def add(name: str, kind: str, deps: tuple[str, ...], inputs: Any, **kw: Any) -> None:
        key = _hash(STUDY_FORMAT_VERSION, kind, inputs, [keys[d] for d in deps])
        keys[name] = key
        units.append(Unit(name, kind, key, deps, **kw))

    for label, state in states.items():
        if label in imported:
            imp = imported[label]
            stat = Path(imp.path).stat() if Path(imp.path).exists() else None
            inputs = {"import": imp, "size": stat.st_size if stat else None, "mtime": stat.st_mtime if stat else None}
        else:
            inputs = {"system": config.system, "generate": result_dict(config.generate),
                      "state": state, "seed": config.seed}
        add(f"aa/{label}", "aa", (), inputs, state=label)
        add(f"map/{label}", "map", (f"aa/{label}",), {"mapping": config.mapping}, state=label)
        add(f"ref/{label}", "ref", (f"map/{label}",),
            {"rdf": config.rdf, "analysis": result_dict(config.analysis),
             "noise_floor": "halves"}, state=label)
    for model in plan_models(config):
        section = "train" if model.family == "hipnn_ts" else "pair"
        # (the training states enter through train_states below)
        inputs = {"family": model.family, section: result_dict(getattr(config, section), drop=("train_states",)),
                  "train_states": model.train_states, "seed": config.seed}
        deps = tuple(f"map/{s}" for s in model.train_states)
        if model.family == "hipnn_ts" and config.train.cutoff_A is None:
            # the automatic cutoff must fit the smallest box of every state the model will be run at
            deps = tuple(f"map/{s}" for s in states)
        add(f"model/{model.name}", "model", deps, inputs, model=model)
        for label in states:
            add(f"md/{model.name}/{label}", "md", (f"model/{model.name}", f"map/{label}"),
                {"simulate": result_dict(config.simulate),
                 "seed": config.seed}, state=label, model=model)
            add(f"eval/{model.name}/{label}", "eval", (f"md/{model.name}/{label}", f"ref/{label}"),
                {"study": {k: getattr(config.study, k) for k in ("force_eval_frames", "parity_samples")},
                 "rdf": config.rdf, "analysis": result_dict(config.analysis)}, state=label, model=model)
    return units


# --------------------------------------------------------------------------------------------------
# validation before any work
# --------------------------------------------------------------------------------------------------

def _molecule(name: str) -> Any:
    try:
        from thermocg.allatom.molecules import get_molecule

        return get_molecule(name)
    except Exception:  # unknown name or library not importable: the estimate falls back to a table
        return None


def _molar_mass(name: str) -> float | None:
    mol = _molecule(name)
    if mol is not None and getattr(mol, "sites", None):
        return float(sum(site.mass_amu for site in mol.sites))
    return _MOLAR_MASS.get(Path(name).stem)


def estimated_box_length_A(config: Config, state: StateConfig) -> float | None:
    """Edge of the cubic all-atom box (A) of a state point: (N M / (N_A rho))^(1/3).

    Pressure state points use the molecule's ``density_guess_g_cm3`` (the NPT run finds the real
    one), so the check is an estimate there."""
    from thermocg import units

    density = state.density_g_cm3
    if density is None:
        density = getattr(_molecule(config.system.molecule), "density_guess_g_cm3", None)
    mass = _molar_mass(config.system.molecule)
    if mass is None or density is None:
        return None
    return units.volume_for_density_A3(config.system.n_molecules * mass, density) ** (1.0 / 3.0)


def validate_study(config: Config) -> dict[str, StateConfig]:
    """Check everything that can be checked before any work; raise ConfigError naming the key.

    Checks: at least one state point, unique labels, imports carry a state, single/pooled labels
    exist, and every cutoff (AA non-bonded, HIP-NN-TS, MS-CG, RDF range, ADF shell) fits the box
    of every density state point: at most half the edge of the estimated cubic box, from
    ``system.n_molecules`` and the molecule's mass. Returns label -> state point.
    """
    import difflib

    for k, imp in enumerate(config.imports):
        if imp.state is None:
            raise ConfigError(f"imports[{k}].state: a study needs the state point of every imported trajectory")
    states = state_points(config)
    if not states:
        raise ConfigError("states: the study needs at least one state point (states, state_grid or imports)")
    study = config.study

    def check_labels(where: str, labels: list[str]) -> None:
        for label in labels:
            if label not in states:
                close = difflib.get_close_matches(label, list(states), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; state labels are {', '.join(states)}"
                raise ConfigError(f"{where}: {label!r} is not a state point of this study{hint}")

    if study.single_states is not None:
        check_labels("study.single_states", study.single_states)
    for name, members in study.pooled.items():
        check_labels(f"study.pooled.{name}", members)
        if name in states:
            raise ConfigError(f"study.pooled.{name}: the name clashes with a state label")
    if not plan_models(config):
        raise ConfigError("study: no models to build (single_states is empty and pooled is empty)")
    cutoffs: list[tuple[str, float | None]] = [
        ("train.cutoff_A", getattr(config.train, "cutoff_A", None) if "hipnn_ts" in study.families else None),
        ("rdf.r_max_A", config.rdf.r_max_A),
        ("analysis.adf_cutoff_A", config.analysis.adf_cutoff_A),
    ]
    if "mscg" in study.families:
        cutoffs.append(("pair.cutoff_A", config.pair.cutoff_A))
    generated = {s.to_state().label for s in config.state_points()}
    for label, state in states.items():
        length = estimated_box_length_A(config, state)
        if length is None:
            continue
        half = length / 2.0
        density = state.density_g_cm3 or getattr(_molecule(config.system.molecule), "density_guess_g_cm3", 0.0)
        checks = list(cutoffs)
        if label in generated and config.generate.nonbonded_cutoff_A is not None:
            # (left at None, the runner caps the force field's own cutoff to the box itself)
            checks.append(("generate.nonbonded_cutoff_A", config.generate.nonbonded_cutoff_A))
        for key, cutoff in checks:
            if cutoff is not None and cutoff > half + 1e-9:
                raise ConfigError(
                    f"{key}: {cutoff:g} A does not fit the box of state {label} ({config.system.n_molecules} "
                    f"molecules of {config.system.molecule} at {density:g} g/cm^3 make a cubic box "
                    f"of {length:.2f} A, half of it {half:.2f} A); lower the cutoff or raise system.n_molecules"
                )
    return states


# --------------------------------------------------------------------------------------------------
# the stages: real ones, or stand-ins in tests
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stages:
    """The functions a study calls; each reads/writes the run directory.

    - ``allatom(config, run_dir, label)``: all-atom data of state ``label`` into RUN_DIR/allatom/<label>
    - ``map(config, run_dir, label)``: its CG dataset RUN_DIR/cg/<label>.h5md
    - ``reference(config, run_dir, label) -> dict``: observables of the mapped AA data, see
      :func:`reference_observables`
    - ``train(config, run_dir, model: ModelSpec) -> Path``: the model file
    - ``simulate(config, run_dir, model, model_path, label) -> dict``: CG MD; returns at least
      ``trajectory`` (path) and ``ns_per_day``
    - ``evaluate(config, run_dir, model, model_path, label, md_result, reference) -> dict``: see
      :func:`evaluate_model`

    All must be picklable (module-level functions) to run on Dask workers.
    """

    allatom: Callable[..., Any]
    map: Callable[..., Any]
    reference: Callable[..., dict[str, Any]]
    train: Callable[..., Path]
    simulate: Callable[..., dict[str, Any]]
    evaluate: Callable[..., dict[str, Any]]


def _inner_progress(config: Config) -> bool:
    """Progress bars of the long stages: only in-process (Dask workers' bars would interleave)."""
    return config.study.progress and config.study.max_workers == 1 and config.study.scheduler_address is None


def _real_allatom(config: Config, run_dir: Path, label: str) -> dict[str, Any]:
    imported = {imp.state.to_state().label for imp in config.imports if imp.state is not None}
    if label in imported:
        from thermocg.allatom.readers import run_import

        run_import(config, run_dir)
    else:
        from thermocg.allatom.runner import run_generate

        generate = dataclasses.replace(config.generate, n_threads=config.study.threads_per_worker)
        run_generate(dataclasses.replace(config, generate=generate), run_dir, state=[label],
                     progress=_inner_progress(config))
    rd = RunDir(run_dir)
    traj = rd.allatom_trajectory(label)
    if not traj.exists():
        raise FileNotFoundError(f"{traj}: the all-atom stage did not write it")
    out: dict[str, Any] = {"trajectory": str(traj)}
    meta = rd.allatom(label) / "metadata.json"
    if meta.exists():
        out["ns_per_day"] = _find_number(json.loads(meta.read_text()), ("ns_per_day",))
    return out


def _find_number(data: Any, names: tuple[str, ...]) -> float | None:
    """The first numeric value under any of ``names`` anywhere in a nested dict."""
    if isinstance(data, dict):
        for name in names:
            if isinstance(data.get(name), (int, float)):
                return float(data[name])
        for value in data.values():
            found = _find_number(value, names)
            if found is not None:
                return found
    return None


def _real_map(config: Config, run_dir: Path, label: str) -> dict[str, Any]:
    from thermocg.mapping import run_map

    run_map(config, run_dir, state=[label], progress=_inner_progress(config))
    path = RunDir(run_dir).cg_dataset(label)
    if not path.exists():
        raise FileNotFoundError(f"{path}: the mapping stage did not write it")
    return {"dataset": str(path)}


def _real_train(config: Config, run_dir: Path, model: ModelSpec) -> Path:
    threads = config.study.threads_per_worker
    if model.family == "hipnn_ts":
        from thermocg.train import run_train

        train = dataclasses.replace(config.train, n_threads=threads, name=model.name,
                                    train_states=list(model.train_states), progress=_inner_progress(config))
        if train.cutoff_A is None:
            train.cutoff_A = study_cutoff_A(config, run_dir)
        path = run_train(dataclasses.replace(config, train=train), run_dir, name=model.name,
                         train_states=list(model.train_states))
    else:
        from thermocg.mscg import run_fit_pair

        pair = dataclasses.replace(config.pair, n_threads=threads, name=model.name, progress=_inner_progress(config))
        path = run_fit_pair(dataclasses.replace(config, pair=pair), run_dir, name=model.name,
                            train_states=list(model.train_states))
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    return path


def _real_simulate(config: Config, run_dir: Path, model: ModelSpec, model_path: Path, label: str) -> dict[str, Any]:
    from thermocg.md import run_simulate

    run_simulate(config, run_dir, model=str(model_path), state=[label], progress=_inner_progress(config))
    out_dir = RunDir(run_dir).md(model.name, label)
    traj, summary_path = out_dir / "traj.h5md", out_dir / "summary.json"
    if not (traj.exists() and summary_path.exists()):
        raise FileNotFoundError(f"{out_dir}: the MD stage did not write traj.h5md and summary.json")
    summary = json.loads(summary_path.read_text())
    return {"trajectory": str(traj), "ns_per_day": summary.get("ns_per_day"), "blowup": summary.get("blowup"),
            "simulated_ps": summary.get("simulated_ps"), "mean_temperature_K": summary.get("mean_temperature_K")}


def study_cutoff_A(config: Config, run_dir: Path, *, largest_A: float = 15.0) -> float:
    """The HIP-NN-TS cutoff when ``train.cutoff_A`` is None: min(15 A, half the shortest perpendicular
    box width over the CG datasets of *every* state of the study), so that each model can be run at
    each state (the trainer alone would look only at its training states' boxes)."""
    from thermocg.dataset import H5MDDataset
    from thermocg.neighbors import perpendicular_widths

    half = largest_A
    for label in state_points(config):
        with H5MDDataset(RunDir(run_dir).cg_dataset(label)) as ds:
            boxes = ds.boxes()
        half = min(half, min(float(perpendicular_widths(b).min()) for b in boxes) / 2.0)
    # a hair below half the box: the minimum-image check is inclusive and NPT boxes fluctuate
    return float(np.floor(half * 0.999 * 100) / 100)


def default_stages() -> Stages:
    """The real thermocg stages."""
    return Stages(allatom=_real_allatom, map=_real_map, reference=reference_observables, train=_real_train,
                  simulate=_real_simulate, evaluate=evaluate_model)


# --------------------------------------------------------------------------------------------------
# observables and errors (the real reference and evaluate stages)
# --------------------------------------------------------------------------------------------------

def _structure(frames: Any, config: Config, *, adf_cutoff_A: float | None) -> dict[str, Any]:
    """RDF (per pair), ADF (all beads) and the diffusion coefficient of CG frames.

    ``adf_cutoff_A`` None: the first minimum of these frames' RDF (pooled over pairs) after its peak.
    """
    from thermocg.analysis.adf import ADF, rdf_first_minimum_A
    from thermocg.analysis.msd import MSD
    from thermocg.analysis.rdf import RDF

    rdf = RDF(frames, r_max_A=config.rdf.r_max_A, bin_width_A=config.rdf.bin_width_A).run().results
    r = np.asarray(rdf.r_A)
    out: dict[str, Any] = {"rdf": {"r_A": r.tolist(), "g": {k: np.asarray(v).tolist() for k, v in rdf.g.items()}}}
    if adf_cutoff_A is None:
        adf_cutoff_A = rdf_first_minimum_A(r, np.mean(np.stack([np.asarray(v) for v in rdf.g.values()]), axis=0))
    out["adf_cutoff_A"] = float(adf_cutoff_A)
    adf = ADF(frames, cutoff_A=adf_cutoff_A, bin_width_deg=config.analysis.adf_bin_width_deg).run().results
    out["adf"] = {"theta_deg": np.asarray(adf.angle_deg).tolist(), "p": np.asarray(adf.p["all"]).tolist()}
    out["D_A2_fs"] = None
    if frames.n_frames >= 3:
        msd = MSD(frames, fit_start_fraction=config.analysis.msd_fit_start_fraction,
                  fit_end_fraction=config.analysis.msd_fit_end_fraction).run().results
        out["D_A2_fs"] = float(msd.diffusion_A2_fs["all"])
    return out


def _tail(frames: Any, discard_fraction: float) -> Any:
    start = int(frames.n_frames * discard_fraction)
    return frames.select(slice(start, None))


def reference_observables(config: Config, run_dir: Path, label: str) -> dict[str, Any]:
    """RDF, ADF and diffusion coefficient of the mapped AA data of state ``label``.

    All frames are used (the AA run was equilibrated before production); the ADF shell is the
    first minimum of this RDF unless ``analysis.adf_cutoff_A`` is set, and the CG runs at this state
    use the same shell."""
    from thermocg.dataset import read_frames

    frames = read_frames(RunDir(run_dir).cg_dataset(label))
    out = _structure(frames, config, adf_cutoff_A=config.analysis.adf_cutoff_A)
    # the noise floor of the errors: the same AA data, first half against second half
    half = frames.n_frames // 2
    if half >= 2:
        first = _structure(frames.select(slice(0, half)), config, adf_cutoff_A=out["adf_cutoff_A"])
        second = _structure(frames.select(slice(half, None)), config, adf_cutoff_A=out["adf_cutoff_A"])
        out["noise"] = {"rdf_error": rdf_error(first["rdf"], second["rdf"]),
                        "adf_error": adf_error(first["adf"], second["adf"])}
    out["n_frames"] = frames.n_frames
    out["n_beads"] = frames.n_particles
    meta = RunDir(run_dir).allatom(label) / "metadata.json"
    out["aa_ns_per_day"] = _find_number(json.loads(meta.read_text()), ("ns_per_day",)) if meta.exists() else None
    return out


def rdf_error(reference: dict[str, Any], model: dict[str, Any]) -> float:
    """Mean over pairs of mean over r of |g_CG(r) - g_AA(r)| (on the reference grid)."""
    r_ref = np.asarray(reference["r_A"])
    errors = []
    for pair, g_ref in reference["g"].items():
        g_mod = model["g"].get(pair)
        if g_mod is None:
            continue
        g_mod = np.interp(r_ref, np.asarray(model["r_A"]), np.asarray(g_mod), right=np.nan)
        ok = np.isfinite(g_mod)
        errors.append(float(np.mean(np.abs(g_mod[ok] - np.asarray(g_ref)[ok]))))
    return float(np.mean(errors)) if errors else math.nan


def adf_error(reference: dict[str, Any] | None, model: dict[str, Any] | None) -> float:
    """Integral over theta of |p_CG - p_AA| (both normalised to 1): 0 identical, 2 disjoint."""
    if not reference or not model:
        return math.nan
    theta = np.asarray(reference["theta_deg"])
    p_mod = np.interp(theta, np.asarray(model["theta_deg"]), np.asarray(model["p"]))
    width = np.gradient(theta) if len(theta) > 1 else np.ones_like(theta)
    return float(np.sum(np.abs(p_mod - np.asarray(reference["p"])) * width))


def evaluate_model(config: Config, run_dir: Path, model: ModelSpec, model_path: Path, label: str,
                   md_result: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Errors of one model at one state: forces on the mapped AA frames, structure and mobility of
    its CG MD against the mapped AA reference."""
    from thermocg.dataset import H5MDDataset, read_frames
    from thermocg.potentials.base import load_potential

    from thermocg.analysis.forces import force_errors

    study = config.study
    potential = load_potential(model_path)
    aa_path = RunDir(run_dir).cg_dataset(label)
    n_total = len(H5MDDataset(aa_path))
    n_eval = n_total if study.force_eval_frames is None else min(n_total, study.force_eval_frames)
    idx = np.unique(np.linspace(0, n_total - 1, n_eval).round().astype(int))
    force = force_errors(potential, aa_path, frame_indices=idx, parity_samples=study.parity_samples,
                         batch_frames=config.analysis.force_batch_frames, seed=config.seed)
    parity = force.pop("parity", None)
    pairs = [] if parity is None else np.stack([np.asarray(parity["reference"]), np.asarray(parity["predicted"])], 1)
    out: dict[str, Any] = {
        "force": force, "parity": np.asarray(pairs).tolist(), "ns_per_day": md_result.get("ns_per_day"),
        "blowup": md_result.get("blowup"), "rdf": None, "adf": None, "D_A2_fs": None,
        "rdf_error": None, "adf_error": None, "d_ratio": None,
    }
    if md_result.get("blowup"):  # an unstable model: no structure to compare (the matrices show n/a)
        return out
    md_frames = _tail(read_frames(md_result["trajectory"]), config.analysis.discard_fraction)
    structure = _structure(md_frames, config, adf_cutoff_A=reference.get("adf_cutoff_A"))
    d_ref, d_mod = reference.get("D_A2_fs"), structure.get("D_A2_fs")
    out.update({
        "rdf": structure["rdf"], "adf": structure["adf"], "D_A2_fs": d_mod,
        "rdf_error": rdf_error(reference["rdf"], structure["rdf"]),
        "adf_error": adf_error(reference.get("adf"), structure.get("adf")),
        "d_ratio": (d_mod / d_ref) if (d_mod is not None and d_ref) else None,
    })
    return out


# --------------------------------------------------------------------------------------------------
# running units: manifests, in-process or on Dask
# --------------------------------------------------------------------------------------------------

def _manifest_path(run_dir: Path, unit: Unit) -> Path:
    return Path(run_dir) / "study" / "units" / f"{unit.file_stem}.json"


def read_manifest(run_dir: str | os.PathLike, unit: Unit) -> dict[str, Any] | None:
    """The manifest of a finished unit, or None if it is missing, unreadable or for other inputs."""
    path = _manifest_path(Path(run_dir), unit)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("key") == unit.key else None


def _unit_outputs(run_dir: Path, unit: Unit) -> list[Path]:
    rd = RunDir(run_dir)
    if unit.kind == "aa":
        return [rd.allatom(unit.state)]
    if unit.kind == "map":
        return [rd.cg_dataset(unit.state)]
    if unit.kind == "model":
        return [rd.model(unit.model.name)]
    if unit.kind == "md":
        return [rd.md(unit.model.name, unit.state)]
    return []


def _limit_threads(n: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    os.environ["OPENMM_CPU_THREADS"] = str(n)
    torch = sys.modules.get("torch")  # not imported here: a stage that imports it later reads the env
    if torch is not None:
        torch.set_num_threads(n)


def execute_unit(unit: Unit, config: Config, run_dir: str, stages: Stages, *_after: Any) -> dict[str, Any]:
    """Run one unit (its dependencies must be finished) and write its manifest; return the result.

    ``_after`` are the Dask futures of its dependencies (only there to order the graph).
    """
    run_dir_p = Path(run_dir)
    _limit_threads(config.study.threads_per_worker)
    for path in _unit_outputs(run_dir_p, unit):  # a unit in flight when a study was killed: start clean
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    def upstream(name: str) -> dict[str, Any]:
        path = Path(run_dir) / "study" / "units" / f"{name.replace('/', '__')}.json"
        return json.loads(path.read_text())["result"]

    start = time.perf_counter()
    if unit.kind == "aa":
        result = stages.allatom(config, run_dir_p, unit.state) or {}
    elif unit.kind == "map":
        result = stages.map(config, run_dir_p, unit.state) or {}
    elif unit.kind == "ref":
        result = stages.reference(config, run_dir_p, unit.state)
    elif unit.kind == "model":
        result = {"model_path": str(stages.train(config, run_dir_p, unit.model))}
    elif unit.kind == "md":
        model_path = Path(upstream(f"model/{unit.model.name}")["model_path"])
        result = stages.simulate(config, run_dir_p, unit.model, model_path, unit.state)
    elif unit.kind == "eval":
        model_path = Path(upstream(f"model/{unit.model.name}")["model_path"])
        md_result = upstream(f"md/{unit.model.name}/{unit.state}")
        reference = upstream(f"ref/{unit.state}")
        result = stages.evaluate(config, run_dir_p, unit.model, model_path, unit.state, md_result, reference)
    else:  # pragma: no cover - plan_units makes only these
        raise ValueError(f"unknown unit kind {unit.kind!r}")
    manifest = {
        "unit": unit.name, "kind": unit.kind, "key": unit.key, "deps": list(unit.deps),
        "state": unit.state, "model": dataclasses.asdict(unit.model) if unit.model else None,
        "wall_s": time.perf_counter() - start,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "result": result,
    }
    atomic_write_text(_manifest_path(run_dir_p, unit), json.dumps(manifest, default=_json_default))
    return result


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


@dataclass
class StudyRun:
    """What :func:`run_study` did: units run, skipped and failed, and where the report is."""

    run_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    report: Path | None = None
    wall_s: float = 0.0


def _run_in_process(pending: list[Unit], config: Config, run_dir: str, stages: Stages, out: StudyRun, bar: Any) -> None:
    for unit in pending:
        bad = [d for d in unit.deps if d in out.failed]
        if bad:
            out.failed[unit.name] = f"skipped: {bad[0]} failed"
        else:
            bar.set_postfix_str(unit.name)
            try:
                execute_unit(unit, config, run_dir, stages)
                out.ran.append(unit.name)
            except Exception as exc:  # a unit's failure must not stop independent units
                out.failed[unit.name] = f"{type(exc).__name__}: {exc}"
                _write_failure(run_dir, unit)
        bar.update(1)


def _write_failure(run_dir: str, unit: Unit) -> None:
    path = Path(run_dir) / "study" / "failed" / f"{unit.file_stem}.txt"
    atomic_write_text(path, traceback.format_exc())


def _run_on_dask(pending: list[Unit], config: Config, run_dir: str, stages: Stages, out: StudyRun, bar: Any) -> None:
    import dask
    from distributed import Client, LocalCluster, as_completed

    study = config.study
    env_before = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENMM_CPU_THREADS")}
    _limit_threads_env(study.threads_per_worker)
    cluster = None
    try:
        # workers may start processes of their own (OpenMM, torch); they must not be daemons
        with dask.config.set({"distributed.worker.daemon": False, "distributed.admin.tick.limit": "1h"}):
            if study.scheduler_address:
                client = Client(study.scheduler_address)
            else:
                cluster = LocalCluster(n_workers=study.max_workers, threads_per_worker=1, processes=True,
                                       memory_limit=0, dashboard_address=None)
                client = Client(cluster)
            try:
                futures: dict[str, Any] = {}
                for unit in pending:
                    deps = [futures[d] for d in unit.deps if d in futures]
                    futures[unit.name] = client.submit(execute_unit, unit, config, run_dir, stages, *deps,
                                                       key=f"{unit.file_stem}-{unit.key[:12]}", pure=False)
                names = {f.key: name for name, f in futures.items()}
                for future in as_completed(list(futures.values())):
                    name = names[future.key]
                    bar.set_postfix_str(name)
                    if future.status == "finished":
                        out.ran.append(name)
                    else:
                        exc = future.exception()
                        out.failed[name] = f"{type(exc).__name__}: {exc}"
                    bar.update(1)
            finally:
                client.close()
    finally:
        if cluster is not None:
            cluster.close()
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _limit_threads_env(n: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["OPENMM_CPU_THREADS"] = str(n)


def run_study(config: Config, run_dir: str | os.PathLike | None = None, *, stages: Stages | None = None,
              progress: bool | None = None) -> StudyRun:
    """Run (or resume) the whole study; write the matrices and the report.

    Validates the config first (:func:`validate_study`), then runs every unit whose manifest is
    missing or stale, in parallel where the dependencies allow, then the report. Units that fail
    are listed in a :class:`StudyError` raised at the end, after the report of what did finish.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    validate_study(config)
    run_dir = Path(run_dir if run_dir is not None else config.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    stages = stages or default_stages()
    progress = config.study.progress if progress is None else progress
    from thermocg.config import write_resolved

    write_resolved(config, run_dir / "study" / "resolved.yaml")
    units = plan_units(config)
    out = StudyRun(run_dir)
    pending = []
    for unit in units:
        if read_manifest(run_dir, unit) is not None:
            out.skipped.append(unit.name)
        else:
            pending.append(unit)
    bar = tqdm(total=len(pending), desc="study", unit="unit", disable=not progress)
    try:
        if pending:
            use_dask = config.study.max_workers > 1 or config.study.scheduler_address is not None
            if use_dask:
                _run_on_dask(pending, config, str(run_dir), stages, out, bar)
            else:
                _run_in_process(pending, config, str(run_dir), stages, out, bar)
    finally:
        bar.close()
    summary = collect_results(config, run_dir, units)
    out.report = _report_unit(config, run_dir, units, summary, out)
    out.wall_s = time.perf_counter() - t0
    if progress:
        print(f"thermocg study: {len(out.ran)} unit(s) run, {len(out.skipped)} up to date, {len(out.failed)} failed "
              f"in {out.wall_s:.0f} s; report: {out.report}", file=sys.stderr)
    if out.failed:
        lines = "\n".join(f"  {name}: {msg}" for name, msg in out.failed.items())
        raise StudyError(f"{len(out.failed)} unit(s) of the study in {run_dir} failed "
                         f"(tracebacks in {run_dir / 'study' / 'failed'}):\n{lines}")
    return out


# --------------------------------------------------------------------------------------------------
# results: matrices and verdicts
# --------------------------------------------------------------------------------------------------

def collect_results(config: Config, run_dir: Path, units: list[Unit] | None = None) -> dict[str, Any]:
    """Gather the manifests into one summary: states, models, references, evaluations, matrices,
    verdicts. Missing evaluations (failed units) are NaN in the matrices."""
    units = units or plan_units(config)
    states = state_points(config)
    labels = list(states)
    models = plan_models(config)
    results: dict[str, dict[str, Any]] = {}
    for unit in units:
        manifest = read_manifest(run_dir, unit)
        if manifest is not None:
            results[unit.name] = manifest
    references = {s: results[f"ref/{s}"]["result"] for s in labels if f"ref/{s}" in results}
    aa_speed = {s: results[f"aa/{s}"]["result"].get("ns_per_day") for s in labels if f"aa/{s}" in results}
    evaluations: dict[str, dict[str, Any]] = {}
    for m in models:
        evaluations[m.name] = {}
        for s in labels:
            r = results.get(f"eval/{m.name}/{s}")
            if r is not None:
                evaluations[m.name][s] = r["result"]
    matrices: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for metric in METRICS:
        matrices[metric] = {}
        for family in config.study.families:
            table: dict[str, dict[str, float]] = {}
            for m in models:
                if m.family != family:
                    continue
                row = {}
                for s in labels:
                    ev = evaluations[m.name].get(s)
                    value = None
                    if ev is not None:
                        value = ev["force"]["rmse"] if metric == "force_rmse" else ev.get(metric)
                    row[s] = math.nan if value is None else float(value)
                table[m.train_set] = row
            matrices[metric][family] = table
    training = {m.name: {"wall_s": results.get(f"model/{m.name}", {}).get("wall_s"),
                         "model_path": results.get(f"model/{m.name}", {}).get("result", {}).get("model_path")}
                for m in models}
    summary = {
        "format_version": STUDY_FORMAT_VERSION,
        "states": {s: states[s].to_state().to_dict() for s in labels},
        "models": [{"name": m.name, "family": m.family, "train_set": m.train_set,
                    "train_states": list(m.train_states), "pooled": m.pooled} for m in models],
        "families": list(config.study.families),
        "tolerances": {"rdf_error": config.study.rdf_tolerance, "adf_error": config.study.adf_tolerance},
        "references": references,
        "aa_ns_per_day": aa_speed,
        "noise": {s: references[s]["noise"] for s in labels if s in references and "noise" in references[s]},
        "evaluations": evaluations,
        "training": training,
        "matrices": matrices,
    }
    summary["verdicts"] = verdicts(summary)
    summary["comparison"] = compare_families(summary)
    return summary


def _ok(ev: dict[str, Any], tol: dict[str, float]) -> bool:
    rdf = ev.get("rdf_error")
    adf = ev.get("adf_error")
    if rdf is None or not math.isfinite(rdf) or rdf > tol["rdf_error"]:
        return False
    return adf is None or not math.isfinite(adf) or adf <= tol["adf_error"]


def verdicts(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model: the states where it reproduces the AA structure within the tolerances."""
    tol = summary["tolerances"]
    out = {}
    for m in summary["models"]:
        evs = summary["evaluations"].get(m["name"], {})
        good = [s for s in summary["states"] if s in evs and _ok(evs[s], tol)]
        out[m["name"]] = {"reproduces_at": good, "evaluated": [s for s in summary["states"] if s in evs],
                          "n_states": len(summary["states"])}
    return out


def _mean(values: list[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def compare_families(summary: dict[str, Any]) -> dict[str, Any]:
    """Means of each error at the training state ("in") and away from it ("out") per family, and
    for pooled models vs single-state models away from the singles' training state."""
    out: dict[str, Any] = {"families": {}, "pooled_vs_single": {}}
    for family in summary["families"]:
        fam: dict[str, Any] = {}
        singles = [m for m in summary["models"] if m["family"] == family and not m["pooled"]]
        pooled = [m for m in summary["models"] if m["family"] == family and m["pooled"]]
        for metric in METRICS:
            table = summary["matrices"][metric][family]
            inside = [table[m["train_set"]][s] for m in singles for s in summary["states"] if s in m["train_states"]]
            outside = [table[m["train_set"]][s] for m in singles for s in summary["states"]
                       if s not in m["train_states"]]
            if metric == "d_ratio":  # distance from 1 on a log scale is the error of a ratio
                inside = [abs(math.log(v)) if v and v > 0 else math.nan for v in inside]
                outside = [abs(math.log(v)) if v and v > 0 else math.nan for v in outside]
            fam[metric] = {"single_at_training_state": _mean(inside), "single_away": _mean(outside)}
        out["families"][family] = fam
        cmp = {}
        for m in pooled:
            cmp[m["train_set"]] = {}
            for metric in ("rdf_error", "adf_error"):
                table = summary["matrices"][metric][family]
                pooled_err, single_err = [], []
                for s in summary["states"]:
                    away = [table[x["train_set"]][s] for x in singles if s not in x["train_states"]]
                    if away:
                        pooled_err.append(table[m["train_set"]][s])
                        single_err.append(_mean(away))
                cmp[m["train_set"]][f"pooled_{metric}"] = _mean(pooled_err)
                cmp[m["train_set"]][f"single_away_{metric}"] = _mean(single_err)
        out["pooled_vs_single"][family] = cmp
    return out


def write_matrices(summary: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """The matrices as CSV (one wide file per metric and family, plus one long file) and JSON."""
    out_dir = Path(out_dir)
    written = []
    states = list(summary["states"])
    long_rows = ["family,metric,train_set,test_state,value"]
    for metric, by_family in summary["matrices"].items():
        for family, table in by_family.items():
            lines = ["train_set," + ",".join(states)]
            for train_set, row in table.items():
                lines.append(train_set + "," + ",".join(f"{row[s]:.6g}" for s in states))
                long_rows.extend(f"{family},{metric},{train_set},{s},{row[s]:.6g}" for s in states)
            written.append(atomic_write_text(out_dir / f"{metric}_{family}.csv", "\n".join(lines) + "\n"))
    written.append(atomic_write_text(out_dir / "matrices.csv", "\n".join(long_rows) + "\n"))
    matrices_json = json.loads(json.dumps(summary["matrices"], default=_json_default).replace("NaN", "null"))
    written.append(atomic_write_text(out_dir / "matrices.json", json.dumps(
        {"metrics": METRIC_LABELS, "matrices": matrices_json}, indent=1)))
    return written


def _report_unit(config: Config, run_dir: Path, units: list[Unit], summary: dict[str, Any], out: StudyRun) -> Path:
    """The report: rerun when its inputs (the evaluations and the study section) changed or its
    files are gone."""
    from thermocg.report import write_report

    report_dir = RunDir(run_dir).report()
    key = _hash(STUDY_FORMAT_VERSION, "report", config.study, sorted(
        (u.name, u.key) for u in units if read_manifest(run_dir, u) is not None))
    marker = run_dir / "study" / "units" / "report.json"
    try:
        done = json.loads(marker.read_text()).get("key") == key
    except (OSError, ValueError):
        done = False
    if done and (report_dir / "index.html").exists() and (report_dir / "summary.md").exists():
        out.skipped.append("report")
        return report_dir / "index.html"
    start = time.perf_counter()
    analysis_dir = RunDir(run_dir).analysis() / "study"
    write_matrices(summary, analysis_dir)
    atomic_write_text(analysis_dir / "summary.json",
                      json.dumps(summary, default=_json_default).replace("NaN", "null"))
    index = write_report(summary, report_dir, run_dir=run_dir)
    atomic_write_text(marker, json.dumps({"unit": "report", "key": key, "wall_s": time.perf_counter() - start}))
    out.ran.append("report")
    return index
