"""``thermocg train``: the stage that reads a run directory's CG datasets and writes one model."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from thermocg import provenance
from thermocg.config import Config, ConfigError, TrainConfig, write_resolved
from thermocg.dataset import read_frames
from thermocg.model_summary import ModelSummary
from thermocg.rundir import RunDir
from thermocg.train.data import TrainError
from thermocg.train.distributed import process_group_from_environment
from thermocg.train.trainer import json_safe, train_potential


def _dataset_paths(run_dir: RunDir, labels: list[str]) -> list[Path]:
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
              train_states: list[str] | None = None) -> ModelSummary | None:
    """``thermocg train CONFIG``: train on RUN_DIR/cg/<label>.h5md of the chosen states; write
    RUN_DIR/models/<name>/ (see :func:`train_potential`; ``resolved.yaml`` there holds the whole
    config, the input hashes and the test metrics).

    ``train_states``: state labels (default: ``config.train.train_states``, else every CG dataset);
    ``name``: the model directory (default ``config.train.name``). Returns the
    :class:`~thermocg.model_summary.ModelSummary` of the model.

    Launched by torchrun on several processes, the fit is data-parallel
    (:mod:`thermocg.train.distributed`): rank 0 writes every file and returns the summary, the other
    ranks return None.
    """
    if not isinstance(config, Config) or not isinstance(config.train, TrainConfig):
        raise ConfigError(f"train: expected a thermocg Config with a train section, got {type(config).__name__}")
    settings = config.train
    rd = RunDir(run_dir)
    paths = _dataset_paths(rd, list(train_states or settings.train_states or []))
    frames_list = [read_frames(p, kind="cg") for p in paths]
    torch.set_num_threads(settings.n_threads)
    out_dir = rd.model(name or settings.name)
    with process_group_from_environment(settings.device) as parallel:
        result = train_potential(frames_list, settings, out_dir, seed=int(config.seed), parallel=parallel)
    if result.summary is None:  # a rank > 0 of a data-parallel fit: rank 0 writes
        return None
    write_resolved(dataclasses.replace(config, train=result.config), out_dir / "resolved.yaml", extra={
        "automatic": result.automatic,
        "inputs": provenance.collect([str(p) for p in paths])["inputs"],
        "model": result.potential.describe(),
        "test_metrics": json_safe(result.metrics["overall"]),
    })
    return result.summary
