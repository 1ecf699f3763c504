"""The run directory: the one place that says where artifacts live.

::

    RUN_DIR/
      allatom/<state>/traj.h5md        all-atom trajectory with forces (H5MD, see dataset.py)
      allatom/<state>/topology.json    atom names, types, masses, molecule ids, molecule definition
      allatom/<state>/thermo.csv       time_ps, potential energy, temperature, density
      allatom/<state>/metadata.json    state point, force field, seed, versions, timings
      cg/<state>.h5md                  the CG dataset of that state point
      rdf/<state>.json, rdf/<state>.png
      models/<model>/...               trained potentials (model.safetensors), metrics, plots
      md/<model>/<state>/...           CG MD runs
      analysis/...                     observables per run, comparisons
      report/                          index.html, summary.md and figures

``<state>`` is :attr:`thermocg.frames.StatePoint.label`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    def allatom(self, state_label: str) -> Path:
        return self.root / "allatom" / state_label

    def allatom_trajectory(self, state_label: str) -> Path:
        return self.allatom(state_label) / "traj.h5md"

    def cg_dataset(self, state_label: str) -> Path:
        return self.root / "cg" / f"{state_label}.h5md"

    def rdf(self, state_label: str) -> Path:
        return self.root / "rdf" / f"{state_label}.json"

    def model(self, name: str) -> Path:
        return self.root / "models" / name

    def md(self, model_name: str, state_label: str) -> Path:
        return self.root / "md" / model_name / state_label

    def analysis(self) -> Path:
        return self.root / "analysis"

    def report(self) -> Path:
        return self.root / "report"

    def cg_datasets(self) -> list[Path]:
        return sorted((self.root / "cg").glob("*.h5md"))


def finish_partial(partial: Path, path: Path, *, success: bool) -> None:
    """End a file written under a temporary name: rename it to ``path`` on success, else remove it."""
    if success:
        os.replace(partial, path)
    else:
        partial.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text to ``path`` through a temporary name, so no half-written file is ever seen."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)
    return path


def atomic_savefig(fig, path: str | os.PathLike, **kwargs) -> Path:
    """Save a matplotlib figure atomically (PNG unless the suffix says otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial" + path.suffix)
    fig.savefig(partial, **kwargs)
    os.replace(partial, path)
    return path
