"""Force errors: exact answers when the model is the reference, or a known multiple of it."""

import numpy as np
import pytest

from helpers import lj_fluid
from thermocg.analysis.forces import force_errors
from thermocg.dataset import write_frames
from thermocg.frames import Frames
from thermocg.potentials.base import energy_and_forces
from thermocg.potentials.lj import LennardJones

EPS = [[0.2, 0.25], [0.25, 0.3]]
SIG = [[3.4, 3.6], [3.6, 3.8]]


def lj(scale=1.0):
    return LennardJones(["A", "B"], epsilon_kcal_mol=np.array(EPS) * scale, sigma_A=SIG, cutoff_A=7.5)


def reference_frames(rng, n_frames=6):
    positions, boxes = [], []
    for _ in range(n_frames):
        p, b = lj_fluid(64, 0.012, rng=rng, triclinic=True)
        positions.append(p)
        boxes.append(b)
    types = np.arange(64) % 2
    _, forces = energy_and_forces(lj(), np.array(positions), np.array(boxes), types)
    return Frames(positions=np.array(positions), box=np.array(boxes), types=types, type_names=("A", "B"),
                  masses=np.ones(64) * 30, forces=forces.numpy())


def test_the_reference_itself_has_zero_error(rng):
    frames = reference_frames(rng)
    out = force_errors(lj(), frames, batch_frames=4)
    assert out["rmse"] < 1e-10 and out["mae"] < 1e-10 and out["r2"] == pytest.approx(1.0)
    assert out["n_frames"] == 6 and out["n_components"] == 6 * 64 * 3
    assert set(out["per_type"]) == {"A", "B"} and out["per_type"]["A"]["n_components"] == 6 * 32 * 3


def test_a_scaled_model_has_known_errors(rng, tmp_path):
    """Forces scale with epsilon: predicting k f gives RMSE = |k-1| rms(f), MAE = |k-1| <|f|>,
    R^2 = 1 - (k-1)^2 sum f^2 / sum (f - <f>)^2; per type as well; batching and files change nothing."""
    frames = reference_frames(rng)
    k = 1.3
    f = frames.forces
    path = write_frames(frames, tmp_path / "ref.h5md", kind="cg")
    out = force_errors(lj(k), path, batch_frames=4, parity_samples=100, seed=1)
    assert out["rmse"] == pytest.approx((k - 1) * np.sqrt(np.mean(f**2)), rel=1e-9)
    assert out["mae"] == pytest.approx((k - 1) * np.mean(np.abs(f)), rel=1e-9)
    r2 = 1 - (k - 1) ** 2 * np.sum(f**2) / np.sum((f - f.mean()) ** 2)
    assert out["r2"] == pytest.approx(r2, rel=1e-9)
    fb = f[:, 1::2]
    assert out["per_type"]["B"]["rmse"] == pytest.approx((k - 1) * np.sqrt(np.mean(fb**2)), rel=1e-9)
    one_by_one = force_errors(lj(k), frames, batch_frames=1)
    assert one_by_one["rmse"] == pytest.approx(out["rmse"], rel=1e-12)
    parity = out["parity"]
    assert len(parity["reference"]) == 100
    np.testing.assert_allclose(parity["predicted"], k * parity["reference"], rtol=1e-9, atol=1e-12)


def test_bad_input(rng):
    frames = reference_frames(rng, n_frames=1)
    with pytest.raises(ValueError, match="no reference forces"):
        force_errors(lj(), Frames(positions=frames.positions, box=frames.box, types=frames.types,
                                  type_names=frames.type_names, masses=frames.masses))
    other = LennardJones(["C"], epsilon_kcal_mol=0.2, sigma_A=3.0, cutoff_A=7.0)
    with pytest.raises(ValueError, match="unknown"):
        force_errors(other, frames)
