"""The contract every registered potential kind must keep (STYLE.md habit 6).

Parametrised over ``POTENTIAL_FACTORIES``: finite-difference forces, translation / rotation /
permutation invariance, exactly zero contribution from pairs beyond the cutoff (a skin), smooth decay
at the cutoff, frames in a batch independent, save/load round trip (in a fresh process), float32 close
to float64, and clear errors for unknown bead types and model files of another format version.

To add a kind, add one entry to ``POTENTIAL_FACTORIES``: a function of the bead types returning a
float64 potential whose interactions are non-trivial at the densities used here (0.02 beads/A^3).

Kinds that contain a HIP-NN-TS network (``KERNEL_KINDS``) run the suite twice: on the default path
(the compiled fused kernel where it is available) and with ``THERMOCG_NO_EXTENSION=1`` (the PyTorch
path), so that the fallback keeps the same contract.
"""

import importlib
import json
import os
import subprocess
import sys

import warnings

import numpy as np
import pytest
import torch

from helpers import lj_fluid
from thermocg._ext import DISABLE_ENV
from thermocg.neighbors import build_graph, pair_index
from thermocg.potentials import (ModelFileError, SumPotential, TemperatureError, TemperatureNotSetError,
                                 TemperatureRangeError, TemperatureRangeWarning, energy_and_forces, load_potential,
                                 read_model_header, save_potential)
from thermocg.potentials.base import _REGISTRY_MODULES
from thermocg.potentials.hipnn import HipnnTS
from thermocg.potentials.lj import LennardJones
from thermocg.potentials.priors import RepulsivePrior

TYPES = ("A", "B")


def _lennard_jones(types):
    return LennardJones(types, epsilon_kcal_mol=[[0.2, 0.15], [0.15, 0.3]], sigma_A=[[3.4, 3.2], [3.2, 3.0]],
                        cutoff_A=6.0, switch_width_A=1.0)


def _hipnn(types):
    return HipnnTS(types, n_features=12, n_sensitivities=6, dist_soft_min_A=2.0, dist_soft_max_A=5.0, cutoff_A=6.0,
                   n_interaction_layers=2, n_atom_layers=1, seed=3).to(torch.float64)


def _prior(types):
    return RepulsivePrior(types, taper_A=[[3.4, 3.6], [3.6, 3.3]], strength_kcal_mol_A=[[2.0, 3.0], [3.0, 4.0]],
                          dr_A=0.4, perc=0.05)


def _sum(types):
    return SumPotential([_hipnn(types), _prior(types)])


def _pair_table(types):
    from thermocg.potentials.pair import PairTable

    sigma, eps = np.array([[3.4, 3.2], [3.2, 3.0]]), np.array([[0.2, 0.15], [0.15, 0.3]])
    return PairTable.from_force_function(
        types, lambda r, a, b: 24 * eps[a, b] / r * (2 * (sigma[a, b] / r) ** 12 - (sigma[a, b] / r) ** 6),
        cutoff_A=6.0, r_min_A=2.0, spacing_A=0.1, r_sampled_min_A=[[2.9, 2.8], [2.8, 2.6]])


#: the temperature temperature-dependent kinds are evaluated at in the contract tests (inside their range)
CONTRACT_TEMPERATURE_K = 310.0


def _pair_table_thermal(types):
    """F(r; T) = F0 + (T - 300 K) F1 with F1 = F0 / 400 K (epsilon grows by 1/4 per 100 K), at 310 K."""
    from thermocg.potentials.pair import PairTableThermal

    base = _pair_table(types)
    coef = base.coefficients.numpy()
    model = PairTableThermal(types, cutoff_A=6.0, r_min_A=2.0, coefficients=coef, temperature_coefficients=coef / 400.0,
                             reference_temperature_K=300.0, r_sampled_min_A=base.r_sampled_min.numpy(),
                             valid_temperature_range_K=(250.0, 350.0))
    model.set_temperature(CONTRACT_TEMPERATURE_K)
    return model


def _thermal_network(cls, types, **extra):
    """A small two-block network of ``cls`` valid 250-350 K (T_ref 300 K) at CONTRACT_TEMPERATURE_K, with
    every weight (thermal heads too) drawn from a seeded generator so that T changes the forces."""
    model = cls(types, reference_temperature_K=300.0, valid_temperature_range_K=(250.0, 350.0), n_features=12,
                n_sensitivities=6, dist_soft_min_A=2.0, dist_soft_max_A=5.0, cutoff_A=6.0, n_interaction_layers=2,
                n_atom_layers=1, seed=5, **extra).to(torch.float64)
    generator = torch.Generator().manual_seed(11)
    for head in getattr(model, "thermal_heads", ()):
        with torch.no_grad():
            head.weight.copy_(0.5 * torch.randn(head.weight.shape, generator=generator, dtype=torch.float64))
            if head.bias is not None:
                head.bias.fill_(0.1)
    model.set_temperature(CONTRACT_TEMPERATURE_K)
    return model


def _hipnn_thermal(types):
    """hipnn_ts_thermal: W = E_0 + (T - 300 K) / 300 K E_1, both heads non-zero."""
    from thermocg.potentials.thermal_hipnn import ThermalHipnnTS

    return _thermal_network(ThermalHipnnTS, types)


def _hipnn_tinput(types):
    """hipnn_ts_tinput: (T - 300 K) / 300 K as an input feature."""
    from thermocg.potentials.thermal_hipnn import TemperatureInputHipnnTS

    return _thermal_network(TemperatureInputHipnnTS, types)


#: kind -> factory(type_names) -> float64 potential. Keep this a plain dict (other kinds are added here).
#: Temperature-dependent kinds come with their temperature set (CONTRACT_TEMPERATURE_K).
POTENTIAL_FACTORIES = {
    "pair_table_thermal": _pair_table_thermal,
    "pair_table": _pair_table,
    "lennard_jones": _lennard_jones,
    "hipnn_ts": _hipnn,
    "repulsive_prior": _prior,
    "sum": _sum,
    "hipnn_ts_thermal": _hipnn_thermal,
    "hipnn_ts_tinput": _hipnn_tinput,
}

KINDS = sorted(POTENTIAL_FACTORIES)
#: kinds with a HIP-NN-TS network, run on both of its code paths
KERNEL_KINDS = ("hipnn_ts", "sum", "hipnn_ts_thermal", "hipnn_ts_tinput")
CASES = [(k, "default") for k in KINDS] + [(k, "pytorch") for k in KERNEL_KINDS]
#: kinds whose forward() itself rejects a type index it does not know (all reject unknown names
#: through Potential.type_indices; lennard_jones's table lookup raises IndexError instead)
CHECKS_TYPES_IN_FORWARD = {"hipnn_ts", "repulsive_prior", "sum", "hipnn_ts_thermal", "hipnn_ts_tinput"}


def configuration(seed, *, n=125, triclinic=True):
    rng = np.random.default_rng(seed)
    pos, box = lj_fluid(n, 0.02, rng=rng, triclinic=triclinic)
    # a larger jitter than the lattice helper's, so that some pairs sit in the prior's steep range
    pos = pos + rng.normal(0.0, 0.15, pos.shape)
    types = rng.integers(0, 2, n)
    return pos, box, types


def forces_of(potential, pos, box, types, **kwargs):
    e, f = energy_and_forces(potential, torch.as_tensor(pos), torch.as_tensor(box), torch.as_tensor(types), **kwargs)
    return e.numpy(), (None if f is None else f.numpy())


def choose_path(monkeypatch, path):
    if path == "pytorch":
        monkeypatch.setenv(DISABLE_ENV, "1")


@pytest.fixture(params=CASES, ids=[k if p == "default" else f"{k}-{p}" for k, p in CASES])
def kind(request, monkeypatch):
    kind, path = request.param
    choose_path(monkeypatch, path)
    return kind


def test_every_importable_registered_kind_has_a_factory():
    for name, module in _REGISTRY_MODULES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            continue  # that kind's module has not landed yet
        assert name in POTENTIAL_FACTORIES, f"registered kind {name!r} has no entry in POTENTIAL_FACTORIES"


def test_finite_difference_forces(kind):
    potential = POTENTIAL_FACTORIES[kind](TYPES)
    pos, box, types = configuration(1)
    energy, forces = forces_of(potential, pos, box, types)
    # central differences: truncation O(h^2) plus round-off of the total energy, ~eps |E| / h
    roundoff = 100 * np.finfo(np.float64).eps * abs(energy[0]) / 1e-5
    assert np.abs(forces).max() > 1e-3, "forces vanish: the configuration does not exercise this potential"
    rng = np.random.default_rng(7)
    # the beads with the largest forces plus a few random ones, each Cartesian direction
    beads = list(np.argsort(-np.abs(forces[0]).max(1))[:3]) + list(rng.choice(len(pos), 3, replace=False))
    h = 1e-5
    for bead in beads:
        for axis in range(3):
            plus, minus = pos.copy(), pos.copy()
            plus[bead, axis] += h
            minus[bead, axis] -= h
            e_plus, _ = forces_of(potential, plus, box, types, compute_forces=False)
            e_minus, _ = forces_of(potential, minus, box, types, compute_forces=False)
            numeric = -(e_plus[0] - e_minus[0]) / (2 * h)
            assert numeric == pytest.approx(forces[0, bead, axis], rel=1e-5, abs=1e-7 + roundoff)


def test_translation_and_rotation_invariance(kind):
    potential = POTENTIAL_FACTORIES[kind](TYPES)
    pos, box, types = configuration(2)
    e, f = forces_of(potential, pos, box, types)
    # translation, then wrapping every bead back into the cell
    shifted = pos + np.array([3.3, -7.1, 11.9])
    frac = shifted @ np.linalg.inv(box)
    wrapped = (frac - np.floor(frac)) @ box
    e_t, f_t = forces_of(potential, wrapped, box, types)
    np.testing.assert_allclose(e_t, e, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(f_t, f, atol=1e-9)
    # a rotation of positions and cell together
    angle, axis = 0.7, np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    e_r, f_r = forces_of(potential, pos @ rotation.T, box @ rotation.T, types)
    np.testing.assert_allclose(e_r, e, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(f_r[0], f[0] @ rotation.T, atol=1e-9)


def test_permutation_of_beads(kind):
    potential = POTENTIAL_FACTORIES[kind](TYPES)
    pos, box, types = configuration(3)
    e, f = forces_of(potential, pos, box, types)
    perm = np.random.default_rng(0).permutation(len(pos))
    e_p, f_p = forces_of(potential, pos[perm], box, types[perm])
    np.testing.assert_allclose(e_p, e, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(f_p[0], f[0][perm], atol=1e-10)


def test_pairs_beyond_the_cutoff_contribute_exactly_zero(kind):
    """A list built with a 1.5 A skin gives the same energy and forces as the exact list."""
    potential = POTENTIAL_FACTORIES[kind](TYPES)
    pos, box, types = configuration(4)
    pos_t, box_t = torch.as_tensor(pos)[None], torch.as_tensor(box)[None]
    skin_pairs = pair_index(pos_t, box_t, potential.cutoff_A + 1.5)
    exact_pairs = pair_index(pos_t, box_t, potential.cutoff_A)
    assert len(skin_pairs.pair_i) > len(exact_pairs.pair_i)
    e, f = forces_of(potential, pos, box, types, pairs=exact_pairs)
    e_s, f_s = forces_of(potential, pos, box, types, pairs=skin_pairs)
    np.testing.assert_allclose(e_s, e, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(f_s, f, atol=1e-12)


def test_smooth_decay_at_the_cutoff(kind):
    """Two beads: energy and force are continuous at r_c, for every type pair."""
    potential = POTENTIAL_FACTORIES[kind](TYPES)
    rc = potential.cutoff_A
    box = np.eye(3) * (2.5 * rc + 1.0)
    for pair_types in ([0, 0], [0, 1], [1, 1]):
        types = np.array(pair_types)

        def energy_force(d):
            pos = np.array([[0.0, 0.0, 0.0], [d, 0.0, 0.0]])
            e, f = forces_of(potential, pos, box, types)
            return e[0], f[0, 1, 0]

        e_far, f_far = energy_force(rc + 0.5)
        assert f_far == 0.0
        scan = [energy_force(d) for d in np.linspace(0.5 * rc, rc, 40)[:-1]]
        e_scale = max(abs(e - e_far) for e, _ in scan)
        f_scale = max(abs(f) for _, f in scan)
        assert f_scale > 1e-6, "no interaction over the scan; the check would be empty"
        for delta, tol in ((1e-2, 2e-2), (1e-3, 2e-3)):
            e_in, f_in = energy_force(rc - delta)
            e_out, f_out = energy_force(rc + delta)
            assert f_out == 0.0 and e_out == e_far  # exactly nothing beyond the cutoff
            assert abs(e_in - e_out) <= tol * delta * f_scale + 1e-12 * e_scale
            assert abs(f_in) <= tol * f_scale


def test_frames_in_a_batch_are_independent(kind):
    potential = POTENTIAL_FACTORIES[kind](TYPES)
    configs = [configuration(10 + k) for k in range(3)]
    types = configs[0][2]
    pos = np.stack([c[0] for c in configs])
    box = np.stack([c[1] * (1.0 + 0.02 * k) for k, c in enumerate(configs)])
    e_batch, f_batch = forces_of(potential, pos, box, types)
    for k in range(3):
        e_k, f_k = forces_of(potential, pos[k], box[k], types)
        np.testing.assert_allclose(e_batch[k], e_k[0], rtol=1e-12, atol=1e-11)
        np.testing.assert_allclose(f_batch[k], f_k[0], atol=1e-11)


def test_float32_close_to_float64(kind):
    potential = POTENTIAL_FACTORIES[kind](TYPES)
    pos, box, types = configuration(5)
    e64, f64 = forces_of(potential, pos, box, types)
    potential32 = potential.to(torch.float32)
    assert potential32.dtype == torch.float32
    e32, f32 = forces_of(potential32, pos, box, types)
    assert f32.dtype == np.float32
    assert abs(e32[0] - e64[0]) <= 1e-5 * max(1.0, abs(e64[0])) + 1e-4 * np.abs(f64).sum() * 1e-2
    np.testing.assert_allclose(f32, f64, atol=2e-4 * np.abs(f64).max())


@pytest.mark.parametrize("path", ["default", "pytorch"])
def test_save_load_round_trip_in_a_fresh_process(tmp_path, monkeypatch, path):
    choose_path(monkeypatch, path)  # the fresh process inherits the choice
    pos, box, types = configuration(6)
    np.save(tmp_path / "pos.npy", pos)
    np.save(tmp_path / "box.npy", box)
    np.save(tmp_path / "types.npy", types)
    expected = {}
    for kind in KINDS:
        potential = POTENTIAL_FACTORIES[kind](TYPES)
        path = save_potential(potential, tmp_path / f"{kind}.safetensors", provenance={"test": kind})
        _, expected[kind] = forces_of(potential, pos, box, types)
        loaded = load_potential(path)
        assert type(loaded) is type(potential) and loaded.hyperparameters() == potential.hyperparameters()
        if loaded.temperature_dependent:  # the temperature is a setting of a run, not saved
            assert loaded.temperature_K is None
            loaded.set_temperature(CONTRACT_TEMPERATURE_K)
        np.testing.assert_array_equal(forces_of(loaded, pos, box, types)[1], expected[kind])
    code = f"""
import numpy as np, torch
from thermocg.potentials import load_potential, energy_and_forces
d = {str(tmp_path)!r}
pos, box, types = (np.load(f"{{d}}/{{n}}.npy") for n in ("pos", "box", "types"))
for kind in {KINDS!r}:
    p = load_potential(f"{{d}}/{{kind}}.safetensors")
    if p.temperature_dependent:
        p.set_temperature({CONTRACT_TEMPERATURE_K!r})
    np.save(f"{{d}}/f_{{kind}}.npy", energy_and_forces(p, pos, box, types)[1].numpy())
"""
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for kind in KINDS:
        np.testing.assert_array_equal(np.load(tmp_path / f"f_{kind}.npy"), expected[kind])


def test_unknown_bead_type_is_a_clear_error(kind):
    potential = POTENTIAL_FACTORIES[kind](TYPES)
    with pytest.raises(ValueError, match="bead type 'C' is unknown"):
        potential.type_indices(("A", "C"), np.array([0, 1]))
    if kind not in CHECKS_TYPES_IN_FORWARD:
        return
    pos, box, _ = configuration(7, n=27)
    graph = build_graph(torch.as_tensor(pos), torch.as_tensor(box), torch.full((27,), 2), potential.cutoff_A)
    with pytest.raises(ValueError, match="type"):
        potential(graph)


def test_model_file_of_another_format_version_is_a_clear_error(tmp_path, kind):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    path = save_potential(POTENTIAL_FACTORIES[kind](TYPES), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    meta["format_version"] = "99"
    tensors = load_file(str(path))
    save_file(tensors, str(tmp_path / "future.safetensors"), metadata=meta)
    with pytest.raises(ModelFileError, match=r"future\.safetensors.*format version 99"):
        load_potential(tmp_path / "future.safetensors")
    json.loads(meta["description"])  # the description stays readable JSON


# --------------------------------------------------------------------------------------------------
# the temperature part of the protocol (every kind; the dependent ones in detail)
# --------------------------------------------------------------------------------------------------

DEPENDENT_KINDS = sorted(k for k in KINDS if POTENTIAL_FACTORIES[k](TYPES).temperature_dependent)


@pytest.fixture(params=DEPENDENT_KINDS)
def dependent_kind(request):
    return request.param


def test_temperature_dependent_kinds_exist():
    assert "pair_table_thermal" in DEPENDENT_KINDS
    assert {"hipnn_ts_thermal", "hipnn_ts_tinput"} <= set(DEPENDENT_KINDS)


def test_agnostic_kinds_ignore_the_temperature(kind):
    potential = POTENTIAL_FACTORIES[kind](TYPES)
    if potential.temperature_dependent:
        return
    pos, box, types = configuration(8)
    e, f = forces_of(potential, pos, box, types)
    potential.set_temperature(900.0)  # far from anything: no range, no check, no effect
    assert potential.temperature_K == 900.0
    e_t, f_t = forces_of(potential, pos, box, types)
    np.testing.assert_array_equal(f_t, f)
    np.testing.assert_array_equal(e_t, e)
    assert "temperature" not in potential.describe()


def test_dependent_kind_needs_a_temperature(dependent_kind):
    potential = POTENTIAL_FACTORIES[dependent_kind](TYPES)
    pos, box, types = configuration(8)
    potential.set_temperature(None)
    with pytest.raises(TemperatureNotSetError, match="temperature-dependent.*no temperature is set"):
        forces_of(potential, pos, box, types)


def test_dependent_kind_forces_change_with_temperature(dependent_kind):
    potential = POTENTIAL_FACTORIES[dependent_kind](TYPES)
    pos, box, types = configuration(8)
    low, high = potential.valid_temperature_range_K
    potential.set_temperature(low)
    _, f_low = forces_of(potential, pos, box, types)
    potential.set_temperature(high)
    _, f_high = forces_of(potential, pos, box, types)
    assert np.abs(f_high - f_low).max() > 1e-3 * np.abs(f_low).max()


def test_dependent_kind_range_warning_and_error(dependent_kind, tmp_path):
    potential = POTENTIAL_FACTORIES[dependent_kind](TYPES)
    path = save_potential(potential, tmp_path / "model.safetensors")
    loaded = load_potential(path)
    low, high = loaded.valid_temperature_range_K
    limit = loaded.extrapolation_limit_K()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded.set_temperature(high)  # inside: silent
    with pytest.warns(TemperatureRangeWarning, match=r"model\.safetensors.*outside.*valid temperature range"):
        loaded.set_temperature(high + 0.5 * limit)
    assert loaded.temperature_K == high + 0.5 * limit
    with pytest.raises(TemperatureRangeError, match=rf"model\.safetensors.*\[{low:g}, {high:g}\] K"):
        loaded.set_temperature(low - 2.0 * limit - 1.0)
    assert loaded.temperature_K == high + 0.5 * limit  # a refused temperature is not set
    loaded.max_temperature_extrapolation_K = 1.0e4  # configurable
    with pytest.warns(TemperatureRangeWarning, match="allowed up to 10000 K"):
        loaded.set_temperature(low - 2.0 * limit - 1.0)
    with pytest.raises(TemperatureError, match="positive"):
        loaded.set_temperature(-5.0)


def test_dependent_kind_header_holds_reference_and_range(dependent_kind, tmp_path):
    potential = POTENTIAL_FACTORIES[dependent_kind](TYPES)
    potential.max_temperature_extrapolation_K = 20.0
    path = save_potential(potential, tmp_path / "model.safetensors")
    block = read_model_header(path)["description"]["temperature"]
    assert block == {"dependent": True, "reference_K": potential.reference_temperature_K,
                     "valid_range_K": list(potential.valid_temperature_range_K), "max_extrapolation_K": 20.0}
    loaded = load_potential(path)
    assert loaded.reference_temperature_K == potential.reference_temperature_K
    assert loaded.valid_temperature_range_K == potential.valid_temperature_range_K
    assert loaded.extrapolation_limit_K() == 20.0
    # a dependent model without its valid range is not saved
    potential.valid_temperature_range_K = None
    with pytest.raises(ValueError, match="valid temperature range"):
        save_potential(potential, tmp_path / "no_range.safetensors")
    assert not (tmp_path / "no_range.safetensors").exists()


def test_sum_forwards_the_temperature(dependent_kind, tmp_path):
    dependent = POTENTIAL_FACTORIES[dependent_kind](TYPES)
    total = SumPotential([dependent, _prior(TYPES)])
    assert total.temperature_dependent
    assert total.valid_temperature_range_K == dependent.valid_temperature_range_K
    assert total.reference_temperature_K == dependent.reference_temperature_K
    pos, box, types = configuration(9)
    low, high = dependent.valid_temperature_range_K
    for temperature in (low, high):
        total.set_temperature(temperature)
        assert dependent.temperature_K == temperature
        _, f_sum = forces_of(total, pos, box, types)
        _, f_parts = forces_of(dependent, pos, box, types)
        _, f_prior = forces_of(_prior(TYPES), pos, box, types)
        np.testing.assert_allclose(f_sum, f_parts + f_prior, atol=1e-10)
    loaded = load_potential(save_potential(total, tmp_path / "sum.safetensors"))
    assert loaded.temperature_dependent and loaded.valid_temperature_range_K == (low, high)
    with pytest.raises(TemperatureNotSetError, match=r"sum\.safetensors"):
        forces_of(loaded, pos, box, types)
    with pytest.raises(TemperatureRangeError, match=r"sum\.safetensors"):
        loaded.set_temperature(high + 10.0 * (high - low))
