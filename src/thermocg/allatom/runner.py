"""All-atom reference MD with OpenMM: system construction, NPT then NVT, and the outputs per state point.

The system is one molecule type or a mixture (:mod:`thermocg.allatom.mixture`; a state's composition
sets the counts of each molecule type). For every state point ``generate_state`` builds a box
(``build.build_box``), minimises it, and runs

- pressure state points (``pressure_bar``): NPT equilibration (Langevin middle integrator + Monte
  Carlo barostat), then the box is rescaled (molecule centres of mass, molecules kept rigid) to the
  mean volume of the second half of the NPT run, the barostat removed, and the rest runs NVT;
- density state points (``density_g_cm3``): NVT throughout;

then NVT equilibration and NVT production, saving frames. OpenMM works in nm, ps, kJ/mol; thermocg
converts at this edge to A, fs, kcal/mol (``thermocg.units``).

Outputs in ``out_dir`` (normally ``RunDir(run_dir).allatom(state.label)``):

- ``traj.h5md``     positions (A), forces (kcal/mol/A), velocities (A/fs, optional), box rows (A),
                    and the potential energy of every saved frame (kcal/mol, the H5MD observable
                    ``observables/potential_energy``: OpenMM's getPotentialEnergy of that state);
                    H5MD because it is binary, compressed-ready, holds forces and a time-dependent box in
                    one file and MDAnalysis reads it (see ``thermocg.dataset``). Molecules are kept whole
                    (OpenMM wraps whole molecules by their centre).
- ``topology.json`` atom names, molecule ids and names, masses, atom types (``frames.Topology``)
- ``thermo.csv``    phase, time_ps, potential/kinetic energy (kcal/mol), temperature (K), volume (A^3),
                    density (g/cm^3), one row per ``thermo_interval_fs`` in every phase
- ``metadata.json`` requested and resulting state point (NPT: the equilibrated density), force field,
                    cutoff used, seed, platform, ns/day, package versions; for a mixture the
                    molecule counts, mole fractions and every cross LJ pair with its origin
                    (``override`` or the mixing rule); written last, so its presence
                    marks a complete state point
- ``resolved.yaml`` the settings actually used

Forces are the total force-field forces on each atom, without constraint forces (what OpenMM reports,
and what force matching wants: the constraint forces of a rigid bond cancel within the molecule).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple

import numpy as np

from thermocg import units
from thermocg.allatom.build import build_box
from thermocg.allatom.mixture import Mixture, MixtureError, as_mixture, mixture_from_config
from thermocg.allatom.molecules import Molecule, get_molecule, mixed_lj
from thermocg.config import ConfigError, GenerateConfig, write_resolved
from thermocg.frames import StatePoint, Topology
from thermocg.rundir import RunDir, atomic_write_text

if TYPE_CHECKING:  # openmm is imported inside functions: `thermocg --help` stays instant
    import openmm

    from thermocg.config import Config

#: force groups: bonded intramolecular terms, and everything non-bonded (LJ, Coulomb/PME, 1-4 pairs)
FORCE_GROUP_BONDED = 1
FORCE_GROUP_NONBONDED = 2

#: PME relative force error (OpenMM's default is 5e-4; a tighter value keeps the reference forces clean)
EWALD_ERROR_TOLERANCE = 1e-4
#: largest cutoff as a fraction of the box edge (OpenMM needs < 0.5; the margin lets an NPT box shrink)
MAX_CUTOFF_FRACTION = 0.45

_KJ_NM_TO_KCAL_A = units.KJ_MOL_NM_TO_KCAL_MOL_A
_NM_PS_TO_A_FS = units.NM_TO_A * units.FS_TO_PS


class GenerateError(ValueError):
    """Bad input to all-atom generation; the message names the state point or key."""


# --------------------------------------------------------------------------------------------------
# the OpenMM system
# --------------------------------------------------------------------------------------------------

def resolve_cutoff_A(system: "Molecule | Mixture", box_A: np.ndarray, requested_A: float | None = None) -> float:
    """The non-bonded cutoff: the requested one, else the force field's (a mixture: the largest of its
    force fields'), capped at 0.45 box edges.

    A box too small for the force field's own cutoff (a tiny test box, the demo) gets a shorter
    cutoff, with a warning; the long-range dispersion correction and PME keep the error modest, but
    such data is not the force field's reference. A cutoff the user asked for that does not fit the
    box is an error.
    """
    cutoff = float(requested_A if requested_A is not None else system.cutoff_A)
    box_A = np.asarray(box_A, dtype=np.float64)
    volume = abs(np.linalg.det(box_A))
    # shortest perpendicular width of a (possibly triclinic) cell
    widths = [volume / np.linalg.norm(np.cross(box_A[(i + 1) % 3], box_A[(i + 2) % 3])) for i in range(3)]
    limit = MAX_CUTOFF_FRACTION * min(widths)
    if cutoff > limit and requested_A is not None:
        raise GenerateError(
            f"{system.name}: the requested non-bonded cutoff {cutoff:g} A does not fit the "
            f"{min(widths):.2f} A box (at most {limit:.2f} A, 0.45 of its shortest width); lower "
            f"generate.nonbonded_cutoff_A or use more molecules")
    if cutoff > limit:
        warnings.warn(
            f"{system.name}: cutoff {cutoff:g} A does not fit the {min(widths):.2f} A box; using "
            f"{limit:.2f} A (use more molecules for the force field's own cutoff)", stacklevel=2)
        cutoff = limit
    return cutoff


def _mixed_lj(molecule: Molecule, i: int, j: int) -> tuple[float, float]:
    """(sigma_A, epsilon_kcal_mol) of site pair i, j under the molecule's mixing rule."""
    return mixed_lj(molecule.mixing, molecule.sites[i], molecule.sites[j])


def _box_vectors(box_nm: np.ndarray) -> list["openmm.Vec3"]:
    """The rows of a (3, 3) box in nm as OpenMM's three periodic box vectors."""
    import openmm

    return [openmm.Vec3(*row) for row in box_nm]


def _nonbonded_forces(mixture: Mixture, cutoff_A: float) -> tuple["openmm.NonbondedForce",
                                                                    "openmm.CustomNonbondedForce | None"]:
    """The empty non-bonded forces of ``mixture`` (particles are added per molecule), both in
    ``FORCE_GROUP_NONBONDED`` with a cutoff of ``cutoff_A``: a PME ``NonbondedForce`` (relative
    error :data:`EWALD_ERROR_TOLERANCE`), and, unless every pair is Lorentz-Berthelot, a
    ``CustomNonbondedForce`` E = 4 eps [(sigma/r)^12 - (sigma/r)^6] whose sigma (nm) and epsilon
    (kJ/mol) are looked up in (n_classes, n_classes) tables by the per-particle LJ class ``c``
    (:meth:`Mixture.lj_tables`). The long-range dispersion correction goes to whichever force
    carries LJ, when the force fields prescribe it."""
    import openmm

    a_to_nm = units.A_TO_NM
    tabulated = not mixture.follows_lorentz_berthelot
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.PME)
    nonbonded.setCutoffDistance(cutoff_A * a_to_nm)
    nonbonded.setEwaldErrorTolerance(EWALD_ERROR_TOLERANCE)
    nonbonded.setUseDispersionCorrection(mixture.dispersion_correction and not tabulated)
    nonbonded.setForceGroup(FORCE_GROUP_NONBONDED)
    if not tabulated:
        return nonbonded, None
    sigma, eps = mixture.lj_tables()
    n_classes = len(sigma)
    custom = openmm.CustomNonbondedForce(
        "4*eps*((sig/r)^12 - (sig/r)^6); sig = sigma_nm(c1, c2); eps = epsilon_kj(c1, c2)")
    custom.addTabulatedFunction("sigma_nm", openmm.Discrete2DFunction(
        n_classes, n_classes, (sigma * a_to_nm).T.ravel().tolist()))
    custom.addTabulatedFunction("epsilon_kj", openmm.Discrete2DFunction(
        n_classes, n_classes, (eps * units.KCAL_TO_KJ).T.ravel().tolist()))
    custom.addPerParticleParameter("c")
    custom.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    custom.setCutoffDistance(cutoff_A * a_to_nm)
    custom.setUseLongRangeCorrection(mixture.dispersion_correction)
    custom.setForceGroup(FORCE_GROUP_NONBONDED)
    return nonbonded, custom


def _add_nonbonded_sites(nonbonded: "openmm.NonbondedForce", custom: "openmm.CustomNonbondedForce | None",
                         molecule: Molecule, classes: np.ndarray) -> None:
    """One molecule's particles in the non-bonded forces: charge (e) and LJ sigma (nm), epsilon
    (kJ/mol) in ``NonbondedForce``, or, with a tabulated ``custom`` force, the charge alone there
    and the site's LJ class (``classes``, per site) in ``custom``."""
    a_to_nm = units.A_TO_NM
    for s, site in enumerate(molecule.sites):
        if custom is not None:
            nonbonded.addParticle(site.charge_e, 1.0 * a_to_nm, 0.0)
            custom.addParticle([float(classes[s])])
        else:
            eps_kj = site.epsilon_kcal_mol * units.KCAL_TO_KJ
            # sigma is irrelevant when epsilon is zero; keep it positive for OpenMM
            nonbonded.addParticle(site.charge_e, site.sigma_A * a_to_nm if eps_kj > 0 else 1.0 * a_to_nm, eps_kj)


def _add_intramolecular_pairs(nonbonded: "openmm.NonbondedForce", custom: "openmm.CustomNonbondedForce | None",
                              molecule: Molecule, base: int, pairs: tuple[set, set, list], *,
                              intermolecular_only: bool) -> None:
    """Every site pair of one molecule (first atom ``base``) as a ``NonbondedForce`` exception:
    1-4 pairs scaled (q_i q_j ``scale14_coulomb``; the molecule's own mixing rule, epsilon times
    ``scale14_lj``), 1-2 and 1-3 pairs excluded (so are the 1-4 pairs with ``intermolecular_only``,
    and then every pair); each exception is an exclusion of the tabulated ``custom`` force too.
    ``pairs``: (excluded, pairs14, all pairs i < j) of the molecule."""
    a_to_nm, kcal_to_kj = units.A_TO_NM, units.KCAL_TO_KJ
    excluded, pairs14, all_pairs = pairs
    for i, j in all_pairs:
        if (i, j) in pairs14 and not intermolecular_only:
            sig, eps = _mixed_lj(molecule, i, j)
            q = molecule.sites[i].charge_e * molecule.sites[j].charge_e * molecule.scale14_coulomb
            nonbonded.addException(base + i, base + j, q, max(sig, 1e-3) * a_to_nm,
                                   eps * molecule.scale14_lj * kcal_to_kj)
        elif (i, j) in excluded or (i, j) in pairs14 or intermolecular_only:
            nonbonded.addException(base + i, base + j, 0.0, 0.1, 0.0)
        else:
            continue  # farther than 1-4 apart: the normal non-bonded interaction applies
        if custom is not None:
            custom.addExclusion(base + i, base + j)


def _add_bonded_terms(bonded: tuple["openmm.HarmonicBondForce", "openmm.HarmonicAngleForce",
                                    "openmm.PeriodicTorsionForce"], molecule: Molecule, base: int) -> None:
    """One molecule's bonds E = k/2 (r - r0)^2 (k: kcal/mol/A^2 -> kJ/mol/nm^2), angles
    E = k/2 (theta - theta0)^2 (kcal/mol/rad^2 -> kJ/mol/rad^2) and torsions
    E = k (1 + cos(n phi - phi0)) (kcal/mol -> kJ/mol), atoms offset by ``base``."""
    a_to_nm, kcal_to_kj = units.A_TO_NM, units.KCAL_TO_KJ
    bond_force, angle_force, torsion_force = bonded
    for b in molecule.bonds:
        bond_force.addBond(base + b.atoms[0], base + b.atoms[1], b.length_A * a_to_nm,
                           b.k_kcal_mol_A2 * kcal_to_kj / a_to_nm**2)
    for a in molecule.angles:
        angle_force.addAngle(*(base + k for k in a.atoms), math.radians(a.theta0_deg),
                             a.k_kcal_mol_rad2 * kcal_to_kj)
    for t in molecule.torsions:
        torsion_force.addTorsion(*(base + k for k in t.atoms), t.periodicity, math.radians(t.phase_deg),
                                 t.k_kcal_mol * kcal_to_kj)


def build_system(system: "Molecule | Mixture", n_molecules: int | None = None, box_A: np.ndarray | None = None, *,
                 cutoff_A: float, intermolecular_only: bool = False) -> "openmm.System":
    """An OpenMM System in the periodic box ``box_A`` (3, 3) A: ``n_molecules`` copies of a molecule,
    or a :class:`~thermocg.allatom.mixture.Mixture` (``n_molecules`` left out).

    Particles are in the mixture's atom order (component by component, molecule by molecule).
    Constraints become OpenMM constraints (three on a rigid water: OpenMM applies SETTLE); bonds,
    angles and torsions go to force group ``FORCE_GROUP_BONDED``; LJ + PME Coulomb (+ scaled 1-4
    pairs) to ``FORCE_GROUP_NONBONDED``. When every pair is Lorentz-Berthelot (every force field
    mixes so and no cross interaction is overridden) LJ is OpenMM's ``NonbondedForce`` itself;
    otherwise LJ moves to a ``CustomNonbondedForce`` that looks sigma and epsilon up in tables over
    the system's LJ classes (each force field's own rule within its molecule type, the overrides or
    the shared rule across types: :meth:`Mixture.pair_lj`), and ``NonbondedForce`` carries only the
    charges and the 1-4 pairs, as exceptions with each molecule's own mixing and scaling.

    ``intermolecular_only=True`` leaves out every intramolecular term (bonded terms, 1-4 pairs): its
    forces are those between molecules only (a reference for the one-bead-per-molecule CG force).
    """
    import openmm

    if box_A is None:
        raise GenerateError("build_system: give the periodic box box_A (3, 3) A")
    mixture = as_mixture(system, n_molecules)
    omm = openmm.System()
    omm.setDefaultPeriodicBoxVectors(*_box_vectors(np.asarray(box_A, dtype=np.float64) * units.A_TO_NM))
    for mass in mixture.atom_masses_amu():
        omm.addParticle(float(mass))
    nonbonded, custom = _nonbonded_forces(mixture, cutoff_A)
    bonded = (openmm.HarmonicBondForce(), openmm.HarmonicAngleForce(), openmm.PeriodicTorsionForce())
    for f in bonded:
        f.setForceGroup(FORCE_GROUP_BONDED)
    pair_lists = {}
    for k, molecule in enumerate(mixture.molecules):
        excluded, pairs14 = molecule.topology_pairs()
        n_sites = molecule.n_sites
        pair_lists[k] = (excluded, pairs14, [(i, j) for i in range(n_sites) for j in range(i + 1, n_sites)])
    for k, molecule, _, base in mixture.molecule_blocks():
        _add_nonbonded_sites(nonbonded, custom, molecule, mixture.site_classes(k))
        for c in molecule.constraints:
            omm.addConstraint(base + c.atoms[0], base + c.atoms[1], c.length_A * units.A_TO_NM)
        _add_intramolecular_pairs(nonbonded, custom, molecule, base, pair_lists[k],
                                  intermolecular_only=intermolecular_only)
        if not intermolecular_only:
            _add_bonded_terms(bonded, molecule, base)
    omm.addForce(nonbonded)
    if custom is not None:
        omm.addForce(custom)
    bond_force, angle_force, torsion_force = bonded
    for f, n in ((bond_force, bond_force.getNumBonds()), (angle_force, angle_force.getNumAngles()),
                 (torsion_force, torsion_force.getNumTorsions())):
        if n:
            omm.addForce(f)
    return omm


def select_platform(name: str = "auto", *, n_threads: int = 2) -> tuple["openmm.Platform", dict[str, str]]:
    """The OpenMM platform and its properties: ``auto`` is CUDA when available, else CPU.

    Forces are summed deterministically, so that a seed reproduces a run on the same platform and
    thread count (OpenMM's default thread-order summation differs in the last bits run to run).
    """
    import openmm

    available = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if name == "auto":
        name = "CUDA" if "CUDA" in available else "CPU"
    if name not in available:
        raise GenerateError(f"generate.platform: OpenMM platform {name!r} is not available here ({available})")
    properties: dict[str, str] = {}
    # deterministic force summation: the same seed gives the same trajectory (at a small cost)
    if name == "CPU":
        properties.update(Threads=str(int(n_threads)), DeterministicForces="true")
    elif name in ("CUDA", "OpenCL"):
        properties.update(Precision="mixed", DeterministicForces="true")
    return openmm.Platform.getPlatformByName(name), properties


def make_context(system: "openmm.System", positions_A: np.ndarray, box_A: np.ndarray, *,
                 integrator: "openmm.Integrator | None" = None, platform: str = "Reference",
                 n_threads: int = 2) -> "openmm.Context":
    """A Context at the given positions (A) and box (3, 3) A; a Verlet integrator when none is given."""
    import openmm

    if integrator is None:
        integrator = openmm.VerletIntegrator(0.001)
    plat, props = select_platform(platform, n_threads=n_threads)
    context = openmm.Context(system, integrator, plat, props)
    context.setPeriodicBoxVectors(*_box_vectors(np.asarray(box_A) * units.A_TO_NM))
    context.setPositions(np.asarray(positions_A) * units.A_TO_NM)
    return context


# OpenMM States in internal units (OpenMM: nm, ps, kJ/mol)

def _state_box_A(s: "openmm.State") -> np.ndarray:
    """The periodic box (3, 3) A of an OpenMM State, rows are the cell vectors."""
    import openmm.unit as u

    return np.asarray(s.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)) * units.NM_TO_A


def _state_potential_energy_kcal_mol(s: "openmm.State") -> float:
    """The potential energy (kcal/mol) of an OpenMM State fetched with ``getEnergy``."""
    import openmm.unit as u

    return s.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.KJ_TO_KCAL


def _state_forces_kcal_mol_A(s: "openmm.State") -> np.ndarray:
    """The forces (n_atoms, 3) kcal/mol/A of an OpenMM State fetched with ``getForces``."""
    import openmm.unit as u

    return s.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer) * _KJ_NM_TO_KCAL_A


def energy_and_forces(context: "openmm.Context", *, groups: Iterable[int] | None = None) -> tuple[float, np.ndarray]:
    """Potential energy (kcal/mol) and forces (n_atoms, 3) kcal/mol/A of the context's current state.

    ``groups``: only these force groups (e.g. ``{FORCE_GROUP_BONDED}``); all when None.
    """
    kwargs = {} if groups is None else {"groups": set(groups)}
    state = context.getState(getEnergy=True, getForces=True, **kwargs)
    energy = _state_potential_energy_kcal_mol(state)
    return float(energy), np.asarray(_state_forces_kcal_mol_A(state), dtype=np.float64)


def topology_for(system: "Molecule | Mixture", n_molecules: int | None = None) -> Topology:
    """The :class:`~thermocg.frames.Topology` of ``n_molecules`` copies of a molecule, or of a mixture,
    in atom order (component by component, molecule by molecule)."""
    return as_mixture(system, n_molecules).topology()


# --------------------------------------------------------------------------------------------------
# running a state point
# --------------------------------------------------------------------------------------------------

@dataclass
class _Thermo:
    """Thermo rows collected during a run: (phase, time ps, potential and kinetic energy kcal/mol,
    temperature K, volume A^3, density g/cm^3).

    The temperature is the kinetic one, T = 2 KE / (n_dof k_B), with ``n_dof`` = 3 n_atoms - n_constraints
    - 3 (the centre-of-mass motion is removed); the density is ``mass_amu`` over the box volume."""

    dof: int
    mass_amu: float
    rows: list[tuple[str, float, float, float, float, float, float]] = field(default_factory=list)

    def record(self, phase: str, s: "openmm.State") -> float:
        """Append the row of OpenMM State ``s`` (fetched with its energies); returns its volume (A^3)."""
        import openmm.unit as u

        volume = float(abs(np.linalg.det(_state_box_A(s))))
        kinetic = s.getKineticEnergy().value_in_unit(u.kilojoule_per_mole) * units.KJ_TO_KCAL
        self.rows.append((
            phase, s.getTime().value_in_unit(u.picosecond), _state_potential_energy_kcal_mol(s), kinetic,
            2.0 * kinetic / (self.dof * units.KB_KCAL_MOL_K), volume, units.mass_density_g_cm3(self.mass_amu, volume),
        ))
        return volume

    def mean_temperature_K(self, phase: str) -> float | None:
        """The mean temperature of the rows of ``phase``; None when it has none."""
        temperatures = [r[4] for r in self.rows if r[0] == phase]
        return float(np.mean(temperatures)) if temperatures else None

    def csv(self) -> str:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["phase", "time_ps", "potential_energy_kcal_mol", "kinetic_energy_kcal_mol",
                    "temperature_K", "volume_A3", "density_g_cm3"])
        for phase, *values in self.rows:
            w.writerow([phase, *(f"{v:.6g}" for v in values)])
        return out.getvalue()


def _steps(interval_fs: float, timestep_fs: float, key: str) -> int:
    n = round(interval_fs / timestep_fs)
    if n < 1 or abs(n * timestep_fs - interval_fs) > 1e-6 * interval_fs:
        raise GenerateError(f"generate.{key}: {interval_fs:g} fs is not a positive multiple of the "
                            f"{timestep_fs:g} fs timestep")
    return int(n)


@dataclass(frozen=True)
class _Schedule:
    """The steps of one state point's run: the timestep (fs), the save and thermo intervals and the
    lengths of the NPT equilibration (0 for a density state), NVT equilibration and production, in
    steps. Production is a whole number of save intervals (at least one)."""

    timestep_fs: float
    save_steps: int
    thermo_steps: int
    n_npt: int
    n_eq: int
    n_prod: int

    @classmethod
    def of(cls, settings: GenerateConfig, *, npt: bool) -> "_Schedule":
        """From the generate settings; an interval that is not a multiple of the timestep is a GenerateError."""
        dt_fs = settings.timestep_fs
        save_steps = _steps(settings.save_interval_fs, dt_fs, "save_interval_fs")
        thermo_steps = _steps(settings.thermo_interval_fs, dt_fs, "thermo_interval_fs")
        n_npt = round(settings.npt_equilibration_ps * units.PS_TO_FS / dt_fs) if npt else 0
        n_eq = round(settings.equilibration_ps * units.PS_TO_FS / dt_fs)
        n_prod = round(settings.production_ps * units.PS_TO_FS / dt_fs)
        n_prod = max(save_steps, n_prod - n_prod % save_steps)
        return cls(dt_fs, save_steps, thermo_steps, n_npt, n_eq, n_prod)

    @property
    def chunk(self) -> int:
        """Steps integrated between two looks at the state (every save and thermo step is one)."""
        return math.gcd(self.save_steps, self.thermo_steps)

    @property
    def n_total(self) -> int:
        return self.n_npt + self.n_eq + self.n_prod


def block_stderr(values: np.ndarray, n_blocks: int = 5) -> float:
    """Standard error of the mean from ``n_blocks`` contiguous block averages (correlated samples)."""
    if len(values) < 2 * n_blocks:
        return float(np.std(values) / math.sqrt(max(len(values) - 1, 1)))
    blocks = np.array([b.mean() for b in np.array_split(values, n_blocks)])
    return float(blocks.std(ddof=1) / math.sqrt(n_blocks))


def _derive_seeds(seed: int) -> tuple[int, int, int, int]:
    """(box, integrator, barostat, velocities) seeds, all in 1..2^31-1 (OpenMM reads 0 as 'random')."""
    rng = np.random.default_rng(seed)
    return tuple(int(s) for s in rng.integers(1, 2**31 - 1, size=4))  # type: ignore[return-value]


def _checked_system(molecule: "Molecule | Mixture | str", state: StatePoint, n_molecules: int | None,
                    settings: GenerateConfig) -> Mixture:
    """The system of :func:`generate_state`'s arguments, checked: a StatePoint with a density or a
    pressure (then a positive NPT length), a positive molecule count for one molecule type, and the
    state's composition that of the mixture; a GenerateError names what is wrong."""
    if isinstance(molecule, str):
        molecule = get_molecule(molecule)
    if not isinstance(state, StatePoint):
        raise GenerateError(f"state must be a StatePoint, got {state!r}")
    if not isinstance(molecule, Mixture) and (isinstance(n_molecules, bool) or not isinstance(
            n_molecules, (int, np.integer)) or n_molecules < 1):
        raise GenerateError(f"n_molecules must be a positive integer, got {n_molecules!r}")
    try:
        system_def = as_mixture(molecule, n_molecules)
    except MixtureError as exc:
        raise GenerateError(str(exc)) from None
    check_composition(system_def, state)
    npt = state.pressure_bar is not None
    if not npt and state.density_g_cm3 is None:
        raise GenerateError(f"state {state.label}: give density_g_cm3 (NVT) or pressure_bar (NPT)")
    if npt and settings.npt_equilibration_ps <= 0:
        raise GenerateError(f"state {state.label}: a pressure state point needs generate.npt_equilibration_ps > 0")
    return system_def


class _StartingBox(NamedTuple):
    """A state point's box before minimisation, the cutoff that fits it, and the OpenMM system."""

    positions_A: np.ndarray
    box_A: np.ndarray
    cutoff_A: float
    system: "openmm.System"


def _starting_box(system_def: Mixture, state: StatePoint, settings: GenerateConfig, seed_box: int) -> _StartingBox:
    """The box of ``system_def`` built (:func:`~thermocg.allatom.build.build_box`) at the state's
    density, or for a pressure state at the system's ``density_guess_g_cm3`` (NPT then finds the
    density); the non-bonded cutoff (:func:`resolve_cutoff_A`) and the OpenMM system in that box.
    ``generate`` and ``export-allatom`` start from it alike."""
    start_density = state.density_g_cm3 if state.pressure_bar is None else system_def.density_guess_g_cm3
    positions, box = build_box(system_def, density_g_cm3=start_density, rng=np.random.default_rng(seed_box))
    cutoff_A = resolve_cutoff_A(system_def, box, settings.nonbonded_cutoff_A)
    return _StartingBox(positions, box, cutoff_A, build_system(system_def, box_A=box, cutoff_A=cutoff_A))


def _density_stats(volumes_A3: np.ndarray, mass_amu: float) -> tuple[float, dict[str, float]]:
    """The NVT box volume (A^3) after an NPT equilibration, and its density statistics.

    Both come from the second half of the NPT run's thermo volumes (all of them when fewer than two):
    the mean volume <V>, and the densities rho = M / V (g/cm^3): their mean, block standard error
    (:func:`block_stderr`), standard deviation and count, and ``at_mean_volume`` = M / <V>."""
    tail = volumes_A3[len(volumes_A3) // 2:] if len(volumes_A3) >= 2 else volumes_A3
    mean_volume = float(tail.mean())
    densities = units.mass_density_g_cm3(mass_amu, 1.0) / tail
    return mean_volume, {"mean": float(densities.mean()), "stderr": block_stderr(densities),
                         "std": float(densities.std()), "n_samples": int(len(densities)),
                         # the NVT box: the mean volume (its density differs from the mean density
                         # by the tiny <1/V> - 1/<V> of the fluctuations)
                         "at_mean_volume": units.mass_density_g_cm3(mass_amu, mean_volume)}


class _StateRun:
    """The OpenMM simulation of one state point, run phase by phase.

    Langevin middle integrator at the state's temperature (``friction_per_ps``, ``timestep_fs``),
    the centre-of-mass motion removed, and for a pressure state a Monte Carlo barostat (every
    ``barostat_interval`` steps). The box is energy-minimised (tolerance 10 kJ/mol/nm, at most 2000
    iterations) and velocities drawn from Maxwell-Boltzmann at the temperature. Every
    ``thermo_interval_fs`` a thermo row is recorded (:class:`_Thermo`), in every phase."""

    def __init__(self, system_def: Mixture, start: _StartingBox, *, state: StatePoint, settings: GenerateConfig,
                 schedule: _Schedule, seeds: tuple[int, int, int, int], progress: bool) -> None:
        import openmm
        import openmm.unit as u
        from thermocg.progress import Progress

        _, seed_integrator, seed_barostat, seed_velocities = seeds
        temperature = state.temperature_K
        self.system, self.system_def, self.settings, self.schedule = start.system, system_def, settings, schedule
        self.system.addForce(openmm.CMMotionRemover())
        self.barostat_index = None
        if state.pressure_bar is not None:
            barostat = openmm.MonteCarloBarostat(state.pressure_bar * u.bar, temperature * u.kelvin,
                                                 settings.barostat_interval)
            barostat.setRandomNumberSeed(seed_barostat)
            self.barostat_index = self.system.addForce(barostat)
        self.integrator = openmm.LangevinMiddleIntegrator(temperature * u.kelvin, settings.friction_per_ps / u.picosecond,
                                                          schedule.timestep_fs * units.FS_TO_PS * u.picosecond)
        self.integrator.setRandomNumberSeed(seed_integrator)
        self.context = make_context(self.system, start.positions_A, start.box_A, integrator=self.integrator,
                                    platform=settings.platform, n_threads=settings.n_threads)
        self.platform_name = self.context.getPlatform().getName()
        openmm.LocalEnergyMinimizer.minimize(self.context, 10.0, 2000)
        self.context.setVelocitiesToTemperature(temperature * u.kelvin, seed_velocities)
        self.thermo = _Thermo(dof=3 * system_def.n_atoms - self.system.getNumConstraints() - 3,
                              mass_amu=system_def.mass_amu)
        self.bar = Progress(schedule.n_total, description=f"generate {system_def.name} {state.label}", unit="steps",
                            mode="auto" if progress else "off")

    def run_phase(self, phase: str, n_steps: int, on_save: Callable[["openmm.State"], None] | None = None
                  ) -> list[float]:
        """Integrate ``n_steps``, recording thermo rows; ``on_save`` gets the State (positions,
        forces, velocities when saved, energy) every save interval. Returns the thermo volumes (A^3)."""
        volumes = []
        done = 0
        save_steps, thermo_steps = self.schedule.save_steps, self.schedule.thermo_steps
        while done < n_steps:
            k = min(self.schedule.chunk, n_steps - done)
            self.integrator.step(k)
            done += k
            self.bar.update(k)
            want_thermo = done % thermo_steps == 0
            want_save = on_save is not None and done % save_steps == 0
            if want_thermo or want_save:
                s = self.context.getState(getEnergy=True, getPositions=want_save, getForces=want_save,
                                          getVelocities=want_save and self.settings.save_velocities,
                                          enforcePeriodicBox=True)
                if want_thermo:
                    volumes.append(self.thermo.record(phase, s))
                if want_save:
                    on_save(s)
        return volumes

    def equilibrate_npt(self, state: StatePoint) -> tuple[StatePoint, dict[str, float]]:
        """The NPT phase; then the barostat is removed and the box rescaled to the mean volume of
        the phase's second half (:func:`_density_stats`, :func:`_rescale_to_volume`). Returns the state
        point the NVT phases run at (the pressure asked for, the density at that volume) and the
        density statistics."""
        volumes = np.array(self.run_phase("npt", self.schedule.n_npt))
        if len(volumes) == 0:
            volumes = np.array([abs(np.linalg.det(_state_box_A(self.context.getState())))])
        mean_volume, density_stats = _density_stats(volumes, self.system_def.mass_amu)
        self.system.removeForce(self.barostat_index)
        self.context.reinitialize(preserveState=True)
        _rescale_to_volume(self.context, self.system_def, mean_volume)
        final_state = StatePoint(state.temperature_K,
                                 density_g_cm3=units.mass_density_g_cm3(self.system_def.mass_amu, mean_volume),
                                 pressure_bar=state.pressure_bar, mole_fractions=state.mole_fractions)
        return final_state, density_stats

    def produce(self, writer: Any) -> float:
        """The production phase, every save interval's frame appended to the H5MD ``writer``:
        positions (A), box (A), forces (kcal/mol/A), velocities (A/fs) when saved, time (fs), step,
        potential energy (kcal/mol). Returns the wall time (s) of the phase."""
        import openmm.unit as u

        dt_fs = self.schedule.timestep_fs
        save_velocities = self.settings.save_velocities

        def save(s: "openmm.State") -> None:
            pos = s.getPositions(asNumpy=True).value_in_unit(u.nanometer) * units.NM_TO_A
            vel = (s.getVelocities(asNumpy=True).value_in_unit(u.nanometer / u.picosecond) * _NM_PS_TO_A_FS
                   if save_velocities else None)
            time_fs = s.getTime().value_in_unit(u.picosecond) * units.PS_TO_FS
            writer.append(pos, _state_box_A(s), forces=_state_forces_kcal_mol_A(s), velocities=vel, time_fs=time_fs,
                          step=int(round(time_fs / dt_fs)), potential_energy_kcal_mol=_state_potential_energy_kcal_mol(s))

        t0 = time.perf_counter()
        self.run_phase("production", self.schedule.n_prod, on_save=save)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.bar.close()


def _rescale_to_volume(context: "openmm.Context", system: Mixture, volume_A3: float) -> None:
    """Scale the box and the molecules' centres of mass (molecules rigid) to ``volume_A3``."""
    import openmm.unit as u

    s = context.getState(getPositions=True, enforcePeriodicBox=False)
    pos = np.asarray(s.getPositions(asNumpy=True).value_in_unit(u.nanometer))
    box = np.asarray(s.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer))
    factor = (volume_A3 * units.A_TO_NM**3 / abs(np.linalg.det(box))) ** (1.0 / 3.0)
    molecule_ids = system.atom_molecule_ids()
    masses = system.atom_masses_amu()
    molecule_mass = np.bincount(molecule_ids, weights=masses)
    com = np.stack([np.bincount(molecule_ids, weights=masses * pos[:, k]) for k in range(3)], -1)
    com /= molecule_mass[:, None]
    pos = pos + (factor - 1.0) * com[molecule_ids]
    context.setPeriodicBoxVectors(*_box_vectors(box * factor))
    context.setPositions(pos)
    context.applyConstraints(1e-6)


@dataclass
class _Produced:
    """What a state point's run gives: the state point of its NVT phases, the NPT density statistics
    (None for a density state), the frames written and the production's wall time (s)."""

    final_state: StatePoint
    density_stats: dict[str, float] | None
    n_frames: int
    wall_s: float


def _trajectory_writer(path: Path, system_def: Mixture, topology: Topology, final_state: StatePoint, *,
                       state: StatePoint, settings: GenerateConfig, seed: int, cutoff_A: float) -> Any:
    """The H5MD writer of a generated all-atom trajectory: forces, potential energies, velocities
    when saved; the force field, seed, cutoff, timestep and requested state as its metadata."""
    from thermocg.dataset import H5MDWriter

    h5_metadata = {"force_field": system_def.name, "source": system_def.source, "seed": int(seed),
                   "cutoff_A": cutoff_A, "timestep_fs": settings.timestep_fs, "requested_state": state.to_dict()}
    if system_def.is_mixture:
        h5_metadata["molecule_counts"] = system_def.counts
    return H5MDWriter(path, types=topology.types, type_names=topology.type_names,
                      masses=topology.masses, kind="allatom", state=final_state, has_forces=True,
                      has_velocities=settings.save_velocities, molecule_ids=topology.molecule_ids,
                      metadata=h5_metadata, has_potential_energy=True)


def _metadata(run: _StateRun, produced: _Produced, *, state: StatePoint, seed: int, cutoff_A: float) -> dict[str, Any]:
    """metadata.json of a generated state point (module docstring); ns/day from the production's wall time."""
    from thermocg import provenance

    system_def, schedule = run.system_def, run.schedule
    dt_fs = schedule.timestep_fs
    wall_s = produced.wall_s
    ns_per_day = schedule.n_prod * dt_fs * 1e-6 / (wall_s / 86400.0) if wall_s > 0 else float("nan")
    return {
        "state": produced.final_state.to_dict(),
        "requested_state": state.to_dict(),
        "ensemble": "NPT equilibration, then NVT" if state.pressure_bar is not None else "NVT",
        "equilibrated_density_g_cm3": produced.density_stats,
        "force_field": (system_def.describe() if system_def.is_mixture else system_def.molecules[0].describe()),
        "cutoff_A": cutoff_A,
        "ewald_error_tolerance": EWALD_ERROR_TOLERANCE,
        "n_molecules": system_def.n_molecules,
        **({"molecule_counts": system_def.counts, "mole_fractions": system_def.mole_fractions}
           if system_def.is_mixture else {}),
        "n_atoms": int(system_def.n_atoms),
        "n_frames": int(produced.n_frames),
        "seed": int(seed),
        "platform": run.platform_name,
        "timestep_fs": dt_fs,
        "production_ps": schedule.n_prod * dt_fs * units.FS_TO_PS,
        "production_mean_temperature_K": run.thermo.mean_temperature_K("production"),
        "ns_per_day": ns_per_day,
        "settings": {k: v for k, v in vars(run.settings).items()},
        "provenance": provenance.collect(inputs=system_def.origins or None),
    }


def _write_outputs(out_dir: Path, run: _StateRun, produced: _Produced, topology: Topology, *, state: StatePoint,
                   seed: int, cutoff_A: float, config: "Config | None") -> None:
    """topology.json, thermo.csv, resolved.yaml and, last (it marks a complete state point), metadata.json."""
    system_def = run.system_def
    topology.save(out_dir / "topology.json")
    atomic_write_text(out_dir / "thermo.csv", run.thermo.csv())
    resolved: dict[str, Any] = {"generate": run.settings, "n_molecules": system_def.n_molecules, "seed": int(seed),
                                "molecule": system_def.name, "state": state.to_dict()}
    if system_def.is_mixture:
        resolved["molecule_counts"] = system_def.counts
    write_resolved(config if config is not None else resolved, out_dir / "resolved.yaml",
                   extra={"resolved": {"cutoff_A": cutoff_A, "platform": run.platform_name, **resolved}})
    metadata = _metadata(run, produced, state=state, seed=seed, cutoff_A=cutoff_A)
    atomic_write_text(out_dir / "metadata.json", json.dumps(metadata, indent=2, default=str))


def generate_state(molecule: "Molecule | Mixture | str", state: StatePoint, *, n_molecules: int | None = None,
                   settings: GenerateConfig, seed: int, out_dir: str | Path, progress: bool = True,
                   config: "Config | None" = None) -> Path:
    """Run the all-atom MD of one state point and write its outputs (module docstring); returns traj.h5md.

    The steps: check the input (:func:`_checked_system`), build the box and its OpenMM system
    (:func:`_starting_box`), minimise and thermalise it (:class:`_StateRun`), equilibrate (NPT then
    rescale to the mean volume, for a pressure state; then NVT), produce (NVT, frames to traj.h5md)
    and write the rest (:func:`_write_outputs`).

    Parameters
    ----------
    molecule : a :class:`Molecule` or the name/YAML path for :func:`get_molecule`, or a
        :class:`~thermocg.allatom.mixture.Mixture` (then ``n_molecules`` is left out)
    state : temperature with ``density_g_cm3`` (NVT) or ``pressure_bar`` (NPT, then NVT at the mean
        equilibrated volume; the written state carries both the pressure and that density); for a
        mixture, its ``mole_fractions`` must be the mixture's (to 1/2 molecule) when given
    n_molecules : molecules in the box (one molecule type)
    settings : timestep, lengths (ps), intervals (fs), friction, platform, threads, cutoff
    seed : seeds the box, the integrator, the barostat and the velocities. On the CPU platform with
        ``n_threads=1`` a seed reproduces the run bit for bit; with more threads OpenMM's scheduling
        changes the last bits (same statistics, another trajectory)
    out_dir : directory for the outputs
    config : the full study config, written to resolved.yaml when given
    """
    system_def = _checked_system(molecule, state, n_molecules, settings)
    out_dir = Path(out_dir)
    schedule = _Schedule.of(settings, npt=state.pressure_bar is not None)
    seeds = _derive_seeds(seed)
    start = _starting_box(system_def, state, settings, seeds[0])
    run = _StateRun(system_def, start, state=state, settings=settings, schedule=schedule, seeds=seeds,
                    progress=progress)
    try:
        final_state, density_stats = (run.equilibrate_npt(state) if state.pressure_bar is not None
                                      else (state, None))
        run.run_phase("nvt_equilibration", schedule.n_eq)
        topology = system_def.topology()
        with _trajectory_writer(out_dir / "traj.h5md", system_def, topology, final_state, state=state,
                                settings=settings, seed=seed, cutoff_A=start.cutoff_A) as writer:
            wall_s = run.produce(writer)
            produced = _Produced(final_state, density_stats, writer.n_frames, wall_s)
    finally:
        run.close()
    _write_outputs(out_dir, run, produced, topology, state=state, seed=seed, cutoff_A=start.cutoff_A, config=config)
    return out_dir / "traj.h5md"


def check_composition(system: Mixture, state: StatePoint) -> None:
    """A state's composition must be the system's: the same molecule types (in order) and mole fractions
    within half a molecule of the counts. A one-component system takes no composition."""
    if state.mole_fractions is None:
        return
    if not system.is_mixture:
        raise GenerateError(f"state {state.label}: a composition (mole_fractions) needs a mixture")
    wanted = [name for name, _ in state.mole_fractions]
    have = list(system.counts)
    if len(wanted) != len(have):
        raise GenerateError(f"state {state.label}: mole fractions of {wanted} for a system of {have}")
    total = system.n_molecules
    for (name, x), c in zip(state.mole_fractions, system.components):
        if abs(x * total - c.n_molecules) > 0.5 + 1e-9:
            raise GenerateError(
                f"state {state.label}: mole fraction {x:g} of {name} is not {c.n_molecules} of the "
                f"{total} molecules of {c.molecule.name}")


def _state_seed(seed: int, label: str) -> int:
    """A per-state seed from the study seed and the state label (stable when states are added)."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(label.encode())]).generate_state(1)[0])


def selected_states(config: "Config", state: str | list[str] | None = None) -> list[StatePoint]:
    """The config's state points, or those labelled ``state`` (an unknown label is a ConfigError)."""
    states = config.state_points()
    if not states:
        raise ConfigError("states: no state points to generate (give 'states' or 'state_grid')")
    points = [s.to_state() for s in states]
    if state is not None:
        wanted = [state] if isinstance(state, str) else list(state)
        known = [p.label for p in points]
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise ConfigError(f"--state: unknown state label(s) {unknown}; the config has {known}")
        points = [p for p in points if p.label in wanted]
    return points


def system_for_state(config: "Config", state: StatePoint) -> Mixture:
    """The all-atom system of ``config.system`` at ``state``: its counts redistributed by the state's
    composition (a mixture), or the one molecule type and its count."""
    return mixture_from_config(config.system, state.composition)


def check_buildable(config: "Config", points: list[StatePoint] | None = None) -> None:
    """Refuse, before anything is built, a density state point whose density packs the molecules
    beyond what a box can hold (:func:`thermocg.allatom.build.check_density`): a ConfigError naming
    the state, its density and the largest density the system allows. ``points``: the config's state
    points when None."""
    from thermocg.allatom.build import BuildError, check_density

    for point in points if points is not None else [s.to_state() for s in config.state_points()]:
        if point.density_g_cm3 is None:
            continue
        try:
            check_density(system_for_state(config, point), point.density_g_cm3, where=f"state {point.label}")
        except BuildError as exc:
            raise ConfigError(str(exc)) from None


def run_generate(config: "Config", run_dir: str | Path, *, state: str | list[str] | None = None,
                 progress: bool = True) -> list[Path]:
    """Generate all-atom data for every state point of ``config`` (or those labelled ``state``).

    Writes ``RunDir(run_dir).allatom(label)/...`` per state point; returns the traj.h5md paths.
    """
    points = selected_states(config, state)
    check_buildable(config, points)
    rundir = RunDir(run_dir)
    paths = []
    for point in points:
        system = system_for_state(config, point)
        out = rundir.allatom(point.label)
        print(f"thermocg generate: {system.counts_text} at {point.label} -> {out}")
        paths.append(generate_state(system, point, settings=config.generate,
                                    seed=_state_seed(config.seed, point.label), out_dir=out, progress=progress,
                                    config=config))
    return paths
