"""HIP-NN-TS refereed by hippynn 0.1.3, and the repulsive prior with known answers.

The referee: hippynn's ``HipnnQuad`` + ``HEnergy`` in float64 with randomised weights (sensitivity
centres and widths moved off their initial values too, so that a loader that ignored them would fail),
the same weights copied into ours, the same pair list; energies must agree to 1e-8 relative and
forces to 1e-7 kcal/mol/A. hippynn runs with its plain (uncompiled) PyTorch message-passing kernels
here: the same arithmetic as its default torch.compile'd ones without ~15 s of compilation per test.
"""

import numpy as np
import pytest
import torch

from thermocg.frames import Frames
from thermocg.neighbors import build_graph
from thermocg.potentials import energy_and_forces
from thermocg.potentials.hipnn import HipnnTS, load_hippynn_state_dict
from thermocg.potentials.priors import PriorDataError, RepulsivePrior, derive_repulsive_prior

# hippynn 0.1.3 is a test dependency: imported plainly so that CI fails rather than skips without it
from hippynn import custom_kernels
from hippynn.layers.targets import HEnergy
from hippynn.networks.hipnn import HipnnQuad


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
def test_matches_hippynn_at_reference_hyperparameters():
    """512 beads of 1-bead methanol density (0.0128 /A^3), 128 features, 20 sensitivities, r_c 15 A."""
    rng = np.random.default_rng(1)
    pos, box = liquid_like(8, 0.0128, rng)
    net, head, ours = build_pair(1, n_features=128, n_sensitivities=20, soft_min=2.0, soft_max=13.0, cutoff=15.0,
                                 n_interaction=1, n_atom=3, seed=11)
    e, f, e_h, f_h, n_pairs = compare_with_hippynn(net, head, ours, pos[None], box, np.zeros(len(pos), dtype=int))
    assert n_pairs > 80_000
    assert torch.abs(f_h).max() > 0.1  # a non-trivial field of forces
    np.testing.assert_allclose(e.numpy(), e_h.numpy(), rtol=1e-8)
    np.testing.assert_allclose(f.numpy(), f_h.numpy(), atol=1e-7, rtol=0)


@pytest.mark.usefixtures("plain_hippynn_kernels")
def test_matches_hippynn_with_two_types_and_two_interaction_layers():
    """Two frames of 512 beads in a triclinic box, two bead types, two interaction blocks (12 features, r_c 8 A)."""
    rng = np.random.default_rng(2)
    frames = [liquid_like(8, 0.0128, rng, tilt=True) for _ in range(2)]
    positions = np.stack([p for p, _ in frames])
    box = np.stack([b for _, b in frames])
    types = rng.integers(0, 2, positions.shape[1])
    net, head, ours = build_pair(2, n_features=12, n_sensitivities=8, soft_min=2.0, soft_max=7.0, cutoff=8.0,
                                 n_interaction=2, n_atom=2, seed=12)
    e, f, e_h, f_h, _ = compare_with_hippynn(net, head, ours, positions, box, types)
    assert e.shape == (2,) and abs(e[0] - e[1]) > 1e-3
    np.testing.assert_allclose(e.numpy(), e_h.numpy(), rtol=1e-8)
    np.testing.assert_allclose(f.numpy(), f_h.numpy(), atol=1e-7, rtol=0)


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
def test_force_matching_gradients_match_hippynn():
    """d(force loss)/d(weights) through create_graph forces: ours equals hippynn's (float64)."""
    rng = np.random.default_rng(4)
    pos, box = liquid_like(5, 0.0128, rng)
    target = torch.as_tensor(rng.normal(size=pos.shape))
    net, head, ours = build_pair(1, n_features=8, n_sensitivities=6, soft_min=2.0, soft_max=8.0, cutoff=9.0,
                                 n_interaction=1, n_atom=1, seed=13)
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
