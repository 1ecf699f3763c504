"""thermocg: coarse-grained force fields for molecular liquids with HIP-NN-TS, and their
transferability across thermodynamic state points.

The pipeline, one module per stage::

    allatom -> mapping -> dataset -> potentials + train -> md -> analysis -> study / report

Internal units are LAMMPS "real": A, fs, kcal/mol, amu, K (see :mod:`thermocg.units`).
"""

__version__ = "0.1.0"

from thermocg.frames import Frames, StatePoint  # noqa: E402

__all__ = ["Frames", "StatePoint", "__version__"]
