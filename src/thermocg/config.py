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

def molecule_key(molecule: str) -> str:
    """The name a molecule of ``system.molecules`` goes by in compositions (``mole_fractions``,
    ``state_grid.composition``): a built-in molecule's name, or a YAML file's stem
    (``mols/ethanol.yaml`` -> ``ethanol``)."""
    if molecule.endswith((".yaml", ".yml")) or os.sep in molecule or "/" in molecule:
        return Path(molecule).stem
    return molecule


@dataclass
class MoleculeCountConfig:
    """One molecule type of a mixture and how many of it the box holds."""

    #: a built-in molecule (``methanol_trappe``, ``methanol_opls``, ``water_spce``) or a YAML path
    molecule: str
    #: molecules of this type (a state's ``mole_fractions`` may redistribute the total)
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ConfigError(f"system.molecules ({self.molecule}).n: must be non-negative, got {self.n}")


@dataclass
class CrossInteractionConfig:
    """Lennard-Jones parameters of one pair of site types of two different molecule types, in place
    of the mixing rule: E = 4 eps [(sigma/r)^12 - (sigma/r)^6]."""

    #: two site types (``Site.type``), each optionally qualified by its molecule (``water_spce:OW``)
    pair: list[str]
    sigma_A: float
    epsilon_kcal_mol: float

    def __post_init__(self) -> None:
        if len(self.pair) != 2:
            raise ConfigError(f"system.cross_interactions.pair: two site types, got {self.pair}")
        if not self.sigma_A > 0 or self.epsilon_kcal_mol < 0:
            raise ConfigError(f"system.cross_interactions {self.pair}: sigma_A must be positive and "
                              f"epsilon_kcal_mol non-negative, got {self.sigma_A}, {self.epsilon_kcal_mol}")


@dataclass
class SystemConfig:
    """The all-atom system to generate: one molecule type (``molecule`` + ``n_molecules``), or a
    mixture (``molecules``: a list of molecule types with counts). Exactly one of the two forms;
    an empty section is 256 TraPPE-UA methanol."""

    #: a built-in molecule (``methanol_trappe``, ``methanol_opls``, ``water_spce``) or a path to a YAML
    #: molecule definition (one-component form; default methanol_trappe)
    molecule: str | None = None
    #: molecules in the box (one-component form; default 256)
    n_molecules: int | None = None
    #: mixture form: ``[{molecule: methanol_trappe, n: 250}, {molecule: water_spce, n: 750}]``
    molecules: list[MoleculeCountConfig] | None = None
    #: mixtures: LJ parameters of site-type pairs across molecule types, replacing the mixing rule;
    #: required for every LJ pair of two molecule types whose force fields mix differently
    cross_interactions: list[CrossInteractionConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.molecules is not None:
            given = [key for key in ("molecule", "n_molecules") if getattr(self, key) is not None]
            if given:
                raise ConfigError(f"system: give either system.molecules (a mixture) or system.molecule / "
                                  f"system.n_molecules (one molecule type), not both (got system.{given[0]})")
            if len(self.molecules) < 2:
                raise ConfigError("system.molecules: a mixture needs two or more molecule types (for one, use "
                                  "system.molecule and system.n_molecules)")
            keys = [molecule_key(m.molecule) for m in self.molecules]
            if len(set(keys)) != len(keys):
                raise ConfigError(f"system.molecules: molecule types listed twice: {keys}")
            if sum(m.n for m in self.molecules) < 1:
                raise ConfigError("system.molecules: the counts n add up to zero molecules")
        else:
            if self.molecule is None:
                self.molecule = "methanol_trappe"
            if self.n_molecules is None:
                self.n_molecules = 256
            _positive("system.n_molecules", self.n_molecules)
            if self.cross_interactions:
                raise ConfigError("system.cross_interactions: only for mixtures (system.molecules)")

    @property
    def is_mixture(self) -> bool:
        return self.molecules is not None

    @property
    def molecule_names(self) -> list[str]:
        """The composition keys of the molecule types (:func:`molecule_key`), in system order."""
        if self.molecules is None:
            return [molecule_key(self.molecule)]
        return [molecule_key(m.molecule) for m in self.molecules]

    @property
    def total_molecules(self) -> int:
        return self.n_molecules if self.molecules is None else sum(m.n for m in self.molecules)

    def mole_fractions(self) -> dict[str, float]:
        """The system's own composition, name -> mole fraction (system order)."""
        if self.molecules is None:
            return {molecule_key(self.molecule): 1.0}
        total = self.total_molecules
        return {molecule_key(m.molecule): m.n / total for m in self.molecules}

    def counts(self, mole_fractions: dict[str, float] | None = None) -> list[tuple[str, int]]:
        """(molecule, count) per molecule type: the system's counts, or the total redistributed by
        ``mole_fractions`` (largest remainders, so that the counts add up to the same total)."""
        if self.molecules is None:
            return [(self.molecule, self.n_molecules)]
        if mole_fractions is None:
            return [(m.molecule, m.n) for m in self.molecules]
        total = self.total_molecules
        fractions = complete_mole_fractions(mole_fractions, self.molecule_names, "mole_fractions")
        exact = [fractions[molecule_key(m.molecule)] * total for m in self.molecules]
        counts = [int(x) for x in exact]
        for k in sorted(range(len(exact)), key=lambda k: counts[k] - exact[k])[: total - sum(counts)]:
            counts[k] += 1
        return [(m.molecule, n) for m, n in zip(self.molecules, counts)]


def complete_mole_fractions(given: dict[str, float], names: list[str], where: str) -> dict[str, float]:
    """Mole fractions of every molecule type in ``names`` (their order) from ``given``: all of them,
    or all but one (that one takes the rest). Errors name ``where`` and the problem."""
    unknown = [k for k in given if k not in names]
    if unknown:
        raise ConfigError(f"{where}: unknown molecule type(s) {unknown}; the system's are {names}")
    for k, x in given.items():
        if not 0.0 <= x <= 1.0:
            raise ConfigError(f"{where}.{k}: a mole fraction must be in [0, 1], got {x}")
    missing = [k for k in names if k not in given]
    if len(missing) > 1:
        raise ConfigError(f"{where}: give the mole fractions of all molecule types or of all but one; "
                          f"missing {missing}")
    total = sum(given.values())
    out = dict(given)
    if missing:
        if total > 1.0 + 1e-9:
            raise ConfigError(f"{where}: the mole fractions add up to {total:g} > 1")
        out[missing[0]] = max(0.0, 1.0 - total)
    elif abs(total - 1.0) > 1e-6:
        raise ConfigError(f"{where}: the mole fractions add up to {total:g}, not 1")
    return {k: out[k] for k in names}


@dataclass
class StateConfig:
    """One state point: temperature with density (NVT) or pressure (NPT then NVT); for a mixture
    optionally a composition. An import's state may give the temperature alone: its density is then
    read from the data (:func:`thermocg.allatom.readers.resolve_import_states`)."""

    temperature_K: float
    density_g_cm3: float | None = None
    pressure_bar: float | None = None
    #: mixtures: mole fraction per molecule type (names as in system.molecules: a built-in name or a
    #: YAML stem), for all types or all but one; the total count is the system's. None: the system's
    #: own counts
    mole_fractions: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.temperature_K <= 0:
            raise ConfigError(f"temperature_K: must be positive, got {self.temperature_K}")
        if self.density_g_cm3 is not None and self.pressure_bar is not None:
            raise ConfigError("pressure_bar: give density_g_cm3 (NVT) or pressure_bar (NPT), not both")
        _positive("density_g_cm3", self.density_g_cm3)
        if self.mole_fractions is not None:
            for k, x in self.mole_fractions.items():
                if not 0.0 <= x <= 1.0:
                    raise ConfigError(f"mole_fractions.{k}: a mole fraction must be in [0, 1], got {x}")

    @property
    def density_from_data(self) -> bool:
        """A temperature without density or pressure: an import's state whose density is to be read
        from its data."""
        return self.density_g_cm3 is None and self.pressure_bar is None

    def describe(self) -> str:
        """The values, for messages: ``temperature_K 300.0001, density_g_cm3 0.786``."""
        values = [("temperature_K", self.temperature_K), ("density_g_cm3", self.density_g_cm3),
                  ("pressure_bar", self.pressure_bar), ("mole_fractions", self.mole_fractions)]
        return ", ".join(f"{key} {value!r}" for key, value in values if value is not None)

    def to_state(self) -> StatePoint:
        """The state point; a composition must be complete (every molecule type, summing to 1) by now,
        as :meth:`Config.state_points` makes it. An import's temperature-only state must have taken
        its density from the data first."""
        if self.density_from_data:
            raise ConfigError(
                f"state point at temperature_K {self.temperature_K:g}: no density or pressure; an import's state "
                "takes its density from the data when the import runs (thermocg.allatom.readers."
                "resolve_import_states), and a generated state needs density_g_cm3 or pressure_bar")
        try:
            return StatePoint(self.temperature_K, self.density_g_cm3, self.pressure_bar,
                              mole_fractions=self.mole_fractions)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


@dataclass
class StateGridConfig:
    """A grid of state points: every temperature with every density (or every pressure), and for a
    mixture with every composition."""

    temperature_K: list[float] = field(default_factory=list)
    density_g_cm3: list[float] | None = None
    pressure_bar: list[float] | None = None
    #: mixtures: compositions, each a mapping as ``states[].mole_fractions``; None: the system's own
    composition: list[dict[str, float]] | None = None

    def expand(self) -> list[StateConfig]:
        if (self.density_g_cm3 is None) == (self.pressure_bar is None):
            raise ConfigError("state_grid: give exactly one of density_g_cm3 or pressure_bar")
        compositions: list[dict[str, float] | None] = [None] if self.composition is None else list(self.composition)
        if not compositions:
            raise ConfigError("state_grid.composition: an empty list (leave it out for the system's composition)")
        if self.density_g_cm3 is not None:
            return [StateConfig(t, density_g_cm3=d, mole_fractions=x)
                    for t, d, x in itertools.product(self.temperature_K, self.density_g_cm3, compositions)]
        return [StateConfig(t, pressure_bar=p, mole_fractions=x)
                for t, p, x in itertools.product(self.temperature_K, self.pressure_bar, compositions)]


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
class ImportMoleculeConfig:
    """One molecule type of an imported mixture: which molecules of the file it is, and its definition."""

    #: the thermocg molecule (built-in name or YAML path): its atom names, masses and types replace
    #: the file's, and its name becomes the molecule type (and the default bead type)
    molecule: str
    #: the molecule type's name in the file: a GROMACS moleculetype (.tpr/.top) or an extxyz
    #: molecule-type array entry; None: the thermocg molecule's name (what thermocg's own exports use)
    name_in_file: str | None = None
    #: LAMMPS: the range [first, last] (inclusive) of the data file's molecule IDs of this type
    molecule_ids: list[int] | None = None

    def __post_init__(self) -> None:
        if self.molecule_ids is not None and (len(self.molecule_ids) != 2
                                              or self.molecule_ids[0] > self.molecule_ids[1]):
            raise ConfigError(f"imports.molecules ({self.molecule}).molecule_ids: a range [first, last] with "
                              f"first <= last, got {self.molecule_ids}")


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
    #: the state point of the frames; a mixture's must give ``mole_fractions`` of every molecule type
    #: (checked against the file's counts). ``temperature_K`` alone: the density is the first frame's
    #: (4 significant digits); a declared density 2 % or more off the boxes' is warned about
    state: StateConfig | None = None
    #: optional molecule definition (name or YAML) giving masses/molecules when the topology lacks them
    molecule: str | None = None
    #: a mixture: the molecule types of the file (instead of ``molecule``), checked against the file
    molecules: list[ImportMoleculeConfig] | None = None
    #: LAMMPS only: the MD timestep, turning dump step numbers into times (None: time = step)
    timestep_fs: float | None = None
    #: the potential energy of each frame: a LAMMPS log (thermo columns Step and PotEng) or a GROMACS
    #: .edr; None: a GROMACS .edr next to the .trr (same stem) when there is one, and for extxyz each
    #: frame's ``energy``. Frames without an energy are imported without energies
    energy_file: str | None = None

    def __post_init__(self) -> None:
        _positive("imports.timestep_fs", self.timestep_fs)
        if self.format == "lammps" and self.lammps_units is None:
            raise ConfigError(f"lammps_units: missing; a LAMMPS dump ({self.path}) does not say its unit style: "
                              "declare it (real or metal)")
        if self.molecule is not None and self.molecules is not None:
            raise ConfigError(f"molecules: give molecule (one molecule type) or molecules (a mixture) for "
                              f"{self.path}, not both")
        if self.molecules is not None and len(self.molecules) < 1:
            raise ConfigError(f"molecules: an empty list (for {self.path})")


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

    Keys left at ``None`` are chosen from the data by :meth:`thermocg.train.Trainer.resolve` and
    written, resolved, to the model's ``resolved.yaml``. Defaults are the reference study's (see
    docs/hipnn_ts.md): 128 features, 20 sensitivities, one interaction layer of three atom layers,
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
    #: None: thermocg.train.automatic_cutoff_A of the boxes, min(15 A, 0.999 x half the shortest
    #: perpendicular box width, floored to 0.01 A); the training frames' boxes for `thermocg train`,
    #: every state's boxes in a study (so that the model fits every box it is simulated in)
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
    # -- temperature (docs/temperature.md): each frame is trained at its state point's temperature T
    #: "none": hipnn_ts, one W(R) for every state (today's model). "linear": hipnn_ts_thermal,
    #: W(R; T) = E_0(R) + (T - T_ref) / T_ref E_1(R), two energy heads on one network. "input":
    #: hipnn_ts_tinput, (T - T_ref) / T_ref as an input feature of every bead. Frames of one temperature
    #: give the temperature-agnostic hipnn_ts (with a warning), unless the thermal terms below are on
    temperature_dependence: Literal["none", "linear", "input"] = "none"
    #: T_ref (None: the mean temperature of the training frames)
    reference_temperature_K: float | None = None
    #: how far outside its training temperatures' range the model may be used with a warning before it
    #: is an error (None: half the width of that range; required when every frame has one temperature)
    max_temperature_extrapolation_K: float | None = None
    #: weight of the energy-matching term (linear only; needs the frames' all-atom potential energies):
    #: U_E(R) = E_0 - E_1 is fitted to the per-frame energies, up to one constant per state
    energy_weight: float = 0.0
    #: weight of the thermal-response term (linear only; needs the energies): F_1 = -grad E_1 is fitted
    #: to (T_ref / k_B T^2) (f - F(R; T)) (u - U_E(R) - c), whose mean at R is T_ref dF/dT
    thermal_response_weight: float = 0.0
    #: None: the RMS fluctuation of the training energies about their state's mean, pooled over states;
    #: the energy term is computed on energies / energy_scale
    energy_scale_kcal_mol: float | None = None
    # -- execution
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
        self._check_temperature_keys()

    def _check_temperature_keys(self) -> None:
        _positive("train.reference_temperature_K", self.reference_temperature_K)
        _positive("train.energy_scale_kcal_mol", self.energy_scale_kcal_mol)
        for key in ("max_temperature_extrapolation_K", "energy_weight", "thermal_response_weight"):
            _positive(f"train.{key}", getattr(self, key), allow_zero=True)
        if self.temperature_dependence == "none":
            for key in ("reference_temperature_K", "max_temperature_extrapolation_K"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"train.{key} is set but train.temperature_dependence is 'none' (it applies "
                                      "only to temperature_dependence: linear or input)")
        if self.temperature_dependence != "linear":
            for key in ("energy_weight", "thermal_response_weight"):
                if getattr(self, key) > 0:
                    raise ConfigError(
                        f"train.{key} needs train.temperature_dependence: linear (energy matching and the thermal "
                        "response fit the energetic part U_E = E_0 - E_1 and the thermal head E_1 of hipnn_ts_thermal; "
                        f"got temperature_dependence: {self.temperature_dependence})")


# --------------------------------------------------------------------------------------------------
# study: every model at every state point (thermocg.study)
# --------------------------------------------------------------------------------------------------

#: the study's model families: name -> (the config section that trains it, the value of that section's
#: ``temperature_dependence`` the family sets). A family is its section with that one key overridden;
#: the section's other keys (its temperature keys included) are shared by every family built from it.
STUDY_FAMILIES: dict[str, tuple[str, str]] = {
    "hipnn_ts": ("train", "none"),
    "hipnn_ts_thermal": ("train", "linear"),
    "hipnn_ts_tinput": ("train", "input"),
    "mscg": ("pair", "none"),
    "mscg_thermal": ("pair", "linear"),
}

#: the ``train`` keys a network size of ``study.network_sizes`` may override: the network's size and reach
NETWORK_SIZE_KEYS = ("n_features", "n_sensitivities", "n_interaction_layers", "n_atom_layers", "cutoff_A")


def _check_network_sizes(sizes: dict[str, Any], families: list[str]) -> dict[str, dict[str, Any]]:
    """``study.network_sizes`` checked and typed: each name filename-safe (letters, digits, ``_``; not
    ``base``, the name of the ``train`` section's own network), each entry a non-empty mapping of
    :data:`NETWORK_SIZE_KEYS` with the types and ranges of ``train``; a HIP-NN-TS family must be in
    the study. A ConfigError names the key."""
    if not sizes:
        return {}
    if not any(STUDY_FAMILIES.get(f, ("",))[0] == "train" for f in families):
        hipnn = ", ".join(f for f, (section, _) in STUDY_FAMILIES.items() if section == "train")
        raise ConfigError(f"study.network_sizes: sizes of the HIP-NN-TS network, but study.families has none of "
                          f"{hipnn}")
    hints = typing.get_type_hints(TrainConfig)
    out: dict[str, dict[str, Any]] = {}
    for name, overrides in sizes.items():
        where = f"study.network_sizes.{name}"
        if name == "base" or not name.replace("_", "a").isalnum() or not name.isascii():
            raise ConfigError(f"{where}: a size name is letters, digits and '_' (it becomes part of the model "
                              "names and directories, e.g. hipnn_ts.small-pooled), and not 'base' (the train "
                              "section's own network)")
        if not isinstance(overrides, dict) or not overrides:
            raise ConfigError(f"{where}: give a mapping of the train keys this size changes (any of "
                              f"{', '.join(NETWORK_SIZE_KEYS)}), got {overrides!r}")
        typed = {}
        for key, value in overrides.items():
            if key not in NETWORK_SIZE_KEYS:
                close = difflib.get_close_matches(str(key), NETWORK_SIZE_KEYS, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(f"{where}.{key}: not a key a network size may change ({hint}a size overrides "
                                  f"only {', '.join(NETWORK_SIZE_KEYS)} of the train section)")
            typed[key] = _coerce(value, hints[key], f"{where}.{key}")
            _positive(f"{where}.{key}", typed[key], allow_zero=key == "n_atom_layers")
        out[name] = typed
    return out


@dataclass
class StudyConfig:
    """The transferability study: which models to build, how to run them, what counts as a match.

    Models: for each family in ``families``, one model per single state point (``single_states``)
    and one per pooled set (``pooled``). Every model is simulated (NVT) and evaluated at every
    state point of the config. Units of work run through Dask's distributed scheduler with at most
    ``max_workers`` worker processes of ``threads_per_worker`` threads; ``max_workers: 1`` runs
    everything in this process, without a cluster.
    """

    #: model families: ``hipnn_ts`` (thermocg.train) and ``mscg`` (thermocg.mscg pair baseline), and
    #: their temperature-dependent forms (docs/temperature.md): ``hipnn_ts_thermal`` (train with
    #: temperature_dependence: linear), ``hipnn_ts_tinput`` (input) and ``mscg_thermal`` (pair with
    #: temperature_dependence: linear). The family sets its section's temperature_dependence; the section's
    #: other keys apply to every family built from it (the temperature keys only to the families that use them)
    families: list[Literal["hipnn_ts", "hipnn_ts_thermal", "hipnn_ts_tinput", "mscg", "mscg_thermal"]] = field(
        default_factory=lambda: ["hipnn_ts", "mscg"])
    #: state labels (e.g. ``T300_rho0.75``) that get a single-state model; None: every state point.
    #: Temperature-dependent families get none (one temperature gives the plain model) unless
    #: thermal_single_states is true
    single_states: list[str] | None = None
    #: pooled training sets: name -> its states, each a state label or a temperature in K (every state
    #: point at that temperature); an empty list means every state point. A state outside a model's
    #: set is held out: e.g. ``{interpolation: [260, 340], extrapolation: [260, 280]}``
    pooled: dict[str, list[str | float]] = field(default_factory=lambda: {"pooled": []})
    #: also build single-state models of the temperature-dependent families (each reduces to the plain
    #: model, with the trainer's warning; a check of that reduction, not a study of temperature)
    thermal_single_states: bool = False
    #: parallel units of work (worker processes); 1: in-process, no cluster
    max_workers: int = no_effect(1)
    #: torch/OpenMM threads per unit of work (1-2 on a small machine)
    threads_per_worker: int = no_effect(1)
    #: address of a running Dask scheduler (e.g. one started by dask-jobqueue); None: a LocalCluster
    scheduler_address: str | None = no_effect(None)
    #: a model "reproduces the AA structure" at a state when its RDF error (mean |g_CG(r) - g_AA(r)|
    #: over r and bead-type pairs) and its ADF error (integrated |p_CG(theta) - p_AA(theta)|) are each
    #: at most this multiple of that state's noise floor (the same error between the first and the
    #: second half of the mapped AA data), unless an absolute tolerance is given below
    tolerance_noise_multiple: float = 2.0
    #: absolute RDF tolerance instead of the multiple (None: the multiple of the noise floor) ...
    rdf_tolerance: float | None = None
    #: ... and absolute ADF tolerance (None: the multiple of the noise floor)
    adf_tolerance: float | None = None
    #: mapped AA frames per state used for the force errors (evenly spaced among the frames that no
    #: model of the study trained on); None: all of those
    force_eval_frames: int | None = 200
    #: force components kept per (model, state) for the parity plots
    parity_samples: int = 4000
    #: the Langevin friction of the CG runs: ``simulate`` (simulate.friction_per_ps everywhere), or
    #: ``match_diffusion``: per (model, state), a pilot run at simulate.friction_per_ps measures the
    #: CG diffusion coefficient and the production run uses the friction that brings it to the
    #: all-atom one (thermocg.analysis.msd.friction_matching_diffusion)
    langevin_friction: Literal["simulate", "match_diffusion"] = "simulate"
    #: length of that pilot run; None: half of simulate.duration_ps
    friction_pilot_ps: float | None = None
    #: more sizes of the HIP-NN-TS network, for the speed-accuracy frontier: name -> the train keys it
    #: changes (n_features, n_sensitivities, n_interaction_layers, n_atom_layers, cutoff_A; null cutoff:
    #: the automatic one). Each size trains the HIP-NN-TS families' models on the same training sets as
    #: the train section's network ("base"), named <family>.<size>-<training set>, e.g.
    #: ``{small: {n_features: 16, n_sensitivities: 8, cutoff_A: 6.0}}``; empty: the train section's only
    network_sizes: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: bool = no_effect(True)

    def __post_init__(self) -> None:
        if not self.families:
            raise ConfigError("study.families: give at least one model family")
        if len(set(self.families)) != len(self.families):
            raise ConfigError(f"study.families: duplicates in {self.families}")
        _positive("study.max_workers", self.max_workers)
        if not 1 <= self.threads_per_worker <= 64:
            raise ConfigError(f"study.threads_per_worker: must be in [1, 64], got {self.threads_per_worker}")
        for key in ("tolerance_noise_multiple", "rdf_tolerance", "adf_tolerance", "force_eval_frames",
                    "parity_samples", "friction_pilot_ps"):
            _positive(f"study.{key}", getattr(self, key))
        for name, members in self.pooled.items():
            if not name or "/" in name or name.startswith("T"):
                raise ConfigError(f"study.pooled.{name}: a pooled-set name must be non-empty, without '/', "
                                  "and must not start with 'T' (reserved for state labels)")
            for k, member in enumerate(members):
                if not isinstance(member, str) and not member > 0:
                    raise ConfigError(f"study.pooled.{name}[{k}]: a temperature must be positive (K), got {member}")
        self.network_sizes = _check_network_sizes(self.network_sizes, self.families)


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
    #: for the demo's one-bead methanol network, timestep_fs: 24 with 6 inner steps kept the structure
    #: (docs/performance.md); check a model with scripts/timestep_evidence.py before using a large step
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
    #: LAMMPS table points written next to the model (0: no export); a temperature-dependent model
    #: is exported at each training temperature (lammps/T<T>/)
    lammps_table_points: int = 5000
    #: "none": one force curve per pair (pair_table). "linear": F(r; T) = F0(r) + (T - T_ref) F1(r),
    #: fitted jointly on the pooled states' frames, each at its state's temperature (pair_table_thermal;
    #: frames of one temperature only give the agnostic pair_table, with a warning)
    temperature_dependence: Literal["none", "linear"] = "none"
    #: T_ref of the linear model (None: the mean temperature of the fitted frames)
    reference_temperature_K: float | None = None
    #: how far outside its training temperatures' range the linear model may be used with a warning
    #: before it is an error (None: half the width of that range); stored in the model header
    max_temperature_extrapolation_K: float | None = None
    n_threads: int = no_effect(2)
    progress: bool = no_effect(True)

    def __post_init__(self) -> None:
        for key in ("cutoff_A", "r_min_A", "spacing_A", "min_pairs_per_interval", "frame_stride",
                    "max_frames", "block_frames", "n_threads", "reference_temperature_K"):
            _positive(f"pair.{key}", getattr(self, key))
        for key in ("ridge", "smoothness", "lammps_table_points", "max_temperature_extrapolation_K"):
            _positive(f"pair.{key}", getattr(self, key), allow_zero=True)
        if self.temperature_dependence == "none":
            for key in ("reference_temperature_K", "max_temperature_extrapolation_K"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"pair.{key} is set but pair.temperature_dependence is 'none' (it applies "
                                      "only to temperature_dependence: linear)")
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

    def __post_init__(self) -> None:
        for k, state in enumerate(self.states):
            if state.density_from_data:
                raise ConfigError(f"states[{k}]: give density_g_cm3 or pressure_bar (a temperature alone is "
                                  "for imports, whose density is read from the data)")
        self.check_state_labels()

    def _named_state_points(self) -> list[tuple[str, StateConfig]]:
        """(where, state) of the explicit states and the grid's, each with its complete composition,
        exact duplicates dropped (the first kept)."""
        out = [(f"states[{k}]", s) for k, s in enumerate(self.states)]
        if self.state_grid is not None:
            out.extend(("state_grid", s) for s in self.state_grid.expand())
        names = self.system.molecule_names
        resolved = []
        for where, s in out:
            here = f"{where}.mole_fractions" if where != "state_grid" else "state_grid.composition"
            if not self.system.is_mixture:
                if s.mole_fractions is not None:
                    raise ConfigError(f"{here}: a composition needs a mixture (system.molecules)")
                resolved.append((where, s))
                continue
            given = s.mole_fractions if s.mole_fractions is not None else self.system.mole_fractions()
            fractions = complete_mole_fractions(given, names, here)
            resolved.append((where, dataclasses.replace(s, mole_fractions=fractions)))
        seen, unique = set(), []
        for where, s in resolved:
            key = _state_key(s)
            if key not in seen:
                seen.add(key)
                unique.append((where, s))
        return unique

    def state_points(self) -> list[StateConfig]:
        """Explicit states followed by the grid's, without duplicates.

        For a mixture every state comes back with its complete composition (``mole_fractions`` of
        every molecule type, system order: the one given, completed, or the system's own), so that
        its label carries the composition; a composition in a one-component system is an error.
        Two different state points with one label are an error (:meth:`check_state_labels`)."""
        return [s for _, s in self._named_state_points()]

    def check_state_labels(self) -> None:
        """Refuse two different state points whose labels (the run directory's names for them, values
        to 6 significant digits: ``T300_rho0.786``) are the same: the second would overwrite the first's
        all-atom data, CG dataset and results. Generated states are compared with each other and with
        the imports' (an import may supply a generated state point, with the very same values); imports
        are compared with each other (each state point is imported once). Imports whose density is
        still to be read from the data are left out (they are checked when it has been)."""
        generated = self._named_state_points()
        first: dict[str, tuple[str, StateConfig]] = {}
        for where, state in generated:
            label = state.to_state().label
            if label in first:
                _label_clash(label, first[label], (where, state))
            first[label] = (where, state)
        imported: dict[str, tuple[str, StateConfig]] = {}
        for k, item in enumerate(self.imports):
            if item.state is None or item.state.density_from_data:
                continue
            where = f"imports[{k}].state ({item.path})"
            label = item.state.to_state().label
            if label in imported:
                _label_clash(label, imported[label], (where, item.state), imported_twice=True)
            imported[label] = (where, item.state)
            if label in first and _state_key(first[label][1]) != _state_key(item.state):
                _label_clash(label, first[label], (where, item.state))


def _state_key(state: StateConfig) -> tuple:
    return (state.temperature_K, state.density_g_cm3, state.pressure_bar,
            None if state.mole_fractions is None else tuple(state.mole_fractions.items()))


def _label_clash(label: str, a: tuple[str, StateConfig], b: tuple[str, StateConfig], *,
                 imported_twice: bool = False) -> None:
    (where_a, state_a), (where_b, state_b) = a, b
    if imported_twice and _state_key(state_a) == _state_key(state_b):
        raise ConfigError(f"{where_a} and {where_b}: the state point {label} is imported twice; import each "
                          "state point once")
    raise ConfigError(
        f"{where_a} ({state_a.describe()}) and {where_b} ({state_b.describe()}) have the same label {label} "
        "(labels keep 6 significant digits), so the second would overwrite the first's data in the run "
        "directory; make them differ within 6 significant digits, or drop one")


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
    if config.system.molecule is not None:
        config.system.molecule = _molecule_path(base, config.system.molecule)
    for component in config.system.molecules or []:
        component.molecule = _molecule_path(base, component.molecule)
    for item in config.imports:
        item.path = _relative_to(base, item.path)
        for key in ("topology", "energy_file"):
            if getattr(item, key) is not None:
                setattr(item, key, _relative_to(base, getattr(item, key)))
        if item.molecule is not None:
            item.molecule = _molecule_path(base, item.molecule)
        for component in item.molecules or []:
            component.molecule = _molecule_path(base, component.molecule)
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
