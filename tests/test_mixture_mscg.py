"""MS-CG on a mixture, through the whole all-atom pipeline: a two-type Lennard-Jones liquid whose cross
interaction is set explicitly (and is neither Lorentz-Berthelot's nor any rule's) is generated with
OpenMM, mapped one bead per molecule (bead types named after the molecule types) and fitted; the three
pair forces give back sigma and epsilon of A-A, B-B and the cross pair A-B.

Single-site molecules make the CG forces the exact atomic forces, so the fit has a known answer: the
pair forces themselves (Noid et al. 2008). Only ``thermocg.mscg.fit_pair_potential`` and the fitted
table's ``curve`` are used (the public fit API)."""

from __future__ import annotations

import numpy as np
import pytest

openmm = pytest.importorskip("openmm")

from thermocg.allatom.mixture import Component, CrossInteraction, Mixture  # noqa: E402
from thermocg.allatom.molecules import molecule_from_dict  # noqa: E402
from thermocg.allatom.runner import generate_state  # noqa: E402
from thermocg.config import GenerateConfig, PairConfig  # noqa: E402
from thermocg.dataset import read_frames  # noqa: E402
from thermocg.frames import StatePoint, Topology  # noqa: E402
from thermocg.mapping import build_mapping, map_trajectory  # noqa: E402
from thermocg.mscg import fit_pair_potential  # noqa: E402

CUTOFF_A = 11.0
#: (sigma_A, epsilon_kcal_mol) of the like pairs, and the cross pair set explicitly: Lorentz-Berthelot
#: would give sigma 3.7 A and epsilon 0.310 kcal/mol
LIKE = {"a": (3.4, 0.24), "b": (4.0, 0.40)}
CROSS = (3.5, 0.18)


def atom(name: str, mass_amu: float) -> object:
    sigma, eps = LIKE[name]
    return molecule_from_dict({"name": name, "dispersion_correction": False, "sites": [
        {"name": name.upper(), "mass_amu": mass_amu, "charge_e": 0.0, "sigma_A": sigma, "epsilon_kcal_mol": eps,
         "position_A": [0.0, 0.0, 0.0]}]})


@pytest.fixture(scope="module")
def cg_mixture(tmp_path_factory):
    mixture = Mixture((Component(atom("a", 40.0), 120), Component(atom("b", 84.0), 96)),
                      (CrossInteraction("A", "B", *CROSS),))
    # ~0.0125 particles/A^3 (a dense liquid at these sigmas), T* ~ 1.5 in units of the mean epsilon
    state = StatePoint(250.0, density_g_cm3=1.35, mole_fractions={"a": 120 / 216, "b": 96 / 216})
    settings = GenerateConfig(platform="CPU", n_threads=1, timestep_fs=4.0, friction_per_ps=5.0,
                              npt_equilibration_ps=0.0, equilibration_ps=4.0, production_ps=16.0,
                              save_interval_fs=200.0, thermo_interval_fs=200.0, save_velocities=False,
                              nonbonded_cutoff_A=CUTOFF_A)
    out = tmp_path_factory.mktemp("ljmix") / state.label
    generate_state(mixture, state, settings=settings, seed=17, out_dir=out, progress=False)
    topology = Topology.load(out / "topology.json")
    cg = map_trajectory(out / "traj.h5md", topology, build_mapping(topology), out / "cg.h5md")
    return read_frames(cg)


def test_cg_dataset_has_two_bead_types(cg_mixture):
    assert cg_mixture.type_names == ("a", "b")
    np.testing.assert_array_equal(np.bincount(cg_mixture.types), [120, 96])
    np.testing.assert_allclose(cg_mixture.masses, [40.0] * 120 + [84.0] * 96)
    assert cg_mixture.n_frames == 80 and cg_mixture.potential_energy_kcal_mol is not None


def test_mscg_recovers_like_and_cross_parameters(cg_mixture):
    """F = 0 at 2^(1/6) sigma and U_min = -epsilon for each of the three pairs, the cross pair's being the
    explicit values (1 % and 3 %), not Lorentz-Berthelot's."""
    table = fit_pair_potential(cg_mixture, PairConfig(cutoff_A=CUTOFF_A, spacing_A=0.1, test_fraction=0.0,
                                                      progress=False))
    expected = {(0, 0): LIKE["a"], (1, 1): LIKE["b"], (0, 1): CROSS}
    for (a, b), (sigma, eps) in expected.items():
        r = np.linspace(0.9 * sigma, 1.6 * sigma, 14001)
        u, f = table.curve(r, a, b)
        zero = r[np.argmin(np.abs(f))]
        print(f"pair {a}-{b}: r(F=0) {zero:.4f} A (expected {2 ** (1 / 6) * sigma:.4f}), U_min {u.min():.4f} "
              f"(expected {-eps:.4f}) kcal/mol, sampled from {float(table.r_sampled_min[a, b]):.2f} A")
        assert float(table.r_sampled_min[a, b]) < 0.95 * sigma  # the wall is in the sampled range
        assert zero == pytest.approx(2 ** (1 / 6) * sigma, rel=1e-2)
        assert u.min() == pytest.approx(-eps, rel=3e-2)
    # Lorentz-Berthelot's cross pair would have its force zero at 2^(1/6) x 3.7 = 4.153 A
    r = np.linspace(3.5, 4.6, 11001)
    _, f = table.curve(r, 0, 1)
    assert abs(r[np.argmin(np.abs(f))] - 2 ** (1 / 6) * 3.7) > 0.15


def test_per_type_msd_of_the_mixture(cg_mixture):
    """The same CG dataset through the MSD analysis: one curve per bead type, each the brute-force mean
    over time origins and that type's beads of |R(t0 + lag) - R(t0)|^2 of the unwrapped positions."""
    from thermocg.analysis.msd import MSD

    result = MSD(cg_mixture).run().results
    assert set(result.msd_A2) == {"all", "a", "b"}
    steps = np.diff(cg_mixture.positions, axis=0)
    frac = np.einsum("fnj,fjk->fnk", steps, np.linalg.inv(cg_mixture.box[1:]))
    unwrapped = np.concatenate([cg_mixture.positions[:1], cg_mixture.positions[:1]
                                + np.cumsum(np.einsum("fnk,fkj->fnj", frac - np.round(frac), cg_mixture.box[1:]), 0)])
    for lag in (1, 10, 40):
        displacement = unwrapped[lag:] - unwrapped[:-lag]
        per_bead = (displacement**2).sum(-1).mean(0)
        for t, name in enumerate(("a", "b")):
            assert result.msd_A2[name][lag] == pytest.approx(per_bead[cg_mixture.types == t].mean(), rel=1e-9)
    assert all(result.diffusion_A2_fs[name] > 0 for name in ("a", "b"))
