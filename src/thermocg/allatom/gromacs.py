"""All-atom systems for GROMACS: the built-in (or YAML) molecules as .gro + .top + .mdp inputs.

The reference data of a large study (1000 molecules, nanoseconds per state) is cheaper in GROMACS on a
cluster than in OpenMM on a workstation CPU. ``thermocg export-allatom CONFIG --state LABEL --output
DIR`` writes, for one state point of the config, everything ``gmx grompp`` needs to run the same force
field that ``thermocg generate`` runs with OpenMM:

- ``conf.gro``   the box built and energy-minimised by OpenMM as in ``generate`` (nm, 3 decimals)
- ``topol.top``  [defaults] with the molecule's mixing rule (comb-rule 2 Lorentz-Berthelot or 3
                 geometric) and 1-4 scaling, [atomtypes], and one [moleculetype]: atoms with charges
                 and masses, [constraints] (type 1, which also generate exclusions), harmonic [bonds]
                 (type 1) and [angles] (type 1), periodic [dihedrals] (type 9), [pairs] for the 1-4
                 pairs when they are scaled rather than excluded; nrexcl 3
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
from thermocg.allatom.molecules import Molecule, get_molecule
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


def _atom_types(molecule: Molecule) -> dict[str, tuple[str, Any]]:
    """site name -> (GROMACS atom type, site); sites sharing a type but not its LJ get their own."""
    chosen: dict[str, tuple[str, Any]] = {}
    by_type: dict[str, Any] = {}
    for site in molecule.sites:
        name = site.type
        first = by_type.setdefault(name, site)
        if (first.sigma_A, first.epsilon_kcal_mol) != (site.sigma_A, site.epsilon_kcal_mol):
            name = f"{site.type}_{site.name}"
        chosen[site.name] = (name, site)
    return chosen


def gromacs_topology(molecule: Molecule, n_molecules: int, *, system_name: str | None = None) -> str:
    """The text of ``topol.top`` for ``n_molecules`` copies of ``molecule`` (see the module docstring)."""
    if molecule.mixing not in ("lorentz-berthelot", "geometric"):
        raise GromacsExportError(f"{molecule.name}: mixing rule {molecule.mixing!r} has no GROMACS comb-rule")
    comb_rule = 2 if molecule.mixing == "lorentz-berthelot" else 3
    _, pairs14 = molecule.topology_pairs()
    scaled14 = bool(pairs14) and (molecule.scale14_lj != 0.0 or molecule.scale14_coulomb != 0.0)
    types = _atom_types(molecule)
    lines = [
        f"; {molecule.name}: {molecule.source or molecule.origin}",
        "; written by thermocg (units: nm, kJ/mol, e, amu)",
        "",
        "[ defaults ]",
        "; nbfunc  comb-rule  gen-pairs  fudgeLJ  fudgeQQ",
        f"  1        {comb_rule}          yes        {molecule.scale14_lj:g}      {molecule.scale14_coulomb:g}",
        "",
        "[ atomtypes ]",
        "; name  mass  charge  ptype  sigma(nm)  epsilon(kJ/mol)",
    ]
    seen = set()
    for name, site in types.values():
        if name in seen:
            continue
        seen.add(name)
        sigma_nm = site.sigma_A * units.A_TO_NM if site.epsilon_kcal_mol > 0 else 0.0
        lines.append(f"  {name:<10s} {site.mass_amu:10.5f}  0.0  A  {sigma_nm:.8f}  "
                     f"{site.epsilon_kcal_mol * units.KCAL_TO_KJ:.8f}")
    residue = _gmx_name(molecule.name.upper()[:5])
    lines += ["", "[ moleculetype ]", "; name  nrexcl", f"  {molecule.name}  3", "", "[ atoms ]",
              "; nr  type  resnr  residue  atom  cgnr  charge  mass"]
    for k, site in enumerate(molecule.sites, start=1):
        lines.append(f"  {k:4d}  {types[site.name][0]:<10s} 1  {residue}  {_gmx_name(site.name)}  {k}  "
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
        lines += ["", "[ pairs ]", "; i  j  funct (parameters from gen-pairs: fudgeLJ, fudgeQQ)"]
        lines += [f"  {i + 1}  {j + 1}  1" for i, j in sorted(pairs14)]
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
    lines += ["", "[ system ]", f"  {system_name or molecule.name}", "", "[ molecules ]",
              f"  {molecule.name}  {int(n_molecules)}", ""]
    return "\n".join(lines)


def gro_text(molecule: Molecule, n_molecules: int, positions_A: np.ndarray, box_A: np.ndarray, *,
             title: str = "thermocg", velocities_A_fs: np.ndarray | None = None) -> str:
    """A .gro file: molecule by molecule, positions in nm (3 decimals), the box as GROMACS orders it."""
    positions = np.asarray(positions_A, dtype=np.float64) * units.A_TO_NM
    n_atoms = n_molecules * molecule.n_sites
    if positions.shape != (n_atoms, 3):
        raise GromacsExportError(f"positions have shape {positions.shape}, expected ({n_atoms}, 3)")
    box = np.asarray(box_A, dtype=np.float64) * units.A_TO_NM
    if abs(box[0, 1]) > 1e-9 or abs(box[0, 2]) > 1e-9 or abs(box[1, 2]) > 1e-9:
        raise GromacsExportError("GROMACS needs a lower-triangular box (a along x, b in the xy plane)")
    if n_atoms > 99999:
        raise GromacsExportError(f"{n_atoms} atoms: a .gro numbers atoms with 5 digits (at most 99999)")
    residue = _gmx_name(molecule.name.upper()[:5])
    names = [_gmx_name(s.name) for s in molecule.sites]
    velocities = None
    if velocities_A_fs is not None:
        velocities = np.asarray(velocities_A_fs, dtype=np.float64) * units.A_TO_NM / units.FS_TO_PS
    lines = [title.replace("\n", " "), f"{n_atoms:5d}"]
    for k in range(n_atoms):
        mol, site = divmod(k, molecule.n_sites)
        x, y, z = positions[k]
        line = f"{(mol + 1) % 100000:5d}{residue:<5s}{names[site]:>5s}{(k + 1) % 100000:5d}{x:8.3f}{y:8.3f}{z:8.3f}"
        if velocities is not None:
            vx, vy, vz = velocities[k]
            line += f"{vx:8.4f}{vy:8.4f}{vz:8.4f}"
        lines.append(line)
    diagonal = [box[0, 0], box[1, 1], box[2, 2]]
    off = [box[0, 1], box[0, 2], box[1, 0], box[1, 2], box[2, 0], box[2, 1]]
    lines.append(" ".join(f"{v:.5f}" for v in diagonal + (off if any(abs(v) > 0 for v in off) else [])))
    return "\n".join(lines) + "\n"


def mdp_text(molecule: Molecule, *, cutoff_A: float, temperature_K: float, timestep_fs: float,
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


def write_gromacs_inputs(molecule: Molecule | str, n_molecules: int, positions_A: np.ndarray, box_A: np.ndarray,
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

    from thermocg.allatom.build import build_box
    from thermocg.allatom.runner import (
        GenerateError,
        _derive_seeds,
        _state_seed,
        build_system,
        make_context,
        resolve_cutoff_A,
        selected_states,
    )
    from thermocg.rundir import RunDir

    molecule = get_molecule(config.system.molecule)
    settings = config.generate
    root = Path(output) if output is not None else RunDir(run_dir).root / "gromacs"
    written = []
    for st in selected_states(config, state):
        seed = _state_seed(config.seed, st.label)
        seed_box, _, _, _ = _derive_seeds(seed)
        density = st.density_g_cm3 if st.pressure_bar is None else molecule.density_guess_g_cm3
        positions, box = build_box(molecule, config.system.n_molecules, density, rng=np.random.default_rng(seed_box))
        cutoff_A = resolve_cutoff_A(molecule, box, settings.nonbonded_cutoff_A)
        system = build_system(molecule, config.system.n_molecules, box, cutoff_A=cutoff_A)
        context = make_context(system, positions, box, platform=settings.platform, n_threads=settings.n_threads)
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, 2000)
        minimised = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
        positions = np.asarray(minimised) * units.NM_TO_A
        if not np.all(np.isfinite(positions)):
            raise GenerateError(f"state {st.label}: the minimised box has non-finite positions")
        out = root / st.label
        paths = write_gromacs_inputs(
            molecule, config.system.n_molecules, positions, box, out, cutoff_A=cutoff_A,
            temperature_K=st.temperature_K, timestep_fs=settings.timestep_fs,
            production_ps=settings.production_ps, equilibration_ps=settings.equilibration_ps,
            save_interval_fs=settings.save_interval_fs, friction_per_ps=settings.friction_per_ps,
            seed=seed % (2**31 - 1), pressure_bar=st.pressure_bar, npt_equilibration_ps=settings.npt_equilibration_ps,
            title=f"thermocg {molecule.name} {st.label}")
        if progress:
            print(f"thermocg export-allatom: {molecule.name} x {config.system.n_molecules} at {st.label} -> {out} "
                  f"({', '.join(p.name for p in paths.values())}; cutoff {cutoff_A:.2f} A)")
        written.append(out)
    return written
