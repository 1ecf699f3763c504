"""HIP-NN-TS: the hierarchically interacting particle neural network with tensor sensitivity (l <= 2).

Our own implementation of the network of Lubbers et al. (J. Chem. Phys. 148, 241715, 2018) with the
tensor sensitivity of Chigaev et al. (J. Chem. Phys. 158, 184108, 2023), as hippynn 0.1.3 builds it in
``HipnnQuad`` + ``HEnergy``; ``docs/hipnn_ts.md`` states the equations, the weight correspondence and
the performance. It is refereed by hippynn in ``tests/test_hipnn.py`` (same weights, float64; asserted:
energies to 1e-12 relative, forces to 1e-12 kcal/mol/A; measured: 5e-16 and 6e-15).

The forward pass, for beads i with one-hot types x_i (width n_types) and pairs j of i within r_c:

    s_nu(d)  = exp(-1/2 sigma_nu^2 (1/d - 1/mu_nu)^2) * cos^2(pi d / (2 r_c))      d < r_c, else 0
    T_c(r)   = [1 | rhat_x, rhat_y, rhat_z | Q_xx, Q_xy, Q_xz, Q_yy, Q_yz],  Q = rhat rhat^T - I/3
    A[i,c,nu,f] = sum_j T_c(r_ij) s_nu(d_ij) x_j,f                                   (l = 0, 1, 2)
    h[i,c,o]    = sum_{nu,f} A[i,c,nu,f] V[nu,o,f]
    y[i,o] = h_0 + lambda1_o sqrt(sum_a h_a^2 + eps) + lambda2_o sqrt(2 (sum_c h_c^2 + h_xx h_yy) + eps)
             + (W_self x_i + b_self)_o                                               (eps = 1e-6)
    z = W_res softplus(y) + b_res + (W_adj x_i  or  x_i when widths match)           (interaction block)
    z = W'_k softplus(W_k z + b_k) + b'_k + z                     (n_atom_layers residual atom layers)
    E_frame = sum_i sum_l (w_l . z_i^(l) + b_l)     (level 0 = the one-hot input, no bias)

Energies kcal/mol, distances A (sensitivity centres mu in A, widths sigma in A). Forces are -dE/dR by
autograd (:func:`thermocg.potentials.base.energy_and_forces`).

How it is computed. Two code paths give the same numbers to rounding (:attr:`HipnnTS.kernel`):

- the compiled fused kernel (:mod:`thermocg._ext`, CPU): the first block's A comes from one pass over
  the pairs in CSR order (sensitivities, cutoff, tensor components and the neighbour sum together),
  with hand-written backward and double backward, and the l = 1, 2 invariants from a second kernel;
- the PyTorch path (fallback, CUDA, and the referee in the tests): the pairs are laid out as a padded
  (n_beads, K) block per receiving bead (K = the largest neighbour count), and the neighbour sums
  become batched matrix products. In the first block the input is one-hot, so A is the product of the
  (K, 9 * n_types) table of T_c x_j,t with the (K, n_sens) sensitivities: no (pairs, 9 * n_sens *
  features) tensor is ever materialised (hippynn builds and scatters exactly that). Later blocks
  (dense features, on both paths) use a batched product of the (9 * n_sens, K) sensitivity table with
  the (K, F) neighbour features.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as functional

from thermocg._ext import build_info, hipnn_ops
from thermocg.neighbors import Graph
from thermocg.potentials.base import Potential, register

__all__ = ["HipnnTS", "load_hippynn_state_dict", "CUSP_REG"]

#: the regulariser inside the square roots of the l = 1, 2 invariants (hippynn's ``cusp_reg``)
CUSP_REG = 1e-6
#: the values of :attr:`HipnnTS.kernel`
KERNELS = ("auto", "extension", "pytorch")
#: number of tensor components of l = 0, 1, 2: 1 + 3 + 5
N_COMPONENTS = 9


class _PaddedPairs:
    """The pairs within the cutoff, laid out as a padded (n_beads, K) block per receiving bead i.

    ``vec`` (n_beads * K, 3) A holds r_ij (differentiable) at slot i * K + rank, and a constant
    (2 r_c, 0, 0) in the padding; ``dist`` its norm; ``mask`` (n_beads * K,) is 1 for real pairs
    and 0 for padding, so the padding contributes exactly nothing. ``pair_j`` (n_beads * K,) the
    neighbour index (0 in the padding). Built once per graph and shared by every interaction block.
    """

    def __init__(self, graph: Graph, cutoff_A: float) -> None:
        n_beads = graph.positions.shape[0]
        vec = graph.pair_vec
        with torch.no_grad():
            pair_i, pair_j = graph.pair_i, graph.pair_j
            index = None
            if pair_i.numel() and bool((graph.pair_dist >= cutoff_A).any()):  # a skin: drop those pairs
                index = torch.nonzero(graph.pair_dist < cutoff_A).squeeze(1)
                pair_i, pair_j = pair_i[index], pair_j[index]
            if pair_i.numel() > 1 and not bool((pair_i[1:] >= pair_i[:-1]).all()):
                order = torch.argsort(pair_i, stable=True)
                index = order if index is None else index[order]
                pair_i, pair_j = pair_i[order], pair_j[order]
            counts = torch.bincount(pair_i, minlength=n_beads)
            width = max(int(counts.max().item()) if pair_i.numel() else 0, 1)
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.arange(pair_i.numel(), device=pair_i.device) - starts[pair_i]
            slot = pair_i * width + rank
            size = n_beads * width
            self.pair_j = torch.zeros(size, dtype=torch.long, device=pair_j.device).index_put_((slot,), pair_j)
            mask = torch.zeros(size, dtype=vec.dtype, device=vec.device).index_put_((slot,), torch.ones_like(slot, dtype=vec.dtype))
            padding = torch.zeros(size, 3, dtype=vec.dtype, device=vec.device)
            padding[:, 0] = 2.0 * cutoff_A
        if index is not None:
            vec = vec[index]
        self.n_beads = n_beads
        self.width = width
        self.mask = mask
        self.vec = padding.index_put((slot,), vec)
        self.dist = torch.linalg.vector_norm(self.vec, dim=1)


class _PairLayout:
    """The pairs of a graph in the layouts the two code paths want, each built on first use.

    ``csr()``: the fused kernel's (pair vectors sorted by receiving bead, CSR offsets, neighbour
    types); ``padded`` and ``components``: the PyTorch path's padded blocks and their (n_beads * K, 9)
    tensor components, shared by every interaction block.
    """

    def __init__(self, graph: Graph, cutoff_A: float) -> None:
        self.graph = graph
        self.cutoff_A = cutoff_A
        self._padded: _PaddedPairs | None = None
        self._components: torch.Tensor | None = None

    @property
    def padded(self) -> _PaddedPairs:
        if self._padded is None:
            self._padded = _PaddedPairs(self.graph, self.cutoff_A)
        return self._padded

    @property
    def components(self) -> torch.Tensor:
        if self._components is None:
            self._components = _tensor_components(self.padded.vec, self.padded.dist)
        return self._components

    def csr(self, n_types: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(vec (P, 3) sorted by i, offsets (n_beads + 1,), type_j (P,), empty for one type)."""
        graph = self.graph
        vec, pair_i, pair_j, offsets = graph.pair_vec, graph.pair_i, graph.pair_j, graph.row_offsets
        if offsets is None:
            if pair_i.numel() > 1 and not bool((pair_i[1:] >= pair_i[:-1]).all()):
                order = torch.argsort(pair_i, stable=True)
                pair_i, pair_j = pair_i[order], pair_j[order]
                vec = torch.index_select(vec, 0, order)  # differentiable: the forces flow back through it
            counts = torch.bincount(pair_i, minlength=graph.positions.shape[0])
            offsets = torch.zeros(len(counts) + 1, dtype=torch.long, device=counts.device)
            torch.cumsum(counts, 0, out=offsets[1:])
        type_j = graph.types[pair_j] if n_types > 1 else graph.types.new_empty(0)
        return vec, offsets, type_j


def _tensor_components(vec: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """(M, 9): [1, rhat (3), traceless rhat rhat^T - I/3 as xx, xy, xz, yy, yz]."""
    rhat = vec / dist.unsqueeze(1)
    x, y, z = rhat.unbind(1)
    third = 1.0 / 3.0
    ones = torch.ones_like(x)
    return torch.stack([ones, x, y, z, x * x - third, x * y, x * z, y * y - third, y * z], dim=1)


class _GaussianSensitivity(torch.autograd.Function):
    """s[m, nu] = exp(max(-z^2 / 2, floor)) c[m],  z = sigma_nu (1/d_m - 1/mu_nu),  with an analytic backward.

    Inputs: inv_d (M,) 1/A, cut (M,) the cutoff function times the padding mask, inv_mu (n_sens,) 1/A,
    sigma (n_sens,) A, floor (a float). The exponent is floored at ``floor`` (0.7 ln(tiny) of the
    dtype: -61 in float32, -496 in float64): far from its centre a sensitivity is held at ~1e-27
    (float32) instead of entering the denormal range, where exp and every product after it run 10-40x
    slower on x86 CPUs (hippynn pays that); the change is below 1e-26 per sensitivity.

    The backward works from the saved output s alone: dL/dz = -G s z (the floored tail's slope, ~1e-27,
    is kept) and dL/dc = sum_nu G s / c (c > 0 for every real pair: pairs at or beyond the cutoff are
    dropped before, and padding rows have no gradient path). It is written in differentiable torch
    ops on the inputs and the saved output, so forces built with ``create_graph=True`` train correctly
    (gradgradcheck in tests/test_hipnn.py), and makes about two thirds of the passes over the
    (M, n_sens) arrays that autograd of the plain expression (exp, then times the cutoff) makes.
    """

    @staticmethod
    def forward(ctx, inv_d, cut, inv_mu, sigma, floor):  # noqa: D102 - documented on the class
        z = torch.addcmul(-(sigma * inv_mu), inv_d.unsqueeze(1), sigma)
        sens = z.square_().mul_(-0.5).clamp_(min=floor).exp_().mul_(cut.unsqueeze(1))
        ctx.save_for_backward(inv_d, cut, inv_mu, sigma, sens)
        return sens

    @staticmethod
    def backward(ctx, grad_sens):  # noqa: D102
        inv_d, cut, inv_mu, sigma, sens = ctx.saved_tensors
        weighted = grad_sens * sens
        grad_cut = None
        if ctx.needs_input_grad[1]:
            positive = cut > 0
            grad_cut = torch.where(positive, weighted.sum(1) / torch.where(positive, cut, 1.0), 0.0)
        q = weighted * torch.addcmul(-(sigma * inv_mu), inv_d.unsqueeze(1), sigma)  # dL/dz = -q
        column = q.sum(0)
        grad_inv_d = -(q @ sigma)
        grad_inv_mu = sigma * column
        grad_sigma = inv_mu * column - inv_d @ q
        return grad_inv_d, grad_cut, grad_inv_mu, grad_sigma, None


class _FusedLayout:
    """The constant inputs of the fused kernel (everything but the pair vectors and the parameters)."""

    def __init__(self, ops: Any, offsets: torch.Tensor, type_j: torch.Tensor, n_types: int, cutoff_A: float,
                 floor: float) -> None:
        self.ops, self.offsets, self.type_j, self.n_types = ops, offsets, type_j, n_types
        self.cutoff_A, self.floor = cutoff_A, floor


class _FusedEnvironment(torch.autograd.Function):
    """A[i, c, t, nu] = sum_{j of type t} T_c(rhat_ij) s_nu(d_ij), (n_beads, 9, n_types, n_sens), by the C++ kernel.

    Inputs: ``vec`` (P, 3) A sorted by receiving bead, ``inv_mu`` (n_sens,) 1/A, ``sigma`` (n_sens,) A,
    and a :class:`_FusedLayout`. The backward is itself a differentiable Function
    (:class:`_FusedEnvironmentBackward`), so forces built with ``create_graph=True`` can be trained on.
    """

    @staticmethod
    def forward(ctx, vec, inv_mu, sigma, layout):  # noqa: D102 - documented on the class
        ctx.save_for_backward(vec, inv_mu, sigma)
        ctx.layout = layout
        return layout.ops.hipnn_ts_env(vec, layout.offsets, layout.type_j, layout.n_types, inv_mu, sigma,
                                       layout.cutoff_A, layout.floor)

    @staticmethod
    def backward(ctx, grad_env):  # noqa: D102
        vec, inv_mu, sigma = ctx.saved_tensors
        grad_vec, grad_inv_mu, grad_sigma = _FusedEnvironmentBackward.apply(grad_env, vec, inv_mu, sigma, ctx.layout)
        return grad_vec, grad_inv_mu, grad_sigma, None


class _FusedEnvironmentBackward(torch.autograd.Function):
    """(grad_env, vec, inv_mu, sigma) -> (dL/dvec, dL/dinv_mu, dL/dsigma); its backward is the kernel's
    hand-written double backward (tested by gradgradcheck in tests/test_hipnn.py)."""

    @staticmethod
    def forward(ctx, grad_env, vec, inv_mu, sigma, layout):  # noqa: D102
        ctx.save_for_backward(grad_env, vec, inv_mu, sigma)
        ctx.layout = layout
        return layout.ops.hipnn_ts_env_backward(grad_env, vec, layout.offsets, layout.type_j, layout.n_types,
                                                inv_mu, sigma, layout.cutoff_A, layout.floor)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, up_vec, up_inv_mu, up_sigma):  # noqa: D102
        grad_env, vec, inv_mu, sigma = ctx.saved_tensors
        layout = ctx.layout
        need_env = ctx.needs_input_grad[0]
        need_rest = any(ctx.needs_input_grad[1:4])
        outputs = layout.ops.hipnn_ts_env_double_backward(
            grad_env, vec, layout.offsets, layout.type_j, layout.n_types, inv_mu, sigma, layout.cutoff_A,
            layout.floor, up_vec, up_inv_mu, up_sigma, need_env, need_rest)
        grad_grad_env, grad_vec, grad_inv_mu, grad_sigma = outputs
        if not need_rest:
            return grad_grad_env if need_env else None, None, None, None, None
        return grad_grad_env if need_env else None, grad_vec, grad_inv_mu, grad_sigma, None


class _FusedInvariants(torch.autograd.Function):
    """(h_0, vn, qn) = (h_0, sqrt(|h_1..3|^2 + eps), sqrt(2 (|h_4..8|^2 + h_xx h_yy) + eps)), (n, 3, F), by
    the C++ kernel from h (n, 9, F); backward and double backward are kernels too (gradgradcheck in tests)."""

    @staticmethod
    def forward(ctx, h, ops):  # noqa: D102 - documented on the class
        ctx.save_for_backward(h)
        ctx.ops = ops
        return ops.hipnn_ts_invariants(h, CUSP_REG)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (h,) = ctx.saved_tensors
        return _FusedInvariantsBackward.apply(grad, h, ctx.ops), None


class _FusedInvariantsBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, h, ops):  # noqa: D102
        ctx.save_for_backward(grad, h)
        ctx.ops = ops
        return ops.hipnn_ts_invariants_backward(grad, h, CUSP_REG)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, up):  # noqa: D102
        grad, h = ctx.saved_tensors
        need_grad, need_h = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_grad, grad_h = ctx.ops.hipnn_ts_invariants_double_backward(up, grad, h, CUSP_REG, need_grad, need_h)
        return grad_grad if need_grad else None, grad_h if need_h else None, None


def _sensitivity_floor(dtype: torch.dtype) -> float:
    """0.7 ln(tiny): the floor of the sensitivities' exponent (see :class:`_GaussianSensitivity`)."""
    return 0.7 * math.log(torch.finfo(dtype).tiny)


class InteractionTS(torch.nn.Module):
    """One HIP-NN-TS interaction block: tensor-sensitivity interaction + resnet wrapper.

    Parameters (shapes): ``mu``, ``sigma`` (n_sens,) A; ``int_weights`` V (n_sens, F_out, F_in);
    ``vec_scales`` lambda1, ``quad_scales`` lambda2 (F_out,); ``self_interaction`` W_self, b_self;
    ``residual`` W_res, b_res; ``adjust`` W_adj (no bias; only when F_in != F_out).
    """

    def __init__(self, n_in: int, n_out: int, *, n_sensitivities: int, dist_soft_min_A: float,
                 dist_soft_max_A: float, cutoff_A: float, one_hot_input: bool, n_frame_inputs: int = 0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.n_in, self.n_out, self.n_sens = n_in, n_out, n_sensitivities
        self.cutoff_A = float(cutoff_A)
        self.one_hot_input = one_hot_input
        #: the last ``n_frame_inputs`` input features are the same for every bead of a frame (e.g. the
        #: reduced temperature of :class:`thermocg.potentials.thermal_hipnn.TemperatureInputHipnnTS`)
        self.n_frame_inputs = int(n_frame_inputs)
        inverse = torch.linspace(1.0 / dist_soft_max_A, 1.0 / dist_soft_min_A, n_sensitivities, dtype=torch.float64)
        self.mu = torch.nn.Parameter((1.0 / inverse).float())
        self.sigma = torch.nn.Parameter(torch.full((n_sensitivities,), 2.0 * n_sensitivities * dist_soft_min_A))
        self.int_weights = torch.nn.Parameter(torch.empty(n_sensitivities, n_out, n_in))
        self.vec_scales = torch.nn.Parameter(torch.empty(n_out))
        self.quad_scales = torch.nn.Parameter(torch.empty(n_out))
        self.self_interaction = torch.nn.Linear(n_in, n_out)
        self.residual = torch.nn.Linear(n_out, n_out)
        self.adjust = torch.nn.Linear(n_in, n_out, bias=False) if n_in != n_out else None
        with torch.no_grad():
            _xavier_normal(self.int_weights, fan_in=n_out * n_in, fan_out=n_sensitivities * n_in, generator=generator)
            self.vec_scales.normal_(generator=generator)
            self.quad_scales.normal_(generator=generator)
            _xavier_normal(self.self_interaction.weight, generator=generator)
            _linear_default(self.self_interaction, generator=generator, weight=False)
            _linear_default(self.residual, generator=generator)
            if self.adjust is not None:
                _linear_default(self.adjust, generator=generator)

    def sensitivities(self, dist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """s_nu(d) * mask, (M, n_sens); ``dist`` (M,) A, ``mask`` (M,) 1 for pairs, 0 for padding."""
        cut = torch.cos((math.pi / (2.0 * self.cutoff_A)) * dist).square() * mask
        floor = _sensitivity_floor(dist.dtype)
        return _GaussianSensitivity.apply(dist.reciprocal(), cut, self.mu.reciprocal(), self.sigma, floor)

    def environment(self, features: torch.Tensor, pairs: _PairLayout, ops: Any = None) -> torch.Tensor:
        """h[i, c, o] = sum_{nu, f} A[i, c, nu, f] V[nu, o, f], (n_beads, 9, F_out).

        With ``ops`` (the compiled kernels) and a one-hot input, A comes from the fused kernel;
        otherwise from the PyTorch path on the padded layout. Frame-constant input features x_e (the
        last ``n_frame_inputs`` columns; pairs never cross frames, so x_j,e = x_i,e) are added on the
        kernel path as A[i, c, e, nu] = x_i,e sum_t A[i, c, t, nu].
        """
        nu, f_in = self.n_sens, self.n_in
        if ops is not None and self.one_hot_input:
            n_types = f_in - self.n_frame_inputs
            vec, offsets, type_j = pairs.csr(n_types)
            layout = _FusedLayout(ops, offsets, type_j, n_types, self.cutoff_A, _sensitivity_floor(vec.dtype))
            env = _FusedEnvironment.apply(vec, self.mu.reciprocal(), self.sigma, layout)  # (n, 9, T, nu)
            if self.n_frame_inputs:
                frame_inputs = features[:, n_types:].unsqueeze(1).unsqueeze(3)  # (n, 1, E, 1)
                env = torch.cat([env, env.sum(2, keepdim=True) * frame_inputs], dim=2)
            n = env.shape[0]
            weights = self.int_weights.permute(2, 0, 1).reshape(f_in * nu, self.n_out)  # [(t, nu), o]
            return (env.reshape(n * N_COMPONENTS, f_in * nu) @ weights).reshape(n, N_COMPONENTS, self.n_out)
        padded, components = pairs.padded, pairs.components
        sens = self.sensitivities(padded.dist, padded.mask)  # (n K, nu)
        n, k = padded.n_beads, padded.width
        if self.one_hot_input:
            # x_j one-hot: A[i, c, t, nu] = sum_k (T_c x_j,t)[i, k] s_nu[i, k]
            if f_in == 1:
                left = components
            else:
                left = (components.unsqueeze(2) * features[padded.pair_j].unsqueeze(1)).reshape(n * k, N_COMPONENTS * f_in)
            env = torch.bmm(left.reshape(n, k, -1).transpose(1, 2), sens.reshape(n, k, nu))  # (n, 9 T, nu)
            env = env.reshape(n, N_COMPONENTS, f_in, nu).transpose(2, 3)
        else:
            # dense features: A[i, (c, nu), f] = sum_k (T_c s_nu)[i, k] x[j_k, f]
            left = (components.unsqueeze(2) * sens.unsqueeze(1)).reshape(n, k, N_COMPONENTS * nu)
            right = features[padded.pair_j].reshape(n, k, f_in)
            env = torch.bmm(left.transpose(1, 2), right)  # (n, 9 nu, F)
        weights = self.int_weights.permute(0, 2, 1).reshape(nu * f_in, self.n_out)
        return (env.reshape(n * N_COMPONENTS, nu * f_in) @ weights).reshape(n, N_COMPONENTS, self.n_out)

    def forward(self, features: torch.Tensor, pairs: _PairLayout, ops: Any = None) -> torch.Tensor:
        h = self.environment(features, pairs, ops)
        if ops is not None:
            h0, vec_norm, quad_norm = _FusedInvariants.apply(h, ops).unbind(1)
        else:
            h0, h1, h2 = h[:, 0], h[:, 1:4], h[:, 4:9]
            vec_norm = torch.sqrt(h1.square().sum(1) + CUSP_REG)
            quad_norm = torch.sqrt(2.0 * (h2.square().sum(1) + h2[:, 0] * h2[:, 3]) + CUSP_REG)
        y = h0 + self.vec_scales * vec_norm + self.quad_scales * quad_norm + self.self_interaction(features)
        skip = features if self.adjust is None else self.adjust(features)
        return self.residual(functional.softplus(y)) + skip


class AtomLayer(torch.nn.Module):
    """z -> W' softplus(W z + b) + b' + z (a resnet atom layer)."""

    def __init__(self, width: int, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.base = torch.nn.Linear(width, width)
        self.residual = torch.nn.Linear(width, width)
        with torch.no_grad():
            _xavier_normal(self.base.weight, generator=generator)
            _linear_default(self.base, generator=generator, weight=False)
            _linear_default(self.residual, generator=generator)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.residual(functional.softplus(self.base(z))) + z


def _xavier_normal(weight: torch.Tensor, *, fan_in: int | None = None, fan_out: int | None = None,
                   generator: torch.Generator | None = None) -> None:
    if fan_in is None:
        fan_out, fan_in = weight.shape
    std = math.sqrt(2.0 / (fan_in + fan_out))
    weight.normal_(0.0, std, generator=generator)


def _linear_default(layer: torch.nn.Linear, *, generator: torch.Generator | None = None, weight: bool = True) -> None:
    """torch's default Linear initialisation, drawn from an explicit generator."""
    bound = 1.0 / math.sqrt(layer.in_features)
    if weight:
        # kaiming_uniform(a=sqrt(5)) gives the same bound 1/sqrt(fan_in)
        layer.weight.uniform_(-bound, bound, generator=generator)
    if layer.bias is not None:
        layer.bias.uniform_(-bound, bound, generator=generator)


@register
class HipnnTS(Potential):
    """HIP-NN-TS (l <= 2) energy model for CG beads; see the module docstring for the equations.

    Arguments: the bead ``type_names`` (the one-hot input has width n_types), ``n_features`` F per
    layer, ``n_sensitivities`` distance functions with centres initially from ``dist_soft_min_A`` to
    ``dist_soft_max_A`` (evenly spaced in 1/d), the hard ``cutoff_A`` r_c of the cos^2 envelope,
    ``n_interaction_layers`` blocks of ``n_atom_layers`` resnet atom layers each. ``seed`` fixes the
    initial weights (no global random state is touched). Parameters are float32; ``.to(torch.float64)``
    gives a float64 model.

    forward(graph) -> (n_frames,) energies in kcal/mol; pairs at or beyond ``cutoff_A`` contribute
    exactly zero (the graph may carry a skin).

    ``kernel`` (an attribute, not a hyperparameter: both give the same numbers to rounding) chooses
    how the first interaction block is computed: ``"auto"`` (the default) uses the compiled fused
    kernel (:mod:`thermocg._ext`) for CPU tensors when it is available and not disabled by
    ``THERMOCG_NO_EXTENSION=1``, and the PyTorch path otherwise; ``"extension"`` requires the
    kernel (an error if it is unavailable); ``"pytorch"`` always uses the PyTorch path.
    """

    kind = "hipnn_ts"
    #: input features beyond the one-hot types that are constant within a frame (0 here; subclasses
    #: that add one fill them in :meth:`frame_inputs`)
    n_frame_inputs: ClassVar[int] = 0

    def __init__(self, type_names: tuple[str, ...] | list[str], *, n_features: int = 128,
                 n_sensitivities: int = 20, dist_soft_min_A: float = 2.0, dist_soft_max_A: float = 13.0,
                 cutoff_A: float = 15.0, n_interaction_layers: int = 1, n_atom_layers: int = 3,
                 seed: int = 0) -> None:
        super().__init__(type_names, cutoff_A)
        for name, value in (("n_features", n_features), ("n_sensitivities", n_sensitivities),
                            ("n_interaction_layers", n_interaction_layers)):
            if int(value) != value or value < 1:
                raise ValueError(f"HipnnTS: {name} must be a positive integer, got {value!r}")
        if int(n_atom_layers) != n_atom_layers or n_atom_layers < 0:
            raise ValueError(f"HipnnTS: n_atom_layers must be a non-negative integer, got {n_atom_layers!r}")
        if not 0 < dist_soft_min_A < dist_soft_max_A:
            raise ValueError(
                f"HipnnTS: need 0 < dist_soft_min_A < dist_soft_max_A, got {dist_soft_min_A}, {dist_soft_max_A}"
            )
        if dist_soft_max_A > cutoff_A:
            raise ValueError(f"HipnnTS: dist_soft_max_A {dist_soft_max_A} exceeds cutoff_A {cutoff_A}")
        self.n_types = len(self.type_names)
        self.n_features = int(n_features)
        self.n_sensitivities = int(n_sensitivities)
        self.dist_soft_min_A = float(dist_soft_min_A)
        self.dist_soft_max_A = float(dist_soft_max_A)
        self.n_interaction_layers = int(n_interaction_layers)
        self.n_atom_layers = int(n_atom_layers)
        self.seed = int(seed)
        self.kernel = "auto"
        generator = torch.Generator().manual_seed(self.seed)
        widths = [self.n_types + self.n_frame_inputs] + [self.n_features] * self.n_interaction_layers
        self.interactions = torch.nn.ModuleList(
            InteractionTS(widths[k], widths[k + 1], n_sensitivities=self.n_sensitivities,
                          dist_soft_min_A=self.dist_soft_min_A, dist_soft_max_A=self.dist_soft_max_A,
                          cutoff_A=self.cutoff_A, one_hot_input=(k == 0),
                          n_frame_inputs=self.n_frame_inputs if k == 0 else 0, generator=generator)
            for k in range(self.n_interaction_layers)
        )
        self.atom_layers = torch.nn.ModuleList(
            torch.nn.ModuleList(AtomLayer(self.n_features, generator=generator) for _ in range(self.n_atom_layers))
            for _ in range(self.n_interaction_layers)
        )
        self.energy_heads = torch.nn.ModuleList(
            torch.nn.Linear(width, 1, bias=(level > 0)) for level, width in enumerate(widths)
        )
        with torch.no_grad():
            for head in self.energy_heads:
                _linear_default(head, generator=generator)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "type_names": list(self.type_names),
            "n_features": self.n_features,
            "n_sensitivities": self.n_sensitivities,
            "dist_soft_min_A": self.dist_soft_min_A,
            "dist_soft_max_A": self.dist_soft_max_A,
            "cutoff_A": self.cutoff_A,
            "n_interaction_layers": self.n_interaction_layers,
            "n_atom_layers": self.n_atom_layers,
            "seed": self.seed,
        }

    @property
    def kernel(self) -> str:
        """"auto", "extension" or "pytorch" (see the class docstring)."""
        return self._kernel

    @kernel.setter
    def kernel(self, value: str) -> None:
        if value not in KERNELS:
            raise ValueError(f"HipnnTS: kernel must be one of {KERNELS}, got {value!r}")
        self._kernel = value

    def _fused_kernels(self, graph: Graph) -> Any:
        """The compiled kernels when this call should use them (see ``kernel``), else None."""
        if self.kernel == "pytorch":
            return None
        supported = graph.pair_vec.device.type == "cpu" and graph.pair_vec.dtype in (torch.float32, torch.float64)
        if self.kernel == "extension":
            ops = hipnn_ops(warn=False) if supported else None
            if ops is None:
                reason = build_info()["error"] if supported else "CPU float32/float64 tensors only"
                raise RuntimeError(f"HipnnTS: kernel='extension' but the compiled kernel is unavailable ({reason})")
            return ops
        return hipnn_ops() if supported else None

    def frame_inputs(self, graph: Graph) -> torch.Tensor:
        """(N, n_frame_inputs) input features appended to the one-hot types (none here)."""
        raise NotImplementedError(f"{type(self).__name__} declares no frame inputs")

    def features(self, graph: Graph) -> list[torch.Tensor]:
        """The per-bead features of every level, [x0 (one-hot, (N, n_types), then any frame inputs),
        z1, ..., z_n (N, F)]."""
        types = graph.types
        if types.numel() and (int(types.min()) < 0 or int(types.max()) >= self.n_types):
            raise ValueError(
                f"HipnnTS: bead type index {int(types.max())} outside this model's types {list(self.type_names)}"
            )
        dtype = graph.pair_vec.dtype
        x = functional.one_hot(types, self.n_types).to(dtype)
        if self.n_frame_inputs:
            x = torch.cat([x, self.frame_inputs(graph).to(dtype)], dim=1)
        pairs = _PairLayout(graph, self.cutoff_A)
        ops = self._fused_kernels(graph)
        levels = [x]
        for interaction, atom_layers in zip(self.interactions, self.atom_layers):
            x = interaction(x, pairs, ops)
            for layer in atom_layers:
                x = layer(x)
            levels.append(x)
        return levels

    def forward(self, graph: Graph) -> torch.Tensor:
        levels = self.features(graph)
        per_bead = self.energy_heads[0](levels[0])
        for head, z in zip(self.energy_heads[1:], levels[1:]):
            per_bead = per_bead + head(z)
        return graph.frame_sum(per_bead.squeeze(1))


def load_hippynn_state_dict(model: HipnnTS, hippynn_network_state: dict[str, torch.Tensor],
                            energy_state: dict[str, torch.Tensor]) -> HipnnTS:
    """Copy the weights of a hippynn 0.1.3 ``HipnnQuad`` + ``HEnergy`` into ``model`` (in place).

    ``hippynn_network_state`` is the network's ``state_dict()`` (keys ``blocks.B.0.base_layer.*``,
    ``blocks.B.0.res_layer.*``, ``blocks.B.0.adjust_layer.weight``, ``blocks.B.K.base_layer.*``,
    ``blocks.B.K.res_layer.*``), ``energy_state`` the energy head's (``layers.L.weight/bias``). A common
    prefix such as ``moddict.nodeNN.`` (from a saved GraphModule) is stripped. Raises ValueError when a
    key is missing or a shape differs (the models must have the same hyperparameters).
    """
    net = _strip_prefix(hippynn_network_state, "blocks.")
    head = _strip_prefix(energy_state, "layers.")
    mapping: dict[str, torch.Tensor] = {}
    for b in range(model.n_interaction_layers):
        p = f"blocks.{b}.0."
        mapping[f"interactions.{b}.int_weights"] = net[p + "base_layer.int_weights"]
        mapping[f"interactions.{b}.vec_scales"] = net[p + "base_layer.vecscales"]
        mapping[f"interactions.{b}.quad_scales"] = net[p + "base_layer.quadscales"]
        mapping[f"interactions.{b}.mu"] = net[p + "base_layer.sensitivity.mu"].reshape(-1)
        mapping[f"interactions.{b}.sigma"] = net[p + "base_layer.sensitivity.sigma"].reshape(-1)
        mapping[f"interactions.{b}.self_interaction.weight"] = net[p + "base_layer.selfint.weight"]
        mapping[f"interactions.{b}.self_interaction.bias"] = net[p + "base_layer.selfint.bias"]
        mapping[f"interactions.{b}.residual.weight"] = net[p + "res_layer.weight"]
        mapping[f"interactions.{b}.residual.bias"] = net[p + "res_layer.bias"]
        if model.interactions[b].adjust is not None:
            mapping[f"interactions.{b}.adjust.weight"] = net[p + "adjust_layer.weight"]
        for k in range(model.n_atom_layers):
            q = f"blocks.{b}.{k + 1}."
            for ours, theirs in (("base", "base_layer"), ("residual", "res_layer")):
                for field in ("weight", "bias"):
                    mapping[f"atom_layers.{b}.{k}.{ours}.{field}"] = net[f"{q}{theirs}.{field}"]
    for level in range(model.n_interaction_layers + 1):
        mapping[f"energy_heads.{level}.weight"] = head[f"layers.{level}.weight"]
        if level > 0:
            mapping[f"energy_heads.{level}.bias"] = head[f"layers.{level}.bias"]
    own = model.state_dict()
    missing = sorted(set(own) - set(mapping))
    if missing:
        raise ValueError(f"load_hippynn_state_dict: no hippynn weights for {missing}")
    for key, value in mapping.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"load_hippynn_state_dict: {key} has shape {tuple(own[key].shape)} here but "
                f"{tuple(value.shape)} in hippynn (different hyperparameters?)"
            )
    with torch.no_grad():
        for key, value in mapping.items():
            own[key].copy_(value.to(own[key].dtype))
    return model


def _strip_prefix(state: dict[str, torch.Tensor], marker: str) -> dict[str, torch.Tensor]:
    """Keys from ``marker`` on (drops a GraphModule prefix such as ``moddict.nodeNN.``)."""
    out = {}
    for key, value in state.items():
        at = key.find(marker)
        if at >= 0:
            out[key[at:]] = value
    if not out:
        raise ValueError(f"load_hippynn_state_dict: no keys containing {marker!r} in the given state dict")
    return out
