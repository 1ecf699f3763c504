"""INTERIM, to be deleted when the md and train branches land: stand-ins for ``thermocg.md.MDRunSummary``
and ``thermocg.train.ModelSummary`` with the fields those branches announced, so that the study's
adapters and tests can be written against them now. Nothing outside thermocg.study imports this.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


@dataclass(frozen=True)
class MDRunSummary:
    """What one CG MD run made (``thermocg.md.run_simulate`` returns one per state)."""

    model: str
    model_file: Path
    state: str
    out_dir: Path
    trajectory: Path
    ns_per_day: float | None = None
    blowup: str | None = None
    simulated_ps: float | None = None
    n_steps: int | None = None
    mean_temperature_K: float | None = None
    seed: int | None = None
    wall_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MDRunSummary":
        paths = {"model_file", "out_dir", "trajectory"}
        return cls(**{f.name: (Path(data[f.name]) if f.name in paths else data[f.name])
                      for f in fields(cls) if f.name in data})


@dataclass(frozen=True)
class ModelSummary:
    """What one training made (``thermocg.train.run_train`` and ``thermocg.mscg.run_fit_pair``)."""

    family: str
    name: str
    model_path: Path
    train_states: tuple[str, ...] = field(default_factory=tuple)
    wall_s: float | None = None
    n_epochs: int | None = None
    best_epoch: int | None = None
    stopped_at_max_epochs: bool | None = None
    test_force_rmse: float | None = None
    test_force_mae: float | None = None
    test_r2: float | None = None
    cutoff_A: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSummary":
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["model_path"] = Path(values["model_path"])
        values["train_states"] = tuple(values.get("train_states", ()))
        return cls(**values)
