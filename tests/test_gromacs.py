"""GROMACS inputs of the all-atom systems (thermocg.allatom.gromacs), refereed by GROMACS itself.

With GROMACS installed (``.ci/run`` installs the Debian package), GROMACS evaluates the exported
force field on a configuration and its forces, read back through ``thermocg import``'s GROMACS
reader (.trr + .tpr), must equal OpenMM's forces from ``build_system`` at the same positions:
TraPPE-UA methanol (Lorentz-Berthelot, constraints, an angle), OPLS-AA methanol (geometric mixing,
flexible bonds, torsions, scaled 1-4 pairs) and SPC/E water. PME is tightened on both sides so the
comparison tests the force field, not the Ewald accuracy. OpenMM runs on its CPU platform, the one
thermocg generates with. (Its Reference platform, OpenMM 8.6.1, gave forces off by up to 21
kcal/mol/A on three atoms of one configuration in which an atom sat exactly on a box face, x = 0.000
after the .gro's 3 decimals; a 1e-6 A shift, the CPU platform and GROMACS all agreed with each other.)
Without GROMACS those tests are skipped; the file-format tests run everywhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from thermocg import units
from thermocg.allatom.gromacs import (
    GromacsExportError,
    gro_text,
    gromacs_topology,
    write_gromacs_inputs,
)
from thermocg.allatom.molecules import get_molecule
from thermocg.cli import main

GMX = shutil.which("gmx_d") or shutil.which("gmx")  # double precision when the package has it
needs_gmx = pytest.mark.skipif(GMX is None, reason="GROMACS (gmx) is not installed")


def _config(tmp_path: Path, molecule: str, n_molecules: int, cutoff_A: float, states: list[dict], *,
            equilibration_ps: float = 0.0) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "run"), "seed": 4,
        "system": {"molecule": molecule, "n_molecules": n_molecules},
        "states": states,
        "generate": {"platform": "CPU", "n_threads": 1, "nonbonded_cutoff_A": cutoff_A, "timestep_fs": 1.0,
                     "equilibration_ps": equilibration_ps, "production_ps": 0.02, "save_interval_fs": 10.0,
                     "npt_equilibration_ps": 0.02},
    }))
    return path


def _gmx(args: list[str], cwd: Path, stdin: str | None = None) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GMX_MAXBACKUP": "-1"}
    if args[0] == "mdrun":
        args = [*args, "-ntmpi", "1", "-ntomp", "1"]
    run = subprocess.run([GMX, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env, check=False,
                         input=stdin)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout + run.stderr


def _mdp_set(text: str, **values) -> str:
    lines = []
    for line in text.splitlines():
        key = line.split("=")[0].strip().replace("_", "-")
        if key in values:
            line = f"{key} = {values.pop(key)}"
        lines.append(line)
    return "\n".join(lines + [f"{k} = {v}" for k, v in values.items()]) + "\n"


def _displace(work: Path, molecule: str, n_molecules: int, seed: int = 1) -> None:
    """Move the minimised atoms of work/conf.gro off their minimum (0.05 A), so every term carries force."""
    import MDAnalysis as mda

    u = mda.Universe(str(work / "conf.gro"))
    rng = np.random.default_rng(seed)
    positions = u.atoms.positions.astype(np.float64) + rng.normal(0.0, 0.05, (u.atoms.n_atoms, 3))
    box = np.diag(u.dimensions[:3]).astype(np.float64)
    (work / "conf.gro").write_text(gro_text(get_molecule(molecule), n_molecules, positions, box))


def _single_point(work: Path, topology: str, *, maxwarn: int = 0) -> None:
    """GROMACS forces of work/conf.gro (rerun.trr): the exported settings, PME tightened as on the
    OpenMM side (:func:`_openmm_forces`)."""
    mdp = _mdp_set((work / "nvt.mdp").read_text(), integrator="md", nsteps=0, nstxout=1, nstfout=1,
                   nstvout=0, fourierspacing=0.06, **{"pme-order": 6, "ewald-rtol": "1e-7"})
    (work / "rerun.mdp").write_text(mdp)
    _gmx(["grompp", "-f", "rerun.mdp", "-c", "conf.gro", "-p", topology, "-o", "rerun.tpr", "-maxwarn",
          str(maxwarn)], work)
    _gmx(["mdrun", "-s", "rerun.tpr", "-rerun", "conf.gro", "-deffnm", "rerun"], work)


def _openmm_forces(frames, molecule: str, n_molecules: int, cutoff_A: float) -> tuple[float, np.ndarray]:
    """OpenMM's energy and forces (CPU platform, tight PME) at the first frame's positions."""
    from thermocg.allatom.runner import build_system, energy_and_forces, make_context
    from thermocg.mapping import make_whole

    mol = get_molecule(molecule)
    # GROMACS put atoms in the box: make molecules whole for OpenMM's non-periodic bonded terms
    first = np.repeat(np.arange(0, mol.n_sites * n_molecules, mol.n_sites), mol.n_sites)
    pos = make_whole(frames.positions[:1], frames.box[:1], first)[0]
    system = build_system(mol, n_molecules, frames.box[0], cutoff_A=cutoff_A)
    for force in system.getForces():
        if hasattr(force, "setEwaldErrorTolerance"):
            force.setEwaldErrorTolerance(1e-7)
    return energy_and_forces(make_context(system, pos, frames.box[0], platform="CPU", n_threads=1))


# ------------------------------------------------------------------------------------ file formats

def test_topology_sections_and_units() -> None:
    trappe = gromacs_topology(get_molecule("methanol_trappe"), 10)
    assert "\n  1        2          yes        0      0" in trappe  # Lorentz-Berthelot, no 1-4 pairs
    assert "0.37500000  0.81481734" in trappe  # CH3: 3.75 A, 98 K -> nm, kJ/mol
    assert "1  2  1  0.14300000" in trappe and "[ pairs ]" not in trappe and "[ bonds ]" not in trappe
    assert "methanol_trappe  10" in trappe
    opls = gromacs_topology(get_molecule("methanol_opls"), 3)
    assert "\n  1        3          yes        0.5      0.5" in opls  # geometric mixing, 1-4 scaled by 0.5
    # three H-C-O-HO 1-4 pairs; bond k 2 x 320 kcal/mol/A^2 -> 267776 kJ/mol/nm^2; V3/2 = 0.225 kcal/mol
    pairs = opls.split("[ pairs ]")[1].split("[")[0]
    assert len([ln for ln in pairs.splitlines() if ln.strip() and not ln.startswith(";")]) == 3
    assert "0.14100000  267776.000000" in opls and "9  0.000000  0.94140000  3" in opls


def test_gro_round_trip_through_mdanalysis(tmp_path: Path) -> None:
    import MDAnalysis as mda

    molecule = get_molecule("methanol_trappe")
    rng = np.random.default_rng(0)
    positions = rng.uniform(0.0, 20.0, (12, 3))
    box = np.diag([20.0, 21.0, 22.0])
    velocities = rng.normal(0.0, 0.005, (12, 3))  # A/fs
    path = tmp_path / "conf.gro"
    path.write_text(gro_text(molecule, 4, positions, box, velocities_A_fs=velocities))
    u = mda.Universe(str(path))
    assert list(u.atoms.names[:3]) == ["CH3", "O", "H"] and u.atoms.n_residues == 4
    np.testing.assert_allclose(u.atoms.positions, positions, atol=0.0051)  # nm with 3 decimals
    np.testing.assert_allclose(u.dimensions[:3], [20.0, 21.0, 22.0], atol=1e-4)
    np.testing.assert_allclose(u.atoms.velocities, velocities * 1000.0, atol=0.0051)  # A/ps, 4 decimals of nm/ps
    # a triclinic (lower-triangular) box: GROMACS's nine-number box line
    from MDAnalysis.lib.mdamath import triclinic_box

    tric = np.array([[20.0, 0.0, 0.0], [5.0, 19.0, 0.0], [-3.0, 4.0, 18.0]])
    path.write_text(gro_text(molecule, 4, positions, tric))
    np.testing.assert_allclose(mda.Universe(str(path)).dimensions, triclinic_box(*tric), atol=1e-3)


def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    molecule = get_molecule("water_spce")
    positions = np.zeros((6, 3))
    with pytest.raises(GromacsExportError, match="below half the box width"):
        write_gromacs_inputs(molecule, 2, positions, np.eye(3) * 10.0, tmp_path / "a", cutoff_A=6.0,
                             temperature_K=300.0)
    with pytest.raises(GromacsExportError, match="expected \\(6, 3\\)"):
        write_gromacs_inputs(molecule, 2, positions[:5], np.eye(3) * 20.0, tmp_path / "b", cutoff_A=6.0,
                             temperature_K=300.0)
    upper = np.array([[20.0, 1.0, 0.0], [0.0, 20.0, 0.0], [0.0, 0.0, 20.0]])
    with pytest.raises(GromacsExportError, match="lower-triangular"):
        write_gromacs_inputs(molecule, 2, positions, upper, tmp_path / "c", cutoff_A=6.0, temperature_K=300.0)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_cli_writes_inputs_per_state(tmp_path: Path) -> None:
    config = _config(tmp_path, "water_spce", 64, 5.0, [{"temperature_K": 300.0, "density_g_cm3": 1.0},
                                                       {"temperature_K": 320.0, "pressure_bar": 500.0}],
                     equilibration_ps=0.01)
    assert main(["export-allatom", str(config)]) == 0
    root = tmp_path / "run" / "gromacs"
    nvt, npt = root / "T300_rho1", root / "T320_P500"
    assert sorted(p.name for p in nvt.iterdir()) == ["conf.gro", "eq.mdp", "nvt.mdp", "run.sh", "topol.top"]
    assert sorted(p.name for p in npt.iterdir()) == ["conf.gro", "eq.mdp", "npt.mdp", "nvt.mdp", "run.sh",
                                                     "topol.top"]
    mdp = (npt / "npt.mdp").read_text()
    assert "pcoupl                   = C-rescale" in mdp and "ref-p                    = 500" in mdp
    assert "ref-t                    = 320" in mdp and "rvdw                     = 0.5" in mdp
    assert "gen-vel                  = yes" in mdp and "nstfout                  = 0" in mdp  # no frames
    eq, production = (npt / "eq.mdp").read_text(), (npt / "nvt.mdp").read_text()
    assert "continuation             = yes" in eq and "nstfout                  = 0" in eq and "pcoupl" not in eq
    assert "continuation             = yes" in production and "nstfout                  = 10" in production
    assert "nsteps                   = 20" in production and "nsteps                   = 10" in eq  # 1 fs steps
    seeds = {name: [ln for ln in (npt / f"{name}.mdp").read_text().splitlines() if ln.startswith("ld-seed")]
             for name in ("npt", "eq", "nvt")}
    assert len({tuple(v) for v in seeds.values()}) == 3  # each stage its own random stream
    script = (npt / "run.sh").read_text()
    assert '"$GMX" grompp -f eq.mdp -c npt.gro -t npt.cpt' in script
    assert '"$GMX" grompp -f nvt.mdp -c eq.gro -t eq.cpt' in script
    assert '"$GMX" grompp -f eq.mdp -c conf.gro' in (nvt / "run.sh").read_text()
    assert "gen-vel                  = yes" in (nvt / "eq.mdp").read_text()
    # an unknown state label is a clear error (exit code 2), and nothing new is written
    assert main(["export-allatom", str(config), "--state", "T999", "--output", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------- refereed by GROMACS

@needs_gmx
@pytest.mark.parametrize(("molecule", "n_molecules", "density", "cutoff_A"), [
    ("methanol_trappe", 128, 0.786, 9.0), ("methanol_opls", 100, 0.786, 8.0), ("water_spce", 216, 1.0, 8.0)])
def test_gromacs_forces_equal_openmm_forces(tmp_path: Path, molecule: str, n_molecules: int, density: float,
                                            cutoff_A: float) -> None:
    from thermocg.allatom.readers import read_trajectory

    config = _config(tmp_path, molecule, n_molecules, cutoff_A, [{"temperature_K": 300.0, "density_g_cm3": density}])
    out = tmp_path / "gmx"
    assert main(["export-allatom", str(config), "--output", str(out)]) == 0
    (work,) = out.iterdir()
    mol = get_molecule(molecule)
    _displace(work, molecule, n_molecules)
    _single_point(work, "topol.top")
    frames, topology = read_trajectory(work / "rerun.trr", "gromacs", topology=work / "rerun.tpr")
    assert frames.n_frames == 1 and topology is not None
    np.testing.assert_allclose(topology.masses[: mol.n_sites], mol.masses_amu, rtol=1e-6)
    assert list(topology.atom_names[: mol.n_sites]) == mol.site_names
    np.testing.assert_array_equal(topology.molecule_ids, np.repeat(np.arange(n_molecules), mol.n_sites))
    energy, reference = _openmm_forces(frames, molecule, n_molecules, cutoff_A)
    gromacs = frames.forces[0]  # kcal/mol/A: converted by thermocg's reader
    rms = np.sqrt(np.mean(reference**2))
    rms_diff, max_diff = np.sqrt(np.mean((gromacs - reference) ** 2)), np.abs(gromacs - reference).max()
    print(f"{molecule}: rms F {rms:.3f}, rms diff {rms_diff:.2e}, max diff {max_diff:.2e} kcal/mol/A")
    assert rms > 5.0  # displaced atoms: every term is loaded
    assert rms_diff < 2e-4 * rms and max_diff < 2e-3 * rms
    # the potential energy too (GROMACS's dispersion correction averages C6 slightly differently)
    _gmx(["energy", "-f", "rerun.edr", "-o", "energy.xvg"], work, stdin="Potential\n0\n")
    rows = [ln.split() for ln in (work / "energy.xvg").read_text().splitlines() if ln and ln[0] not in "#@"]
    gromacs_energy = float(rows[0][1]) * units.KJ_TO_KCAL
    print(f"{molecule}: potential energy GROMACS {gromacs_energy:.4f}, OpenMM {energy:.4f} kcal/mol")
    assert abs(gromacs_energy - energy) < 1e-4 * abs(energy) + 0.05


@needs_gmx
def test_exported_run_imports_and_maps(tmp_path: Path) -> None:
    """The exported inputs as they are (NPT, NVT equilibration, NVT production, chained by run.sh) run
    in GROMACS without a grompp warning, and the .trr of the production goes through ``thermocg
    import`` (with the .tpr or the .top) and the mapping: CG forces are the summed atomic forces."""
    from thermocg.allatom.readers import read_trajectory
    from thermocg.mapping import build_mapping

    config = _config(tmp_path, "methanol_trappe", 128, 9.0, [{"temperature_K": 300.0, "pressure_bar": 1.0}],
                     equilibration_ps=0.01)
    out = tmp_path / "gmx"
    assert main(["export-allatom", str(config), "--output", str(out)]) == 0
    work = out / "T300_P1"
    env = {**os.environ, "GMX": GMX, "MDRUN_FLAGS": "-ntmpi 1 -ntomp 1", "OMP_NUM_THREADS": "1",
           "GMX_MAXBACKUP": "-1"}
    run = subprocess.run(["sh", str(work / "run.sh")], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "WARNING" not in run.stderr
    assert not (work / "npt.trr").exists() and not (work / "eq.trr").exists()  # equilibration writes no frames
    frames, topology = read_trajectory(work / "nvt.trr", "gromacs", topology=work / "nvt.tpr")
    assert frames.n_frames == 3  # 20 steps of 1 fs, saved every 10 fs; the production's clock starts at 0
    np.testing.assert_allclose(frames.time_fs, [0.0, 10.0, 20.0], atol=1e-5)
    assert np.all(np.isfinite(frames.forces)) and np.abs(frames.forces).max() > 1.0
    same, top_topology = read_trajectory(work / "nvt.trr", "gromacs", topology=work / "topol.top")
    np.testing.assert_array_equal(same.forces, frames.forces)
    np.testing.assert_allclose(top_topology.masses, topology.masses, rtol=1e-6)
    np.testing.assert_array_equal(top_topology.molecule_ids, topology.molecule_ids)
    mapping = build_mapping(topology)
    cg = mapping.apply(frames)
    summed = frames.forces.reshape(frames.n_frames, 128, 3, 3).sum(axis=2)
    np.testing.assert_allclose(cg.forces, summed, rtol=1e-12, atol=1e-9)


@needs_gmx
@pytest.mark.parametrize(("molecule", "n_molecules", "density", "itp", "name", "tolerance"), [
    # the same OPLS-AA parameters (Jorgensen et al. 1996) to every printed digit
    ("methanol_opls", 100, 0.786, "methanol.itp", "MET", 2e-4),
    # GROMACS's SPC/E oxygen has sigma 3.16557 A, eps 0.650194 kJ/mol (from the model's C6, C12); ours
    # the customary rounded 3.166 A, 0.650 kJ/mol: forces differ by ~1e-4 of their RMS from that alone
    ("water_spce", 216, 1.0, "spce.itp", "SOL", 1e-3),
])
def test_builtin_parameters_match_gromacs_distribution(tmp_path: Path, molecule: str, n_molecules: int,
                                                       density: float, itp: str, name: str,
                                                       tolerance: float) -> None:
    """Our built-in OPLS-AA methanol and SPC/E water against the definitions GROMACS ships in
    ``oplsaa.ff`` (its own parameter tables, not a topology we wrote): same configuration, same forces."""
    from thermocg.allatom.readers import read_trajectory

    config = _config(tmp_path, molecule, n_molecules, 8.0, [{"temperature_K": 300.0, "density_g_cm3": density}])
    out = tmp_path / "gmx"
    assert main(["export-allatom", str(config), "--output", str(out)]) == 0
    (work,) = out.iterdir()
    _displace(work, molecule, n_molecules, seed=2)
    (work / "dist.top").write_text("\n".join([
        '#include "oplsaa.ff/forcefield.itp"', f'#include "oplsaa.ff/{itp}"', "",
        "[ system ]", "  GROMACS's own definition", "", "[ molecules ]", f"  {name}  {n_molecules}", ""]))
    # atom names differ from GROMACS's (H1/H2/H3 vs H, O vs OA): that is grompp's only warning
    _single_point(work, "dist.top", maxwarn=1 if molecule == "methanol_opls" else 0)
    frames, _ = read_trajectory(work / "rerun.trr", "gromacs", topology=work / "rerun.tpr")
    _, reference = _openmm_forces(frames, molecule, n_molecules, 8.0)
    rms = np.sqrt(np.mean(reference**2))
    rms_diff = np.sqrt(np.mean((frames.forces[0] - reference) ** 2))
    print(f"{molecule} vs oplsaa.ff/{itp}: rms F {rms:.3f}, rms diff {rms_diff:.2e} kcal/mol/A")
    assert rms > 5.0 and rms_diff < tolerance * rms


# ------------------------------------------------------------------------- mixtures, refereed by GROMACS

#: OPLS-AA methanol with SPC/E water mix by different rules: explicit cross terms (deliberately not
#: either rule's values), which the export writes to [ nonbond_params ]
OPLS_SPCE_CROSS = [{"pair": ["CT", "OW"], "sigma_A": 3.30, "epsilon_kcal_mol": 0.11},
                   {"pair": ["HC", "OW"], "sigma_A": 2.90, "epsilon_kcal_mol": 0.05},
                   {"pair": ["OH", "OW"], "sigma_A": 3.10, "epsilon_kcal_mol": 0.17}]


def test_mixture_topology_sections() -> None:
    from thermocg.allatom.mixture import Component, CrossInteraction, Mixture

    mix = Mixture((Component(get_molecule("methanol_trappe"), 5), Component(get_molecule("water_spce"), 7)))
    top = gromacs_topology(mix)
    assert top.count("[ moleculetype ]") == 2 and "[ nonbond_params ]" not in top  # all Lorentz-Berthelot
    assert top.split("[ molecules ]")[1].split() == ["methanol_trappe", "5", "water_spce", "7"]
    cross = tuple(CrossInteraction(p["pair"][0], p["pair"][1], p["sigma_A"], p["epsilon_kcal_mol"])
                  for p in OPLS_SPCE_CROSS)
    opls = Mixture((Component(get_molecule("water_spce"), 4), Component(get_molecule("methanol_opls"), 3)), cross)
    top = gromacs_topology(opls)
    assert "\n  1        2          yes        0.5      0.5" in top  # SPC/E's rule first, OPLS's 1-4 scaling
    params = top.split("[ nonbond_params ]")[1].split("[")[0]
    lines = {tuple(ln.split()[:2]): ln.split()[3:] for ln in params.splitlines() if ln.strip() and ln[0] != ";"}
    # the overrides (nm, kJ/mol) and OPLS's own geometric pairs, which comb-rule 2 would get wrong
    assert lines[("OW", "CT")] == ["0.33000000", f"{0.11 * 4.184:.8f}"]
    assert ("CT", "OH") in lines and ("CT", "CT") not in lines  # like pairs are the same under both rules
    pairs = top.split("[ pairs ]")[1].split("[")[0]
    assert len([ln for ln in pairs.splitlines() if ln.strip() and ln[0] != ";"]) == 3
    assert all(len(ln.split()) == 5 for ln in pairs.splitlines() if ln.strip() and ln[0] != ";")  # explicit


@needs_gmx
@pytest.mark.parametrize("pair", ["trappe_spce", "opls_spce"])
def test_gromacs_mixture_forces_energies_and_beads(tmp_path: Path, pair: str) -> None:
    """A methanol-water mixture exported by ``thermocg export-allatom``: GROMACS's forces equal OpenMM's
    (Lorentz-Berthelot cross terms; or OPLS-AA methanol with explicit cross terms in [ nonbond_params ]),
    the .trr + .tpr (and .top) import with the declared molecule types, the .edr next to the .trr gives
    the potential energy (kJ/mol -> kcal/mol) that OpenMM gives, and the import maps to the same beads
    as the exported configuration."""
    from thermocg.allatom.mixture import mixture_from_config
    from thermocg.allatom.readers import TrajectoryImportError, read_trajectory
    from thermocg.allatom.runner import build_system, energy_and_forces, make_context
    from thermocg.config import Config, from_dict
    from thermocg.mapping import build_mapping, make_whole

    methanol = "methanol_trappe" if pair == "trappe_spce" else "methanol_opls"
    system = {"molecules": [{"molecule": methanol, "n": 40}, {"molecule": "water_spce", "n": 60}],
              "cross_interactions": OPLS_SPCE_CROSS if pair == "opls_spce" else []}
    cutoff_A = 7.0
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "run"), "seed": 4, "system": system,
        "states": [{"temperature_K": 300.0, "density_g_cm3": 0.9, "mole_fractions": {methanol: 0.4}}],
        "generate": {"platform": "CPU", "n_threads": 1, "nonbonded_cutoff_A": cutoff_A, "production_ps": 0.02,
                     "save_interval_fs": 10.0, "equilibration_ps": 0.0}}))
    out = tmp_path / "gmx"
    assert main(["export-allatom", str(path), "--output", str(out)]) == 0
    work = out / "T300_rho0.9_x0.4"
    mixture = mixture_from_config(from_dict(Config, {"system": system}).system)
    import MDAnalysis as mda

    u = mda.Universe(str(work / "conf.gro"))
    rng = np.random.default_rng(3)
    positions = u.atoms.positions.astype(np.float64) + rng.normal(0.0, 0.05, (u.atoms.n_atoms, 3))
    box = np.diag(u.dimensions[:3]).astype(np.float64)
    (work / "conf.gro").write_text(gro_text(mixture, None, positions, box))
    _single_point(work, "topol.top")
    molecules = [{"molecule": methanol}, {"molecule": "water_spce"}]
    frames, topology = read_trajectory(work / "rerun.trr", "gromacs", topology=work / "rerun.tpr", molecules=molecules)
    assert topology.molecule_names == [methanol] * 40 + ["water_spce"] * 60
    assert topology.type_names == mixture.topology().type_names
    # OpenMM at the same (whole) positions, PME tightened as on the GROMACS side
    first = np.repeat([b for _, m, _, b in mixture.molecule_blocks()],
                      [m.n_sites for _, m, _, _ in mixture.molecule_blocks()])
    whole = make_whole(frames.positions[:1], frames.box[:1], first)[0]
    omm = build_system(mixture, box_A=frames.box[0], cutoff_A=cutoff_A)
    for force in omm.getForces():
        if hasattr(force, "setEwaldErrorTolerance"):
            force.setEwaldErrorTolerance(1e-7)
    energy, reference = energy_and_forces(make_context(omm, whole, frames.box[0], platform="CPU", n_threads=1))
    rms = np.sqrt(np.mean(reference**2))
    rms_diff = np.sqrt(np.mean((frames.forces[0] - reference) ** 2))
    print(f"{pair}: rms F {rms:.3f}, rms diff {rms_diff:.2e} kcal/mol/A; energy GROMACS "
          f"{frames.potential_energy_kcal_mol[0]:.4f}, OpenMM {energy:.4f} kcal/mol")
    assert rms > 5.0 and rms_diff < 2e-4 * rms
    assert frames.potential_energy_kcal_mol[0] == pytest.approx(energy, rel=1e-4, abs=0.05)
    # the .top gives the same molecules; the import maps to the beads of the exported configuration
    _, top_topology = read_trajectory(work / "rerun.trr", "gromacs", topology=work / "topol.top",
                                      molecules=molecules)
    assert top_topology.molecule_names == topology.molecule_names
    mapped = build_mapping(topology).apply(frames)
    exported = build_mapping(mixture.topology()).apply(frames.__class__(
        positions=positions[None], box=box, types=mixture.topology().types,
        type_names=mixture.topology().type_names, masses=mixture.atom_masses_amu()))
    assert mapped.type_names == (methanol, "water_spce") == exported.type_names
    np.testing.assert_allclose(mapped.masses, exported.masses, rtol=1e-12)
    delta = mapped.positions - exported.positions
    delta -= np.round(delta / box[0, 0]) * box[0, 0]
    assert np.abs(delta).max() < 0.01  # the .gro keeps 0.01 A
    with pytest.raises(TrajectoryImportError, match=r"rerun.trr: molecule type\(s\) 'water_spce' \(60 molecules\)"):
        read_trajectory(work / "rerun.trr", "gromacs", topology=work / "rerun.tpr", molecules=molecules[:1])
