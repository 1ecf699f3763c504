"""All-atom generation: molecule definitions, OpenMM systems, and a tiny run that writes every output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

openmm = pytest.importorskip("openmm")

from thermocg import units  # noqa: E402
from thermocg.allatom.build import build_box  # noqa: E402
from thermocg.allatom.molecules import BUILTIN_MOLECULES, MoleculeError, get_molecule  # noqa: E402
from thermocg.allatom.runner import (  # noqa: E402
    FORCE_GROUP_BONDED,
    GenerateError,
    build_system,
    energy_and_forces,
    generate_state,
    make_context,
    resolve_cutoff_A,
    run_generate,
)
from thermocg.config import ConfigError, Config, GenerateConfig, StateConfig, from_dict  # noqa: E402
from thermocg.frames import StatePoint, Topology  # noqa: E402

DEBYE_PER_E_A = 4.803204  # 1 e*A in debye


def small_box(name: str, n_molecules: int = 27, seed: int = 0):
    molecule = get_molecule(name)
    density = 1.0 if name.startswith("water") else 0.78
    positions, box = build_box(molecule, n_molecules, density, rng=np.random.default_rng(seed))
    with pytest.warns(UserWarning, match="does not fit"):
        cutoff = resolve_cutoff_A(molecule, box)
    return molecule, positions, box, cutoff


def test_cutoff_capped_only_when_not_requested():
    molecule = get_molecule("methanol_trappe")
    box = np.diag([20.0, 20.0, 20.0])
    with pytest.warns(UserWarning, match="using 9.00 A"):
        assert resolve_cutoff_A(molecule, box) == pytest.approx(9.0)
    assert resolve_cutoff_A(molecule, box, 8.5) == 8.5
    with pytest.raises(GenerateError, match=r"requested non-bonded cutoff 12 A does not fit the 20.00 A box \(at most 9.00 A"):
        resolve_cutoff_A(molecule, box, 12.0)


# --------------------------------------------------------------------------------------------------
# molecule definitions
# --------------------------------------------------------------------------------------------------

def test_builtin_parameters_are_the_literature_values():
    trappe = get_molecule("methanol_trappe")
    assert trappe.site_names == ["CH3", "O", "H"]
    # TraPPE epsilons are given as eps/k_B in K: 98 K and 93 K
    assert trappe.sites[0].epsilon_kcal_mol == pytest.approx(98.0 * 0.0019872043, rel=1e-6)
    assert trappe.sites[1].epsilon_kcal_mol == pytest.approx(93.0 * 0.0019872043, rel=1e-6)
    assert [c.length_A for c in trappe.constraints] == [1.43, 0.945]
    # k_theta/k_B = 55,400 K/rad^2 -> 110.1 kcal/mol/rad^2
    assert trappe.angles[0].k_kcal_mol_rad2 == pytest.approx(110.09, abs=0.01)
    assert trappe.mass_amu == pytest.approx(32.042, abs=1e-3)
    # SPC/E: the dipole moment of its geometry and charges is the published 2.351 D
    water = get_molecule("water_spce")
    dipole = np.linalg.norm(water.charges_e @ water.positions_A) * DEBYE_PER_E_A
    assert dipole == pytest.approx(2.351, abs=2e-3)
    opls = get_molecule("methanol_opls")
    assert opls.n_sites == 6 and opls.mixing == "geometric" and len(opls.torsions) == 3
    for name in BUILTIN_MOLECULES:
        assert abs(get_molecule(name).charges_e.sum()) < 1e-12, name


def test_reference_geometries_satisfy_constraints_and_angles():
    for name in BUILTIN_MOLECULES:
        m = get_molecule(name)
        pos = m.positions_A
        for c in list(m.constraints) + list(m.bonds):
            assert np.linalg.norm(pos[c.atoms[0]] - pos[c.atoms[1]]) == pytest.approx(c.length_A, abs=1e-9)


def test_unknown_molecule_names_the_known_ones():
    with pytest.raises(MoleculeError, match="methanol_trappe") as info:
        get_molecule("ethanol")
    assert "water_spce" in str(info.value)


def _water_yaml_dict() -> dict:
    half = math.radians(109.47) / 2
    return {
        "name": "my_water",
        "source": "SPC/E, written by hand",
        "cutoff_A": 10.0,
        "sites": [
            {"name": "O", "mass_amu": 15.9994, "charge_e": -0.8476, "sigma_A": 3.166,
             "epsilon_K": 0.650 / 8.314462618e-3, "position_A": [0, 0, 0]},
            {"name": "H1", "type": "H", "mass_amu": 1.008, "charge_e": 0.4238, "sigma_A": 0.0,
             "epsilon_kcal_mol": 0.0, "position_A": [math.sin(half), math.cos(half), 0]},
            {"name": "H2", "type": "H", "mass_amu": 1.008, "charge_e": 0.4238, "sigma_A": 0.0,
             "epsilon_kcal_mol": 0.0, "position_A": [-math.sin(half), math.cos(half), 0]},
        ],
        "constraints": [{"atoms": ["O", "H1"], "length_A": 1.0}, {"atoms": [0, 2], "length_A": 1.0},
                        {"atoms": ["H1", "H2"], "length_A": 2 * math.sin(half)}],
    }


def test_yaml_molecule_gives_the_same_energy_as_the_builtin(tmp_path):
    path = tmp_path / "my_water.yaml"
    path.write_text(yaml.safe_dump(_water_yaml_dict()))
    mine = get_molecule(str(path))
    assert mine.name == "my_water" and mine.origin == str(path) and mine.type_names == ("O", "H")
    builtin, positions, box, cutoff = small_box("water_spce")
    energies = []
    for m in (mine, builtin):
        context = make_context(build_system(m, 27, box, cutoff_A=cutoff), positions, box)
        energies.append(energy_and_forces(context))
    assert energies[0][0] == pytest.approx(energies[1][0], rel=1e-10)
    np.testing.assert_allclose(energies[0][1], energies[1][1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("broken, message", [
    (lambda d: d["sites"][1].pop("charge_e"), "charge_e"),
    (lambda d: d.pop("sites"), "sites"),
    (lambda d: d["constraints"].append({"atoms": ["O", "X"], "length_A": 1.0}), "unknown site 'X'"),
    (lambda d: d["sites"][0].update(colour="red"), "colour"),
    (lambda d: d["sites"][0].update(charge_e=-0.5), "net charge"),
])
def test_yaml_molecule_errors_name_the_file(tmp_path, broken, message):
    data = _water_yaml_dict()
    broken(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MoleculeError, match=message) as info:
        get_molecule(str(path))
    assert str(path) in str(info.value)


def test_missing_yaml_file():
    with pytest.raises(MoleculeError, match="not found"):
        get_molecule("/nonexistent/mol.yaml")


# --------------------------------------------------------------------------------------------------
# OpenMM systems: forces, units and the one-bead-per-molecule force
# --------------------------------------------------------------------------------------------------

COULOMB_KCAL_MOL_A = 332.0637  # e^2 / (4 pi eps0) in kcal/mol A


@pytest.mark.parametrize("mixing", ["lorentz-berthelot", "geometric"])
def test_known_answer_energies_lj_and_coulomb(mixing):
    """Two argon-like LJ sites: E(2^(1/6) sigma) = -eps, F(sigma) = 24 eps / sigma; two rigid dipoles:
    the Coulomb energy of their four charge pairs, with PME in a large box."""
    from thermocg.allatom.molecules import molecule_from_dict

    eps_K, sigma = 119.8, 3.405
    argon = molecule_from_dict({
        "name": "ar", "mixing": mixing, "dispersion_correction": False,
        "sites": [{"name": "Ar", "mass_amu": 39.948, "charge_e": 0.0, "sigma_A": sigma, "epsilon_K": eps_K,
                   "position_A": [0, 0, 0]}]})
    eps = eps_K * units.KB_KCAL_MOL_K
    box = np.eye(3) * 40.0
    for r, energy, force in ((2 ** (1 / 6) * sigma, -eps, 0.0), (sigma, 0.0, 24 * eps / sigma)):
        positions = np.array([[10.0, 10.0, 10.0], [10.0 + r, 10.0, 10.0]])
        e, f = energy_and_forces(make_context(build_system(argon, 2, box, cutoff_A=12.0), positions, box))
        assert e == pytest.approx(energy, abs=1e-9)
        np.testing.assert_allclose(f[1], [force, 0, 0], atol=1e-8)
        np.testing.assert_allclose(f[0], -f[1], atol=1e-10)
    dipole = molecule_from_dict({
        "name": "dipole", "mixing": mixing,
        "sites": [{"name": "P", "mass_amu": 10.0, "charge_e": 0.5, "sigma_A": 0.0, "epsilon_K": 0.0,
                   "position_A": [0, 0, 0]},
                  {"name": "N", "mass_amu": 10.0, "charge_e": -0.5, "sigma_A": 0.0, "epsilon_K": 0.0,
                   "position_A": [1, 0, 0]}],
        "constraints": [{"atoms": ["P", "N"], "length_A": 1.0}]})
    box = np.eye(3) * 80.0
    positions = np.array([[30.0, 30, 30], [31.0, 30, 30], [34.0, 30, 30], [35.0, 30, 30]])  # head to tail
    expected = COULOMB_KCAL_MOL_A * sum(
        dipole.sites[i % 2].charge_e * dipole.sites[j % 2].charge_e / np.linalg.norm(positions[i] - positions[j])
        for i in (0, 1) for j in (2, 3))
    e, _ = energy_and_forces(make_context(build_system(dipole, 2, box, cutoff_A=12.0), positions, box))
    # periodic images of the dipoles add ~mu^2/L^3 ~ 1e-4 kcal/mol
    assert e == pytest.approx(expected, abs=2e-3)
    assert expected == pytest.approx(-2.767, abs=1e-3)


@pytest.mark.parametrize("name", sorted(BUILTIN_MOLECULES))
def test_forces_are_minus_the_energy_gradient_in_our_units(name):
    """OpenMM forces (converted to kcal/mol/A) against central differences of the energy (kcal/mol)."""
    molecule, positions, box, cutoff = small_box(name)
    context = make_context(build_system(molecule, 27, box, cutoff_A=cutoff), positions, box)
    openmm.LocalEnergyMinimizer.minimize(context, 50.0, 50)  # away from overlaps, still far from a minimum
    state = context.getState(getPositions=True)
    x0 = np.asarray(state.getPositions(asNumpy=True)._value) * units.NM_TO_A
    _, forces = energy_and_forces(context)
    rng = np.random.default_rng(1)
    h = 1e-4  # A
    for atom in rng.choice(len(x0), size=5, replace=False):
        for k in range(3):
            e = []
            for sign in (1, -1):
                x = x0.copy()
                x[atom, k] += sign * h
                context.setPositions(x * units.A_TO_NM)
                e.append(energy_and_forces(context)[0])
            fd = -(e[0] - e[1]) / (2 * h)
            assert fd == pytest.approx(forces[atom, k], rel=1e-4, abs=2e-4), (name, atom, k)
    assert np.abs(forces).max() > 1.0  # not a trivially zero field


@pytest.mark.parametrize("name", ["methanol_trappe", "methanol_opls"])
def test_summed_molecule_force_is_the_intermolecular_force(name):
    """One bead per molecule: intramolecular forces cancel, so sum_i F_i = sum_i F_i(intermolecular only)."""
    molecule, positions, box, cutoff = small_box(name)
    positions = positions + np.random.default_rng(2).normal(scale=0.05, size=positions.shape)  # strain bonds/angles
    n = molecule.n_sites
    full = make_context(build_system(molecule, 27, box, cutoff_A=cutoff), positions, box)
    inter = make_context(build_system(molecule, 27, box, cutoff_A=cutoff, intermolecular_only=True), positions, box)
    _, f_full = energy_and_forces(full)
    _, f_inter = energy_and_forces(inter)
    _, f_bonded = energy_and_forces(full, groups={FORCE_GROUP_BONDED})
    per_mol = lambda f: f.reshape(27, n, 3).sum(1)  # noqa: E731
    # the intramolecular part is large per atom ...
    assert np.abs(f_full - f_inter).max() > 10.0
    # ... and vanishes per molecule
    np.testing.assert_allclose(per_mol(f_full), per_mol(f_inter), atol=1e-6 * np.abs(f_full).max())
    np.testing.assert_allclose(per_mol(f_bonded), 0.0, atol=1e-8 * np.abs(f_full).max())


def test_box_has_the_requested_density_and_no_overlaps():
    molecule = get_molecule("methanol_opls")
    positions, box = build_box(molecule, 100, 0.6, rng=np.random.default_rng(3))
    assert units.mass_density_g_cm3(molecule.mass_amu * 100, np.linalg.det(box)) == pytest.approx(0.6)
    mol = np.repeat(np.arange(100), molecule.n_sites)
    d = positions[:, None] - positions[None]
    d -= box[0, 0] * np.round(d / box[0, 0])
    r = np.linalg.norm(d, axis=-1)
    r[mol[:, None] == mol[None]] = np.inf
    assert r.min() > 1.5


# --------------------------------------------------------------------------------------------------
# a tiny generation
# --------------------------------------------------------------------------------------------------

TINY = dict(platform="CPU", n_threads=2, timestep_fs=2.0, npt_equilibration_ps=1.0, equilibration_ps=0.2,
            production_ps=1.0, save_interval_fs=100.0, thermo_interval_fs=50.0)


@pytest.fixture(scope="module")
def tiny_npt_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("aa") / "T298_P1"
    with pytest.warns(UserWarning, match="does not fit"):
        path = generate_state("methanol_trappe", StatePoint(298.0, pressure_bar=1.0), n_molecules=64,
                              settings=GenerateConfig(**TINY), seed=11, out_dir=out, progress=False)
    return out, path


def test_tiny_generation_writes_every_output(tiny_npt_run):
    from thermocg.dataset import read_frames

    out, path = tiny_npt_run
    assert path == out / "traj.h5md"
    assert sorted(p.name for p in out.iterdir()) == [
        "metadata.json", "resolved.yaml", "thermo.csv", "topology.json", "traj.h5md"]
    frames = read_frames(path)
    meta = json.loads((out / "metadata.json").read_text())
    assert frames.n_frames == 10 == meta["n_frames"] and frames.n_particles == 192
    assert frames.forces is not None and frames.velocities is not None
    # the NPT state point now carries the equilibrated density, and the NVT box has exactly that density
    rho = meta["equilibrated_density_g_cm3"]
    assert frames.state.pressure_bar == 1.0 and frames.state.density_g_cm3 == pytest.approx(rho["at_mean_volume"], rel=1e-9)
    assert rho["mean"] == pytest.approx(rho["at_mean_volume"], rel=2e-3) and meta["state"] == frames.state.to_dict()
    np.testing.assert_allclose(frames.density_g_cm3, frames.state.density_g_cm3, rtol=1e-9)
    assert 0.6 < frames.state.density_g_cm3 < 1.0
    assert frames.type_names == ("CH3", "O", "H")
    np.testing.assert_array_equal(frames.molecule_ids, np.repeat(np.arange(64), 3))
    # molecules are whole: constrained CH3-O and O-H distances hold in every frame
    pos = frames.positions.reshape(10, 64, 3, 3)
    np.testing.assert_allclose(np.linalg.norm(pos[:, :, 0] - pos[:, :, 1], axis=-1), 1.43, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(pos[:, :, 1] - pos[:, :, 2], axis=-1), 0.945, atol=1e-4)
    # forces in kcal/mol/A: typical atomic forces in liquid methanol are tens of kcal/mol/A
    rms = np.sqrt((frames.forces**2).mean())
    assert 3.0 < rms < 100.0
    # velocities in A/fs: equipartition gives <m v^2> = 3 kT per unconstrained atom (here 2/3 of that)
    ke = 0.5 * (frames.masses[None, :, None] * frames.velocities**2).sum((1, 2)) * units.MV2_TO_KCAL_MOL
    temperature = 2 * ke.mean() / ((3 * 192 - 128 - 3) * units.KB_KCAL_MOL_K)
    assert 200 < temperature < 400
    topology = Topology.load(out / "topology.json")
    assert topology.atom_names[:3] == ["CH3", "O", "H"] and topology.molecule_names[0] == "methanol_trappe"
    np.testing.assert_allclose(topology.masses, frames.masses)
    thermo = np.genfromtxt(out / "thermo.csv", delimiter=",", names=True, dtype=None, encoding=None)
    phases = set(thermo["phase"])
    assert phases == {"npt", "nvt_equilibration", "production"}
    assert np.sum(thermo["phase"] == "production") == 20
    assert meta["seed"] == 11 and meta["ns_per_day"] > 0 and "openmm" in meta["provenance"]["packages"]
    assert meta["force_field"]["name"] == "methanol_trappe" and meta["cutoff_A"] < 14.0


def test_mdanalysis_reads_the_trajectory_with_forces(tiny_npt_run):
    mda = pytest.importorskip("MDAnalysis")
    from thermocg.dataset import read_frames

    _, path = tiny_npt_run
    frames = read_frames(path)
    universe = mda.Universe.empty(frames.n_particles, trajectory=True)
    universe.load_new(str(path), format="H5MD")
    assert len(universe.trajectory) == frames.n_frames
    universe.trajectory[3]
    np.testing.assert_allclose(universe.atoms.positions, frames.positions[3], atol=1e-4)
    # MDAnalysis converts to its own force unit, kJ/(mol A)
    np.testing.assert_allclose(universe.atoms.forces, frames.forces[3] * units.KCAL_TO_KJ, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(universe.dimensions[:3], np.diag(frames.box[3]), rtol=1e-6)


def test_nvt_generation_is_reproducible_from_the_seed(tmp_path):
    from thermocg.dataset import read_frames

    # bit-reproducible on one CPU thread; with more, OpenMM's thread scheduling (minimiser, random
    # streams) changes the last bits, and chaos does the rest: same statistics, other trajectory
    settings = GenerateConfig(**{**TINY, "n_threads": 1, "equilibration_ps": 0.0, "production_ps": 0.2})
    state = StatePoint(300.0, density_g_cm3=0.75)
    runs = []
    for k, seed in enumerate((5, 5, 6)):
        with pytest.warns(UserWarning, match="does not fit"):
            path = generate_state("methanol_trappe", state, n_molecules=27, settings=settings, seed=seed,
                                  out_dir=tmp_path / str(k), progress=False)
        runs.append(read_frames(path))
    np.testing.assert_allclose(runs[0].density_g_cm3, 0.75, rtol=1e-9)
    np.testing.assert_array_equal(runs[0].positions, runs[1].positions)
    assert not np.allclose(runs[0].positions, runs[2].positions)


def test_run_generate_through_the_cli(tmp_path):
    from thermocg import cli

    config = {
        "run_dir": "run", "seed": 3,
        "system": {"molecule": "water_spce", "n_molecules": 64},
        "states": [{"temperature_K": 300.0, "density_g_cm3": 1.0}, {"temperature_K": 350.0, "density_g_cm3": 0.97}],
        "generate": {**TINY, "equilibration_ps": 0.1, "production_ps": 0.2},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.warns(UserWarning, match="does not fit"):
        assert cli.main(["generate", str(path), "--state", "T350_rho0.97"]) == 0
    done = sorted(p.name for p in (tmp_path / "run" / "allatom").iterdir())
    assert done == ["T350_rho0.97"]
    resolved = yaml.safe_load((tmp_path / "run" / "allatom" / "T350_rho0.97" / "resolved.yaml").read_text())
    assert resolved["config"]["system"]["molecule"] == "water_spce"
    # an unknown state label is an error naming the known ones
    assert cli.main(["generate", str(path), "--state", "T400_rho1"]) == 2


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------

def test_negative_temperature_is_rejected():
    with pytest.raises(ConfigError, match="temperature_K"):
        from_dict(StateConfig, {"temperature_K": -10.0, "density_g_cm3": 0.8}, "states[0]")
    with pytest.raises(ValueError, match="temperature_K"):
        StatePoint(-10.0, density_g_cm3=0.8)


def test_bad_generation_input(tmp_path):
    settings = GenerateConfig(**TINY)
    with pytest.raises(GenerateError, match="n_molecules"):
        generate_state("methanol_trappe", StatePoint(300.0, density_g_cm3=0.8), n_molecules=0,
                       settings=settings, seed=1, out_dir=tmp_path)
    with pytest.raises(GenerateError, match="density_g_cm3"):
        generate_state("methanol_trappe", StatePoint(300.0), n_molecules=8, settings=settings, seed=1,
                       out_dir=tmp_path)
    with pytest.raises(GenerateError, match="save_interval_fs"):
        generate_state("methanol_trappe", StatePoint(300.0, density_g_cm3=0.8), n_molecules=8,
                       settings=GenerateConfig(**{**TINY, "save_interval_fs": 3.0}), seed=1, out_dir=tmp_path)
    config = Config(run_dir=str(tmp_path), system=from_dict(Config, {"system": {"molecule": "ethanol"}}).system,
                    states=[StateConfig(300.0, density_g_cm3=0.8)])
    with pytest.raises(MoleculeError, match="unknown molecule 'ethanol'"):
        run_generate(config, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
