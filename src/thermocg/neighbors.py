"""Periodic neighbour lists and the batched pair graph every potential consumes.

The search itself is vesin's O(N) cell list (C++, triclinic boxes, any cutoff); thermocg keeps only
the integer result (pair indices ``i, j`` and integer cell shifts ``S``) and recomputes the pair
vectors in torch,

    r_ij = R_j - R_i + S_ij @ box          (box rows are the cell vectors)

so that distances are differentiable with respect to positions. The list is a *full* list: both
(i, j) and (j, i) appear. A list built with a skin (cutoff + skin) stays valid while no particle has
moved more than skin/2 since the build, as long as positions are not re-wrapped into the box in
between (the shifts S were computed for the positions as they were).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "Graph",
    "NeighborList",
    "build_graph",
    "neighbor_pairs",
    "perpendicular_widths",
    "check_cutoff_fits",
]


def perpendicular_widths(box: np.ndarray) -> np.ndarray:
    """The three perpendicular widths of a cell (rows are cell vectors), A: V / |b x c| etc."""
    box = np.asarray(box, dtype=np.float64)
    volume = abs(np.linalg.det(box))
    a, b, c = box
    return volume / np.array(
        [np.linalg.norm(np.cross(b, c)), np.linalg.norm(np.cross(c, a)), np.linalg.norm(np.cross(a, b))]
    )


def check_cutoff_fits(cutoff_A: float, box: np.ndarray, *, what: str = "cutoff") -> None:
    """Raise ValueError unless ``cutoff_A`` is at most half the shortest perpendicular box width.

    Beyond that a particle would interact with two images of the same neighbour, which a
    minimum-image model (and the reference study) does not intend.
    """
    boxes = np.asarray(box, dtype=np.float64).reshape(-1, 3, 3)
    half = min(perpendicular_widths(b).min() for b in boxes) / 2.0
    if cutoff_A > half + 1e-9:
        digits = 3  # enough decimals that the two numbers printed differ
        while digits < 12 and f"{cutoff_A:.{digits}f}" == f"{half:.{digits}f}":
            digits += 1
        raise ValueError(
            f"{what} {cutoff_A:.{digits}f} A is larger than half the shortest perpendicular box width "
            f"({half:.{digits}f} A); use a larger box or a smaller cutoff"
        )


def neighbor_pairs(positions: np.ndarray, box: np.ndarray, cutoff_A: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs (i, j), i != j, with |R_j - R_i + S @ box| < cutoff_A, for one frame.

    Returns ``i`` (P,) int64, ``j`` (P,) int64, ``S`` (P, 3) int64 cell shifts.
    """
    import vesin

    positions = np.ascontiguousarray(positions, dtype=np.float64)
    box = np.ascontiguousarray(box, dtype=np.float64)
    nl = vesin.NeighborList(cutoff=float(cutoff_A), full_list=True)
    i, j, shifts = nl.compute(points=positions, box=box, periodic=True, quantities="ijS")
    return i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64)


@dataclass
class Graph:
    """Particles of a batch of frames, flattened, with their neighbour pairs.

    positions : (n_frames * n_particles, 3) A, a view of the (n_frames, n_particles, 3) input
    types     : (n_frames * n_particles,) int64 type index per particle
    batch     : (n_frames * n_particles,) int64 frame index per particle
    pair_i, pair_j : (P,) int64 flattened particle indices; messages flow j -> i
    pair_vec  : (P, 3) A, R_j - R_i + shift, differentiable with respect to positions
    pair_dist : (P,) A, |pair_vec| (computed on first use, so models that do not need it skip it)
    row_offsets : (n_frames * n_particles + 1,) int64 or None; when set, the pairs are sorted by i
        and those of particle k are ``row_offsets[k]:row_offsets[k + 1]`` (a CSR layout; kept with
        the :class:`PairIndex` between list rebuilds, so models need not sort or count per call)
    The list may hold pairs beyond a potential's cutoff (a skin); potentials must give them
    exactly zero weight.
    """

    positions: torch.Tensor
    types: torch.Tensor
    batch: torch.Tensor
    n_frames: int
    n_particles: int
    pair_i: torch.Tensor
    pair_j: torch.Tensor
    pair_vec: torch.Tensor
    row_offsets: torch.Tensor | None = None
    _pair_dist: torch.Tensor | None = field(default=None, repr=False)

    @property
    def pair_dist(self) -> torch.Tensor:
        if self._pair_dist is None:
            # kept for every later user, so it must carry the autograd graph whenever pair_vec does,
            # even when the first user asks for it under no_grad
            with torch.enable_grad():
                self._pair_dist = torch.linalg.vector_norm(self.pair_vec, dim=1)
        return self._pair_dist

    def frame_sum(self, per_particle: torch.Tensor) -> torch.Tensor:
        """Sum a (n_frames * n_particles,) quantity per frame -> (n_frames,)."""
        return per_particle.reshape(self.n_frames, self.n_particles).sum(dim=1)


@dataclass
class PairIndex:
    """Integer part of a batched neighbour list: flattened indices and Cartesian-free shifts."""

    pair_i: torch.Tensor
    pair_j: torch.Tensor
    shifts: torch.Tensor  # (P, 3) integer cell shifts, as the positions' dtype
    pair_frame: torch.Tensor  # (P,) frame index of each pair
    #: pairs per frame when the pairs are grouped frame by frame (as :func:`pair_index` makes them)
    frame_sizes: tuple[int, ...] | None = None
    #: (n_frames * n_particles + 1,) CSR offsets when the pairs are sorted by i (see :class:`Graph`)
    row_offsets: torch.Tensor | None = None
    #: (box, shifts @ box) of the last build_graph with a constant box (reused while the box is unchanged)
    _shift_cache: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def cartesian_shifts(self, box: torch.Tensor) -> torch.Tensor:
        """(P, 3) A, S @ box of every pair; box (n_frames, 3, 3). Kept while the box stays the same."""
        cache = self._shift_cache
        # a box that carries a gradient (a strain, for the virial) must get shifts that carry it too
        if cache is not None and not box.requires_grad and cache[0].dtype == box.dtype and cache[0].shape == box.shape \
                and cache[0].device == box.device and torch.equal(cache[0], box):
            return cache[1]
        shifts = self.shifts.to(box.dtype)
        if self.frame_sizes is not None and len(self.frame_sizes) == box.shape[0]:
            # one small product per frame instead of a (P, 3, 3) gather of the boxes; (box^T S^T)^T is
            # several times faster on CPU than S @ box with its inner dimension of 3
            cart = torch.cat([(box[f].T @ block.T).T for f, block in enumerate(shifts.split(list(self.frame_sizes)))])
        else:
            cart = torch.einsum("pk,pkl->pl", shifts, box[self.pair_frame])
        if not box.requires_grad:
            self._shift_cache = (box.detach().clone(), cart)
        return cart


def pair_index(positions: torch.Tensor, box: torch.Tensor, cutoff_A: float) -> PairIndex:
    """Neighbour pairs of every frame of a batch, indices offset into the flattened particles.

    Pairs are grouped frame by frame and, within a frame, sorted by ``i`` (stable), the layout the
    models' per-bead pair blocks want; sorting once here spares them a sort per evaluation.
    """
    n_frames, n_particles, _ = positions.shape
    pos_np = positions.detach().cpu().to(torch.float64).numpy()
    box_np = box.detach().cpu().to(torch.float64).numpy()
    parts_i, parts_j, parts_s, parts_f = [], [], [], []
    for f in range(n_frames):
        i, j, s = neighbor_pairs(pos_np[f], box_np[f], cutoff_A)
        if len(i) > 1 and not bool(np.all(i[1:] >= i[:-1])):  # vesin often returns them sorted already
            order = np.argsort(i, kind="stable")
            i, j, s = i[order], j[order], s[order]
        parts_i.append(i + f * n_particles)
        parts_j.append(j + f * n_particles)
        parts_s.append(s)
        parts_f.append(np.full(len(i), f, dtype=np.int64))
    device = positions.device
    pair_i = np.concatenate(parts_i)
    offsets = np.zeros(n_frames * n_particles + 1, dtype=np.int64)
    np.cumsum(np.bincount(pair_i, minlength=n_frames * n_particles), out=offsets[1:])
    return PairIndex(
        pair_i=torch.from_numpy(pair_i).to(device),
        pair_j=torch.from_numpy(np.concatenate(parts_j)).to(device),
        shifts=torch.from_numpy(np.concatenate(parts_s)).to(device=device, dtype=positions.dtype),
        pair_frame=torch.from_numpy(np.concatenate(parts_f)).to(device),
        frame_sizes=tuple(len(part) for part in parts_i),
        row_offsets=torch.from_numpy(offsets).to(device),
    )


class _PairGather:
    """The constant part of the pair-vector map: indices, CSR offsets (or empty), compiled kernels."""

    def __init__(self, ops, pair_i: torch.Tensor, pair_j: torch.Tensor, offsets: torch.Tensor | None,
                 n_particles: int) -> None:
        self.ops, self.pair_i, self.pair_j, self.n_particles = ops, pair_i, pair_j, n_particles
        self.offsets = offsets if offsets is not None else pair_i.new_empty(0)


class _PairVectors(torch.autograd.Function):
    """r_p = R[j_p] - R[i_p] + shift_p by the compiled kernel; its backward (the adjoint, a per-row sum
    and a scatter) is a differentiable Function too, so forces built with create_graph can be trained."""

    @staticmethod
    def forward(ctx, positions, shift, gather):  # noqa: D102 - documented on the class
        ctx.gather = gather
        ctx.has_shift = shift is not None
        empty = positions.new_empty(0)
        return gather.ops.pair_vectors(positions, gather.pair_i, gather.pair_j, shift if shift is not None else empty)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        grad_positions = _PairVectorsAdjoint.apply(grad, ctx.gather) if ctx.needs_input_grad[0] else None
        grad_shift = grad if ctx.has_shift and ctx.needs_input_grad[1] else None
        return grad_positions, grad_shift, None


class _PairVectorsAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, gather):  # noqa: D102
        ctx.gather = gather
        return gather.ops.pair_vectors_adjoint(grad, gather.pair_i, gather.pair_j, gather.offsets, gather.n_particles)

    @staticmethod
    def backward(ctx, up):  # noqa: D102
        return _PairVectors.apply(up, None, ctx.gather), None


def _pair_vector_kernels(positions: torch.Tensor):
    """The compiled pair-vector kernels for CPU float32/float64 tensors, else None (no warning here:
    the potentials that profit most say so themselves)."""
    if positions.device.type != "cpu" or positions.dtype not in (torch.float32, torch.float64):
        return None
    from thermocg._ext import hipnn_ops

    return hipnn_ops(warn=False)


def build_graph(positions: torch.Tensor, box: torch.Tensor, types: torch.Tensor, cutoff_A: float,
                *, pairs: PairIndex | None = None) -> Graph:
    """The pair graph of a batch of frames.

    positions (n_frames, n_particles, 3) or (n_particles, 3); box (n_frames, 3, 3) or (3, 3);
    types (n_particles,). ``pairs`` reuses a list built earlier (e.g. by :class:`NeighborList`).
    """
    if positions.dim() == 2:
        positions = positions.unsqueeze(0)
    n_frames, n_particles, _ = positions.shape
    box = box.to(positions.dtype)
    if box.dim() == 2:
        box = box.unsqueeze(0).expand(n_frames, 3, 3)
    if pairs is None:
        pairs = pair_index(positions, box, cutoff_A)
    flat = positions.reshape(n_frames * n_particles, 3)
    shift_cart = pairs.cartesian_shifts(box)
    offsets = pairs.row_offsets if pairs.row_offsets is not None and len(pairs.row_offsets) == len(flat) + 1 else None
    ops = _pair_vector_kernels(flat)
    if ops is not None:
        vec = _PairVectors.apply(flat, shift_cart, _PairGather(ops, pairs.pair_i, pairs.pair_j, offsets, len(flat)))
    else:
        # index_select (backward: index_add) is several times faster on CPU than advanced indexing
        vec = torch.index_select(flat, 0, pairs.pair_j) - torch.index_select(flat, 0, pairs.pair_i) + shift_cart
    types = types.to(device=positions.device, dtype=torch.long)
    return Graph(
        positions=flat,
        types=types.repeat(n_frames),
        batch=torch.arange(n_frames, device=positions.device).repeat_interleave(n_particles),
        n_frames=n_frames,
        n_particles=n_particles,
        pair_i=pairs.pair_i,
        pair_j=pairs.pair_j,
        pair_vec=vec,
        row_offsets=offsets,
    )


class NeighborList:
    """A skin neighbour list for MD: rebuilt only when a particle moved more than skin/2.

    ``get(positions, box)`` returns a :class:`PairIndex` valid for ``cutoff_A`` at these positions.
    Positions must not be re-wrapped into the box between rebuilds.
    """

    def __init__(self, cutoff_A: float, skin_A: float = 1.0) -> None:
        if cutoff_A <= 0 or skin_A < 0:
            raise ValueError("neighbour list: cutoff_A must be positive and skin_A non-negative")
        self.cutoff_A = float(cutoff_A)
        self.skin_A = float(skin_A)
        self._reference: torch.Tensor | None = None
        self._box: torch.Tensor | None = None
        self._pairs: PairIndex | None = None
        self.n_builds = 0

    def get(self, positions: torch.Tensor, box: torch.Tensor) -> PairIndex:
        if positions.dim() == 2:
            positions = positions.unsqueeze(0)
        if box.dim() == 2:
            box = box.unsqueeze(0).expand(positions.shape[0], 3, 3)
        positions = positions.detach()
        box = box.detach()
        if self._needs_rebuild(positions, box):
            self._pairs = pair_index(positions, box, self.cutoff_A + self.skin_A)
            self._reference = positions.clone()
            self._box = box.clone()
            self.n_builds += 1
        return self._pairs

    def _needs_rebuild(self, positions: torch.Tensor, box: torch.Tensor) -> bool:
        if self._pairs is None or self._reference is None or self._reference.shape != positions.shape:
            return True
        if not torch.equal(self._box, box):
            return True
        max_disp = torch.linalg.vector_norm(positions - self._reference, dim=-1).max()
        return bool(max_disp > 0.5 * self.skin_A)
