"""Mass and number density per frame.

    rho_mass = sum_i m_i / V        (amu/A^3 -> g/cm^3 with units.AMU_A3_TO_G_CM3)
    rho_a    = N_a / V              (beads of type a per A^3)

with V = |det box| per frame. Constant in NVT; the observable that tells an NPT (or a poorly
equilibrated) run apart from its target state point.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from thermocg import units
from thermocg.analysis.base import AnalysisBase, AnalysisResults
from thermocg.dataset import H5MDDataset
from thermocg.frames import Frames

__all__ = ["Density", "DensityResult"]


@dataclass
class DensityResult(AnalysisResults):
    """time_fs (F,), density_g_cm3 (F,), volume_A3 (F,); means and standard deviations over frames;
    number_density_per_A3: bead type -> mean N_a / V."""

    time_fs: np.ndarray
    density_g_cm3: np.ndarray
    volume_A3: np.ndarray
    mean_density_g_cm3: float
    std_density_g_cm3: float
    mean_volume_A3: float
    number_density_per_A3: dict[str, float]
    n_frames: int


class Density(AnalysisBase):
    """Mass density (g/cm^3) and number densities (1/A^3) of the frames ``run(start, stop, step)`` selects."""

    def __init__(self, frames: Frames | H5MDDataset | str | os.PathLike) -> None:
        super().__init__(frames)
        self.masses = np.asarray(self.frames.masses, dtype=np.float64)
        self.types = np.asarray(self.frames.types, dtype=np.int64)
        self.type_names = tuple(self.frames.type_names)

    def _prepare(self) -> None:
        self._volume, self._time = [], []

    def _single_frame(self, frames: Frames, k: int) -> None:
        self._volume.append(abs(float(np.linalg.det(frames.box[k]))))
        self._time.append(float(frames.time_fs[k]))

    def _conclude(self) -> None:
        volume = np.array(self._volume)
        rho = self.masses.sum() / volume * units.AMU_A3_TO_G_CM3
        inv_v = float(np.mean(1.0 / volume))
        self.results = DensityResult(
            time_fs=np.array(self._time), density_g_cm3=rho, volume_A3=volume,
            mean_density_g_cm3=float(rho.mean()), std_density_g_cm3=float(rho.std()),
            mean_volume_A3=float(volume.mean()),
            number_density_per_A3={name: float(np.sum(self.types == t)) * inv_v
                                   for t, name in enumerate(self.type_names)},
            n_frames=self.n_frames,
        )
