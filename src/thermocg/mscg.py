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
from tqdm.auto import tqdm

from thermocg import provenance
from thermocg.analysis.forces import ForceErrorAccumulator, force_errors
from thermocg.config import Config, ConfigError, PairConfig, write_resolved
from thermocg.dataset import H5MDDataset
from thermocg.frames import Frames, merged_type_names
from thermocg.model_summary import ModelSummary
from thermocg.neighbors import check_cutoff_fits
from thermocg.potentials.base import save_potential
from thermocg.potentials.pair import PairTable, bspline_basis, export_lammps
from thermocg.rundir import RunDir, atomic_savefig, atomic_write_text

__all__ = ["MSCGError", "MSCGWarning", "NormalEquations", "fit_pair_potential", "run_fit_pair", "force_errors"]


class MSCGError(ValueError):
    """Data that cannot give an MS-CG fit; the message names the problem (and the pair or file)."""


class MSCGWarning(UserWarning):
    """A fit that works but whose data are thin somewhere (sparse intervals, a non-repulsive r_s)."""


class NormalEquations:
    """Streaming accumulator of the MS-CG normal equations.

    ``add(frames)`` adds the frames' contribution to G^T G (n_params, n_params), G^T f (n_params,),
    f.f, and to the per-interval pair-distance histograms; ``solve(...)`` returns the
    :class:`PairTable`. Memory is O(n_params^2 + 3 N n_params), whatever the number of frames.
    """

    def __init__(self, type_names: Iterable[str], *, cutoff_A: float, r_min_A: float, spacing_A: float) -> None:
        self.type_names = tuple(str(t) for t in type_names)
        if not self.type_names:
            raise MSCGError("MS-CG: no bead types")
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
        for f in range(frames.n_frames):
            g = self.design_matrix(frames.positions[f], frames.box[f], types)
            target = frames.forces[f].reshape(-1)
            self.gtg += g.T @ g
            self.gtf += g.T @ target
            self.ftf += float(target @ target)
            self.f_sum += float(target.sum())
            self.n_rows += len(target)
            self.n_frames += 1

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

    def solve(self, *, ridge: float = 1e-10, smoothness: float = 1e-7, min_pairs_per_interval: int = 20,
              extrapolation_power: float = 12.0, unsampled_pairs: str = "error"):
        """The fitted :class:`PairTable`, with a ``fit_info`` dict (per-pair sampling, training errors,
        warnings) attached as an attribute.

        The training SSE comes from the normal equations without revisiting frames:
        SSE = f.f - 2 c.(G^T f) + c.(G^T G) c, and R^2 = 1 - SSE / (f.f - (sum f)^2 / n).
        """
        if self.n_frames == 0:
            raise MSCGError("MS-CG: no frames were added")
        messages: list[str] = []

        def warn(text: str) -> None:
            messages.append(text)
            warnings.warn(text, MSCGWarning, stacklevel=4)

        r_sampled, pair_info = self._sampled_ranges(min_pairs_per_interval, unsampled_pairs, warn)
        coef, n_active = self._coefficients(ridge, smoothness)
        sse = max(self.ftf - 2.0 * coef @ self.gtf + coef @ self.gtg @ coef, 0.0)
        variance = self.ftf - self.f_sum**2 / self.n_rows
        n = len(self.type_names)
        table_coef = np.zeros((n, n, self.n_basis))
        for k, (a, b) in enumerate(self.pairs):
            table_coef[a, b] = table_coef[b, a] = coef[k * self.n_basis:(k + 1) * self.n_basis]
        table = PairTable(self.type_names, cutoff_A=self.cutoff_A, r_min_A=self.r_min_A,
                          coefficients=table_coef, r_sampled_min_A=r_sampled,
                          extrapolation_power=extrapolation_power)
        self._check_walls(table, r_sampled, pair_info, warn)
        table.fit_info = {
            "method": "MS-CG force matching, cubic B-spline pair forces (normal equations)",
            "n_frames": self.n_frames,
            "n_force_components": self.n_rows,
            "n_coefficients": self.n_params,
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

    def _sampled_ranges(self, min_pairs_per_interval: int, unsampled_pairs: str,
                        warn: Callable[[str], None]) -> tuple[np.ndarray, dict[str, Any]]:
        """r_s per type pair (n_types, n_types) A, the start of the first interval holding at least
        ``min_pairs_per_interval`` distances (never below the closest distance seen), and the
        per-pair sampling record; warns about sparse intervals, errs on (or zeroes) unsampled pairs."""
        n = len(self.type_names)
        h = self.spacing_A
        r_sampled = np.full((n, n), self.r_min_A)
        pair_info: dict[str, Any] = {}
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
            well = np.nonzero(counts >= min_pairs_per_interval)[0]
            if len(well) == 0:
                warn(f"MS-CG: pair {name}: no spline interval holds {min_pairs_per_interval} distances "
                     f"({total} in all); the grid (spacing {h:.3g} A) is finer than the data supports")
                first = int(np.nonzero(counts)[0][0])
            else:
                first = int(well[0])
            r_s = max(self.r_min_A + first * h, float(self.min_distance[k]))
            r_sampled[a, b] = r_sampled[b, a] = r_s
            sparse = np.nonzero(counts[first:] < min_pairs_per_interval)[0] + first
            if len(sparse):
                fraction = len(sparse) / (self.n_basis - first)
                text = (f"MS-CG: pair {name}: {len(sparse)} of {self.n_basis - first} spline intervals above "
                        f"r_s = {r_s:.2f} A hold fewer than {min_pairs_per_interval} distances (first at "
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

    def _coefficients(self, ridge: float, smoothness: float) -> tuple[np.ndarray, int]:
        """The spline coefficients c (n_params,) solving the regularised normal equations over the
        active columns (those any pair distance reached), and how many are active."""
        diag = np.diag(self.gtg).copy()
        active = diag > 0
        n_active = int(active.sum())
        if self.n_rows < n_active:
            raise MSCGError(
                f"MS-CG: the grid is finer than the data support: {self.n_rows} force components for "
                f"{n_active} spline coefficients; use more frames or a larger pair.spacing_A "
                f"(now {self.spacing_A:.3g} A)"
            )
        scale = float(diag[active].mean()) if n_active else 1.0
        matrix = self.gtg + ridge * scale * np.eye(self.n_params)
        if smoothness > 0:
            matrix += smoothness * scale * self._penalty(active)
        coef = np.zeros(self.n_params)
        if n_active:
            sub = matrix[np.ix_(active, active)]
            try:
                coef[active] = scipy.linalg.solve(sub, self.gtf[active], assume_a="sym")
            except (np.linalg.LinAlgError, ValueError):  # singular without regularisation
                coef[active] = np.linalg.lstsq(sub, self.gtf[active], rcond=None)[0]
        return coef, n_active

    def _check_walls(self, table, r_sampled: np.ndarray, pair_info: dict[str, Any],
                     warn: Callable[[str], None]) -> None:
        """Record F(r_s) and dF/dr there per sampled pair; warn where the fit is no repulsive wall."""
        for k, (a, b) in enumerate(self.pairs):
            name = self.pair_name(k)
            if not pair_info[name]["sampled"]:
                continue
            r_s = r_sampled[a, b]
            _, f_s = table.curve(np.array([r_s]), a, b)
            slope = table.force_derivative(r_s + 1e-4, a, b)
            pair_info[name].update(force_at_r_s_kcal_mol_A=float(f_s[0]), slope_at_r_s=slope)
            if not (slope < 0 and f_s[0] > 0):
                warn(f"MS-CG: pair {name}: the fitted force at r_s = {r_s:.2f} A is not a repulsive wall "
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
    (sampled range per pair, training RMSE/R^2, warnings).
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
                         spacing_A=settings.spacing_A)
    bar = _progress(n_frames, progress, "MS-CG fit")
    for block in blocks:
        eq.add(block)
        bar.update(block.n_frames)
    bar.close()
    return eq.solve(ridge=settings.ridge, smoothness=settings.smoothness,
                    min_pairs_per_interval=settings.min_pairs_per_interval,
                    extrapolation_power=settings.extrapolation_power, unsampled_pairs=settings.unsampled_pairs)


def _progress(total: int, enabled: bool, desc: str) -> tqdm:
    return tqdm(total=total, disable=not enabled, desc=desc, unit="frame", leave=False)


# --------------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------------

def _plot_pairs(table, fit_info: dict[str, Any], out_dir: Path) -> list[Path]:
    """One figure per type pair: the fitted force and potential, with r_s (the wall below it) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for a, b in table.type_pairs():
        name = f"{table.type_names[a]}-{table.type_names[b]}"
        r_s = float(table.r_sampled_min[a, b])
        r = np.linspace(max(table.r_min_A, 0.85 * r_s), table.cutoff_A, 600)
        u, f = table.curve(r, a, b)
        fig, (ax_f, ax_u) = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
        for ax, y, label in ((ax_f, f, "force F(r) (kcal/mol/A)"), (ax_u, u, "potential U(r) (kcal/mol)")):
            ax.plot(r, y, color="C0")
            ax.axvline(r_s, color="grey", ls="--", lw=0.8, label=f"r_s = {r_s:.2f} A (wall below)")
            ax.axhline(0.0, color="black", lw=0.5)
            ax.set_xlabel("r (A)")
            ax.set_ylabel(label)
            # zoom on the attractive well (if any); the steep wall runs off the top
            lo, hi = float(y[r >= r_s].min()), float(y[r >= r_s].max())
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


def _split_frames(ds: H5MDDataset, settings: PairConfig) -> tuple[np.ndarray, np.ndarray]:
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
        splits = {label: _split_frames(ds, settings) for label, ds in datasets.items()}
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
        test_errors = {label: force_errors(table, ds, frame_indices=splits[label][1], accumulator=pooled, state=label)
                       for label, ds in datasets.items() if len(splits[label][1])}
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
    Returns the :class:`~thermocg.model_summary.ModelSummary` of the table (test errors pooled over
    the states' held-out frames; no epochs: the fit is one linear solve).
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
        export_lammps(table, out_dir / "lammps", n_points=settings.lammps_table_points)
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
