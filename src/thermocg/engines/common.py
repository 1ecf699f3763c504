"""What every engine bridge needs: a standard cell, and a force evaluator with its own skin list.

Engines (OpenMM, LAMMPS) hand our potential the positions they integrate, in their own frame: a
lower-triangular cell (a along x, b in the xy plane) whose tilts are reduced (|b_x| <= a_x / 2,
|c_x| <= a_x / 2, |c_y| <= b_y / 2), with the atoms wrapped into it whenever the engine pleases.
:func:`standard_cell` rotates a thermocg frame into that form (a rigid rotation plus a change of the
lattice basis: the same periodic system); :class:`PotentialEvaluator` turns the engine's positions
and box back into energy, forces and, when asked, the virial, reusing one neighbour list while no
bead moved more than half the skin.

Units here are thermocg's (A, kcal/mol); each engine converts at its own edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from thermocg.frames import Frames
from thermocg.neighbors import check_cutoff_fits, pair_index
from thermocg.potentials.base import Potential, energy_and_forces, energy_forces_virial

__all__ = ["EngineInputError", "StandardCell", "standard_cell", "PotentialEvaluator", "engine_inputs"]


class EngineInputError(ValueError):
    """Input an engine bridge cannot start from (box, bead types, masses, engine setup)."""


@dataclass
class StandardCell:
    """A frame in an engine's standard cell.

    box_A (3, 3) lower triangular, tilts reduced; positions_A (N, 3) in the rotated frame;
    rotation (3, 3) orthogonal with ``box_A = B_input @ rotation`` for some lattice basis B_input of
    the input cell (``positions_A = positions_input @ rotation``): multiply vectors of the engine's
    frame by ``rotation.T`` to return to the input's.
    """

    box_A: np.ndarray
    positions_A: np.ndarray
    rotation: np.ndarray


def standard_cell(box_A: np.ndarray, positions_A: np.ndarray) -> StandardCell:
    """Rotate a cell (rows are cell vectors) and its positions into the engines' standard form.

    The rotation comes from a QR decomposition of box^T (so a stays along x and b in the xy plane,
    with positive diagonal); the tilts are then reduced by integer lattice combinations, which leave
    the periodic system unchanged. A right-handed cell is required (det > 0).
    """
    box = np.asarray(box_A, dtype=np.float64)
    positions = np.asarray(positions_A, dtype=np.float64)
    if box.shape != (3, 3) or not np.all(np.isfinite(box)):
        raise EngineInputError(f"the box must be a finite (3, 3) array of cell vectors, got shape {box.shape}")
    if not np.linalg.det(box) > 0:
        raise EngineInputError("the cell vectors (rows of the box) must form a right-handed cell with positive volume")
    q, r = np.linalg.qr(box.T)
    signs = np.sign(np.diag(r))
    rotation = q * signs  # columns flipped so that the diagonal of the new box is positive
    lower = box @ rotation
    lower[np.abs(lower) < 1e-12 * np.abs(lower).max()] = 0.0
    lower[0, 1:] = 0.0
    lower[1, 2] = 0.0
    a, b, c = lower
    c = c - b * round(c[1] / b[1])
    c = c - a * round(c[0] / a[0])
    b = b - a * round(b[0] / a[0])
    return StandardCell(box_A=np.array([a, b, c]), positions_A=positions @ rotation, rotation=rotation)


def engine_inputs(potential: Potential, frames: Frames, frame_index: int) -> tuple[StandardCell, torch.Tensor]:
    """The standard cell of frame ``frame_index`` and the potential's type indices of the beads,
    with the checks every engine needs (types known to the potential, cutoff fits in the box)."""
    if not isinstance(potential, Potential):
        raise EngineInputError(f"a thermocg Potential is required, got {type(potential).__name__}")
    if not isinstance(frames, Frames) or frames.n_frames < 1:
        raise EngineInputError("a Frames with at least one frame is required")
    if not -frames.n_frames <= frame_index < frames.n_frames:
        raise EngineInputError(f"frame_index {frame_index} is outside the {frames.n_frames} frames")
    try:
        types = potential.type_indices(frames.type_names, frames.types)
    except ValueError as exc:
        raise EngineInputError(f"the potential does not fit the frames: {exc}") from None
    if np.any(np.asarray(frames.masses) <= 0):
        raise EngineInputError("every bead needs a positive mass")
    cell = standard_cell(frames.box[frame_index], frames.positions[frame_index])
    try:
        check_cutoff_fits(potential.cutoff_A, cell.box_A, what="the potential's cutoff")
    except ValueError as exc:
        raise EngineInputError(f"box too small: {exc}") from None
    return cell, types


class PotentialEvaluator:
    """Energy (kcal/mol), forces (kcal/mol/A) and optionally the virial (kcal/mol) of one frame,
    as float64 numpy, for positions an engine may have wrapped into its box at any call.

    The evaluator keeps its own continuous copy of the positions: while the box stays the same, each
    call adds the minimum-image displacement since the previous call (exact while no bead moves half
    a box width between two calls), so an engine's re-wrapping costs nothing. The pair list
    (cutoff + ``skin_A``) is rebuilt when a bead has moved more than half the skin since the last
    build, or the box changed (a barostat move: then the positions are taken as given); at a rebuild
    the positions are wrapped into the box again, so they never drift far from it (float32 models
    keep their precision).

    ``types`` are the potential's type indices of the beads. Counters ``n_calls``, ``n_neighbor_builds``
    and ``n_box_changes`` (calls whose box differed from the previous call's: barostat moves);
    ``last_box_A`` is the box of the latest call (what the potential saw).
    """

    def __init__(self, potential: Potential, types: torch.Tensor | np.ndarray, *, skin_A: float = 1.0) -> None:
        if not (math.isfinite(skin_A) and skin_A >= 0):
            raise EngineInputError(f"skin_A must be non-negative, got {skin_A}")
        self.potential = potential
        self.types = torch.as_tensor(np.asarray(types), dtype=torch.long).to(potential.device)
        self.skin_A = float(skin_A)
        self.n_calls = 0
        self.n_neighbor_builds = 0
        self.n_box_changes = 0
        self.last_box_A: np.ndarray | None = None
        self._previous_input: np.ndarray | None = None
        self._continuous: np.ndarray | None = None
        self._reference: np.ndarray | None = None
        self._pairs = None

    def __call__(self, positions_A: np.ndarray, box_A: np.ndarray, *, virial: bool = False
                 ) -> tuple[float, np.ndarray, np.ndarray | None]:
        positions_A = np.asarray(positions_A, dtype=np.float64)
        box_A = np.asarray(box_A, dtype=np.float64)
        n = len(self.types)
        if positions_A.shape != (n, 3):
            raise EngineInputError(f"expected positions of {n} beads, got an array of shape {positions_A.shape}")
        box_changed = self.last_box_A is None or not np.array_equal(box_A, self.last_box_A)
        if box_changed and self.last_box_A is not None:
            self.n_box_changes += 1
        if self._continuous is None or box_changed:
            # a new box (a barostat move) rebuilds the list anyway; the engine may have wrapped beads
            # with either box, so the displacement is not taken across a box change
            self._continuous = positions_A.copy()
        else:
            step = positions_A - self._previous_input
            frac = step @ np.linalg.inv(box_A)
            self._continuous = self._continuous + (step - np.round(frac) @ box_A)
        self._previous_input = positions_A
        if self._pairs is None or box_changed or self._moved_beyond_half_skin():
            self._rebuild(box_A)
        device, dtype = self.potential.device, torch.float64
        positions = torch.as_tensor(self._continuous, dtype=dtype, device=device)
        box = torch.as_tensor(box_A, dtype=dtype, device=device)
        w = None
        if virial:
            energy, forces, w_t = energy_forces_virial(self.potential, positions, box, self.types, pairs=self._pairs)
            w = w_t[0].cpu().double().numpy()
        else:
            energy, forces = energy_and_forces(self.potential, positions, box, self.types, pairs=self._pairs)
        self.n_calls += 1
        self.last_box_A = box_A.copy()
        return float(energy[0]), forces[0].cpu().double().numpy(), w

    def _moved_beyond_half_skin(self) -> bool:
        displacement = np.linalg.norm(self._continuous - self._reference, axis=1).max(initial=0.0)
        return bool(displacement > 0.5 * self.skin_A)

    def _rebuild(self, box_A: np.ndarray) -> None:
        frac = self._continuous @ np.linalg.inv(box_A)
        self._continuous = (frac - np.floor(frac)) @ box_A
        self._reference = self._continuous.copy()
        device = self.potential.device
        positions = torch.as_tensor(self._continuous[None], dtype=torch.float64, device=device)
        box = torch.as_tensor(box_A[None], dtype=torch.float64, device=device)
        self._pairs = pair_index(positions, box, self.potential.cutoff_A + self.skin_A)
        self.n_neighbor_builds += 1
