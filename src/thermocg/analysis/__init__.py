"""Observables, one file each: rdf, adf, forces, density, msd. All follow :mod:`thermocg.analysis.base`."""
