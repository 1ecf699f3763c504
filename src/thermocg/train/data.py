"""Training data: each state point's frames validated, strided and split into time blocks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from thermocg.config import TrainConfig
from thermocg.frames import Frames, FramesError, check_positions_in_range


class TrainError(ValueError):
    """Training data or settings that cannot work; the message names the state/key and the problem."""


class TrainWarning(UserWarning):
    """Training that finished but may not have converged (stopped at max_epochs while improving)."""


def split_indices(n_frames: int, fractions: tuple[float, float, float] | list[float] = (0.8, 0.1, 0.1), *,
                  n_blocks: int = 1, where: str = "dataset") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame indices (train, validation, test) by contiguous time segments.

    The ``n_frames`` frames are cut into ``n_blocks`` equal contiguous blocks; block k, frames
    [a, b), gives train [a, a + round(m f0)), validation up to a + round(m (f0 + f1)), test the rest
    (m = b - a). With one block: the first 80% train, the next 10% validate, the last 10% test.
    Raises :class:`TrainError` when the training or validation part would be empty (or the test
    part, when its fraction is not zero).
    """
    f_train, f_val, f_test = (float(f) for f in fractions)
    if n_blocks < 1:
        raise TrainError(f"{where}: n_blocks must be at least 1, got {n_blocks}")
    edges = np.linspace(0, n_frames, n_blocks + 1).round().astype(int)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for a, b in zip(edges[:-1], edges[1:]):
        m = b - a
        cut1 = a + int(round(m * f_train))
        cut2 = a + int(round(m * (f_train + f_val)))
        for part, (lo, hi) in zip(parts, ((a, cut1), (cut1, cut2), (cut2, b))):
            part.append(np.arange(lo, hi, dtype=np.int64))
    train, val, test = (np.concatenate(p) if p else np.zeros(0, np.int64) for p in parts)
    for name, idx, frac in (("training", train, f_train), ("validation", val, f_val), ("test", test, f_test)):
        if frac > 0 and len(idx) == 0:
            raise TrainError(
                f"{where}: the {name} split is empty ({n_frames} frames, {n_blocks} block(s), split "
                f"{[f_train, f_val, f_test]}); give more frames, fewer blocks or a larger fraction"
            )
    return train, val, test


@dataclass
class StateData:
    """One state point's frames, validated, strided and split.

    positions, forces (n_frames, n_beads, 3) A, kcal/mol/A; box (n_frames, 3, 3) A; types (n_beads,)
    indices into ``type_names`` (the state's own names after :func:`prepare_states`, the model's
    after :meth:`for_model`); train/val/test: frame indices; sha256: the hash of the (strided)
    frames, which the resume check compares; temperature_K: the state point's temperature (None
    without a state point); potential_energy: (n_frames,) kcal/mol, the all-atom potential energy of
    each frame, or None (hashed when present).
    """

    label: str
    positions: np.ndarray
    forces: np.ndarray
    box: np.ndarray
    types: np.ndarray
    type_names: tuple[str, ...]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    sha256: str
    temperature_K: float | None = None
    potential_energy: np.ndarray | None = None

    def frames(self, part: str) -> Frames:
        """The ``part`` ("train", "val", "test") frames as :class:`Frames` (unit masses)."""
        idx = getattr(self, part)
        return Frames(positions=self.positions[idx], box=self.box[idx], forces=self.forces[idx],
                      types=self.types, type_names=self.type_names, masses=np.ones(len(self.types)))

    def for_model(self, type_names: Sequence[str]) -> "StateData":
        """The same frames with ``types`` re-indexed into a model's ``type_names``."""
        type_names = tuple(type_names)
        unknown = [n for n in self.type_names if n not in type_names]
        if unknown:
            raise TrainError(f"training data, state {self.label}: bead types {unknown} unknown to the model "
                             f"(it knows {list(type_names)})")
        lookup = np.array([type_names.index(n) for n in self.type_names], dtype=np.int64)
        return dataclasses.replace(self, types=lookup[self.types], type_names=type_names)


def _data_hash(positions: np.ndarray, forces: np.ndarray, box: np.ndarray, types: np.ndarray,
               type_names: tuple[str, ...], potential_energy: np.ndarray | None = None) -> str:
    h = hashlib.sha256()
    for array in (positions, forces, box, types):
        h.update(np.ascontiguousarray(array).tobytes())
    h.update(json.dumps(list(type_names)).encode())
    if potential_energy is not None:
        h.update(b"potential_energy")
        h.update(np.ascontiguousarray(potential_energy).tobytes())
    return h.hexdigest()


def _label(frames: Frames, k: int) -> str:
    return frames.state.label if frames.state is not None else f"state{k}"


def _check_frames(frames: Frames, where: str) -> None:
    """Everything force matching needs of one state's frames, or a TrainError naming the state."""
    if not isinstance(frames, Frames):
        raise TrainError(f"{where}: expected thermocg.frames.Frames, got {type(frames).__name__}")
    if frames.forces is None:
        raise TrainError(f"{where}: the frames carry no forces; force matching needs the mapped forces")
    if frames.forces.shape != frames.positions.shape:
        raise TrainError(f"{where}: forces shape {frames.forces.shape} != positions shape {frames.positions.shape}")
    if frames.box.shape != (frames.n_frames, 3, 3):
        raise TrainError(f"{where}: box shape {frames.box.shape}, expected ({frames.n_frames}, 3, 3)")
    if frames.types.shape != (frames.n_particles,):
        raise TrainError(f"{where}: types shape {frames.types.shape}, expected ({frames.n_particles},)")
    for name in ("positions", "forces", "box"):
        array = getattr(frames, name)
        if not np.all(np.isfinite(array)):
            bad = tuple(int(b) for b in np.argwhere(~np.isfinite(array))[0])
            raise TrainError(f"{where}: {name} hold NaN or inf (first at index {bad})")
    if frames.n_particles < 2:
        raise TrainError(f"{where}: at least two beads are needed, got {frames.n_particles}")
    try:
        check_positions_in_range(frames.positions, frames.box)
    except FramesError as exc:
        source = frames.metadata.get("source") if isinstance(frames.metadata, dict) else None
        raise TrainError(f"{where}{f' ({source})' if source else ''}: {exc}") from None


def prepare_states(frames_list: Frames | Sequence[Frames], config: TrainConfig) -> list[StateData]:
    """Validate each state's frames (once), keep every ``frame_stride``-th frame, split by time blocks.

    Returns one :class:`StateData` per state point, types indexing the state's own type names;
    labels are the state points' (``state<k>`` without one; a repeated label gets ``_<k>``).
    """
    if isinstance(frames_list, Frames):
        frames_list = [frames_list]
    frames_list = list(frames_list)
    if not frames_list:
        raise TrainError("no training frames: the list of state points is empty")
    states: list[StateData] = []
    labels: set[str] = set()
    stride = slice(None, None, config.frame_stride)
    for k, frames in enumerate(frames_list):
        where = f"training data, state {_label(frames, k) if isinstance(frames, Frames) else k}"
        _check_frames(frames, where)
        label = _label(frames, k)
        if label in labels:
            label = f"{label}_{k}"
        labels.add(label)
        positions, forces, box = frames.positions[stride], frames.forces[stride], frames.box[stride]
        energy = None if frames.potential_energy_kcal_mol is None else frames.potential_energy_kcal_mol[stride]
        train, val, test = split_indices(len(positions), config.split, n_blocks=config.n_blocks, where=where)
        states.append(StateData(
            label=label, positions=positions, forces=forces, box=box, types=frames.types,
            type_names=tuple(frames.type_names), train=train, val=val, test=test,
            sha256=_data_hash(positions, forces, box, frames.types, tuple(frames.type_names), energy),
            temperature_K=None if frames.state is None else float(frames.state.temperature_K),
            potential_energy=energy,
        ))
    return states
