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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from thermocg import units
from thermocg.allatom.build import build_box
from thermocg.allatom.mixture import Mixture, MixtureError, as_mixture, mixture_from_config
from thermocg.allatom.molecules import Molecule, get_molecule
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
    a, b = molecule.sites[i], molecule.sites[j]
    eps = math.sqrt(a.epsilon_kcal_mol * b.epsilon_kcal_mol)
    if molecule.mixing == "geometric":
        return math.sqrt(a.sigma_A * b.sigma_A), eps
    return 0.5 * (a.sigma_A + b.sigma_A), eps


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
    kcal_to_kj = units.KCAL_TO_KJ
    a_to_nm = units.A_TO_NM
    omm = openmm.System()
    box_nm = np.asarray(box_A, dtype=np.float64) * a_to_nm
    omm.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box_nm])
    for mass in mixture.atom_masses_amu():
        omm.addParticle(float(mass))

    tabulated = not mixture.follows_lorentz_berthelot
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.PME)
    nonbonded.setCutoffDistance(cutoff_A * a_to_nm)
    nonbonded.setEwaldErrorTolerance(EWALD_ERROR_TOLERANCE)
    nonbonded.setUseDispersionCorrection(mixture.dispersion_correction and not tabulated)
    nonbonded.setForceGroup(FORCE_GROUP_NONBONDED)
    custom = None
    if tabulated:
        sigma, eps = mixture.lj_tables()
        n_classes = len(sigma)
        custom = openmm.CustomNonbondedForce(
            "4*eps*((sig/r)^12 - (sig/r)^6); sig = sigma_nm(c1, c2); eps = epsilon_kj(c1, c2)")
        custom.addTabulatedFunction("sigma_nm", openmm.Discrete2DFunction(
            n_classes, n_classes, (sigma * a_to_nm).T.ravel().tolist()))
        custom.addTabulatedFunction("epsilon_kj", openmm.Discrete2DFunction(
            n_classes, n_classes, (eps * kcal_to_kj).T.ravel().tolist()))
        custom.addPerParticleParameter("c")
        custom.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
        custom.setCutoffDistance(cutoff_A * a_to_nm)
        custom.setUseLongRangeCorrection(mixture.dispersion_correction)
        custom.setForceGroup(FORCE_GROUP_NONBONDED)

    bond_force = openmm.HarmonicBondForce()
    angle_force = openmm.HarmonicAngleForce()
    torsion_force = openmm.PeriodicTorsionForce()
    for f in (bond_force, angle_force, torsion_force):
        f.setForceGroup(FORCE_GROUP_BONDED)

    pair_lists = {}
    for k, molecule in enumerate(mixture.molecules):
        excluded, pairs14 = molecule.topology_pairs()
        n_sites = molecule.n_sites
        pair_lists[k] = (excluded, pairs14, [(i, j) for i in range(n_sites) for j in range(i + 1, n_sites)])
    for k, molecule, _, base in mixture.molecule_blocks():
        excluded, pairs14, all_pairs = pair_lists[k]
        classes = mixture.site_classes(k)
        for s, site in enumerate(molecule.sites):
            sigma_nm = site.sigma_A * a_to_nm
            eps_kj = site.epsilon_kcal_mol * kcal_to_kj
            if tabulated:
                nonbonded.addParticle(site.charge_e, 1.0 * a_to_nm, 0.0)
                custom.addParticle([float(classes[s])])
            else:
                # sigma is irrelevant when epsilon is zero; keep it positive for OpenMM
                nonbonded.addParticle(site.charge_e, sigma_nm if eps_kj > 0 else 1.0 * a_to_nm, eps_kj)
        for c in molecule.constraints:
            omm.addConstraint(base + c.atoms[0], base + c.atoms[1], c.length_A * a_to_nm)
        # every intramolecular pair is an exception: excluded, scaled (1-4) or, when asked, removed
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
        if intermolecular_only:
            continue
        for b in molecule.bonds:
            bond_force.addBond(base + b.atoms[0], base + b.atoms[1], b.length_A * a_to_nm,
                               b.k_kcal_mol_A2 * kcal_to_kj / a_to_nm**2)
        for a in molecule.angles:
            angle_force.addAngle(*(base + k for k in a.atoms), math.radians(a.theta0_deg),
                                 a.k_kcal_mol_rad2 * kcal_to_kj)
        for t in molecule.torsions:
            torsion_force.addTorsion(*(base + k for k in t.atoms), t.periodicity, math.radians(t.phase_deg),
                                     t.k_kcal_mol * kcal_to_kj)
    omm.addForce(nonbonded)
    if custom is not None:
        omm.addForce(custom)
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
    context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.asarray(box_A) * units.A_TO_NM])
    context.setPositions(np.asarray(positions_A) * units.A_TO_NM)
    return context


def energy_and_forces(context: "openmm.Context", *, groups: Iterable[int] | None = None) -> tuple[float, np.ndarray]:
    """Potential energy (kcal/mol) and forces (n_atoms, 3) kcal/mol/A of the context's current state.

    ``groups``: only these force groups (e.g. ``{FORCE_GROUP_BONDED}``); all when None.
    """
    import openmm.unit as u

    kwargs = {} if groups is None else {"groups": set(groups)}
    state = context.getState(getEnergy=True, getForces=True, **kwargs)
    energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.KJ_TO_KCAL
    forces = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer) * _KJ_NM_TO_KCAL_A
    return float(energy), np.asarray(forces, dtype=np.float64)


def topology_for(system: "Molecule | Mixture", n_molecules: int | None = None) -> Topology:
    """The :class:`~thermocg.frames.Topology` of ``n_molecules`` copies of a molecule, or of a mixture,
    in atom order (component by component, molecule by molecule)."""
    return as_mixture(system, n_molecules).topology()


# --------------------------------------------------------------------------------------------------
# running a state point
# --------------------------------------------------------------------------------------------------

@dataclass
class _Thermo:
    """Thermo rows collected during a run."""

    rows: list[tuple[str, float, float, float, float, float, float]]

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


def generate_state(molecule: "Molecule | Mixture | str", state: StatePoint, *, n_molecules: int | None = None,
                   settings: GenerateConfig, seed: int, out_dir: str | Path, progress: bool = True,
                   config: "Config | None" = None) -> Path:
    """Run the all-atom MD of one state point and write its outputs (module docstring); returns traj.h5md.

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
    import openmm
    import openmm.unit as u

    from thermocg import provenance
    from thermocg.dataset import H5MDWriter

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
    out_dir = Path(out_dir)
    dt_fs = settings.timestep_fs
    save_steps = _steps(settings.save_interval_fs, dt_fs, "save_interval_fs")
    thermo_steps = _steps(settings.thermo_interval_fs, dt_fs, "thermo_interval_fs")
    chunk = math.gcd(save_steps, thermo_steps)
    n_npt = round(settings.npt_equilibration_ps * units.PS_TO_FS / dt_fs) if npt else 0
    n_eq = round(settings.equilibration_ps * units.PS_TO_FS / dt_fs)
    n_prod = round(settings.production_ps * units.PS_TO_FS / dt_fs)
    n_prod = max(save_steps, n_prod - n_prod % save_steps)

    seed_box, seed_integrator, seed_barostat, seed_velocities = _derive_seeds(seed)
    temperature = state.temperature_K
    start_density = state.density_g_cm3 if not npt else system_def.density_guess_g_cm3
    positions, box = build_box(system_def, density_g_cm3=start_density, rng=np.random.default_rng(seed_box))
    cutoff_A = resolve_cutoff_A(system_def, box, settings.nonbonded_cutoff_A)
    system = build_system(system_def, box_A=box, cutoff_A=cutoff_A)
    system.addForce(openmm.CMMotionRemover())
    barostat_index = None
    if npt:
        barostat = openmm.MonteCarloBarostat(state.pressure_bar * u.bar, temperature * u.kelvin,
                                             settings.barostat_interval)
        barostat.setRandomNumberSeed(seed_barostat)
        barostat_index = system.addForce(barostat)
    integrator = openmm.LangevinMiddleIntegrator(temperature * u.kelvin, settings.friction_per_ps / u.picosecond,
                                                 dt_fs * units.FS_TO_PS * u.picosecond)
    integrator.setRandomNumberSeed(seed_integrator)
    context = make_context(system, positions, box, integrator=integrator, platform=settings.platform,
                           n_threads=settings.n_threads)
    platform_name = context.getPlatform().getName()
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 2000)
    context.setVelocitiesToTemperature(temperature * u.kelvin, seed_velocities)

    n_atoms = system_def.n_atoms
    total_mass = system_def.mass_amu
    dof = 3 * n_atoms - system.getNumConstraints() - 3
    thermo = _Thermo(rows=[])

    def thermo_row(phase: str, s: "openmm.State") -> float:
        box_now = np.asarray(s.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)) * units.NM_TO_A
        volume = float(abs(np.linalg.det(box_now)))
        kinetic = s.getKineticEnergy().value_in_unit(u.kilojoule_per_mole) * units.KJ_TO_KCAL
        thermo.rows.append((
            phase, s.getTime().value_in_unit(u.picosecond),
            s.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.KJ_TO_KCAL, kinetic,
            2.0 * kinetic / (dof * units.KB_KCAL_MOL_K), volume, units.mass_density_g_cm3(total_mass, volume),
        ))
        return volume

    from tqdm.auto import tqdm

    bar = tqdm(total=n_npt + n_eq + n_prod, unit="step", disable=not progress,
               desc=f"generate {system_def.name} {state.label}", mininterval=2.0)

    def run_phase(phase: str, n_steps: int, on_save=None) -> list[float]:
        volumes = []
        done = 0
        while done < n_steps:
            k = min(chunk, n_steps - done)
            integrator.step(k)
            done += k
            bar.update(k)
            want_thermo = done % thermo_steps == 0
            want_save = on_save is not None and done % save_steps == 0
            if want_thermo or want_save:
                s = context.getState(getEnergy=True, getPositions=want_save, getForces=want_save,
                                     getVelocities=want_save and settings.save_velocities,
                                     enforcePeriodicBox=True)
                if want_thermo:
                    volumes.append(thermo_row(phase, s))
                if want_save:
                    on_save(s)
        return volumes

    try:
        final_state = state
        density_stats: dict[str, float] | None = None
        if npt:
            volumes = np.array(run_phase("npt", n_npt))
            tail = volumes[len(volumes) // 2:] if len(volumes) >= 2 else volumes
            if len(tail) == 0:
                s = context.getState()
                tail = np.array([abs(np.linalg.det(np.asarray(
                    s.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)) * units.NM_TO_A))])
            mean_volume = float(tail.mean())
            densities = units.mass_density_g_cm3(total_mass, 1.0) / tail
            density_stats = {"mean": float(densities.mean()), "stderr": block_stderr(densities),
                             "std": float(densities.std()), "n_samples": int(len(densities)),
                             # the NVT box: the mean volume (its density differs from the mean density
                             # by the tiny <1/V> - 1/<V> of the fluctuations)
                             "at_mean_volume": units.mass_density_g_cm3(total_mass, mean_volume)}
            system.removeForce(barostat_index)
            context.reinitialize(preserveState=True)
            _rescale_to_volume(context, system_def, mean_volume)
            final_state = StatePoint(temperature, density_g_cm3=units.mass_density_g_cm3(total_mass, mean_volume),
                                     pressure_bar=state.pressure_bar, mole_fractions=state.mole_fractions)
        run_phase("nvt_equilibration", n_eq)

        topology = system_def.topology()
        h5_metadata = {"force_field": system_def.name, "source": system_def.source, "seed": int(seed),
                       "cutoff_A": cutoff_A, "timestep_fs": dt_fs, "requested_state": state.to_dict()}
        if system_def.is_mixture:
            h5_metadata["molecule_counts"] = system_def.counts
        writer = H5MDWriter(out_dir / "traj.h5md", types=topology.types, type_names=topology.type_names,
                            masses=topology.masses, kind="allatom", state=final_state, has_forces=True,
                            has_velocities=settings.save_velocities, molecule_ids=topology.molecule_ids,
                            metadata=h5_metadata, has_potential_energy=True)

        def save(s: "openmm.State") -> None:
            pos = s.getPositions(asNumpy=True).value_in_unit(u.nanometer) * units.NM_TO_A
            frc = s.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer) * _KJ_NM_TO_KCAL_A
            vel = (s.getVelocities(asNumpy=True).value_in_unit(u.nanometer / u.picosecond) * _NM_PS_TO_A_FS
                   if settings.save_velocities else None)
            box_now = np.asarray(s.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)) * units.NM_TO_A
            time_fs = s.getTime().value_in_unit(u.picosecond) * units.PS_TO_FS
            energy = s.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.KJ_TO_KCAL
            writer.append(pos, box_now, forces=frc, velocities=vel, time_fs=time_fs,
                          step=int(round(time_fs / dt_fs)), potential_energy_kcal_mol=energy)

        with writer:
            t0 = time.perf_counter()
            run_phase("production", n_prod, on_save=save)
            wall_s = time.perf_counter() - t0
            n_frames = writer.n_frames
    finally:
        bar.close()
    ns_per_day = n_prod * dt_fs * 1e-6 / (wall_s / 86400.0) if wall_s > 0 else float("nan")

    topology.save(out_dir / "topology.json")
    atomic_write_text(out_dir / "thermo.csv", thermo.csv())
    resolved: dict[str, Any] = {"generate": settings, "n_molecules": system_def.n_molecules, "seed": int(seed),
                                "molecule": system_def.name, "state": state.to_dict()}
    if system_def.is_mixture:
        resolved["molecule_counts"] = system_def.counts
    write_resolved(config if config is not None else resolved, out_dir / "resolved.yaml",
                   extra={"resolved": {"cutoff_A": cutoff_A, "platform": platform_name, **resolved}})
    prod_rows = [r for r in thermo.rows if r[0] == "production"]
    metadata = {
        "state": final_state.to_dict(),
        "requested_state": state.to_dict(),
        "ensemble": "NPT equilibration, then NVT" if npt else "NVT",
        "equilibrated_density_g_cm3": density_stats,
        "force_field": (system_def.describe() if system_def.is_mixture else system_def.molecules[0].describe()),
        "cutoff_A": cutoff_A,
        "ewald_error_tolerance": EWALD_ERROR_TOLERANCE,
        "n_molecules": system_def.n_molecules,
        **({"molecule_counts": system_def.counts, "mole_fractions": system_def.mole_fractions}
           if system_def.is_mixture else {}),
        "n_atoms": int(n_atoms),
        "n_frames": int(n_frames),
        "seed": int(seed),
        "platform": platform_name,
        "timestep_fs": dt_fs,
        "production_ps": n_prod * dt_fs * units.FS_TO_PS,
        "production_mean_temperature_K": float(np.mean([r[4] for r in prod_rows])) if prod_rows else None,
        "ns_per_day": ns_per_day,
        "settings": {k: v for k, v in vars(settings).items()},
        "provenance": provenance.collect(inputs=system_def.origins or None),
    }
    atomic_write_text(out_dir / "metadata.json", json.dumps(metadata, indent=2, default=str))
    return out_dir / "traj.h5md"


def _rescale_to_volume(context: "openmm.Context", system: Mixture, volume_A3: float) -> None:
    """Scale the box and the molecules' centres of mass (molecules rigid) to ``volume_A3``."""
    import openmm
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
    context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box * factor])
    context.setPositions(pos)
    context.applyConstraints(1e-6)


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
        counts = " + ".join(f"{n} {name}" for name, n in system.counts.items())
        print(f"thermocg generate: {counts} at {point.label} -> {out}")
        paths.append(generate_state(system, point, settings=config.generate,
                                    seed=_state_seed(config.seed, point.label), out_dir=out, progress=progress,
                                    config=config))
    return paths
