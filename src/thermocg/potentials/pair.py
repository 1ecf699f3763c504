"""Tabulated pair potentials (the MS-CG baseline), and their export to LAMMPS and GROMACS tables.

:class:`PairTable` (kind ``"pair_table"``) is a sum of isotropic pair terms, one per unordered bead-type
pair (a, b),

    E = sum_{i<j, r_ij < r_c} U_ab(r_ij),        F_ab(r) = -dU_ab/dr   (kcal/mol/A; > 0 is repulsive)

The pair *force* is a uniform cubic B-spline on the grid r_k = r_min + k h, k = 0..K, h = (r_c - r_min)/K,

    F_ab(r) = sum_{j=0}^{K-1} c_ab,j B_j(r),     B_j = the cardinal cubic B-spline on knots r_min + (j-3+[0..4]) h

Only the K basis functions whose support ends at or before r_c are used, so F, F' and F'' all vanish at
the cutoff (the energy is C^3 there). The energy is the exact integral of that spline,
U_ab(r) = int_r^{r_c} F_ab(s) ds, evaluated analytically (piecewise quartic), so the autograd force is
exactly the spline and energy and force are consistent to round-off.

Below r_s (``r_sampled_min_A``, the smallest well-sampled distance of the pair in the fitted data) the
spline is not trusted and the force continues with a repulsive power law matched in value and slope,

    F(r) = F_s + a [(r_s / r)^p - 1],      a = max(-F'_s r_s / p,  max(|F_s|, 1 kcal/mol/A) / (0.9^-p - 1))

(p = ``extrapolation_power``, F_s = F(r_s), F'_s = dF/dr at r_s), whose energy is closed-form:

    U(r) = U(r_s) + (F_s - a)(r_s - r) + a r_s / (p - 1) [(r_s / r)^(p - 1) - 1].

The floor on ``a`` (used when the data at r_s are not a steep enough repulsive wall) makes the force
at 0.9 r_s at least F_s + max(|F_s|, 1), i.e. repulsive, so that simulations cannot collapse; then
only the value is matched, not the slope.

:class:`PairTableThermal` (kind ``"pair_table_thermal"``) is the temperature-dependent form fitted by
MS-CG on pooled multi-temperature data, F_ab(r; T) = F0_ab(r) + (T - T_ref) F1_ab(r), two splines on
the same grid; at its set temperature it is the PairTable with coefficients c0 + (T - T_ref) c1.

Export: :func:`export_lammps` writes ``pair_style table`` files (one section per type pair) and a small
include file with the ``pair_style``/``pair_coeff`` lines; :func:`export_gromacs` writes GROMACS user
tables ``table_A_B.xvg`` (nm, kJ/mol); a temperature-dependent table is written at one requested
temperature. :func:`run_export` is the CLI entry (``thermocg export``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thermocg import units
from thermocg.neighbors import Graph
from thermocg.potentials.base import Potential, register

__all__ = ["PairTable", "PairTableThermal", "export_lammps", "export_gromacs", "write_lammps_data", "run_export", "ExportError"]

#: the integrals over [0, 1] of the four local pieces of a cardinal cubic B-spline
_PIECE_INTEGRALS = (1.0 / 24.0, 11.0 / 24.0, 11.0 / 24.0, 1.0 / 24.0)


class ExportError(ValueError):
    """A model that cannot be exported, or bad export options; the message names the problem."""


def _pieces(t: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """The four local pieces of a cubic B-spline at t in [0, 1] of an interval: values, derivatives
    with respect to t, and integrals from 0 to t. Piece m multiplies coefficient c_{k+m} on interval k."""
    s = 1.0 - t
    t2, t3 = t * t, t * t * t
    values = [s * s * s / 6.0, (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0, (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0, t3 / 6.0]
    derivs = [-s * s / 2.0, (9.0 * t2 - 12.0 * t) / 6.0, (-9.0 * t2 + 6.0 * t + 3.0) / 6.0, t2 / 2.0]
    t4 = t2 * t2
    integrals = [
        (1.0 - s**4) / 24.0,
        (0.75 * t4 - 2.0 * t3 + 4.0 * t) / 6.0,
        (-0.75 * t4 + t3 + 1.5 * t2 + t) / 6.0,
        t4 / 24.0,
    ]
    return values, derivs, integrals


def bspline_basis(r: np.ndarray, r_min_A: float, cutoff_A: float, n_basis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Basis values of the force spline at distances r (numpy; used by the MS-CG fit).

    Returns ``interval`` (P,) int (k), ``columns`` (P, 4) int basis indices k..k+3 and ``values`` (P, 4)
    B_{k+m}(r); columns >= n_basis (the functions cut at r_c) have value 0 and column n_basis - 1
    (harmless: callers drop them by the zero value). Distances outside [r_min, r_c) must be removed first.
    """
    h = (cutoff_A - r_min_A) / n_basis
    x = (np.asarray(r, dtype=np.float64) - r_min_A) / h
    k = np.clip(np.floor(x).astype(np.int64), 0, n_basis - 1)
    t = x - k
    s = 1.0 - t
    t2 = t * t
    t3 = t2 * t
    values = np.stack([s * s * s, 3.0 * t3 - 6.0 * t2 + 4.0, -3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0, t3], axis=1) / 6.0
    columns = k[:, None] + np.arange(4)
    beyond = columns >= n_basis
    values[beyond] = 0.0
    columns[beyond] = n_basis - 1
    return k, columns, values


@register
class PairTable(Potential):
    """Force-matched (MS-CG) pair potential on a cubic B-spline of the force; see the module docstring.

    Parameters
    ----------
    type_names : bead types, in the order of the integer types the potential expects
    cutoff_A : pair cutoff r_c, A; U = F = 0 at and beyond it
    r_min_A : start of the spline grid, A
    coefficients : (n_types, n_types, K) symmetric nested list/array, kcal/mol/A: c_ab,j
    r_sampled_min_A : (n_types, n_types) symmetric, A: r_s per pair; below it the power-law wall
        (values below ``r_min_A`` are raised to it)
    extrapolation_power : p of the wall (> 1)
    """

    kind = "pair_table"

    def __init__(self, type_names: tuple[str, ...] | list[str], *, cutoff_A: float, r_min_A: float,
                 coefficients: Any, r_sampled_min_A: Any, extrapolation_power: float = 12.0) -> None:
        super().__init__(type_names, cutoff_A)
        n = len(self.type_names)
        coef = torch.as_tensor(np.asarray(coefficients, dtype=np.float64))
        if coef.dim() != 3 or coef.shape[:2] != (n, n) or coef.shape[2] < 4:
            raise ValueError(f"PairTable: coefficients must be ({n}, {n}, K >= 4), got {tuple(coef.shape)}")
        if not torch.allclose(coef, coef.transpose(0, 1)):
            raise ValueError("PairTable: coefficients must be symmetric in the two bead types")
        r_s = torch.as_tensor(np.asarray(r_sampled_min_A, dtype=np.float64)).expand(n, n).clone()
        if not torch.allclose(r_s, r_s.T):
            raise ValueError("PairTable: r_sampled_min_A must be symmetric")
        if not 0 < r_min_A < cutoff_A:
            raise ValueError(f"PairTable: need 0 < r_min_A < cutoff_A, got r_min_A={r_min_A}, cutoff_A={cutoff_A}")
        if not extrapolation_power > 1:
            raise ValueError(f"PairTable: extrapolation_power must be > 1, got {extrapolation_power}")
        self.r_min_A = float(r_min_A)
        self.extrapolation_power = float(extrapolation_power)
        self.n_basis = int(coef.shape[2])
        self.spacing_A = (self.cutoff_A - self.r_min_A) / self.n_basis
        self.register_buffer("coefficients", coef.clone())
        self.register_buffer("r_sampled_min", r_s.clamp(min=self.r_min_A, max=self.cutoff_A - 1e-6 * self.spacing_A))

    # ----------------------------------------------------------------------------------------------
    def _spline(self, r: torch.Tensor, pair_type: torch.Tensor, coef: torch.Tensor, tail: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Spline energy U(r) = int_r^rc F, force F(r) and dF/dr for pairs of flat type index pair_type."""
        h = self.spacing_A
        x = (r.clamp(self.r_min_A, self.cutoff_A) - self.r_min_A) / h
        k = x.detach().floor().clamp(0, self.n_basis - 1).long()
        t = x - k.to(x.dtype)
        values, derivs, integrals = _pieces(t)
        base = pair_type * (self.n_basis + 3) + k
        force = torch.zeros_like(t)
        dforce = torch.zeros_like(t)
        rest = torch.zeros_like(t)  # int_t^1 of the spline on this interval
        for m in range(4):
            c = coef[base + m]
            force = force + c * values[m]
            dforce = dforce + c * derivs[m]
            rest = rest + c * (_PIECE_INTEGRALS[m] - integrals[m])
        # integrals of the intervals beyond k, summed from the cutoff inwards (no cancellation of the
        # large wall coefficients in float32)
        after = tail.reshape(-1)[pair_type * tail.shape[1] + k + 1]
        energy = h * (after + rest)
        return energy, force, dforce / h

    def force_coefficients(self) -> torch.Tensor:
        """The coefficients (n_types, n_types, K) of the force spline the potential evaluates now."""
        return self.coefficients

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded flat coefficients ((n_types^2 * (K+3)),) and the tail sums (n_types^2, K+1):
        tail[:, k] = sum over intervals l >= k of int_{interval l} F dr / h (tail[:, K] = 0)."""
        n = len(self.type_names)
        coef = self.force_coefficients().reshape(n * n, self.n_basis)
        padded = torch.cat([coef, coef.new_zeros(n * n, 3)], dim=1)
        w = coef.new_tensor(_PIECE_INTEGRALS)
        per_interval = sum(padded[:, m: m + self.n_basis] * w[m] for m in range(4))
        tail = torch.flip(torch.cumsum(torch.flip(per_interval, dims=[1]), dim=1), dims=[1])
        return padded.reshape(-1), torch.cat([tail, coef.new_zeros(n * n, 1)], dim=1)

    def pair_energy_force(self, r: torch.Tensor, ti: torch.Tensor, tj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """U(r) (kcal/mol) and F(r) = -dU/dr (kcal/mol/A) for pairs of types (ti, tj); zero beyond r_c."""
        n = len(self.type_names)
        coef, tail = self._tables()
        pair_type = ti * n + tj
        # the wall parameters of every type pair, from the spline at r_s
        all_types = torch.arange(n * n, device=r.device)
        r_s_all = self.r_sampled_min.reshape(-1).to(r.dtype)
        u_s_all, f_s_all, df_s_all = self._spline(r_s_all, all_types, coef, tail)
        p = self.extrapolation_power
        floor = torch.clamp(f_s_all.abs(), min=1.0) / (0.9 ** (-p) - 1.0)
        a_all = torch.maximum(-df_s_all * r_s_all / p, floor)

        energy, force, _ = self._spline(r, pair_type, coef, tail)
        r_s, u_s, f_s, a = r_s_all[pair_type], u_s_all[pair_type], f_s_all[pair_type], a_all[pair_type]
        below = r < r_s
        r_wall = torch.where(below, r, r_s).clamp(min=1e-6)
        ratio = r_s / r_wall
        wall_energy = u_s + (f_s - a) * (r_s - r_wall) + a * r_s / (p - 1.0) * (ratio ** (p - 1.0) - 1.0)
        wall_force = f_s + a * (ratio**p - 1.0)
        energy = torch.where(below, wall_energy, energy)
        force = torch.where(below, wall_force, force)
        inside = r < self.cutoff_A
        zero = torch.zeros_like(energy)
        return torch.where(inside, energy, zero), torch.where(inside, force, zero)

    def forward(self, graph: Graph) -> torch.Tensor:
        """Total energy per frame (n_frames,) kcal/mol; the graph's list is full, so each pair counts 1/2."""
        if graph.types.numel() and (int(graph.types.max()) >= len(self.type_names) or int(graph.types.min()) < 0):
            raise ValueError(f"pair_table: a bead type index is outside this potential's types {list(self.type_names)}")
        u, _ = self.pair_energy_force(graph.pair_dist, graph.types[graph.pair_i], graph.types[graph.pair_j])
        per_particle = torch.zeros(graph.positions.shape[0], dtype=u.dtype, device=u.device)
        per_particle = per_particle.index_add(0, graph.pair_i, 0.5 * u)
        return graph.frame_sum(per_particle)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "type_names": list(self.type_names),
            "cutoff_A": self.cutoff_A,
            "r_min_A": self.r_min_A,
            "coefficients": self.coefficients.detach().cpu().double().tolist(),
            "r_sampled_min_A": self.r_sampled_min.detach().cpu().double().tolist(),
            "extrapolation_power": self.extrapolation_power,
        }

    @classmethod
    def from_force_function(cls, type_names: tuple[str, ...] | list[str], force: Any, *, cutoff_A: float,
                            r_min_A: float, spacing_A: float = 0.1, r_sampled_min_A: Any = None,
                            extrapolation_power: float = 12.0) -> "PairTable":
        """Tabulate an analytic pair force onto the spline: least squares on a fine grid of [r_min, r_c).

        ``force(r, a, b)`` gives F_ab(r) (kcal/mol/A, > 0 repulsive) at distances r (numpy, A) for type
        indices a <= b. Useful to export an analytic potential through the table formats, and as a known
        table in tests. ``r_sampled_min_A`` defaults to ``r_min_A`` (no wall above the grid start).
        """
        n = len(type_names)
        n_basis = max(4, int(round((cutoff_A - r_min_A) / spacing_A)))
        r = np.linspace(r_min_A, cutoff_A, 20 * n_basis, endpoint=False)
        _, columns, values = bspline_basis(r, r_min_A, cutoff_A, n_basis)
        design = np.zeros((len(r), n_basis))
        np.add.at(design, (np.repeat(np.arange(len(r)), 4), columns.ravel()), values.ravel())
        coef = np.zeros((n, n, n_basis))
        for a in range(n):
            for b in range(a, n):
                target = np.asarray(force(r, a, b), dtype=np.float64)
                coef[a, b] = coef[b, a] = np.linalg.lstsq(design, target, rcond=None)[0]
        r_s = r_min_A if r_sampled_min_A is None else r_sampled_min_A
        return cls(type_names, cutoff_A=cutoff_A, r_min_A=r_min_A, coefficients=coef, r_sampled_min_A=r_s,
                   extrapolation_power=extrapolation_power)

    # ----------------------------------------------------------------------------------------------
    def type_pairs(self) -> list[tuple[int, int]]:
        """The unordered type pairs (a, b), a <= b."""
        n = len(self.type_names)
        return [(a, b) for a in range(n) for b in range(a, n)]

    def curve(self, r_A: np.ndarray, type_a: int | str, type_b: int | str) -> tuple[np.ndarray, np.ndarray]:
        """U(r) kcal/mol and F(r) kcal/mol/A of one type pair at distances ``r_A`` (numpy, float64)."""
        a = self.type_names.index(type_a) if isinstance(type_a, str) else int(type_a)
        b = self.type_names.index(type_b) if isinstance(type_b, str) else int(type_b)
        r = torch.as_tensor(np.asarray(r_A, dtype=np.float64)).to(self.coefficients.device, self.coefficients.dtype)
        ti = torch.full(r.shape, a, dtype=torch.long, device=r.device)
        tj = torch.full(r.shape, b, dtype=torch.long, device=r.device)
        with torch.no_grad():
            u, f = self.pair_energy_force(r, ti, tj)
        return u.cpu().double().numpy(), f.cpu().double().numpy()

    def force_derivative(self, r_A: float, type_a: int, type_b: int, *, step_A: float = 1e-5) -> float:
        """dF/dr at one distance by a central difference of the analytic force (kcal/mol/A^2)."""
        _, f = self.curve(np.array([r_A - step_A, r_A + step_A]), type_a, type_b)
        return float((f[1] - f[0]) / (2 * step_A))


@register
class PairTableThermal(PairTable):
    """Temperature-dependent MS-CG pair forces, linear in T (kind ``"pair_table_thermal"``):

        F_ab(r; T) = F0_ab(r) + (T - T_ref) F1_ab(r),    U_ab(r; T) = int_r^{r_c} F_ab(s; T) ds

    F0 and F1 are cubic B-splines on the same grid (the basis of :class:`PairTable`), with coefficients
    ``coefficients`` (kcal/mol/A) and ``temperature_coefficients`` (kcal/mol/A/K). At the temperature
    set by :meth:`set_temperature` the potential is exactly the :class:`PairTable` with coefficients
    c0 + (T - T_ref) c1 (:meth:`at_temperature` returns it), so U(r; T) is the free energy W at T, and
    energy and force are consistent at every T. The wall below r_s (per type pair, one r_s for all
    temperatures) is built at each temperature from that temperature's spline: its F_s, F'_s and
    strength a follow the formula of :class:`PairTable` with F(r; T), so the wall is continuous with
    the spline at every T (and, through the floor on a, repulsive at every T). Below r_s the energy is
    therefore not exactly linear in T.

    Evaluating without a temperature set is a :class:`~thermocg.potentials.base.TemperatureNotSetError`.
    ``valid_temperature_range_K`` (the training temperatures' min and max) and
    ``max_temperature_extrapolation_K`` are kept in the model header, not in the hyperparameters.
    """

    kind = "pair_table_thermal"
    temperature_dependent = True

    def __init__(self, type_names: tuple[str, ...] | list[str], *, cutoff_A: float, r_min_A: float,
                 coefficients: Any, temperature_coefficients: Any, reference_temperature_K: float,
                 r_sampled_min_A: Any, extrapolation_power: float = 12.0,
                 valid_temperature_range_K: tuple[float, float] | list[float] | None = None,
                 max_temperature_extrapolation_K: float | None = None) -> None:
        super().__init__(type_names, cutoff_A=cutoff_A, r_min_A=r_min_A, coefficients=coefficients,
                         r_sampled_min_A=r_sampled_min_A, extrapolation_power=extrapolation_power)
        slope = torch.as_tensor(np.asarray(temperature_coefficients, dtype=np.float64))
        if slope.shape != self.coefficients.shape:
            raise ValueError(f"PairTableThermal: temperature_coefficients must have the shape of coefficients "
                             f"{tuple(self.coefficients.shape)}, got {tuple(slope.shape)}")
        if not torch.allclose(slope, slope.transpose(0, 1)):
            raise ValueError("PairTableThermal: temperature_coefficients must be symmetric in the two bead types")
        reference = float(reference_temperature_K)
        if not (np.isfinite(reference) and reference > 0):
            raise ValueError(f"PairTableThermal: reference_temperature_K must be positive, "
                             f"got {reference_temperature_K}")
        self.reference_temperature_K = reference
        self.register_buffer("temperature_coefficients", slope.clone())
        if valid_temperature_range_K is not None:
            low, high = (float(x) for x in valid_temperature_range_K)
            if not 0 < low <= high:
                raise ValueError(f"PairTableThermal: valid_temperature_range_K must be (T_min, T_max) with "
                                 f"0 < T_min <= T_max, got {valid_temperature_range_K}")
            self.valid_temperature_range_K = (low, high)
        if max_temperature_extrapolation_K is not None and not max_temperature_extrapolation_K >= 0:
            raise ValueError("PairTableThermal: max_temperature_extrapolation_K must be non-negative")
        self.max_temperature_extrapolation_K = max_temperature_extrapolation_K

    def force_coefficients(self) -> torch.Tensor:
        """c0 + (T - T_ref) c1 at the set temperature (an error when none is set)."""
        shift = self.require_temperature() - self.reference_temperature_K
        return self.coefficients + shift * self.temperature_coefficients

    def at_temperature(self, temperature_K: float) -> PairTable:
        """The temperature-agnostic :class:`PairTable` this model is at ``temperature_K`` (checked
        against the valid range like :meth:`set_temperature`); same dtype and device."""
        previous = self.temperature_K
        self.set_temperature(temperature_K)
        try:
            coefficients = self.force_coefficients().detach()
        finally:
            self._temperature_K = previous
        table = PairTable(self.type_names, cutoff_A=self.cutoff_A, r_min_A=self.r_min_A,
                          coefficients=coefficients.cpu().double().numpy(),
                          r_sampled_min_A=self.r_sampled_min.detach().cpu().double().numpy(),
                          extrapolation_power=self.extrapolation_power)
        return table.to(dtype=self.coefficients.dtype, device=self.coefficients.device)

    def hyperparameters(self) -> dict[str, Any]:
        return dict(super().hyperparameters(),
                    temperature_coefficients=self.temperature_coefficients.detach().cpu().double().tolist(),
                    reference_temperature_K=self.reference_temperature_K)


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------

def _as_pair_table(potential: Potential, temperature_K: float | None = None) -> PairTable:
    """The temperature-agnostic table to write: ``potential`` itself, or a ``pair_table_thermal``
    model at ``temperature_K`` (default: its set temperature; an error without either)."""
    if not isinstance(potential, PairTable):
        raise ExportError(f"only pair_table potentials can be exported to tables, got kind {potential.kind!r}")
    if not isinstance(potential, PairTableThermal):
        return potential
    temperature_K = potential.temperature_K if temperature_K is None else temperature_K
    if temperature_K is None:
        valid = potential.valid_temperature_range_K
        valid_text = "unknown" if valid is None else f"[{valid[0]:g}, {valid[1]:g}] K"
        raise ExportError(f"{potential._model_label()} is temperature-dependent (valid range {valid_text}, "
                          f"T_ref = {potential.reference_temperature_K:g} K): give the temperature to export it at "
                          "(thermocg export --temperature-K T)")
    return potential.at_temperature(temperature_K)


def _temperature_note(potential: Potential, temperature_K: float | None) -> str:
    if isinstance(potential, PairTableThermal):
        t = potential.temperature_K if temperature_K is None else temperature_K
        return (f" at T = {t:g} K (pair_table_thermal, T_ref = {potential.reference_temperature_K:g} K, "
                f"F = F0 + (T - T_ref) F1)")
    return ""


def _inner_A(table: PairTable, r_inner_A: float | None) -> float:
    if r_inner_A is None:
        r_inner_A = 0.5 * float(table.r_sampled_min.min())
    if not 0 < r_inner_A < table.cutoff_A:
        raise ExportError(f"r_inner_A must be in (0, cutoff_A={table.cutoff_A}), got {r_inner_A}")
    return float(r_inner_A)


def _section_name(table: PairTable, a: int, b: int) -> str:
    return f"{table.type_names[a]}_{table.type_names[b]}"


def export_lammps(table: PairTable, out_dir: str | os.PathLike, *, n_points: int = 5000,
                  r_inner_A: float | None = None, style: str = "spline", file_stem: str = "pair_table",
                  temperature_K: float | None = None) -> Path:
    """Write a LAMMPS ``pair_style table`` of ``table`` (LAMMPS ``units real``: A, kcal/mol).

    Files in ``out_dir``: ``<stem>.table`` with one section ``A_B`` per type pair (``N n R r_in r_c`` and
    ``FPRIME`` end derivatives; lines ``index r U F``, points uniform in r) and ``<stem>.lammps`` holding
    ``pair_style table <style> n_points`` and one ``pair_coeff i j <stem>.table A_B r_c`` line per pair
    (LAMMPS type i = ``type_names[i-1]``). Use it with ``include <stem>.lammps``. ``r_inner_A`` (default
    half the smallest sampled distance) is the table's inner end: LAMMPS stops if two beads come closer.
    Returns the path of the include file.

    A ``pair_table_thermal`` model is written at ``temperature_K`` (default: its set temperature;
    an :class:`ExportError` without either): the tables of F(r; T) = F0 + (T - T_ref) F1 and its
    energy, wall included; the temperature is named in the files' comments.
    """
    note = _temperature_note(table, temperature_K)
    table = _as_pair_table(table, temperature_K)
    if style not in ("linear", "spline"):
        raise ExportError(f"LAMMPS table style must be 'linear' or 'spline', got {style!r}")
    if n_points < 10:
        raise ExportError(f"n_points must be at least 10, got {n_points}")
    r_in = _inner_A(table, r_inner_A)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    r = np.linspace(r_in, table.cutoff_A, n_points)
    lines = [
        f"# thermocg pair_table (MS-CG){note} for LAMMPS units real: r A, U kcal/mol, F = -dU/dr kcal/mol/A",
        f"# bead types: {' '.join(f'{i + 1}={n}' for i, n in enumerate(table.type_names))}",
        "",
    ]
    coeff_lines = []
    for a, b in table.type_pairs():
        u, f = table.curve(r, a, b)
        fp_lo = table.force_derivative(r_in + 1e-5, a, b)
        name = _section_name(table, a, b)
        lines += [name, f"N {n_points} R {r_in:.10g} {table.cutoff_A:.10g} FPRIME {fp_lo:.12e} 0.0", ""]
        lines += [f"{k + 1} {rk:.10f} {uk:.12e} {fk:.12e}" for k, (rk, uk, fk) in enumerate(zip(r, u, f))]
        lines.append("")
        coeff_lines.append(f"pair_coeff {a + 1} {b + 1} {file_stem}.table {name} {table.cutoff_A:.10g}")
    table_path = out_dir / f"{file_stem}.table"
    _atomic_text(table_path, "\n".join(lines) + "\n")
    include = [
        f"# thermocg pair_table{note}: include after read_data (units real); types "
        + " ".join(f"{i + 1}={n}" for i, n in enumerate(table.type_names)),
        f"pair_style table {style} {n_points}",
        *coeff_lines,
    ]
    include_path = out_dir / f"{file_stem}.lammps"
    _atomic_text(include_path, "\n".join(include) + "\n")
    return include_path


def export_gromacs(table: PairTable, out_dir: str | os.PathLike, *, spacing_nm: float = 0.002,
                   extension_nm: float = 1.0, r_inner_A: float | None = None,
                   temperature_K: float | None = None) -> list[Path]:
    """Write GROMACS user tables ``table_A_B.xvg`` (one per type pair) in GROMACS units.

    Columns: r (nm), f, -f', g, -g', h, -h' with V(r) = q_i q_j f + C6 g + C12 h. The pair potential is
    put in h (kJ/mol; -h' its force, kJ/mol/nm) and f = g = 0, so use it with ``C6 = 0, C12 = 1`` for the
    pair and ``cutoff-scheme = group``, ``vdwtype = user``, ``energygrp_table`` naming the groups A B.

    For GROMACS 2019 and earlier only: user tables for non-bonded interactions need the group cut-off
    scheme, which GROMACS 2020 removed (GROMACS 2022's grompp, run here, refuses both ``cutoff-scheme =
    group`` and ``vdwtype = user`` with the Verlet scheme). For a current engine use the LAMMPS export.
    Rows run from r = 0 every ``spacing_nm`` to r_c + ``extension_nm`` (zeros beyond r_c); below
    ``r_inner_A`` (default half the smallest sampled distance) the energy continues linearly with the
    force at r_inner (a finite cap; beads never get that close in practice). A ``pair_table_thermal``
    model is written at ``temperature_K`` as in :func:`export_lammps`.
    """
    note = _temperature_note(table, temperature_K)
    table = _as_pair_table(table, temperature_K)
    if not spacing_nm > 0 or extension_nm < 0:
        raise ExportError("spacing_nm must be positive and extension_nm non-negative")
    r_in = _inner_A(table, r_inner_A)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_rows = int(round((table.cutoff_A * units.A_TO_NM + extension_nm) / spacing_nm)) + 1
    r_nm = np.arange(n_rows) * spacing_nm
    r_A = r_nm * units.NM_TO_A
    paths = []
    for a, b in table.type_pairs():
        u, f = table.curve(np.maximum(r_A, r_in), a, b)
        capped = r_A < r_in
        u = np.where(capped, u + f * (r_in - r_A), u)
        h = u * units.KCAL_TO_KJ
        minus_dh = f * units.KCAL_TO_KJ * units.NM_TO_A  # kcal/mol/A -> kJ/mol/nm
        zeros = np.zeros_like(r_nm)
        header = [
            f"# thermocg pair_table {table.type_names[a]}-{table.type_names[b]} (MS-CG){note} as a GROMACS user table",
            "# columns: r (nm), f, -f', g, -g', h (kJ/mol), -h' (kJ/mol/nm); use C6 = 0, C12 = 1",
        ]
        rows = [f"{r:.6f} {z:.10e} {z:.10e} {z:.10e} {z:.10e} {hh:.10e} {dh:.10e}"
                for r, z, hh, dh in zip(r_nm, zeros, h, minus_dh)]
        path = out_dir / f"table_{table.type_names[a]}_{table.type_names[b]}.xvg"
        _atomic_text(path, "\n".join(header + rows) + "\n")
        paths.append(path)
    return paths


def write_lammps_data(path: str | os.PathLike, positions: np.ndarray, box: np.ndarray, types: np.ndarray,
                      masses_per_type: np.ndarray | list[float]) -> Path:
    """One configuration as a LAMMPS data file (``atom_style atomic``, units real).

    ``box`` rows are the cell vectors and must be LAMMPS-shaped (lower triangular: a along x, b in the
    xy plane); ``types`` are 0-based (LAMMPS type = type + 1). Positions are written as given (LAMMPS
    wraps them).
    """
    box = np.asarray(box, dtype=np.float64)
    if abs(box[0, 1]) > 1e-12 or abs(box[0, 2]) > 1e-12 or abs(box[1, 2]) > 1e-12:
        raise ExportError("LAMMPS needs a lower-triangular box (a along x, b in the xy plane)")
    positions = np.asarray(positions, dtype=np.float64)
    types = np.asarray(types, dtype=np.int64)
    lines = [
        "thermocg configuration",
        "",
        f"{len(positions)} atoms",
        f"{len(masses_per_type)} atom types",
        "",
        f"0.0 {box[0, 0]:.12f} xlo xhi",
        f"0.0 {box[1, 1]:.12f} ylo yhi",
        f"0.0 {box[2, 2]:.12f} zlo zhi",
    ]
    if np.any(np.abs([box[1, 0], box[2, 0], box[2, 1]]) > 0):
        lines.append(f"{box[1, 0]:.12f} {box[2, 0]:.12f} {box[2, 1]:.12f} xy xz yz")
    lines += ["", "Masses", ""]
    lines += [f"{t + 1} {m:.8f}" for t, m in enumerate(masses_per_type)]
    lines += ["", "Atoms # atomic", ""]
    lines += [f"{i + 1} {t + 1} {x:.12f} {y:.12f} {z:.12f}" for i, (t, (x, y, z)) in enumerate(zip(types, positions))]
    return _atomic_text(Path(path), "\n".join(lines) + "\n")


def _atomic_text(path: Path, text: str) -> Path:
    from thermocg.rundir import atomic_write_text

    return atomic_write_text(path, text)


def run_export(model: str | os.PathLike, format: str = "lammps", output: str | os.PathLike | None = None,  # noqa: A002
               temperature_K: float | None = None, **options: Any) -> Path:
    """``thermocg export MODEL --format lammps|gromacs --output DIR [--temperature-K T]``: tables of a
    pair_table model.

    A temperature-dependent model (``pair_table_thermal``) needs ``temperature_K``: the tables are
    those of the model at that temperature (checked against its valid range: a warning a little
    outside, an error far outside). A temperature-agnostic model ignores it (and says so).
    ``output`` defaults to ``<model dir>/<format>``. Returns the output directory.
    """
    from thermocg.potentials.base import load_potential

    model = Path(model)
    if format not in ("lammps", "gromacs"):
        raise ExportError(f"unknown export format {format!r}; use 'lammps' or 'gromacs'")
    potential = load_potential(model)
    if not isinstance(potential, PairTable) or (potential.temperature_dependent and temperature_K is None):
        _as_pair_table(potential, temperature_K)  # the clear error, before anything is written
    if temperature_K is not None and not potential.temperature_dependent:
        print(f"note: {model} is temperature-agnostic; --temperature-K {temperature_K:g} changes nothing")
        temperature_K = None
    table = potential.double()
    out_dir = Path(output) if output else model.parent / format
    if format == "lammps":
        path = export_lammps(table, out_dir, temperature_K=temperature_K, **options)
        print(f"wrote {path} and {path.with_suffix('.table')}{_temperature_note(table, temperature_K)}")
    else:
        paths = export_gromacs(table, out_dir, temperature_K=temperature_K, **options)
        print(f"wrote {len(paths)} GROMACS tables to {out_dir}{_temperature_note(table, temperature_K)} (GROMACS "
              "2019 or earlier: tabulated non-bonded interactions need the group cut-off scheme, removed in "
              "GROMACS 2020)")
    return out_dir
