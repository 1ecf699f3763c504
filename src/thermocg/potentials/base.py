"""The potential protocol, the sum of potentials, and model files.

A thermocg *potential* is a ``torch.nn.Module`` that, given the pair graph of a batch of CG frames
(see :func:`thermocg.neighbors.build_graph`), returns the total energy of each frame in kcal/mol.
Forces (kcal/mol/A) are ``-dE/dR`` by autograd (:func:`energy_and_forces`). MD, the analyses and the
study use only this protocol, never the kind of model behind it.

Every potential declares:

- ``kind`` (class attribute): its registry name, e.g. ``"hipnn_ts"``;
- ``type_names``: the bead types it knows, in the order of the integer types it expects;
- ``cutoff_A``: beyond this distance it gives exactly zero pair contributions (pairs beyond it may
  still be in the graph: a skin);
- ``hyperparameters()``: a JSON-serialisable dict such that ``cls(**hyperparameters())`` rebuilds the
  module (weights then come from the state dict).

Temperature. A force-matched CG potential is a potential of mean force, W(R; T) = U_E(R) - T S(R), so
a model may depend on the temperature (``temperature_dependent = True``; e.g. ``pair_table_thermal``).
Every potential has :meth:`Potential.set_temperature` and :attr:`Potential.temperature_K`;
temperature-agnostic kinds ignore the value. A temperature-dependent kind also declares

- ``reference_temperature_K``: T_ref of its functional form;
- ``valid_temperature_range_K``: (T_min, T_max), the range of its training temperatures;
- ``max_temperature_extrapolation_K``: how far outside that range :meth:`~Potential.set_temperature`
  only warns (:class:`TemperatureRangeWarning`); farther is a :class:`TemperatureRangeError`
  (None: half the width of the range);

and must be given a temperature before it is evaluated: its energy without one is a
:class:`TemperatureNotSetError`, never a silent T_ref. MD sets it from the thermostat's target
(:class:`thermocg.md.CGSimulation`). The three values are written to the model header (the
description's ``temperature`` block) and restored on load; the temperature itself is a setting of a
run, not of the model, and is not saved.

Model files are safetensors: the weights, plus a readable JSON description (kind, hyperparameters,
bead types, units, cutoff, provenance, format version) in the header metadata. No pickle of classes,
so a model file outlives the code version that wrote it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from thermocg import __version__
from thermocg.neighbors import Graph, PairIndex, build_graph

MODEL_FORMAT_VERSION = 1
UNITS = {"length": "Angstrom", "energy": "kcal/mol", "force": "kcal/mol/Angstrom"}

#: registry name -> module that defines it (imported lazily on lookup)
_REGISTRY_MODULES = {
    "sum": "thermocg.potentials.base",
    "lennard_jones": "thermocg.potentials.lj",
    "hipnn_ts": "thermocg.potentials.hipnn",
    "hipnn_ts_thermal": "thermocg.potentials.thermal_hipnn",
    "hipnn_ts_tinput": "thermocg.potentials.thermal_hipnn",
    "repulsive_prior": "thermocg.potentials.priors",
    "pair_table": "thermocg.potentials.pair",
    "pair_table_thermal": "thermocg.potentials.pair",
}
_REGISTRY: dict[str, type["Potential"]] = {}


class ModelFileError(ValueError):
    """A model file that cannot be loaded; the message names the file and the problem."""


class TemperatureError(ValueError):
    """A temperature a potential cannot be used at; the message names the model (file) and the range."""


class TemperatureNotSetError(TemperatureError):
    """A temperature-dependent potential evaluated before any temperature was set."""


class TemperatureRangeError(TemperatureError):
    """A temperature farther outside a model's valid range than its ``max_temperature_extrapolation_K``."""


class TemperatureWarning(UserWarning):
    """A temperature-dependent potential used where its answer is less trustworthy."""


class TemperatureRangeWarning(TemperatureWarning):
    """A temperature a little outside a model's valid range (within its ``max_temperature_extrapolation_K``)."""


def register(cls: type["Potential"]) -> type["Potential"]:
    """Class decorator: make a potential loadable by its ``kind``."""
    _REGISTRY[cls.kind] = cls
    return cls


def potential_class(kind: str) -> type["Potential"]:
    """The potential class registered under ``kind``."""
    if kind not in _REGISTRY and kind in _REGISTRY_MODULES:
        importlib.import_module(_REGISTRY_MODULES[kind])
    if kind not in _REGISTRY:
        raise KeyError(f"unknown potential kind {kind!r}; known: {sorted(_REGISTRY_MODULES)}")
    return _REGISTRY[kind]


class Potential(torch.nn.Module):
    """Base class of CG potentials: energy per frame from a pair graph."""

    kind: ClassVar[str] = ""
    #: whether the energy depends on the temperature set by :meth:`set_temperature`
    temperature_dependent: ClassVar[bool] = False
    #: temperature-dependent kinds: T_ref of the functional form, K (None for agnostic kinds)
    reference_temperature_K: float | None = None
    #: temperature-dependent kinds: (T_min, T_max) K of the training data (restored from the header)
    valid_temperature_range_K: tuple[float, float] | None = None
    #: how far outside the valid range a temperature only warns, K (None: half the range's width)
    max_temperature_extrapolation_K: float | None = None
    #: the file the potential was loaded from (set by :func:`load_potential`; named in errors)
    model_file: Path | None = None

    def __init__(self, type_names: tuple[str, ...] | list[str], cutoff_A: float) -> None:
        super().__init__()
        self._temperature_K: float | None = None
        self.type_names = tuple(str(t) for t in type_names)
        self.cutoff_A = float(cutoff_A)
        if not self.type_names:
            raise ValueError(f"{type(self).__name__}: at least one bead type is required")
        if not self.cutoff_A > 0:
            raise ValueError(f"{type(self).__name__}: cutoff_A must be positive, got {cutoff_A}")

    def forward(self, graph: Graph) -> torch.Tensor:  # pragma: no cover - abstract
        """Total energy of each frame, (n_frames,) kcal/mol."""
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------------
    # temperature
    # ----------------------------------------------------------------------------------------------

    @property
    def temperature_K(self) -> float | None:
        """The temperature set by :meth:`set_temperature` (K), or None."""
        return getattr(self, "_temperature_K", None)

    def set_temperature(self, temperature_K: float | None) -> None:
        """Evaluate at ``temperature_K`` (K) from now on; None unsets it.

        Temperature-agnostic potentials only record the value. A temperature-dependent one checks it
        against its valid range (:meth:`check_temperature`): silent inside, a
        :class:`TemperatureRangeWarning` within ``max_temperature_extrapolation_K`` of it, a
        :class:`TemperatureRangeError` (the temperature is not set) farther out.
        """
        if temperature_K is None:
            self._temperature_K = None
            return
        temperature_K = _positive_temperature(temperature_K, self._model_label())
        if self.temperature_dependent:
            self.check_temperature(temperature_K)
        self._temperature_K = temperature_K

    def extrapolation_limit_K(self) -> float | None:
        """``max_temperature_extrapolation_K``, or half the width of the valid range when it is None
        (None for a potential without a valid range)."""
        if self.valid_temperature_range_K is None:
            return None
        if self.max_temperature_extrapolation_K is not None:
            return float(self.max_temperature_extrapolation_K)
        low, high = self.valid_temperature_range_K
        return 0.5 * (high - low)

    def check_temperature(self, temperature_K: float) -> None:
        """Warn or raise if ``temperature_K`` is outside the valid range (see :meth:`set_temperature`)."""
        if self.valid_temperature_range_K is None:
            raise TemperatureError(f"{self._model_label()}: a temperature-dependent model without a valid "
                                   "temperature range (valid_temperature_range_K); it cannot check a temperature")
        low, high = self.valid_temperature_range_K
        if low <= temperature_K <= high:
            return
        outside = low - temperature_K if temperature_K < low else temperature_K - high
        limit = self.extrapolation_limit_K()
        text = (f"{self._model_label()}: T = {temperature_K:g} K is {outside:g} K outside the model's valid "
                f"temperature range [{low:g}, {high:g}] K (its training temperatures; T_ref = "
                f"{self.reference_temperature_K} K)")
        if outside > limit:
            raise TemperatureRangeError(
                f"{text}; it extrapolates at most {limit:g} K (max_temperature_extrapolation_K); to go farther, "
                "set potential.max_temperature_extrapolation_K or refit with the temperature in the training data")
        warnings.warn(TemperatureRangeWarning(f"{text}; extrapolating (allowed up to {limit:g} K outside)"),
                      stacklevel=3)

    def require_temperature(self) -> float:
        """The set temperature (K); a :class:`TemperatureNotSetError` if none is set. Temperature-
        dependent kinds call it in ``forward``."""
        temperature = self.temperature_K
        if temperature is None:
            raise TemperatureNotSetError(
                f"{self._model_label()} is temperature-dependent (valid range "
                f"{_range_text(self.valid_temperature_range_K)}, T_ref = {self.reference_temperature_K} K) and no "
                "temperature is set: call potential.set_temperature(T) (MD sets it from its thermostat)")
        return temperature

    def _model_label(self) -> str:
        where = f" {self.model_file}" if self.model_file is not None else ""
        return f"{self.kind or type(self).__name__} model{where}"

    def _temperature_header(self) -> dict[str, Any] | None:
        """The ``temperature`` block of the description (None for agnostic potentials)."""
        if not self.temperature_dependent:
            return None
        valid = self.valid_temperature_range_K
        return {"dependent": True, "reference_K": self.reference_temperature_K,
                "valid_range_K": None if valid is None else [float(valid[0]), float(valid[1])],
                "max_extrapolation_K": self.extrapolation_limit_K()}

    def _restore_temperature_header(self, block: dict[str, Any]) -> None:
        """Take the valid range and extrapolation limit from a description's ``temperature`` block."""
        valid = block.get("valid_range_K")
        self.valid_temperature_range_K = None if valid is None else (float(valid[0]), float(valid[1]))
        limit = block.get("max_extrapolation_K")
        self.max_temperature_extrapolation_K = None if limit is None else float(limit)

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        for b in self.buffers():
            if b.is_floating_point():
                return b.dtype
        return torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def type_indices(self, type_names: tuple[str, ...] | list[str], types: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Translate a frame's integer types (indices into ``type_names``) into this potential's."""
        lookup = []
        for name in type_names:
            if name not in self.type_names:
                raise ValueError(
                    f"bead type {name!r} is unknown to this {self.kind} potential "
                    f"(it knows {list(self.type_names)})"
                )
            lookup.append(self.type_names.index(name))
        table = torch.as_tensor(lookup, dtype=torch.long)
        return table[torch.as_tensor(np.asarray(types), dtype=torch.long)]

    def describe(self) -> dict[str, Any]:
        """The readable description stored beside the weights (with a ``temperature`` block for
        temperature-dependent potentials: ``dependent``, ``reference_K``, ``valid_range_K``,
        ``max_extrapolation_K``)."""
        description = {
            "kind": self.kind,
            "hyperparameters": self.hyperparameters(),
            "type_names": list(self.type_names),
            "cutoff_A": self.cutoff_A,
            "units": UNITS,
            "dtype": str(self.dtype).replace("torch.", ""),
        }
        temperature = self._temperature_header()
        if temperature is not None:
            description["temperature"] = temperature
        return description


def _positive_temperature(temperature_K: Any, where: str) -> float:
    try:
        value = float(temperature_K)
    except (TypeError, ValueError):
        raise TemperatureError(f"{where}: temperature_K must be a number, got {temperature_K!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise TemperatureError(f"{where}: temperature_K must be positive and finite, got {temperature_K}")
    return value


def _range_text(valid: tuple[float, float] | None) -> str:
    return "unknown" if valid is None else f"[{valid[0]:g}, {valid[1]:g}] K"


@register
class SumPotential(Potential):
    """The sum of several potentials (e.g. HIP-NN-TS + repulsive prior): E = sum_k E_k.

    All terms must know the same bead types; the cutoff is the largest of theirs.
    """

    kind = "sum"

    def __init__(self, terms: list[Potential]) -> None:
        if not terms:
            raise ValueError("SumPotential needs at least one term")
        names = terms[0].type_names
        for t in terms[1:]:
            if t.type_names != names:
                raise ValueError(f"SumPotential: bead types differ between terms: {names} vs {t.type_names}")
        super().__init__(names, max(t.cutoff_A for t in terms))
        self.terms = torch.nn.ModuleList(terms)

    def forward(self, graph: Graph) -> torch.Tensor:
        total = self.terms[0](graph)
        for term in self.terms[1:]:
            total = total + term(graph)
        return total

    def hyperparameters(self) -> dict[str, Any]:
        return {"terms": [t.describe() for t in self.terms]}

    # the temperature: forwarded to every term; each temperature-dependent term checks its own range
    @property
    def temperature_dependent(self) -> bool:  # type: ignore[override]
        return any(t.temperature_dependent for t in self.terms)

    def _dependent_terms(self) -> list[Potential]:
        return [t for t in self.terms if t.temperature_dependent]

    @property
    def reference_temperature_K(self) -> float | None:  # type: ignore[override]
        """The T_ref of the temperature-dependent terms when they share one, else None."""
        references = {t.reference_temperature_K for t in self._dependent_terms()}
        return references.pop() if len(references) == 1 else None

    @property
    def valid_temperature_range_K(self) -> tuple[float, float] | None:  # type: ignore[override]
        """The intersection of the terms' valid ranges (None when no term has one)."""
        ranges = [t.valid_temperature_range_K for t in self._dependent_terms() if t.valid_temperature_range_K]
        if not ranges:
            return None
        return max(r[0] for r in ranges), min(r[1] for r in ranges)

    @property
    def max_temperature_extrapolation_K(self) -> float | None:  # type: ignore[override]
        """The smallest of the terms' extrapolation limits."""
        limits = [t.extrapolation_limit_K() for t in self._dependent_terms()]
        limits = [x for x in limits if x is not None]
        return min(limits) if limits else None

    @max_temperature_extrapolation_K.setter
    def max_temperature_extrapolation_K(self, value: float | None) -> None:
        for term in self._dependent_terms():
            term.max_temperature_extrapolation_K = value

    def set_temperature(self, temperature_K: float | None) -> None:
        """Set the temperature of every term (each dependent term checks its own valid range)."""
        if temperature_K is not None:
            temperature_K = _positive_temperature(temperature_K, self._model_label())
        for term in self.terms:
            term.set_temperature(temperature_K)
        self._temperature_K = temperature_K

    def check_temperature(self, temperature_K: float) -> None:
        for term in self._dependent_terms():
            term.check_temperature(temperature_K)

    def _restore_temperature_header(self, block: dict[str, Any]) -> None:
        """Nothing to restore: each term's own description holds its block."""

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> "SumPotential":
        return cls([_build(d) for d in description["hyperparameters"]["terms"]])


def _build(description: dict[str, Any]) -> Potential:
    cls = potential_class(description["kind"])
    if hasattr(cls, "from_description"):
        module = cls.from_description(description)
    else:
        module = cls(**description["hyperparameters"])
    temperature = description.get("temperature")
    if module.temperature_dependent:
        if not isinstance(temperature, dict):
            raise ValueError(f"the {module.kind} model is temperature-dependent but its description has no "
                             "temperature block (reference_K, valid_range_K)")
        try:
            module._restore_temperature_header(temperature)
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"damaged temperature block {temperature!r} ({exc})") from None
        reference = temperature.get("reference_K")
        if reference is not None and module.reference_temperature_K is not None \
                and abs(float(reference) - module.reference_temperature_K) > 1e-9 * abs(float(reference)):
            raise ValueError(f"temperature.reference_K = {reference} differs from the {module.kind} model's "
                             f"T_ref {module.reference_temperature_K}")
    dtype = getattr(torch, description.get("dtype", "float32"))
    return module.to(dtype)


def _as_model_inputs(potential: Potential, positions: torch.Tensor | np.ndarray, box: torch.Tensor | np.ndarray,
                     types: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positions (n_frames, n, 3), box, types) as tensors on the potential's device, in its dtype
    (types as long); one frame (n, 3) becomes a batch of one."""
    dtype, device = potential.dtype, potential.device
    positions = torch.as_tensor(positions).to(device=device, dtype=dtype)
    box = torch.as_tensor(box).to(device=device, dtype=dtype)
    types = torch.as_tensor(types).to(device=device, dtype=torch.long)
    if positions.dim() == 2:
        positions = positions.unsqueeze(0)
    return positions, box, types


def energy_and_forces(potential: Potential, positions: torch.Tensor | np.ndarray, box: torch.Tensor | np.ndarray,
                      types: torch.Tensor | np.ndarray, *, pairs: PairIndex | None = None,
                      compute_forces: bool = True, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Energies (n_frames,) kcal/mol and forces (n_frames, n_particles, 3) kcal/mol/A.

    ``types`` are already this potential's type indices (see :meth:`Potential.type_indices`).
    ``create_graph=True`` keeps the graph of the forces for a force-matching loss; otherwise the
    returned tensors are detached, so no autograd history grows across MD steps.
    """
    positions, box, types = _as_model_inputs(potential, positions, box, types)
    if compute_forces:
        positions = positions.detach().requires_grad_(True)
    with torch.set_grad_enabled(compute_forces or torch.is_grad_enabled()):
        graph = build_graph(positions, box, types, potential.cutoff_A, pairs=pairs)
        energy = potential(graph)
        forces = None
        if compute_forces:
            (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=create_graph)
            forces = -grad
    if not create_graph:
        energy = energy.detach()
        forces = None if forces is None else forces.detach()
    return energy, forces


def save_potential(potential: Potential, path: str | os.PathLike, *, provenance: dict[str, Any] | None = None) -> Path:
    """Save weights + readable description to a ``.safetensors`` file, atomically."""
    from safetensors.torch import save_file

    from thermocg.rundir import atomic_path

    path = Path(path)
    if potential.temperature_dependent and (potential.valid_temperature_range_K is None
                                            or potential.reference_temperature_K is None):
        raise ValueError(f"{path}: a temperature-dependent {potential.kind} model needs its reference temperature "
                         "and its valid temperature range (the training temperatures' min and max) before it is "
                         "saved; set potential.valid_temperature_range_K")
    description = potential.describe()
    header = {
        "format": "thermocg-potential",
        "format_version": str(MODEL_FORMAT_VERSION),
        "thermocg_version": __version__,
        "description": json.dumps(description, indent=1),
        "provenance": json.dumps(provenance or {}, indent=1),
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in potential.state_dict().items()}
    header["weights_sha256"] = weights_sha256(tensors)
    with atomic_path(path) as partial:
        save_file(tensors, str(partial), metadata=header)
    return path


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor (name, dtype, shape and bytes, in name order): stored in the model
    header and checked on load, so a damaged file is refused instead of simulating with weights
    that are slightly off."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(np.ascontiguousarray(tensor.numpy()).tobytes())
    return digest.hexdigest()


def read_model_header(path: str | os.PathLike) -> dict[str, Any]:
    """The description and provenance of a model file, without building the model."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFileError(f"{path}: not a safetensors model file ({exc})") from None
    if meta.get("format") != "thermocg-potential":
        raise ModelFileError(f"{path}: not a thermocg model file (no thermocg header)")
    try:
        version = int(meta.get("format_version", "0"))
    except ValueError:
        raise ModelFileError(f"{path}: damaged model header (format_version {meta.get('format_version')!r} "
                             "is not a number)") from None
    if version != MODEL_FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version}, this thermocg reads version {MODEL_FORMAT_VERSION}"
        )
    parsed = {}
    for key, default in (("description", None), ("provenance", "{}")):
        try:
            parsed[key] = json.loads(meta[key] if default is None else meta.get(key, default))
        except KeyError:
            raise ModelFileError(f"{path}: damaged model header (no {key})") from None
        except ValueError as exc:
            raise ModelFileError(f"{path}: damaged model header ({key} is not valid JSON: {exc})") from None
    return {**parsed, "thermocg_version": meta.get("thermocg_version"),
            "weights_sha256": meta.get("weights_sha256")}


def load_potential(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Potential:
    """Load a potential saved by :func:`save_potential`."""
    from safetensors.torch import load_file

    header = read_model_header(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a damaged body
        raise ModelFileError(f"{path}: damaged model file, the weights cannot be read ({exc})") from None
    expected = header.get("weights_sha256")
    if expected is not None and weights_sha256(tensors) != expected:
        raise ModelFileError(f"{path}: damaged model file: the weights do not match the checksum in its header "
                             "(the file changed after it was written); retrain or restore it")
    try:
        module = _build(header["description"])
        module.load_state_dict(tensors, strict=True)
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: weights do not fit the described model ({exc})") from None
    module.provenance = header["provenance"]
    for part in module.modules():  # a sum's terms too: their errors name the file
        if isinstance(part, Potential):
            part.model_file = Path(path)
    return module.to(device)


def energy_forces_virial(potential: Potential, positions: torch.Tensor | np.ndarray, box: torch.Tensor | np.ndarray,
                         types: torch.Tensor | np.ndarray, *, pairs: PairIndex | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Energies (n_frames,) kcal/mol, forces (n_frames, n_particles, 3) kcal/mol/A and virials
    (n_frames, 3, 3) kcal/mol, all detached.

    The virial is the derivative of the energy under a homogeneous strain,

        W_ab = -dE/d(eps_ab),    R -> R (I + eps),  box -> box (I + eps)   (rows are vectors),

    taken by autograd through a symmetric strain (eps + eps^T) / 2 applied to the positions and the
    box at eps = 0, so W is symmetric. For pair forces it equals sum over pairs of r_ij f_ij
    (positive when the pairs repel). The stress tensor in ASE's sign convention (positive under
    tension) is ``-W / V``; the pressure is (N k_B T + tr W / 3) / V. ``types`` are this potential's
    type indices; ``pairs`` reuses a neighbour list (the strain is zero, so the list still holds).
    """
    dtype, device = potential.dtype, potential.device
    positions, box, types = _as_model_inputs(potential, positions, box, types)
    n_frames = positions.shape[0]
    if box.dim() == 2:
        box = box.unsqueeze(0).expand(n_frames, 3, 3)
    positions = positions.detach().requires_grad_(True)
    strain = torch.zeros(n_frames, 3, 3, dtype=dtype, device=device, requires_grad=True)
    with torch.enable_grad():
        deformation = torch.eye(3, dtype=dtype, device=device) + 0.5 * (strain + strain.transpose(1, 2))
        strained_positions = torch.bmm(positions, deformation)
        strained_box = torch.bmm(box, deformation)
        graph = build_graph(strained_positions, strained_box, types, potential.cutoff_A, pairs=pairs)
        energy = potential(graph)
        grad_positions, grad_strain = torch.autograd.grad(energy.sum(), (positions, strain))
    return energy.detach(), -grad_positions.detach(), -grad_strain.detach()
