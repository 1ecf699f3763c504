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

:func:`fast_part` chooses by name (``simulate.respa_fast`` in a config). :func:`split_statistics`
says how much of the force each part carries on given frames.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from thermocg.frames import Frames
from thermocg.md.state import MDInputError
from thermocg.potentials.base import Potential, SumPotential, energy_and_forces

if TYPE_CHECKING:
    from thermocg.potentials.pair import PairTable

__all__ = ["FAST_PARTS", "prior_part", "fit_pair_part", "fast_part", "model_forces", "split_statistics"]

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
              cutoff_A: float = 6.0, spacing_A: float = 0.1, max_frames: int | None = 200) -> Potential:
    """The fast part of ``potential`` chosen by name (module docstring); ``frames`` are needed for
    ``"pair"`` (see :func:`fit_pair_part` for the other arguments)."""
    if choice == "prior":
        return prior_part(potential)
    if choice == "pair":
        if frames is None:
            raise MDInputError("the fast part 'pair' is fitted to the model's forces on frames; none were given")
        return fit_pair_part(potential, frames, cutoff_A=cutoff_A, spacing_A=spacing_A, max_frames=max_frames)
    raise MDInputError(f"the fast part must be one of {list(FAST_PARTS)}, got {choice!r}")


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
