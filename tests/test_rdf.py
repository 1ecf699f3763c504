"""RDF: against freud on the same frames, an ideal gas, bad input, comparisons and the stage."""

import json

import numpy as np
import pytest

from helpers import lj_fluid
from thermocg.analysis.rdf import RDF, RDFResult, compare_rdf, first_peak, plot_rdfs, rdf_onset_A, run_rdf
from thermocg.frames import Frames, StatePoint


def two_type_frames(rng, n_frames=3, triclinic=True):
    positions, boxes = [], []
    for _ in range(n_frames):
        pos, box = lj_fluid(64, 0.02, rng=rng, triclinic=triclinic)
        positions.append(pos)
        boxes.append(box)
    types = np.array([0, 1] * 32)
    return Frames(positions=np.array(positions), box=np.array(boxes), types=types, type_names=("A", "B"),
                  masses=np.ones(64), state=StatePoint(300.0, density_g_cm3=0.8))


def freud_rdf(points, box, bins, r_max, query=None, mode="exact"):
    import freud

    fbox = freud.box.Box.from_matrix(box.T)  # freud: columns are the cell vectors
    rdf = freud.density.RDF(bins=bins, r_max=r_max, normalization_mode=mode)
    # freud wants positions in its centred box: shift by half the cell diagonal
    shift = 0.5 * box.sum(axis=0)
    pts = (points - shift).astype(np.float64)
    qp = None if query is None else (query - shift).astype(np.float64)
    rdf.compute(system=(fbox, pts), query_points=qp, reset=True)
    return np.asarray(rdf.bin_centers), np.asarray(rdf.rdf), np.asarray(rdf.bin_counts, dtype=np.float64)


@pytest.mark.parametrize("triclinic", [False, True])
def test_rdf_matches_freud(rng, triclinic):
    """Same pair histograms as freud exactly; g to freud's float32 precision."""
    frames = two_type_frames(rng, triclinic=triclinic)
    r_max = 0.45 * float(np.min(np.abs(np.diag(frames.box[0]))))
    result = RDF(frames, r_max_A=r_max, bin_width_A=0.25).run().results
    n_bins = len(result.r_A)
    ref = {"A-A": [], "B-B": [], "A-B": []}
    counts = {"A-A": 0, "B-B": 0, "A-B": 0}
    for f in range(frames.n_frames):
        pos, box = frames.positions[f], frames.box[f]
        a, b = pos[frames.types == 0], pos[frames.types == 1]
        for pair, (pts, query, mode) in {"A-A": (a, None, "finite_size"), "B-B": (b, None, "finite_size"),
                                         "A-B": (b, a, "exact")}.items():
            centres, g, n = freud_rdf(pts, box, n_bins, r_max, query=query, mode=mode)
            ref[pair].append(g)
            counts[pair] = counts[pair] + n
        np.testing.assert_allclose(result.r_A, centres, atol=1e-6)
    for pair, gs in ref.items():
        np.testing.assert_allclose(result.counts[pair] * frames.n_frames, counts[pair], rtol=0, atol=1e-9)
        np.testing.assert_allclose(result.g[pair], np.mean(gs, axis=0), atol=1e-5, rtol=4e-6)  # freud: float32
    assert result.g["A-A"].max() > 1.5  # a real structure was compared, not zeros


@pytest.mark.parametrize("triclinic", [False, True])
def test_rdf_matches_mdanalysis(rng, triclinic):
    """Same g(r) as MDAnalysis InterRDF to 1e-6 (its A-A normalisation excludes self pairs too)."""
    import MDAnalysis as mda
    from MDAnalysis.analysis.rdf import InterRDF
    from MDAnalysis.coordinates.memory import MemoryReader
    from MDAnalysis.lib.mdamath import triclinic_box, triclinic_vectors

    frames = two_type_frames(rng, n_frames=4, triclinic=triclinic)
    n = frames.n_particles
    dims = np.array([triclinic_box(*b) for b in frames.box], dtype=np.float32)
    u = mda.Universe.empty(n, trajectory=False)
    u.load_new(frames.positions.astype(np.float32), format=MemoryReader, dimensions=dims)
    # ours on exactly the float32 coordinates and the box MDAnalysis rebuilds from its dimensions
    same = Frames(positions=frames.positions.astype(np.float32).astype(np.float64),
                  box=np.array([triclinic_vectors(d) for d in dims], dtype=np.float64),
                  types=frames.types, type_names=frames.type_names, masses=frames.masses)
    r_max = 0.45 * float(np.min(np.abs(np.diag(frames.box[0]))))
    result = RDF(same, r_max_A=r_max, bin_width_A=0.2).run().results
    n_bins = len(result.r_A)
    a, b = u.atoms[frames.types == 0], u.atoms[frames.types == 1]
    for pair, (g1, g2, block) in {"A-A": (a, a, (1, 1)), "B-B": (b, b, (1, 1)), "A-B": (a, b, None)}.items():
        ref = InterRDF(g1, g2, nbins=n_bins, range=(0.0, r_max), exclusion_block=block).run()
        np.testing.assert_allclose(result.r_A, ref.results.bins, atol=1e-9)
        np.testing.assert_allclose(result.g[pair], ref.results.rdf, rtol=1e-6, atol=1e-9)


def test_unwrapped_positions_give_the_same_rdf(rng):
    """MD trajectories are not re-wrapped: particles moved by lattice vectors change nothing."""
    frames = two_type_frames(rng, n_frames=2)
    shifted = Frames(positions=frames.positions + rng.integers(-3, 4, size=(64, 3)) @ frames.box[0],
                     box=frames.box, types=frames.types, type_names=frames.type_names, masses=frames.masses)
    a = RDF(frames, bin_width_A=0.2).run().results
    b = RDF(shifted, bin_width_A=0.2).run().results
    for pair in a.g:
        np.testing.assert_allclose(b.g[pair], a.g[pair], atol=1e-12)
    assert a.counts["A-B"].sum() > 10


def test_ideal_gas_gives_one(rng):
    n, length, n_frames = 400, 20.0, 40
    box = np.array([[length, 0, 0], [3.0, length, 0], [-2.0, 4.0, length]])
    frac = rng.uniform(size=(n_frames, n, 3))
    types = np.zeros(n, dtype=np.int64)
    types[::4] = 1
    frames = Frames(positions=frac @ box, box=box, types=types, type_names=("X", "Y"), masses=np.ones(n))
    result = RDF(frames, bin_width_A=0.5).run().results
    assert result.r_max_A == pytest.approx(0.5 * min(np.abs(np.linalg.det(box)) / np.linalg.norm(np.cross(box[1], box[2])),
                                                     length), rel=0.05)
    for pair, g in result.g.items():
        far = result.r_A > 3.0  # enough pairs per shell for a 5% noise bound
        expected_pairs = result.counts[pair][far]
        noise = 4.0 / np.sqrt(expected_pairs * n_frames)
        assert np.all(np.abs(g[far] - 1.0) < noise), pair
        assert abs(np.average(g[far], weights=expected_pairs) - 1.0) < 0.01, pair


def test_rdf_rejects_r_max_beyond_half_box(rng):
    frames = two_type_frames(rng, n_frames=1)
    half = 0.5 * min(np.abs(np.linalg.det(frames.box[0])) / np.linalg.norm(np.cross(frames.box[0][1], frames.box[0][2])),
                     1e9)
    with pytest.raises(ValueError, match="half the shortest perpendicular"):
        RDF(frames, r_max_A=half * 1.2)
    with pytest.raises(ValueError, match="bin_width_A"):
        RDF(frames, bin_width_A=0.0)


def test_compare_onset_and_peak():
    r = np.linspace(0.05, 9.95, 100)
    edges = np.linspace(0, 10, 101)
    g_ref = np.where(r < 3.0, 0.0, 1.0 + 1.5 * np.exp(-((r - 4.05) ** 2) / 0.1))
    g = np.where(r < 3.2, 0.0, 1.0 + 1.2 * np.exp(-((r - 4.35) ** 2) / 0.1))
    ref = RDFResult(r_A=r, edges_A=edges, g={"A-A": g_ref}, counts={}, n_frames=1)
    res = RDFResult(r_A=r, edges_A=edges, g={"A-A": g}, counts={}, n_frames=1)
    assert first_peak(r, g_ref) == pytest.approx((4.05, 2.5))
    metrics = compare_rdf(res, ref)["A-A"]
    assert metrics["peak_position_error_A"] == pytest.approx(0.3, abs=1e-9)
    assert metrics["peak_height_error"] == pytest.approx(-0.3)
    assert metrics["mean_abs_dg"] == pytest.approx(np.mean(np.abs(g - g_ref)))
    assert compare_rdf(ref, ref)["A-A"]["mean_abs_dg"] == 0.0
    onset = rdf_onset_A(ref, threshold=0.01)
    assert onset["A-A"] == pytest.approx(3.05)  # the centre of the first bin above the threshold
    # the JSON round trip keeps every array
    back = RDFResult.from_dict(json.loads(json.dumps(res.to_dict())))
    np.testing.assert_array_equal(back.g["A-A"], g)


def test_run_rdf_writes_json_and_png(tmp_path, rng):
    from thermocg.config import Config
    from thermocg.dataset import write_frames

    frames = two_type_frames(rng, n_frames=2)
    write_frames(frames, tmp_path / "cg" / f"{frames.state.label}.h5md", kind="cg")
    config = Config()
    config.rdf.bin_width_A = 0.2
    outputs = run_rdf(config, tmp_path, progress=False)
    assert [p.name for p in outputs] == [f"{frames.state.label}.json"]
    saved = RDFResult.load_json(outputs[0])
    direct = RDF(frames, bin_width_A=0.2).run().results
    np.testing.assert_allclose(saved.g["A-B"], direct.g["A-B"])
    assert outputs[0].with_suffix(".png").stat().st_size > 1000
    assert not list(tmp_path.rglob("*.partial*"))
    with pytest.raises(FileNotFoundError, match="no CG dataset"):
        run_rdf(config, tmp_path, state=["T1_rho1"], progress=False)
    fig = plot_rdfs({"a": saved, "b": direct}, reference="a")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 3


def test_run_chooses_the_frames(rng, tmp_path):
    """run(start, stop, step) analyses the frames [start:stop:step], in memory or from an H5MD file; the
    default r_max is half the shortest box width of the selected frames only."""
    from thermocg.dataset import write_frames

    frames = two_type_frames(rng, n_frames=5)
    scale = np.array([0.8, 1.0, 1.0, 1.0, 1.0])  # frame 0 in a smaller box
    frames = Frames(positions=frames.positions * scale[:, None, None], box=frames.box * scale[:, None, None],
                    types=frames.types, type_names=frames.type_names, masses=frames.masses)
    path = write_frames(frames, tmp_path / "frames.h5md", kind="cg")
    for source in (frames, path):
        rdf = RDF(source, bin_width_A=0.2)
        for start, stop, step in [(1, 4, None), (None, None, 2), (3, None, None), (-2, None, None), (1, None, 3)]:
            got = rdf.run(start, stop, step).results
            want = RDF(frames.select(np.arange(5)[slice(start, stop, step)]), bin_width_A=0.2).run().results
            assert got.n_frames == want.n_frames == len(range(5)[slice(start, stop, step)])
            np.testing.assert_array_equal(got.edges_A, want.edges_A)
            for pair in want.g:
                np.testing.assert_array_equal(got.g[pair], want.g[pair])
    whole = RDF(frames, bin_width_A=0.2).run().results
    later = RDF(frames, bin_width_A=0.2).run(start=1).results
    assert later.r_max_A == pytest.approx(whole.r_max_A / 0.8)
    with pytest.raises(ValueError, match="step must be >= 1"):
        RDF(frames).run(step=0)
    with pytest.raises(ValueError, match="no frames selected"):
        RDF(frames).run(4, 2)
