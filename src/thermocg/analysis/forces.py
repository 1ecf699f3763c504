"""Force errors of a potential on reference CG frames (the mapped all-atom forces).

Over every force component f (kcal/mol/A) of the selected beads and frames, with predictions p:

    RMSE = sqrt(<(p - f)^2>),   MAE = <|p - f|>,   R^2 = 1 - sum (p - f)^2 / sum (f - <f>)^2

overall and per bead type. Mapped AA forces hold a large fluctuating part that no CG potential can
predict (the mean force is the best any can do), so R^2 well below 1 is normal for CG models; compare
models on the same frames. Frames are evaluated in batches of ``batch_frames`` and only running sums
are kept, so memory stays bounded for any number of frames.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from thermocg.dataset import H5MDDataset
from thermocg.frames import Frames
from thermocg.potentials.base import Potential, energy_and_forces

__all__ = ["force_errors", "ForceErrorAccumulator"]


class ForceErrorAccumulator:
    """Running sums for RMSE, MAE and R^2 of force components, per bead type and overall."""

    def __init__(self, type_names: tuple[str, ...]) -> None:
        self.type_names = tuple(type_names)
        keys = ("all", *self.type_names)
        self._sums = {k: np.zeros(5) for k in keys}  # n, sum err^2, sum |err|, sum f, sum f^2

    def add(self, predicted: np.ndarray, reference: np.ndarray, types: np.ndarray) -> None:
        """predicted, reference (F, N, 3) kcal/mol/A; types (N,) indices into type_names."""
        err = predicted - reference
        per_bead = np.stack([
            np.full(types.shape, 3.0 * predicted.shape[0]),
            np.sum(err**2, axis=(0, 2)), np.sum(np.abs(err), axis=(0, 2)),
            np.sum(reference, axis=(0, 2)), np.sum(reference**2, axis=(0, 2)),
        ], axis=1)  # (N, 5)
        self._sums["all"] += per_bead.sum(axis=0)
        for t, name in enumerate(self.type_names):
            self._sums[name] += per_bead[types == t].sum(axis=0)

    def metrics(self) -> dict[str, dict[str, float]]:
        out = {}
        for key, (n, sse, sae, sf, sf2) in self._sums.items():
            if n == 0:
                continue
            sst = sf2 - sf * sf / n
            out[key] = {
                "rmse": float(np.sqrt(sse / n)),
                "mae": float(sae / n),
                "r2": float(1.0 - sse / sst) if sst > 0 else float("nan"),
                "reference_rms": float(np.sqrt(sf2 / n)),
                "n_components": int(n),
            }
        return out


def force_errors(potential: Potential, frames: Frames | H5MDDataset | str | os.PathLike, *, batch_frames: int = 8,
                 frame_indices: np.ndarray | list[int] | None = None, parity_samples: int = 0,
                 seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """RMSE, MAE and R^2 (kcal/mol/A) of ``potential``'s forces against the frames' forces.

    Returns ``{"rmse", "mae", "r2", "reference_rms", "n_components", "n_frames", "per_type": {type:
    {...same keys}}}``; with ``parity_samples > 0`` also ``"parity": {"reference": (k,), "predicted":
    (k,), "type": (k,)}`` arrays of randomly chosen force components (for parity plots; ``seed``).
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
    acc = ForceErrorAccumulator(type_names)
    rng = np.random.default_rng(seed)
    per_batch = 0
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    n_batches = (len(indices) + batch_frames - 1) // batch_frames
    if parity_samples > 0:
        per_batch = -(-parity_samples // n_batches)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(indices), desc="force errors", unit="frame", leave=False)
    for start in range(0, len(indices), batch_frames):
        idx = indices[start:start + batch_frames]
        block = frames.select(idx) if isinstance(frames, Frames) else frames.read(idx)
        with torch.no_grad():
            _, predicted = energy_and_forces(potential, block.positions, block.box, types)
        predicted = predicted.double().cpu().numpy()
        acc.add(predicted, block.forces, types_np)
        if per_batch:
            flat_ref, flat_pred = block.forces.reshape(-1), predicted.reshape(-1)
            pick = rng.choice(flat_ref.size, size=min(per_batch, flat_ref.size), replace=False)
            samples.append((flat_ref[pick], flat_pred[pick], np.repeat(types_np, 3)[pick % (3 * len(types_np))]))
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    metrics = acc.metrics()
    out: dict[str, Any] = dict(metrics.pop("all"), n_frames=int(len(indices)), per_type=metrics)
    if per_batch:
        ref, pred, typ = (np.concatenate(x) for x in zip(*samples))
        out["parity"] = {"reference": ref[:parity_samples], "predicted": pred[:parity_samples],
                         "type": typ[:parity_samples]}
    return out
