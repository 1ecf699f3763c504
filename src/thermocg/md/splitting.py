"""The fast part of a model for multiple time stepping (r-RESPA, :mod:`thermocg.md.integrators`).

An r-RESPA run evaluates a cheap, short-ranged *fast* part F_f of the model every inner step and the
remainder F_s = F - F_f once per outer step. Two ways to choose F_f for a thermocg model:

``prior`` (:func:`prior_part`)
    The repulsive prior a HIP-NN-TS model is trained with (a :class:`~thermocg.potentials.base.SumPotential`
    of the network and a :class:`~thermocg.potentials.priors.RepulsivePrior`). Free (nothing to fit) and
    exact (a term of the model), but it holds only the steep wall below the closest approach in the data;
    the network's own short-range repulsion, which is what sets the timestep in the liquid, stays in the
    slow part.

``pair`` (:func:`fit_pair_part`)
    A pair potential fitted by MS-CG force matching (:func:`thermocg.mscg.fit_pair_potential`) to the
    *model's own* forces, not the all-atom ones, on CG configurations (frames of the state's CG dataset
    or of a short run), with a short cutoff (``cutoff_A``, e.g. the first minimum of the RDF). It
    takes the pairwise, radial part of the model's force, repulsion and first shell included, so the
    remainder F - F_f holds what is many-body or longer-ranged: smaller, and slower to change as beads
    move. The spline force and its first two derivatives vanish at the cutoff, so F_s stays smooth.

:func:`fast_part` chooses by name (``simulate.respa_fast`` in a config) and hands the part over as a
:class:`TabulatedPair`: a table of the pair energy and its derivative with cubic Hermite
interpolation, evaluated without autograd, so that the k inner steps cost little beside the model.
:func:`split_statistics` says how much of the force each part carries on given frames.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from thermocg.frames import Frames
from thermocg.md.state import MDInputError
from thermocg.potentials.base import Potential, SumPotential, energy_and_forces

if TYPE_CHECKING:
    from thermocg.potentials.pair import PairTable

__all__ = ["FAST_PARTS", "prior_part", "fit_pair_part", "fast_part", "model_forces", "split_statistics",
           "TabulatedPair"]

#: the ways to choose the fast part (``simulate.respa_fast``)
FAST_PARTS = ("prior", "pair")


def _terms(potential: Potential) -> list[Potential]:
    if isinstance(potential, SumPotential):
        return [leaf for term in potential.terms for leaf in _terms(term)]
    return [potential]


def prior_part(potential: Potential) -> Potential:
    """The repulsive prior term of a sum model (the sum of them if there are several).

    Raises :class:`MDInputError` for a model without one.
    """
    priors = [term for term in _terms(potential) if term.kind == "repulsive_prior"]
    if not priors:
        kinds = [term.kind for term in _terms(potential)]
        raise MDInputError(f"the fast part 'prior' needs a model with a repulsive prior term (a HIP-NN-TS trained "
                           f"with train.prior: true); this model's terms are {kinds}: use the fast part 'pair'")
    return priors[0] if len(priors) == 1 else SumPotential(priors)


def model_forces(potential: Potential, frames: Frames, *, batch_frames: int = 8) -> np.ndarray:
    """The model's forces (n_frames, N, 3) kcal/mol/A on every frame of ``frames`` (float64)."""
    types = potential.type_indices(frames.type_names, frames.types)
    out = []
    for start in range(0, frames.n_frames, batch_frames):
        stop = start + batch_frames
        _, forces = energy_and_forces(potential, frames.positions[start:stop], frames.box[start:stop], types)
        out.append(forces.detach().double().cpu().numpy())
    return np.concatenate(out)


def fit_pair_part(potential: Potential, frames: Frames, *, cutoff_A: float, spacing_A: float = 0.1,
                  r_min_A: float = 1.0, max_frames: int | None = 200) -> "PairTable":
    """An MS-CG pair potential fitted to ``potential``'s own forces on ``frames`` (positions and boxes).

    cutoff_A : the pair's cutoff (short: the fast part); spacing_A : knot spacing of its force spline;
    r_min_A : start of the spline grid (every pair distance in the frames must be above it);
    max_frames : at most this many frames, evenly spread (None: all).

    Returns a float64 :class:`~thermocg.potentials.pair.PairTable` on the model's device, with
    ``fit_info`` (training RMSE and R^2 against the model's forces, MS-CG's notes on thin data).
    """
    from thermocg.config import ConfigError, PairConfig
    from thermocg.mscg import MSCGError, MSCGWarning, fit_pair_potential

    if not isinstance(frames, Frames) or frames.n_frames < 1:
        raise MDInputError("fit_pair_part: frames must be a Frames with at least one frame")
    if not (math.isfinite(cutoff_A) and cutoff_A > 0):
        raise MDInputError(f"fit_pair_part: cutoff_A must be positive, got {cutoff_A}")
    if cutoff_A > potential.cutoff_A + 1e-9:
        raise MDInputError(f"fit_pair_part: the fast pair's cutoff {cutoff_A} A exceeds the model's own "
                           f"{potential.cutoff_A:.3f} A; the fast part must be the short-ranged one")
    if max_frames is not None and frames.n_frames > max_frames:
        frames = frames.select(np.unique(np.linspace(0, frames.n_frames - 1, max_frames).round().astype(int)))
    forces = model_forces(potential, frames)
    target = Frames(positions=frames.positions, box=frames.box, types=frames.types, type_names=frames.type_names,
                    masses=frames.masses, forces=forces, metadata={"source": "the model's own forces"})
    try:
        config = PairConfig(cutoff_A=float(cutoff_A), spacing_A=float(spacing_A), r_min_A=float(r_min_A),
                            progress=False)
    except ConfigError as exc:
        raise MDInputError(f"the fast pair part: {exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MSCGWarning)  # kept in fit_info["warnings"]
            table = fit_pair_potential(target, config)
    except MSCGError as exc:
        raise MDInputError(f"the fast pair part could not be fitted to the model's forces: {exc}") from None
    return table.double().to(potential.device)


def fast_part(potential: Potential, choice: Literal["prior", "pair"], *, frames: Frames | None = None,
              cutoff_A: float = 5.0, spacing_A: float = 0.1, max_frames: int | None = 200,
              tabulate: bool = True) -> Potential:
    """The fast part of ``potential`` chosen by name (module docstring); ``frames`` are needed for
    ``"pair"`` (see :func:`fit_pair_part` for the other arguments). ``tabulate``: as a
    :class:`TabulatedPair` (what MD should integrate with: 5-10x cheaper than through autograd)."""
    if choice == "prior":
        part = prior_part(potential)
    elif choice == "pair":
        if frames is None:
            raise MDInputError("the fast part 'pair' is fitted to the model's forces on frames; none were given")
        part = fit_pair_part(potential, frames, cutoff_A=cutoff_A, spacing_A=spacing_A, max_frames=max_frames)
    else:
        raise MDInputError(f"the fast part must be one of {list(FAST_PARTS)}, got {choice!r}")
    return TabulatedPair.from_pair_potential(part) if tabulate else part


def split_statistics(potential: Potential, fast: Potential, frames: Frames) -> dict[str, Any]:
    """How the force divides between the parts on ``frames``: RMS of F, F_f and F_s = F - F_f per
    component (kcal/mol/A), and the fraction of the force's mean square that F_s leaves,
    <|F_s|^2> / <|F|^2> (0: the fast part is all of it)."""
    total = model_forces(potential, frames)
    fast_forces = model_forces(fast, frames)
    slow = total - fast_forces
    mean_square = float(np.mean(total**2))
    return {"rms_force_kcal_mol_A": math.sqrt(mean_square),
            "rms_fast_kcal_mol_A": float(np.sqrt(np.mean(fast_forces**2))),
            "rms_slow_kcal_mol_A": float(np.sqrt(np.mean(slow**2))),
            "slow_fraction": float(np.mean(slow**2)) / mean_square if mean_square > 0 else float("nan"),
            "n_frames": frames.n_frames}


# --------------------------------------------------------------------------------------------------
# a pair part as a table, evaluated without autograd
# --------------------------------------------------------------------------------------------------

class TabulatedPair(Potential):
    """A pair potential as a table, for the inner loop of r-RESPA: U_ab(r) and U'_ab(r) on a uniform
    grid r_k = r_min + k h, k = 0..K (h = ``spacing_A``), cubic Hermite interpolation between nodes,

        U(r) = h00(t) U_k + h10(t) h U'_k + h01(t) U_k+1 + h11(t) h U'_k+1,     t = (r - r_k) / h,

    and the force -dU/dr of that same interpolant (so energy and force are consistent and the total
    energy is conserved as well as with the original). The interpolation error is about
    h^4 max|U''''| / 384: 1e-8 relative for the repulsive prior's exponential wall at h = 0.002 A. Below
    ``r_min_A`` the energy continues linearly (constant force); at and beyond the cutoff U = U' = 0 (to
    round-off: the last node's zeros through the interval polynomial, |U| < 1e-20 kcal/mol).

    :meth:`direct_energy_and_forces` evaluates energy and forces from the pair list in one pass of
    about thirty elementwise operations, without building an autograd graph: the MD force provider
    (:class:`~thermocg.md.simulation.PotentialForces`) takes that path. ``forward`` is the same
    interpolant, differentiable, for the usual path. Not a model kind: it is built from one at run time
    (:meth:`from_pair_potential`) and never saved.

    energy_kcal_mol, derivative_kcal_mol_A : (n_types, n_types, K + 1) U and dU/dr at the nodes; they are
    kept as the interval polynomials' coefficients, so one row lookup per pair gives U and dU/dr
    """

    kind = "tabulated_pair"

    def __init__(self, type_names: tuple[str, ...] | list[str], *, cutoff_A: float, r_min_A: float,
                 energy_kcal_mol: Any, derivative_kcal_mol_A: Any) -> None:
        super().__init__(type_names, cutoff_A)
        n = len(self.type_names)
        energy = torch.as_tensor(np.asarray(energy_kcal_mol, dtype=np.float64))
        derivative = torch.as_tensor(np.asarray(derivative_kcal_mol_A, dtype=np.float64))
        if energy.dim() != 3 or energy.shape[:2] != (n, n) or energy.shape[2] < 2 or derivative.shape != energy.shape:
            raise ValueError(f"TabulatedPair: tables must both be ({n}, {n}, K + 1 >= 2), got "
                             f"{tuple(energy.shape)} and {tuple(derivative.shape)}")
        if not 0 <= r_min_A < cutoff_A:
            raise ValueError(f"TabulatedPair: need 0 <= r_min_A < cutoff_A, got {r_min_A}, {cutoff_A}")
        self.r_min_A = float(r_min_A)
        self.n_intervals = int(energy.shape[2]) - 1
        self.spacing_A = (self.cutoff_A - self.r_min_A) / self.n_intervals
        # the Hermite cubic of every interval in powers of t, and its derivative d/dr:
        #   U = c0 + c1 t + c2 t^2 + c3 t^3,   dU/dr = e1 + e2 t + e3 t^2     (one row per type pair and interval)
        h = self.spacing_A
        u0, u1 = energy[..., :-1], energy[..., 1:]
        d0, d1 = derivative[..., :-1] * h, derivative[..., 1:] * h
        c2 = 3.0 * (u1 - u0) - 2.0 * d0 - d1
        c3 = 2.0 * (u0 - u1) + d0 + d1
        rows = torch.stack([u0, d0, c2, c3, d0 / h, 2.0 * c2 / h, 3.0 * c3 / h], dim=-1)
        self.register_buffer("coefficients", rows.reshape(n * n * self.n_intervals, 7).contiguous())
        self._list_cache: tuple[Any, ...] | None = None

    @classmethod
    def from_pair_potential(cls, potential: Potential, *, spacing_A: float = 0.002, r_min_A: float = 0.5
                            ) -> "TabulatedPair":
        """Tabulate any pair potential (a PairTable, a RepulsivePrior, a LennardJones, a sum of them)
        from the potential itself: U_ab(r) is the energy of two beads of types a and b at distance r,
        U'_ab(r) minus the force on the second, both by :func:`energy_and_forces` in float64. Whatever
        convention the potential sums its pairs with, the table holds the energy of one pair."""
        import copy

        if not (spacing_A > 0 and math.isfinite(spacing_A)):
            raise ValueError(f"TabulatedPair: spacing_A must be positive, got {spacing_A}")
        cutoff = float(potential.cutoff_A)
        n_intervals = max(2, int(math.ceil((cutoff - r_min_A) / spacing_A)))
        r = np.linspace(r_min_A, cutoff, n_intervals + 1)
        r[-1] = cutoff * (1.0 - 1e-12)  # the last node just inside, where U and U' have gone to zero
        exact = copy.deepcopy(potential).double().cpu()
        n = len(exact.type_names)
        side = 2.0 * cutoff + 2.0
        box = np.eye(3) * side
        positions = np.zeros((len(r), 2, 3))
        positions[:, :, :] = 0.5 * side
        positions[:, 1, 0] += r
        boxes = np.repeat(box[None], len(r), axis=0)
        energy = np.zeros((n, n, len(r)))
        derivative = np.zeros((n, n, len(r)))
        for a in range(n):
            for b in range(a, n):
                types = torch.tensor([a, b])
                e, f = energy_and_forces(exact, positions, boxes, types)
                energy[a, b] = energy[b, a] = e.numpy()
                derivative[a, b] = derivative[b, a] = -f[:, 1, 0].numpy()
        energy[:, :, -1] = 0.0
        derivative[:, :, -1] = 0.0
        table = cls(exact.type_names, cutoff_A=cutoff, r_min_A=r_min_A, energy_kcal_mol=energy,
                    derivative_kcal_mol_A=derivative)
        table.source_kind = potential.kind
        return table.to(potential.device)

    def pair_energy_derivative(self, r: torch.Tensor, pair_type: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """U (kcal/mol) and dU/dr (kcal/mol/A) of pairs at distances ``r`` (P,) of flat type
        index ``pair_type`` = n_types * a + b (P,); zero at and beyond the cutoff."""
        return self._interpolate(r, pair_type * self.n_intervals)

    def _interpolate(self, r: torch.Tensor, row_offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """U and dU/dr at ``r`` for pairs whose type pair's rows start at ``row_offset`` (P,).

        r is clamped to [r_min, r_c]: beyond r_c the last node (U = U' = 0) holds; below r_min the
        energy continues linearly, U(r_min) + U'(r_min) (r - r_min)."""
        inside = r.clamp(self.r_min_A, self.cutoff_A)
        x = (inside - self.r_min_A) * (1.0 / self.spacing_A)
        k = x.detach().to(torch.long).clamp_(max=self.n_intervals - 1)  # x >= 0: truncation is floor
        t = x - k.to(x.dtype)
        c = torch.index_select(self.coefficients, 0, k + row_offset)
        energy = ((c[:, 3] * t + c[:, 2]) * t + c[:, 1]) * t + c[:, 0]
        slope = (c[:, 6] * t + c[:, 5]) * t + c[:, 4]
        return energy + slope * (r - inside), slope

    def forward(self, graph: Any) -> torch.Tensor:
        """Total energy per frame (n_frames,) kcal/mol; the graph's list is full, so each pair counts 1/2."""
        n = len(self.type_names)
        u, _ = self.pair_energy_derivative(graph.pair_dist, graph.types[graph.pair_i] * n + graph.types[graph.pair_j])
        per_bead = torch.zeros(graph.positions.shape[0], dtype=u.dtype, device=u.device).index_add(0, graph.pair_i,
                                                                                                  0.5 * u)
        return graph.frame_sum(per_bead)

    def direct_energy_and_forces(self, positions: torch.Tensor, box: torch.Tensor, types: torch.Tensor,
                                 pairs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy () and forces (N, 3) of one frame from a full pair list (a
        :class:`~thermocg.neighbors.PairIndex`), without autograd:

            r_ij = R_j - R_i + S_ij box,   E = 1/2 sum_(i,j) U(r_ij),   F_i = sum_j U'(r_ij) r_ij / |r_ij|

        What depends only on the list (the Cartesian shifts S_ij box, the rows of each pair's type
        pair) is computed once per list and kept until the list changes."""
        cache = self._list_cache
        if cache is None or cache[0] is not pairs or cache[1] is not box or cache[2] is not types:
            dtype = self.coefficients.dtype
            n = len(self.type_names)
            shift = pairs.shifts.to(dtype) @ box.to(dtype)
            offset = (torch.index_select(types, 0, pairs.pair_i) * n
                      + torch.index_select(types, 0, pairs.pair_j)) * self.n_intervals
            cache = self._list_cache = (pairs, box, types, shift, offset)
        shift, offset = cache[3], cache[4]
        x = positions.to(self.coefficients.dtype)
        vec = torch.index_select(x, 0, pairs.pair_j) - torch.index_select(x, 0, pairs.pair_i) + shift
        r = torch.linalg.vector_norm(vec, dim=1)
        u, slope = self._interpolate(r, offset)
        forces = torch.zeros_like(x).index_add_(0, pairs.pair_i, (slope / r).unsqueeze(1) * vec)
        return 0.5 * u.sum(), forces

    def hyperparameters(self) -> dict[str, Any]:
        return {"type_names": list(self.type_names), "cutoff_A": self.cutoff_A, "r_min_A": self.r_min_A,
                "n_intervals": self.n_intervals}
