"""Angular distribution functions: angles between pairs of neighbours of a bead.

For every bead i (the centre) and every unordered pair {j, k} of its neighbours within ``cutoff_A``
(all periodic images, from the vesin neighbour list), the angle

    theta_jik = arccos( r_ij . r_ik / (|r_ij| |r_ik|) ),   r_ij = R_j - R_i + S_ij @ box

is histogrammed on [0, 180] degrees and normalised as a probability density per degree,

    p(theta) = n(theta, theta + dtheta) / (n_angles * dtheta),      integral of p over [0, 180] = 1,

(no sin(theta) Jacobian is divided out: p is the distribution of the angle itself, so an isotropic
neighbour shell gives p proportional to sin(theta)). ``p["all"]`` pools every centre; ``p[name]``
holds the angles centred on beads of type ``name``. The default cutoff is the first minimum of the
RDF after its first peak (the first neighbour shell), from :class:`thermocg.analysis.rdf.RDF`.

This is the observable where pair potentials fail and many-body models should not: a pair potential
reproduces g(r) by construction of its fit, but the angular correlations are three-body.

The ADF error, defined once here (:func:`adf_error`, used by the study's matrices and by
:func:`compare_adf`): the integral over theta of |p(theta) - p_ref(theta)|.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from thermocg.analysis.base import AnalysisBase, AnalysisResults
from thermocg.analysis.plots import curve_style, finish_figure, label_axes, new_figure
from thermocg.analysis.rdf import RDF
from thermocg.dataset import H5MDDataset
from thermocg.frames import Frames
from thermocg.neighbors import check_cutoff_fits, neighbor_pairs

__all__ = ["ADF", "ADFResult", "adf_error", "compare_adf", "rdf_first_minimum_A", "plot_adfs"]


@dataclass
class ADFResult(AnalysisResults):
    """Angle distributions.

    angle_deg  (n_bins,) bin centres, degrees
    edges_deg  (n_bins + 1,) bin edges
    p          "all" and each centre bead type -> (n_bins,) probability density, 1/degree
    n_angles   same keys -> number of angles histogrammed (all frames)
    cutoff_A   neighbour shell radius used
    n_frames   frames analysed
    mean_neighbors  mean number of neighbours per bead within the cutoff
    """

    what = "ADF result"

    angle_deg: np.ndarray
    edges_deg: np.ndarray
    p: dict[str, np.ndarray]
    n_angles: dict[str, int]
    cutoff_A: float
    n_frames: int
    mean_neighbors: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ADFResult":
        return cls(
            angle_deg=np.asarray(data["angle_deg"], dtype=np.float64),
            edges_deg=np.asarray(data["edges_deg"], dtype=np.float64),
            p={k: np.asarray(v, dtype=np.float64) for k, v in data["p"].items()},
            n_angles={k: int(v) for k, v in data["n_angles"].items()},
            cutoff_A=float(data["cutoff_A"]),
            n_frames=int(data["n_frames"]),
            mean_neighbors=float(data.get("mean_neighbors", 0.0)),
            metadata=dict(data.get("metadata", {})),
        )


def rdf_first_minimum_A(r_A: np.ndarray, g: np.ndarray, *, smooth_bins: int = 5) -> float:
    """The first minimum of g(r) after its first peak (A): the edge of the first neighbour shell.

    g is smoothed by a running mean over ``smooth_bins`` bins (the raw histogram is noisy); the first
    peak is the global maximum of the smoothed g; the minimum is the first local minimum after it.
    Returns the last r if g has no minimum after its peak.
    """
    g = np.asarray(g, dtype=np.float64)
    if smooth_bins > 1 and len(g) > smooth_bins:
        kernel = np.ones(smooth_bins) / smooth_bins
        g = np.convolve(np.pad(g, smooth_bins // 2, mode="edge"), kernel, mode="valid")[: len(r_A)]
    peak = int(np.argmax(g))
    for k in range(peak + 1, len(g) - 1):
        if g[k] <= g[k - 1] and g[k] < g[k + 1]:
            # a flat minimum (a crystal's empty gap between shells): take the middle of the flat stretch
            flat = np.abs(g - g[k]) <= 1e-9 * max(1.0, abs(g[k]))
            lo = k
            while lo - 1 > peak and flat[lo - 1]:
                lo -= 1
            return float(0.5 * (r_A[lo] + r_A[k]))
    return float(r_A[-1])


def _angles_one_frame(positions: np.ndarray, box: np.ndarray, cutoff_A: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Angles (degrees) of every neighbour pair of every centre, the centre index of each, and the pair count."""
    i, j, shifts = neighbor_pairs(positions, box, cutoff_A)
    if len(i) == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64), 0
    order = np.argsort(i, kind="stable")
    i, j, shifts = i[order], j[order], shifts[order]
    vec = positions[j] - positions[i] + shifts @ box
    unit = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    n = positions.shape[0]
    counts = np.bincount(i, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    angles, centres = [], []
    for m in np.unique(counts):
        if m < 2:
            continue
        which = np.flatnonzero(counts == m)
        a, b = np.triu_indices(m, k=1)
        first = starts[which][:, None] + a[None, :]
        second = starts[which][:, None] + b[None, :]
        cos = np.einsum("pk,pk->p", unit[first.ravel()], unit[second.ravel()])
        angles.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
        centres.append(np.repeat(which, len(a)))
    if not angles:
        return np.zeros(0), np.zeros(0, dtype=np.int64), len(i)
    return np.concatenate(angles), np.concatenate(centres), len(i)


class ADF(AnalysisBase):
    """Angular distribution of neighbour pairs around each bead.

    Parameters
    ----------
    frames : Frames, H5MDDataset or H5MD path
    cutoff_A : neighbour shell radius, A; None: the first minimum of the RDF (pooled over bead-type
        pairs, from up to 50 evenly spaced frames) after its first peak, or of ``rdf_reference``
        when given. It must fit every frame's box.
    rdf_reference : an RDFResult (e.g. of the all-atom reference) whose first minimum sets the cutoff,
        so that CG and AA angles are taken over the same shell
    bin_width_deg : histogram bin width, degrees (bins tile [0, 180])

    ``run(start, stop, step)`` fills ``self.results`` with an :class:`ADFResult`.
    """

    def __init__(self, frames: Frames | H5MDDataset | str | os.PathLike, *, cutoff_A: float | None = None,
                 rdf_reference: Any = None, bin_width_deg: float = 2.0) -> None:
        super().__init__(frames)
        if not (np.isfinite(bin_width_deg) and 0 < bin_width_deg <= 180):
            raise ValueError(f"ADF: bin_width_deg must be in (0, 180], got {bin_width_deg}")
        if cutoff_A is None:
            cutoff_A = self._cutoff_from_rdf(rdf_reference)
        if not (np.isfinite(cutoff_A) and cutoff_A > 0):
            raise ValueError(f"ADF: cutoff_A must be positive, got {cutoff_A}")
        try:
            check_cutoff_fits(cutoff_A, self.all_boxes(), what="ADF cutoff_A")
        except ValueError as exc:
            raise ValueError(f"ADF: {exc}") from None
        self.cutoff_A = float(cutoff_A)
        self.n_bins = max(1, int(round(180.0 / bin_width_deg)))
        self.edges_deg = np.linspace(0.0, 180.0, self.n_bins + 1)
        self.type_names = tuple(self.frames.type_names)
        self.types = np.asarray(self.frames.types, dtype=np.int64)

    def _cutoff_from_rdf(self, rdf_reference: Any) -> float:
        if rdf_reference is None:
            # the RDF of (up to) 50 evenly spaced frames is enough to locate the first shell
            rdf_reference = RDF(self.frames, bin_width_A=0.05).run(step=max(1, self.n_frames_total // 50)).results
        g_mean = np.mean([g for g in rdf_reference.g.values()], axis=0)
        return rdf_first_minimum_A(rdf_reference.r_A, g_mean)

    def _prepare(self) -> None:
        self._hist = {name: np.zeros(self.n_bins) for name in ("all", *self.type_names)}
        self._n_pairs = 0
        self._n_beads = 0

    def _single_frame(self, frames: Frames, k: int) -> None:
        angles, centres, n_pairs = _angles_one_frame(frames.positions[k], frames.box[k], self.cutoff_A)
        self._n_pairs += n_pairs
        self._n_beads += frames.n_particles
        self._hist["all"] += np.histogram(angles, bins=self.edges_deg)[0]
        centre_types = self.types[centres]
        for t, name in enumerate(self.type_names):
            self._hist[name] += np.histogram(angles[centre_types == t], bins=self.edges_deg)[0]

    def _conclude(self) -> None:
        width = np.diff(self.edges_deg)
        p, n_angles = {}, {}
        for name, hist in self._hist.items():
            total = hist.sum()
            n_angles[name] = int(total)
            p[name] = hist / (total * width) if total > 0 else np.zeros_like(hist)
        self.results = ADFResult(
            angle_deg=0.5 * (self.edges_deg[1:] + self.edges_deg[:-1]), edges_deg=self.edges_deg, p=p,
            n_angles=n_angles, cutoff_A=self.cutoff_A, n_frames=self.n_frames,
            mean_neighbors=self._n_pairs / max(self._n_beads, 1),
        )


def adf_error(result: ADFResult, reference: ADFResult, *, key: str = "all") -> float:
    """THE ADF error of thermocg: the integral over theta of |p(theta) - p_ref(theta)|.

    Evaluated on the reference's bin centres theta_k with the widths of ``np.gradient(theta_k)``
    (the bin width for even bins); ``result`` is linearly interpolated onto them (exactly its own
    values when the bins are the same), not renormalised:

        adf_error = sum_k |p(theta_k) - p_ref(theta_k)| dtheta_k

    Both p integrate to 1, so 0 means identical and 2 means no overlap. NaN when either lacks ``key``.
    This is the number in the study's ``adf_error`` matrices and :func:`compare_adf`'s
    ``integrated_abs_dp``.
    """
    if key not in result.p or key not in reference.p:
        return math.nan
    theta = reference.angle_deg
    p = np.interp(theta, result.angle_deg, result.p[key])
    width = np.gradient(theta) if len(theta) > 1 else np.ones_like(theta)
    return float(np.sum(np.abs(p - reference.p[key]) * width))


def compare_adf(result: ADFResult, reference: ADFResult) -> dict[str, dict[str, float]]:
    """Error metrics of ``result`` against ``reference`` for every key (``all``, bead types) with
    angles in both.

    ``integrated_abs_dp``: :func:`adf_error` (0 = identical, 2 = no overlap);
    ``mean_angle_error_deg``: <theta> - <theta>_ref, each over its own bins; ``peak_position_error_deg``:
    position of the highest bin minus the reference's; ``cutoff_A``: the reference's shell radius
    (compare like with like).
    """

    def mean_angle(res: ADFResult, key: str) -> float:
        return float(np.sum(res.angle_deg * res.p[key] * np.diff(res.edges_deg)))

    out: dict[str, dict[str, float]] = {}
    for key in reference.p:
        if key not in result.p or reference.n_angles.get(key, 0) == 0 or result.n_angles.get(key, 0) == 0:
            continue
        out[key] = {
            "integrated_abs_dp": adf_error(result, reference, key=key),
            "mean_angle_error_deg": mean_angle(result, key) - mean_angle(reference, key),
            "peak_position_error_deg": float(result.angle_deg[np.argmax(result.p[key])]
                                             - reference.angle_deg[np.argmax(reference.p[key])]),
            "cutoff_A": float(reference.cutoff_A),
        }
    return out


def plot_adfs(results: ADFResult | dict[str, ADFResult], path: str | os.PathLike | None = None, *,
              key: str = "all", title: str | None = None, reference: str | None = None):
    """p(theta) of one key for one or several labelled results (``reference`` drawn in black)."""
    if isinstance(results, ADFResult):
        results = {"": results}
    fig, axes = new_figure(panel_size=(4.5, 3.4))
    ax = axes[0, 0]
    for label, res in results.items():
        if key in res.p:
            ax.plot(res.angle_deg, res.p[key], label=label or None, **curve_style(label, reference))
    label_axes(ax, "θ (deg)", "p(θ) (1/deg)", title or f"ADF ({key})")
    ax.set_xlim(0, 180)
    if any(results):
        ax.legend(fontsize=7)
    return finish_figure(fig, path)
