"""All-atom systems for GROMACS: the built-in (or YAML) molecules as .gro + .top + .mdp inputs.

The reference data of a large study (1000 molecules, nanoseconds per state) is cheaper in GROMACS on a
cluster than in OpenMM on a workstation CPU. ``thermocg export-allatom CONFIG --state LABEL --output
DIR`` writes, for one state point of the config, everything ``gmx grompp`` needs to run the same force
field that ``thermocg generate`` runs with OpenMM:

- ``conf.gro``   the box built and energy-minimised by OpenMM as in ``generate`` (nm, 3 decimals)
- ``topol.top``  [defaults] with the (first) molecule's mixing rule (comb-rule 2 Lorentz-Berthelot or
                 3 geometric) and 1-4 scaling, [atomtypes], [nonbond_params] for every atom-type pair
                 the rule does not give (a mixture's cross-interaction overrides, or a molecule type
                 that mixes by the other rule), and one [moleculetype] per molecule type: atoms with
                 charges and masses, [constraints] (type 1, which also generate exclusions), harmonic
                 [bonds] (type 1) and [angles] (type 1), periodic [dihedrals] (type 9), [pairs] for
                 the 1-4 pairs when they are scaled rather than excluded; nrexcl 3; [molecules] lists
                 the molecule types in the order of the atoms (a mixture: component by component)
- ``nvt.mdp``    NVT production: stochastic dynamics (GROMACS's Langevin integrator, tau-t =
                 1 / friction) at the state's temperature, PME, plain LJ and Coulomb cutoffs as the
                 force field prescribes, DispCorr EnerPres, positions, velocities and **forces**
                 written every save interval to the .trr that ``thermocg import`` reads back (format
                 ``gromacs``, topology the .tpr)
- ``npt.mdp``    for a pressure state point, the NPT equilibration first (C-rescale barostat), and
  ``eq.mdp``     the NVT equilibration (when ``generate.equilibration_ps`` > 0); neither writes frames
- ``run.sh``     the gmx commands, each stage continuing from the previous one's checkpoint

Units are converted at this edge: A -> nm, kcal/mol -> kJ/mol, fs -> ps. ``tests/test_gromacs.py``
runs GROMACS on these files and checks that its forces equal OpenMM's for the same configuration
(TraPPE-UA and OPLS-AA methanol, SPC/E water), and that GROMACS's own ``oplsaa.ff`` methanol and SPC/E
give the forces of our built-in definitions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from thermocg import units
from thermocg.allatom.mixture import Mixture, as_mixture
from thermocg.allatom.molecules import Molecule, get_molecule, mixed_lj
from thermocg.neighbors import perpendicular_widths
from thermocg.rundir import atomic_write_text

if TYPE_CHECKING:
    from thermocg.config import Config

__all__ = ["GromacsExportError", "gro_text", "gromacs_topology", "mdp_text", "run_export_allatom", "write_gromacs_inputs"]

_KCAL_A2_TO_KJ_NM2 = units.KCAL_TO_KJ * units.NM_TO_A**2


class GromacsExportError(ValueError):
    """A system that cannot be written for GROMACS; the message says why."""


def _gmx_name(text: str, width: int = 5) -> str:
    """A name that fits a fixed-width .gro column (GROMACS truncates silently: refuse instead)."""
    name = text.replace(" ", "_")
    if len(name) > width:
        raise GromacsExportError(f"the name {text!r} is longer than {width} characters (a .gro column)")
    return name


def _atomtype_names(mixture: Mixture) -> list[str]:
    """A GROMACS atom-type name per LJ class of the mixture (:attr:`Mixture.lj_classes`): the site type,
    qualified by the molecule when two molecule types share it, and by the site name when sites of one
    type carry different LJ parameters."""
    names: list[str] = []
    qualified = mixture.atom_type_names()
    for k, cls in enumerate(mixture.lj_classes):
        name = qualified[k].replace(":", "_")
        if name in names:
            molecule = mixture.components[cls.component].molecule
            site = next(s.name for s, c in zip(molecule.sites, mixture.site_classes(cls.component)) if c == k)
            name = f"{name}_{site}"
        names.append(name)
    return names


#: GROMACS comb-rule -> the mixing rule it applies (2: Lorentz-Berthelot, 3: geometric sigma and epsilon)
_COMB_RULE_MIXING = {2: "lorentz-berthelot", 3: "geometric"}


def _comb_rule_pair(comb_rule: int, a: Any, b: Any) -> tuple[float, float]:
    """(sigma_A, epsilon_kcal_mol) of sites or LJ classes ``a`` and ``b`` under a GROMACS comb-rule."""
    return mixed_lj(_COMB_RULE_MIXING[comb_rule], a, b)


def gromacs_topology(system: Molecule | Mixture, n_molecules: int | None = None, *,
                     system_name: str | None = None) -> str:
    """The text of ``topol.top`` for ``n_molecules`` copies of a molecule, or for a mixture (one
    ``[ moleculetype ]`` per molecule type, one ``[ molecules ]`` line each, in atom order).

    [ defaults ] takes the first molecule type's mixing rule (comb-rule 2 Lorentz-Berthelot, 3
    geometric) and 1-4 scaling. Every pair of atom types whose LJ parameters are not what that rule
    gives (a cross interaction set in the config, or the pairs of a molecule type whose force field
    mixes by the other rule) is written to [ nonbond_params ] with its sigma and epsilon. 1-4 pairs of
    a molecule type that mixes by the other rule, or scales LJ 1-4 differently, get explicit
    parameters on their [ pairs ] lines; its Coulomb 1-4 scale must be the global fudgeQQ.
    """
    mixture = as_mixture(system, n_molecules)
    first = mixture.molecules[0]
    for molecule in mixture.molecules:
        if molecule.mixing not in ("lorentz-berthelot", "geometric"):
            raise GromacsExportError(f"{molecule.name}: mixing rule {molecule.mixing!r} has no GROMACS comb-rule")
    comb_rule = 2 if first.mixing == "lorentz-berthelot" else 3
    scaled = {}
    for molecule in mixture.molecules:
        _, pairs14 = molecule.topology_pairs()
        scaled[molecule.name] = bool(pairs14) and (molecule.scale14_lj != 0.0 or molecule.scale14_coulomb != 0.0)
    with_pairs = [m for m in mixture.molecules if scaled[m.name]]
    fudge_lj, fudge_qq = ((with_pairs[0].scale14_lj, with_pairs[0].scale14_coulomb) if with_pairs
                          else (first.scale14_lj, first.scale14_coulomb))
    for molecule in with_pairs:
        if molecule.scale14_coulomb != fudge_qq:
            raise GromacsExportError(
                f"{molecule.name}: its 1-4 Coulomb scale {molecule.scale14_coulomb:g} differs from "
                f"{with_pairs[0].name}'s {fudge_qq:g}; one GROMACS topology has one fudgeQQ")
    classes = mixture.lj_classes
    type_names = _atomtype_names(mixture)
    lines = [
        f"; {mixture.name}: {mixture.source or ', '.join(mixture.origins) or 'thermocg'}",
        "; written by thermocg (units: nm, kJ/mol, e, amu)",
        "",
        "[ defaults ]",
        "; nbfunc  comb-rule  gen-pairs  fudgeLJ  fudgeQQ",
        f"  1        {comb_rule}          yes        {fudge_lj:g}      {fudge_qq:g}",
        "",
        "[ atomtypes ]",
        "; name  mass  charge  ptype  sigma(nm)  epsilon(kJ/mol)",
    ]
    for k, cls in enumerate(classes):
        molecule = mixture.components[cls.component].molecule
        mass = next(s.mass_amu for s, c in zip(molecule.sites, mixture.site_classes(cls.component)) if c == k)
        sigma_nm = cls.sigma_A * units.A_TO_NM if cls.epsilon_kcal_mol > 0 else 0.0
        lines.append(f"  {type_names[k]:<10s} {mass:10.5f}  0.0  A  {sigma_nm:.8f}  "
                     f"{cls.epsilon_kcal_mol * units.KCAL_TO_KJ:.8f}")
    overrides = []
    for i, a in enumerate(classes):
        for j in range(i, len(classes)):
            b = classes[j]
            sigma, eps, _ = mixture.pair_lj(a, b)
            rule_sigma, rule_eps = _comb_rule_pair(comb_rule, a, b)
            if eps == 0.0 and rule_eps == 0.0:
                continue
            if abs(eps - rule_eps) > 1e-12 * max(eps, 1e-300) or abs(sigma - rule_sigma) > 1e-12 * sigma:
                overrides.append(f"  {type_names[i]:<10s} {type_names[j]:<10s} 1  {sigma * units.A_TO_NM:.8f}  "
                                 f"{eps * units.KCAL_TO_KJ:.8f}")
    if overrides:
        lines += ["", "[ nonbond_params ]", "; i  j  funct  sigma(nm)  epsilon(kJ/mol)", *overrides]
    for k, molecule in enumerate(mixture.molecules):
        lines += _moleculetype(molecule, [type_names[c] for c in mixture.site_classes(k)], comb_rule,
                               scaled[molecule.name], fudge_lj)
    lines += ["", "[ system ]", f"  {system_name or mixture.name}", "", "[ molecules ]"]
    lines += [f"  {c.molecule.name}  {int(c.n_molecules)}" for c in mixture.components if c.n_molecules > 0]
    return "\n".join(lines + [""])


def _moleculetype(molecule: Molecule, site_types: list[str], comb_rule: int, scaled14: bool,
                  fudge_lj: float) -> list[str]:
    """The [ moleculetype ] block of one molecule type (atoms, constraints, bonds, pairs, angles, dihedrals)."""
    _, pairs14 = molecule.topology_pairs()
    residue = _gmx_name(molecule.name.upper()[:5])
    lines = ["", "[ moleculetype ]", "; name  nrexcl", f"  {molecule.name}  3", "", "[ atoms ]",
             "; nr  type  resnr  residue  atom  cgnr  charge  mass"]
    for k, site in enumerate(molecule.sites, start=1):
        lines.append(f"  {k:4d}  {site_types[k - 1]:<10s} 1  {residue}  {_gmx_name(site.name)}  {k}  "
                     f"{site.charge_e:.6f}  {site.mass_amu:.5f}")
    if molecule.constraints:
        lines += ["", "[ constraints ]", "; i  j  funct  length(nm)"]
        lines += [f"  {c.atoms[0] + 1}  {c.atoms[1] + 1}  1  {c.length_A * units.A_TO_NM:.8f}"
                  for c in molecule.constraints]
    if molecule.bonds:
        lines += ["", "[ bonds ]", "; i  j  funct  b0(nm)  kb(kJ/mol/nm^2)"]
        lines += [f"  {b.atoms[0] + 1}  {b.atoms[1] + 1}  1  {b.length_A * units.A_TO_NM:.8f}  "
                  f"{b.k_kcal_mol_A2 * _KCAL_A2_TO_KJ_NM2:.6f}" for b in molecule.bonds]
    if scaled14:
        own_rule = 2 if molecule.mixing == "lorentz-berthelot" else 3
        if own_rule == comb_rule and molecule.scale14_lj == fudge_lj:
            lines += ["", "[ pairs ]", "; i  j  funct (parameters from gen-pairs: fudgeLJ, fudgeQQ)"]
            lines += [f"  {i + 1}  {j + 1}  1" for i, j in sorted(pairs14)]
        else:
            # the molecule's own mixing and LJ scaling, written out (gen-pairs would use the global ones)
            lines += ["", "[ pairs ]", "; i  j  funct  sigma(nm)  epsilon(kJ/mol)  (1-4 LJ already scaled)"]
            for i, j in sorted(pairs14):
                sigma, eps = _comb_rule_pair(own_rule, molecule.sites[i], molecule.sites[j])
                lines.append(f"  {i + 1}  {j + 1}  1  {sigma * units.A_TO_NM:.8f}  "
                             f"{eps * molecule.scale14_lj * units.KCAL_TO_KJ:.8f}")
    if molecule.angles:
        lines += ["", "[ angles ]", "; i  j  k  funct  theta0(deg)  k(kJ/mol/rad^2)"]
        lines += [f"  {a.atoms[0] + 1}  {a.atoms[1] + 1}  {a.atoms[2] + 1}  1  {a.theta0_deg:.6f}  "
                  f"{a.k_kcal_mol_rad2 * units.KCAL_TO_KJ:.6f}" for a in molecule.angles]
    if molecule.torsions:
        lines += ["", "[ dihedrals ]", "; i  j  k  l  funct  phase(deg)  k(kJ/mol)  multiplicity"]
        # type 9 allows several periodic terms on one quadruple; GROMACS wants them on adjacent lines
        for t in sorted(molecule.torsions, key=lambda t: t.atoms):
            i, j, k, m = (a + 1 for a in t.atoms)
            lines.append(f"  {i}  {j}  {k}  {m}  9  {t.phase_deg:.6f}  {t.k_kcal_mol * units.KCAL_TO_KJ:.8f}  "
                         f"{t.periodicity}")
    return lines


def gro_text(system: Molecule | Mixture, n_molecules: int | None, positions_A: np.ndarray, box_A: np.ndarray, *,
             title: str = "thermocg", velocities_A_fs: np.ndarray | None = None) -> str:
    """A .gro file: molecule by molecule (a mixture: in its atom order), positions in nm (3 decimals),
    the box as GROMACS orders it."""
    mixture = as_mixture(system, n_molecules)
    positions = np.asarray(positions_A, dtype=np.float64) * units.A_TO_NM
    n_atoms = mixture.n_atoms
    if positions.shape != (n_atoms, 3):
        raise GromacsExportError(f"positions have shape {positions.shape}, expected ({n_atoms}, 3)")
    box = np.asarray(box_A, dtype=np.float64) * units.A_TO_NM
    if abs(box[0, 1]) > 1e-9 or abs(box[0, 2]) > 1e-9 or abs(box[1, 2]) > 1e-9:
        raise GromacsExportError("GROMACS needs a lower-triangular box (a along x, b in the xy plane)")
    if n_atoms > 99999:
        raise GromacsExportError(f"{n_atoms} atoms: a .gro numbers atoms with 5 digits (at most 99999)")
    residues = {m.name: _gmx_name(m.name.upper()[:5]) for m in mixture.molecules}
    site_names = {m.name: [_gmx_name(s.name) for s in m.sites] for m in mixture.molecules}
    velocities = None
    if velocities_A_fs is not None:
        velocities = np.asarray(velocities_A_fs, dtype=np.float64) * units.A_TO_NM / units.FS_TO_PS
    lines = [title.replace("\n", " "), f"{n_atoms:5d}"]
    for _, molecule, mol, start in mixture.molecule_blocks():
        residue = residues[molecule.name]
        for site, name in enumerate(site_names[molecule.name]):
            k = start + site
            x, y, z = positions[k]
            line = f"{(mol + 1) % 100000:5d}{residue:<5s}{name:>5s}{(k + 1) % 100000:5d}{x:8.3f}{y:8.3f}{z:8.3f}"
            if velocities is not None:
                vx, vy, vz = velocities[k]
                line += f"{vx:8.4f}{vy:8.4f}{vz:8.4f}"
            lines.append(line)
    diagonal = [box[0, 0], box[1, 1], box[2, 2]]
    off = [box[0, 1], box[0, 2], box[1, 0], box[1, 2], box[2, 0], box[2, 1]]
    lines.append(" ".join(f"{v:.5f}" for v in diagonal + (off if any(abs(v) > 0 for v in off) else [])))
    return "\n".join(lines) + "\n"


def mdp_text(molecule: Molecule | Mixture, *, cutoff_A: float, temperature_K: float, timestep_fs: float,
             n_steps: int, save_interval_fs: float, friction_per_ps: float, seed: int,
             pressure_bar: float | None = None, generate_velocities: bool = True,
             write_frames: bool = True) -> str:
    """The run parameters: SD (Langevin) NVT, or NPT with C-rescale when ``pressure_bar`` is given.

    ``write_frames``: positions, velocities and forces to the .trr every save interval (production);
    otherwise only energies (equilibration stages)."""
    save_steps = max(1, round(save_interval_fs / timestep_fs))
    frame_steps = save_steps if write_frames else 0
    cutoff_nm = cutoff_A * units.A_TO_NM
    lines = [
        f"; thermocg: {molecule.name} at {temperature_K:g} K"
        + (f", {pressure_bar:g} bar (NPT)" if pressure_bar is not None else " (NVT)"),
        "integrator               = sd",
        f"dt                       = {timestep_fs * units.FS_TO_PS:.6g}",
        f"nsteps                   = {int(n_steps)}",
        "tc-grps                  = System",
        f"tau-t                    = {1.0 / friction_per_ps:.6g}",
        f"ref-t                    = {temperature_K:.6g}",
        f"ld-seed                  = {int(seed)}",
        f"gen-vel                  = {'yes' if generate_velocities else 'no'}",
        f"gen-temp                 = {temperature_K:.6g}",
        f"gen-seed                 = {int(seed)}",
        f"continuation             = {'no' if generate_velocities else 'yes'}",
        f"nstxout                  = {frame_steps}",
        f"nstvout                  = {frame_steps}",
        f"nstfout                  = {frame_steps}",
        f"nstenergy                = {save_steps}",
        f"nstlog                   = {save_steps}",
        "pbc                      = xyz",
        "cutoff-scheme            = Verlet",
        "coulombtype              = PME",
        f"rcoulomb                 = {cutoff_nm:.6g}",
        "vdwtype                  = Cut-off",
        "vdw-modifier             = None",
        f"rvdw                     = {cutoff_nm:.6g}",
        f"DispCorr                 = {'EnerPres' if molecule.dispersion_correction else 'no'}",
        "fourierspacing           = 0.10",
        "pme-order                = 4",
        "ewald-rtol               = 1e-5",
        "constraints              = none",
        "constraint-algorithm     = lincs",
        "lincs-order              = 6",
        "lincs-iter               = 2",
    ]
    if pressure_bar is not None:
        lines += ["pcoupl                   = C-rescale", "pcoupltype               = isotropic",
                  "tau-p                    = 2.0", f"ref-p                    = {pressure_bar:.6g}",
                  "compressibility          = 4.5e-5", "refcoord-scaling         = com"]
    return "\n".join(lines) + "\n"


def write_gromacs_inputs(molecule: Molecule | Mixture | str, n_molecules: int | None, positions_A: np.ndarray, box_A: np.ndarray,
                         out_dir: str | os.PathLike, *, cutoff_A: float, temperature_K: float,
                         timestep_fs: float = 1.0, production_ps: float = 100.0, save_interval_fs: float = 100.0,
                         friction_per_ps: float = 1.0, seed: int = 0, pressure_bar: float | None = None,
                         npt_equilibration_ps: float = 100.0, equilibration_ps: float = 0.0,
                         title: str = "thermocg") -> dict[str, Path]:
    """Write conf.gro, topol.top, the .mdp of each stage and run.sh to ``out_dir``.

    The stages follow ``thermocg generate``: ``npt.mdp`` (pressure states: NPT for
    ``npt_equilibration_ps``), ``eq.mdp`` (NVT for ``equilibration_ps``, when > 0), ``nvt.mdp`` (NVT
    production for ``production_ps``, the only stage that writes frames). Each stage after the first
    continues from the previous one's checkpoint. Unlike ``generate``, a pressure state's NVT runs
    in the last NPT box, not in the box of the mean volume. Every file is written to a temporary name
    and renamed, so a failure leaves no partial input. Returns {"gro", "top", "run", "<stage>_mdp"} -> path.
    """
    if isinstance(molecule, str):
        molecule = get_molecule(molecule)
    molecule = as_mixture(molecule, n_molecules)
    n_molecules = None
    box = np.asarray(box_A, dtype=np.float64)
    half_width = 0.5 * perpendicular_widths(box).min()
    if not 0 < cutoff_A < half_width:
        raise GromacsExportError(f"cutoff {cutoff_A:g} A must be below half the box width ({half_width:.2f} A)")
    texts = {"top": ("topol.top", gromacs_topology(molecule, n_molecules, system_name=title)),
             "gro": ("conf.gro", gro_text(molecule, n_molecules, positions_A, box, title=title))}
    common = {"cutoff_A": cutoff_A, "temperature_K": temperature_K, "timestep_fs": timestep_fs,
              "save_interval_fs": save_interval_fs, "friction_per_ps": friction_per_ps, "seed": seed}
    stages = []  # (name, length ps, pressure, writes frames)
    if pressure_bar is not None:
        stages.append(("npt", npt_equilibration_ps, pressure_bar, False))
    if equilibration_ps > 0:
        stages.append(("eq", equilibration_ps, None, False))
    stages.append(("nvt", production_ps, None, True))
    for k, (name, length_ps, pressure, frames) in enumerate(stages):
        n_steps = round(length_ps * units.PS_TO_FS / timestep_fs)
        # GROMACS's SD noise is keyed on (seed, step) and every stage starts at step 0: a seed per
        # stage, or the stages would repeat one another's random forces
        stage = {**common, "seed": (common["seed"] + k) % (2**31 - 1)}
        texts[f"{name}_mdp"] = (f"{name}.mdp", mdp_text(molecule, n_steps=n_steps, pressure_bar=pressure,
                                                          generate_velocities=(k == 0), write_frames=frames,
                                                          **stage))
    texts["run"] = ("run.sh", _run_script([name for name, *_ in stages]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {key: atomic_write_text(out / name, text) for key, (name, text) in texts.items()}
    paths["run"].chmod(0o755)
    return paths


def _run_script(stages: list[str]) -> str:
    lines = ["#!/bin/sh",
             "# The all-atom reference in GROMACS; then `thermocg import` nvt.trr (format gromacs, topology nvt.tpr).",
             "# GMX picks the binary (gmx, gmx_d, gmx_mpi), MDRUN_FLAGS adds mdrun options (e.g. '-ntmpi 1 -ntomp 8').",
             "set -e", 'GMX="${GMX:-gmx}"', 'cd "$(dirname "$0")"']
    previous = None
    for name in stages:
        start = "-c conf.gro" if previous is None else f"-c {previous}.gro -t {previous}.cpt"
        lines.append(f'"$GMX" grompp -f {name}.mdp {start} -p topol.top -o {name}.tpr')
        lines.append(f'"$GMX" mdrun -deffnm {name} ${{MDRUN_FLAGS:-}}'
                     + ("   # nvt.trr: positions, velocities and forces" if name == "nvt" else ""))
        previous = name
    return "\n".join(lines) + "\n"


def run_export_allatom(config: Config, run_dir: str | os.PathLike, *,
                       state: list[str] | str | None = None, output: str | os.PathLike | None = None,
                       progress: bool = True) -> list[Path]:
    """``thermocg export-allatom CONFIG [--state LABEL] [--output DIR]``: GROMACS inputs per state point.

    The box of each state is built and minimised exactly as ``thermocg generate`` does it (same seed,
    same cutoff), then written with :func:`write_gromacs_inputs` (with ``run.sh`` giving the gmx
    commands). Output: ``DIR/<state label>/`` (default DIR: RUN_DIR/gromacs). For a pressure state the
    box starts at the molecule's density guess and npt.mdp equilibrates it.
    """
    import openmm
    import openmm.unit as u

    from thermocg.allatom.runner import (
        GenerateError,
        _derive_seeds,
        _starting_box,
        _state_seed,
        check_buildable,
        make_context,
        selected_states,
        system_for_state,
    )
    from thermocg.rundir import RunDir

    settings = config.generate
    root = Path(output) if output is not None else RunDir(run_dir).root / "gromacs"
    written = []
    points = selected_states(config, state)
    check_buildable(config, points)
    for st in points:
        mixture = system_for_state(config, st)
        seed = _state_seed(config.seed, st.label)
        seed_box, _, _, _ = _derive_seeds(seed)
        positions, box, cutoff_A, system = _starting_box(mixture, st, settings, seed_box)
        context = make_context(system, positions, box, platform=settings.platform, n_threads=settings.n_threads)
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, 2000)
        minimised = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
        positions = np.asarray(minimised) * units.NM_TO_A
        if not np.all(np.isfinite(positions)):
            raise GenerateError(f"state {st.label}: the minimised box has non-finite positions")
        out = root / st.label
        paths = write_gromacs_inputs(
            mixture, None, positions, box, out, cutoff_A=cutoff_A,
            temperature_K=st.temperature_K, timestep_fs=settings.timestep_fs,
            production_ps=settings.production_ps, equilibration_ps=settings.equilibration_ps,
            save_interval_fs=settings.save_interval_fs, friction_per_ps=settings.friction_per_ps,
            seed=seed % (2**31 - 1), pressure_bar=st.pressure_bar, npt_equilibration_ps=settings.npt_equilibration_ps,
            title=f"thermocg {mixture.name} {st.label}")
        if progress:
            print(f"thermocg export-allatom: {mixture.counts_text} at {st.label} -> {out} "
                  f"({', '.join(p.name for p in paths.values())}; cutoff {cutoff_A:.2f} A)")
        written.append(out)
    return written
