"""Internal units and conversions: the one home of physical constants in thermocg.

Inside thermocg every quantity is in LAMMPS "real" units:

=============  ==================
length         Angstrom (A)
time           femtosecond (fs)
energy         kcal/mol
force          kcal/mol/A
mass           amu (g/mol)
temperature    K
velocity       A/fs
density        g/cm^3 only at the edges (config keys ``density_g_cm3``); inside, number
               densities are beads/A^3
=============  ==================

Conversion happens where data enters or leaves (OpenMM, GROMACS, LAMMPS metal, config files).
Names say the direction: ``NM_TO_A`` multiplies a value in nm to give A.
"""

from __future__ import annotations

import math

#: Boltzmann constant in kcal/mol/K (CODATA 2018: k_B N_A = 8.314462618 J/mol/K).
KB_KCAL_MOL_K = 8.314462618e-3 / 4.184

#: Thermochemical calorie.
KJ_TO_KCAL = 1.0 / 4.184
KCAL_TO_KJ = 4.184

NM_TO_A = 10.0
A_TO_NM = 0.1
PS_TO_FS = 1000.0
FS_TO_PS = 1.0e-3

#: eV -> kcal/mol (LAMMPS metal units, extxyz files from ASE).
EV_TO_KCAL_MOL = 23.060547830619026

#: kJ/mol/nm (GROMACS, OpenMM) -> kcal/mol/A.
KJ_MOL_NM_TO_KCAL_MOL_A = KJ_TO_KCAL / NM_TO_A

#: kcal/mol/A -> kJ/mol/nm (forces handed to OpenMM).
KCAL_MOL_A_TO_KJ_MOL_NM = KCAL_TO_KJ * NM_TO_A

#: Pressure (or stress) of 1 kcal/mol/A^3 in bar: 4184 J / N_A / 1e-30 m^3 = 6.9477e9 Pa.
KCAL_MOL_A3_TO_BAR = 4184.0 / 6.02214076e23 / 1.0e-30 / 1.0e5

#: Acceleration of a force in kcal/mol/A on a mass in amu, in A/fs^2.
#: 1 kcal/mol = 4184 J / 6.02214076e23; 1 amu = 1.66053906660e-27 kg; A/fs^2 = 1e20 m/s^2.
#: (kcal/mol/A) / amu = 4184 J / (N_A * 1e-10 m * 1.66053906660e-27 kg) in m/s^2, times 1e-20 for A/fs^2.
FORCE_TO_ACCEL = 4184.0 / (6.02214076e23 * 1.0e-10 * 1.66053906660e-27) * 1.0e-20
assert math.isclose(FORCE_TO_ACCEL, 4.184e-4, rel_tol=1e-6)

#: Kinetic energy m v^2 with m in amu and v in A/fs, in kcal/mol.
MV2_TO_KCAL_MOL = 1.0 / FORCE_TO_ACCEL

#: Mass density of amu/A^3 in g/cm^3 (1 amu = 1.66053906660e-24 g, 1 A^3 = 1e-24 cm^3).
AMU_A3_TO_G_CM3 = 1.66053906660

#: Pressure: 1 bar in atm (OpenMM barostats take bar, LAMMPS real takes atm).
BAR_TO_ATM = 1.0 / 1.01325


def kT(temperature_K: float) -> float:
    """Thermal energy k_B T in kcal/mol."""
    return KB_KCAL_MOL_K * temperature_K


def mass_density_g_cm3(total_mass_amu: float, volume_A3: float) -> float:
    """Mass density in g/cm^3 of ``total_mass_amu`` in ``volume_A3``."""
    return total_mass_amu / volume_A3 * AMU_A3_TO_G_CM3


def volume_for_density_A3(total_mass_amu: float, density_g_cm3: float) -> float:
    """The volume in A^3 that holds ``total_mass_amu`` at ``density_g_cm3``."""
    return total_mass_amu * AMU_A3_TO_G_CM3 / density_g_cm3
