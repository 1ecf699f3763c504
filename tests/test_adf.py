"""ADF known answers: hand-placed geometries, an ideal gas (p ~ sin theta), an fcc crystal's shell."""

import numpy as np
import pytest

from thermocg.analysis.adf import ADF, ADFResult, compare_adf, rdf_first_minimum_A
from thermocg.frames import Frames

TETRAHEDRAL = np.degrees(np.arccos(-1.0 / 3.0))  # 109.4712 deg


def frames_of(positions, box_length, types=None, type_names=("B",)):
    positions = np.asarray(positions, dtype=float)
    n = positions.shape[-2]
    return Frames(positions=positions, box=np.eye(3) * box_length,
                  types=np.zeros(n, int) if types is None else types, type_names=type_names, masses=np.ones(n))


def test_tetrahedron_gives_the_tetrahedral_angle():
    centre = np.array([15.0, 15.0, 15.0])
    vertices = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3) * 3.0
    frames = frames_of(np.vstack([centre, centre + vertices]), 30.0, types=np.array([0, 1, 1, 1, 1]),
                       type_names=("C", "V"))
    # the vertices are 4.9 A apart: a 4 A shell holds the 4 vertices around the centre only
    res = ADF(frames, cutoff_A=4.0, bin_width_deg=0.5).run().results
    assert res.n_angles == {"all": 6, "C": 6, "V": 0}
    k = np.argmax(res.p["all"])
    assert res.edges_deg[k] <= TETRAHEDRAL < res.edges_deg[k + 1]
    assert np.sum(res.p["all"] * 0.5) == pytest.approx(1.0)
    assert res.mean_neighbors == pytest.approx(8 / 5)


def test_line_gives_180_degrees():
    frames = frames_of([[10.0, 10, 10], [13.0, 10, 10], [16.0, 10, 10]], 40.0)
    res = ADF(frames, cutoff_A=3.5, bin_width_deg=1.0).run().results
    assert res.n_angles["all"] == 1
    assert res.angle_deg[np.argmax(res.p["all"])] == pytest.approx(179.5)


def test_ideal_gas_gives_sin_theta(rng):
    """Independent uniform neighbours: the angle between two of them has density sin(theta)/2 (per radian)."""
    positions = rng.uniform(0, 30.0, size=(3, 1500, 3))
    res = ADF(frames_of(positions, 30.0), cutoff_A=5.0, bin_width_deg=6.0).run().results
    expected = np.sin(np.radians(res.angle_deg)) / 2.0 * np.pi / 180.0
    assert res.n_angles["all"] > 100_000
    np.testing.assert_allclose(res.p["all"], expected, atol=0.06 * expected.max())
    assert compare_adf(res, res)["all"]["integrated_abs_dp"] == 0.0


def test_fcc_first_shell_from_the_rdf():
    """fcc, lattice constant a: 12 neighbours at a/sqrt(2); their 66 pairs make 60 deg (24), 90 (12),
    120 (24) and 180 (6). The default cutoff (first RDF minimum) falls in the gap before a."""
    a, cells = 4.0, 4
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = ((grid[:, None, :] + basis[None]) * a).reshape(-1, 3)
    adf = ADF(frames_of(positions + 0.01, a * cells), bin_width_deg=1.0)
    assert a / np.sqrt(2) < adf.cutoff_A < a
    res = adf.run().results
    weights = {60: 24 / 66, 90: 12 / 66, 120: 24 / 66, 180: 6 / 66}
    for angle, weight in weights.items():
        near = np.abs(res.angle_deg - angle) < 1.0  # the two bins around the exact angle
        assert res.p["all"][near].sum() * 1.0 == pytest.approx(weight, rel=1e-9)
    assert res.mean_neighbors == pytest.approx(12.0)


def test_first_minimum_of_a_smooth_curve():
    r = np.linspace(0, 10, 1001)
    g = 1 + np.exp(-(r - 4) ** 2) * 2 - np.exp(-(r - 5.5) ** 2 / 0.2) * 0.8
    g[r < 3] = 0
    r_min = rdf_first_minimum_A(r, g)
    assert abs(r_min - r[300:][np.argmin(g[400:700]) + 100]) < 0.05


def test_compare_adf_and_json_round_trip(tmp_path):
    edges = np.linspace(0, 180, 91)
    theta = 0.5 * (edges[1:] + edges[:-1])
    p1 = np.where(theta < 90, 1 / 90.0, 0.0)
    p2 = np.where(theta >= 90, 1 / 90.0, 0.0)
    a = ADFResult(theta, edges, {"all": p1}, {"all": 10}, 4.0, 1)
    b = ADFResult(theta, edges, {"all": p2}, {"all": 10}, 4.0, 1)
    metrics = compare_adf(a, b)["all"]
    assert metrics["integrated_abs_dp"] == pytest.approx(2.0)
    assert metrics["mean_angle_error_deg"] == pytest.approx(-90.0)
    a.save_json(tmp_path / "adf.json")
    back = ADFResult.load_json(tmp_path / "adf.json")
    np.testing.assert_allclose(back.p["all"], p1)


def test_bad_arguments():
    frames = frames_of([[1.0, 1, 1], [2.0, 2, 2]], 10.0)
    with pytest.raises(ValueError, match="cutoff_A"):
        ADF(frames, cutoff_A=6.0)
    with pytest.raises(ValueError, match="bin_width_deg"):
        ADF(frames, cutoff_A=3.0, bin_width_deg=0.0)


def test_run_chooses_the_frames(rng):
    """run(start, stop, step) analyses the frames [start:stop:step] (the same as selecting them first)."""
    positions = rng.uniform(0, 12.0, (6, 40, 3))
    frames = frames_of(positions, 12.0)
    adf = ADF(frames, cutoff_A=4.0, bin_width_deg=5.0)
    for start, stop, step in [(2, None, None), (0, 4, 2), (-1, None, None)]:
        got = adf.run(start, stop, step).results
        want = ADF(frames.select(np.arange(6)[slice(start, stop, step)]), cutoff_A=4.0, bin_width_deg=5.0).run().results
        assert got.n_frames == want.n_frames and got.n_angles == want.n_angles
        np.testing.assert_array_equal(got.p["all"], want.p["all"])
    one = ADF(frames, cutoff_A=4.0, bin_width_deg=5.0).run(5).results
    assert one.n_angles["all"] == ADF(frames_of(positions[5], 12.0), cutoff_A=4.0).run().results.n_angles["all"]
