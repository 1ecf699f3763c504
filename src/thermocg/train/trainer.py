"""The force-matching loop: loss, evaluation, the plateau schedule, checkpoints and the :class:`Trainer`."""

from __future__ import annotations

import copy
import csv
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from thermocg.analysis.forces import ForceErrorAccumulator, force_metrics
from thermocg.config import TrainConfig, result_dict, to_dict, write_resolved
from thermocg.frames import Frames, merged_type_names
from thermocg.progress import Progress, progress_mode
from thermocg.model_summary import ModelSummary
from thermocg.potentials.base import Potential, energy_and_forces, save_potential
from thermocg.rundir import atomic_path, atomic_write_text
from thermocg.train.choices import automatic_choices, build_model, check_cutoff, force_scale, resolve_choices
from thermocg.train.data import StateData, TrainError, TrainWarning, prepare_states
from thermocg.train.figures import plot_learning_curve, plot_parity
from thermocg.train.thermal import (ThermalTraining, adopt_temperature_range, state_temperature,
                                   training_temperatures)

CHECKPOINT_FORMAT = "thermocg-train-checkpoint"
CHECKPOINT_VERSION = 1
#: keys that may change between a run and its resumption besides those without effect on results
#: (config.NO_EFFECT): a longer max_epochs continues training; the training data enter by their hash
_RESUMABLE_KEYS = ("max_epochs", "train_states")


def force_loss(predicted: torch.Tensor, reference: torch.Tensor, kind: str = "rmse+mae",
               scale: float = 1.0) -> torch.Tensor:
    """The force-matching loss on all force components, in units of ``scale`` (see :mod:`thermocg.train`).

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
    type names (:meth:`StateData.for_model`). A temperature-dependent model is evaluated at each
    state's temperature.
    """
    acc = ForceErrorAccumulator(potential.type_names)
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s in states:
        idx = getattr(s, part)
        if len(idx) == 0:
            continue
        kept = []
        with state_temperature(potential, s):
            for sl, forces in _batched_forces(potential, s.positions[idx], s.box[idx], s.types,
                                              batch_size=batch_size):
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
    """(loss, force RMSE, force MAE) over the pooled validation frames of every state (each at its
    temperature, for a temperature-dependent model)."""
    preds, refs = [], []
    for s in states:
        if len(s.val):
            with state_temperature(potential, s):
                preds.append(predict_forces(potential, s.positions[s.val], s.box[s.val], s.types,
                                            batch_size=config.eval_batch_size).ravel())
            refs.append(s.forces[s.val].ravel())
    p, r = torch.from_numpy(np.concatenate(preds)), torch.from_numpy(np.concatenate(refs))
    loss = float(force_loss(p, r, config.loss, config.force_scale_kcal_mol_A))
    m = force_metrics(p.numpy(), r.numpy())
    return loss, m["rmse"], m["mae"]


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
    """One row per epoch: the fields of ``_METRIC_FIELDS``, then any further ones the rows carry (the
    validation terms of a temperature-dependent fit)."""
    extra = [k for k in (history[0] if history else {}) if k not in _METRIC_FIELDS]
    fields = list(_METRIC_FIELDS) + extra
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k) for k in fields})
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
    epoch's checkpoint is written. ``parallel``: this process's
    :class:`~thermocg.train.distributed.DataParallel` in a data-parallel fit (each batch split over the
    processes, gradients summed; rank 0 alone writes files); None: one process.
    """

    def __init__(self, config: TrainConfig, out_dir: str | os.PathLike, *, seed: int,
                 potential: Potential | None = None, resume: bool = True, progress: bool | None = None,
                 on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
                 parallel: Any = None) -> None:
        if not isinstance(config, TrainConfig):
            raise TrainError(f"config: expected a TrainConfig, got {type(config).__name__}")
        self.config = config
        self.out_dir = Path(out_dir)
        self.seed = int(seed)
        self.resume = resume
        self.show = config.progress if progress is None else progress
        self.on_epoch_end = on_epoch_end
        self.parallel = parallel
        self.device = torch.device(config.device) if parallel is None else parallel.training_device(config.device)
        self.show = self.show and self.writes
        self._given_potential = potential
        self.states: list[StateData] | None = None
        self.resolved: TrainConfig | None = None
        self.potential: Potential | None = None
        self.automatic: dict[str, Any] = {}
        #: the temperature-dependent part of the fit (None for a temperature-agnostic model)
        self.thermal: ThermalTraining | None = None
        self.fingerprint = ""
        self._checkpoint: dict[str, Any] | None = None
        self._started = time.perf_counter()
        self._wall_before = 0.0
        self._reset_fit()

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (always, but rank 0 only in a data-parallel fit)."""
        return self.parallel is None or self.parallel.is_writer

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
            resolved, prior = resolve_choices(self.config, states)
            type_names = prior.type_names if prior is not None else merged_type_names(states)
            temperatures = training_temperatures(states) if resolved.temperature_dependence != "none" else None
            potential = build_model(resolved, tuple(type_names), seed=self.seed, prior=prior,
                                    temperature_range_K=temperatures and (temperatures[0], temperatures[-1]))
            states = [s.for_model(potential.type_names) for s in states]
        else:
            potential = self._given_potential.to(getattr(torch, self.config.dtype))
            states = [s.for_model(potential.type_names) for s in states]
            check_cutoff(potential.cutoff_A, states, "cutoff", " (the cutoff of the potential being trained)")
            resolved = copy.deepcopy(self.config)
            resolved.cutoff_A = potential.cutoff_A
            if resolved.force_scale_kcal_mol_A is None:
                resolved.force_scale_kcal_mol_A = force_scale(states)
            adopt_temperature_range(resolved, potential, states)
        self.states, self.resolved = states, resolved
        self.potential = potential.to(self.device)
        self.thermal = None
        if self.potential.temperature_dependent:
            self.thermal = ThermalTraining(resolved, self.potential, states).to(self.device)
            if self.parallel is not None and self.thermal.uses_energies:
                # force matching shards by frame (each frame at its state's temperature); the energy terms
                # do not: their per-state offsets and covariances need every frame of a state at once
                raise TrainError("train: data-parallel training with energy matching or the thermal response "
                                 f"(train.energy_weight: {resolved.energy_weight}, train.thermal_response_weight: "
                                 f"{resolved.thermal_response_weight}) is not supported; set both to 0, or train "
                                 "in one process")
        description = self.potential.describe()
        self.fingerprint = _fingerprint(resolved, states, self.seed, description)
        if self.parallel is not None:
            self.parallel.check_same(self.fingerprint, "the training data, resolved config, model or seed")
        self._checkpoint = self._matching_checkpoint()
        if self.parallel is not None:  # every rank resumes from the same epoch, or none does
            found = "none" if self._checkpoint is None else f"epoch {self._checkpoint['epoch']}"
            self.parallel.check_same(found, f"the checkpoint found in {self.out_dir}")
        self.automatic = automatic_choices(self.config, resolved, self.potential)
        if not self.writes:
            return resolved
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
        parameters = list(self.potential.parameters())
        if self.thermal is not None:
            self.thermal.start(self.potential, self.states, batch_size=resolved.eval_batch_size)
            parameters += list(self.thermal.parameters())
        self.optimizer = torch.optim.Adam(parameters, lr=resolved.learning_rate)
        self.schedule = PlateauSchedule(batch_size=resolved.batch_size, learning_rate=resolved.learning_rate)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.best_weights = _state_dict_copy(self.potential)
        if self._checkpoint is not None:
            self._restore(self._checkpoint)
        if self.parallel is not None:
            self.parallel.broadcast_module(self.potential)
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
        if self.thermal is not None:
            self.thermal.load_state_dict(payload["thermal"])
        if self.epoch >= resolved.max_epochs:
            self.schedule.finished = True
        elif self.schedule.finished and self.schedule.epochs_since_best < resolved.early_stopping_epochs:
            self.schedule.finished = False  # max_epochs was raised

    def save_checkpoint(self) -> Path:
        """Write the whole state of the fit to ``out_dir/checkpoint.pt``, atomically (not on ranks > 0)."""
        if not self.writes:
            return self.checkpoint_path
        payload = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "fingerprint": self.fingerprint,
            "epoch": self.epoch, "model": _state_dict_copy(self.potential), "optimizer": self.optimizer.state_dict(),
            "schedule": dataclasses.asdict(self.schedule), "generator": self.generator.get_state(),
            "best_model": self.best_weights, "history": self.history,
        }
        if self.thermal is not None:
            payload["thermal"] = _state_dict_copy(self.thermal)
        with atomic_path(self.checkpoint_path) as partial:
            torch.save(payload, partial)
        return self.checkpoint_path

    def fit(self) -> list[dict[str, Any]]:
        """Train until the schedule stops (early stopping or ``max_epochs``); returns the history.

        One row per epoch: train_loss and val_loss (dimensionless, see :mod:`thermocg.train`), the
        validation force RMSE and MAE (kcal/mol/A), batch_size, learning_rate, best (1 for a new
        best validation loss) and wall_s (cumulative seconds, over resumed sessions too).
        """
        self._start_fit()
        resolved = self.resolved
        start = time.perf_counter()
        bar = Progress(resolved.max_epochs, description="train", unit="epochs",
                       initial=min(self.epoch, resolved.max_epochs), mode="auto" if self.show else "off")
        if self.epoch and self.show:
            bar.write(f"train: resuming from {self.checkpoint_path} after epoch {self.epoch}")
        try:
            while not self.schedule.finished and self.epoch < resolved.max_epochs:
                row = self._epoch(start)
                bar.set_postfix(f"train {row['train_loss']:.4g}, val {row['val_loss']:.4g}, force RMSE "
                                f"{row['val_force_rmse_kcal_mol_A']:.3g}, batch {row['batch_size']}, "
                                f"lr {row['learning_rate']:.2g}")
                bar.update(1)
                if self.on_epoch_end is not None:
                    self.on_epoch_end(self.epoch, row)
        finally:
            bar.close()
        if self.history and self.writes:
            _write_metrics_csv(self.out_dir / "metrics.csv", self.history)
        return self.history

    def _epoch(self, start: float) -> dict[str, Any]:
        """One epoch: a pass over the training batches, validation, the schedule, the checkpoint."""
        resolved, schedule = self.resolved, self.schedule
        self.epoch += 1
        batch_size, learning_rate = schedule.batch_size, schedule.learning_rate
        train_loss = self._train_pass()
        if self.parallel is None:
            val_loss, val_rmse, val_mae, val_terms = self._validate()
        else:
            val_loss, val_rmse, val_mae = self.parallel.validation_loss(self.potential, self.states, resolved,
                                                                        self.device)
            val_terms = {}
        row = {"epoch": self.epoch, "train_loss": train_loss, "val_loss": val_loss,
               "val_force_rmse_kcal_mol_A": val_rmse, "val_force_mae_kcal_mol_A": val_mae,
               "batch_size": batch_size, "learning_rate": learning_rate, **val_terms}
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
        if self.writes:
            _write_metrics_csv(self.out_dir / "metrics.csv", self.history)
        return row

    def _train_pass(self) -> float:
        """One pass over every training frame in shuffled batches of one state; the mean batch loss."""
        potential = self.potential
        potential.train()
        batches = _epoch_batches(self.states, self.schedule.batch_size, self.generator)
        step = self._step if self.parallel is None else functools.partial(self.parallel.train_step, self)
        total, n_batches = 0.0, 0
        # batches within an epoch: a bar on a terminal only (in a log file the epoch lines say enough)
        inner = Progress(len(batches), description=f"epoch {self.epoch}", unit="batches", leave=False,
                         mode="bar" if self.show and progress_mode() == "bar" else "off")
        for k, idx in batches:
            value = step(self.states[k], idx)
            if not math.isfinite(value):
                raise TrainError(f"training diverged at epoch {self.epoch}: the loss is {value}; lower "
                                 "train.learning_rate, or check the CG forces for outliers")
            total += value
            n_batches += 1
            inner.set_postfix(f"loss {total / n_batches:.4g}")
            inner.update(1)
        inner.close()
        potential.eval()
        return total / max(n_batches, 1)

    def _step(self, s: StateData, idx: np.ndarray) -> float:
        """One optimiser step on the frames ``idx`` of state ``s``; returns the batch loss."""
        potential, resolved, dtype = self.potential, self.resolved, self.potential.dtype
        if self.thermal is not None:
            loss = self._thermal_batch_loss(s, idx)
        else:
            positions = torch.as_tensor(s.positions[idx], dtype=dtype, device=self.device)
            box = torch.as_tensor(s.box[idx], dtype=dtype, device=self.device)
            reference = torch.as_tensor(s.forces[idx], dtype=dtype, device=self.device)
            _, forces = energy_and_forces(potential, positions, box, s.types, create_graph=True)
            loss = force_loss(forces, reference, resolved.loss, resolved.force_scale_kcal_mol_A)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    # ---- the temperature-dependent fit (thermocg.train.thermal): each state's temperature, energy terms
    def _thermal_batch_loss(self, s: StateData, idx: np.ndarray) -> torch.Tensor:
        """The loss of one batch of state ``s`` at its temperature, with the energy and thermal-response terms."""
        resolved = self.resolved
        out = self.thermal.residuals(self.potential, s, idx, create_graph=True)
        force_term = force_loss(out["F"], out["f"], resolved.loss, resolved.force_scale_kcal_mol_A)
        return self.thermal.combine(force_term, out.get("d_E"), out.get("d_R"))

    def _validate(self) -> tuple[float, float, float, dict[str, float]]:
        """(loss, force RMSE, force MAE, further terms) over the pooled validation frames; for a
        temperature-dependent fit the loss has the energy and thermal-response terms, also reported
        (dimensionless RMS of the scaled residuals) as ``val_energy_term`` and ``val_response_term``."""
        resolved = self.resolved
        if self.thermal is None or not self.thermal.uses_energies:
            return (*_validation_loss(self.potential, self.states, resolved), {})
        pooled = self.thermal.evaluate(self.potential, self.states, "val", batch_size=resolved.eval_batch_size)
        p, r = torch.from_numpy(pooled["F"]), torch.from_numpy(pooled["f"])
        force_term = force_loss(p, r, resolved.loss, resolved.force_scale_kcal_mol_A)
        terms = {name: None if pooled[key] is None else torch.from_numpy(pooled[key])
                 for name, key in (("val_energy_term", "d_E"), ("val_response_term", "d_R"))}
        loss = float(self.thermal.combine(force_term, terms["val_energy_term"], terms["val_response_term"]))
        m = force_metrics(p.numpy(), r.numpy())
        extra = {name: float(t.square().mean().sqrt()) for name, t in terms.items() if t is not None}
        return loss, m["rmse"], m["mae"], extra

    def finalize(self) -> TrainResult:
        """Load the best weights; evaluate the test (and validation) frames once; write
        ``model.safetensors`` (with provenance), ``test_metrics.json``, ``learning_curve.png`` and
        ``parity.png``; warn (:class:`TrainWarning`) when training stopped at max_epochs while
        still improving. In a data-parallel fit, ranks > 0 wait for rank 0 to write all that and
        return the best weights without metrics or summary."""
        resolved, potential, states = self._need("resolved", "resolve"), self.potential, self.states
        self._need("schedule", "fit")
        potential.load_state_dict(self.best_weights)
        potential.eval()
        if not self.writes:
            self.parallel.barrier()
            return TrainResult(model_path=self.out_dir / "model.safetensors", metrics={}, potential=potential.to("cpu"),
                               config=resolved, history=self.history, out_dir=self.out_dir, automatic=self.automatic)
        test = evaluate(potential, states, "test", batch_size=resolved.eval_batch_size)
        val = evaluate(potential, states, "val", batch_size=resolved.eval_batch_size, keep_predictions=False)
        predictions = test.pop("predictions")
        metrics = {**test, "validation": val, "best_epoch": self.schedule.best_epoch, "epochs": self.epoch,
                   "split": {s.label: {"train": int(len(s.train)), "val": int(len(s.val)), "test": int(len(s.test))}
                             for s in states}}
        if self.thermal is not None and self.thermal.uses_energies:
            metrics["energy"] = self.thermal.energy_errors(potential, states, "test", batch_size=resolved.eval_batch_size)
        potential.set_temperature(None)  # a setting of a run, not of the model
        provenance = {
            "training_states": [s.label for s in states], "seed": self.seed, "train_config": to_dict(resolved),
            "data_sha256": {s.label: s.sha256 for s in states}, "test_metrics": test["overall"],
            "validation_metrics": val["overall"], "best_epoch": self.schedule.best_epoch, "epochs": self.epoch,
        }
        potential_cpu = potential.to("cpu")
        model_path = save_potential(potential_cpu, self.out_dir / "model.safetensors", provenance=provenance)
        atomic_write_text(self.out_dir / "test_metrics.json", json.dumps(json_safe(metrics), indent=1))
        plot_learning_curve(self.history, self.out_dir / "learning_curve.png")
        plot_parity(predictions, self.out_dir / "parity.png", metrics=test)
        summary = self._summary(model_path, test["overall"])
        if self.parallel is not None:
            self.parallel.barrier()
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
            cutoff_A=float(self.potential.cutoff_A),
            n_parameters=int(sum(p.numel() for p in self.potential.parameters())))

    def run(self, frames_list: Frames | Sequence[Frames]) -> TrainResult:
        """prepare -> resolve -> fit -> finalize."""
        self.prepare(frames_list)
        self.resolve()
        self.fit()
        return self.finalize()


def train_potential(train_frames: Frames | Sequence[Frames], config: TrainConfig, out_dir: str | os.PathLike, *,
                    seed: int, potential: Potential | None = None, resume: bool = True, progress: bool | None = None,
                    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
                    parallel: Any = None) -> TrainResult:
    """Train a potential on the CG forces of ``train_frames`` (one Frames per state point).

    Writes to ``out_dir``: ``model.safetensors`` (best-validation weights, with provenance),
    ``metrics.csv`` (one row per epoch), ``test_metrics.json``, ``learning_curve.png``,
    ``parity.png``, ``resolved.yaml`` and ``checkpoint.pt`` (for resuming). The arguments are those
    of :class:`Trainer`, which does the work (``Trainer(...).run(train_frames)``).
    """
    trainer = Trainer(config, out_dir, seed=seed, potential=potential, resume=resume, progress=progress,
                      on_epoch_end=on_epoch_end, parallel=parallel)
    return trainer.run(train_frames)


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and NaN/inf as None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return json_safe(value.item())
    return value
