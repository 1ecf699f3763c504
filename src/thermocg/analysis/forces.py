"""Force errors of a potential on reference CG frames (the mapped all-atom forces).

Over every force component f (kcal/mol/A) of the selected beads and frames, with predictions p:

    RMSE = sqrt(<(p - f)^2>),   MAE = <|p - f|>,   R^2 = 1 - sum (p - f)^2 / sum (f - <f>)^2

overall, per bead type, per state point, and per (state point, bead type). <f> is the mean over the
components of the subset the R^2 is about. Mapped AA forces hold a large fluctuating part that no CG
potential can predict (the mean force is the best any can do), so R^2 well below 1 is normal for CG
models; compare models on the same frames.

This is the one implementation of these metrics in thermocg: the trainer (validation and test
sets), the MS-CG fit (held-out frames) and the study's evaluation all feed a
:class:`ForceErrorAccumulator`. It keeps only running sums, so frames can come in batches of any
size and memory stays bounded for any number of frames.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from thermocg.progress import Progress

from thermocg.dataset import H5MDDataset
from thermocg.frames import Frames
from thermocg.potentials.base import Potential, energy_and_forces

__all__ = ["ForceMetrics", "ForceErrorAccumulator", "force_errors", "force_metrics"]


@dataclass(frozen=True)
class ForceMetrics:
    """Errors of predicted force components against reference ones.

    rmse, mae: kcal/mol/A; r2: 1 - SSE/SST (NaN when the reference components are all equal, or
    when there are none); reference_rms: sqrt(<f^2>), kcal/mol/A, the RMSE of predicting zero;
    n_components: how many force components (3 per bead per frame) entered.
    """

    rmse: float
    mae: float
    r2: float
    reference_rms: float
    n_components: int

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_sums(cls, sums: np.ndarray) -> "ForceMetrics":
        """From running sums (n, sum e^2, sum |e|, sum f, sum f^2), e = p - f."""
        n, sse, sae, sf, sf2 = (float(x) for x in sums)
        if n == 0:
            nan = float("nan")
            return cls(rmse=nan, mae=nan, r2=nan, reference_rms=nan, n_components=0)
        sst = sf2 - sf * sf / n
        return cls(rmse=float(np.sqrt(sse / n)), mae=float(sae / n),
                   r2=float(1.0 - sse / sst) if sst > 0 else float("nan"),
                   reference_rms=float(np.sqrt(sf2 / n)), n_components=int(n))


#: the key of a sum pooled over every state point or every bead type
_ALL = None


class ForceErrorAccumulator:
    """Running sums for RMSE, MAE and R^2 of force components, per state point and bead type.

    Feed batches with :meth:`add`; ask for :meth:`metrics` of any subset (one state, one bead type,
    both, or everything pooled) and :meth:`report` for the nested dict that thermocg writes to JSON.
    Per (state, type) cell it keeps five sums: the number of components n, sum e^2, sum |e|, sum f
    and sum f^2 (e = p - f), from which RMSE = sqrt(sum e^2 / n), MAE = sum |e| / n and
    SST = sum f^2 - (sum f)^2 / n. The pooled sums (over types, over states, over both) are kept as
    sums of their own, so a pooled metric is exactly that of the concatenated components (to
    round-off), whatever the batching.

    ``type_names``: bead types known in advance (their order is the order of ``per_type`` in
    reports); others are added as they appear. Types without any component are left out of reports.
    """

    def __init__(self, type_names: Sequence[str] = ()) -> None:
        self._type_names: list[str] = []
        self._states: list[str] = []
        self._sums: dict[tuple[str | None, str | None], np.ndarray] = {}
        self._frames: dict[str | None, int] = {_ALL: 0}
        for name in type_names:
            self._type(str(name))

    def _type(self, name: str) -> str:
        if name not in self._type_names:
            self._type_names.append(name)
        return name

    def _add_sums(self, key: tuple[str | None, str | None], sums: np.ndarray) -> None:
        if key not in self._sums:
            self._sums[key] = np.zeros(5)
        self._sums[key] += sums

    @property
    def type_names(self) -> tuple[str, ...]:
        return tuple(self._type_names)

    @property
    def states(self) -> tuple[str, ...]:
        """State labels in the order they were first added."""
        return tuple(self._states)

    def add(self, predicted: np.ndarray, reference: np.ndarray, types: np.ndarray, *,
            type_names: Sequence[str] | None = None, state: str = "") -> None:
        """Add one batch of frames of one state point.

        predicted, reference: (n_frames, n_beads, 3) kcal/mol/A (any trailing component count
        works; each is one "component"); types: (n_beads,) indices into ``type_names`` (default:
        the accumulator's own ``type_names``); ``state``: the state point's label.
        """
        predicted = np.asarray(predicted, dtype=np.float64)
        reference = np.asarray(reference, dtype=np.float64)
        types = np.asarray(types, dtype=np.int64)
        if predicted.shape != reference.shape or predicted.ndim != 3 or types.shape != predicted.shape[1:2]:
            raise ValueError(f"ForceErrorAccumulator.add: predicted {predicted.shape}, reference {reference.shape} "
                             f"and types {types.shape} do not fit (n_frames, n_beads, 3) and (n_beads,)")
        names = self.type_names if type_names is None else tuple(str(t) for t in type_names)
        if len(types) and (types.min() < 0 or types.max() >= len(names)):
            raise ValueError(f"ForceErrorAccumulator.add: types index outside the type names {list(names)}")
        if state not in self._states:
            self._states.append(state)
        err = predicted - reference
        per_bead = np.stack([
            np.full(types.shape, float(predicted.shape[0] * predicted.shape[2])),
            np.sum(err**2, axis=(0, 2)), np.sum(np.abs(err), axis=(0, 2)),
            np.sum(reference, axis=(0, 2)), np.sum(reference**2, axis=(0, 2)),
        ], axis=1)  # (n_beads, 5)
        total = per_bead.sum(axis=0)
        self._add_sums((state, _ALL), total)
        self._add_sums((_ALL, _ALL), total)
        for t, name in enumerate(names):
            cell = per_bead[types == t].sum(axis=0)
            self._add_sums((state, self._type(name)), cell)
            self._add_sums((_ALL, name), cell)
        self._frames[state] = self._frames.get(state, 0) + int(predicted.shape[0])
        self._frames[_ALL] += int(predicted.shape[0])

    def metrics(self, *, state: str | None = None, bead_type: str | None = None) -> ForceMetrics:
        """Metrics of one state (None: pooled over all) and one bead type (None: all types)."""
        return ForceMetrics.from_sums(self._sums.get((state, bead_type), np.zeros(5)))

    def n_frames(self, state: str | None = None) -> int:
        """Frames added for ``state`` (None: all states)."""
        return self._frames.get(state, 0)

    def per_type(self, state: str | None = None) -> dict[str, ForceMetrics]:
        """Metrics per bead type (of one state, or pooled), types without components left out."""
        out = {name: self.metrics(state=state, bead_type=name) for name in self._type_names}
        return {name: m for name, m in out.items() if m.n_components}

    def report(self, state: str | None = None) -> dict[str, Any]:
        """``{"rmse", "mae", "r2", "reference_rms", "n_components", "n_frames", "per_type": {type:
        {same keys but n_frames}}}`` of one state (None: pooled), ready for JSON."""
        return {**self.metrics(state=state).to_dict(), "n_frames": self.n_frames(state),
                "per_type": {name: m.to_dict() for name, m in self.per_type(state).items()}}


def force_metrics(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float | int]:
    """RMSE, MAE (kcal/mol/A), R^2 and the reference RMS over all components of two arrays of the
    same (any) shape, as :class:`ForceMetrics` fields; NaN metrics and ``n_components`` 0 when empty."""
    p = np.asarray(predicted, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if p.shape != r.shape:
        raise ValueError(f"force_metrics: predicted {p.shape} and reference {r.shape} differ in shape")
    acc = ForceErrorAccumulator(("all",))
    acc.add(p.reshape(1, -1, 1), r.reshape(1, -1, 1), np.zeros(p.size, dtype=np.int64))
    return acc.metrics().to_dict()


def force_errors(potential: Potential, frames: Frames | H5MDDataset | str | os.PathLike, *, batch_frames: int = 8,
                 frame_indices: np.ndarray | list[int] | None = None, parity_samples: int = 0,
                 seed: int = 0, progress: bool = False, accumulator: ForceErrorAccumulator | None = None,
                 state: str = "") -> dict[str, Any]:
    """RMSE, MAE and R^2 (kcal/mol/A) of ``potential``'s forces against the frames' forces.

    ``frames``: Frames, an open H5MD dataset or its path; ``frame_indices`` picks frames (default:
    all), evaluated ``batch_frames`` at a time. Returns ``{"rmse", "mae", "r2", "reference_rms",
    "n_components", "n_frames", "per_type": {type: {...same keys but n_frames}}}``; with
    ``parity_samples > 0`` also ``"parity": {"reference": (k,), "predicted": (k,), "type": (k,)}``
    arrays of randomly chosen force components (for parity plots; ``seed``).

    ``accumulator``: also add these frames, as state ``state``, to a shared accumulator (to pool
    several state points); the returned dict is about these frames only.
    """
    if isinstance(frames, (str, os.PathLike)):
        frames = H5MDDataset(frames)
    n_total = frames.n_frames if isinstance(frames, Frames) else len(frames)
    indices = np.arange(n_total) if frame_indices is None else np.asarray(frame_indices, dtype=np.int64)
    if len(indices) == 0:
        raise ValueError("force_errors: no frames selected")
    has_forces = frames.forces is not None if isinstance(frames, Frames) else frames.has_forces
    if not has_forces:
        source = getattr(frames, "path", "the frames")
        raise ValueError(f"force_errors: {source} carry no reference forces")
    if batch_frames < 1:
        raise ValueError(f"force_errors: batch_frames must be >= 1, got {batch_frames}")
    types_np = np.asarray(frames.types, dtype=np.int64)
    type_names = tuple(frames.type_names)
    types = potential.type_indices(type_names, types_np)
    own = ForceErrorAccumulator(type_names)
    sampler = _ParitySampler(parity_samples, n_batches=-(-len(indices) // batch_frames), types=types_np, seed=seed)
    bar = None
    if progress:
        bar = Progress(len(indices), description="force errors", unit="frames", leave=False)
    for start in range(0, len(indices), batch_frames):
        idx = indices[start:start + batch_frames]
        block = frames.select(idx) if isinstance(frames, Frames) else frames.read(idx)
        with torch.no_grad():
            _, predicted = energy_and_forces(potential, block.positions, block.box, types)
        predicted = predicted.double().cpu().numpy()
        own.add(predicted, block.forces, types_np, state=state)
        if accumulator is not None:
            accumulator.add(predicted, block.forces, types_np, type_names=type_names, state=state)
        sampler.add(predicted, block.forces)
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    out = own.report()
    if sampler.per_batch:
        out["parity"] = sampler.samples()
    return out


class _ParitySampler:
    """About ``n`` force components drawn at random, spread evenly over the batches (for parity plots)."""

    def __init__(self, n: int, *, n_batches: int, types: np.ndarray, seed: int) -> None:
        self.n = int(n)
        self.per_batch = -(-self.n // n_batches) if self.n > 0 else 0
        self.component_types = np.repeat(types, 3)
        self.rng = np.random.default_rng(seed)
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, predicted: np.ndarray, reference: np.ndarray) -> None:
        if not self.per_batch:
            return
        flat_ref, flat_pred = reference.reshape(-1), predicted.reshape(-1)
        pick = self.rng.choice(flat_ref.size, size=min(self.per_batch, flat_ref.size), replace=False)
        self._parts.append((flat_ref[pick], flat_pred[pick], self.component_types[pick % len(self.component_types)]))

    def samples(self) -> dict[str, np.ndarray]:
        ref, pred, typ = (np.concatenate(x) for x in zip(*self._parts))
        return {"reference": ref[:self.n], "predicted": pred[:self.n], "type": typ[:self.n]}

