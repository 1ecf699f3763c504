"""Force matching: train a CG potential (HIP-NN-TS + repulsive prior) on mapped all-atom forces.

The model U_theta(R) of a CG configuration R (n_beads, 3) A is fitted so that its forces
F_theta = -dU_theta/dR (kcal/mol/A) match the mapped all-atom forces F_ref of every training frame.
The loss of a batch, over the force components of all its beads, in units of a force scale s
(kcal/mol/A; by default the RMS of the training force components, so the loss is dimensionless;
Adam's update does not depend on that constant):

    d = (F_theta - F_ref) / s
    rmse = sqrt(mean(d^2)),  mae = mean(|d|),  mse = mean(d^2)
    loss = rmse + mae   (default; or "rmse", "mae", "mse")

Optimisation (the reference study; equations and hyperparameters in docs/hipnn_ts.md): Adam; the
batch starts at ``batch_size`` frames and doubles (up to ``max_batch_size``) whenever the validation
loss has not reached a new best for ``patience_epochs`` epochs; at the largest batch further plateaus
multiply the learning rate by ``lr_factor``. Training stops after ``early_stopping_epochs`` epochs
without a new best, or at ``max_epochs``; the weights of the best validation epoch are kept.

Splits are by contiguous time blocks, never random frames: neighbouring frames are correlated, and a
random split would put near copies of training frames into the validation and test sets. Each state
point's trajectory is cut into ``n_blocks`` equal blocks in time; within a block the first 80% of
frames train, the next 10% validate and the last 10% test (``split``). The test set is evaluated
once, at the end, with the best weights.

Several state points are pooled into one model; a batch holds frames of one state point (they may
differ in bead count), and the batches of all states are shuffled together each epoch with a
seeded ``torch.Generator``. Metrics (force RMSE, MAE and R^2 = 1 - SSE/SST over force components,
:mod:`thermocg.analysis.forces`) are reported overall, per state point and per bead type.

The work is split as hippynn splits its own (set-up parameters, a plateau controller, the training
loop) into the parts of a :class:`Trainer`:

- ``prepare``: validate each state's frames once, apply ``frame_stride`` once, split, hash;
- ``resolve``: fill every automatic choice from the prepared frames, build the model, check a
  checkpoint found in the output directory, write ``resolved.yaml``;
- ``fit``: the epoch loop with the :class:`PlateauSchedule`, a checkpoint after every epoch;
- ``finalize``: best weights, the test set once, the model file, ``test_metrics.json``, figures.

A checkpoint (model, optimiser, schedule, generator state, best weights, history) is written
atomically after every epoch; training again with the same data, config and seed resumes from it and
gives the same weights as an uninterrupted run. On CPU, one seed gives identical weights run after
run.

Automatic choices (each overridable in :class:`thermocg.config.TrainConfig`, each written to
``resolved.yaml``): the cutoff, :func:`automatic_cutoff_A` of the training frames' boxes; the
prior's taper (RDF onset per type pair) and strength (mean |F|) from
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
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from thermocg.analysis.forces import ForceErrorAccumulator, force_metrics
from thermocg.config import Config, ConfigError, TrainConfig, result_dict, to_dict, write_resolved
from thermocg.frames import Frames, merged_type_names
from thermocg.model_summary import ModelSummary
from thermocg.neighbors import check_cutoff_fits, perpendicular_widths
from thermocg.potentials.base import Potential, energy_and_forces, save_potential
from thermocg.rundir import atomic_path, atomic_savefig, atomic_write_text

__all__ = [
    "TrainError",
    "TrainWarning",
    "TrainResult",
    "ModelSummary",
    "StateData",
    "Trainer",
    "PlateauSchedule",
    "split_indices",
    "prepare_states",
    "automatic_cutoff_A",
    "resolve_train_config",
    "automatic_choices",
    "build_model",
    "force_loss",
    "force_metrics",
    "predict_forces",
    "evaluate",
    "train_potential",
    "run_train",
    "plot_learning_curve",
    "plot_parity",
]

#: the reference study's cutoff, A
REFERENCE_CUTOFF_A = 15.0
#: the automatic cutoff stays this fraction below half the shortest box width (see automatic_cutoff_A)
BOX_MARGIN = 0.999
#: the reference study's dist_soft_max / dist_hard_max (13 A / 15 A)
SOFT_MAX_FRACTION = 13.0 / 15.0
CHECKPOINT_FORMAT = "thermocg-train-checkpoint"
CHECKPOINT_VERSION = 1
#: keys that may change between a run and its resumption besides those without effect on results
#: (config.NO_EFFECT): a longer max_epochs continues training; the training data enter by their hash
_RESUMABLE_KEYS = ("max_epochs", "train_states")


class TrainError(ValueError):
    """Training data or settings that cannot work; the message names the state/key and the problem."""


class TrainWarning(UserWarning):
    """Training that finished but may not have converged (stopped at max_epochs while improving)."""


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
    """One state point's frames, validated, strided and split.

    positions, forces (n_frames, n_beads, 3) A, kcal/mol/A; box (n_frames, 3, 3) A; types (n_beads,)
    indices into ``type_names`` (the state's own names after :func:`prepare_states`, the model's
    after :meth:`for_model`); train/val/test: frame indices; sha256: the hash of the (strided)
    frames, which the resume check compares.
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
               type_names: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for array in (positions, forces, box, types):
        h.update(np.ascontiguousarray(array).tobytes())
    h.update(json.dumps(list(type_names)).encode())
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
        train, val, test = split_indices(len(positions), config.split, n_blocks=config.n_blocks, where=where)
        states.append(StateData(
            label=label, positions=positions, forces=forces, box=box, types=frames.types,
            type_names=tuple(frames.type_names), train=train, val=val, test=test,
            sha256=_data_hash(positions, forces, box, frames.types, tuple(frames.type_names)),
        ))
    return states


# --------------------------------------------------------------------------------------------------
# automatic choices and the model
# --------------------------------------------------------------------------------------------------

def automatic_cutoff_A(boxes: Iterable[np.ndarray], *, largest_A: float = REFERENCE_CUTOFF_A) -> float:
    """The HIP-NN-TS cutoff chosen from the periodic boxes a model will meet, A.

    cutoff = min(largest_A, floor_0.01A(0.999 w / 2)), w the shortest perpendicular width
    (:func:`thermocg.neighbors.perpendicular_widths`) over every box given, floored to 0.01 A.
    Beyond w / 2 a bead would meet two images of one neighbour, which a minimum-image model does not
    intend; the 0.1% margin keeps the cutoff strictly inside the box, so round-off in a box read
    back from a file, or a fluctuating NPT box, cannot push it over. ``largest_A``: the reference
    study's 15 A, the value in boxes wider than 30 A.

    ``boxes``: arrays (3, 3) or (n_frames, 3, 3) A, rows the cell vectors (triclinic allowed); pass
    the boxes of every state point the model will be simulated at (the study does), or of its
    training frames (the trainer does when ``train.cutoff_A`` is null).
    """
    if not largest_A > 0:
        raise ValueError(f"automatic_cutoff_A: largest_A must be positive, got {largest_A}")
    half, n_boxes = math.inf, 0
    for box in boxes:
        cells = np.asarray(box, dtype=np.float64).reshape(-1, 3, 3)
        n_boxes += len(cells)
        for cell in np.unique(cells, axis=0):  # NVT: one box for every frame
            half = min(half, float(perpendicular_widths(cell).min()) / 2.0)
    if n_boxes == 0:
        raise ValueError("automatic_cutoff_A: no boxes given")
    if not math.isfinite(half) or half <= 0:
        raise ValueError(f"automatic_cutoff_A: degenerate box (half the shortest width is {half} A)")
    cutoff = min(float(largest_A), float(np.floor(half * BOX_MARGIN * 100) / 100))
    if cutoff <= 0:
        raise ValueError(f"automatic_cutoff_A: the boxes are too small for any cutoff (half the shortest "
                         f"perpendicular width is {half:.4g} A)")
    return cutoff


def _check_cutoff(cutoff_A: float, states: Sequence[StateData], key: str, hint: str) -> None:
    """A TrainError unless ``cutoff_A`` fits half the shortest box width of every state."""
    for s in states:
        try:
            check_cutoff_fits(cutoff_A, s.box, what=f"state {s.label}: {key}")
        except ValueError as exc:
            raise TrainError(f"{exc}{hint}") from None


def _force_scale(states: Sequence[StateData]) -> float:
    """The RMS of every training force component, kcal/mol/A (1 if they are all zero)."""
    squares, count = 0.0, 0
    for s in states:
        f = s.forces[s.train]
        squares += float(np.sum(f * f))
        count += f.size
    scale = math.sqrt(squares / max(count, 1))
    return scale if scale > 0 else 1.0


def _resolve_choices(config: TrainConfig, states: Sequence[StateData]) -> tuple[TrainConfig, Any]:
    """Fill every ``None`` of ``config`` from the prepared states; returns (resolved config, prior or None).

    - cutoff_A: :func:`automatic_cutoff_A` of every state's boxes; a given cutoff beyond half a box
      is an error.
    - prior taper/strength: :func:`~thermocg.potentials.priors.derive_repulsive_prior` on the
      training frames (taper at the first r where the CG RDF exceeds ``prior_threshold``,
      strength the mean |F| of the CG forces); the smallest taper is the RDF onset.
    - dist_soft_min_A = max(onset - 1 A, onset / 2); dist_soft_max_A = 13/15 cutoff.
    - force_scale_kcal_mol_A: the RMS of all training force components.
    """
    resolved = copy.deepcopy(config)
    if resolved.cutoff_A is None:
        resolved.cutoff_A = automatic_cutoff_A(s.box for s in states)
    else:
        _check_cutoff(resolved.cutoff_A, states, "train.cutoff_A",
                      "; or leave train.cutoff_A null to have it chosen from the boxes")
    prior = None
    onset = resolved.prior_taper_A
    if resolved.prior or (resolved.dist_soft_min_A is None and onset is None):
        from thermocg.potentials.priors import derive_repulsive_prior

        prior = derive_repulsive_prior([s.frames("train") for s in states], threshold=resolved.prior_threshold,
                                       dr_A=resolved.prior_dr_A, perc=resolved.prior_perc)
        if onset is None:
            onset = float(np.min(np.asarray(prior.hyperparameters()["taper_A"], dtype=np.float64)))
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
        resolved.force_scale_kcal_mol_A = _force_scale(states)
    if not resolved.prior:
        return resolved, None
    # the per-pair taper and strength tables are recorded in the model description
    return resolved, _prior_with_overrides(prior, resolved)


def resolve_train_config(config: TrainConfig, frames_list: Frames | Sequence[Frames]) -> tuple[TrainConfig, Any]:
    """The automatic choices of :class:`Trainer` for ``frames_list`` (with ``config.frame_stride`` and
    ``config.split`` applied): (resolved config, the derived prior or None). See the module doc."""
    return _resolve_choices(config, prepare_states(frames_list, config))


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
# loss and evaluation
# --------------------------------------------------------------------------------------------------

def force_loss(predicted: torch.Tensor, reference: torch.Tensor, kind: str = "rmse+mae",
               scale: float = 1.0) -> torch.Tensor:
    """The force-matching loss on all force components, in units of ``scale`` (see module doc).

    predicted, reference: tensors of one shape, kcal/mol/A; scale: kcal/mol/A; returns a scalar.
    """
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


def _batched_forces(potential: Potential, positions: np.ndarray, box: np.ndarray, types: np.ndarray, *,
                    batch_size: int) -> Iterator[tuple[slice, np.ndarray]]:
    """(frame slice, forces (n, n_beads, 3) kcal/mol/A float64) for ``batch_size`` frames at a time."""
    with _frozen(potential):
        for start in range(0, len(positions), batch_size):
            sl = slice(start, start + batch_size)
            _, forces = energy_and_forces(potential, positions[sl], box[sl], types)
            yield sl, forces.cpu().to(torch.float64).numpy()


def predict_forces(potential: Potential, positions: np.ndarray, box: np.ndarray, types: np.ndarray, *,
                   batch_size: int = 8) -> np.ndarray:
    """Forces (n_frames, n_beads, 3) kcal/mol/A of ``potential`` on frames; ``types`` are model indices."""
    out = np.zeros(positions.shape, dtype=np.float64)
    for sl, forces in _batched_forces(potential, positions, box, types, batch_size=batch_size):
        out[sl] = forces
    return out


def evaluate(potential: Potential, states: Sequence[StateData], part: str, *, batch_size: int = 8,
             keep_predictions: bool = True) -> dict[str, Any]:
    """Force errors of ``potential`` on the ``part`` ("train", "val", "test") frames of every state.

    Returns {"overall": metrics + "n_frames", "per_state": {label: metrics + "n_frames" +
    "per_type"}, "per_type": {type: metrics}} with the metrics of
    :class:`thermocg.analysis.forces.ForceMetrics` (rmse, mae, r2, reference_rms, n_components), and,
    with ``keep_predictions``, "predictions": {label: (predicted, reference)} arrays
    (n_frames, n_beads, 3) kcal/mol/A for the parity figure. ``states`` must be bound to the model's
    type names (:meth:`StateData.for_model`).
    """
    acc = ForceErrorAccumulator(potential.type_names)
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s in states:
        idx = getattr(s, part)
        if len(idx) == 0:
            continue
        kept = []
        for sl, forces in _batched_forces(potential, s.positions[idx], s.box[idx], s.types, batch_size=batch_size):
            acc.add(forces, s.forces[idx[sl]], s.types, type_names=s.type_names, state=s.label)
            kept.append(forces)
        if keep_predictions:
            predictions[s.label] = (np.concatenate(kept), s.forces[idx])
    out: dict[str, Any] = {
        "overall": {**acc.metrics().to_dict(), "n_frames": acc.n_frames()},
        "per_state": {label: acc.report(label) for label in acc.states},
        "per_type": {name: m.to_dict() for name, m in acc.per_type().items()},
    }
    if keep_predictions:
        out["predictions"] = predictions
    return out


def _validation_loss(potential: Potential, states: Sequence[StateData], config: TrainConfig) -> tuple[float, float, float]:
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


# --------------------------------------------------------------------------------------------------
# the schedule and checkpoints
# --------------------------------------------------------------------------------------------------

@dataclass
class PlateauSchedule:
    """Batch-size doubling, then learning-rate decay, on validation plateaus; early stopping.

    The controller of the fit (hippynn's ``PatienceController`` with ``RaiseBatchSizeOnPlateau``
    plays this part there). Its fields are saved in the checkpoint.
    """

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


def _fingerprint(config: TrainConfig, states: Sequence[StateData], seed: int, description: dict[str, Any]) -> str:
    cfg = result_dict(config, drop=_RESUMABLE_KEYS)
    payload = {"config": cfg, "seed": seed, "data": [(s.label, s.sha256) for s in states], "model": description}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


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


_METRIC_FIELDS = ("epoch", "train_loss", "val_loss", "val_force_rmse_kcal_mol_A", "val_force_mae_kcal_mol_A",
                  "batch_size", "learning_rate", "best", "wall_s")


def _write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row[k] for k in _METRIC_FIELDS})
    atomic_write_text(path, buffer.getvalue())


def _epoch_batches(states: Sequence[StateData], batch_size: int,
                   generator: torch.Generator) -> list[tuple[int, np.ndarray]]:
    """(state index, frame indices) of every batch of an epoch, in a seeded random order."""
    batches = []
    for k, s in enumerate(states):
        order = s.train[torch.randperm(len(s.train), generator=generator).numpy()]
        for start in range(0, len(order), batch_size):
            batches.append((k, np.sort(order[start:start + batch_size])))
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[p] for p in perm]


# --------------------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """What :func:`train_potential` (:meth:`Trainer.run`) produced."""

    model_path: Path
    #: test metrics (overall, per_state, per_type); validation metrics under "validation"
    metrics: dict[str, Any]
    potential: Potential
    config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    out_dir: Path | None = None
    #: the choices made from the data (see :func:`automatic_choices`)
    automatic: dict[str, Any] = field(default_factory=dict)
    #: the typed summary a stage returns (name: the output directory's name)
    summary: ModelSummary | None = None


class Trainer:
    """Force matching of one potential on the frames of one or several state points.

    Parts, called in this order by :meth:`run` (or one by one):

    - :meth:`prepare` (frames -> :class:`StateData`: validated once, strided once, split, hashed);
    - :meth:`resolve` (the automatic choices and the model; ``resolved.yaml``; a checkpoint found in
      ``out_dir`` is checked against this run here, before anything is written);
    - :meth:`fit` (epochs until the :class:`PlateauSchedule` stops; :meth:`save_checkpoint` after
      each epoch; resumes from the checkpoint that :meth:`resolve` accepted);
    - :meth:`finalize` (best weights, test metrics, model file, figures; a :class:`TrainResult`).

    ``config``: the ``train`` section; ``seed``: initial weights and batch order; ``potential``:
    train this module instead of the default HIP-NN-TS + prior (the cutoff, prior and sensitivity
    choices then do not apply); ``resume``: continue from ``out_dir/checkpoint.pt`` when it belongs
    to the same data, config and seed (a checkpoint of another run is an error); ``progress``:
    progress bars (default ``config.progress``); ``on_epoch_end(epoch, row)``: called after each
    epoch's checkpoint is written.
    """

    def __init__(self, config: TrainConfig, out_dir: str | os.PathLike, *, seed: int,
                 potential: Potential | None = None, resume: bool = True, progress: bool | None = None,
                 on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        if not isinstance(config, TrainConfig):
            raise TrainError(f"config: expected a TrainConfig, got {type(config).__name__}")
        self.config = config
        self.out_dir = Path(out_dir)
        self.seed = int(seed)
        self.resume = resume
        self.show = config.progress if progress is None else progress
        self.on_epoch_end = on_epoch_end
        self.device = torch.device(config.device)
        self._given_potential = potential
        self.states: list[StateData] | None = None
        self.resolved: TrainConfig | None = None
        self.potential: Potential | None = None
        self.automatic: dict[str, Any] = {}
        self.fingerprint = ""
        self._checkpoint: dict[str, Any] | None = None
        self._started = time.perf_counter()
        self._wall_before = 0.0
        self._reset_fit()

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def _need(self, what: str, part: str) -> Any:
        value = getattr(self, what)
        if value is None:
            raise RuntimeError(f"Trainer: call {part}() first")
        return value

    # ---- parts
    def prepare(self, frames_list: Frames | Sequence[Frames]) -> list[StateData]:
        """Validate, stride and split the frames of each state point (see :func:`prepare_states`)."""
        self._started = time.perf_counter()
        self.states = prepare_states(frames_list, self.config)
        self.resolved = self.potential = None
        return self.states

    def resolve(self) -> TrainConfig:
        """Make the automatic choices, build (or adopt) the model, check a checkpoint, write ``resolved.yaml``.

        Returns the resolved config; sets ``potential``, ``automatic`` and ``fingerprint``, and binds
        ``states`` to the model's bead types.
        """
        states = self._need("states", "prepare")
        if self._given_potential is None:
            resolved, prior = _resolve_choices(self.config, states)
            type_names = prior.type_names if prior is not None else merged_type_names(states)
            potential = build_model(resolved, tuple(type_names), seed=self.seed, prior=prior)
            states = [s.for_model(potential.type_names) for s in states]
        else:
            potential = self._given_potential.to(getattr(torch, self.config.dtype))
            states = [s.for_model(potential.type_names) for s in states]
            _check_cutoff(potential.cutoff_A, states, "cutoff", " (the cutoff of the potential being trained)")
            resolved = copy.deepcopy(self.config)
            resolved.cutoff_A = potential.cutoff_A
            if resolved.force_scale_kcal_mol_A is None:
                resolved.force_scale_kcal_mol_A = _force_scale(states)
        self.states, self.resolved = states, resolved
        self.potential = potential.to(self.device)
        description = self.potential.describe()
        self.fingerprint = _fingerprint(resolved, states, self.seed, description)
        self._checkpoint = self._matching_checkpoint()
        self.automatic = automatic_choices(self.config, resolved, self.potential)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_resolved(resolved, self.out_dir / "resolved.yaml", extra={
            "automatic": self.automatic, "model": description, "seed": self.seed,
            "data_sha256": {s.label: s.sha256 for s in states}})
        return resolved

    def _matching_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint in ``out_dir`` when resuming and it exists; an error if it is another run's."""
        if not (self.resume and self.checkpoint_path.exists()):
            return None
        payload = _load_checkpoint(self.checkpoint_path)
        if payload["fingerprint"] != self.fingerprint:
            raise TrainError(
                f"{self.checkpoint_path}: this checkpoint belongs to another run (different data, config or "
                "seed); train into another model directory (thermocg train --name), or delete the checkpoint "
                "to start afresh"
            )
        return payload

    def _reset_fit(self) -> None:
        self.optimizer: torch.optim.Optimizer | None = None
        self.schedule: PlateauSchedule | None = None
        self.generator: torch.Generator | None = None
        self.history: list[dict[str, Any]] = []
        self.best_weights: dict[str, torch.Tensor] = {}
        self.epoch = 0

    def _start_fit(self) -> None:
        """A fresh optimiser, schedule and batch-order generator, then the accepted checkpoint if any."""
        resolved = self._need("resolved", "resolve")
        self._reset_fit()
        self.optimizer = torch.optim.Adam(self.potential.parameters(), lr=resolved.learning_rate)
        self.schedule = PlateauSchedule(batch_size=resolved.batch_size, learning_rate=resolved.learning_rate)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.best_weights = _state_dict_copy(self.potential)
        if self._checkpoint is not None:
            self._restore(self._checkpoint)
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.learning_rate
        self._wall_before = self.history[-1]["wall_s"] if self.history else 0.0

    def _restore(self, payload: dict[str, Any]) -> None:
        resolved = self.resolved
        self.potential.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.schedule = PlateauSchedule(**payload["schedule"])
        self.generator.set_state(payload["generator"])
        self.history = [dict(row) for row in payload["history"]]
        self.best_weights = payload["best_model"]
        self.epoch = int(payload["epoch"])
        if self.epoch >= resolved.max_epochs:
            self.schedule.finished = True
        elif self.schedule.finished and self.schedule.epochs_since_best < resolved.early_stopping_epochs:
            self.schedule.finished = False  # max_epochs was raised

    def save_checkpoint(self) -> Path:
        """Write the whole state of the fit to ``out_dir/checkpoint.pt``, atomically."""
        payload = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "fingerprint": self.fingerprint,
            "epoch": self.epoch, "model": _state_dict_copy(self.potential), "optimizer": self.optimizer.state_dict(),
            "schedule": dataclasses.asdict(self.schedule), "generator": self.generator.get_state(),
            "best_model": self.best_weights, "history": self.history,
        }
        with atomic_path(self.checkpoint_path) as partial:
            torch.save(payload, partial)
        return self.checkpoint_path

    def fit(self) -> list[dict[str, Any]]:
        """Train until the schedule stops (early stopping or ``max_epochs``); returns the history.

        One row per epoch: train_loss and val_loss (dimensionless, see the module doc), the
        validation force RMSE and MAE (kcal/mol/A), batch_size, learning_rate, best (1 for a new
        best validation loss) and wall_s (cumulative seconds, over resumed sessions too).
        """
        from tqdm.auto import tqdm

        self._start_fit()
        resolved = self.resolved
        start = time.perf_counter()
        bar = tqdm(total=resolved.max_epochs, initial=self.epoch, desc="train", unit="epoch",
                   disable=not self.show, dynamic_ncols=True)
        if self.epoch and self.show:
            bar.write(f"train: resuming from {self.checkpoint_path} after epoch {self.epoch}")
        try:
            while not self.schedule.finished and self.epoch < resolved.max_epochs:
                row = self._epoch(start)
                bar.update(1)
                bar.set_postfix(train=f"{row['train_loss']:.4g}", val=f"{row['val_loss']:.4g}",
                                rmse=f"{row['val_force_rmse_kcal_mol_A']:.3g}", bs=row["batch_size"],
                                lr=f"{row['learning_rate']:.2g}")
                if self.on_epoch_end is not None:
                    self.on_epoch_end(self.epoch, row)
        finally:
            bar.close()
        if self.history:
            _write_metrics_csv(self.out_dir / "metrics.csv", self.history)
        return self.history

    def _epoch(self, start: float) -> dict[str, Any]:
        """One epoch: a pass over the training batches, validation, the schedule, the checkpoint."""
        resolved, schedule = self.resolved, self.schedule
        self.epoch += 1
        batch_size, learning_rate = schedule.batch_size, schedule.learning_rate
        train_loss = self._train_pass()
        val_loss, val_rmse, val_mae = _validation_loss(self.potential, self.states, resolved)
        row = {"epoch": self.epoch, "train_loss": train_loss, "val_loss": val_loss,
               "val_force_rmse_kcal_mol_A": val_rmse, "val_force_mae_kcal_mol_A": val_mae,
               "batch_size": batch_size, "learning_rate": learning_rate}
        improved = schedule.update(self.epoch, val_loss, resolved)
        row["best"] = int(improved)
        row["wall_s"] = self._wall_before + time.perf_counter() - start
        self.history.append(row)
        if improved:
            self.best_weights = _state_dict_copy(self.potential)
        for group in self.optimizer.param_groups:
            group["lr"] = schedule.learning_rate
        if self.epoch >= resolved.max_epochs:
            schedule.finished = True
        self.save_checkpoint()
        _write_metrics_csv(self.out_dir / "metrics.csv", self.history)
        return row

    def _train_pass(self) -> float:
        """One pass over every training frame in shuffled batches of one state; the mean batch loss."""
        from tqdm.auto import tqdm

        potential, resolved, dtype = self.potential, self.resolved, self.potential.dtype
        potential.train()
        batches = _epoch_batches(self.states, self.schedule.batch_size, self.generator)
        total, n_batches = 0.0, 0
        inner = tqdm(batches, desc=f"epoch {self.epoch}", leave=False, disable=not self.show, dynamic_ncols=True)
        for k, idx in inner:
            s = self.states[k]
            positions = torch.as_tensor(s.positions[idx], dtype=dtype, device=self.device)
            box = torch.as_tensor(s.box[idx], dtype=dtype, device=self.device)
            reference = torch.as_tensor(s.forces[idx], dtype=dtype, device=self.device)
            _, forces = energy_and_forces(potential, positions, box, s.types, create_graph=True)
            loss = force_loss(forces, reference, resolved.loss, resolved.force_scale_kcal_mol_A)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainError(f"training diverged at epoch {self.epoch}: the loss is {value}; lower "
                                 "train.learning_rate, or check the CG forces for outliers")
            total += value
            n_batches += 1
            inner.set_postfix(loss=f"{total / n_batches:.4g}")
        inner.close()
        potential.eval()
        return total / max(n_batches, 1)

    def finalize(self) -> TrainResult:
        """Load the best weights; evaluate the test (and validation) frames once; write
        ``model.safetensors`` (with provenance), ``test_metrics.json``, ``learning_curve.png`` and
        ``parity.png``; warn (:class:`TrainWarning`) when training stopped at max_epochs while
        still improving."""
        resolved, potential, states = self._need("resolved", "resolve"), self.potential, self.states
        potential.load_state_dict(self.best_weights)
        potential.eval()
        test = evaluate(potential, states, "test", batch_size=resolved.eval_batch_size)
        val = evaluate(potential, states, "val", batch_size=resolved.eval_batch_size, keep_predictions=False)
        predictions = test.pop("predictions")
        metrics = {**test, "validation": val, "best_epoch": self.schedule.best_epoch, "epochs": self.epoch,
                   "split": {s.label: {"train": int(len(s.train)), "val": int(len(s.val)), "test": int(len(s.test))}
                             for s in states}}
        provenance = {
            "training_states": [s.label for s in states], "seed": self.seed, "train_config": to_dict(resolved),
            "data_sha256": {s.label: s.sha256 for s in states}, "test_metrics": test["overall"],
            "validation_metrics": val["overall"], "best_epoch": self.schedule.best_epoch, "epochs": self.epoch,
        }
        potential_cpu = potential.to("cpu")
        model_path = save_potential(potential_cpu, self.out_dir / "model.safetensors", provenance=provenance)
        atomic_write_text(self.out_dir / "test_metrics.json", json.dumps(_json_safe(metrics), indent=1))
        plot_learning_curve(self.history, self.out_dir / "learning_curve.png")
        plot_parity(predictions, self.out_dir / "parity.png", metrics=test)
        summary = self._summary(model_path, test["overall"])
        return TrainResult(model_path=model_path, metrics=metrics, potential=potential_cpu, config=resolved,
                           history=self.history, out_dir=self.out_dir, automatic=self.automatic, summary=summary)

    def stopped_at_max_epochs(self) -> bool:
        """Whether the fit ended at ``max_epochs`` while still improving: the last epoch was the best,
        or a new best came within ``patience_epochs`` epochs of the end (no plateau yet)."""
        resolved, schedule = self._need("resolved", "resolve"), self.schedule
        if schedule is None or self.epoch < resolved.max_epochs:
            return False
        early_stopped = schedule.epochs_since_best >= resolved.early_stopping_epochs
        return not early_stopped and self.epoch - schedule.best_epoch < resolved.patience_epochs

    def _summary(self, model_path: Path, test: dict[str, Any]) -> ModelSummary:
        at_max = self.stopped_at_max_epochs()
        if at_max:
            warnings.warn(
                f"train: {self.out_dir.name} stopped at max_epochs = {self.epoch} while still improving (best "
                f"validation loss at epoch {self.schedule.best_epoch}); more epochs would likely lower the "
                "error: raise train.max_epochs (training resumes from its checkpoint)", TrainWarning, stacklevel=4)
        return ModelSummary(
            family="hipnn_ts" if self._given_potential is None else self.potential.kind,
            name=self.out_dir.name, model_path=model_path, train_states=tuple(s.label for s in self.states),
            wall_s=self._wall_before + (time.perf_counter() - self._started), n_epochs=self.epoch,
            best_epoch=self.schedule.best_epoch, stopped_at_max_epochs=at_max,
            test_force_rmse_kcal_mol_A=test["rmse"], test_force_mae_kcal_mol_A=test["mae"], test_r2=test["r2"],
            cutoff_A=float(self.potential.cutoff_A))

    def run(self, frames_list: Frames | Sequence[Frames]) -> TrainResult:
        """prepare -> resolve -> fit -> finalize."""
        self.prepare(frames_list)
        self.resolve()
        self.fit()
        return self.finalize()


def train_potential(train_frames: Frames | Sequence[Frames], config: TrainConfig, out_dir: str | os.PathLike, *,
                    seed: int, potential: Potential | None = None, resume: bool = True, progress: bool | None = None,
                    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Train a potential on the CG forces of ``train_frames`` (one Frames per state point).

    Writes to ``out_dir``: ``model.safetensors`` (best-validation weights, with provenance),
    ``metrics.csv`` (one row per epoch), ``test_metrics.json``, ``learning_curve.png``,
    ``parity.png``, ``resolved.yaml`` and ``checkpoint.pt`` (for resuming). The arguments are those
    of :class:`Trainer`, which does the work (``Trainer(...).run(train_frames)``).
    """
    trainer = Trainer(config, out_dir, seed=seed, potential=potential, resume=resume, progress=progress,
                      on_epoch_end=on_epoch_end)
    return trainer.run(train_frames)


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

def _dataset_paths(run_dir: Any, labels: list[str]) -> list[Path]:
    """RUN_DIR/cg/<label>.h5md of the given labels (all datasets when none), each checked to exist."""
    if labels:
        paths = [run_dir.cg_dataset(label) for label in labels]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise TrainError(f"train: no CG dataset {', '.join(missing)}; run `thermocg map` for these states first")
        return paths
    paths = run_dir.cg_datasets()
    if not paths:
        raise TrainError(f"train: no CG datasets in {run_dir.root / 'cg'}; run `thermocg map` first")
    return paths


def run_train(config: Config, run_dir: str | os.PathLike, *, name: str | None = None,
              train_states: list[str] | None = None) -> ModelSummary:
    """``thermocg train CONFIG``: train on RUN_DIR/cg/<label>.h5md of the chosen states; write
    RUN_DIR/models/<name>/ (see :func:`train_potential`; ``resolved.yaml`` there holds the whole
    config, the input hashes and the test metrics).

    ``train_states``: state labels (default: ``config.train.train_states``, else every CG dataset);
    ``name``: the model directory (default ``config.train.name``). Returns the
    :class:`~thermocg.model_summary.ModelSummary` of the model.
    """
    from thermocg import provenance
    from thermocg.dataset import read_frames
    from thermocg.rundir import RunDir

    if not isinstance(config, Config) or not isinstance(config.train, TrainConfig):
        raise ConfigError(f"train: expected a thermocg Config with a train section, got {type(config).__name__}")
    settings = config.train
    rd = RunDir(run_dir)
    paths = _dataset_paths(rd, list(train_states or settings.train_states or []))
    frames_list = [read_frames(p) for p in paths]
    torch.set_num_threads(settings.n_threads)
    out_dir = rd.model(name or settings.name)
    result = train_potential(frames_list, settings, out_dir, seed=int(config.seed))
    write_resolved(dataclasses.replace(config, train=result.config), out_dir / "resolved.yaml", extra={
        "automatic": result.automatic,
        "inputs": provenance.collect([str(p) for p in paths])["inputs"],
        "model": result.potential.describe(),
        "test_metrics": _json_safe(result.metrics["overall"]),
    })
    return result.summary
