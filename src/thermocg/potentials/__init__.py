"""Everything that gives CG energies and forces: the protocol, sums, and the registered kinds.

Kinds (registry names): ``hipnn_ts`` (the GNN), ``hipnn_ts_thermal`` and ``hipnn_ts_tinput`` (its
temperature-dependent forms: two energy heads, or the temperature as an input), ``repulsive_prior``
(data-derived short-range prior), ``pair_table`` (force-matched MS-CG pair potential),
``pair_table_thermal`` (its temperature-dependent form), ``lennard_jones`` (a known answer for tests),
``sum``. Choose them by name in configs; never by import path.
"""

from thermocg.potentials.base import (
    ModelFileError,
    Potential,
    SumPotential,
    TemperatureError,
    TemperatureNotSetError,
    TemperatureRangeError,
    TemperatureRangeWarning,
    TemperatureWarning,
    energy_and_forces,
    load_potential,
    potential_class,
    read_model_header,
    register,
    save_potential,
)

__all__ = [
    "ModelFileError",
    "Potential",
    "SumPotential",
    "TemperatureError",
    "TemperatureNotSetError",
    "TemperatureRangeError",
    "TemperatureRangeWarning",
    "TemperatureWarning",
    "energy_and_forces",
    "load_potential",
    "potential_class",
    "read_model_header",
    "register",
    "save_potential",
]
