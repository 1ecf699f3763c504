"""Force matching: train a CG potential (HIP-NN-TS + repulsive prior) on mapped all-atom forces.

The model U_theta(R) of a CG configuration R (n_beads, 3) is fitted so that its forces
F_theta = -dU_theta/dR (kcal/mol/A) match the mapped all-atom forces F_ref of every training frame.
The loss of a batch, on the components of all its beads, in units of a force scale s
(by default the RMS of the training force components, so the loss is dimensionless; Adam's update
does not depend on that constant):

    d = (F_theta - F_ref) / s
    rmse = sqrt(mean(d^2)),  mae = mean(|d|),  mse = mean(d^2)
    loss = rmse + mae   (default; or "rmse", "mae", "mse")

Optimisation (the reference study, HIPNN_TS.md): Adam; the batch starts at ``batch_size`` frames and
doubles (up to ``max_batch_size``) whenever the validation loss has not reached a new best for
``patience_epochs`` epochs; at the largest batch further plateaus multiply the learning rate by
``lr_factor``. Training stops after ``early_stopping_epochs`` epochs without a new best, or at
``max_epochs``; the weights of the best validation epoch are kept.

Splits are by contiguous time blocks, never random frames: neighbouring frames are correlated, and a
random split would put near copies of training frames into the validation and test sets. Each state
point's trajectory is cut into ``n_blocks`` equal blocks in time; within a block the first 80% of
frames train, the next 10% validate and the last 10% test (``split``). The test set is evaluated
once, at the end, with the best weights.

Several state points are pooled into one model; a batch holds frames of one state point (they may
differ in bead count), and the batches of all states are shuffled together each epoch with a
seeded ``torch.Generator``. Metrics (force RMSE, MAE and R^2 = 1 - SSE/SST over force components)
are reported overall, per state point and per bead type.

A checkpoint (model, optimiser, schedule, generator state, best weights, history) is written
atomically after every epoch; calling :func:`train_potential` again with the same data, config and
seed resumes from it and gives the same weights as an uninterrupted run. On CPU, one seed gives
identical weights run after run.

Automatic choices (each overridable in :class:`thermocg.config.TrainConfig`, each written to
``resolved.yaml``): the cutoff, min(15 A, half the shortest perpendicular box width); the prior's
taper (RDF onset per type pair) and strength (mean |F|) from
:func:`thermocg.potentials.priors.derive_repulsive_prior`; the sensitivity range,
dist_soft_min = max(onset - 1 A, onset / 2) with onset the smallest RDF onset (2 A for CG methanol,
whose RDF starts near 3 A, the reference value) and dist_soft_max = 13/15 of the cutoff; the force
scale.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from thermocg.config import ConfigError, TrainConfig, result_dict, to_dict
from thermocg.frames import Frames, merged_type_names
from thermocg.neighbors import check_cutoff_fits, perpendicular_widths
from thermocg.potentials.base import Potential, energy_and_forces, save_potential
from thermocg.rundir import atomic_path

__all__ = [
    "TrainError",
    "TrainResult",
    "StateData",
    "split_indices",
    "prepare_states",
    "resolve_train_config",
    "automatic_choices",
    "build_model",
    "force_loss",
    "force_metrics",
    "train_potential",
    "evaluate",
    "run_train",
]

#: the reference study's cutoff, A
REFERENCE_CUTOFF_A = 15.0
#: the reference study's dist_soft_max / dist_hard_max (13 A / 15 A)
SOFT_MAX_FRACTION = 13.0 / 15.0
CHECKPOINT_FORMAT = "thermocg-train-checkpoint"
CHECKPOINT_VERSION = 1
#: keys that may change between a run and its resumption besides those without effect on results
#: (config.NO_EFFECT): a longer max_epochs continues training; the training data enter by their hash
_RESUMABLE_KEYS = ("max_epochs", "train_states")


class TrainError(ValueError):
    """Training data or settings that cannot work; the message names the state/key and the problem."""


# --------------------------------------------------------------------------------------------------
# data and splits
# --------------------------------------------------------------------------------------------------

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
    """One state point's frames, validated and split.

    positions, forces (n_frames, n_beads, 3) A, kcal/mol/A; box (n_frames, 3, 3) A; types (n_beads,)
    indices into the *model's* ``type_names``; train/val/test: frame indices.
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

    def frames(self, part: str) -> Frames:
        idx = getattr(self, part)
        return Frames(positions=self.positions[idx], box=self.box[idx], forces=self.forces[idx],
                      types=self.types, type_names=self.type_names, masses=np.ones(len(self.types)))


def _data_hash(frames: Frames) -> str:
    h = hashlib.sha256()
    for array in (frames.positions, frames.forces, frames.box, frames.types):
        h.update(np.ascontiguousarray(array).tobytes())
    h.update(json.dumps(list(frames.type_names)).encode())
    return h.hexdigest()


def _label(frames: Frames, k: int) -> str:
    return frames.state.label if frames.state is not None else f"state{k}"


def _check_frames(frames: Frames, where: str) -> None:
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


def prepare_states(frames_list: list[Frames], config: TrainConfig, type_names: tuple[str, ...]) -> list[StateData]:
    """Validate each state's frames, apply ``frame_stride`` and split by time blocks."""
    if not frames_list:
        raise TrainError("no training frames: the list of state points is empty")
    states, labels = [], set()
    for k, frames in enumerate(frames_list):
        where = f"training data, state {_label(frames, k) if isinstance(frames, Frames) else k}"
        _check_frames(frames, where)
        label = _label(frames, k)
        if label in labels:
            label = f"{label}_{k}"
        labels.add(label)
        if config.frame_stride > 1:
            frames = frames.select(slice(None, None, config.frame_stride))
        unknown = [n for n in frames.type_names if n not in type_names]
        if unknown:
            raise TrainError(f"{where}: bead types {unknown} unknown to the model (it knows {list(type_names)})")
        lookup = np.array([type_names.index(n) for n in frames.type_names], dtype=np.int64)
        train, val, test = split_indices(frames.n_frames, config.split, n_blocks=config.n_blocks, where=where)
        states.append(StateData(
            label=label, positions=frames.positions, forces=frames.forces, box=frames.box,
            types=lookup[frames.types], type_names=type_names, train=train, val=val, test=test,
            sha256=_data_hash(frames),
        ))
    return states


# --------------------------------------------------------------------------------------------------
# automatic choices and the model
# --------------------------------------------------------------------------------------------------

def resolve_train_config(config: TrainConfig, frames_list: list[Frames]) -> tuple[TrainConfig, Any]:
    """Fill every ``None`` of ``config`` from the data; returns (resolved config, derived prior or None).

    - cutoff_A: min(15 A, half the shortest perpendicular box width over all frames); a given
      cutoff beyond half the box is an error.
    - prior taper/strength: :func:`~thermocg.potentials.priors.derive_repulsive_prior` on the
      training frames (taper at the first r where the CG RDF exceeds ``prior_threshold``,
      strength the mean |F| of the CG forces); the smallest taper is the RDF onset.
    - dist_soft_min_A = max(onset - 1 A, onset / 2); dist_soft_max_A = 13/15 cutoff.
    - force_scale_kcal_mol_A: the RMS of all training force components.
    """
    resolved = copy.deepcopy(config)
    boxes = np.concatenate([f.box for f in frames_list])
    half_width = min(float(perpendicular_widths(b).min()) for b in np.unique(boxes.round(8), axis=0)) / 2.0
    if resolved.cutoff_A is None:
        resolved.cutoff_A = float(min(REFERENCE_CUTOFF_A, half_width))
    else:
        try:
            check_cutoff_fits(resolved.cutoff_A, boxes, what="train.cutoff_A")
        except ValueError as exc:
            raise TrainError(str(exc)) from None
    prior = None
    onset = resolved.prior_taper_A
    need_onset = resolved.dist_soft_min_A is None and onset is None
    if resolved.prior or need_onset:
        from thermocg.potentials.priors import derive_repulsive_prior

        train_parts = []
        for k, frames in enumerate(frames_list):
            idx, _, _ = split_indices(frames.n_frames, resolved.split, n_blocks=resolved.n_blocks,
                                      where=f"training data, state {_label(frames, k)}")
            train_parts.append(frames.select(idx))
        prior = derive_repulsive_prior(train_parts, threshold=resolved.prior_threshold,
                                       dr_A=resolved.prior_dr_A, perc=resolved.prior_perc)
        taper = np.asarray(prior.hyperparameters()["taper_A"], dtype=np.float64)
        if onset is None:
            onset = float(np.min(taper))
    if resolved.dist_soft_min_A is None:
        resolved.dist_soft_min_A = float(max(onset - 1.0, 0.5 * onset))
    if resolved.dist_soft_max_A is None:
        resolved.dist_soft_max_A = float(SOFT_MAX_FRACTION * resolved.cutoff_A)
    if not resolved.dist_soft_min_A < resolved.dist_soft_max_A <= resolved.cutoff_A:
        raise TrainError(
            f"train: need dist_soft_min_A < dist_soft_max_A <= cutoff_A, got {resolved.dist_soft_min_A:.3f}, "
            f"{resolved.dist_soft_max_A:.3f}, {resolved.cutoff_A:.3f} A (a small box forces a small cutoff; "
            "set dist_soft_min_A)"
        )
    if resolved.force_scale_kcal_mol_A is None:
        squares, count = 0.0, 0
        for frames in frames_list:
            idx, _, _ = split_indices(frames.n_frames, resolved.split, n_blocks=resolved.n_blocks)
            f = frames.forces[idx]
            squares += float(np.sum(f * f))
            count += f.size
        scale = math.sqrt(squares / max(count, 1))
        resolved.force_scale_kcal_mol_A = scale if scale > 0 else 1.0
    if prior is not None and resolved.prior:
        # the per-pair taper and strength tables are recorded in the model description
        prior = _prior_with_overrides(prior, resolved)
    return resolved, (prior if resolved.prior else None)


_AUTOMATIC_KEYS = ("cutoff_A", "dist_soft_min_A", "dist_soft_max_A", "force_scale_kcal_mol_A")


def automatic_choices(config: TrainConfig, resolved: TrainConfig, potential: Potential) -> dict[str, Any]:
    """What was chosen from the data (keys the user left at None), for ``resolved.yaml``."""
    chosen: dict[str, Any] = {k: getattr(resolved, k) for k in _AUTOMATIC_KEYS if getattr(config, k) is None}
    for term in getattr(potential, "terms", [potential]):
        if term.kind == "repulsive_prior":
            hp = term.hyperparameters()
            chosen["prior_type_names"] = list(term.type_names)
            chosen["prior_taper_A"] = hp["taper_A"]
            chosen["prior_strength_kcal_mol_A"] = hp["strength_kcal_mol_A"]
    return chosen


def _prior_with_overrides(prior: Any, config: TrainConfig) -> Any:
    """The derived prior with ``prior_taper_A`` / ``prior_strength_kcal_mol_A`` overriding every pair."""
    if config.prior_taper_A is None and config.prior_strength_kcal_mol_A is None:
        return prior
    from thermocg.potentials.priors import RepulsivePrior

    hp = dict(prior.hyperparameters())
    n = len(prior.type_names)
    if config.prior_taper_A is not None:
        hp["taper_A"] = np.full((n, n), config.prior_taper_A).tolist()
    if config.prior_strength_kcal_mol_A is not None:
        hp["strength_kcal_mol_A"] = np.full((n, n), config.prior_strength_kcal_mol_A).tolist()
    type_names = hp.pop("type_names", prior.type_names)
    return RepulsivePrior(type_names, **hp)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, restoring the global state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_model(config: TrainConfig, type_names: tuple[str, ...], *, seed: int, prior: Any = None) -> Potential:
    """HIP-NN-TS (initialised from ``seed``) plus the repulsive prior, as a SumPotential.

    ``config`` must be resolved (:func:`resolve_train_config`).
    """
    from thermocg.potentials.base import SumPotential
    from thermocg.potentials.hipnn import HipnnTS

    if prior is not None and tuple(prior.type_names) != tuple(type_names):
        raise TrainError(f"prior bead types {prior.type_names} differ from the model's {type_names}")
    with _seeded(seed):
        network = HipnnTS(
            type_names, n_features=config.n_features, n_sensitivities=config.n_sensitivities,
            dist_soft_min_A=config.dist_soft_min_A, dist_soft_max_A=config.dist_soft_max_A,
            cutoff_A=config.cutoff_A, n_interaction_layers=config.n_interaction_layers,
            n_atom_layers=config.n_atom_layers, seed=seed,
        )
    terms = [network] + ([prior] if prior is not None else [])
    model = SumPotential(terms)
    return model.to(getattr(torch, config.dtype))


# --------------------------------------------------------------------------------------------------
# loss and metrics
# --------------------------------------------------------------------------------------------------

def force_loss(predicted: torch.Tensor, reference: torch.Tensor, kind: str = "rmse+mae",
               scale: float = 1.0) -> torch.Tensor:
    """The force-matching loss on all force components, in units of ``scale`` (see module doc)."""
    d = (predicted - reference) / scale
    if kind == "mse":
        return d.pow(2).mean()
    if kind == "rmse":
        return d.pow(2).mean().sqrt()
    if kind == "mae":
        return d.abs().mean()
    if kind == "rmse+mae":
        return d.pow(2).mean().sqrt() + d.abs().mean()
    raise TrainError(f"train.loss: unknown loss {kind!r}; use rmse+mae, rmse, mae or mse")


def force_metrics(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Force RMSE and MAE (kcal/mol/A) and R^2 = 1 - sum (F_p - F_r)^2 / sum (F_r - mean F_r)^2,
    over all components of the given arrays (any shape, the same for both)."""
    p = np.asarray(predicted, dtype=np.float64).ravel()
    r = np.asarray(reference, dtype=np.float64).ravel()
    if p.size == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "r2": float("nan"), "n_components": 0}
    err = p - r
    sst = float(np.sum((r - r.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "r2": float(1.0 - np.sum(err**2) / sst) if sst > 0 else float("nan"),
        "n_components": int(p.size),
    }


@contextmanager
def _frozen(potential: Potential) -> Iterator[None]:
    """Parameters without gradients for evaluation (forces still by autograd on positions)."""
    flags = [p.requires_grad for p in potential.parameters()]
    for p in potential.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(potential.parameters(), flags):
            p.requires_grad_(flag)


def predict_forces(potential: Potential, positions: np.ndarray, box: np.ndarray, types: np.ndarray, *,
                   batch_size: int = 8) -> np.ndarray:
    """Forces (n_frames, n_beads, 3) kcal/mol/A of ``potential`` on frames; ``types`` are model indices."""
    out = np.zeros(positions.shape, dtype=np.float64)
    with _frozen(potential):
        for start in range(0, len(positions), batch_size):
            sl = slice(start, start + batch_size)
            _, forces = energy_and_forces(potential, positions[sl], box[sl], types)
            out[sl] = forces.cpu().to(torch.float64).numpy()
    return out


def evaluate(potential: Potential, states: list[StateData], part: str, *, batch_size: int = 8) -> dict[str, Any]:
    """Metrics of ``potential`` on the ``part`` ("train", "val", "test") frames of every state.

    Returns {"overall": metrics, "per_state": {label: metrics + "per_type"}, "per_type": {...},
    "predictions": {label: (predicted, reference)}} with metrics as in :func:`force_metrics`.
    """
    per_state, predictions = {}, {}
    pooled_p, pooled_r = [], []
    type_p: dict[str, list[np.ndarray]] = {}
    type_r: dict[str, list[np.ndarray]] = {}
    for s in states:
        idx = getattr(s, part)
        if len(idx) == 0:
            continue
        pred = predict_forces(potential, s.positions[idx], s.box[idx], s.types, batch_size=batch_size)
        ref = s.forces[idx]
        predictions[s.label] = (pred, ref)
        metrics = force_metrics(pred, ref)
        metrics["n_frames"] = int(len(idx))
        metrics["per_type"] = {}
        for t, name in enumerate(s.type_names):
            mask = s.types == t
            if not mask.any():
                continue
            metrics["per_type"][name] = force_metrics(pred[:, mask], ref[:, mask])
            type_p.setdefault(name, []).append(pred[:, mask].ravel())
            type_r.setdefault(name, []).append(ref[:, mask].ravel())
        per_state[s.label] = metrics
        pooled_p.append(pred.ravel())
        pooled_r.append(ref.ravel())
    overall = force_metrics(np.concatenate(pooled_p), np.concatenate(pooled_r)) if pooled_p else force_metrics(
        np.zeros(0), np.zeros(0))
    overall["n_frames"] = int(sum(m["n_frames"] for m in per_state.values()))
    per_type = {n: force_metrics(np.concatenate(type_p[n]), np.concatenate(type_r[n])) for n in type_p}
    return {"overall": overall, "per_state": per_state, "per_type": per_type, "predictions": predictions}


# --------------------------------------------------------------------------------------------------
# the schedule and checkpoints
# --------------------------------------------------------------------------------------------------

@dataclass
class _Schedule:
    """Batch-size doubling, then learning-rate decay, on validation plateaus; early stopping."""

    batch_size: int
    learning_rate: float
    best_val: float = math.inf
    best_epoch: int = 0
    epochs_since_best: int = 0
    epochs_since_change: int = 0
    finished: bool = False

    def update(self, epoch: int, val_loss: float, config: TrainConfig) -> bool:
        """Record an epoch's validation loss; returns True when it is a new best."""
        improved = val_loss < self.best_val * (1.0 - config.improvement_threshold)
        if improved:
            self.best_val, self.best_epoch = val_loss, epoch
            self.epochs_since_best = self.epochs_since_change = 0
        else:
            self.epochs_since_best += 1
            self.epochs_since_change += 1
            if self.epochs_since_change >= config.patience_epochs:
                if self.batch_size < config.max_batch_size:
                    self.batch_size = min(2 * self.batch_size, config.max_batch_size)
                else:
                    self.learning_rate *= config.lr_factor
                self.epochs_since_change = 0
        if self.epochs_since_best >= config.early_stopping_epochs or epoch >= config.max_epochs:
            self.finished = True
        return improved


def _fingerprint(config: TrainConfig, states: list[StateData], seed: int, description: dict[str, Any]) -> str:
    cfg = result_dict(config, drop=_RESUMABLE_KEYS)
    payload = {"config": cfg, "seed": seed, "data": [(s.label, s.sha256) for s in states], "model": description}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as partial:
        torch.save(payload, partial)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several error types for a damaged file
        raise TrainError(f"{path}: unreadable training checkpoint ({exc}); delete it to start afresh") from None
    if payload.get("format") != CHECKPOINT_FORMAT or payload.get("version") != CHECKPOINT_VERSION:
        raise TrainError(f"{path}: not a thermocg training checkpoint of version {CHECKPOINT_VERSION}")
    return payload


def _state_dict_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """What :func:`train_potential` produced."""

    model_path: Path
    #: test metrics (overall, per_state, per_type); validation metrics under "validation"
    metrics: dict[str, Any]
    potential: Potential
    config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    out_dir: Path | None = None
    #: the choices made from the data (see :func:`automatic_choices`)
    automatic: dict[str, Any] = field(default_factory=dict)


_METRIC_FIELDS = ("epoch", "train_loss", "val_loss", "val_force_rmse_kcal_mol_A", "val_force_mae_kcal_mol_A",
                  "batch_size", "learning_rate", "best", "wall_s")


def _write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    from thermocg.rundir import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row[k] for k in _METRIC_FIELDS})
    atomic_write_text(path, buffer.getvalue())


def _epoch_batches(states: list[StateData], batch_size: int, generator: torch.Generator) -> list[tuple[int, np.ndarray]]:
    """(state index, frame indices) of every batch of an epoch, in a seeded random order."""
    batches = []
    for k, s in enumerate(states):
        order = s.train[torch.randperm(len(s.train), generator=generator).numpy()]
        for start in range(0, len(order), batch_size):
            batches.append((k, np.sort(order[start:start + batch_size])))
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[p] for p in perm]


def _validation_loss(potential: Potential, states: list[StateData], config: TrainConfig) -> tuple[float, float, float]:
    """(loss, force RMSE, force MAE) over the pooled validation frames of every state."""
    preds, refs = [], []
    for s in states:
        if len(s.val):
            preds.append(predict_forces(potential, s.positions[s.val], s.box[s.val], s.types,
                                        batch_size=config.eval_batch_size).ravel())
            refs.append(s.forces[s.val].ravel())
    p, r = torch.from_numpy(np.concatenate(preds)), torch.from_numpy(np.concatenate(refs))
    loss = float(force_loss(p, r, config.loss, config.force_scale_kcal_mol_A))
    m = force_metrics(p.numpy(), r.numpy())
    return loss, m["rmse"], m["mae"]


def train_potential(train_frames: list[Frames], config: TrainConfig, out_dir: str | os.PathLike, *, seed: int,
                    potential: Potential | None = None, resume: bool = True, progress: bool | None = None,
                    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Train a potential on the CG forces of ``train_frames`` (one Frames per state point).

    Writes to ``out_dir``: ``model.safetensors`` (best-validation weights, with provenance),
    ``metrics.csv`` (one row per epoch), ``test_metrics.json``, ``learning_curve.png``,
    ``parity.png``, ``resolved.yaml`` and ``checkpoint.pt`` (for resuming).

    ``potential``: train this module instead of the default HIP-NN-TS + prior (the cutoff and
    sensitivity choices then do not apply). ``resume``: continue from ``out_dir/checkpoint.pt`` when
    it belongs to the same data, config and seed (a checkpoint of another run is an error; pass
    ``resume=False`` to start afresh). ``on_epoch_end(epoch, row)`` is called after each epoch's
    checkpoint is written.
    """
    if not isinstance(config, TrainConfig):
        raise TrainError(f"config: expected a TrainConfig, got {type(config).__name__}")
    if isinstance(train_frames, Frames):
        train_frames = [train_frames]
    train_frames = list(train_frames)
    if not train_frames:
        raise TrainError("no training frames: the list of state points is empty")
    for k, frames in enumerate(train_frames):
        _check_frames(frames, f"training data, state {_label(frames, k) if isinstance(frames, Frames) else k}")
    stride = config.frame_stride
    if stride > 1:
        train_frames = [f.select(slice(None, None, stride)) for f in train_frames]
    config = dataclasses.replace(config, frame_stride=1)  # applied: the rest sees the strided frames
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    show = config.progress if progress is None else progress
    device = torch.device(config.device)

    # ---- the model and the resolved choices
    if potential is None:
        resolved, prior = resolve_train_config(config, train_frames)
        type_names = prior.type_names if prior is not None else merged_type_names(train_frames)
        potential = build_model(resolved, tuple(type_names), seed=seed, prior=prior)
    else:
        resolved = copy.deepcopy(config)
        resolved.cutoff_A = potential.cutoff_A
        if resolved.force_scale_kcal_mol_A is None:
            parts = [f.forces[split_indices(f.n_frames, resolved.split, n_blocks=resolved.n_blocks)[0]] for f in train_frames]
            rms = math.sqrt(sum(float(np.sum(p * p)) for p in parts) / sum(p.size for p in parts))
            resolved.force_scale_kcal_mol_A = rms if rms > 0 else 1.0
        potential = potential.to(getattr(torch, config.dtype))
        type_names = potential.type_names
    potential = potential.to(device)
    states = prepare_states(train_frames, resolved, tuple(potential.type_names))
    resolved.frame_stride = stride
    for s in states:
        try:
            check_cutoff_fits(potential.cutoff_A, s.box, what=f"state {s.label}: cutoff")
        except ValueError as exc:
            raise TrainError(str(exc)) from None
    description = potential.describe()
    fingerprint = _fingerprint(resolved, states, seed, description)

    optimizer = torch.optim.Adam(potential.parameters(), lr=resolved.learning_rate)
    schedule = _Schedule(batch_size=resolved.batch_size, learning_rate=resolved.learning_rate)
    generator = torch.Generator().manual_seed(int(seed))
    history: list[dict[str, Any]] = []
    best_weights = _state_dict_copy(potential)
    epoch = 0
    checkpoint_path = out_dir / "checkpoint.pt"
    if resume and checkpoint_path.exists():
        payload = _load_checkpoint(checkpoint_path)
        if payload["fingerprint"] != fingerprint:
            raise TrainError(
                f"{checkpoint_path}: this checkpoint belongs to another run (different data, config or "
                "seed); use another output directory or resume=False"
            )
        potential.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        schedule = _Schedule(**payload["schedule"])
        generator.set_state(payload["generator"])
        history = [dict(row) for row in payload["history"]]
        best_weights = payload["best_model"]
        epoch = int(payload["epoch"])
        if epoch >= resolved.max_epochs:
            schedule.finished = True
        elif schedule.finished and schedule.epochs_since_best < resolved.early_stopping_epochs:
            schedule.finished = False  # max_epochs was raised
    for group in optimizer.param_groups:
        group["lr"] = schedule.learning_rate

    from tqdm.auto import tqdm

    wall_before = history[-1]["wall_s"] if history else 0.0
    start = time.perf_counter()
    bar = tqdm(total=resolved.max_epochs, initial=epoch, desc="train", unit="epoch", disable=not show,
               dynamic_ncols=True)
    if epoch and show:
        bar.write(f"train: resuming from {checkpoint_path} after epoch {epoch}")
    dtype = potential.dtype
    try:
        while not schedule.finished and epoch < resolved.max_epochs:
            epoch += 1
            potential.train()
            batches = _epoch_batches(states, schedule.batch_size, generator)
            total, n_batches = 0.0, 0
            inner = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not show, dynamic_ncols=True)
            for k, idx in inner:
                s = states[k]
                positions = torch.as_tensor(s.positions[idx], dtype=dtype, device=device)
                box = torch.as_tensor(s.box[idx], dtype=dtype, device=device)
                reference = torch.as_tensor(s.forces[idx], dtype=dtype, device=device)
                _, forces = energy_and_forces(potential, positions, box, s.types, create_graph=True)
                loss = force_loss(forces, reference, resolved.loss, resolved.force_scale_kcal_mol_A)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainError(f"training diverged at epoch {epoch}: the loss is {value}; lower learning_rate")
                total += value
                n_batches += 1
                inner.set_postfix(loss=f"{total / n_batches:.4g}")
            inner.close()
            potential.eval()
            val_loss, val_rmse, val_mae = _validation_loss(potential, states, resolved)
            row = {"epoch": epoch, "train_loss": total / max(n_batches, 1), "val_loss": val_loss,
                   "val_force_rmse_kcal_mol_A": val_rmse, "val_force_mae_kcal_mol_A": val_mae,
                   "batch_size": schedule.batch_size, "learning_rate": schedule.learning_rate}
            improved = schedule.update(epoch, val_loss, resolved)
            row["best"] = int(improved)
            row["wall_s"] = wall_before + time.perf_counter() - start
            history.append(row)
            if improved:
                best_weights = _state_dict_copy(potential)
            for group in optimizer.param_groups:
                group["lr"] = schedule.learning_rate
            if epoch >= resolved.max_epochs:
                schedule.finished = True
            _save_checkpoint(checkpoint_path, {
                "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "fingerprint": fingerprint,
                "epoch": epoch, "model": _state_dict_copy(potential), "optimizer": optimizer.state_dict(),
                "schedule": dataclasses.asdict(schedule), "generator": generator.get_state(),
                "best_model": best_weights, "history": history,
            })
            _write_metrics_csv(out_dir / "metrics.csv", history)
            bar.update(1)
            bar.set_postfix(train=f"{row['train_loss']:.4g}", val=f"{val_loss:.4g}",
                            rmse=f"{val_rmse:.3g}", bs=schedule.batch_size, lr=f"{schedule.learning_rate:.2g}")
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
    finally:
        bar.close()
    if history:
        _write_metrics_csv(out_dir / "metrics.csv", history)

    # ---- the best weights, the test set once, the model file and the figures
    potential.load_state_dict(best_weights)
    potential.eval()
    test = evaluate(potential, states, "test", batch_size=resolved.eval_batch_size)
    val = evaluate(potential, states, "val", batch_size=resolved.eval_batch_size)
    predictions = test.pop("predictions")
    val.pop("predictions")
    metrics = {**test, "validation": val, "best_epoch": schedule.best_epoch, "epochs": epoch,
               "split": {s.label: {"train": int(len(s.train)), "val": int(len(s.val)), "test": int(len(s.test))}
                         for s in states}}
    provenance = {
        "training_states": [s.label for s in states],
        "seed": int(seed),
        "train_config": to_dict(resolved),
        "data_sha256": {s.label: s.sha256 for s in states},
        "test_metrics": test["overall"],
        "validation_metrics": val["overall"],
        "best_epoch": schedule.best_epoch,
        "epochs": epoch,
    }
    potential_cpu = potential.to("cpu")
    model_path = save_potential(potential_cpu, out_dir / "model.safetensors", provenance=provenance)
    from thermocg.config import write_resolved
    from thermocg.rundir import atomic_write_text

    atomic_write_text(out_dir / "test_metrics.json", json.dumps(_json_safe(metrics), indent=1))
    automatic = automatic_choices(config, resolved, potential_cpu)
    write_resolved(resolved, out_dir / "resolved.yaml", extra={
        "automatic": automatic, "model": description, "seed": int(seed), "data_sha256": provenance["data_sha256"]})
    try:
        plot_learning_curve(history, out_dir / "learning_curve.png")
        plot_parity(predictions or {}, out_dir / "parity.png", metrics=test)
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        pass
    return TrainResult(model_path=model_path, metrics=metrics, potential=potential_cpu, config=resolved,
                       history=history, out_dir=out_dir, automatic=automatic)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _json_safe(value.item())
    return value


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------

def plot_learning_curve(history: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Training and validation loss per epoch (log scale), with the validation force RMSE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from thermocg.rundir import atomic_savefig

    fig, (ax_loss, ax_rmse) = plt.subplots(1, 2, figsize=(9, 3.6))
    epochs = [r["epoch"] for r in history]
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], label="validation")
    ax_rmse.plot(epochs, [r["val_force_rmse_kcal_mol_A"] for r in history], color="C1")
    for prev, row in zip(history, history[1:]):
        if row["batch_size"] != prev["batch_size"] or row["learning_rate"] != prev["learning_rate"]:
            for ax in (ax_loss, ax_rmse):
                ax.axvline(row["epoch"], color="0.8", lw=0.8, zorder=0)
    ax_loss.set(xlabel="epoch", ylabel="loss (force units of the force scale)", yscale="log")
    ax_rmse.set(xlabel="epoch", ylabel="validation force RMSE (kcal/mol/A)", yscale="log")
    ax_loss.legend(frameon=False)
    fig.suptitle("force matching (grey lines: batch size or learning rate changed)", fontsize=9)
    fig.tight_layout()
    out = atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
    return out


def plot_parity(predictions: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, *,
                metrics: dict[str, Any] | None = None, max_points: int = 20000) -> Path:
    """Predicted vs reference force components of the test frames, one colour per state point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from thermocg.rundir import atomic_savefig

    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    rng = np.random.default_rng(0)  # a fixed subsample, for the figure only
    lo, hi = 0.0, 0.0
    for k, (label, (pred, ref)) in enumerate(predictions.items()):
        p, r = pred.ravel(), ref.ravel()
        if p.size > max_points:
            pick = rng.choice(p.size, max_points, replace=False)
            p, r = p[pick], r[pick]
        lo, hi = min(lo, r.min(), p.min()), max(hi, r.max(), p.max())
        m = (metrics or {}).get("per_state", {}).get(label)
        extra = f" (RMSE {m['rmse']:.3g}, R$^2$ {m['r2']:.4f})" if m else ""
        ax.scatter(r, p, s=2, alpha=0.3, color=f"C{k}", label=f"{label}{extra}", rasterized=True)
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    ax.set(xlabel="reference force (kcal/mol/A)", ylabel="predicted force (kcal/mol/A)",
           title="test-set force parity")
    if predictions:
        ax.legend(frameon=False, fontsize=7, markerscale=4)
    fig.tight_layout()
    out = atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------------

def run_train(config: Any, run_dir: str | os.PathLike, *, name: str | None = None,
              train_states: list[str] | None = None) -> Path:
    """Train on RUN_DIR/cg/<label>.h5md of the chosen states; write RUN_DIR/models/<name>/.

    ``train_states``: state labels (default: ``config.train.train_states``, else every CG dataset).
    Returns the path of ``model.safetensors``.
    """
    from thermocg.config import write_resolved
    from thermocg.dataset import read_frames
    from thermocg.rundir import RunDir

    tc: TrainConfig = config.train
    if not isinstance(tc, TrainConfig):
        raise ConfigError("train: the config's train section is not a TrainConfig")
    rd = RunDir(run_dir)
    name = name or tc.name
    labels = list(train_states or tc.train_states or [])
    if labels:
        paths = [rd.cg_dataset(label) for label in labels]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise TrainError(f"train: no CG dataset {', '.join(missing)}; run `thermocg map` for these states first")
    else:
        paths = rd.cg_datasets()
        if not paths:
            raise TrainError(f"train: no CG datasets in {rd.root / 'cg'}; run `thermocg map` first")
    frames_list = [read_frames(p) for p in paths]
    torch.set_num_threads(tc.n_threads)
    out_dir = rd.model(name)
    result = train_potential(frames_list, tc, out_dir, seed=int(config.seed))
    full = copy.deepcopy(config)
    full.train = result.config
    from thermocg import provenance

    write_resolved(full, out_dir / "resolved.yaml", extra={
        "automatic": result.automatic,
        "inputs": provenance.collect([str(p) for p in paths])["inputs"],
        "model": result.potential.describe(),
        "test_metrics": _json_safe(result.metrics["overall"]),
    })
    return result.model_path
