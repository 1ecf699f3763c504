"""HIP-NN-TS refereed by hippynn 0.1.3, its fused C++ kernel refereed by its PyTorch path, and the
repulsive prior with known answers.

The referee: hippynn's ``HipnnQuad`` + ``HEnergy`` in float64 with randomised weights (sensitivity
centres and widths moved off their initial values too, so that a loader that ignored them would fail),
the same weights copied into ours, the same pair list; energies must agree to 1e-12 relative and
forces to 1e-12 kcal/mol/A (|F| ~ 1; measured: 5e-16 and 6e-15). Every comparison runs on both of
our code paths: the compiled fused kernel (``kernel="extension"``, skipped where it cannot be built;
``test_extension_is_used_where_a_compiler_exists`` makes sure that is not a silent skip on CI) and
the PyTorch path (``kernel="pytorch"``). hippynn runs with its plain (uncompiled) PyTorch
message-passing kernels here: the same arithmetic as its default torch.compile'd ones without ~15 s
of compilation per test.
"""

import os
import shutil

import numpy as np
import pytest
import torch

from thermocg import _ext
from thermocg.frames import Frames
from thermocg.neighbors import Graph, build_graph
from thermocg.potentials import energy_and_forces
from thermocg.potentials.hipnn import HipnnTS, load_hippynn_state_dict
from thermocg.potentials.priors import PriorDataError, RepulsivePrior, derive_repulsive_prior

# hippynn 0.1.3 is a test dependency: imported plainly so that CI fails rather than skips without it
from hippynn import custom_kernels
from hippynn.layers.targets import HEnergy
from hippynn.networks.hipnn import HipnnQuad


def extension_available() -> bool:
    return _ext.hipnn_ops(warn=False) is not None


@pytest.fixture(params=["extension", "pytorch"])
def kernel(request):
    """Our two code paths for the first interaction block; the compiled one only where it exists."""
    if request.param == "extension" and not extension_available():
        pytest.skip(f"the compiled kernel is unavailable: {_ext.build_info()['error']}")
    return request.param


def uses_extension(model, graph) -> bool:
    """Whether a forward + backward of ``model`` on ``graph`` ran the compiled kernel (profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        torch.autograd.grad(model(graph).sum(), graph.positions, retain_graph=True)
    return any(event.name.startswith("thermocg::hipnn_ts_env") for event in prof.events())


@pytest.fixture
def plain_hippynn_kernels():
    previous = custom_kernels.CUSTOM_KERNELS_ACTIVE
    custom_kernels.set_custom_kernels("_pytorch_raw")
    yield
    custom_kernels.set_custom_kernels(previous)


def liquid_like(n_side, density_per_A3, rng, *, tilt=False):
    """n_side^3 beads on a strongly jittered lattice (closest pairs near 2 A), periodic box (3, 3) A."""
    n = n_side**3
    length = (n / density_per_A3) ** (1 / 3)
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    frac = (grid + 0.5 + rng.uniform(-0.3, 0.3, grid.shape)) / n_side
    box = np.eye(3) * length
    if tilt:
        box[1, 0], box[2, 0], box[2, 1] = 0.15 * length, -0.1 * length, 0.1 * length
    return frac @ box, box


def build_pair(type_count, *, n_features, n_sensitivities, soft_min, soft_max, cutoff, n_interaction, n_atom, seed):
    torch.manual_seed(seed)  # hippynn initialises from torch's global generator
    net = HipnnQuad(n_features=n_features, n_sensitivities=n_sensitivities, dist_soft_min=soft_min,
                    dist_soft_max=soft_max, dist_hard_max=cutoff, n_atom_layers=n_atom,
                    n_interaction_layers=n_interaction, n_input_features=type_count).double()
    head = HEnergy(net.feature_sizes).double()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in net.interaction_layers:
            layer.sensitivity.mu.mul_(1 + 0.1 * torch.rand(layer.sensitivity.mu.shape, generator=generator, dtype=torch.float64))
            layer.sensitivity.sigma.mul_(0.5 + torch.rand(layer.sensitivity.sigma.shape, generator=generator, dtype=torch.float64))
        head.layers[0].weight.normal_(generator=generator)
    ours = HipnnTS([f"T{k}" for k in range(type_count)], n_features=n_features, n_sensitivities=n_sensitivities,
                   dist_soft_min_A=soft_min, dist_soft_max_A=soft_max, cutoff_A=cutoff,
                   n_interaction_layers=n_interaction, n_atom_layers=n_atom).to(torch.float64)
    load_hippynn_state_dict(ours, net.state_dict(), head.state_dict())
    return net, head, ours


def compare_with_hippynn(net, head, ours, positions, box, types):
    """Energies and forces of ours and hippynn's on the same pair graph; positions (F, N, 3)."""
    pos = torch.tensor(positions, requires_grad=True)
    graph = build_graph(pos, torch.as_tensor(box), torch.as_tensor(types), ours.cutoff_A)
    energy = ours(graph)
    (grad,) = torch.autograd.grad(energy.sum(), pos)
    pos_h = torch.tensor(positions, requires_grad=True)
    graph_h = build_graph(pos_h, torch.as_tensor(box), torch.as_tensor(types), ours.cutoff_A)
    one_hot = torch.nn.functional.one_hot(graph_h.types, ours.n_types).double()
    features = net(one_hot, graph_h.pair_i, graph_h.pair_j, graph_h.pair_dist, graph_h.pair_vec)
    energy_h = head(features, graph_h.batch, graph_h.n_frames)[0].squeeze(1)
    (grad_h,) = torch.autograd.grad(energy_h.sum(), pos_h)
    return energy.detach(), -grad, energy_h.detach(), -grad_h, len(graph.pair_i)


def test_reference_hyperparameters_have_118954_parameters():
    model = HipnnTS(["MeOH"])
    assert sum(p.numel() for p in model.parameters()) == 118_954
    net = HipnnQuad(n_features=128, n_sensitivities=20, dist_soft_min=2.0, dist_soft_max=13.0, dist_hard_max=15.0,
                    n_atom_layers=3, n_interaction_layers=1, n_input_features=1)
    head = HEnergy(net.feature_sizes)
    assert sum(p.numel() for p in [*net.parameters(), *head.parameters()]) == 118_954
    assert model.dtype == torch.float32


@pytest.mark.usefixtures("plain_hippynn_kernels")
def test_matches_hippynn_at_reference_hyperparameters(kernel):
    """512 beads of 1-bead methanol density (0.0128 /A^3), 128 features, 20 sensitivities, r_c 15 A."""
    rng = np.random.default_rng(1)
    pos, box = liquid_like(8, 0.0128, rng)
    net, head, ours = build_pair(1, n_features=128, n_sensitivities=20, soft_min=2.0, soft_max=13.0, cutoff=15.0,
                                 n_interaction=1, n_atom=3, seed=11)
    ours.kernel = kernel
    e, f, e_h, f_h, n_pairs = compare_with_hippynn(net, head, ours, pos[None], box, np.zeros(len(pos), dtype=int))
    assert n_pairs > 80_000
    assert torch.abs(f_h).max() > 0.1  # a non-trivial field of forces
    np.testing.assert_allclose(e.numpy(), e_h.numpy(), rtol=1e-12)
    np.testing.assert_allclose(f.numpy(), f_h.numpy(), atol=1e-12, rtol=0)


@pytest.mark.usefixtures("plain_hippynn_kernels")
def test_matches_hippynn_with_two_types_and_two_interaction_layers(kernel):
    """Two frames of 512 beads in a triclinic box, two bead types, two interaction blocks (12 features, r_c 8 A)."""
    rng = np.random.default_rng(2)
    frames = [liquid_like(8, 0.0128, rng, tilt=True) for _ in range(2)]
    positions = np.stack([p for p, _ in frames])
    box = np.stack([b for _, b in frames])
    types = rng.integers(0, 2, positions.shape[1])
    net, head, ours = build_pair(2, n_features=12, n_sensitivities=8, soft_min=2.0, soft_max=7.0, cutoff=8.0,
                                 n_interaction=2, n_atom=2, seed=12)
    ours.kernel = kernel
    e, f, e_h, f_h, _ = compare_with_hippynn(net, head, ours, positions, box, types)
    assert e.shape == (2,) and abs(e[0] - e[1]) > 1e-3
    np.testing.assert_allclose(e.numpy(), e_h.numpy(), rtol=1e-12)
    np.testing.assert_allclose(f.numpy(), f_h.numpy(), atol=1e-12, rtol=0)


def test_hippynn_loader_strips_graph_prefixes_and_rejects_other_shapes():
    torch.manual_seed(0)
    net = HipnnQuad(n_features=8, n_sensitivities=4, dist_soft_min=2.0, dist_soft_max=5.0, dist_hard_max=6.0,
                    n_atom_layers=1, n_interaction_layers=1, n_input_features=1)
    head = HEnergy(net.feature_sizes)
    prefixed = {f"moddict.node7.{k}": v for k, v in net.state_dict().items()}
    model = load_hippynn_state_dict(HipnnTS(["A"], n_features=8, n_sensitivities=4, dist_soft_min_A=2.0,
                                            dist_soft_max_A=5.0, cutoff_A=6.0, n_atom_layers=1),
                                    prefixed, {f"moddict.node9.{k}": v for k, v in head.state_dict().items()})
    torch.testing.assert_close(model.interactions[0].int_weights, net.blocks[0][0].base_layer.int_weights)
    with pytest.raises(ValueError, match="different hyperparameters"):
        load_hippynn_state_dict(HipnnTS(["A"], n_features=16, n_sensitivities=4, dist_soft_min_A=2.0,
                                        dist_soft_max_A=5.0, cutoff_A=6.0, n_atom_layers=1),
                                net.state_dict(), head.state_dict())


def test_seeded_initialisation_and_bad_hyperparameters():
    a, b, c = (HipnnTS(["A"], n_features=8, seed=s) for s in (1, 1, 2))
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], rtol=0, atol=0)
    assert not torch.equal(a.interactions[0].int_weights, c.interactions[0].int_weights)
    with pytest.raises(ValueError, match="dist_soft_max_A"):
        HipnnTS(["A"], dist_soft_max_A=20.0, cutoff_A=15.0)
    with pytest.raises(ValueError, match="n_features"):
        HipnnTS(["A"], n_features=0)


# --------------------------------------------------------------------------------------- the prior


def test_prior_force_is_strength_at_taper_minus_dr():
    """Two beads: each ordered-pair term gives strength at t - dr and perc * strength at t."""
    taper, strength, dr, perc = 3.2, 5.0, 0.15, 0.05
    prior = RepulsivePrior(["A"], taper_A=taper, strength_kcal_mol_A=strength, dr_A=dr, perc=perc)
    a = np.log(1 / perc) / dr
    assert prior.cutoff_A == pytest.approx(taper + np.log(perc / 1e-6) / a)
    box = np.eye(3) * 20.0
    for d, expected_term_force in ((taper - dr, strength), (taper, perc * strength)):
        pos = np.array([[1.0, 1.0, 1.0], [1.0 + d, 1.0, 1.0]])
        e, f = energy_and_forces(prior, pos, box, np.zeros(2, dtype=int))
        # both ordered pairs (i, j) and (j, i) carry the term; the shifted-force tail moves it by <= 1e-6 * strength
        assert f[0, 1, 0].item() == pytest.approx(2 * expected_term_force, abs=3e-6 * strength)
        assert f[0, 0, 0].item() == pytest.approx(-f[0, 1, 0].item(), rel=1e-12)
        assert e.item() == pytest.approx(2 * strength * perc / a * np.exp(a * (taper - d)), abs=1e-5)


def rock_salt_frames(spacing_A, n_side, *, shift, rng):
    """A simple cubic lattice with alternating types (A-B nearest at a, A-A at sqrt(2) a) and forces of
    magnitude 2 on A beads and 4 on B beads, in random directions."""
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    types = grid.sum(1) % 2
    positions = (grid + 0.5) * spacing_A + shift
    directions = rng.normal(size=(2, len(grid), 3))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    forces = directions * np.where(types == 0, 2.0, 4.0)[None, :, None]
    return Frames(positions=np.stack([positions, positions + 0.3]), box=np.eye(3) * spacing_A * n_side,
                  types=types, type_names=("A", "B"), masses=np.full(len(grid), 32.0), forces=forces)


def test_derive_prior_from_known_rdf_onsets_and_force_scales():
    rng = np.random.default_rng(0)
    spacing = 3.7
    frames = [rock_salt_frames(spacing, 6, shift=s, rng=rng) for s in (0.0, 1.1)]
    prior = derive_repulsive_prior(frames, threshold=0.01)
    assert prior.type_names == ("A", "B")
    taper = prior.taper.numpy()
    bin_width = 0.05
    assert taper[0, 1] == taper[1, 0] == pytest.approx(spacing, abs=bin_width)
    assert taper[0, 0] == pytest.approx(np.sqrt(2) * spacing, abs=bin_width)
    assert taper[1, 1] == pytest.approx(np.sqrt(2) * spacing, abs=bin_width)
    np.testing.assert_allclose(prior.strength.numpy(), [[2.0, 3.0], [3.0, 4.0]], rtol=1e-12)


def test_derive_prior_bad_input():
    rng = np.random.default_rng(0)
    frames = rock_salt_frames(3.7, 4, shift=0.0, rng=rng)
    no_forces = Frames(positions=frames.positions, box=frames.box, types=frames.types,
                       type_names=frames.type_names, masses=frames.masses)
    with pytest.raises(PriorDataError, match="no forces"):
        derive_repulsive_prior([no_forces])
    with pytest.raises(PriorDataError, match="never come within"):
        derive_repulsive_prior([frames], r_max_A=3.0)
    with pytest.raises(PriorDataError, match="no frames"):
        derive_repulsive_prior([])
    with pytest.raises(ValueError, match="symmetric"):
        RepulsivePrior(["A", "B"], taper_A=[[3.0, 3.1], [3.2, 3.0]], strength_kcal_mol_A=1.0)


def test_prior_rdf_agrees_with_the_rdf_analysis():
    """Peer check: the prior's pooled partial RDFs and onsets equal thermocg.analysis.rdf's."""
    from thermocg.analysis.rdf import RDF, rdf_onset_A
    from thermocg.potentials.priors import pair_rdfs

    rng = np.random.default_rng(5)
    positions = np.stack([liquid_like(6, 0.0128, rng)[0] for _ in range(3)])
    box = liquid_like(6, 0.0128, rng)[1]
    types = rng.integers(0, 2, positions.shape[1])
    frames = Frames(positions=positions, box=box, types=types, type_names=("A", "B"),
                    masses=np.full(positions.shape[1], 32.0), forces=rng.normal(size=positions.shape))
    r, g = pair_rdfs([frames], ("A", "B"), r_max_A=8.0, bin_width_A=0.05)
    reference = RDF(frames, r_max_A=8.0, bin_width_A=0.05).run().results
    np.testing.assert_allclose(r, reference.r_A, atol=1e-12)
    onsets = rdf_onset_A(reference, threshold=0.01)
    prior = derive_repulsive_prior([frames], r_max_A=8.0)
    for a, name_a in enumerate("AB"):
        for b, name_b in enumerate("AB"):
            key = f"{name_a}-{name_b}" if f"{name_a}-{name_b}" in reference.g else f"{name_b}-{name_a}"
            np.testing.assert_allclose(0.5 * (g[a, b] + g[b, a]), reference.g[key], atol=1e-9)
            assert prior.taper[a, b].item() == pytest.approx(onsets[key], abs=1e-12)


def test_sensitivity_function_first_and_second_derivatives():
    from thermocg.potentials.hipnn import _GaussianSensitivity

    rng = np.random.default_rng(3)
    inv_d = torch.tensor(1.0 / rng.uniform(2.0, 12.0, 40), requires_grad=True)
    inv_mu = torch.tensor(1.0 / np.linspace(2.0, 13.0, 5), requires_grad=True)
    sigma = torch.tensor(rng.uniform(5.0, 40.0, 5), requires_grad=True)
    cut = torch.tensor(rng.uniform(0.05, 1.0, 40), requires_grad=True)

    def sens(a, c, b, s):
        return _GaussianSensitivity.apply(a, c, b, s, 0.7 * np.log(np.finfo(np.float64).tiny))

    assert torch.autograd.gradcheck(sens, (inv_d, cut, inv_mu, sigma))
    assert torch.autograd.gradgradcheck(sens, (inv_d, cut, inv_mu, sigma))
    # the plain expression, for the values
    z = sigma * (inv_d[:, None] - inv_mu)
    plain = torch.exp(-0.5 * z.square()) * cut[:, None]
    torch.testing.assert_close(sens(inv_d, cut, inv_mu, sigma), plain, rtol=1e-12, atol=0)
    # a padding row (cut = 0, constant) gives zeros and no NaN anywhere in the gradients
    cut0 = torch.cat([cut.detach()[:-1], torch.zeros(1)])
    out = sens(inv_d, cut0, inv_mu, sigma)
    assert torch.all(out[-1] == 0)
    grads = torch.autograd.grad(out.square().sum(), (inv_d, inv_mu, sigma))
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.usefixtures("plain_hippynn_kernels")
def test_force_matching_gradients_match_hippynn(kernel):
    """d(force loss)/d(weights) through create_graph forces: ours equals hippynn's (float64)."""
    rng = np.random.default_rng(4)
    pos, box = liquid_like(5, 0.0128, rng)
    target = torch.as_tensor(rng.normal(size=pos.shape))
    net, head, ours = build_pair(1, n_features=8, n_sensitivities=6, soft_min=2.0, soft_max=8.0, cutoff=9.0,
                                 n_interaction=1, n_atom=1, seed=13)
    ours.kernel = kernel
    types = torch.zeros(len(pos), dtype=torch.long)

    def loss_of(energy_fn):
        p = torch.tensor(pos, requires_grad=True)
        graph = build_graph(p, torch.as_tensor(box), types, 9.0)
        (grad,) = torch.autograd.grad(energy_fn(graph).sum(), p, create_graph=True)
        return (-grad - target).square().mean()

    loss_of(ours).backward()
    loss_of(lambda g: head(net(torch.ones(len(pos), 1, dtype=torch.float64), g.pair_i, g.pair_j, g.pair_dist,
                               g.pair_vec), g.batch, 1)[0]).backward()
    theirs = net.blocks[0][0].base_layer
    mine = ours.interactions[0]
    torch.testing.assert_close(mine.int_weights.grad, theirs.int_weights.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mine.mu.grad, theirs.sensitivity.mu.grad.reshape(-1), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mine.sigma.grad, theirs.sensitivity.sigma.grad.reshape(-1), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mine.quad_scales.grad, theirs.quadscales.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ours.energy_heads[1].weight.grad, head.layers[1].weight.grad, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ the fused kernel and its fallback


def fused_environment(n_types, *, seed, at_cutoff=False):
    """The fused environment as a function of (vec, inv_mu, sigma) on 6 beads x 4 pairs, float64, with
    one pair beyond the cutoff (and, with ``at_cutoff``, one exactly at it, where the function is only
    once differentiable); such pairs must contribute nothing."""
    from thermocg.potentials.hipnn import _FusedEnvironment, _FusedLayout, _sensitivity_floor

    rng = np.random.default_rng(seed)
    n_beads, per_bead, cutoff = 6, 4, 6.0
    vec = rng.normal(size=(n_beads * per_bead, 3)) * 2.5
    vec[3] = [7.0, 0.0, 0.0]
    if at_cutoff:
        vec[9] = [0.0, cutoff, 0.0]
    offsets = torch.arange(0, n_beads * per_bead + 1, per_bead)
    type_j = (torch.as_tensor(rng.integers(0, n_types, n_beads * per_bead)) if n_types > 1
              else torch.empty(0, dtype=torch.long))
    inputs = (torch.tensor(vec, requires_grad=True),
              torch.tensor(1.0 / np.linspace(2.0, 5.0, 4), requires_grad=True),
              torch.tensor(rng.uniform(3.0, 10.0, 4), requires_grad=True))
    layout = _FusedLayout(_ext.hipnn_ops(warn=False), offsets, type_j, n_types, cutoff,
                          _sensitivity_floor(torch.float64))
    return (lambda v, inv_mu, sigma: _FusedEnvironment.apply(v, inv_mu, sigma, layout)), inputs


@pytest.mark.parametrize("n_types", [1, 3])
def test_fused_kernel_first_and_second_derivatives(n_types):
    """gradcheck and gradgradcheck (float64) of the kernel's backward and hand-written double backward
    with respect to the pair vectors, 1/mu and sigma; pairs at or beyond r_c give exactly zero."""
    if not extension_available():
        pytest.skip("the compiled kernel is unavailable")
    function, inputs = fused_environment(n_types, seed=n_types)
    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)
    function, inputs = fused_environment(n_types, seed=n_types, at_cutoff=True)
    env = function(*inputs)
    assert env.shape == (6, 9, n_types, 4) and env.abs().max() > 1e-3
    (grad_vec,) = torch.autograd.grad(env.square().sum(), inputs[0])
    assert torch.all(grad_vec[[3, 9]] == 0)
    # the first bead's row by hand: sum over its pairs of T_c(rhat) s_nu(d)
    vec, inv_mu, sigma = (x.detach() for x in inputs)
    d = vec[:4].norm(dim=1, keepdim=True)
    sens = torch.exp(-0.5 * (sigma * (1 / d - inv_mu)) ** 2) * torch.cos(np.pi * d / 12.0) ** 2 * (d < 6.0)
    rhat = vec[:4] / d
    x, y, z = rhat.unbind(1)
    components = torch.stack([torch.ones_like(x), x, y, z, x * x - 1 / 3, x * y, x * z, y * y - 1 / 3, y * z], 1)
    torch.testing.assert_close(env[0].sum(1), components.T @ sens, rtol=1e-13, atol=1e-15)


def test_fused_invariants_and_their_derivatives():
    """(h_0, |h_1..3|, traceless-tensor norm) by the kernel equal the PyTorch expressions; gradcheck
    and gradgradcheck of its backward and double backward (float64)."""
    from thermocg.potentials.hipnn import CUSP_REG, _FusedInvariants

    if not extension_available():
        pytest.skip("the compiled kernel is unavailable")
    h = torch.randn(4, 9, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    function = lambda x: _FusedInvariants.apply(x, _ext.hipnn_ops(warn=False))  # noqa: E731
    assert torch.autograd.gradcheck(function, (h,))
    assert torch.autograd.gradgradcheck(function, (h,))
    h1, h2 = h[:, 1:4], h[:, 4:9]
    expected = torch.stack([h[:, 0], torch.sqrt(h1.square().sum(1) + CUSP_REG),
                            torch.sqrt(2.0 * (h2.square().sum(1) + h2[:, 0] * h2[:, 3]) + CUSP_REG)], 1)
    torch.testing.assert_close(function(h), expected, rtol=1e-14, atol=0)


def perturbed_model(n_types, n_interaction, *, seed=2, cutoff=9.0):
    model = HipnnTS([f"T{k}" for k in range(n_types)], n_features=16, n_sensitivities=7, cutoff_A=cutoff,
                    dist_soft_max_A=cutoff - 1.0, n_interaction_layers=n_interaction, seed=seed).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return model


def energy_forces_and_loss_gradients(model, positions, box, types, target, *, pairs=None, graph_of=None):
    pos = torch.tensor(positions, requires_grad=True)
    graph = build_graph(pos, torch.as_tensor(box), types, model.cutoff_A + 1.0, pairs=pairs)  # a 1 A skin
    if graph_of is not None:
        graph = graph_of(graph)
    energy = model(graph)
    (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=True)
    loss = (-grad - target).square().mean()
    params = list(model.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return energy.detach(), -grad.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


@pytest.mark.parametrize("n_types,n_interaction", [(1, 1), (2, 2), (3, 1)])
def test_fused_kernel_matches_the_pytorch_path(n_types, n_interaction):
    """Energies, forces and force-matching weight gradients (second order) of the two paths agree in
    float64 to 1e-12, for one and several bead types, a triclinic box, a skin and a batch of frames."""
    if not extension_available():
        pytest.skip("the compiled kernel is unavailable")
    rng = np.random.default_rng(n_types + 10 * n_interaction)
    frames = [liquid_like(6, 0.0128, rng, tilt=True) for _ in range(2)]
    positions = np.stack([p for p, _ in frames])
    box = np.stack([b for _, b in frames])
    types = torch.as_tensor(rng.integers(0, n_types, positions.shape[1]))
    target = torch.as_tensor(rng.normal(size=positions.shape))
    model = perturbed_model(n_types, n_interaction)
    results = {}
    for kernel in ("pytorch", "extension"):
        model.kernel = kernel
        results[kernel] = energy_forces_and_loss_gradients(model, positions, box, types, target)
    (e_t, f_t, g_t), (e_x, f_x, g_x) = results["pytorch"], results["extension"]
    assert f_t.abs().max() > 0.1
    torch.testing.assert_close(e_x, e_t, rtol=1e-12, atol=0)
    torch.testing.assert_close(f_x, f_t, rtol=0, atol=1e-12)
    for mine, reference in zip(g_x, g_t):
        torch.testing.assert_close(mine, reference, rtol=1e-10, atol=1e-14 * float(reference.abs().max()) + 1e-300)


def test_fused_kernel_takes_pairs_in_any_order_and_float32():
    """A graph whose pairs are shuffled (no CSR offsets) gives the same result; float32 forces agree
    with float64 to the float32 rounding of the pair vectors (the PyTorch path does no better)."""
    if not extension_available():
        pytest.skip("the compiled kernel is unavailable")
    rng = np.random.default_rng(5)
    positions, box = liquid_like(6, 0.0128, rng, tilt=True)
    types = torch.as_tensor(rng.integers(0, 2, len(positions)))
    target = torch.zeros(1, len(positions), 3, dtype=torch.float64)
    model = perturbed_model(2, 1)
    model.kernel = "extension"
    e, f, grads = energy_forces_and_loss_gradients(model, positions[None], box, types, target)
    order = torch.as_tensor(rng.permutation(1000 * 60))

    def shuffled(graph):
        keep = order[order < len(graph.pair_i)]
        return Graph(positions=graph.positions, types=graph.types, batch=graph.batch, n_frames=graph.n_frames,
                     n_particles=graph.n_particles, pair_i=graph.pair_i[keep], pair_j=graph.pair_j[keep],
                     pair_vec=graph.pair_vec[keep])

    e_s, f_s, grads_s = energy_forces_and_loss_gradients(model, positions[None], box, types, target,
                                                         graph_of=shuffled)
    torch.testing.assert_close(e_s, e, rtol=1e-13, atol=0)
    torch.testing.assert_close(f_s, f, rtol=0, atol=1e-13)
    for mine, reference in zip(grads_s, grads):
        torch.testing.assert_close(mine, reference, rtol=1e-11, atol=1e-300)
    errors = {}
    for kernel in ("extension", "pytorch"):
        model32 = perturbed_model(2, 1).float()
        model32.kernel = kernel
        _, f32 = energy_and_forces(model32, positions, box, types)
        errors[kernel] = float((f32.double() - f).abs().max() / f.abs().max())
    assert errors["extension"] < 1e-5
    assert errors["extension"] < 2.0 * errors["pytorch"] + 1e-7


def test_fused_kernel_results_do_not_depend_on_the_thread_count():
    if not extension_available():
        pytest.skip("the compiled kernel is unavailable")
    function, inputs = fused_environment(2, seed=7)
    before = torch.get_num_threads()
    outputs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            env = function(*inputs)
            outputs.append([env, *torch.autograd.grad(env.square().sum(), inputs)])
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*outputs):
        assert torch.equal(one, two)


def test_extension_is_used_where_a_compiler_exists():
    """Where a C++ compiler exists (CI, every development machine here) the compiled kernel must build
    and be the one HipnnTS runs by default: a failed build must not fall back unnoticed."""
    if _ext.extension_disabled():
        pytest.skip(f"{_ext.DISABLE_ENV} is set")
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler on this machine: the PyTorch path is expected")
    assert extension_available(), f"the compiled kernel failed to build: {_ext.build_info()}"
    rng = np.random.default_rng(0)
    positions, box = liquid_like(4, 0.0128, rng)
    model = HipnnTS(["A"], n_features=8, n_sensitivities=4, cutoff_A=6.0, dist_soft_max_A=5.0)
    graph = build_graph(torch.tensor(positions, dtype=torch.float32, requires_grad=True),
                        torch.as_tensor(box, dtype=torch.float32), torch.zeros(64, dtype=torch.long), 6.0)
    assert model.kernel == "auto" and uses_extension(model, graph)


def test_no_extension_variable_and_kernel_choice(monkeypatch):
    rng = np.random.default_rng(0)
    positions, box = liquid_like(4, 0.0128, rng)
    model = HipnnTS(["A"], n_features=8, n_sensitivities=4, cutoff_A=6.0, dist_soft_max_A=5.0).double()
    graph = build_graph(torch.tensor(positions, requires_grad=True), torch.as_tensor(box),
                        torch.zeros(64, dtype=torch.long), 6.0)
    model.kernel = "pytorch"
    assert not uses_extension(model, graph)
    with pytest.raises(ValueError, match="kernel must be one of"):
        model.kernel = "fast"
    monkeypatch.setenv(_ext.DISABLE_ENV, "1")
    model.kernel = "auto"
    assert not uses_extension(model, graph)
    model.kernel = "extension"
    with pytest.raises(RuntimeError, match="unavailable"):
        model(graph)


def test_an_unavailable_extension_warns_once_and_falls_back(monkeypatch):
    """As on a machine without a compiler: one warning, then the PyTorch path, same numbers."""
    rng = np.random.default_rng(0)
    positions, box = liquid_like(4, 0.0128, rng)
    model = HipnnTS(["A"], n_features=8, n_sensitivities=4, cutoff_A=6.0, dist_soft_max_A=5.0).double()
    pos = torch.tensor(positions)[None]
    reference = energy_and_forces(model, pos, box, torch.zeros(64, dtype=torch.long))
    monkeypatch.delenv(_ext.DISABLE_ENV, raising=False)
    monkeypatch.setattr(_ext, "_loaded", {"ops": None, "path": None, "error": "RuntimeError: no compiler (test)",
                                          "tried": True, "warned": False})
    with pytest.warns(RuntimeWarning, match="no compiler") as record:
        first = energy_and_forces(model, pos, box, torch.zeros(64, dtype=torch.long))
        second = energy_and_forces(model, pos, box, torch.zeros(64, dtype=torch.long))
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    for result in (first, second):
        torch.testing.assert_close(result[0], reference[0], rtol=1e-12, atol=0)
        torch.testing.assert_close(result[1], reference[1], rtol=0, atol=1e-12)
