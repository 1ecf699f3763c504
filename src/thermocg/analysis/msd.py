"""Mean-squared displacement and the self-diffusion coefficient.

Positions are unwrapped frame by frame with the minimum-image displacement between consecutive saved
frames (fractional coordinates in the current box),

    u(t_k) = u(t_{k-1}) + box_k^T round-off-free( frac(R(t_k) - R(t_{k-1})) - round(...) )

which is exact as long as no bead moves more than half a box width between saved frames (save often
enough). The MSD is averaged over beads and over every time origin,

    MSD(tau) = < |u_i(t + tau) - u_i(t)|^2 >_{i, t}

computed with the FFT algorithm (Kneller et al., nMoldyn; O(T log T) per bead instead of O(T^2)).
The diffusion coefficient comes from the Einstein relation in 3D, fitted as a straight line over a
reported window of lags (short lags are ballistic, long lags are noisy):

    MSD(tau) ~ 6 D tau + c,     D in A^2/fs;  1 A^2/fs = 1e4 x 1e-5 cm^2/s

Frames must be evenly spaced in time (H5MD time stamps, fs).

**Friction that matches a diffusion coefficient.** Coarse-grained models diffuse faster than the
all-atom liquid they came from (the beads lose the friction of the atoms averaged away). A Langevin
thermostat adds friction back; :func:`friction_matching_diffusion` chooses it so that the CG
diffusion coefficient becomes the all-atom one, from one CG run (Einstein: D = kT / zeta; the
frictions of the conservative CG forces and of the bath add, see the function).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from thermocg import units
from thermocg.analysis.base import AnalysisBase, AnalysisResults
from thermocg.analysis.plots import curve_style, finish_figure, label_axes, new_figure
from thermocg.dataset import H5MDDataset
from thermocg.frames import Frames

__all__ = ["MSD", "MSDResult", "unwrap_positions", "msd_fft", "A2_PER_FS_TO_1E5_CM2_PER_S", "plot_msds",
           "langevin_diffusion_A2_fs", "friction_matching_diffusion"]

#: 1 A^2/fs = 1e-16 cm^2 / 1e-15 s = 0.1 cm^2/s = 1e4 x (1e-5 cm^2/s)
A2_PER_FS_TO_1E5_CM2_PER_S = 1.0e4


def unwrap_positions(positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Unwrap (F, N, 3) positions with minimum-image steps between consecutive frames; box (F, 3, 3)."""
    positions = np.asarray(positions, dtype=np.float64)
    box = np.broadcast_to(np.asarray(box, dtype=np.float64), (positions.shape[0], 3, 3))
    out = np.empty_like(positions)
    out[0] = positions[0]
    for k in range(1, positions.shape[0]):
        step = positions[k] - positions[k - 1]
        frac = step @ np.linalg.inv(box[k])
        out[k] = out[k - 1] + (frac - np.round(frac)) @ box[k]
    return out


def msd_fft(unwrapped: np.ndarray) -> np.ndarray:
    """MSD(tau_m) for m = 0..T-1 of each particle, averaged over time origins: (T, N, 3) -> (T, N).

    MSD(m) = S1(m) - 2 S2(m), with S2(m) = 1/(T-m) sum_t r(t).r(t+m) (by FFT) and
    S1(m) = 1/(T-m) sum_{t=0}^{T-m-1} (|r(t)|^2 + |r(t+m)|^2).
    """
    x = np.asarray(unwrapped, dtype=np.float64)
    x = x - x[0]  # translation-invariant; smaller numbers, less round-off
    n_t = x.shape[0]
    sq = np.sum(x * x, axis=2)  # (T, N)
    norm = (n_t - np.arange(n_t))[:, None]
    spectrum = np.fft.rfft(x, n=2 * n_t, axis=0)
    s2 = np.fft.irfft(np.sum(spectrum * spectrum.conj(), axis=2).real, n=2 * n_t, axis=0)[:n_t] / norm
    cumulative = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(sq, axis=0)])  # (T+1, N)
    m = np.arange(n_t)
    # sum_{t=0}^{T-m-1} |r(t)|^2 + sum_{t=m}^{T-1} |r(t)|^2
    s1 = (cumulative[n_t - m] + (cumulative[n_t] - cumulative[m])) / norm
    return s1 - 2.0 * s2


@dataclass
class MSDResult(AnalysisResults):
    """MSD curves and diffusion coefficients.

    lag_fs       (n_lags,) lag times, fs
    msd_A2       "all" and each bead type -> (n_lags,) MSD, A^2
    diffusion_A2_fs, diffusion_1e5_cm2_s   same keys -> D from the fit
    fit_start_fs, fit_end_fs   the lag window of the linear fit (inclusive), fs
    n_frames, n_particles
    """

    lag_fs: np.ndarray
    msd_A2: dict[str, np.ndarray]
    diffusion_A2_fs: dict[str, float]
    diffusion_1e5_cm2_s: dict[str, float]
    fit_start_fs: float
    fit_end_fs: float
    n_frames: int
    n_particles: int
    metadata: dict[str, Any] = field(default_factory=dict)


class MSD(AnalysisBase):
    """Mean-squared displacement per bead type with the diffusion coefficient.

    Parameters
    ----------
    frames : Frames, H5MDDataset or H5MD path (evenly spaced in time)
    fit_start_fraction, fit_end_fraction : the fit window as fractions of the longest lag
        (defaults 0.1 and 0.5: past the ballistic start, before the noisy tail);
    fit_start_fs, fit_end_fs : the window in fs instead (override the fractions)

    ``run(start, stop, step)`` fills ``self.results`` with an :class:`MSDResult`; the selected frames
    must be evenly spaced in time.
    """

    def __init__(self, frames: Frames | H5MDDataset | str | os.PathLike, *, fit_start_fraction: float = 0.1,
                 fit_end_fraction: float = 0.5, fit_start_fs: float | None = None,
                 fit_end_fs: float | None = None) -> None:
        super().__init__(frames)
        if self.n_frames_total < 3:
            raise ValueError(f"MSD: needs at least 3 frames, got {self.n_frames_total}")
        if not 0 <= fit_start_fraction < fit_end_fraction <= 1:
            raise ValueError("MSD: need 0 <= fit_start_fraction < fit_end_fraction <= 1")
        if fit_start_fs is not None and fit_end_fs is not None and not 0 <= fit_start_fs < fit_end_fs:
            raise ValueError("MSD: need 0 <= fit_start_fs < fit_end_fs")
        self.fit_start_fraction = fit_start_fraction
        self.fit_end_fraction = fit_end_fraction
        self.fit_start_fs = fit_start_fs
        self.fit_end_fs = fit_end_fs
        self.type_names = tuple(self.frames.type_names)
        self.types = np.asarray(self.frames.types, dtype=np.int64)

    def _prepare(self) -> None:
        if self.n_frames < 3:
            raise ValueError(f"MSD: needs at least 3 frames, got {self.n_frames} selected")
        n = len(self.types)
        self._unwrapped = np.empty((self.n_frames, n, 3))
        self._times = np.empty(self.n_frames)
        self._previous: np.ndarray | None = None
        self._k = 0

    def _single_frame(self, frames: Frames, k: int) -> None:
        pos = frames.positions[k]
        if self._previous is None:
            self._unwrapped[0] = pos
        else:
            frac = (pos - self._previous) @ np.linalg.inv(frames.box[k])
            self._unwrapped[self._k] = self._unwrapped[self._k - 1] + (frac - np.round(frac)) @ frames.box[k]
        self._previous = pos
        self._times[self._k] = frames.time_fs[k]
        self._k += 1

    def _conclude(self) -> None:
        dt = np.diff(self._times)
        # lags are k * dt[0]: spacings uneven by a relative 1e-3 move D by at most 0.1%, far below its
        # statistical error, and leave room for times stored in float32 (GROMACS .trr: ~1e-7 relative)
        if not (np.all(dt > 0) and np.allclose(dt, dt[0], rtol=1e-3, atol=1e-9)):
            raise ValueError("MSD: frames must be evenly spaced in time (check time_fs and the frame selection)")
        lag = np.arange(self.n_frames) * dt[0]
        per_particle = msd_fft(self._unwrapped)  # (T, N)
        curves = {"all": per_particle.mean(axis=1)}
        for t, name in enumerate(self.type_names):
            if np.any(self.types == t):
                curves[name] = per_particle[:, self.types == t].mean(axis=1)
        lo = self.fit_start_fs if self.fit_start_fs is not None else self.fit_start_fraction * lag[-1]
        hi = self.fit_end_fs if self.fit_end_fs is not None else self.fit_end_fraction * lag[-1]
        window = (lag >= lo - 1e-9) & (lag <= hi + 1e-9)
        if window.sum() < 2:
            raise ValueError(f"MSD: the fit window [{lo:g}, {hi:g}] fs holds fewer than 2 lags (frame spacing "
                             f"{dt[0]:g} fs)")
        d_a2_fs = {k: float(np.polyfit(lag[window], v[window], 1)[0] / 6.0) for k, v in curves.items()}
        self.results = MSDResult(
            lag_fs=lag, msd_A2=curves, diffusion_A2_fs=d_a2_fs,
            diffusion_1e5_cm2_s={k: v * A2_PER_FS_TO_1E5_CM2_PER_S for k, v in d_a2_fs.items()},
            fit_start_fs=float(lag[window][0]), fit_end_fs=float(lag[window][-1]),
            n_frames=self.n_frames, n_particles=len(self.types),
        )


def _kT_over_m_A2_fs2(temperature_K: float, mass_amu: float) -> float:
    """k_B T / m in A^2/fs^2 (kcal/mol per amu, through the force-to-acceleration factor)."""
    return units.kT(temperature_K) / mass_amu * units.FORCE_TO_ACCEL


def langevin_diffusion_A2_fs(temperature_K: float, mass_amu: float, friction_per_ps: float) -> float:
    """D = k_B T / (m gamma) (A^2/fs) of a free particle of mass ``mass_amu`` in a Langevin bath of
    friction ``friction_per_ps`` (1/ps) at ``temperature_K`` (the Einstein relation; exact at long times)."""
    if not (temperature_K > 0 and mass_amu > 0 and friction_per_ps > 0):
        raise ValueError("langevin_diffusion_A2_fs: temperature, mass and friction must be positive")
    return _kT_over_m_A2_fs2(temperature_K, mass_amu) / (friction_per_ps * units.FS_TO_PS)


def friction_matching_diffusion(diffusion_A2_fs: float, target_A2_fs: float, *, friction_per_ps: float,
                                temperature_K: float, mass_amu: float) -> float:
    """The Langevin friction (1/ps) at which a CG model would diffuse with ``target_A2_fs``, given that
    it diffuses with ``diffusion_A2_fs`` at ``friction_per_ps``.

    Einstein: D = k_B T / zeta, with zeta the total friction of a bead of mass m. In a Langevin bath
    of friction gamma the bead feels the friction of the conservative CG forces, zeta_c (collisions
    with its neighbours, independent of the bath), plus the bath's m gamma, and the two add::

        k_B T / D(gamma) = zeta_c + m gamma

    One run at gamma_0 gives zeta_c = k_B T / D - m gamma_0, so the friction that gives D_target is

        gamma* = gamma_0 + (k_B T / m) (1 / D_target - 1 / D)

    For free particles (zeta_c = 0) this is exact: D(gamma) = k_B T / (m gamma). For a liquid the
    additivity is an approximation (zeta_c itself changes a little with gamma), so a run at gamma*
    lands near, not exactly on, D_target; check it by measuring D at gamma*. For several bead
    masses pass their mean. A result <= 0 means that no positive friction can slow the model down
    enough (its conservative forces alone diffuse slower than the target); callers must handle it.

    Units: D in A^2/fs, frictions in 1/ps, temperature in K, mass in amu.
    """
    for name, value in (("diffusion_A2_fs", diffusion_A2_fs), ("target_A2_fs", target_A2_fs),
                        ("friction_per_ps", friction_per_ps), ("temperature_K", temperature_K),
                        ("mass_amu", mass_amu)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"friction_matching_diffusion: {name} must be positive, got {value}")
    kt_m = _kT_over_m_A2_fs2(temperature_K, mass_amu)  # A^2/fs^2
    gamma_per_fs = friction_per_ps * units.FS_TO_PS + kt_m * (1.0 / target_A2_fs - 1.0 / diffusion_A2_fs)
    return gamma_per_fs * units.PS_TO_FS


def plot_msds(results: MSDResult | dict[str, MSDResult], path: str | os.PathLike | None = None, *,
              key: str = "all", title: str | None = None, reference: str | None = None):
    """MSD(tau) of one key for labelled results, each with its diffusion coefficient in the legend."""
    if isinstance(results, MSDResult):
        results = {"": results}
    fig, axes = new_figure(panel_size=(4.5, 3.4))
    ax = axes[0, 0]
    for label, res in results.items():
        if key in res.msd_A2:
            d = res.diffusion_1e5_cm2_s[key]
            ax.plot(res.lag_fs / 1000.0, res.msd_A2[key], label=f"{label} D={d:.3g}e-5 cm²/s",
                    **curve_style(label, reference))
    label_axes(ax, "τ (ps)", "MSD (Å²)", title or f"MSD ({key})")
    ax.legend(fontsize=7)
    return finish_figure(fig, path)
