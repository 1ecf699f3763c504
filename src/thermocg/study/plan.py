"""The plan of a study: its models, its units of work with their keys and dependencies, and the checks
that can be made before any work.

A unit's **key** is the sha256 of the config sections it reads and of the keys of the units it depends
on, so a change anywhere upstream reaches every unit downstream and nothing else. Config keys marked
``no_effect`` (thread counts, progress bars) are left out (:func:`thermocg.config.result_dict`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thermocg.config import Config, ConfigError, StateConfig, result_dict, to_dict

#: bump when the meaning of a unit's outputs changes, so old manifests are not trusted
#: (2: manifests hold the stages' typed results: RDFResult/ADFResult, ModelSummary, MDRunSummary)
STUDY_FORMAT_VERSION = 2

#: the kinds of unit, in the order a state's and a model's units run
UNIT_KINDS = ("aa", "map", "ref", "model", "md", "eval")


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
    kind: str  # one of UNIT_KINDS
    key: str
    deps: tuple[str, ...]
    state: str | None = None
    model: ModelSpec | None = None

    @property
    def file_stem(self) -> str:
        return self.name.replace("/", "__")


def input_hash(*parts: Any) -> str:
    """sha256 of the JSON of ``parts`` (config sections through :func:`thermocg.config.to_dict`)."""
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


def imported_labels(config: Config) -> set[str]:
    """Labels of the state points whose all-atom data is imported rather than generated."""
    return {imp.state.to_state().label for imp in config.imports if imp.state is not None}


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


class _Planner:
    """Collects units in dependency order, keying each on its inputs and its dependencies' keys."""

    def __init__(self) -> None:
        self.units: list[Unit] = []
        self.keys: dict[str, str] = {}

    def add(self, name: str, kind: str, deps: tuple[str, ...], inputs: Any, **kw: Any) -> None:
        key = input_hash(STUDY_FORMAT_VERSION, kind, inputs, [self.keys[d] for d in deps])
        self.keys[name] = key
        self.units.append(Unit(name, kind, key, deps, **kw))


def _aa_inputs(config: Config, label: str, state: StateConfig) -> dict[str, Any]:
    """What the all-atom data of a state depends on: the imported file (and its size and time), or
    the system, the generation settings, the state and the seed."""
    for imp in config.imports:
        if imp.state is not None and imp.state.to_state().label == label:
            stat = Path(imp.path).stat() if Path(imp.path).exists() else None
            return {"import": imp, "size": stat.st_size if stat else None, "mtime": stat.st_mtime if stat else None}
    return {"system": config.system, "generate": result_dict(config.generate), "state": state, "seed": config.seed}


def plan_units(config: Config) -> list[Unit]:
    """Every unit of work in dependency order, each with the key of its inputs.

    Per state: ``aa/<state>`` -> ``map/<state>`` -> ``ref/<state>``; per model: ``model/<name>``
    (after the maps of its training states) and, at every state, ``md/<name>/<state>`` ->
    ``eval/<name>/<state>`` (which also needs ``ref/<state>``).
    """
    states = state_points(config)
    plan = _Planner()
    for label, state in states.items():
        plan.add(f"aa/{label}", "aa", (), _aa_inputs(config, label, state), state=label)
        plan.add(f"map/{label}", "map", (f"aa/{label}",), {"mapping": config.mapping}, state=label)
        plan.add(f"ref/{label}", "ref", (f"map/{label}",),
                 {"rdf": config.rdf, "analysis": result_dict(config.analysis), "noise_floor": "halves"}, state=label)
    for model in plan_models(config):
        section = "train" if model.family == "hipnn_ts" else "pair"
        # (the training states enter through train_states below)
        inputs = {"family": model.family, section: result_dict(getattr(config, section), drop=("train_states",)),
                  "train_states": model.train_states, "seed": config.seed}
        deps = tuple(f"map/{s}" for s in model.train_states)
        if model.family == "hipnn_ts" and config.train.cutoff_A is None:
            # the automatic cutoff must fit the smallest box of every state the model will be run at
            deps = tuple(f"map/{s}" for s in states)
        plan.add(f"model/{model.name}", "model", deps, inputs, model=model)
        for label in states:
            plan.add(f"md/{model.name}/{label}", "md", (f"model/{model.name}", f"map/{label}"),
                     {"simulate": result_dict(config.simulate), "seed": config.seed}, state=label, model=model)
            plan.add(f"eval/{model.name}/{label}", "eval", (f"md/{model.name}/{label}", f"ref/{label}"),
                     {"study": {k: getattr(config.study, k) for k in ("force_eval_frames", "parity_samples")},
                      "rdf": config.rdf, "analysis": result_dict(config.analysis)}, state=label, model=model)
    return plan.units


# --------------------------------------------------------------------------------------------------
# validation before any work
# --------------------------------------------------------------------------------------------------

def estimated_box_length_A(config: Config, state: StateConfig) -> float | None:
    """Edge of the cubic all-atom box (A) of a state point: (M / rho)^(1/3), M the mass of the
    state's molecules (mixtures: the counts of its composition).

    Pressure state points use the molecules' ``density_guess_g_cm3`` (the NPT run finds the real
    one), so the check is an estimate there. None when a molecule cannot be loaded."""
    from thermocg.allatom.mixture import estimated_box_length_A as mixture_box_length_A

    return mixture_box_length_A(config.system, state)


def _system_text(config: Config) -> str:
    names = ", ".join(config.system.molecule_names)
    return f"{config.system.total_molecules} molecules of {names}"


def _check_labels(states: dict[str, StateConfig], where: str, labels: list[str]) -> None:
    for label in labels:
        if label not in states:
            close = difflib.get_close_matches(label, list(states), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; state labels are {', '.join(states)}"
            raise ConfigError(f"{where}: {label!r} is not a state point of this study{hint}")


def _check_cutoffs_fit(config: Config, states: dict[str, StateConfig]) -> None:
    """Every cutoff of the study at most half the estimated cubic box of every state point."""
    study = config.study
    cutoffs: list[tuple[str, float | None]] = [
        ("train.cutoff_A", config.train.cutoff_A if "hipnn_ts" in study.families else None),
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
        checks = list(cutoffs)
        if label in generated and config.generate.nonbonded_cutoff_A is not None:
            # (left at None, the runner caps the force field's own cutoff to the box itself)
            checks.append(("generate.nonbonded_cutoff_A", config.generate.nonbonded_cutoff_A))
        for key, cutoff in checks:
            if cutoff is not None and cutoff > half + 1e-9:
                raise ConfigError(
                    f"{key}: {cutoff:g} A does not fit the box of state {label} ({_system_text(config)} make "
                    f"a cubic box of {length:.2f} A, half of it {half:.2f} A); lower the cutoff or raise the "
                    "number of molecules (system.n_molecules or system.molecules)"
                )


def validate_study(config: Config) -> dict[str, StateConfig]:
    """Check everything that can be checked before any work; raise ConfigError naming the key.

    Checks: at least one state point, unique labels, imports carry a state, single/pooled labels
    exist, and every cutoff (AA non-bonded, HIP-NN-TS, MS-CG, RDF range, ADF shell) fits the box
    of every density state point: at most half the edge of the estimated cubic box, from
    ``system.n_molecules`` and the molecule's mass. Returns label -> state point.
    """
    for k, imp in enumerate(config.imports):
        if imp.state is None:
            raise ConfigError(f"imports[{k}].state: a study needs the state point of every imported trajectory")
    states = state_points(config)
    if not states:
        raise ConfigError("states: the study needs at least one state point (states, state_grid or imports)")
    study = config.study
    if study.single_states is not None:
        _check_labels(states, "study.single_states", study.single_states)
    for name, members in study.pooled.items():
        _check_labels(states, f"study.pooled.{name}", members)
        if name in states:
            raise ConfigError(f"study.pooled.{name}: the name clashes with a state label")
    if not plan_models(config):
        raise ConfigError("study: no models to build (single_states is empty and pooled is empty)")
    _check_cutoffs_fit(config, states)
    return states
