"""thermocg: coarse-grained force fields for molecular liquids with HIP-NN-TS, and their
transferability across thermodynamic state points.

The pipeline, one module per stage::

    allatom -> mapping -> dataset -> potentials + train -> md -> analysis -> study / report

Internal units are LAMMPS "real": A, fs, kcal/mol, amu, K (see :mod:`thermocg.units`).

The public Python API is importable from here; the names are resolved on first use, so that
``import thermocg`` does not import torch or OpenMM::

    import thermocg
    config = thermocg.load_config("configs/demo.yaml")
    thermocg.run_study(config, "runs/demo")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from thermocg.frames import Frames, StatePoint, Topology  # noqa: E402

#: public name -> module that defines it
_LAZY: dict[str, str] = {
    # config and data
    "load_config": "thermocg.config",
    "Config": "thermocg.config",
    "ConfigError": "thermocg.config",
    "read_frames": "thermocg.dataset",
    "write_frames": "thermocg.dataset",
    "H5MDDataset": "thermocg.dataset",
    # the stages, as the CLI calls them
    "run_generate": "thermocg.allatom.runner",
    "run_import": "thermocg.allatom.readers",
    "read_trajectory": "thermocg.allatom.readers",
    "run_map": "thermocg.mapping",
    "build_mapping": "thermocg.mapping",
    "run_train": "thermocg.train",
    "train_potential": "thermocg.train",
    "run_fit_pair": "thermocg.mscg",
    "fit_pair_potential": "thermocg.mscg",
    "run_simulate": "thermocg.md.stage",
    "simulate": "thermocg.md.stage",
    "CGSimulation": "thermocg.md.simulation",
    "MDRunSummary": "thermocg.md.stage",
    "run_study": "thermocg.study.execution",
    "run_md": "thermocg.md.standalone",
    "run_analyze": "thermocg.analysis.standalone",
    "read_structure": "thermocg.structure",
    # potentials
    "Potential": "thermocg.potentials.base",
    "SumPotential": "thermocg.potentials.base",
    "energy_and_forces": "thermocg.potentials.base",
    "save_potential": "thermocg.potentials.base",
    "load_potential": "thermocg.potentials.base",
    "HipnnTS": "thermocg.potentials.hipnn",
    "ThermalHipnnTS": "thermocg.potentials.thermal_hipnn",
    "TemperatureInputHipnnTS": "thermocg.potentials.thermal_hipnn",
    "RepulsivePrior": "thermocg.potentials.priors",
    "PairTable": "thermocg.potentials.pair",
    "PairTableThermal": "thermocg.potentials.pair",
    "LennardJones": "thermocg.potentials.lj",
    "ThermoCGCalculator": "thermocg.ase_calculator",
    # analyses
    "RDF": "thermocg.analysis.rdf",
    "compare_rdf": "thermocg.analysis.rdf",
    "ADF": "thermocg.analysis.adf",
    "compare_adf": "thermocg.analysis.adf",
}

__all__ = ["Frames", "StatePoint", "Topology", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'thermocg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
