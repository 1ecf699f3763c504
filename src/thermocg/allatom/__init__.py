"""All-atom reference data: molecule definitions (``molecules``), box building (``build``), OpenMM MD
(``runner``) and readers for other engines' trajectories (``readers``).

OpenMM is imported only inside the runner's functions, so importing this package is cheap.
"""

from thermocg.allatom.molecules import BUILTIN_MOLECULES, Molecule, MoleculeError, get_molecule

__all__ = ["BUILTIN_MOLECULES", "Molecule", "MoleculeError", "get_molecule"]
