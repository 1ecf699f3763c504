"""Density: mass over volume, in g/cm^3, per frame."""

import numpy as np
import pytest

from thermocg.analysis.density import Density
from thermocg.frames import Frames
from thermocg import units


def test_density_of_a_known_box():
    # 1000 beads of 32.04 amu in (31.0 A)^3 and (32.0 A)^3
    boxes = np.array([np.eye(3) * 31.0, np.eye(3) * 32.0])
    frames = Frames(positions=np.zeros((2, 1000, 3)), box=boxes, types=np.arange(1000) % 4 == 0,
                    type_names=("M", "W"), masses=np.full(1000, 32.04), time_fs=[0.0, 10.0])
    res = Density(frames).run().results
    expected = 1000 * 32.04 * 1.66053906660 / np.array([31.0**3, 32.0**3])  # g/cm^3
    np.testing.assert_allclose(res.density_g_cm3, expected, rtol=1e-12)
    assert res.mean_density_g_cm3 == pytest.approx(expected.mean())
    assert res.number_density_per_A3["W"] == pytest.approx(250 * np.mean([31.0**-3, 32.0**-3]))
    assert res.density_g_cm3[0] == pytest.approx(units.mass_density_g_cm3(32040.0, 31.0**3))


def test_run_chooses_the_frames():
    boxes = np.array([np.eye(3) * (30.0 + k) for k in range(5)])
    frames = Frames(positions=np.zeros((5, 10, 3)), box=boxes, types=np.zeros(10, int), type_names=("M",),
                    masses=np.full(10, 32.04), time_fs=np.arange(5) * 10.0)
    res = Density(frames).run(1, None, 2).results
    np.testing.assert_array_equal(res.time_fs, [10.0, 30.0])
    np.testing.assert_allclose(res.volume_A3, [31.0**3, 33.0**3], rtol=1e-12)
    assert res.n_frames == 2
