"""Neighbour lists against a brute-force search over periodic images."""

import itertools

import numpy as np
import pytest
import torch

from thermocg.neighbors import (
    NeighborList,
    PairIndex,
    build_graph,
    check_cutoff_fits,
    neighbor_pairs,
    pair_index,
    perpendicular_widths,
)


def brute_force(positions, box, cutoff):
    pairs = {}
    for s in itertools.product(range(-2, 3), repeat=3):
        shift = np.array(s) @ box
        d = positions[None, :, :] - positions[:, None, :] + shift
        r = np.linalg.norm(d, axis=-1)
        for i, j in zip(*np.nonzero(r < cutoff)):
            if i == j and s == (0, 0, 0):
                continue
            pairs[(i, j, s)] = r[i, j]
    return pairs


@pytest.mark.parametrize("triclinic", [False, True])
def test_neighbor_pairs_match_brute_force(triclinic, rng):
    box = np.diag([12.0, 13.0, 14.0])
    if triclinic:
        box[1, 0], box[2, 0], box[2, 1] = 3.0, -2.0, 2.5
    positions = rng.uniform(-5, 20, (40, 3))  # partly outside the box on purpose
    cutoff = 0.5 * perpendicular_widths(box).min()
    i, j, s = neighbor_pairs(positions, box, cutoff)
    ours = {(a, b, tuple(c)): np.linalg.norm(positions[b] - positions[a] + c @ box) for a, b, c in zip(i, j, s)}
    ref = brute_force(positions, box, cutoff)
    assert set(ours) == set(ref)
    for key, r in ref.items():
        assert ours[key] == pytest.approx(r, abs=1e-10)


def test_graph_distances_differentiable(rng):
    box = torch.eye(3, dtype=torch.float64) * 10.0
    pos = torch.tensor(rng.uniform(0, 10, (20, 3)), requires_grad=True)
    g = build_graph(pos, box, torch.zeros(20, dtype=torch.long), 4.0)
    g.pair_dist.sum().backward()
    # every pair appears twice with opposite vectors, so the gradient of sum(d) is 2 sum_j rhat_ji
    expected = torch.zeros_like(pos)
    rhat = (g.pair_vec / g.pair_dist[:, None]).detach()
    expected.index_add_(0, g.pair_i, -2 * rhat)
    assert torch.allclose(pos.grad, expected, atol=1e-12)


def test_batched_pairs_grouped_by_frame_sorted_by_i_and_vectors_right(rng):
    box = torch.tensor([[[11.0, 0, 0], [2.0, 12.0, 0], [-1.5, 1.0, 13.0]], [[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]],
                        [[12.0, 0, 0], [0, 12.5, 0], [3.0, 0, 11.0]]], dtype=torch.float64)
    pos = torch.tensor(rng.uniform(0, 10, (3, 25, 3)))
    pairs = pair_index(pos, box, 4.5)
    assert sum(pairs.frame_sizes) == len(pairs.pair_i)
    assert torch.equal(pairs.pair_frame, torch.arange(3).repeat_interleave(torch.tensor(pairs.frame_sizes)))
    assert bool((pairs.pair_i[1:] >= pairs.pair_i[:-1]).all())  # grouped by frame, then sorted by i
    fast = build_graph(pos, box, torch.zeros(25, dtype=torch.long), 4.5, pairs=pairs)
    # the same list without the frame grouping takes the general (gathered-box) path
    general = PairIndex(pairs.pair_i, pairs.pair_j, pairs.shifts, pairs.pair_frame)
    slow = build_graph(pos, box, torch.zeros(25, dtype=torch.long), 4.5, pairs=general)
    assert torch.allclose(fast.pair_vec, slow.pair_vec, atol=1e-12)
    for f in range(3):  # and each frame's distances are those of the one-frame search
        i, j, s = neighbor_pairs(pos[f].numpy(), box[f].numpy(), 4.5)
        ref = np.sort(np.linalg.norm(pos[f].numpy()[j] - pos[f].numpy()[i] + s @ box[f].numpy(), axis=1))
        mine = np.sort(fast.pair_dist[pairs.pair_frame == f].numpy())
        np.testing.assert_allclose(mine, ref, atol=1e-12)


def test_skin_list_reused_then_rebuilt(rng):
    box = torch.eye(3, dtype=torch.float64) * 12.0
    pos = torch.tensor(rng.uniform(0, 12, (30, 3)))
    nl = NeighborList(4.0, skin_A=1.0)
    p1 = nl.get(pos, box)
    p2 = nl.get(pos + 0.3, box)  # moved 0.52 A > skin/2 -> rebuild
    assert nl.n_builds == 2 and p1 is not p2
    p3 = nl.get(pos + 0.35, box)  # 0.087 A from the last build -> reused
    assert p3 is p2 and nl.n_builds == 2
    # the reused list still holds every pair within the cutoff
    g = build_graph(pos + 0.35, box, torch.zeros(30, dtype=torch.long), 4.0, pairs=p3)
    i, j, s = neighbor_pairs((pos + 0.35).numpy(), box.numpy(), 4.0)
    assert int((g.pair_dist < 4.0).sum()) == len(i)


def test_cutoff_larger_than_half_box_is_an_error():
    with pytest.raises(ValueError, match="half the shortest perpendicular box width"):
        check_cutoff_fits(6.0, np.diag([10.0, 20.0, 20.0]))


def test_row_offsets_give_each_particles_pairs(rng):
    box = torch.tensor([[[11.0, 0, 0], [2.0, 12.0, 0], [-1.5, 1.0, 13.0]], [[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]]],
                       dtype=torch.float64)
    pos = torch.tensor(rng.uniform(0, 10, (2, 30, 3)))
    pairs = pair_index(pos, box, 4.5)
    offsets = pairs.row_offsets
    assert offsets.shape == (61,) and offsets[0] == 0 and offsets[-1] == len(pairs.pair_i)
    for k in range(60):
        assert torch.all(pairs.pair_i[offsets[k]:offsets[k + 1]] == k)
    assert torch.equal(offsets[1:] - offsets[:-1], torch.bincount(pairs.pair_i, minlength=60))
    graph = build_graph(pos, box, torch.zeros(30, dtype=torch.long), 4.5, pairs=pairs)
    assert graph.row_offsets is offsets
    # a list of other particles than the graph's is not taken for its layout
    assert build_graph(pos[:, :20], box, torch.zeros(20, dtype=torch.long), 4.5, pairs=pair_index(
        pos[:1], box[:1], 4.5)).row_offsets is None


def test_cartesian_shifts_follow_the_box(rng):
    """The shifts S @ box are kept with the list while the box is unchanged, and recomputed when it changes."""
    box = torch.tensor([[11.0, 0, 0], [2.0, 12.0, 0], [-1.5, 1.0, 13.0]], dtype=torch.float64)
    pos = torch.tensor(rng.uniform(0, 10, (25, 3)))
    pairs = pair_index(pos[None], box[None], 4.0)
    first = pairs.cartesian_shifts(box[None])
    assert pairs.cartesian_shifts(box[None].clone()) is first  # equal box: reused
    for scaled in (box, box * 1.01, box):
        graph = build_graph(pos, scaled, torch.zeros(25, dtype=torch.long), 4.0, pairs=pairs)
        expected = pos[pairs.pair_j] - pos[pairs.pair_i] + pairs.shifts @ scaled
        torch.testing.assert_close(graph.pair_vec, expected, rtol=0, atol=1e-12)


def test_pair_dist_read_first_without_grad_stays_differentiable(rng):
    box = torch.eye(3, dtype=torch.float64) * 10.0
    pos = torch.tensor(rng.uniform(0, 10, (20, 3)), requires_grad=True)
    g = build_graph(pos, box, torch.zeros(20, dtype=torch.long), 4.0)
    with torch.no_grad():
        first = g.pair_dist
    assert first.requires_grad and g.pair_dist is first
    torch.testing.assert_close(first, g.pair_vec.norm(dim=1), rtol=1e-15, atol=0)
    (grad,) = torch.autograd.grad(g.pair_dist.sum(), pos)
    assert grad.abs().max() > 0.1


def test_compiled_pair_vectors_and_their_derivatives(rng):
    """The compiled pair-vector kernel (used by build_graph where it is available) equals the PyTorch
    gather, with and without CSR offsets; gradcheck/gradgradcheck of it and of its adjoint."""
    from thermocg import neighbors
    from thermocg._ext import hipnn_ops

    ops = hipnn_ops(warn=False)
    if ops is None:
        pytest.skip("the compiled kernels are unavailable")
    box = torch.tensor([[11.0, 0, 0], [2.0, 12.0, 0], [-1.5, 1.0, 13.0]], dtype=torch.float64)
    pos = torch.tensor(rng.uniform(0, 11, (40, 3)), requires_grad=True)
    pairs = pair_index(pos.detach()[None], box[None], 5.0)
    shifts = pairs.cartesian_shifts(box[None])
    reference = torch.index_select(pos, 0, pairs.pair_j) - torch.index_select(pos, 0, pairs.pair_i) + shifts
    weights = torch.tensor(rng.normal(size=reference.shape))
    (expected,) = torch.autograd.grad((reference * weights).sum(), pos)
    for offsets in (pairs.row_offsets, None):
        gather = neighbors._PairGather(ops, pairs.pair_i, pairs.pair_j, offsets, 40)
        vec = neighbors._PairVectors.apply(pos, shifts, gather)
        torch.testing.assert_close(vec, reference, rtol=0, atol=1e-14)
        (grad,) = torch.autograd.grad((vec * weights).sum(), pos)
        torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)
    small = pair_index(pos.detach()[None, :8], box[None], 5.0)
    gather = neighbors._PairGather(ops, small.pair_i, small.pair_j, small.row_offsets, 8)
    inputs = (pos.detach()[:8].clone().requires_grad_(True), torch.randn(len(small.pair_i), 3, dtype=torch.float64,
                                                                      requires_grad=True))
    function = lambda p, s: neighbors._PairVectors.apply(p, s, gather)  # noqa: E731
    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)
    # build_graph takes the compiled path here (and the same numbers as the gather above)
    graph = build_graph(pos, box, torch.zeros(40, dtype=torch.long), 5.0, pairs=pairs)
    assert graph.pair_vec.grad_fn.name().endswith("_PairVectorsBackward")
    torch.testing.assert_close(graph.pair_vec, reference, rtol=0, atol=1e-14)


def test_cached_shifts_are_not_reused_for_a_box_that_carries_a_gradient():
    """The shift cache must not hand a constant to a strained box (the virial's derivative)."""
    import torch

    from thermocg.neighbors import build_graph, pair_index

    rng = np.random.default_rng(3)
    box = torch.eye(3, dtype=torch.float64)[None] * 8.0
    positions = torch.as_tensor(rng.uniform(0, 8, (1, 40, 3)))
    types = torch.zeros(40, dtype=torch.long)
    pairs = pair_index(positions, box, 3.0)
    build_graph(positions, box, types, 3.0, pairs=pairs)  # fills the cache with a constant box
    grad_box = box.clone().requires_grad_(True)
    graph = build_graph(positions, grad_box, types, 3.0, pairs=pairs)
    (graph.pair_vec.sum()).backward()
    crossing = (pairs.shifts != 0).any()
    assert crossing  # some pairs cross the boundary, so the box enters their vectors
    expected = pairs.shifts.sum(0).reshape(3, 1) * torch.ones(1, 3, dtype=torch.float64)
    torch.testing.assert_close(grad_box.grad[0], expected)
