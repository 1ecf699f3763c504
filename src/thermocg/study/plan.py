"""The plan of a study: its models, its units of work with their keys and dependencies, and the
checks that can be made before any work.

A unit's **key** is the sha256 of the config sections it reads, of the *contents* of the files it
reads (a molecule YAML, an imported trajectory and its topology: :class:`~thermocg.study.files.FileHashes`)
and of the keys of the units it depends on, so a change anywhere upstream reaches every unit
downstream and nothing else. Config keys marked ``no_effect`` (thread counts, progress bars) are
left out (:func:`thermocg.config.result_dict`); so are the paths of input files, whose contents
stand for them (moving a data file reruns nothing; editing it reruns what reads it).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from thermocg.config import (NETWORK_SIZE_KEYS, STUDY_FAMILIES, Config, ConfigError, ImportConfig, StateConfig,
                             result_dict, to_dict)
from thermocg.study.files import FileHashes

#: bump when the meaning of a unit's outputs changes, so old manifests are not trusted
#: (2: manifests hold the stages' typed results; 3: keys hold input files' contents, manifests hold
#: relative paths, output hashes and their upstream manifests' hashes, force errors on held-out frames)
STUDY_FORMAT_VERSION = 3

#: what the ref and eval units measure per bead type (thermocg.study.per_type): part of their keys, so
#: that results written before these existed are measured again (those two kinds only, not the AA
#: data, the trainings or the CG runs)
PER_TYPE_OUTPUTS = "rdf per pair, adf per centre type, D per type, force rmse halves per type"

#: the kinds of unit, in the order a state's and a model's units run
UNIT_KINDS = ("aa", "map", "ref", "model", "md", "eval")


@dataclass(frozen=True)
class ModelSpec:
    """One CG model of the study: a family (of one network size) trained on a set of state points."""

    family: str  # a key of thermocg.config.STUDY_FAMILIES: "hipnn_ts", "mscg_thermal", ...
    train_set: str  # a state label (single-state model) or a pooled-set name
    train_states: tuple[str, ...]
    #: a name of study.network_sizes (HIP-NN-TS families only); None: the train section's own network
    size: str | None = None

    @property
    def variant(self) -> str:
        """The family and its network size, as the matrices and the report group models:
        ``hipnn_ts``, ``hipnn_ts.small`` (:func:`variant_name`)."""
        return variant_name(self.family, self.size)

    @property
    def name(self) -> str:
        return f"{self.variant}-{self.train_set}"

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


def import_of(config: Config, label: str) -> tuple[int, ImportConfig] | None:
    """(index, entry) of the ``imports`` entry of state ``label``, or None for a generated state."""
    for k, imp in enumerate(config.imports):
        if imp.state is not None and imp.state.to_state().label == label:
            return k, imp
    return None


def is_molecule_file(name: str) -> bool:
    """Whether a ``molecule`` value names a YAML file (else it is a built-in molecule's name)."""
    return name.endswith((".yaml", ".yml")) or "/" in name


def variant_name(family: str, size: str | None) -> str:
    """A family of one network size: the family itself for the train section's network, else
    ``<family>.<size>`` (filename-safe: size names are letters, digits and ``_``)."""
    return family if size is None else f"{family}.{size}"


def study_variants(config: Config) -> list[str]:
    """The families of the study and then each HIP-NN-TS family at each of ``study.network_sizes``
    (:func:`variant_name`), in the order of :func:`plan_models`."""
    return list(config.study.families) + [variant_name(f, size) for size in config.study.network_sizes
                                          for f in config.study.families if family_section(f) == "train"]


def network_sizes(config: Config) -> dict[str, dict[str, Any]]:
    """``base`` (the train section's network) and each of ``study.network_sizes``, as the values of
    :data:`~thermocg.config.NETWORK_SIZE_KEYS` they train with (cutoff_A None: the automatic one)."""
    base = {key: getattr(config.train, key) for key in NETWORK_SIZE_KEYS}
    return {"base": base, **{name: {**base, **changes} for name, changes in config.study.network_sizes.items()}}


def family_section(family: str) -> str:
    """The config section a family trains from: ``train`` (HIP-NN-TS) or ``pair`` (MS-CG)."""
    return STUDY_FAMILIES[family][0]


def base_family(family: str) -> str:
    """The temperature-agnostic family of the same trainer: ``hipnn_ts`` or ``mscg``."""
    return "hipnn_ts" if family_section(family) == "train" else "mscg"


def temperature_dependent(family: str) -> bool:
    """Whether the family's models depend on the temperature (its temperature_dependence is not none)."""
    return STUDY_FAMILIES[family][1] != "none"


#: the temperature keys of each section, and the temperature_dependence values that use each
_TEMPERATURE_KEYS = {
    "train": {"reference_temperature_K": ("linear", "input"), "max_temperature_extrapolation_K": ("linear", "input"),
              "energy_weight": ("linear",), "thermal_response_weight": ("linear",)},
    "pair": {"reference_temperature_K": ("linear",), "max_temperature_extrapolation_K": ("linear",)},
}


def _state_temperatures(states: dict[str, StateConfig], labels: tuple[str, ...] | list[str]) -> list[float]:
    return [float(states[s].temperature_K) for s in labels]


def extrapolation_needed_K(config: Config, train_states: tuple[str, ...]) -> float:
    """How far (K) the farthest state of the study lies outside the temperature range of ``train_states``
    (0 when every state is inside it): what a temperature-dependent model of those states must be
    allowed to extrapolate, since the study runs every model at every state."""
    states = state_points(config)
    trained = _state_temperatures(states, train_states)
    low, high = min(trained), max(trained)
    return max([0.0] + [max(low - t, t - high) for t in _state_temperatures(states, list(states))])


def family_settings(config: Config, model: ModelSpec) -> Any:
    """The config section (``train`` or ``pair``) that trains ``model``: the config's own, with
    ``temperature_dependence`` set by the family and the temperature keys that the family does not use
    set back to their defaults. For a temperature-dependent model whose
    ``max_temperature_extrapolation_K`` is None, the distance from its training temperatures to the
    farthest state of the study (:func:`extrapolation_needed_K`), so that it can be run and judged at
    every state (None when every state is inside its range: the model's own default, half its range).
    A model of a network size (``model.size``) has that size's keys of ``study.network_sizes`` too."""
    section_name, dependence = STUDY_FAMILIES[model.family]
    section = getattr(config, section_name)
    defaults = {f.name: f.default for f in dataclasses.fields(section)}
    changes: dict[str, Any] = {"temperature_dependence": dependence}
    if model.size is not None:
        changes.update(config.study.network_sizes[model.size])
    for key, users in _TEMPERATURE_KEYS[section_name].items():
        if dependence not in users:
            changes[key] = defaults[key]
    if dependence != "none" and section.max_temperature_extrapolation_K is None:
        needed = extrapolation_needed_K(config, model.train_states)
        changes["max_temperature_extrapolation_K"] = needed if needed > 0 else None
    return dataclasses.replace(section, **changes)


def pooled_members(config: Config, name: str) -> tuple[str, ...]:
    """The state labels of pooled set ``name``: its labels as given, each temperature (K) replaced by
    the labels of the state points at that temperature (in state order), every state when it is empty;
    a temperature or label that is not the study's is a ConfigError naming the key."""
    states = state_points(config)
    members = config.study.pooled[name]
    if not members:
        return tuple(states)
    out: list[str] = []
    for k, member in enumerate(members):
        if isinstance(member, str):
            _check_labels(states, f"study.pooled.{name}", [member])
            found = [member]
        else:
            found = [s for s, state in states.items() if abs(float(state.temperature_K) - float(member)) < 1e-6]
            if not found:
                temperatures = sorted({float(state.temperature_K) for state in states.values()})
                raise ConfigError(f"study.pooled.{name}[{k}]: no state point of this study is at {member:g} K (its "
                                  f"temperatures are {', '.join(f'{t:g}' for t in temperatures)} K)")
        out.extend(s for s in found if s not in out)
    return tuple(out)


def plan_models(config: Config) -> list[ModelSpec]:
    """Every model of the study, per family: single-state models first (in state order), then the
    pooled sets. Temperature-dependent families get single-state models only with
    ``study.thermal_single_states`` (trained at one temperature they reduce to the plain model).
    Then, per size of ``study.network_sizes``, the same models of every HIP-NN-TS family at that size."""
    labels = list(state_points(config))
    study = config.study
    singles = labels if study.single_states is None else list(study.single_states)
    models = []
    for size in [None, *study.network_sizes]:
        for family in study.families:
            if size is not None and family_section(family) != "train":
                continue
            if study.thermal_single_states or not temperature_dependent(family):
                for label in singles:
                    models.append(ModelSpec(family, label, (label,), size))
            for name in study.pooled:
                models.append(ModelSpec(family, name, pooled_members(config, name), size))
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


def _file_content(hashes: FileHashes, path: str | None) -> str | None:
    """The sha256 of an input file; a missing file keys as its path (the unit fails with a clear error
    when it runs, and keys anew once the file exists)."""
    if path is None:
        return None
    try:
        return hashes.sha256(path)
    except OSError:
        return f"missing: {path}"


def _molecule_key(hashes: FileHashes, name: str | None) -> str | None:
    """A molecule for a key: a built-in name as it is, a YAML file by its contents."""
    if name is None or not is_molecule_file(name):
        return name
    return "sha256:" + str(_file_content(hashes, name))


def _aa_inputs(config: Config, label: str, state: StateConfig, hashes: FileHashes) -> dict[str, Any]:
    """What the all-atom data of a state depends on: the imported files' contents and how they are
    read, or the system (its molecule file's contents), the generation settings, the state and the seed."""
    found = import_of(config, label)
    if found is not None:
        imp = found[1]
        return {"import": {**result_dict(imp, drop=("path", "topology", "molecule", "energy_file")),
                           "trajectory": _file_content(hashes, imp.path),
                           "topology": _file_content(hashes, imp.topology),
                           "energy_file": _file_content(hashes, imp.energy_file),
                           "molecule": _molecule_key(hashes, imp.molecule),
                           "molecule_files": [_molecule_key(hashes, m.molecule) for m in imp.molecules or []]}}
    system = {**result_dict(config.system), "molecule": _molecule_key(hashes, config.system.molecule),
              "molecule_files": [_molecule_key(hashes, m.molecule) for m in config.system.molecules or []]}
    return {"system": system, "generate": result_dict(config.generate), "state": state, "seed": config.seed}


def models_trained_at(config: Config, label: str) -> list[ModelSpec]:
    """The models of the study whose training set includes state ``label``."""
    return [m for m in plan_models(config) if label in m.train_states]


def _held_out_inputs(config: Config, label: str) -> dict[str, Any]:
    """What the choice of a state's held-out frames (force errors) depends on: the frame selection
    of every family that trains on the state (:func:`thermocg.study.stages.held_out_frames`)."""
    families = sorted({base_family(m.family) for m in models_trained_at(config, label)})
    out: dict[str, Any] = {"families": families}
    if "hipnn_ts" in families:
        out["train"] = {k: to_dict(getattr(config.train, k)) for k in ("split", "frame_stride", "n_blocks")}
    if "mscg" in families:
        out["pair"] = {k: getattr(config.pair, k) for k in ("frame_stride", "max_frames", "test_fraction")}
    return out


def plan_units(config: Config, *, hashes: FileHashes | None = None) -> list[Unit]:
    """Every unit of work in dependency order, each with the key of its inputs.

    Per state: ``aa/<state>`` -> ``map/<state>`` -> ``ref/<state>``; per model: ``model/<name>``
    (after the maps of its training states) and, at every state, ``md/<name>/<state>`` (which also
    needs ``ref/<state>`` when ``study.langevin_friction`` is ``match_diffusion``) ->
    ``eval/<name>/<state>`` (which also needs ``ref/<state>``). ``hashes`` caches the input files'
    hashes (by default they are computed afresh).
    """
    hashes = hashes or FileHashes()
    states = state_points(config)
    study = config.study
    plan = _Planner()
    for label, state in states.items():
        plan.add(f"aa/{label}", "aa", (), _aa_inputs(config, label, state, hashes), state=label)
        plan.add(f"map/{label}", "map", (f"aa/{label}",), {"mapping": config.mapping}, state=label)
        plan.add(f"ref/{label}", "ref", (f"map/{label}",),
                 {"rdf": config.rdf, "analysis": result_dict(config.analysis), "noise_floor": "halves",
                  "density": "mean", "per_type": PER_TYPE_OUTPUTS}, state=label)
    friction: dict[str, Any] = {"langevin_friction": study.langevin_friction}
    if study.langevin_friction == "match_diffusion":
        friction["friction_pilot_ps"] = study.friction_pilot_ps
        friction["analysis"] = result_dict(config.analysis)
    for model in plan_models(config):
        section = family_section(model.family)
        # (the training states enter through train_states below; the family's own section, with its
        # temperature_dependence, so that two families never share a unit)
        inputs = {"family": model.family, section: result_dict(family_settings(config, model), drop=("train_states",)),
                  "train_states": model.train_states, "seed": config.seed}
        deps = tuple(f"map/{s}" for s in model.train_states)
        if section == "train" and inputs[section]["cutoff_A"] is None:
            # the automatic cutoff must fit the smallest box of every state the model will be run at
            deps = tuple(f"map/{s}" for s in states)
        plan.add(f"model/{model.name}", "model", deps, inputs, model=model)
        for label in states:
            md_deps = (f"model/{model.name}", f"map/{label}")
            if study.langevin_friction == "match_diffusion":
                md_deps += (f"ref/{label}",)
            plan.add(f"md/{model.name}/{label}", "md", md_deps,
                     {"simulate": result_dict(config.simulate), "seed": config.seed, "friction": friction},
                     state=label, model=model)
            plan.add(f"eval/{model.name}/{label}", "eval", (f"md/{model.name}/{label}", f"ref/{label}"),
                     {"study": {k: getattr(study, k) for k in ("force_eval_frames", "parity_samples")},
                      "held_out": _held_out_inputs(config, label), "rdf": config.rdf,
                      "analysis": result_dict(config.analysis), "friction_fit": "additive",
                      "per_type": PER_TYPE_OUTPUTS},
                     state=label, model=model)
    return plan.units


# --------------------------------------------------------------------------------------------------
# validation before any work
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StateBox:
    """What a state's all-atom box holds, before any work: from the first frame of an imported
    trajectory, or estimated for generated data (cubic, from the molecule count, the molecule's mass
    and the state's density; for a pressure state the molecule's density guess)."""

    label: str
    box_A: np.ndarray  # (3, 3), rows are cell vectors
    n_molecules: int
    density_g_cm3: float
    source: str  # where the numbers come from, for messages

    @property
    def half_width_A(self) -> float:
        """Half the shortest perpendicular width of the box, A: the largest cutoff that sees one image."""
        box = np.asarray(self.box_A, dtype=np.float64)
        volume = abs(np.linalg.det(box))
        widths = [volume / np.linalg.norm(np.cross(box[(i + 1) % 3], box[(i + 2) % 3])) for i in range(3)]
        return 0.5 * min(widths)


def load_molecule(name: str, key: str) -> Any:
    """The molecule definition ``name`` (built-in or YAML), or a ConfigError naming ``key`` and the problem."""
    from thermocg.allatom.molecules import get_molecule

    try:
        return get_molecule(name)
    except (ValueError, OSError, TypeError, KeyError) as exc:  # MoleculeError is a ValueError
        raise ConfigError(f"{key}: {exc}") from None


def system_molecules(config: Config) -> None:
    """Load every molecule definition of ``system`` (one molecule, or each of ``system.molecules``);
    a ConfigError naming the key if one cannot be loaded."""
    if config.system.molecules:
        for k, item in enumerate(config.system.molecules):
            load_molecule(item.molecule, f"system.molecules[{k}].molecule")
    else:
        load_molecule(config.system.molecule, "system.molecule")


def estimated_box_length_A(config: Config, state: StateConfig) -> float:
    """Edge of the cubic all-atom box (A) that generation builds for a state point: (M / rho)^(1/3)
    for the state's molecules (a mixture: the counts of its composition) at the state's density
    (pressure state points: the molecules' ``density_guess_g_cm3``; the NPT run finds the real one,
    so the check is an estimate there)."""
    from thermocg.allatom.mixture import estimated_box_length_A as mixture_box_length_A

    system_molecules(config)
    length = mixture_box_length_A(config.system, state)
    if length is None:  # pragma: no cover - the molecules loaded above
        raise ConfigError("system: the molecules of the system cannot be loaded")
    return length


def generated_state_box(config: Config, label: str, state: StateConfig) -> StateBox:
    """The :class:`StateBox` of a generated state (estimated)."""
    from thermocg.allatom.mixture import mixture_from_config

    mixture = mixture_from_config(config.system, state.mole_fractions)
    density = state.density_g_cm3 if state.density_g_cm3 is not None else mixture.density_guess_g_cm3
    length = estimated_box_length_A(config, state)
    names = ", ".join(config.system.molecule_names)
    return StateBox(label, np.eye(3) * length, mixture.n_molecules, float(density),
                    f"{mixture.n_molecules} molecules of {names} at {density:g} g/cm^3 make a cubic box of "
                    f"{length:.2f} A")


def imported_state_box(config: Config, index: int, label: str) -> StateBox:
    """The :class:`StateBox` of an imported state, from the first frame of its trajectory (read with
    the import's own reader, :func:`thermocg.allatom.readers.peek_import`; a file that cannot be read
    is a ConfigError naming the ``imports`` entry)."""
    from thermocg.allatom.readers import TrajectoryImportError, peek_import

    imp = config.imports[index]
    try:
        peek = peek_import(imp)
    except TrajectoryImportError as exc:
        raise ConfigError(f"imports[{index}] ({imp.path}): {exc}") from None
    box = np.asarray(peek.box_A, dtype=np.float64)
    edges = " x ".join(f"{np.linalg.norm(v):.2f}" for v in box)
    return StateBox(label, box, peek.n_molecules, peek.density_g_cm3,
                    f"imported: {peek.n_molecules} molecules in a {edges} A box of {peek.density_g_cm3:.4g} "
                    f"g/cm^3, from the first frame of {imp.path}")


def state_boxes(config: Config) -> dict[str, StateBox]:
    """label -> :class:`StateBox` of every state point: imported ones from their data, generated ones
    estimated."""
    out = {}
    for label, state in state_points(config).items():
        found = import_of(config, label)
        out[label] = imported_state_box(config, found[0], label) if found else generated_state_box(config, label, state)
    return out


def _check_labels(states: dict[str, StateConfig], where: str, labels: list[str]) -> None:
    for label in labels:
        if label not in states:
            close = difflib.get_close_matches(label, list(states), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; state labels are {', '.join(states)}"
            raise ConfigError(f"{where}: {label!r} is not a state point of this study{hint}")


def _check_allatom_cutoff(config: Config, box: StateBox) -> None:
    """``generate.nonbonded_cutoff_A`` by the runner's own rule (at most 0.45 of the box's shortest
    width: :func:`thermocg.allatom.runner.resolve_cutoff_A`), on the box generation will build."""
    from thermocg.allatom.mixture import mixture_from_config
    from thermocg.allatom.runner import GenerateError, resolve_cutoff_A

    system_molecules(config)
    mixture = mixture_from_config(config.system)
    with warnings.catch_warnings():  # (a force-field cutoff that the runner shortens is not an error)
        warnings.simplefilter("ignore")
        try:
            resolve_cutoff_A(mixture, box.box_A, config.generate.nonbonded_cutoff_A)
        except GenerateError as exc:
            raise ConfigError(f"generate.nonbonded_cutoff_A: state {box.label} ({box.source}): {exc}") from None


def _check_cutoffs_fit(config: Config, boxes: dict[str, StateBox]) -> None:
    """Every CG cutoff of the study at most half the shortest width of every state's box, and the
    all-atom cutoff by the runner's rule at every generated state."""
    sections = {family_section(f) for f in config.study.families}
    cutoffs: list[tuple[str, float | None]] = [
        ("train.cutoff_A", config.train.cutoff_A if "train" in sections else None),
        ("rdf.r_max_A", config.rdf.r_max_A),
        ("analysis.adf_cutoff_A", config.analysis.adf_cutoff_A),
    ]
    if "pair" in sections:
        cutoffs.append(("pair.cutoff_A", config.pair.cutoff_A))
    cutoffs += [(f"study.network_sizes.{name}.cutoff_A", size.get("cutoff_A"))
                for name, size in config.study.network_sizes.items()]
    imported = imported_labels(config)
    for label, box in boxes.items():
        half = box.half_width_A
        for key, cutoff in cutoffs:
            if cutoff is not None and cutoff > half + 1e-9:
                fix = "lower the cutoff" + ("" if label in imported else " or raise the number of molecules")
                raise ConfigError(f"{key}: {cutoff:g} A does not fit the box of state {label} ({box.source}, "
                                  f"half of its shortest width {half:.2f} A); {fix}")
        if label not in imported:
            _check_allatom_cutoff(config, box)


def _resolve_import_states(config: Config) -> None:
    """Imports whose state gives a temperature only take their density from the data (in place), so
    their labels are known before any work; a file that cannot be read is a ConfigError."""
    if not any(imp.state is not None and imp.state.density_from_data for imp in config.imports):
        return
    from thermocg.allatom.readers import TrajectoryImportError, resolve_import_states

    try:
        resolve_import_states(config)
    except TrajectoryImportError as exc:
        raise ConfigError(f"imports: {exc}") from None


def _uses_energies(config: Config, family: str) -> bool:
    """Whether the family's models fit energies (which give a temperature dependence at one temperature)."""
    return STUDY_FAMILIES[family] == ("train", "linear") and (
        config.train.energy_weight > 0 or config.train.thermal_response_weight > 0)


def check_temperature_families(config: Config) -> None:
    """The checks of the temperature-dependent families, before any work; a ConfigError naming the key.

    - a ``train``/``pair`` section whose own ``temperature_dependence`` is not none needs a family of
      that kind in the study (in a study the family sets it; the section's value would otherwise be
      silently replaced);
    - a temperature-dependent family needs at least one model (by default only pooled sets give it one);
    - each of its models needs training states at two or more temperatures (at one it is the plain
      model), unless it fits energies (``train.energy_weight`` / ``thermal_response_weight``);
    - a ``max_temperature_extrapolation_K`` that is given must reach every state of the study from every
      model's training temperatures (the study runs every model at every state; the MD would refuse)."""
    study = config.study
    for section_name in ("train", "pair"):
        dependence = getattr(config, section_name).temperature_dependence
        wanted = [f for f, kind in STUDY_FAMILIES.items() if kind == (section_name, dependence)]
        if dependence != "none" and not set(wanted) & set(study.families):
            raise ConfigError(
                f"{section_name}.temperature_dependence: {dependence}, but study.families has no {' or '.join(wanted)}; "
                f"in a study the family sets the temperature dependence: add {wanted[0]} to study.families (the "
                f"section's temperature keys apply to it)")
    models = plan_models(config)
    states = state_points(config)
    for family in study.families:
        if not temperature_dependent(family):
            continue
        mine = [m for m in models if m.family == family]
        if not mine:
            raise ConfigError(f"study.families: {family} is temperature-dependent and gets pooled models only (one "
                              "temperature gives the plain model), but study.pooled is empty; add a pooled set "
                              "at two or more temperatures")
        section_name = family_section(family)
        section = getattr(config, section_name)
        for m in mine:
            where = f"study.pooled.{m.train_set}" if m.train_set in study.pooled else f"study.single_states ({m.train_set})"
            temperatures = sorted(set(_state_temperatures(states, m.train_states)))
            if len(temperatures) < 2 and not _uses_energies(config, family) and m.pooled:
                raise ConfigError(
                    f"{where}: every state of it is at {temperatures[0]:g} K, so the {family} model trained on it "
                    f"would be the plain {base_family(family)} model; give states at two or more temperatures, or "
                    f"leave {family} out of study.families")
            limit = section.max_temperature_extrapolation_K
            needed = extrapolation_needed_K(config, m.train_states)
            if limit is not None and needed > limit + 1e-9 and (len(temperatures) > 1 or _uses_energies(config, family)):
                raise ConfigError(
                    f"{section_name}.max_temperature_extrapolation_K: {limit:g} K, but the {family} model of "
                    f"{where} (trained at {', '.join(f'{t:g}' for t in temperatures)} K) would be run {needed:g} K "
                    "outside that range at a state of the study, which the MD refuses; raise it to at least "
                    f"{needed:g} K, or leave it null (a study then allows the distance to its farthest state)")


def validate_study(config: Config) -> dict[str, StateConfig]:
    """Check everything that can be checked before any work; raise ConfigError naming the key.

    Checks: at least one state point, unique labels, imports carry a state, single/pooled labels
    exist, the molecule definitions load (``system.molecule`` where data is generated, each
    ``imports[].molecule``), every imported trajectory's first frame reads (its box and molecule
    count are the state's), and every cutoff fits every state's box: the HIP-NN-TS and MS-CG
    cutoffs, the RDF range and the ADF shell at most half the box's shortest width, the all-atom
    non-bonded cutoff by the runner's own rule (0.45 of the box), and no two network sizes
    (``study.network_sizes`` and the train section's) the same network. Generated boxes are estimated
    from ``system.n_molecules``, the molecule's mass and the state's density. Returns label -> state point.
    """
    for k, imp in enumerate(config.imports):
        if imp.state is None:
            raise ConfigError(f"imports[{k}].state: a study needs the state point of every imported trajectory")
    _resolve_import_states(config)
    states = state_points(config)
    if not states:
        raise ConfigError("states: the study needs at least one state point (states, state_grid or imports)")
    study = config.study
    if study.single_states is not None:
        _check_labels(states, "study.single_states", study.single_states)
    for name in study.pooled:
        pooled_members(config, name)
        if name in states:
            raise ConfigError(f"study.pooled.{name}: the name clashes with a state label")
    if not plan_models(config):
        raise ConfigError("study: no models to build (single_states is empty and pooled is empty)")
    sizes = network_sizes(config)
    for k, (name, size) in enumerate(sizes.items()):
        same = next((other for other in list(sizes)[:k] if sizes[other] == size), None)
        if same is not None:
            what = "the train section's" if same == "base" else f"study.network_sizes.{same}'s"
            raise ConfigError(f"study.network_sizes.{name}: the same network as {what} ("
                              + ", ".join(f"{key} {value}" for key, value in size.items()) + "); it would train "
                              "the same models again: change a key or drop it")
    check_temperature_families(config)
    if study.langevin_friction == "match_diffusion" and config.simulate.integrator != "langevin":
        raise ConfigError(f"study.langevin_friction: match_diffusion needs simulate.integrator: langevin (the "
                          f"friction it fits is the Langevin thermostat's), got {config.simulate.integrator!r}")
    if set(states) - imported_labels(config):  # some data is generated: its molecules must load
        system_molecules(config)
    for k, imp in enumerate(config.imports):
        if imp.molecule is not None:
            load_molecule(imp.molecule, f"imports[{k}].molecule")
        for m, item in enumerate(imp.molecules or []):
            load_molecule(item.molecule, f"imports[{k}].molecules[{m}].molecule")
    _check_cutoffs_fit(config, state_boxes(config))
    return states
