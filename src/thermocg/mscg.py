"""MS-CG: force matching of a pair potential (the classical baseline).

The multiscale coarse-graining method of Izvekov & Voth (J. Phys. Chem. B 109, 2469 (2005)) and Noid
et al. (J. Chem. Phys. 128, 244114 (2008)), as OpenMSCG and VOTCA implement it: the CG force on bead I
is modelled as a sum of central pair forces,

    F_I = - sum_{J != I} F_{ab}(r_IJ) u_IJ,      u_IJ = (R_J - R_I) / r_IJ,    F_ab(r) = sum_j c_ab,j B_j(r)

(F > 0 repulsive; a, b the bead types of I, J; B_j the cubic B-splines of
:class:`thermocg.potentials.pair.PairTable`). This is linear in the coefficients c, so with the design
matrix G (3 N rows per frame, one column per (type pair, basis function)) the force-matching problem
min_c sum_frames |G c - f|^2 is solved from the normal equations

    (G^T G + lambda_r s I + lambda_s s D^T D) c = G^T f,     s = mean diagonal of G^T G,

accumulated frame by frame (memory independent of the number of frames; D takes second differences
along each pair's coefficients, so sparse intervals are filled smoothly rather than wildly). Pairs
come from vesin's half neighbour list (the library behind :mod:`thermocg.neighbors`); the design
matrix of a frame is assembled with one ``np.bincount`` per Cartesian component over (bead, column).

The sampled range is detected per type pair: r_s is the start of the first spline interval holding at
least ``min_pairs_per_interval`` pair distances; below it the potential continues with a repulsive
power law (see :class:`~thermocg.potentials.pair.PairTable`). Multi-state fitting pools the frames of
all state points into the same normal equations.

Temperature-dependent MS-CG (``pair.temperature_dependence: linear``). The pair forces are

    F_ab(r; T) = F0_ab(r) + (T - T_ref) F1_ab(r),       F0, F1 cubic B-splines on the same grid,

so a frame at temperature T has the design matrix [G, (T - T_ref) G] (2 n_params columns) and the
pooled multi-temperature fit is still one linear least-squares problem. Its normal equations,

    [[ sum G^T G,        sum w G^T G   ],  [c0]     [ sum G^T f   ]
     [ sum w G^T G,      sum w^2 G^T G ]]  [c1]  =  [ sum w G^T f ],      w = T - T_ref,

are streamed frame by frame like the temperature-agnostic ones: G^T G and G^T f are formed once per
frame and accumulated with the weights 1, (T - T0), (T - T0)^2 about the first training temperature
T0, so T_ref (by default the mean temperature of the fitted frames, known only at the end) enters
only at the solve (w = (T - T0) - (T_ref - T0)). Each block is regularised like the agnostic fit,
relative to its own mean diagonal (ridge, and the second-difference smoothness penalty along each
pair's coefficients), so the regularisation does not depend on the unit of T. c0 and c1 are
identifiable only where at least two temperatures sample a distance, so the sampled range r_s of a
pair is the start of the first interval holding ``min_pairs_per_interval`` distances at two or more
training temperatures (one r_s for all temperatures; the wall below it is built at each temperature
from that temperature's spline, see :class:`~thermocg.potentials.pair.PairTableThermal`). Data of one
temperature only cannot give F1: the fit then warns and returns the temperature-agnostic
:class:`~thermocg.potentials.pair.PairTable`, with the same coefficients as
``temperature_dependence: none``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch

from thermocg import provenance
from thermocg.analysis.forces import ForceErrorAccumulator, force_errors
from thermocg.config import Config, ConfigError, PairConfig, write_resolved
from thermocg.dataset import H5MDDataset
from thermocg.frames import Frames, merged_type_names
from thermocg.model_summary import ModelSummary
from thermocg.neighbors import check_cutoff_fits
from thermocg.potentials.base import save_potential
from thermocg.potentials.pair import PairTable, PairTableThermal, bspline_basis, export_lammps
from thermocg.progress import Progress
from thermocg.rundir import RunDir, atomic_savefig, atomic_write_text

__all__ = ["MSCGError", "MSCGWarning", "NormalEquations", "fit_pair_potential", "run_fit_pair", "force_errors",
           "split_frames"]


class MSCGError(ValueError):
    """Data that cannot give an MS-CG fit; the message names the problem (and the pair or file)."""


class MSCGWarning(UserWarning):
    """A fit that works but whose data are thin somewhere (sparse intervals, a non-repulsive r_s)."""


class NormalEquations:
    """Streaming accumulator of the MS-CG normal equations.

    ``add(frames)`` adds the frames' contribution to G^T G (n_params, n_params), G^T f (n_params,),
    f.f, and to the per-interval pair-distance histograms; ``solve(...)`` returns the
    :class:`PairTable`. Memory is O(n_params^2 + 3 N n_params), whatever the number of frames.

    With ``temperature_dependence="linear"`` it also accumulates the temperature-weighted moments
    sum (T - T0) G^T G, sum (T - T0)^2 G^T G and sum (T - T0) G^T f, and the histograms per training
    temperature (each Frames must carry its state's temperature); ``solve`` then returns a
    :class:`PairTableThermal` (module docstring). Memory stays independent of the number of frames.
    """

    def __init__(self, type_names: Iterable[str], *, cutoff_A: float, r_min_A: float, spacing_A: float,
                 temperature_dependence: str = "none") -> None:
        self.type_names = tuple(str(t) for t in type_names)
        if not self.type_names:
            raise MSCGError("MS-CG: no bead types")
        if temperature_dependence not in ("none", "linear"):
            raise MSCGError(f"MS-CG: temperature_dependence must be 'none' or 'linear', got {temperature_dependence!r}")
        self.temperature_dependence = temperature_dependence
        if not 0 < r_min_A < cutoff_A:
            raise MSCGError(f"MS-CG: need 0 < r_min_A < cutoff_A, got {r_min_A}, {cutoff_A}")
        self.cutoff_A = float(cutoff_A)
        self.r_min_A = float(r_min_A)
        self.n_basis = max(4, int(round((cutoff_A - r_min_A) / spacing_A)))
        self.spacing_A = (self.cutoff_A - self.r_min_A) / self.n_basis
        n = len(self.type_names)
        self.pairs = [(a, b) for a in range(n) for b in range(a, n)]
        self.pair_index = np.zeros((n, n), dtype=np.int64)
        for k, (a, b) in enumerate(self.pairs):
            self.pair_index[a, b] = self.pair_index[b, a] = k
        self.n_params = len(self.pairs) * self.n_basis
        self.gtg = np.zeros((self.n_params, self.n_params))
        self.gtf = np.zeros(self.n_params)
        self.ftf = 0.0
        self.f_sum = 0.0
        self.n_rows = 0
        self.n_frames = 0
        self.counts = np.zeros((len(self.pairs), self.n_basis), dtype=np.int64)
        self.min_distance = np.full(len(self.pairs), np.inf)
        # temperature_dependence "linear": moments about the first training temperature T0
        self.temperature_origin_K: float | None = None
        self.temperature_shift_sum = 0.0  # sum over frames of (T - T0)
        self.gtg_t1: np.ndarray | None = None
        self.gtg_t2: np.ndarray | None = None
        self.gtf_t1: np.ndarray | None = None
        self.frames_per_temperature: dict[float, int] = {}
        self.counts_per_temperature: dict[float, np.ndarray] = {}

    def pair_name(self, k: int) -> str:
        a, b = self.pairs[k]
        return f"{self.type_names[a]}-{self.type_names[b]}"

    # ----------------------------------------------------------------------------------------------
    def design_matrix(self, positions: np.ndarray, box: np.ndarray, types: np.ndarray) -> np.ndarray:
        """G of one frame, (3 N, n_params): row 3 I + x is the x component of the force on bead I.

        ``types`` are indices into this accumulator's ``type_names``. Also updates the distance
        histograms (so call it once per frame).
        """
        n_particles = len(positions)
        i, j, vec = _half_pairs(positions, box, self.cutoff_A)
        r = np.sqrt(np.einsum("pk,pk->p", vec, vec))
        pair_type = self.pair_index[types[i], types[j]]
        if len(r) and r.min() < self.r_min_A:
            p = int(np.argmin(r))
            raise MSCGError(
                f"MS-CG: a {self.pair_name(int(pair_type[p]))} pair at r = {r[p]:.3f} A is below the spline grid "
                f"start pair.r_min_A = {self.r_min_A} A; lower r_min_A"
            )
        interval, columns, values = bspline_basis(r, self.r_min_A, self.cutoff_A, self.n_basis)
        np.minimum.at(self.min_distance, pair_type, r)
        self.counts += np.bincount(pair_type * self.n_basis + interval,
                                   minlength=self.counts.size).reshape(self.counts.shape)
        unit = vec / r[:, None]
        columns = columns + (pair_type * self.n_basis)[:, None]  # (P, 4)
        # F_i gets -F(r) u_ij, F_j gets +F(r) u_ij: one bincount per Cartesian component over
        # (bead, column) bins; the (P, 4) bin indices are shared by the three components
        bins = np.concatenate([(i[:, None] * self.n_params + columns).ravel(),
                               (j[:, None] * self.n_params + columns).ravel()])
        design = np.empty((n_particles, 3, self.n_params))
        for c in range(3):
            w = (values * unit[:, c:c + 1]).ravel()
            design[:, c, :] = np.bincount(bins, weights=np.concatenate([-w, w]),
                                          minlength=n_particles * self.n_params).reshape(n_particles, self.n_params)
        return design.reshape(3 * n_particles, self.n_params)

    def add(self, frames: Frames) -> None:
        """Accumulate the normal equations of every frame of ``frames`` (which must carry forces)."""
        source = frames.metadata.get("source", "frames")
        if frames.forces is None:
            raise MSCGError(f"MS-CG: {source} has no forces; force matching needs the CG forces")
        unknown = [t for t in frames.type_names if t not in self.type_names]
        if unknown:
            raise MSCGError(f"MS-CG: {source} has bead types {unknown} not in the fit's {list(self.type_names)}")
        lookup = np.array([self.type_names.index(t) for t in frames.type_names], dtype=np.int64)
        types = lookup[frames.types]
        try:
            check_cutoff_fits(self.cutoff_A, frames.box, what="pair.cutoff_A")
        except ValueError as exc:
            raise MSCGError(f"MS-CG: {source}: {exc}") from None
        temperature = self._frames_temperature(frames, source)
        for f in range(frames.n_frames):
            before = None if temperature is None else self.counts.copy()
            g = self.design_matrix(frames.positions[f], frames.box[f], types)
            target = frames.forces[f].reshape(-1)
            gtg = g.T @ g
            gtf = g.T @ target
            self.gtg += gtg
            self.gtf += gtf
            self.ftf += float(target @ target)
            self.f_sum += float(target.sum())
            self.n_rows += len(target)
            self.n_frames += 1
            if temperature is not None:
                self._add_temperature_moments(temperature, gtg, gtf, self.counts - before)

    def _frames_temperature(self, frames: Frames, source: str) -> float | None:
        """The frames' state temperature (K) for a linear fit; None for a temperature-agnostic one."""
        if self.temperature_dependence == "none":
            return None
        if frames.state is None:
            raise MSCGError(f"MS-CG: {source} carries no state point, so no temperature; "
                            "pair.temperature_dependence: linear needs each frame's temperature")
        temperature = float(frames.state.temperature_K)
        if self.temperature_origin_K is None:
            n = self.n_params
            self.temperature_origin_K = temperature
            self.gtg_t1, self.gtg_t2, self.gtf_t1 = np.zeros((n, n)), np.zeros((n, n)), np.zeros(n)
        return temperature

    def _add_temperature_moments(self, temperature: float, gtg: np.ndarray, gtf: np.ndarray,
                                 counts: np.ndarray) -> None:
        shift = temperature - self.temperature_origin_K
        if shift != 0.0:
            self.gtg_t1 += shift * gtg
            self.gtg_t2 += (shift * shift) * gtg
            self.gtf_t1 += shift * gtf
        self.temperature_shift_sum += shift
        self.frames_per_temperature[temperature] = self.frames_per_temperature.get(temperature, 0) + 1
        if temperature not in self.counts_per_temperature:
            self.counts_per_temperature[temperature] = np.zeros_like(self.counts)
        self.counts_per_temperature[temperature] += counts

    # ----------------------------------------------------------------------------------------------
    def _penalty(self, active: np.ndarray) -> np.ndarray:
        """D^T D of second differences along each pair's coefficients, over active columns only."""
        penalty = np.zeros((self.n_params, self.n_params))
        stencil = np.array([1.0, -2.0, 1.0])
        for k in range(len(self.pairs)):
            base = k * self.n_basis
            for m in range(self.n_basis - 2):
                cols = base + m + np.arange(3)
                if active[cols].all():
                    penalty[np.ix_(cols, cols)] += np.outer(stencil, stencil)
        return penalty

    def training_temperatures_K(self) -> list[float]:
        """The distinct temperatures of the frames added (linear fits only; else empty), ascending."""
        return sorted(self.frames_per_temperature)

    def solve(self, *, ridge: float = 1e-10, smoothness: float = 1e-7, min_pairs_per_interval: int = 20,
              extrapolation_power: float = 12.0, unsampled_pairs: str = "error",
              reference_temperature_K: float | None = None, max_temperature_extrapolation_K: float | None = None):
        """The fitted :class:`PairTable` (or :class:`PairTableThermal` for a linear fit on two or more
        temperatures), with a ``fit_info`` dict (per-pair sampling, training errors, warnings)
        attached as an attribute.

        ``reference_temperature_K``: T_ref of a linear fit (None: the mean temperature of the fitted
        frames); ``max_temperature_extrapolation_K``: stored in the thermal model (None: half the
        range of the training temperatures). The training SSE comes from the normal equations
        without revisiting frames: SSE = f.f - 2 c.(G^T f) + c.(G^T G) c, and
        R^2 = 1 - SSE / (f.f - (sum f)^2 / n).
        """
        if self.n_frames == 0:
            raise MSCGError("MS-CG: no frames were added")
        messages: list[str] = []

        def warn(text: str) -> None:
            messages.append(text)
            warnings.warn(text, MSCGWarning, stacklevel=4)

        temperatures = self.training_temperatures_K()
        linear = len(temperatures) >= 2
        if self.temperature_dependence == "linear" and not linear:
            warn(f"MS-CG: pair.temperature_dependence is linear but every frame is at one temperature "
                 f"({temperatures[0]:g} K), so the temperature derivative F1 cannot be fitted; the model is the "
                 "temperature-agnostic pair_table (as with temperature_dependence: none)")
        r_sampled, pair_info = self._sampled_ranges(min_pairs_per_interval, unsampled_pairs, warn,
                                                    by_temperature=linear)
        info: dict[str, Any] = {"temperature_dependence": "linear" if linear else "none"}
        if linear:
            reference = (self.temperature_origin_K + self.temperature_shift_sum / self.n_frames
                         if reference_temperature_K is None else float(reference_temperature_K))
            matrix, rhs = self._linear_system(reference)
            coef, n_active = self._regularised_solve(matrix, rhs, ridge, smoothness, n_blocks=2)
            table = PairTableThermal(
                self.type_names, cutoff_A=self.cutoff_A, r_min_A=self.r_min_A,
                coefficients=self._pair_coefficients(coef[:self.n_params]),
                temperature_coefficients=self._pair_coefficients(coef[self.n_params:]),
                reference_temperature_K=reference, r_sampled_min_A=r_sampled,
                extrapolation_power=extrapolation_power,
                valid_temperature_range_K=(temperatures[0], temperatures[-1]),
                max_temperature_extrapolation_K=max_temperature_extrapolation_K)
            for temperature in temperatures:
                self._check_walls(table.at_temperature(temperature), r_sampled, pair_info, warn,
                                  temperature_K=temperature)
            info.update(reference_temperature_K=reference, training_temperatures_K=temperatures,
                        valid_temperature_range_K=[temperatures[0], temperatures[-1]],
                        max_temperature_extrapolation_K=table.extrapolation_limit_K(),
                        frames_per_temperature={f"{t:g}": self.frames_per_temperature[t] for t in temperatures})
        else:
            matrix, rhs = self.gtg, self.gtf
            coef, n_active = self._regularised_solve(matrix, rhs, ridge, smoothness, n_blocks=1)
            table = PairTable(self.type_names, cutoff_A=self.cutoff_A, r_min_A=self.r_min_A,
                              coefficients=self._pair_coefficients(coef), r_sampled_min_A=r_sampled,
                              extrapolation_power=extrapolation_power)
            self._check_walls(table, r_sampled, pair_info, warn)
            if temperatures:
                info["training_temperatures_K"] = temperatures
        sse = max(self.ftf - 2.0 * coef @ rhs + coef @ matrix @ coef, 0.0)
        variance = self.ftf - self.f_sum**2 / self.n_rows
        table.fit_info = {
            "method": "MS-CG force matching, cubic B-spline pair forces (normal equations)"
                      + (", linear in temperature" if linear else ""),
            **info,
            "n_frames": self.n_frames,
            "n_force_components": self.n_rows,
            "n_coefficients": len(coef),
            "n_active_coefficients": n_active,
            "spacing_A": self.spacing_A,
            "r_min_A": self.r_min_A,
            "cutoff_A": self.cutoff_A,
            "ridge": ridge,
            "smoothness": smoothness,
            "train_rmse_kcal_mol_A": float(np.sqrt(sse / self.n_rows)),
            "train_r2": float(1.0 - sse / variance) if variance > 0 else float("nan"),
            "pairs": pair_info,
            "warnings": messages,
        }
        return table

    def _pair_coefficients(self, coef: np.ndarray) -> np.ndarray:
        """(n_params,) flat coefficients -> the symmetric (n_types, n_types, K) table."""
        n = len(self.type_names)
        table_coef = np.zeros((n, n, self.n_basis))
        for k, (a, b) in enumerate(self.pairs):
            table_coef[a, b] = table_coef[b, a] = coef[k * self.n_basis:(k + 1) * self.n_basis]
        return table_coef

    def _linear_system(self, reference_K: float) -> tuple[np.ndarray, np.ndarray]:
        """The unregularised normal matrix (2 n_params, 2 n_params) and right-hand side of the linear-in-T
        fit with w = T - reference_K, from the moments about T0 (module docstring)."""
        delta = reference_K - self.temperature_origin_K
        cross = self.gtg_t1 - delta * self.gtg
        square = self.gtg_t2 - 2.0 * delta * self.gtg_t1 + delta * delta * self.gtg
        matrix = np.block([[self.gtg, cross], [cross.T, square]])
        rhs = np.concatenate([self.gtf, self.gtf_t1 - delta * self.gtf])
        return matrix, rhs

    def _well_sampled(self, k: int, min_pairs_per_interval: int, by_temperature: bool) -> np.ndarray:
        """(K,) bool per spline interval of pair k: holds ``min_pairs_per_interval`` distances (pooled),
        or, ``by_temperature``, that many at two or more training temperatures."""
        if not by_temperature:
            return self.counts[k] >= min_pairs_per_interval
        per_temperature = np.stack([c[k] for c in self.counts_per_temperature.values()])
        return (per_temperature >= min_pairs_per_interval).sum(axis=0) >= 2

    def _sampled_ranges(self, min_pairs_per_interval: int, unsampled_pairs: str,
                        warn: Callable[[str], None], *,
                        by_temperature: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
        """r_s per type pair (n_types, n_types) A, the start of the first well-sampled interval
        (:meth:`_well_sampled`; never below the closest distance seen), and the per-pair sampling
        record; warns about sparse intervals, errs on (or zeroes) unsampled pairs."""
        n = len(self.type_names)
        h = self.spacing_A
        r_sampled = np.full((n, n), self.r_min_A)
        pair_info: dict[str, Any] = {}
        holds = (f"{min_pairs_per_interval} distances at two or more temperatures" if by_temperature
                 else f"{min_pairs_per_interval} distances")
        for k, (a, b) in enumerate(self.pairs):
            name = self.pair_name(k)
            counts = self.counts[k]
            total = int(counts.sum())
            if total == 0:
                text = (f"MS-CG: bead-type pair {name} is never within pair.cutoff_A = {self.cutoff_A} A in the "
                        f"{self.n_frames} frames, so its force cannot be fitted")
                if unsampled_pairs == "error":
                    raise MSCGError(text + "; add data or set pair.unsampled_pairs: zero")
                warn(text + "; its force is set to zero (with the repulsive wall below r_min_A)")
                pair_info[name] = {"n_pairs": 0, "sampled": False}
                continue
            well_sampled = self._well_sampled(k, min_pairs_per_interval, by_temperature)
            well = np.nonzero(well_sampled)[0]
            if len(well) == 0:
                warn(f"MS-CG: pair {name}: no spline interval holds {holds} "
                     f"({total} in all); the grid (spacing {h:.3g} A) is finer than the data supports")
                first = int(np.nonzero(counts)[0][0])
            else:
                first = int(well[0])
            r_s = max(self.r_min_A + first * h, float(self.min_distance[k]))
            r_sampled[a, b] = r_sampled[b, a] = r_s
            sparse = np.nonzero(~well_sampled[first:])[0] + first
            if len(sparse):
                fraction = len(sparse) / (self.n_basis - first)
                text = (f"MS-CG: pair {name}: {len(sparse)} of {self.n_basis - first} spline intervals above "
                        f"r_s = {r_s:.2f} A hold fewer than {holds} (first at "
                        f"r = {self.r_min_A + sparse[0] * h:.2f} A); they are regularised by the smoothness penalty")
                if fraction > 0.25:
                    text += f"; the grid spacing {h:.3g} A is finer than the data support: use a larger pair.spacing_A"
                warn(text)
            pair_info[name] = {
                "n_pairs": total,
                "sampled": True,
                "min_distance_A": float(self.min_distance[k]),
                "r_sampled_min_A": r_s,
                "sparse_intervals": int(len(sparse)),
            }
        return r_sampled, pair_info

    def _regularised_solve(self, matrix: np.ndarray, rhs: np.ndarray, ridge: float, smoothness: float, *,
                           n_blocks: int) -> tuple[np.ndarray, int]:
        """The coefficients solving the regularised normal equations over the active columns (those
        with a non-zero diagonal: a distance reached them), and how many are active. The matrix holds
        ``n_blocks`` blocks of n_params columns (c0, and c1 for a linear fit); each block gets the
        ridge and the smoothness penalty relative to its own mean active diagonal."""
        diag = np.diag(matrix).copy()
        active = diag > 0
        n_active = int(active.sum())
        if self.n_rows < n_active:
            raise MSCGError(
                f"MS-CG: the grid is finer than the data support: {self.n_rows} force components for "
                f"{n_active} spline coefficients; use more frames or a larger pair.spacing_A "
                f"(now {self.spacing_A:.3g} A)"
            )
        regularised = matrix.copy()
        for block in range(n_blocks):
            part = slice(block * self.n_params, (block + 1) * self.n_params)
            block_active = active[part]
            scale = float(diag[part][block_active].mean()) if block_active.any() else 1.0
            regularised[part, part] += ridge * scale * np.eye(self.n_params)
            if smoothness > 0:
                regularised[part, part] += smoothness * scale * self._penalty(block_active)
        coef = np.zeros(len(rhs))
        if n_active:
            sub = regularised[np.ix_(active, active)]
            try:
                coef[active] = scipy.linalg.solve(sub, rhs[active], assume_a="sym")
            except (np.linalg.LinAlgError, ValueError):  # singular without regularisation
                coef[active] = np.linalg.lstsq(sub, rhs[active], rcond=None)[0]
        return coef, n_active

    def _check_walls(self, table, r_sampled: np.ndarray, pair_info: dict[str, Any],
                     warn: Callable[[str], None], *, temperature_K: float | None = None) -> None:
        """Record F(r_s) and dF/dr there per sampled pair (per training temperature, ``walls``, for a
        linear fit: ``table`` is then the model at ``temperature_K``); warn where the fit is no
        repulsive wall."""
        at = "" if temperature_K is None else f" at T = {temperature_K:g} K"
        for k, (a, b) in enumerate(self.pairs):
            name = self.pair_name(k)
            if not pair_info[name]["sampled"]:
                continue
            r_s = r_sampled[a, b]
            _, f_s = table.curve(np.array([r_s]), a, b)
            slope = table.force_derivative(r_s + 1e-4, a, b)
            record = dict(force_at_r_s_kcal_mol_A=float(f_s[0]), slope_at_r_s=slope)
            if temperature_K is None:
                pair_info[name].update(record)
            else:
                pair_info[name].setdefault("walls", {})[f"{temperature_K:g}"] = record
            if not (slope < 0 and f_s[0] > 0):
                warn(f"MS-CG: pair {name}: the fitted force{at} at r_s = {r_s:.2f} A is not a repulsive wall "
                     f"(F = {f_s[0]:.3g} kcal/mol/A, dF/dr = {slope:.3g}); below r_s a power-law wall takes over "
                     f"with a floor on its strength")


def _half_pairs(positions: np.ndarray, box: np.ndarray, cutoff_A: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each pair within the cutoff once: i, j (P,) int64 and the vectors R_j - R_i + shift (P, 3) A.

    vesin's half list directly (thermocg.neighbors keeps full lists, twice the work for a fit that
    needs each pair once)."""
    import vesin

    nl = vesin.NeighborList(cutoff=float(cutoff_A), full_list=False)
    i, j, vectors = nl.compute(points=np.ascontiguousarray(positions, dtype=np.float64),
                               box=np.ascontiguousarray(box, dtype=np.float64), periodic=True, quantities="ijD")
    return i.astype(np.int64), j.astype(np.int64), np.asarray(vectors, dtype=np.float64)


def fit_pair_potential(frames_list: list[Frames] | Frames, config: PairConfig | None = None, *,
                       progress: bool = False):
    """Fit an MS-CG :class:`~thermocg.potentials.pair.PairTable` to CG frames with forces.

    ``frames_list``: Frames of one or several state points (pooled, like multi-state training).
    ``config``: the ``pair`` section (defaults when None). The result carries ``fit_info``
    (sampled range per pair, training RMSE/R^2, warnings). With ``temperature_dependence: linear``
    each Frames must carry its state point (its temperature); frames at two or more temperatures
    give a :class:`~thermocg.potentials.pair.PairTableThermal`, frames at one temperature the
    agnostic table (with a warning).
    """
    settings = config or PairConfig()
    if isinstance(frames_list, Frames):
        frames_list = [frames_list]
    if not frames_list:
        raise MSCGError("MS-CG: no frames to fit")
    blocks = (frames.select(slice(start, start + settings.block_frames))
              for frames in frames_list for start in range(0, frames.n_frames, settings.block_frames))
    return _fit_blocks(merged_type_names(frames_list), blocks, settings, n_frames=sum(f.n_frames for f in frames_list),
                       progress=progress)


def _fit_blocks(type_names: Sequence[str], blocks: Iterable[Frames], settings: PairConfig, *, n_frames: int,
                progress: bool):
    """Accumulate the normal equations over ``blocks`` of frames, then solve with ``settings``."""
    eq = NormalEquations(type_names, cutoff_A=settings.cutoff_A, r_min_A=settings.r_min_A,
                         spacing_A=settings.spacing_A, temperature_dependence=settings.temperature_dependence)
    bar = _progress(n_frames, progress, "MS-CG fit")
    for block in blocks:
        eq.add(block)
        bar.update(block.n_frames)
    bar.close()
    return eq.solve(ridge=settings.ridge, smoothness=settings.smoothness,
                    min_pairs_per_interval=settings.min_pairs_per_interval,
                    extrapolation_power=settings.extrapolation_power, unsampled_pairs=settings.unsampled_pairs,
                    reference_temperature_K=settings.reference_temperature_K,
                    max_temperature_extrapolation_K=settings.max_temperature_extrapolation_K)


def _progress(total: int, enabled: bool, desc: str) -> Progress:
    return Progress(total, description=desc, unit="frames", leave=False, mode="auto" if enabled else "off")


# --------------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------------

def _tables_by_temperature(table: PairTable) -> list[tuple[float | None, PairTable]]:
    """[(None, table)] for an agnostic table; [(T, the table at T)] per training temperature for a
    temperature-dependent one."""
    if not isinstance(table, PairTableThermal):
        return [(None, table)]
    return [(t, table.at_temperature(t)) for t in table.fit_info["training_temperatures_K"]]


def _plot_pairs(table, fit_info: dict[str, Any], out_dir: Path) -> list[Path]:
    """One figure per type pair: the fitted force and potential (at each training temperature for a
    temperature-dependent table), with r_s (the wall below it) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    curves = _tables_by_temperature(table)
    for a, b in table.type_pairs():
        name = f"{table.type_names[a]}-{table.type_names[b]}"
        r_s = float(table.r_sampled_min[a, b])
        r = np.linspace(max(table.r_min_A, 0.85 * r_s), table.cutoff_A, 600)
        values = [(t, *at_t.curve(r, a, b)) for t, at_t in curves]
        fig, (ax_f, ax_u) = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
        for ax, column, label in ((ax_f, 2, "force F(r) (kcal/mol/A)"), (ax_u, 1, "potential U(r) (kcal/mol)")):
            for k, curve in enumerate(values):
                ax.plot(r, curve[column], color=f"C{k}", label=None if curve[0] is None else f"T = {curve[0]:g} K")
            ax.axvline(r_s, color="grey", ls="--", lw=0.8, label=f"r_s = {r_s:.2f} A (wall below)")
            ax.axhline(0.0, color="black", lw=0.5)
            ax.set_xlabel("r (A)")
            ax.set_ylabel(label)
            # zoom on the attractive well (if any); the steep wall runs off the top
            sampled = np.concatenate([curve[column][r >= r_s] for curve in values])
            lo, hi = float(sampled.min()), float(sampled.max())
            if lo < 0:
                hi = min(hi, -4.0 * lo)
            pad = 0.1 * (hi - lo + 1e-12)
            ax.set_ylim(lo - pad, hi + pad)
        ax_f.legend(fontsize=8)
        fig.suptitle(f"MS-CG pair {name}")
        paths.append(atomic_savefig(fig, out_dir / f"pair_{table.type_names[a]}_{table.type_names[b]}.png", dpi=120))
        plt.close(fig)
    return paths


def _fit_labels(config: Config, rd: RunDir, train_states: list[str] | None) -> dict[str, Path]:
    """label -> RUN_DIR/cg/<label>.h5md of the states to fit: ``train_states``, else the config's
    states, else every dataset; a missing dataset is an error."""
    available = {p.stem: p for p in rd.cg_datasets()}
    labels = [s.to_state().label for s in config.state_points()] or sorted(available)
    if train_states:
        labels = list(train_states)
    missing = [label for label in labels if label not in available]
    if missing or not labels:
        raise MSCGError(f"MS-CG: no CG dataset for state(s) {missing or labels} in {rd.root / 'cg'} "
                        f"(available: {sorted(available)}); run `thermocg map` first")
    return {label: available[label] for label in labels}


def split_frames(ds: H5MDDataset, settings: PairConfig) -> tuple[np.ndarray, np.ndarray]:
    """(fit, test) frame indices of one dataset: every ``frame_stride``-th frame, at most
    ``max_frames``, the last ``test_fraction`` of them held out."""
    if not ds.has_forces:
        raise MSCGError(f"MS-CG: {ds.path} has no forces; force matching needs the CG forces")
    index = np.arange(0, len(ds), settings.frame_stride)
    if settings.max_frames is not None:
        index = index[: settings.max_frames]
    n_test = int(round(settings.test_fraction * len(index)))
    if len(index) - n_test < 1:
        raise MSCGError(f"MS-CG: {ds.path} has too few frames ({len(index)}) to fit")
    return index[: len(index) - n_test], index[len(index) - n_test:]


def _thread_limit(n_threads: int) -> contextlib.AbstractContextManager:
    """BLAS/OpenMP threads limited to ``n_threads`` inside the block (threadpoolctl, when installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scipy's usual installs
        return contextlib.nullcontext()
    return threadpool_limits(limits=n_threads)


def _fit_and_test(paths: dict[str, Path], settings: PairConfig) -> tuple[Any, dict[str, Any], ForceErrorAccumulator]:
    """Fit the table to the fit frames of every dataset (pooled), then its force errors on each
    state's test frames: (table, {label: force_errors dict}, the accumulator pooling every state)."""
    datasets = {label: H5MDDataset(path, kind="cg") for label, path in paths.items()}
    try:
        splits = {label: split_frames(ds, settings) for label, ds in datasets.items()}
        blocks = (ds.read(fit[start:start + settings.block_frames])
                  for label, ds in datasets.items() for fit in (splits[label][0],)
                  for start in range(0, len(fit), settings.block_frames))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MSCGWarning)
            table = _fit_blocks(merged_type_names(list(datasets.values())), blocks, settings,
                                n_frames=sum(len(fit) for fit, _ in splits.values()), progress=settings.progress)
        for w in caught:
            print(f"warning: {w.message}")
        pooled = ForceErrorAccumulator()
        test_errors = {}
        for label, ds in datasets.items():
            if len(splits[label][1]):
                # a temperature-dependent table is tested at each state's own temperature
                table.set_temperature(ds.state.temperature_K if table.temperature_dependent else None)
                test_errors[label] = force_errors(table, ds, frame_indices=splits[label][1], accumulator=pooled,
                                                  state=label)
        table.set_temperature(None)
    finally:
        for ds in datasets.values():
            ds.close()
    return table, test_errors, pooled


def run_fit_pair(config: Config, run_dir: str | os.PathLike, *, name: str | None = None,
                 train_states: list[str] | None = None) -> ModelSummary:
    """``thermocg fit-pair CONFIG``: fit the MS-CG pair potential to the CG datasets of the run.

    Reads RUN_DIR/cg/<state>.h5md (the config's states, or ``train_states`` labels, or every dataset
    when the config lists none), holds out the last ``pair.test_fraction`` of each state's frames, and
    writes RUN_DIR/models/<name>/{model.safetensors, fit.json, pair_A_B.png, resolved.yaml, lammps/}.
    A temperature-dependent fit (``pair.temperature_dependence: linear``) is tested at each state's
    temperature, and its LAMMPS tables are written per training temperature (lammps/T<T>/). Returns
    the :class:`~thermocg.model_summary.ModelSummary` of the table (test errors pooled over the
    states' held-out frames; no epochs: the fit is one linear solve).
    """
    if not isinstance(config, Config) or not isinstance(config.pair, PairConfig):
        raise ConfigError(f"fit-pair: expected a thermocg Config with a pair section, got {type(config).__name__}")
    started = time.perf_counter()
    settings = config.pair
    rd = RunDir(run_dir)
    paths = _fit_labels(config, rd, train_states)
    labels = list(paths)
    torch.set_num_threads(settings.n_threads)
    with _thread_limit(settings.n_threads):
        table, test_errors, pooled = _fit_and_test(paths, settings)

    out_dir = rd.model(name or settings.name)
    model_path = save_potential(table, out_dir / "model.safetensors",
                                provenance=provenance.collect(list(paths.values()), stage="fit-pair",
                                                              train_states=labels))
    fit_info = dict(table.fit_info, train_states=labels, test_force_errors=test_errors)
    atomic_write_text(out_dir / "fit.json", json.dumps(fit_info, indent=1, default=float) + "\n")
    _plot_pairs(table, fit_info, out_dir)
    if settings.lammps_table_points:
        for temperature, _ in _tables_by_temperature(table):
            where = out_dir / "lammps" if temperature is None else out_dir / "lammps" / f"T{temperature:g}"
            export_lammps(table, where, n_points=settings.lammps_table_points, temperature_K=temperature)
    write_resolved(settings, out_dir / "resolved.yaml", extra={"train_states": labels})
    print(f"MS-CG: {model_path} ({table.fit_info['n_frames']} frames, train force RMSE "
          f"{table.fit_info['train_rmse_kcal_mol_A']:.4g} kcal/mol/A)")
    test = pooled.metrics() if pooled.n_frames() else None
    return ModelSummary(
        family="mscg", name=out_dir.name, model_path=model_path, train_states=tuple(labels),
        wall_s=time.perf_counter() - started, n_epochs=None, best_epoch=None, stopped_at_max_epochs=False,
        test_force_rmse_kcal_mol_A=None if test is None else test.rmse,
        test_force_mae_kcal_mol_A=None if test is None else test.mae,
        test_r2=None if test is None else test.r2, cutoff_A=float(table.cutoff_A))
