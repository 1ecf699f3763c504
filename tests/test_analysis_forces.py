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


# ---------------------------------------------------------------------------- the one accumulator

def direct_metrics(pred, ref):
    """RMSE, MAE, R^2 and reference RMS of concatenated components, straight from numpy (two passes)."""
    p, r = np.concatenate([x.ravel() for x in pred]), np.concatenate([x.ravel() for x in ref])
    e = p - r
    return {"rmse": np.sqrt(np.mean(e**2)), "mae": np.mean(np.abs(e)),
            "r2": 1 - np.sum(e**2) / np.sum((r - r.mean()) ** 2), "reference_rms": np.sqrt(np.mean(r**2)),
            "n_components": p.size}


def test_accumulator_streams_uneven_batches_per_state_and_type(rng):
    """Two states (different bead counts and type orders), fed in batches of 1, 3 and 2 frames:
    every subset's metrics equal numpy's on the concatenated components."""
    from thermocg.analysis.forces import ForceErrorAccumulator

    states = {}
    for label, n_beads, names, offset in (("cold", 10, ("A", "B"), 0.3), ("hot", 7, ("B", "A", "C"), -0.2)):
        ref = rng.normal(offset, 2.0, (6, n_beads, 3))
        pred = ref + rng.normal(0.1, 0.5, ref.shape)
        types = rng.integers(0, len(names), n_beads)
        types[: len(names)] = np.arange(len(names))  # every type present
        states[label] = (pred, ref, types, names)
    acc = ForceErrorAccumulator()
    for label, (pred, ref, types, names) in states.items():
        for lo, hi in ((0, 1), (1, 4), (4, 6)):
            acc.add(pred[lo:hi], ref[lo:hi], types, type_names=names, state=label)

    def select(label=None, name=None):
        pred, ref = [], []
        for lab, (p, r, types, names) in states.items():
            if label in (None, lab):
                mask = np.ones(len(types), bool) if name is None else np.array([names[t] == name for t in types])
                pred.append(p[:, mask])
                ref.append(r[:, mask])
        return direct_metrics(pred, ref)

    subsets = [(label, name) for label in (None, "cold", "hot") for name in (None, "A", "B", "C")
               if not (label == "cold" and name == "C")]
    for label, name in subsets:
        got, want = acc.metrics(state=label, bead_type=name).to_dict(), select(label, name)
        assert got["n_components"] == want.pop("n_components"), (label, name)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-12), (label, name, key)
    assert acc.states == ("cold", "hot") and acc.type_names == ("A", "B", "C")
    assert acc.n_frames("cold") == 6 and acc.n_frames() == 12
    report = acc.report("cold")
    assert set(report["per_type"]) == {"A", "B"} and report["n_frames"] == 6  # C has no bead there
    assert report["rmse"] == acc.metrics(state="cold").rmse
    assert acc.metrics(state="nowhere").n_components == 0 and np.isnan(acc.metrics(state="nowhere").rmse)


def test_force_metrics_and_bad_batches(rng):
    from thermocg.analysis.forces import ForceErrorAccumulator, force_metrics

    ref = rng.normal(0.0, 1.0, (4, 5, 3))
    pred = 0.5 * ref
    got = force_metrics(pred, ref)
    want = direct_metrics([pred], [ref])
    assert all(got[k] == pytest.approx(v, rel=1e-12) for k, v in want.items())
    assert force_metrics(ref, ref)["r2"] == 1.0 and force_metrics(ref, ref)["rmse"] == 0.0
    empty = force_metrics(np.zeros(0), np.zeros(0))
    assert empty["n_components"] == 0 and np.isnan(empty["rmse"])
    acc = ForceErrorAccumulator(("A",))
    with pytest.raises(ValueError, match="do not fit"):
        acc.add(pred, ref[:, :4], np.zeros(5, int))
    with pytest.raises(ValueError, match="outside the type names"):
        acc.add(pred, ref, np.full(5, 1))


def test_force_errors_feeds_a_shared_accumulator(rng, tmp_path):
    """Two calls of force_errors pooled in one accumulator give the metrics of all their frames."""
    from thermocg.analysis.forces import ForceErrorAccumulator

    frames = reference_frames(rng)
    pooled = ForceErrorAccumulator()
    first = force_errors(lj(1.2), frames, frame_indices=[0, 1, 2], accumulator=pooled, state="s1")
    second = force_errors(lj(1.2), frames, frame_indices=[3, 4, 5], accumulator=pooled, state="s2")
    everything = force_errors(lj(1.2), frames, batch_frames=6)
    assert pooled.report("s1") == {**first, "per_type": first["per_type"]}
    assert pooled.metrics().rmse == pytest.approx(everything["rmse"], rel=1e-12)
    assert pooled.metrics().r2 == pytest.approx(everything["r2"], rel=1e-12)
    assert pooled.metrics(bead_type="B").mae == pytest.approx(everything["per_type"]["B"]["mae"], rel=1e-12)
    assert second["n_frames"] == 3 and pooled.n_frames() == 6
