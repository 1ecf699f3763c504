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

Modules: ``data`` (splits, :class:`StateData`), ``choices`` (:func:`automatic_cutoff_A` and the other
automatic choices, the model), ``trainer`` (loss, evaluation, :class:`PlateauSchedule`, checkpoints,
:class:`Trainer`), ``figures``, ``stage`` (:func:`run_train`, ``thermocg train``). Every public name
is importable from ``thermocg.train``.

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

from thermocg.analysis.forces import force_metrics
from thermocg.model_summary import ModelSummary
from thermocg.train.choices import (
    automatic_choices,
    automatic_cutoff_A,
    build_model,
    resolve_train_config,
)
from thermocg.train.data import StateData, TrainError, TrainWarning, prepare_states, split_indices
from thermocg.train.figures import plot_learning_curve, plot_parity
from thermocg.train.stage import run_train
from thermocg.train.trainer import (
    PlateauSchedule,
    Trainer,
    TrainResult,
    evaluate,
    force_loss,
    predict_forces,
    train_potential,
)

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

# the public home of these names is thermocg.train, whichever file defines them (as numpy's
# set_module does): reprs, pickles and thermocg's lazy API table all name this package
for _name in __all__:
    _value = globals()[_name]
    if getattr(_value, "__module__", "").startswith("thermocg.train."):
        _value.__module__ = __name__
del _name, _value
