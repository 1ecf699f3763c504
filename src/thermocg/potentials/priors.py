"""The data-derived repulsive prior of the reference CG study (Shinkle et al., JCTC 2024).

A network trained by force matching never sees beads closer than the closest approach in the data, so
in MD it may let beads overlap. The prior adds a steep, short-ranged repulsion whose two parameters per
type pair come from the data: the *taper point* t (where the CG RDF first rises above a small
threshold) and the *strength* (the mean magnitude of the CG forces).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from thermocg.frames import Frames, merged_type_names
from thermocg.neighbors import Graph, check_cutoff_fits, neighbor_pairs
from thermocg.potentials.base import Potential, register

__all__ = ["RepulsivePrior", "derive_repulsive_prior", "PriorDataError"]

#: the cutoff is placed where the force of one ordered-pair term has fallen to this fraction of strength
FORCE_TOLERANCE = 1e-6
#: exponents are clamped here so float32 never overflows for overlapping beads
_MAX_EXPONENT = 80.0


class PriorDataError(ValueError):
    """CG frames from which a prior cannot be derived (no forces, a type pair never observed, ...)."""


def _table(value: Any, n: int, name: str) -> torch.Tensor:
    table = torch.as_tensor(value, dtype=torch.float64)
    if table.dim() == 0:
        table = table.expand(n, n)
    if tuple(table.shape) != (n, n):
        raise ValueError(f"RepulsivePrior: {name} must be a scalar or a ({n}, {n}) table, got shape {tuple(table.shape)}")
    table = table.clone()
    if not torch.allclose(table, table.T):
        raise ValueError(f"RepulsivePrior: {name} table must be symmetric")
    if not torch.all(torch.isfinite(table)) or not torch.all(table > 0):
        raise ValueError(f"RepulsivePrior: {name} must be positive and finite, got {table.tolist()}")
    return table


@register
class RepulsivePrior(Potential):
    """Exponential repulsion per ordered pair, parameters per type pair (a, b):

        u(d)  = -g exp(-a d),   a = ln(1/perc) / dr,   g = -strength * perc * exp(a t) / a
              = (strength * perc / a) * exp(a (t - d))                       kcal/mol
        -du/dd = strength * perc * exp(a (t - d)):  = strength at d = t - dr, = perc * strength at d = t

    with t = ``taper_A[a, b]`` (A) and strength = ``strength_kcal_mol_A[a, b]`` (kcal/mol/A), both
    symmetric (n_types, n_types) tables (a scalar for all pairs). The energy sums u over *ordered*
    pairs (i, j), i != j, as the reference study does with a full neighbour list, so the force between
    two beads is twice the per-term force above (2 * strength at d = t - dr).

    Smooth cutoff (shifted force): for d < r_c,ab,

        u_sf(d) = u(d) - u(r_c) + (d - r_c) * a * u(r_c)      (u'(r_c) = -a u(r_c)),   0 beyond,

    so energy and force are both continuous (and zero) at r_c. By default r_c,ab = t_ab +
    ln(perc / 1e-6) / a, where the term's force has decayed to 1e-6 * strength (t + 0.54 A at the
    defaults dr = 0.15 A, perc = 0.05); the shift changes forces below r_c by at most that much. An
    explicit ``cutoff_A`` (> every taper point) is used for all pairs instead. The potential's
    ``cutoff_A`` is the largest r_c,ab.
    """

    kind = "repulsive_prior"

    def __init__(self, type_names: tuple[str, ...] | list[str], *, taper_A: Any, strength_kcal_mol_A: Any,
                 dr_A: float = 0.15, perc: float = 0.05, cutoff_A: float | None = None) -> None:
        n = len(type_names)
        if not (dr_A > 0 and math.isfinite(dr_A)):
            raise ValueError(f"RepulsivePrior: dr_A must be positive, got {dr_A}")
        if not 0 < perc < 1:
            raise ValueError(f"RepulsivePrior: perc must be in (0, 1), got {perc}")
        taper = _table(taper_A, n, "taper_A")
        strength = _table(strength_kcal_mol_A, n, "strength_kcal_mol_A")
        decay = math.log(1.0 / perc) / dr_A
        if cutoff_A is None:
            pair_cutoff = taper + math.log(perc / FORCE_TOLERANCE) / decay
        else:
            if not cutoff_A > float(taper.max()):
                raise ValueError(
                    f"RepulsivePrior: cutoff_A {cutoff_A} must exceed every taper point (largest {float(taper.max()):.3f} A)"
                )
            pair_cutoff = torch.full_like(taper, float(cutoff_A))
        super().__init__(type_names, float(pair_cutoff.max()))
        self.dr_A = float(dr_A)
        self.perc = float(perc)
        self.decay_per_A = decay
        self.requested_cutoff_A = None if cutoff_A is None else float(cutoff_A)
        self.register_buffer("taper", taper)
        self.register_buffer("strength", strength)
        self.register_buffer("pair_cutoff", pair_cutoff)

    def pair_energy(self, d: torch.Tensor, ti: torch.Tensor, tj: torch.Tensor) -> torch.Tensor:
        """u_sf(d) of one ordered pair, kcal/mol; zero at and beyond its cutoff."""
        a = self.decay_per_A
        t = self.taper[ti, tj]
        strength = self.strength[ti, tj]
        rc = self.pair_cutoff[ti, tj]
        scale = strength * self.perc / a
        inside = d < rc
        u = scale * torch.exp(torch.clamp(a * (t - d), max=_MAX_EXPONENT))
        u_rc = scale * torch.exp(a * (t - rc))
        u = u - u_rc + (d - rc) * a * u_rc
        return torch.where(inside, u, torch.zeros_like(u))

    def forward(self, graph: Graph) -> torch.Tensor:
        types = graph.types
        if types.numel() and int(types.max()) >= len(self.type_names):
            raise ValueError(f"RepulsivePrior: bead type index outside this prior's types {list(self.type_names)}")
        u = self.pair_energy(graph.pair_dist, types[graph.pair_i], types[graph.pair_j])
        per_bead = torch.zeros(graph.positions.shape[0], dtype=u.dtype, device=u.device).index_add(0, graph.pair_i, u)
        return graph.frame_sum(per_bead)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "type_names": list(self.type_names),
            "taper_A": self.taper.tolist(),
            "strength_kcal_mol_A": self.strength.tolist(),
            "dr_A": self.dr_A,
            "perc": self.perc,
            "cutoff_A": self.requested_cutoff_A,
        }


def pair_rdfs(frames_list: Sequence[Frames], type_names: Sequence[str], *, r_max_A: float,
              bin_width_A: float = 0.05, max_frames: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Partial RDFs g_ab(r) with N/V normalisation, pooled over the frames.

    g_ab(r) = <n_ab(r)> / (N_a N'_b / V * 4/3 pi (r_hi^3 - r_lo^3)), with n_ab the number of ordered
    pairs (i of type a, j of type b) in the shell per frame, N'_b = N_b - [a == b]. At most
    ``max_frames`` frames evenly spread over each Frames are used. Returns r (bin centres, A) and
    g (n_types, n_types, n_bins).
    """
    n_types = len(type_names)
    edges = np.arange(0.0, r_max_A + 0.5 * bin_width_A, bin_width_A)
    n_bins = len(edges) - 1
    counts = np.zeros((n_types, n_types, n_bins))
    ideal = np.zeros((n_types, n_types, n_bins))
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    for frames in frames_list:
        lookup = np.array([list(type_names).index(n) for n in frames.type_names], dtype=np.int64)
        types = lookup[frames.types]
        n_per_type = np.bincount(types, minlength=n_types).astype(np.float64)
        picks = np.unique(np.linspace(0, frames.n_frames - 1, min(max_frames, frames.n_frames)).round().astype(int))
        for k in picks:
            box = frames.box[k]
            check_cutoff_fits(r_max_A, box, what="RDF range for the prior's taper")
            i, j, shifts = neighbor_pairs(frames.positions[k], box, r_max_A)
            d = np.linalg.norm(frames.positions[k][j] - frames.positions[k][i] + shifts @ box, axis=1)
            b = np.minimum((d / bin_width_A).astype(np.int64), n_bins - 1)
            np.add.at(counts, (types[i], types[j], b), 1.0)
            volume = abs(np.linalg.det(box))
            pair_numbers = np.outer(n_per_type, n_per_type) - np.diag(n_per_type)
            ideal += (pair_numbers / volume)[:, :, None] * shell[None, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(ideal > 0, counts / ideal, 0.0)
    return 0.5 * (edges[1:] + edges[:-1]), g


def derive_repulsive_prior(frames_list: Sequence[Frames], *, threshold: float = 0.01, dr_A: float = 0.15,
                           perc: float = 0.05, r_max_A: float = 8.0, bin_width_A: float = 0.05) -> RepulsivePrior:
    """The repulsive prior with parameters taken from CG frames (with forces).

    taper t_ab: the first distance (bin centre, ``bin_width_A`` bins) at which the partial RDF g_ab
    exceeds ``threshold``, from pair distances up to ``r_max_A`` (capped at half the smallest box
    width) with N/V normalisation (:func:`pair_rdfs`). strength_ab: the mean |F| (kcal/mol/A) over all
    beads whose type is a or b, over all frames. Bead types are the union over the frames, in order of
    first appearance. Raises :class:`PriorDataError` if frames lack forces or a type pair never comes
    within ``r_max_A``.
    """
    if not frames_list:
        raise PriorDataError("derive_repulsive_prior: no frames given")
    type_names = merged_type_names(frames_list)
    n_types = len(type_names)
    force_sum = np.zeros(n_types)
    force_count = np.zeros(n_types)
    half_width = np.inf
    from thermocg.neighbors import perpendicular_widths

    for frames in frames_list:
        if frames.forces is None:
            raise PriorDataError(f"derive_repulsive_prior: frames of state {frames.state} carry no forces")
        lookup = np.array([type_names.index(n) for n in frames.type_names], dtype=np.int64)
        types = lookup[frames.types]
        magnitude = np.linalg.norm(frames.forces, axis=-1)  # (n_frames, n_beads)
        np.add.at(force_sum, types, magnitude.sum(axis=0))
        np.add.at(force_count, types, float(frames.n_frames))
        half_width = min(half_width, min(perpendicular_widths(b).min() for b in frames.box) / 2.0)
    r_max = min(r_max_A, half_width)
    r, g = pair_rdfs(frames_list, type_names, r_max_A=r_max, bin_width_A=bin_width_A)
    taper = np.zeros((n_types, n_types))
    strength = np.zeros((n_types, n_types))
    for a in range(n_types):
        for b in range(n_types):
            above = np.nonzero(0.5 * (g[a, b] + g[b, a]) > threshold)[0]
            if len(above) == 0:
                raise PriorDataError(
                    f"derive_repulsive_prior: beads of types {type_names[a]!r} and {type_names[b]!r} never come "
                    f"within {r_max:.2f} A of each other; cannot place the taper point"
                )
            taper[a, b] = r[above[0]]
            members = [a] if a == b else [a, b]
            strength[a, b] = force_sum[members].sum() / force_count[members].sum()
    if not np.all(strength > 0):
        raise PriorDataError("derive_repulsive_prior: the CG forces are all zero; no force scale for the prior")
    return RepulsivePrior(type_names, taper_A=taper, strength_kcal_mol_A=strength, dr_A=dr_A, perc=perc)
