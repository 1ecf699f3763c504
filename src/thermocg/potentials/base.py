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

Model files are safetensors: the weights, plus a readable JSON description (kind, hyperparameters,
bead types, units, cutoff, provenance, format version) in the header metadata. No pickle of classes,
so a model file outlives the code version that wrote it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
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
    "repulsive_prior": "thermocg.potentials.priors",
    "pair_table": "thermocg.potentials.pair",
}
_REGISTRY: dict[str, type["Potential"]] = {}


class ModelFileError(ValueError):
    """A model file that cannot be loaded; the message names the file and the problem."""


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

    def __init__(self, type_names: tuple[str, ...] | list[str], cutoff_A: float) -> None:
        super().__init__()
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
        """The readable description stored beside the weights."""
        return {
            "kind": self.kind,
            "hyperparameters": self.hyperparameters(),
            "type_names": list(self.type_names),
            "cutoff_A": self.cutoff_A,
            "units": UNITS,
            "dtype": str(self.dtype).replace("torch.", ""),
        }


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

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> "SumPotential":
        return cls([_build(d) for d in description["hyperparameters"]["terms"]])


def _build(description: dict[str, Any]) -> Potential:
    cls = potential_class(description["kind"])
    if hasattr(cls, "from_description"):
        module = cls.from_description(description)
    else:
        module = cls(**description["hyperparameters"])
    dtype = getattr(torch, description.get("dtype", "float32"))
    return module.to(dtype)


def energy_and_forces(potential: Potential, positions: torch.Tensor | np.ndarray, box: torch.Tensor | np.ndarray,
                      types: torch.Tensor | np.ndarray, *, pairs: PairIndex | None = None,
                      compute_forces: bool = True, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Energies (n_frames,) kcal/mol and forces (n_frames, n_particles, 3) kcal/mol/A.

    ``types`` are already this potential's type indices (see :meth:`Potential.type_indices`).
    ``create_graph=True`` keeps the graph of the forces for a force-matching loss; otherwise the
    returned tensors are detached, so no autograd history grows across MD steps.
    """
    dtype, device = potential.dtype, potential.device
    positions = torch.as_tensor(positions).to(device=device, dtype=dtype)
    box = torch.as_tensor(box).to(device=device, dtype=dtype)
    types = torch.as_tensor(types).to(device=device, dtype=torch.long)
    if positions.dim() == 2:
        positions = positions.unsqueeze(0)
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
    positions = torch.as_tensor(positions).to(device=device, dtype=dtype)
    box = torch.as_tensor(box).to(device=device, dtype=dtype)
    types = torch.as_tensor(types).to(device=device, dtype=torch.long)
    if positions.dim() == 2:
        positions = positions.unsqueeze(0)
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
