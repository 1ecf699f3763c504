"""What a model-building stage made: one typed summary for every model family.

``thermocg.train.run_train`` (HIP-NN-TS) and ``thermocg.mscg.run_fit_pair`` (MS-CG) both return a
:class:`ModelSummary`, so that the study (or any caller) learns where the model is and how well it
fitted without re-reading the files just written or searching JSON for numbers.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ModelSummary"]


@dataclass(frozen=True)
class ModelSummary:
    """One trained (or fitted) CG potential.

    family: "hipnn_ts" (thermocg.train) or "mscg" (thermocg.mscg), the study's base families (its
    temperature-dependent families, e.g. "hipnn_ts_thermal", give their base family here; a potential
    of another kind trained by :class:`thermocg.train.Trainer` gives its kind); name: the model
    directory name under RUN_DIR/models; model_path: its ``model.safetensors``; train_states: labels of the state
    points whose frames it was fitted to; wall_s: wall-clock seconds spent building it (for a
    resumed training, the epochs of every session plus this call's preparation and writing);
    n_epochs, best_epoch: epochs run and the epoch whose weights were kept (None for MS-CG, a
    linear solve); stopped_at_max_epochs: training ended at ``train.max_epochs`` while still
    improving (the last epoch was the best, or a new best came within ``patience_epochs`` of the
    end), so more epochs would likely have helped; test_force_rmse_kcal_mol_A,
    test_force_mae_kcal_mol_A, test_r2: force errors on the held-out test frames of the training
    states, pooled (None when there are no test frames); cutoff_A: the model's interaction range;
    n_parameters: its trainable parameters (None where not counted: MS-CG, summaries of older versions).

    A summary stands for its model file where a path is expected (``os.fspath(summary)`` is
    ``model_path``).
    """

    family: str
    name: str
    model_path: Path
    train_states: tuple[str, ...]
    wall_s: float
    n_epochs: int | None
    best_epoch: int | None
    stopped_at_max_epochs: bool
    test_force_rmse_kcal_mol_A: float | None
    test_force_mae_kcal_mol_A: float | None
    test_r2: float | None
    cutoff_A: float
    n_parameters: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.family, str) or not self.family:
            raise ValueError(f"ModelSummary.family: expected a potential family name, got {self.family!r}")
        object.__setattr__(self, "model_path", Path(self.model_path))
        object.__setattr__(self, "train_states", tuple(str(s) for s in self.train_states))
        for key in ("test_force_rmse_kcal_mol_A", "test_force_mae_kcal_mol_A", "test_r2"):
            value = getattr(self, key)
            # NaN (no test frames, or a constant reference) is stored as None: JSON has no NaN
            if value is not None and not math.isfinite(float(value)):
                object.__setattr__(self, key, None)
            elif value is not None:
                object.__setattr__(self, key, float(value))

    def __fspath__(self) -> str:
        return os.fspath(self.model_path)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: the path as a string, the states as a list."""
        data = dataclasses.asdict(self)
        data["model_path"] = str(self.model_path)
        data["train_states"] = list(self.train_states)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSummary":
        """The inverse of :meth:`to_dict`; unknown keys and missing keys without a default are errors."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        unknown, missing = sorted(set(data) - names), sorted(required - set(data))
        if unknown or missing:
            raise ValueError(f"ModelSummary.from_dict: unknown keys {unknown}, missing keys {missing}")
        return cls(**{**data, "model_path": Path(data["model_path"]), "train_states": tuple(data["train_states"])})
