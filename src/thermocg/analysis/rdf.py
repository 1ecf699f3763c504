"""Radial distribution functions per bead-type pair, for triclinic periodic boxes.

For bead types A and B (counts N_A, N_B) in a box of volume V, per frame,

    g_AB(r) = n_AB(r, r + dr) / ( N_A * (N_B - delta_AB) / V * 4/3 pi ((r + dr)^3 - r^3) )

where n_AB counts ordered pairs (i in A, j in B, i != j) at distances in the shell. This is the
ideal-gas normalisation with the pair density N_A (N_B - delta_AB) / V (not the number of pairs
found inside the cutoff), so an ideal gas gives g = 1 at every r, even for small N. The frames'
g are averaged with equal weights (the volume enters per frame, so NPT frames are normalised
correctly). Distances are minimum-image-free: all periodic images within ``r_max_A`` come from the
neighbour list (:mod:`thermocg.neighbors`, vesin), and ``r_max_A`` may not exceed half the shortest
perpendicular box width (beyond it the shell would see two images of one neighbour).

Conventions checked against freud (``freud.density.RDF``): for A = B it equals freud with
``normalization_mode="finite_size"``; for A != B freud's ``"exact"`` with A as query points. Bins
are ``n_bins = round(r_max_A / bin_width_A)`` equal bins on [0, r_max_A]; ``r_A`` are bin centres.

The RDF error, defined once here (:func:`rdf_error`, used by the study's matrices and by
:func:`compare_rdf`): the mean over bead-type pairs of the mean over the reference's bins of
|g(r) - g_ref(r)|.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping as MappingType

import numpy as np

from thermocg.analysis.base import AnalysisBase, AnalysisResults
from thermocg.analysis.plots import curve_style, finish_figure, label_axes, new_figure
from thermocg.dataset import DatasetError, H5MDDataset
from thermocg.frames import Frames
from thermocg.neighbors import neighbor_pairs, perpendicular_widths
from thermocg.rundir import RunDir

if TYPE_CHECKING:  # pragma: no cover
    from thermocg.config import Config

__all__ = ["RDF", "RDFResult", "rdf_error", "mean_abs_dg", "compare_rdf", "rdf_onset_A", "first_peak", "plot_rdfs",
           "run_rdf"]


@dataclass
class RDFResult(AnalysisResults):
    """g(r) of every bead-type pair.

    r_A       (n_bins,) bin centres, A
    edges_A   (n_bins + 1,) bin edges, A
    g         pair name "A-B" -> (n_bins,) g(r); A's type index <= B's
    counts    pair name -> (n_bins,) mean number of ordered pairs (i in A, j in B) per frame and shell
    n_frames  frames averaged
    n_per_type type name -> number of beads of that type
    mean_volume_A3  mean box volume over the frames
    """

    what = "RDF result"

    r_A: np.ndarray
    edges_A: np.ndarray
    g: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    n_frames: int
    n_per_type: dict[str, int] = field(default_factory=dict)
    mean_volume_A3: float = 0.0

    @property
    def pairs(self) -> list[str]:
        return list(self.g)

    @property
    def r_max_A(self) -> float:
        return float(self.edges_A[-1])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RDFResult":
        return cls(
            r_A=np.asarray(data["r_A"], dtype=np.float64),
            edges_A=np.asarray(data["edges_A"], dtype=np.float64),
            g={k: np.asarray(v, dtype=np.float64) for k, v in data["g"].items()},
            counts={k: np.asarray(v, dtype=np.float64) for k, v in data.get("counts", {}).items()},
            n_frames=int(data["n_frames"]),
            n_per_type={k: int(v) for k, v in data.get("n_per_type", {}).items()},
            mean_volume_A3=float(data.get("mean_volume_A3", 0.0)),
        )


class RDF(AnalysisBase):
    """Radial distribution functions per bead-type pair of CG (or any) frames.

    Parameters
    ----------
    frames : Frames, an H5MDDataset or the path of an H5MD file
    r_max_A : outer radius, A; None: half the shortest perpendicular box width over the frames that
        ``run()`` selects. A value larger than half the shortest width of any frame is an error.
    bin_width_A : shell width, A (the bin count is rounded so that the bins tile [0, r_max_A])

    ``run(start, stop, step)`` fills ``self.results`` with an :class:`RDFResult`.
    """

    def __init__(self, frames: Frames | H5MDDataset | str | os.PathLike, *, r_max_A: float | None = None,
                 bin_width_A: float = 0.05) -> None:
        super().__init__(frames)
        if not (bin_width_A > 0 and np.isfinite(bin_width_A)):
            raise ValueError(f"RDF: bin_width_A must be positive, got {bin_width_A}")
        self.bin_width_A = float(bin_width_A)
        self.requested_r_max_A = r_max_A
        self.r_max_A: float | None = None  # the bins: set here for a given r_max_A, else by run()
        self.n_bins = 0
        self.edges_A = np.zeros(0)
        if r_max_A is not None:
            if not r_max_A > 0:
                raise ValueError(f"RDF: r_max_A must be positive, got {r_max_A}")
            half_width = min(perpendicular_widths(b).min() for b in self.all_boxes()) / 2.0
            if r_max_A > half_width * (1 + 1e-12):
                raise ValueError(f"RDF: r_max_A = {r_max_A:.4f} A exceeds half the shortest perpendicular box "
                                 f"width ({half_width:.4f} A) of the frames")
            self._set_bins(r_max_A)
        self.type_names = tuple(self.frames.type_names)
        self.types = np.asarray(self.frames.types, dtype=np.int64)

    def _set_bins(self, r_max_A: float) -> None:
        self.r_max_A = float(r_max_A)
        self.n_bins = max(1, int(round(self.r_max_A / self.bin_width_A)))
        self.edges_A = np.linspace(0.0, self.r_max_A, self.n_bins + 1)

    def _prepare(self) -> None:
        if self.requested_r_max_A is None:  # half the shortest width of the selected frames
            boxes = self.all_boxes()[self.frame_indices]
            self._set_bins(min(perpendicular_widths(b).min() for b in boxes) / 2.0)
        n_types = len(self.type_names)
        self._n_per_type = np.bincount(self.types, minlength=n_types)
        self._pair_types = [(a, b) for a in range(n_types) for b in range(a, n_types)
                            if self._n_per_type[a] > 0 and self._n_per_type[b] > 0
                            and (a != b or self._n_per_type[a] > 1)]
        self._g_sum = np.zeros((n_types, n_types, self.n_bins))
        self._count_sum = np.zeros((n_types, n_types, self.n_bins))
        self._volume_sum = 0.0
        self._frames_done = 0
        shells = 4.0 / 3.0 * np.pi * (self.edges_A[1:] ** 3 - self.edges_A[:-1] ** 3)
        self._shells = shells
        pair_number = np.outer(self._n_per_type, self._n_per_type) - np.diag(self._n_per_type)
        self._pair_number = pair_number.astype(np.float64)

    def _single_frame(self, frames: Frames, k: int) -> None:
        n_types = len(self.type_names)
        box = frames.box[k]
        volume = abs(float(np.linalg.det(box)))
        i, j, shifts = neighbor_pairs(frames.positions[k], box, self.r_max_A)
        vec = frames.positions[k][j] - frames.positions[k][i] + shifts @ box
        dist = np.sqrt(np.einsum("pk,pk->p", vec, vec))
        inside = dist < self.r_max_A
        bins = np.minimum((dist[inside] * (self.n_bins / self.r_max_A)).astype(np.int64), self.n_bins - 1)
        code = (self.types[i[inside]] * n_types + self.types[j[inside]]) * self.n_bins + bins
        counts = np.bincount(code, minlength=n_types * n_types * self.n_bins).reshape(n_types, n_types, self.n_bins)
        with np.errstate(divide="ignore", invalid="ignore"):
            density = np.where(self._pair_number > 0, self._pair_number / volume, np.inf)
        self._g_sum += counts / (density[:, :, None] * self._shells[None, None, :])
        self._count_sum += counts
        self._volume_sum += volume
        self._frames_done += 1

    def _conclude(self) -> None:
        n = self._frames_done
        g, counts = {}, {}
        for a, b in self._pair_types:
            name = f"{self.type_names[a]}-{self.type_names[b]}"
            g[name] = self._g_sum[a, b] / n
            counts[name] = self._count_sum[a, b] / n
        self.results = RDFResult(
            r_A=0.5 * (self.edges_A[1:] + self.edges_A[:-1]),
            edges_A=self.edges_A.copy(),
            g=g,
            counts=counts,
            n_frames=n,
            n_per_type={self.type_names[t]: int(c) for t, c in enumerate(self._n_per_type)},
            mean_volume_A3=self._volume_sum / n,
        )


# ------------------------------------------------------------------------------------- comparisons

def first_peak(r_A: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    """Position (A) and height of the first peak of g(r).

    The first peak is the maximum of g over the first stretch where g > 1 (from where g first exceeds
    1 to where it next drops below 1); if g never exceeds 1, the global maximum.
    """
    g = np.asarray(g, dtype=np.float64)
    above = np.flatnonzero(g > 1.0)
    if len(above) == 0:
        k = int(np.argmax(g))
        return float(r_A[k]), float(g[k])
    begin = above[0]
    below = np.flatnonzero(g[begin:] < 1.0)
    end = begin + (below[0] if len(below) else len(g) - begin)
    k = begin + int(np.argmax(g[begin:end]))
    return float(r_A[k]), float(g[k])


def mean_abs_dg(result: RDFResult, reference: RDFResult, pair: str) -> float:
    """Mean over r of |g(r) - g_ref(r)| of one bead-type pair: THE RDF error of thermocg.

    The mean runs over the reference's bin centres r_k at which ``result`` is defined (r_k no larger
    than its last bin centre; below its first centre its first value is used); ``result`` is linearly
    interpolated onto them (exactly its own values when the bins are the same):

        mean_abs_dg = 1/K sum_k |g(r_k) - g_ref(r_k)|

    Dimensionless; 0 for identical g, and a g shifted by a constant c everywhere gives |c|.
    """
    g = np.interp(reference.r_A, result.r_A, result.g[pair], right=np.nan)
    defined = np.isfinite(g)
    return float(np.mean(np.abs(g[defined] - reference.g[pair][defined])))


def rdf_error(result: RDFResult, reference: RDFResult) -> float:
    """The RDF error of ``result`` against ``reference``: the mean over the bead-type pairs present in
    both of :func:`mean_abs_dg` (NaN when they share no pair). This is the number in the study's
    ``rdf_error`` matrices and in :func:`compare_rdf`'s ``mean_abs_dg``."""
    errors = [mean_abs_dg(result, reference, pair) for pair in reference.g if pair in result.g]
    return float(np.mean(errors)) if errors else math.nan


def compare_rdf(result: RDFResult, reference: RDFResult) -> dict[str, dict[str, float]]:
    """Error metrics of ``result`` against ``reference``, per pair present in both.

    Per pair: ``mean_abs_dg`` (:func:`mean_abs_dg`, the RDF error), ``peak_height_error`` (first-peak
    height minus the reference's), ``peak_position_error_A`` (first-peak position minus the
    reference's, A), both over the reference bins up to the smaller r_max (``result`` interpolated
    onto them when the bins differ), and ``r_max_A`` (that range).
    """
    out: dict[str, dict[str, float]] = {}
    r_max = min(result.r_max_A, reference.r_max_A)
    keep = reference.r_A <= r_max
    r_ref = reference.r_A[keep]
    for pair, g_ref in reference.g.items():
        if pair not in result.g:
            continue
        if result.r_A.shape == reference.r_A.shape and np.allclose(result.r_A, reference.r_A):
            g = result.g[pair][keep]
        else:
            g = np.interp(r_ref, result.r_A, result.g[pair])
        r_peak, h_peak = first_peak(r_ref, g)
        r_peak_ref, h_peak_ref = first_peak(r_ref, g_ref[keep])
        out[pair] = {
            "mean_abs_dg": mean_abs_dg(result, reference, pair),
            "peak_height_error": h_peak - h_peak_ref,
            "peak_position_error_A": r_peak - r_peak_ref,
            "r_max_A": float(r_max),
        }
    return out


def rdf_onset_A(result: RDFResult, threshold: float = 0.01) -> dict[str, float]:
    """Per pair, the first distance where g(r) exceeds ``threshold``: the centre of the first bin
    with g > threshold (A). A pair never above the threshold gets ``r_max_A``.

    This is the ``t`` of the repulsive prior (docs/hipnn_ts.md): the closest approach seen in the data.
    """
    out = {}
    for pair, g in result.g.items():
        above = np.flatnonzero(np.asarray(g) > threshold)
        out[pair] = float(result.r_A[above[0]]) if len(above) else result.r_max_A
    return out


# ------------------------------------------------------------------------------------- plotting

def plot_rdfs(results: RDFResult | MappingType[str, RDFResult], path: str | os.PathLike | None = None, *,
              title: str | None = None, reference: str | None = None):
    """One panel per bead-type pair, one line per result; returns the figure (saved when ``path``).

    ``results`` is one :class:`RDFResult` or a mapping label -> RDFResult; ``reference`` names the
    label drawn in black.
    """
    if isinstance(results, RDFResult):
        results = {"": results}
    pairs: list[str] = []
    for res in results.values():
        pairs.extend(p for p in res.g if p not in pairs)
    n = max(1, len(pairs))
    cols = min(3, n)
    fig, axes = new_figure((n + cols - 1) // cols, cols, panel_size=(4.2, 3.2))
    for ax, pair in zip(axes.flat, pairs):
        for label, res in results.items():
            if pair in res.g:
                ax.plot(res.r_A, res.g[pair], label=label or None, **curve_style(label, reference))
        ax.axhline(1.0, color="grey", lw=0.6, ls=":")
        label_axes(ax, "r (Å)", "g(r)", pair)
        if any(results):
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(pairs):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return finish_figure(fig, path)


# ------------------------------------------------------------------------------------- the stage

def run_rdf(config: "Config", run_dir: str | os.PathLike, *, state: str | list[str] | None = None,
            progress: bool = True) -> list[Path]:
    """RDFs of every CG dataset ``RUN_DIR/cg/<label>.h5md`` (or those of ``state``), written to
    ``RUN_DIR/rdf/<label>.json`` and ``.png``. Returns the JSON paths."""
    rd = RunDir(run_dir)
    datasets = {p.stem: p for p in rd.cg_datasets()}
    if state is not None:
        wanted = {state} if isinstance(state, str) else set(state)
        missing = sorted(wanted - set(datasets))
        if missing:
            raise FileNotFoundError(f"{rd.root / 'cg'}: no CG dataset for state(s) {missing} "
                                    f"(found: {sorted(datasets)})")
        datasets = {k: v for k, v in datasets.items() if k in wanted}
    if not datasets:
        raise FileNotFoundError(f"{rd.root / 'cg'}: no CG datasets (*.h5md); run `thermocg map` first")
    outputs = []
    for label, path in sorted(datasets.items()):
        with H5MDDataset(path, kind="cg") as ds:
            try:
                rdf = RDF(ds, r_max_A=config.rdf.r_max_A, bin_width_A=config.rdf.bin_width_A).run(progress=progress)
            except DatasetError:
                raise  # (its message names the file already)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
        out = rdf.results.save_json(rd.rdf(label))
        plot_rdfs(rdf.results, out.with_suffix(".png"), title=f"CG RDF, {label}")
        outputs.append(out)
    return outputs
