"""Mixtures end to end: the config and labels, cross interactions (known answers against OpenMM), box
building, generation with per-frame potential energies, imports (LAMMPS, extxyz) that map to the same
beads as the generated data, and the CG dataset of two bead types (forces, masses, RDF per type pair
against MDAnalysis)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

openmm = pytest.importorskip("openmm")

from thermocg import units  # noqa: E402
from thermocg.allatom.build import build_box  # noqa: E402
from thermocg.allatom.mixture import Component, CrossInteraction, Mixture, MixtureError  # noqa: E402
from thermocg.allatom.molecules import get_molecule, molecule_from_dict  # noqa: E402
from thermocg.allatom.readers import TrajectoryImportError, read_trajectory, run_import  # noqa: E402
from thermocg.allatom.runner import (  # noqa: E402
    GenerateError,
    build_system,
    energy_and_forces,
    generate_state,
    make_context,
)
from thermocg.config import (  # noqa: E402
    Config,
    ConfigError,
    ImportMoleculeConfig,
    from_dict,
    load_config,
)
from thermocg.dataset import read_frames  # noqa: E402
from thermocg.frames import StatePoint, Topology  # noqa: E402
from thermocg.mapping import build_mapping, map_trajectory  # noqa: E402

MIX = {"molecules": [{"molecule": "methanol_trappe", "n": 16}, {"molecule": "water_spce", "n": 24}]}


def mixture(n_methanol: int = 16, n_water: int = 24, *, cross=()) -> Mixture:
    return Mixture((Component(get_molecule("methanol_trappe"), n_methanol),
                    Component(get_molecule("water_spce"), n_water)), tuple(cross))


# --------------------------------------------------------------------------------------------------
# config, compositions, labels
# --------------------------------------------------------------------------------------------------

def test_system_forms_and_their_errors():
    one = from_dict(Config, {"system": {"molecule": "water_spce", "n_molecules": 10}}).system
    assert not one.is_mixture and one.counts() == [("water_spce", 10)]
    assert from_dict(Config, {}).system.molecule == "methanol_trappe"  # the default is unchanged
    mix = from_dict(Config, {"system": MIX}).system
    assert mix.is_mixture and mix.total_molecules == 40 and mix.molecule_names == ["methanol_trappe", "water_spce"]
    with pytest.raises(ConfigError, match=r"system: give either system.molecules .* not both \(got system.molecule\)"):
        from_dict(Config, {"system": {**MIX, "molecule": "water_spce"}})
    with pytest.raises(ConfigError, match=r"system.n_molecules"):
        from_dict(Config, {"system": {**MIX, "n_molecules": 3}})
    with pytest.raises(ConfigError, match="two or more molecule types"):
        from_dict(Config, {"system": {"molecules": [{"molecule": "water_spce", "n": 3}]}})
    with pytest.raises(ConfigError, match="listed twice"):
        from_dict(Config, {"system": {"molecules": [{"molecule": "water_spce", "n": 3}] * 2}})
    with pytest.raises(ConfigError, match="cross_interactions: only for mixtures"):
        from_dict(Config, {"system": {"molecule": "water_spce", "cross_interactions": [
            {"pair": ["OW", "OW"], "sigma_A": 3.0, "epsilon_kcal_mol": 0.1}]}})
    with pytest.raises(ConfigError, match=r"system.molecules\[0\].nn: unknown key; did you mean 'n'"):
        from_dict(Config, {"system": {"molecules": [{"molecule": "water_spce", "nn": 3}]}})


def test_labels_carry_the_composition_and_one_component_labels_do_not():
    assert StatePoint(300.0, density_g_cm3=0.92).label == "T300_rho0.92"
    assert StatePoint(300.0, pressure_bar=1.0).label == "T300_P1"
    binary = StatePoint(300.0, density_g_cm3=0.92, mole_fractions={"methanol_trappe": 0.25, "water_spce": 0.75})
    assert binary.label == "T300_rho0.92_x0.25"
    ternary = StatePoint(300.0, pressure_bar=1.0, mole_fractions=(("a", 0.2), ("b", 0.3), ("c", 0.5)))
    assert ternary.label == "T300_P1_x0.2-0.3"
    assert StatePoint.from_dict(binary.to_dict()) == binary  # JSON round trip (H5MD, metadata)
    with pytest.raises(ValueError, match="sum to 1"):
        StatePoint(300.0, density_g_cm3=0.9, mole_fractions={"a": 0.5, "b": 0.6})


def test_state_points_get_complete_compositions():
    config = from_dict(Config, {
        "system": MIX,
        "states": [{"temperature_K": 298.0, "pressure_bar": 1.0},
                   {"temperature_K": 298.0, "pressure_bar": 1.0, "mole_fractions": {"water_spce": 0.3}}],
        "state_grid": {"temperature_K": [280.0, 320.0], "density_g_cm3": [0.9],
                       "composition": [{"methanol_trappe": 0.25}, {"methanol_trappe": 0.5, "water_spce": 0.5}]},
    })
    labels = [s.to_state().label for s in config.state_points()]
    # the system's own 16/40 = 0.4, then 1 - 0.3 = 0.7, then the grid: temperature x density x composition
    assert labels == ["T298_P1_x0.4", "T298_P1_x0.7", "T280_rho0.9_x0.25", "T280_rho0.9_x0.5",
                      "T320_rho0.9_x0.25", "T320_rho0.9_x0.5"]
    # counts: the system's total, redistributed (largest remainders keep the total)
    assert config.system.counts({"methanol_trappe": 0.25}) == [("methanol_trappe", 10), ("water_spce", 30)]
    assert config.system.counts({"methanol_trappe": 1 / 3}) == [("methanol_trappe", 13), ("water_spce", 27)]
    bad = [({"methanol": 0.5}, "unknown molecule type"), ({"methanol_trappe": 0.5, "water_spce": 0.4}, "add up to 0.9"),
           ({"methanol_trappe": 1.5}, r"must be in \[0, 1\]")]
    for fractions, message in bad:
        with pytest.raises(ConfigError, match=message):
            from_dict(Config, {"system": MIX, "states": [
                {"temperature_K": 300.0, "density_g_cm3": 0.9, "mole_fractions": fractions}]}).state_points()
    with pytest.raises(ConfigError, match=r"states\[0\].mole_fractions: a composition needs a mixture"):
        from_dict(Config, {"states": [{"temperature_K": 300.0, "density_g_cm3": 0.9,
                                       "mole_fractions": {"methanol_trappe": 1.0}}]}).state_points()


def test_example_config_validates_and_documents_every_new_key():
    from pathlib import Path

    path = Path(__file__).parents[1] / "configs" / "methanol_water.yaml"
    config = load_config(path)
    labels = [s.to_state().label for s in config.state_points()]
    assert len(labels) == len(set(labels)) >= 3 and all("_x" in label for label in labels)
    text = path.read_text()
    for key in ("molecules:", "cross_interactions:", "composition:", "mole_fractions", "energy_file",
                "name_in_file", "molecule_ids"):
        assert key in text, key
    from thermocg.allatom.runner import system_for_state

    for state in config.state_points():
        system = system_for_state(config, state.to_state())
        assert system.n_molecules == config.system.total_molecules
        assert system.mole_fractions["methanol_trappe"] == pytest.approx(
            state.mole_fractions["methanol_trappe"], abs=0.5 / system.n_molecules)


def test_yaml_molecules_in_a_mixture_go_by_their_file_stem(tmp_path):
    """A YAML molecule of system.molecules is found relative to the config file, and compositions name
    it by its file's stem."""
    from thermocg.allatom.runner import system_for_state

    water = {
        "name": "my_water", "cutoff_A": 10.0,
        "sites": [{"name": "O", "mass_amu": 15.9994, "charge_e": -0.8476, "sigma_A": 3.166,
                   "epsilon_kcal_mol": 0.1553, "position_A": [0.0, 0.0, 0.0]},
                  {"name": "H1", "type": "H", "mass_amu": 1.008, "charge_e": 0.4238, "sigma_A": 0.0,
                   "epsilon_kcal_mol": 0.0, "position_A": [0.8165, 0.5774, 0.0]},
                  {"name": "H2", "type": "H", "mass_amu": 1.008, "charge_e": 0.4238, "sigma_A": 0.0,
                   "epsilon_kcal_mol": 0.0, "position_A": [-0.8165, 0.5774, 0.0]}],
        "constraints": [{"atoms": ["O", "H1"], "length_A": 1.0}, {"atoms": ["O", "H2"], "length_A": 1.0},
                        {"atoms": ["H1", "H2"], "length_A": 1.633}]}
    (tmp_path / "mols").mkdir()
    (tmp_path / "mols" / "my_water.yaml").write_text(yaml.safe_dump(water))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "system": {"molecules": [{"molecule": "methanol_trappe", "n": 4}, {"molecule": "mols/my_water.yaml", "n": 6}]},
        "states": [{"temperature_K": 300.0, "density_g_cm3": 0.9, "mole_fractions": {"my_water": 0.8}}]}))
    config = load_config(path)
    assert config.system.molecules[1].molecule == str(tmp_path / "mols" / "my_water.yaml")
    [state] = config.state_points()
    assert state.to_state().label == "T300_rho0.9_x0.2"
    system = system_for_state(config, state.to_state())
    assert system.counts == {"methanol_trappe": 2, "my_water": 8}
    # type names both molecule types use are qualified by the molecule
    assert system.topology().type_names == ("CH3", "methanol_trappe:O", "methanol_trappe:H", "my_water:O",
                                            "my_water:H")


def test_mixture_aware_box_estimate():
    from thermocg.allatom.mixture import estimated_box_length_A

    config = from_dict(Config, {"system": MIX, "states": [{"temperature_K": 300.0, "density_g_cm3": 0.9}]})
    state = config.state_points()[0]
    mass = 16 * 32.042 + 24 * 18.0154
    assert estimated_box_length_A(config.system, state) == pytest.approx(
        (units.volume_for_density_A3(mass, 0.9)) ** (1 / 3), rel=1e-4)
    # pressure states: ideal mixing of the pure liquids' densities (0.78 and 1.0 g/cm^3)
    npt = from_dict(Config, {"system": MIX, "states": [{"temperature_K": 300.0, "pressure_bar": 1.0,
                                                        "mole_fractions": {"methanol_trappe": 0.5}}]})
    guess = 40 * (0.5 * 32.042 + 0.5 * 18.0154) / (20 * 32.042 / 0.78 + 20 * 18.0154 / 1.0)
    assert estimated_box_length_A(npt.system, npt.state_points()[0]) == pytest.approx(
        units.volume_for_density_A3(20 * 32.042 + 20 * 18.0154, guess) ** (1 / 3), rel=1e-4)
    one = from_dict(Config, {"system": {"molecule": "water_spce", "n_molecules": 100},
                             "states": [{"temperature_K": 300.0, "density_g_cm3": 1.0}]})
    assert estimated_box_length_A(one.system, one.states[0]) == pytest.approx(
        units.volume_for_density_A3(100 * 18.0154, 1.0) ** (1 / 3), rel=1e-4)


# --------------------------------------------------------------------------------------------------
# cross interactions
# --------------------------------------------------------------------------------------------------

def _lj_atom(name: str, sigma_A: float, epsilon_kcal_mol: float, mixing: str = "lorentz-berthelot"):
    return molecule_from_dict({"name": name, "mixing": mixing, "dispersion_correction": False, "sites": [
        {"name": name.upper(), "mass_amu": 40.0, "charge_e": 0.0, "sigma_A": sigma_A,
         "epsilon_kcal_mol": epsilon_kcal_mol, "position_A": [0, 0, 0]}]})


@pytest.mark.parametrize("cross", [None, (3.1, 0.4)])
def test_cross_pair_known_answer(cross):
    """One A and one B atom: E(2^(1/6) sigma_AB) = -eps_AB and F(sigma_AB) = 24 eps_AB / sigma_AB, with
    sigma_AB, eps_AB from Lorentz-Berthelot or from an explicit override (deliberately not LB)."""
    a, b = _lj_atom("a", 3.4, 0.25), _lj_atom("b", 4.0, 0.1)
    overrides = () if cross is None else (CrossInteraction("A", "B", *cross),)
    system = Mixture((Component(a, 1), Component(b, 1)), overrides)
    sigma, eps = cross if cross is not None else (3.7, math.sqrt(0.25 * 0.1))
    box = np.eye(3) * 40.0
    for r, energy, force in ((2 ** (1 / 6) * sigma, -eps, 0.0), (sigma, 0.0, 24 * eps / sigma)):
        positions = np.array([[10.0, 10.0, 10.0], [10.0 + r, 10.0, 10.0]])
        e, f = energy_and_forces(make_context(build_system(system, box_A=box, cutoff_A=15.0), positions, box))
        assert e == pytest.approx(energy, abs=1e-6)
        np.testing.assert_allclose(f[1], [force, 0, 0], atol=1e-5)


def test_overrides_equal_to_the_mixing_rule_change_nothing(rng):
    """The tabulated path (any override) and OpenMM's own Lorentz-Berthelot NonbondedForce agree on a
    methanol-water box; the only difference is how each integrates the dispersion correction."""
    plain = mixture()
    same = [CrossInteraction(p["pair"][0], p["pair"][1], p["sigma_A"], p["epsilon_kcal_mol"])
            for p in plain.describe()["cross_lj"]]
    assert {tuple(p["pair"]) for p in plain.describe()["cross_lj"]} == {("CH3", "OW"), ("O", "OW")}
    positions, box = build_box(plain, density_g_cm3=0.9, rng=rng)
    results = [energy_and_forces(make_context(build_system(m, box_A=box, cutoff_A=5.5), positions, box,
                                              platform="CPU", n_threads=1))
               for m in (plain, mixture(cross=same))]
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=2e-5 * np.abs(results[0][1]).max())


def test_ambiguous_mixing_is_an_error_naming_the_pairs():
    opls, water = get_molecule("methanol_opls"), get_molecule("water_spce")
    with pytest.raises(MixtureError, match=r"methanol_opls mixes by geometric and water_spce by lorentz-berthelot.*"
                                           r"\[CT, OW\], \[HC, OW\], \[OH, OW\]"):
        Mixture((Component(opls, 2), Component(water, 2)))
    cross = tuple(CrossInteraction(t, "OW", 3.2, 0.12) for t in ("CT", "HC", "OH"))
    system = Mixture((Component(opls, 2), Component(water, 2)), cross)
    assert [p["from"] for p in system.describe()["cross_lj"]] == ["override"] * 3
    for bad, message in ((CrossInteraction("XX", "OW", 3.0, 0.1), "unknown site type 'XX'"),
                         (CrossInteraction("CT", "OH", 3.0, 0.1), "both site types belong to methanol_opls"),
                         (CrossInteraction("water_spce:CT", "OW", 3.0, 0.1), "water_spce has no site type 'CT'")):
        with pytest.raises(MixtureError, match=message):
            Mixture((Component(opls, 2), Component(water, 2)), cross + (bad,))
    # a type name in two molecule types must be qualified
    twin = molecule_from_dict({**{k: v for k, v in
                                  _lj_atom("ow_like", 3.0, 0.1).describe().items() if k == "name"},
                               "sites": [{"name": "OW", "mass_amu": 16.0, "charge_e": 0.0, "sigma_A": 3.0,
                                          "epsilon_kcal_mol": 0.1, "position_A": [0, 0, 0]}]})
    with pytest.raises(MixtureError, match="qualify it as molecule:type"):
        Mixture((Component(twin, 1), Component(water, 1)), (CrossInteraction("OW", "OW", 3.0, 0.1),))
    ok = Mixture((Component(twin, 1), Component(water, 1)), (CrossInteraction("ow_like:OW", "water_spce:OW", 3.0, 0.1),))
    assert ok.topology().type_names == ("ow_like:OW", "water_spce:OW", "HW")
    # from the config: the same error, as a ConfigError naming the key
    from thermocg.allatom.mixture import mixture_from_config

    config = from_dict(Config, {"system": {"molecules": [{"molecule": "methanol_opls", "n": 2},
                                                         {"molecule": "water_spce", "n": 2}]}})
    with pytest.raises(ConfigError, match=r"system.cross_interactions: .*\[CT, OW\]"):
        mixture_from_config(config.system)


def test_mixture_box_has_the_density_the_counts_and_no_overlaps(rng):
    system = mixture(30, 70)
    positions, box = build_box(system, density_g_cm3=0.9, rng=rng)
    assert units.mass_density_g_cm3(system.mass_amu, np.linalg.det(box)) == pytest.approx(0.9)
    assert positions.shape == (30 * 3 + 70 * 3, 3)
    mol = system.atom_molecule_ids()
    d = positions[:, None] - positions[None]
    d -= box[0, 0] * np.round(d / box[0, 0])
    r = np.linalg.norm(d, axis=-1)
    r[mol[:, None] == mol[None]] = np.inf
    assert r.min() > 1.5
    # molecules are whole (reference geometry) and the kinds are mixed, not in two slabs
    water = positions[90:].reshape(70, 3, 3)
    np.testing.assert_allclose(np.linalg.norm(water[:, 0] - water[:, 1], axis=-1), 1.0, atol=1e-9)
    methanol_x = positions[:90:3, 0]
    assert methanol_x.min() < 0.3 * box[0, 0] and methanol_x.max() > 0.7 * box[0, 0]
    assert system.topology().molecule_names == ["methanol_trappe"] * 30 + ["water_spce"] * 70


# --------------------------------------------------------------------------------------------------
# a tiny generated mixture, and everything downstream of it
# --------------------------------------------------------------------------------------------------

TINY = dict(platform="CPU", n_threads=1, timestep_fs=1.0, npt_equilibration_ps=0.0, equilibration_ps=0.05,
            production_ps=0.2, save_interval_fs=20.0, thermo_interval_fs=20.0)
STATE = StatePoint(300.0, density_g_cm3=0.92, mole_fractions={"methanol_trappe": 0.4, "water_spce": 0.6})


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from thermocg.config import GenerateConfig

    out = tmp_path_factory.mktemp("mix") / STATE.label
    with pytest.warns(UserWarning, match="does not fit"):
        path = generate_state(mixture(), STATE, settings=GenerateConfig(**TINY), seed=3, out_dir=out, progress=False)
    return out, read_frames(path), Topology.load(out / "topology.json")


def test_generated_mixture_outputs(generated):
    out, frames, topology = generated
    meta = json.loads((out / "metadata.json").read_text())
    assert out.name == "T300_rho0.92_x0.4"
    assert meta["molecule_counts"] == {"methanol_trappe": 16, "water_spce": 24}
    assert meta["state"]["mole_fractions"] == {"methanol_trappe": 0.4, "water_spce": 0.6}
    assert frames.state == STATE and frames.n_frames == 10 and frames.n_particles == 16 * 3 + 24 * 3
    assert topology.type_names == ("CH3", "O", "H", "OW", "HW")
    assert topology.molecule_names == ["methanol_trappe"] * 16 + ["water_spce"] * 24
    assert [p["pair"] for p in meta["force_field"]["cross_lj"]] == [["CH3", "OW"], ["O", "OW"]]
    np.testing.assert_allclose(frames.density_g_cm3, 0.92, rtol=1e-9)
    # molecules whole in every frame: the rigid water's O-H and methanol's CH3-O
    pos = frames.positions
    np.testing.assert_allclose(np.linalg.norm(pos[:, 48::3] - pos[:, 49::3], axis=-1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(pos[:, 0:48:3] - pos[:, 1:48:3], axis=-1), 1.43, atol=1e-4)


def test_stored_energies_are_openmm_potential_energies(generated):
    """Each saved frame's energy equals OpenMM's getPotentialEnergy of that configuration, and the
    thermo log's production rows (the same states) carry the same numbers."""
    out, frames, _ = generated
    meta = json.loads((out / "metadata.json").read_text())
    energies = frames.potential_energy_kcal_mol
    assert energies is not None and energies.shape == (10,) and np.all(energies < 0)
    system = build_system(mixture(), box_A=frames.box[0], cutoff_A=meta["cutoff_A"])
    context = make_context(system, frames.positions[0], frames.box[0], platform="CPU", n_threads=1)
    for k in (0, 4, 9):
        context.setPositions(frames.positions[k] * units.A_TO_NM)
        energy, _ = energy_and_forces(context)
        assert energy == pytest.approx(energies[k], abs=1e-4)  # 2e-5 kcal/mol measured: positions re-wrapped
    thermo = np.genfromtxt(out / "thermo.csv", delimiter=",", names=True, dtype=None, encoding=None)
    production = thermo["potential_energy_kcal_mol"][thermo["phase"] == "production"]
    np.testing.assert_allclose(production, energies, rtol=1e-5)  # thermo.csv keeps 6 digits
    # MDAnalysis still reads the H5MD (with the observables group)
    import MDAnalysis as mda

    universe = mda.Universe.empty(frames.n_particles, trajectory=True)
    universe.load_new(str(out / "traj.h5md"), format="H5MD")
    assert len(universe.trajectory) == 10


def test_mapped_forces_are_summed_atomic_forces_per_molecule(generated, tmp_path):
    out, frames, topology = generated
    mapping = build_mapping(topology)
    assert mapping.bead_type_names == ("methanol_trappe", "water_spce")
    cg_path = map_trajectory(out / "traj.h5md", topology, mapping, tmp_path / "cg.h5md")
    cg = read_frames(cg_path)
    assert cg.type_names == ("methanol_trappe", "water_spce")
    np.testing.assert_array_equal(cg.types, [0] * 16 + [1] * 24)
    np.testing.assert_allclose(cg.masses, [32.042] * 16 + [18.0154] * 24, atol=1e-3)
    by_hand = np.concatenate([frames.forces[:, :48].reshape(10, 16, 3, 3).sum(2),
                              frames.forces[:, 48:].reshape(10, 24, 3, 3).sum(2)], axis=1)
    np.testing.assert_array_equal(cg.forces, by_hand)
    # the physics: the summed force of a molecule is the force between molecules only
    meta = json.loads((out / "metadata.json").read_text())
    inter = make_context(build_system(mixture(), box_A=frames.box[3], cutoff_A=meta["cutoff_A"],
                                      intermolecular_only=True), frames.positions[3], frames.box[3],
                         platform="CPU", n_threads=1)
    _, f_inter = energy_and_forces(inter)
    per_molecule = np.concatenate([f_inter[:48].reshape(16, 3, 3).sum(1), f_inter[48:].reshape(24, 3, 3).sum(1)])
    np.testing.assert_allclose(cg.forces[3], per_molecule, atol=2e-4 * np.abs(cg.forces[3]).max())
    # the CG frames carry the all-atom energies unchanged
    np.testing.assert_array_equal(cg.potential_energy_kcal_mol, frames.potential_energy_kcal_mol)


def test_multi_bead_map_per_molecule_type(generated):
    from thermocg.config import MappingConfig

    _, frames, topology = generated
    config = from_dict(MappingConfig, {"beads": {"methanol_trappe": [{"name": "ME", "atoms": ["CH3"]},
                                                                     {"name": "OH", "atoms": ["O", "H"]}]}})
    mapping = build_mapping(topology, config)
    assert mapping.bead_type_names == ("ME", "OH", "water_spce") and mapping.n_beads == 16 * 2 + 24
    cg = mapping.apply(frames)
    np.testing.assert_allclose(cg.forces.sum(1), frames.forces.sum(1), atol=1e-9)
    np.testing.assert_allclose(cg.masses[:2], [15.035, 17.007])


def test_rdf_per_type_pair_matches_mdanalysis(generated):
    """The CG dataset of two bead types: g(r) of methanol-methanol, methanol-water and water-water
    against MDAnalysis InterRDF on the same bead positions."""
    import MDAnalysis as mda
    from MDAnalysis.analysis.rdf import InterRDF
    from MDAnalysis.coordinates.memory import MemoryReader
    from MDAnalysis.lib.mdamath import triclinic_box, triclinic_vectors

    from thermocg.analysis.rdf import RDF
    from thermocg.frames import Frames

    _, frames, topology = generated
    cg = build_mapping(topology).apply(frames)
    dims = np.array([triclinic_box(*b) for b in cg.box], dtype=np.float32)
    u = mda.Universe.empty(cg.n_particles, trajectory=False)
    u.load_new(cg.positions.astype(np.float32), format=MemoryReader, dimensions=dims)
    same = Frames(positions=cg.positions.astype(np.float32).astype(np.float64),
                  box=np.array([triclinic_vectors(d) for d in dims], dtype=np.float64),
                  types=cg.types, type_names=cg.type_names, masses=cg.masses)
    result = RDF(same, bin_width_A=0.25).run().results
    r_max = float(result.r_A[-1] + 0.5 * (result.r_A[1] - result.r_A[0]))
    meoh, water = u.atoms[cg.types == 0], u.atoms[cg.types == 1]
    pairs = {"methanol_trappe-methanol_trappe": (meoh, meoh, (1, 1)), "water_spce-water_spce": (water, water, (1, 1)),
             "methanol_trappe-water_spce": (meoh, water, None)}
    assert set(result.g) == set(pairs)
    for pair, (g1, g2, block) in pairs.items():
        ref = InterRDF(g1, g2, nbins=len(result.r_A), range=(0.0, r_max), exclusion_block=block).run()
        np.testing.assert_allclose(result.g[pair], ref.results.rdf, rtol=1e-6, atol=1e-9)
        assert ref.results.rdf.max() > 0.5  # pairs were counted


# --------------------------------------------------------------------------------------------------
# imports of mixtures: LAMMPS and extxyz map to the same beads; energies with their units
# --------------------------------------------------------------------------------------------------

def write_lammps_mixture(directory, frames, topology, *, unit_style="real", step0=1000, stride=10):
    """A data file (atom_style full, one atom type per site of each molecule type), a dump written as
    LAMMPS does (atoms in any order) and a log whose thermo table has Step and PotEng."""
    kinds = list(dict.fromkeys(zip([topology.molecule_names[m] for m in topology.molecule_ids],
                                   topology.atom_names)))
    atom_type = [kinds.index((topology.molecule_names[m], a)) + 1
                 for m, a in zip(topology.molecule_ids, topology.atom_names)]
    masses = {atom_type[k]: topology.masses[k] for k in range(topology.n_atoms)}
    box = frames.box[0].tolist()
    lines = ["LAMMPS data file (thermocg test)", "", f"{topology.n_atoms} atoms", f"{len(kinds)} atom types", "",
             f"0.0 {box[0][0]!r} xlo xhi", f"0.0 {box[1][1]!r} ylo yhi", f"0.0 {box[2][2]!r} zlo zhi", "",
             "Masses", ""] + [f"{t} {float(masses[t])!r}" for t in sorted(masses)] + ["", "Atoms # full", ""]
    for k in range(topology.n_atoms):
        x, y, z = frames.positions[0, k].tolist()
        lines.append(f"{k + 1} {topology.molecule_ids[k] + 1} {atom_type[k]} 0.0 {x!r} {y!r} {z!r}")
    data = directory / "mix.data"
    data.write_text("\n".join(lines) + "\n")
    e_conv = 1.0 if unit_style == "real" else 1.0 / units.EV_TO_KCAL_MOL
    dump, log = [], ["LAMMPS (test)", "thermo_style custom step temp pe", "Step Temp PotEng"]
    for f in range(frames.n_frames):
        step = step0 + stride * f
        dump += ["ITEM: TIMESTEP", str(step), "ITEM: NUMBER OF ATOMS", str(topology.n_atoms),
                 "ITEM: BOX BOUNDS pp pp pp"] + [f"0.0 {box[i][i]!r}" for i in range(3)]
        dump.append("ITEM: ATOMS id mol type x y z fx fy fz")
        for a in np.random.default_rng(f).permutation(topology.n_atoms):
            force = frames.forces[f, a] * (1.0 if unit_style == "real" else 1.0 / units.EV_TO_KCAL_MOL)
            dump.append(" ".join(str(v) for v in (a + 1, topology.molecule_ids[a] + 1, atom_type[a]))
                        + " " + " ".join(repr(float(v)) for v in (*frames.positions[f, a], *force)))
        log.append(f"{step} 300.0 {float(frames.potential_energy_kcal_mol[f] * e_conv)!r}")
    log.append("Loop time of 1.0 on 1 procs")
    (directory / "mix.lammpstrj").write_text("\n".join(dump) + "\n")
    (directory / "log.lammps").write_text("\n".join(log) + "\n")
    return data, directory / "mix.lammpstrj", directory / "log.lammps"


@pytest.mark.parametrize("unit_style", ["real", "metal"])
def test_lammps_mixture_maps_to_the_generated_beads(generated, tmp_path, unit_style):
    _, frames, topology = generated
    data, dump, log = write_lammps_mixture(tmp_path, frames, topology, unit_style=unit_style)
    molecules = [ImportMoleculeConfig("methanol_trappe", molecule_ids=[1, 16]),
                 ImportMoleculeConfig("water_spce", molecule_ids=[17, 40])]
    imported, topo = read_trajectory(dump, "lammps", topology=data, lammps_units=unit_style, molecules=molecules,
                                     energy_file=log, timestep_fs=1.0, state=STATE)
    assert topo.molecule_names == topology.molecule_names and topo.atom_names == topology.atom_names
    assert topo.type_names == topology.type_names
    np.testing.assert_array_equal(topo.types, topology.types)
    reference = build_mapping(topology).apply(frames)
    mapped = build_mapping(topo).apply(imported)
    assert mapped.type_names == reference.type_names
    np.testing.assert_array_equal(mapped.types, reference.types)
    np.testing.assert_allclose(mapped.masses, reference.masses, rtol=1e-12)
    # MDAnalysis keeps coordinates and forces in float32 (relative precision 6e-8)
    np.testing.assert_allclose(mapped.positions, reference.positions, atol=5e-6)
    np.testing.assert_allclose(mapped.forces, reference.forces, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(imported.potential_energy_kcal_mol, frames.potential_energy_kcal_mol, rtol=1e-12)
    np.testing.assert_allclose(imported.time_fs, 1000.0 + 10.0 * np.arange(10))
    # errors naming the file
    with pytest.raises(TrajectoryImportError, match=r"mix.data: molecule ID\(s\) \[40\] are in no declared"):
        read_trajectory(dump, "lammps", topology=data, lammps_units=unit_style, molecules=[
            ImportMoleculeConfig("methanol_trappe", molecule_ids=[1, 16]),
            ImportMoleculeConfig("water_spce", molecule_ids=[17, 39])])
    with pytest.raises(TrajectoryImportError, match=r"mix.lammpstrj: the atom masses of molecule 1 \(water_spce: "
                                                    r"\[15.035, 15.999, 1.008\] amu\) are not those of water_spce"):
        read_trajectory(dump, "lammps", topology=data, lammps_units=unit_style, molecules=[
            ImportMoleculeConfig("water_spce", molecule_ids=[1, 16]),
            ImportMoleculeConfig("methanol_trappe", molecule_ids=[17, 40])])
    with pytest.raises(TrajectoryImportError, match="give molecule_ids"):
        read_trajectory(dump, "lammps", topology=data, lammps_units=unit_style,
                        molecules=[ImportMoleculeConfig("methanol_trappe"), ImportMoleculeConfig("water_spce")])
    short_log = tmp_path / "short.log"
    short_log.write_text("\n".join(log.read_text().splitlines()[:-3]) + "\n")
    with pytest.raises(TrajectoryImportError, match="no PotEng at dump step 1080"):
        read_trajectory(dump, "lammps", topology=data, lammps_units=unit_style, molecules=molecules,
                        energy_file=short_log)


def write_extxyz_mixture(path, frames, topology, *, energies=True, types=True, ids=True):
    import ase
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    images = []
    for f in range(frames.n_frames):
        atoms = ase.Atoms(symbols=["X"] * frames.n_particles, positions=frames.positions[f], cell=frames.box[f],
                          pbc=True, masses=topology.masses)
        if ids:
            atoms.arrays["mol_id"] = topology.molecule_ids
        atoms.arrays["atom_names"] = np.array(topology.atom_names)
        if types and ids:
            atoms.arrays["molecule_types"] = np.array([topology.molecule_names[m] for m in topology.molecule_ids])
        energy = frames.potential_energy_kcal_mol[f] / units.EV_TO_KCAL_MOL if energies else None
        atoms.calc = SinglePointCalculator(atoms, forces=frames.forces[f] / units.EV_TO_KCAL_MOL, energy=energy)
        images.append(atoms)
    ase.io.write(path, images, format="extxyz")
    return path


def test_extxyz_mixture_and_energies_through_import_and_mapping(generated, tmp_path):
    """extxyz energies in eV come out in kcal/mol, in the all-atom H5MD and in the mapped CG dataset."""
    from thermocg.mapping import run_map

    _, frames, topology = generated
    path = write_extxyz_mixture(tmp_path / "mix.extxyz", frames, topology)
    item = {"path": str(path), "format": "extxyz",
            "molecules": [{"molecule": "methanol_trappe"}, {"molecule": "water_spce"}],
            "state": {"temperature_K": 300.0, "density_g_cm3": 0.92,
                      "mole_fractions": {"methanol_trappe": 0.4, "water_spce": 0.6}}}
    config = from_dict(Config, {"imports": [item]})
    run = tmp_path / "run"
    [aa] = run_import(config, run)
    assert aa.parent.name == "T300_rho0.92_x0.4"
    imported = read_frames(aa)
    np.testing.assert_allclose(imported.potential_energy_kcal_mol, frames.potential_energy_kcal_mol, rtol=1e-12)
    meta = json.loads((aa.parent / "metadata.json").read_text())
    assert meta["molecule_counts"] == {"methanol_trappe": 16, "water_spce": 24} and meta["potential_energies"]
    [cg_path] = run_map(config, run, progress=False)
    cg = read_frames(cg_path)
    np.testing.assert_allclose(cg.potential_energy_kcal_mol, frames.potential_energy_kcal_mol, rtol=1e-12)
    reference = build_mapping(topology).apply(frames)
    # extxyz keeps 8 decimals: positions to 5e-9 A, forces to 5e-9 eV/A
    np.testing.assert_allclose(cg.positions, reference.positions, atol=1e-8)
    np.testing.assert_allclose(cg.forces, reference.forces, rtol=1e-7, atol=1e-6)
    assert cg.type_names == ("methanol_trappe", "water_spce")

    def import_with(**changes):
        data = {**item, **changes}
        return run_import(from_dict(Config, {"imports": [data]}), tmp_path / "bad")

    state_x = {**item["state"], "mole_fractions": {"methanol_trappe": 0.5, "water_spce": 0.5}}
    with pytest.raises(TrajectoryImportError, match=r"mix.extxyz: 16 of the 40 molecules are methanol_trappe .* "
                                                    r"declares x = 0.5"):
        import_with(state=state_x)
    no_x = {k: v for k, v in item["state"].items() if k != "mole_fractions"}
    with pytest.raises(TrajectoryImportError, match=r"declare its composition in the state"):
        import_with(state=no_x)
    with pytest.raises(TrajectoryImportError, match=r"'water_spce' \(24 molecules\) of the file are not declared"):
        import_with(molecules=[{"molecule": "methanol_trappe"}])
    with pytest.raises(TrajectoryImportError, match=r"declared molecule type\(s\) \['methanol_opls'\] do not occur"):
        import_with(molecules=[{"molecule": "methanol_trappe"}, {"molecule": "water_spce"},
                               {"molecule": "methanol_opls"}])
    renamed = write_extxyz_mixture(tmp_path / "named.extxyz", frames, topology, energies=False)
    text = renamed.read_text().replace("water_spce", "SOL")
    renamed.write_text(text)
    _, topo = read_trajectory(renamed, "extxyz", molecules=[
        ImportMoleculeConfig("methanol_trappe"), ImportMoleculeConfig("water_spce", name_in_file="SOL")])
    assert topo.molecule_names == topology.molecule_names
    no_energy, _ = read_trajectory(renamed, "extxyz", molecules=[
        ImportMoleculeConfig("methanol_trappe"), ImportMoleculeConfig("water_spce", name_in_file="SOL")])
    assert no_energy.potential_energy_kcal_mol is None
    untyped = write_extxyz_mixture(tmp_path / "untyped.extxyz", frames, topology, types=False)
    both = [ImportMoleculeConfig("methanol_trappe"), ImportMoleculeConfig("water_spce")]
    with pytest.raises(TrajectoryImportError, match=r"untyped.extxyz: molecule type\(s\) 'molecule' \(40 molecules\)"):
        read_trajectory(untyped, "extxyz", molecules=both)
    anonymous = write_extxyz_mixture(tmp_path / "anonymous.extxyz", frames, topology, ids=False)
    with pytest.raises(TrajectoryImportError, match="anonymous.extxyz: a mixture needs the file's molecules"):
        read_trajectory(anonymous, "extxyz", molecules=both)


def test_generation_rejects_a_composition_that_is_not_the_systems(tmp_path):
    from thermocg.config import GenerateConfig

    wrong = StatePoint(300.0, density_g_cm3=0.92, mole_fractions={"methanol_trappe": 0.5, "water_spce": 0.5})
    with pytest.raises(GenerateError, match="mole fraction 0.5 of methanol_trappe is not 16 of the 40"):
        generate_state(mixture(), wrong, settings=GenerateConfig(**TINY), seed=1, out_dir=tmp_path)
    with pytest.raises(GenerateError, match="needs a mixture"):
        generate_state("water_spce", wrong, n_molecules=8, settings=GenerateConfig(**TINY), seed=1, out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_run_generate_of_a_mixture_config(tmp_path):
    from thermocg import cli

    config = {"run_dir": "run", "seed": 5, "system": {"molecules": [{"molecule": "methanol_trappe", "n": 10},
                                                                    {"molecule": "water_spce", "n": 20}]},
              "state_grid": {"temperature_K": [300.0], "density_g_cm3": [0.95],
                             "composition": [{"methanol_trappe": 0.2}, {"methanol_trappe": 0.5}]},
              "generate": {**TINY, "production_ps": 0.04}}
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.warns(UserWarning, match="does not fit"):
        assert cli.main(["generate", str(path), "--state", "T300_rho0.95_x0.2"]) == 0
    out = tmp_path / "run" / "allatom" / "T300_rho0.95_x0.2"
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["molecule_counts"] == {"methanol_trappe": 6, "water_spce": 24}
    topo = Topology.load(out / "topology.json")
    assert topo.molecule_names.count("methanol_trappe") == 6


def test_the_study_validates_a_mixture_config_and_checks_cutoffs_against_the_mixture_box(tmp_path):
    import pytest

    from thermocg.config import ConfigError, load_config
    from thermocg.study import validate_study

    text = """
system:
  molecules: [{molecule: methanol_trappe, n: 60}, {molecule: water_spce, n: 60}]
states:
  - {temperature_K: 298, density_g_cm3: 0.886, mole_fractions: {methanol_trappe: 0.5}}
pair: {cutoff_A: 6.0}
"""
    path = tmp_path / "mix.yaml"
    path.write_text(text)
    assert list(validate_study(load_config(path))) == ["T298_rho0.886_x0.5"]
    path.write_text(text.replace("cutoff_A: 6.0", "cutoff_A: 12.0"))
    # 60 methanol + 60 water at 0.886 g/cm^3: a 17.2 A box, half of it 8.6 A
    with pytest.raises(ConfigError, match=r"pair.cutoff_A: 12 A does not fit the box of state T298_rho0.886_x0.5 "
                                          r"\(120 molecules of methanol_trappe, water_spce at 0.886 g/cm\^3 make a cubic box of 17"):
        validate_study(load_config(path))
