"""The study config: typed, validated, strict. The one home of defaults.

A config is YAML. Every section is a dataclass below; every key with a dimension carries its unit in
its name (``temperature_K``, ``timestep_fs``, ``cutoff_A``). Unknown keys are errors that suggest the
nearest valid key; values are type-checked and range-checked before any work starts. Each stage
writes the resolved config (every default filled in, every automatic choice recorded) beside its
outputs.

Sections are owned by the stage that reads them: ``system``, ``states``, ``generate``, ``imports``,
``mapping``, ``rdf`` (all-atom data and mapping); ``train`` (HIP-NN-TS force matching); ``pair``
(MS-CG); ``simulate`` (CG MD); ``analysis``; ``study``.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from thermocg.frames import StatePoint


class ConfigError(ValueError):
    """An invalid config; the message names the key (``section.key``) and the problem."""


# --------------------------------------------------------------------------------------------------
# machinery
# --------------------------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}{hint}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        return [_coerce(v, item_tp, f"{where}[{k}]") for k, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML's .nan / .inf would fail hours later, deep in a stage
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, strictly: unknown keys and bad types are errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        here = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"{here}: unknown key{_key_hint(cls, str(key), names)}")
        kwargs[key] = _coerce(value, hints[key], here)
    missing = [
        f.name for f in dataclasses.fields(cls)
        if f.init and f.name not in kwargs
        and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where or 'config'}: missing required key(s) {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}" if where and not str(exc).startswith(where) else str(exc)) from None


def _nested_keys(cls: type, prefix: str = "") -> list[str]:
    """Every key of the dataclass sections under ``cls`` as dotted paths (``train.cutoff_A``)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        out.append(prefix + f.name)
        tp = hints[f.name]
        inner = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
        if typing.get_origin(tp) in (list, tuple, dict):
            inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        for sub in inner:
            out.extend(_nested_keys(sub, prefix + f.name + "."))
    return out


def _key_hint(cls: type, key: str, names: list[str]) -> str:
    """"did you mean" for an unknown key: the nearest key of this section, else the nearest key of
    any section below it (a top-level ``tempertaure_K`` is ``states.temperature_K``)."""
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    nested = [k for k in _nested_keys(cls) if "." in k]
    leaves = {}
    for dotted in nested:
        leaves.setdefault(dotted.rsplit(".", 1)[1], dotted)
    close = difflib.get_close_matches(key, list(leaves), n=1, cutoff=0.75)
    if close:
        return f"; did you mean {leaves[close[0]]!r} (key {close[0]!r} of section {leaves[close[0]].rsplit('.', 1)[0]!r})?"
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid keys: {', '.join(names)}"


def to_dict(obj: Any) -> Any:
    """A dataclass (tree) as plain dicts/lists, ready for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


#: field metadata of a key that does not change any result (threads, devices, progress bars, names,
#: evaluation batch sizes): cache keys and resume checks leave these out (:func:`result_dict`)
NO_EFFECT = {"affects_results": False}


def no_effect(default: Any) -> Any:
    """A config field that does not change results (see :data:`NO_EFFECT`)."""
    return field(default=default, metadata=NO_EFFECT)


def affects_results(cls_or_obj: Any, name: str) -> bool:
    """Whether field ``name`` of a config section can change a result."""
    for f in dataclasses.fields(cls_or_obj):
        if f.name == name:
            return f.metadata.get("affects_results", True)
    raise KeyError(name)


def result_dict(obj: Any, *, drop: tuple[str, ...] = ()) -> Any:
    """A config section as plain data without the keys that do not change results (nor ``drop``).

    The one definition of "the inputs that matter" behind the study's cache keys and the trainer's
    resume check: a change to any other key makes a new key."""
    if dataclasses.is_dataclass(obj):
        return {f.name: result_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.metadata.get("affects_results", True) and f.name not in drop}
    if isinstance(obj, (list, tuple)):
        return [result_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: result_dict(v) for k, v in obj.items()}
    return to_dict(obj)


def _positive(where: str, value: float | int | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if (value < 0) if allow_zero else (value <= 0):
        raise ConfigError(f"{where}: must be {'non-negative' if allow_zero else 'positive'}, got {value}")


# --------------------------------------------------------------------------------------------------
# all-atom data (generate / import), mapping, RDF
# --------------------------------------------------------------------------------------------------

@dataclass
class SystemConfig:
    """The all-atom system to generate."""

    #: a built-in molecule (``methanol_trappe``, ``methanol_opls``, ``water_spce``) or a path to a YAML
    #: molecule definition
    molecule: str = "methanol_trappe"
    n_molecules: int = 256

    def __post_init__(self) -> None:
        _positive("system.n_molecules", self.n_molecules)


@dataclass
class StateConfig:
    """One state point: temperature with density (NVT) or pressure (NPT then NVT)."""

    temperature_K: float
    density_g_cm3: float | None = None
    pressure_bar: float | None = None

    def __post_init__(self) -> None:
        if self.temperature_K <= 0:
            raise ConfigError(f"temperature_K: must be positive, got {self.temperature_K}")
        if (self.density_g_cm3 is None) == (self.pressure_bar is None):
            raise ConfigError("state point: give exactly one of density_g_cm3 or pressure_bar")
        _positive("density_g_cm3", self.density_g_cm3)

    def to_state(self) -> StatePoint:
        return StatePoint(self.temperature_K, self.density_g_cm3, self.pressure_bar)


@dataclass
class StateGridConfig:
    """A grid of state points: every temperature with every density (or every pressure)."""

    temperature_K: list[float] = field(default_factory=list)
    density_g_cm3: list[float] | None = None
    pressure_bar: list[float] | None = None

    def expand(self) -> list[StateConfig]:
        if (self.density_g_cm3 is None) == (self.pressure_bar is None):
            raise ConfigError("state_grid: give exactly one of density_g_cm3 or pressure_bar")
        if self.density_g_cm3 is not None:
            return [StateConfig(t, density_g_cm3=d) for t, d in itertools.product(self.temperature_K, self.density_g_cm3)]
        return [StateConfig(t, pressure_bar=p) for t, p in itertools.product(self.temperature_K, self.pressure_bar)]


@dataclass
class GenerateConfig:
    """All-atom MD with OpenMM."""

    platform: Literal["auto", "CPU", "CUDA", "Reference", "OpenCL"] = no_effect("auto")
    n_threads: int = no_effect(2)
    timestep_fs: float = 1.0
    friction_per_ps: float = 1.0
    #: NPT equilibration length for pressure state points (then NVT at the mean volume)
    npt_equilibration_ps: float = 100.0
    #: NVT equilibration before production
    equilibration_ps: float = 20.0
    production_ps: float = 100.0
    save_interval_fs: float = 100.0
    thermo_interval_fs: float = 100.0
    save_velocities: bool = True
    #: None: what the force field prescribes (TraPPE: 14 A, OPLS-AA: 12 A, SPC/E: 10 A)
    nonbonded_cutoff_A: float | None = None
    barostat_interval: int = 25

    def __post_init__(self) -> None:
        for key in ("timestep_fs", "friction_per_ps", "save_interval_fs", "thermo_interval_fs", "n_threads"):
            _positive(f"generate.{key}", getattr(self, key))
        for key in ("npt_equilibration_ps", "equilibration_ps"):
            _positive(f"generate.{key}", getattr(self, key), allow_zero=True)
        _positive("generate.production_ps", self.production_ps)
        _positive("generate.nonbonded_cutoff_A", self.nonbonded_cutoff_A)


@dataclass
class ImportConfig:
    """An all-atom trajectory with forces written by another engine."""

    #: trajectory file (LAMMPS dump, GROMACS .trr, extxyz)
    path: str
    format: Literal["lammps", "gromacs", "extxyz"]
    #: topology: LAMMPS data file, GROMACS .gro/.tpr/.top; not needed for extxyz
    topology: str | None = None
    #: LAMMPS unit style of the files
    lammps_units: Literal["real", "metal"] | None = None
    state: StateConfig | None = None
    #: optional molecule definition (name or YAML) giving masses/molecules when the topology lacks them
    molecule: str | None = None
    #: LAMMPS only: the MD timestep, turning dump step numbers into times (None: time = step)
    timestep_fs: float | None = None

    def __post_init__(self) -> None:
        _positive("imports.timestep_fs", self.timestep_fs)
        if self.format == "lammps" and self.lammps_units is None:
            raise ConfigError(f"imports ({self.path}): a LAMMPS dump needs lammps_units (real or metal)")


@dataclass
class BeadConfig:
    """One bead of a multi-bead map: its name and atoms (names or 0-based indices in the molecule)."""

    name: str
    atoms: list[str | int]


@dataclass
class MappingConfig:
    """Atoms -> beads. Default: one bead per molecule at its centre of mass."""

    #: ``com`` (centre of mass) or ``cog`` (centre of geometry)
    center: Literal["com", "cog"] = "com"
    #: per molecule name, a list of beads; empty: one bead per molecule named after the molecule
    beads: dict[str, list[BeadConfig]] = field(default_factory=dict)


@dataclass
class RDFConfig:
    """Radial distribution functions per bead-type pair."""

    #: None: half the shortest perpendicular box width
    r_max_A: float | None = None
    bin_width_A: float = 0.05

    def __post_init__(self) -> None:
        _positive("rdf.r_max_A", self.r_max_A)
        _positive("rdf.bin_width_A", self.bin_width_A)


# --------------------------------------------------------------------------------------------------
# train: HIP-NN-TS force matching (thermocg.train)
# --------------------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """Force matching of HIP-NN-TS (+ the data-derived repulsive prior) on CG forces.

    Keys left at ``None`` are chosen from the data by :func:`thermocg.train.resolve_train_config`
    and written, resolved, to the model's ``resolved.yaml``. Defaults are the reference study's
    (see HIPNN_TS.md): 128 features, 20 sensitivities, one interaction layer of three atom layers,
    loss RMSE + MAE, Adam 1e-3, batch 1 doubling to 64 on plateaus, then learning-rate halving.
    """

    #: model directory name under RUN_DIR/models
    name: str = no_effect("hipnn_ts")
    #: state labels to train on (None: every CG dataset in RUN_DIR/cg)
    train_states: list[str] | None = None
    # -- architecture
    n_features: int = 128
    n_sensitivities: int = 20
    n_interaction_layers: int = 1
    n_atom_layers: int = 3
    #: None: min(15 A, half the shortest perpendicular box width of the training frames)
    cutoff_A: float | None = None
    #: None: max(onset - 1 A, onset / 2), onset = the smallest RDF onset over bead-type pairs
    dist_soft_min_A: float | None = None
    #: None: 13/15 of the cutoff (the reference's 13 A at 15 A)
    dist_soft_max_A: float | None = None
    dtype: Literal["float32", "float64"] = "float32"
    # -- the repulsive prior (taper from the RDF onset, strength = mean |F| of the CG forces)
    prior: bool = True
    prior_threshold: float = 0.01
    prior_dr_A: float = 0.15
    prior_perc: float = 0.05
    #: None: from the data; a number overrides every type pair
    prior_taper_A: float | None = None
    prior_strength_kcal_mol_A: float | None = None
    # -- data and splits
    #: fractions of train/validation/test frames, taken as contiguous time segments of each block
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    #: each state's trajectory is cut into this many contiguous blocks, each split in time order
    n_blocks: int = 1
    #: use every k-th frame
    frame_stride: int = 1
    #: None: the RMS of the training force components; the loss is computed on F / force_scale
    force_scale_kcal_mol_A: float | None = None
    # -- optimisation
    loss: Literal["rmse+mae", "rmse", "mae", "mse"] = "rmse+mae"
    learning_rate: float = 1.0e-3
    batch_size: int = 1
    max_batch_size: int = 64
    #: epochs without a new best validation loss before the batch doubles (or, at max_batch_size,
    #: the learning rate is multiplied by lr_factor)
    patience_epochs: int = 10
    lr_factor: float = 0.5
    #: a validation loss counts as a new best only below best * (1 - improvement_threshold)
    improvement_threshold: float = 0.0
    #: stop after this many epochs without a new best validation loss
    early_stopping_epochs: int = 20
    max_epochs: int = 200
    #: frames per batch when evaluating (no effect on results)
    eval_batch_size: int = no_effect(8)
    device: str = no_effect("cpu")
    #: torch threads (set by run_train only)
    n_threads: int = no_effect(2)
    progress: bool = no_effect(True)

    def __post_init__(self) -> None:
        for key in ("n_features", "n_sensitivities", "n_interaction_layers", "n_blocks", "frame_stride",
                    "learning_rate", "batch_size", "max_batch_size", "patience_epochs", "early_stopping_epochs",
                    "max_epochs", "eval_batch_size", "n_threads", "prior_dr_A"):
            _positive(f"train.{key}", getattr(self, key))
        _positive("train.n_atom_layers", self.n_atom_layers, allow_zero=True)
        for key in ("cutoff_A", "dist_soft_min_A", "dist_soft_max_A", "prior_taper_A",
                    "prior_strength_kcal_mol_A", "force_scale_kcal_mol_A", "prior_threshold"):
            _positive(f"train.{key}", getattr(self, key))
        if not 0 < self.prior_perc < 1:
            raise ConfigError(f"train.prior_perc: must be in (0, 1), got {self.prior_perc}")
        if not 0 <= self.improvement_threshold < 1:
            raise ConfigError(f"train.improvement_threshold: must be in [0, 1), got {self.improvement_threshold}")
        if not 0 < self.lr_factor < 1:
            raise ConfigError(f"train.lr_factor: must be in (0, 1), got {self.lr_factor}")
        if self.max_batch_size < self.batch_size:
            raise ConfigError(f"train.max_batch_size ({self.max_batch_size}) is below batch_size ({self.batch_size})")
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1.0) > 1e-6:
            raise ConfigError(f"train.split: three non-negative fractions summing to 1, got {self.split}")
        if self.split[0] <= 0 or self.split[1] <= 0:
            raise ConfigError(f"train.split: training and validation fractions must be positive, got {self.split}")
        if (self.dist_soft_min_A is not None and self.dist_soft_max_A is not None
                and self.dist_soft_min_A >= self.dist_soft_max_A):
            raise ConfigError("train.dist_soft_min_A must be below train.dist_soft_max_A")


# --------------------------------------------------------------------------------------------------
# study: every model at every state point (thermocg.study)
# --------------------------------------------------------------------------------------------------

@dataclass
class StudyConfig:
    """The transferability study: which models to build, how to run them, what counts as a match.

    Models: for each family in ``families``, one model per single state point (``single_states``)
    and one per pooled set (``pooled``). Every model is simulated (NVT) and evaluated at every
    state point of the config. Units of work run through Dask's distributed scheduler with at most
    ``max_workers`` worker processes of ``threads_per_worker`` threads; ``max_workers: 1`` runs
    everything in this process, without a cluster.
    """

    #: model families: ``hipnn_ts`` (thermocg.train) and ``mscg`` (thermocg.mscg pair baseline)
    families: list[Literal["hipnn_ts", "mscg"]] = field(default_factory=lambda: ["hipnn_ts", "mscg"])
    #: state labels (e.g. ``T300_rho0.75``) that get a single-state model; None: every state point
    single_states: list[str] | None = None
    #: pooled training sets: name -> state labels; an empty list means every state point
    pooled: dict[str, list[str]] = field(default_factory=lambda: {"pooled": []})
    #: parallel units of work (worker processes); 1: in-process, no cluster
    max_workers: int = no_effect(1)
    #: torch/OpenMM threads per unit of work (1-2 on a small machine)
    threads_per_worker: int = no_effect(1)
    #: address of a running Dask scheduler (e.g. one started by dask-jobqueue); None: a LocalCluster
    scheduler_address: str | None = no_effect(None)
    #: a model "reproduces the AA structure" at a state when the mean |g_CG(r) - g_AA(r)| (over r
    #: and bead-type pairs) is at most this ...
    rdf_tolerance: float = 0.05
    #: ... and the integrated |p_CG(theta) - p_AA(theta)| of the angle distribution is at most this
    adf_tolerance: float = 0.1
    #: mapped AA frames per state used for the force errors (evenly spaced); None: all
    force_eval_frames: int | None = 200
    #: force components kept per (model, state) for the parity plots
    parity_samples: int = 4000
    progress: bool = no_effect(True)

    def __post_init__(self) -> None:
        if not self.families:
            raise ConfigError("study.families: give at least one model family")
        if len(set(self.families)) != len(self.families):
            raise ConfigError(f"study.families: duplicates in {self.families}")
        _positive("study.max_workers", self.max_workers)
        if not 1 <= self.threads_per_worker <= 64:
            raise ConfigError(f"study.threads_per_worker: must be in [1, 64], got {self.threads_per_worker}")
        for key in ("rdf_tolerance", "adf_tolerance", "force_eval_frames", "parity_samples"):
            _positive(f"study.{key}", getattr(self, key))
        for name in self.pooled:
            if not name or "/" in name or name.startswith("T"):
                raise ConfigError(f"study.pooled.{name}: a pooled-set name must be non-empty, without '/', "
                                  "and must not start with 'T' (reserved for state labels)")


# --------------------------------------------------------------------------------------------------
# simulate: CG molecular dynamics (thermocg.md); analysis: observables (thermocg.analysis)
# --------------------------------------------------------------------------------------------------

@dataclass
class SimulateConfig:
    """CG MD with a trained potential: Langevin (BAOAB) NVT, or velocity-Verlet NVE for checks; either
    also with multiple time steps (r-RESPA: ``respa_langevin``, ``respa_nve``)."""

    integrator: Literal["langevin", "nve", "respa_langevin", "respa_nve"] = "langevin"
    #: the timestep; for the r-RESPA integrators the outer step, at which the whole model is evaluated
    timestep_fs: float = 2.0
    #: None: the temperature of each state point
    temperature_K: float | None = None
    friction_per_ps: float = 1.0
    #: simulated time after the start frame (the last frame of the CG dataset)
    duration_ps: float = 100.0
    save_interval_fs: float = 200.0
    thermo_interval_fs: float = 200.0
    save_velocities: bool = True
    #: also write traj.extxyz (for ASE)
    extxyz: bool = False
    #: neighbour-list skin: rebuilt when a bead moved more than skin/2
    skin_A: float = 1.0
    #: ``auto``: CUDA when available, else CPU
    device: str = no_effect("auto")
    #: blow-up checks (every check_interval_steps and at every saved frame)
    check_interval_steps: int = 10
    max_temperature_factor: float = 5.0
    max_force_kcal_mol_A: float = 1000.0
    min_distance_A: float = 0.5
    #: r-RESPA only: inner steps per outer step (the fast part's step is timestep_fs / respa_inner_steps);
    #: docs/performance.md recommends timestep_fs: 24 with 6 inner steps for one-bead methanol
    respa_inner_steps: int = 6
    #: r-RESPA only: the fast part: "prior" (the model's repulsive prior) or "pair" (a pair potential
    #: fitted by MS-CG to the model's own forces on frames of the state's CG dataset; written beside the
    #: run as respa_fast.safetensors)
    respa_fast: Literal["prior", "pair"] = "pair"
    #: r-RESPA, fast part "pair": its cutoff (at most the model's), its force spline's knot spacing, and
    #: how many frames of the CG dataset (evenly spread) it is fitted on
    respa_pair_cutoff_A: float = 5.0
    respa_pair_spacing_A: float = 0.1
    respa_pair_fit_frames: int = 100

    def __post_init__(self) -> None:
        for key in ("timestep_fs", "friction_per_ps", "duration_ps", "save_interval_fs", "thermo_interval_fs",
                    "check_interval_steps", "max_temperature_factor", "max_force_kcal_mol_A", "temperature_K",
                    "respa_inner_steps", "respa_pair_cutoff_A", "respa_pair_spacing_A", "respa_pair_fit_frames"):
            _positive(f"simulate.{key}", getattr(self, key))
        _positive("simulate.skin_A", self.skin_A, allow_zero=True)
        _positive("simulate.min_distance_A", self.min_distance_A, allow_zero=True)
        for key in ("save_interval_fs", "thermo_interval_fs"):
            if getattr(self, key) < self.timestep_fs:
                raise ConfigError(f"simulate.{key}: must be at least simulate.timestep_fs ({self.timestep_fs})")

    @property
    def is_respa(self) -> bool:
        """Whether the integrator takes multiple time steps (and reads the ``respa_*`` keys)."""
        return self.integrator.startswith("respa_")

    def n_steps(self) -> int:
        """Steps of ``timestep_fs`` (outer steps for r-RESPA) in ``duration_ps``."""
        return int(round(self.duration_ps * 1000.0 / self.timestep_fs))

    def save_interval_steps(self) -> int:
        return max(1, int(round(self.save_interval_fs / self.timestep_fs)))

    def thermo_interval_steps(self) -> int:
        return max(1, int(round(self.thermo_interval_fs / self.timestep_fs)))

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class AnalysisConfig:
    """Observables of CG MD runs and their comparison with the mapped all-atom data."""

    #: ADF neighbour shell radius; None: the first minimum of the RDF after its first peak
    adf_cutoff_A: float | None = None
    adf_bin_width_deg: float = 2.0
    #: MSD fit window, as fractions of the longest lag
    msd_fit_start_fraction: float = 0.1
    msd_fit_end_fraction: float = 0.5
    #: frames per batch in force-error evaluation (bounds memory; no effect on results)
    force_batch_frames: int = no_effect(8)
    #: fraction of MD frames discarded as equilibration
    discard_fraction: float = 0.2

    def __post_init__(self) -> None:
        _positive("analysis.adf_cutoff_A", self.adf_cutoff_A)
        _positive("analysis.adf_bin_width_deg", self.adf_bin_width_deg)
        _positive("analysis.force_batch_frames", self.force_batch_frames)
        if not 0 <= self.msd_fit_start_fraction < self.msd_fit_end_fraction <= 1:
            raise ConfigError("analysis.msd_fit_start_fraction/msd_fit_end_fraction: need 0 <= start < end <= 1")
        if not 0 <= self.discard_fraction < 1:
            raise ConfigError(f"analysis.discard_fraction: must be in [0, 1), got {self.discard_fraction}")


@dataclass
class PairConfig:
    """The MS-CG pair-potential baseline (force matching onto a cubic B-spline of the pair force)."""

    #: model name under RUN_DIR/models/
    name: str = no_effect("mscg")
    #: pair cutoff; the fitted force goes smoothly to zero at it
    cutoff_A: float = 15.0
    #: start of the spline grid; every sampled pair distance must be above it
    r_min_A: float = 1.0
    #: knot spacing of the force spline
    spacing_A: float = 0.1
    #: Tikhonov regularisation, relative to the mean diagonal of the normal matrix
    ridge: float = 1.0e-10
    #: second-difference (curvature) penalty on the coefficients, relative like ridge; it fills
    #: sparsely sampled intervals smoothly instead of with wild coefficients
    smoothness: float = 1.0e-7
    #: an interval with fewer pairs than this is "sparsely sampled" (warned and regularised); the
    #: first interval with at least this many pairs sets the smallest sampled distance r_s
    min_pairs_per_interval: int = 20
    #: power p of the repulsive wall F = F_s + a[(r_s/r)^p - 1] below r_s
    extrapolation_power: float = 12.0
    #: a bead-type pair with no sampled distance: "error", or "zero" (no force but the wall)
    unsampled_pairs: Literal["error", "zero"] = "error"
    #: use every n-th frame; at most max_frames per state (None: all)
    frame_stride: int = 1
    max_frames: int | None = None
    #: the last fraction of each state's frames is held out to report force errors
    test_fraction: float = 0.1
    #: frames read per block (bounds memory)
    block_frames: int = 32
    #: LAMMPS table points written next to the model (0: no export)
    lammps_table_points: int = 5000
    n_threads: int = no_effect(2)
    progress: bool = no_effect(True)

    def __post_init__(self) -> None:
        for key in ("cutoff_A", "r_min_A", "spacing_A", "min_pairs_per_interval", "frame_stride",
                    "max_frames", "block_frames", "n_threads"):
            _positive(f"pair.{key}", getattr(self, key))
        for key in ("ridge", "smoothness", "lammps_table_points"):
            _positive(f"pair.{key}", getattr(self, key), allow_zero=True)
        if self.r_min_A >= self.cutoff_A:
            raise ConfigError(f"pair.r_min_A ({self.r_min_A}) must be below pair.cutoff_A ({self.cutoff_A})")
        if self.spacing_A * 4 > self.cutoff_A - self.r_min_A:
            raise ConfigError("pair.spacing_A: the grid from r_min_A to cutoff_A needs at least 4 intervals")
        if not self.extrapolation_power > 1:
            raise ConfigError(f"pair.extrapolation_power: must be > 1, got {self.extrapolation_power}")
        if not 0 <= self.test_fraction < 1:
            raise ConfigError(f"pair.test_fraction: must be in [0, 1), got {self.test_fraction}")


# --------------------------------------------------------------------------------------------------
# the whole config
# --------------------------------------------------------------------------------------------------

@dataclass
class Config:
    """A thermocg config file. Sections not given take their defaults."""

    #: where every artifact goes (relative paths are relative to the config file)
    run_dir: str = "runs/thermocg"
    seed: int = 2024
    system: SystemConfig = field(default_factory=SystemConfig)
    #: explicit state points ...
    states: list[StateConfig] = field(default_factory=list)
    #: ... and/or a grid of them
    state_grid: StateGridConfig | None = None
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    #: all-atom data from other engines (instead of, or besides, generation)
    imports: list[ImportConfig] = field(default_factory=list)
    mapping: MappingConfig = field(default_factory=MappingConfig)
    rdf: RDFConfig = field(default_factory=RDFConfig)
    # sections of later stages: each owned by its stage module
    train: TrainConfig = field(default_factory=TrainConfig)
    pair: PairConfig = field(default_factory=PairConfig)
    simulate: SimulateConfig = field(default_factory=SimulateConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    study: StudyConfig = field(default_factory=StudyConfig)

    def state_points(self) -> list[StateConfig]:
        """Explicit states followed by the grid's, without duplicates."""
        out = list(self.states)
        if self.state_grid is not None:
            out.extend(self.state_grid.expand())
        seen, unique = set(), []
        for s in out:
            key = (s.temperature_K, s.density_g_cm3, s.pressure_bar)
            if key not in seen:
                seen.add(key)
                unique.append(s)
        return unique


class _DuplicateKey(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last one
    silently: two ``simulate:`` sections would lose the first)."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise _DuplicateKey(f"the key {key!r} is given twice in one mapping (lines {seen[key].line + 1} "
                                f"and {key_node.start_mark.line + 1}); merge them into one")
        seen[key] = key_node.start_mark
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a YAML config; errors name the file and the key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader) or {}
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if overrides:
        data = {**data, **overrides}
    try:
        config = from_dict(Config, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    # relative file paths in a config are relative to the config file, wherever it is run from
    base = path.parent
    config.run_dir = _relative_to(base, config.run_dir)
    config.system.molecule = _molecule_path(base, config.system.molecule)
    for item in config.imports:
        item.path = _relative_to(base, item.path)
        if item.topology is not None:
            item.topology = _relative_to(base, item.topology)
        if item.molecule is not None:
            item.molecule = _molecule_path(base, item.molecule)
    return config


def _relative_to(base: Path, value: str) -> str:
    return value if Path(value).is_absolute() else str((base / value).resolve())


def _molecule_path(base: Path, value: str) -> str:
    """A molecule YAML path made absolute; a built-in molecule name is left as it is."""
    if value.endswith((".yaml", ".yml")) or os.sep in value:
        return _relative_to(base, value)
    return value


def write_resolved(config: Any, path: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> Path:
    """Write a resolved config (dataclass or dict) plus provenance as YAML, atomically."""
    from thermocg import provenance
    from thermocg.rundir import atomic_write_text

    data = {"config": to_dict(config), "provenance": provenance.collect()}
    if extra:
        data.update(to_dict(extra))
    return atomic_write_text(path, yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False))
