"""INTERIM, to be deleted when the md and train branches land: stand-ins for ``thermocg.md.MDRunSummary``
and ``thermocg.model_summary.ModelSummary`` (re-exported by ``thermocg.train``) with the fields those
branches define, so that the study's adapters and tests are written against them now. Nothing outside
thermocg.study and its tests imports this module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class MDRunSummary:
    """What one CG MD run of one model at one state made (``thermocg.md.run_simulate`` returns one per state)."""

    model: str
    model_file: str
    state: str
    out_dir: Path
    trajectory: Path
    ns_per_day: float
    blowup: str | None
    simulated_ps: float
    n_steps: int
    mean_temperature_K: float | None
    seed: int
    wall_s: float
    paths: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(out_dir=str(self.out_dir), trajectory=str(self.trajectory),
                    paths={k: str(v) for k, v in self.paths.items()})
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MDRunSummary":
        return cls(**{**data, "out_dir": Path(data["out_dir"]), "trajectory": Path(data["trajectory"]),
                      "paths": {k: Path(v) for k, v in data.get("paths", {}).items()}})


@dataclass(frozen=True)
class ModelSummary:
    """What one training made (``thermocg.train.run_train`` and ``thermocg.mscg.run_fit_pair``)."""

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

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(model_path=str(self.model_path), train_states=list(self.train_states))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSummary":
        return cls(**{**data, "model_path": Path(data["model_path"]), "train_states": tuple(data["train_states"])})
