"""Lennard-Jones pair potential: the known answer for tests of training, MD and pair fitting."""

from __future__ import annotations

from typing import Any

import torch

from thermocg.neighbors import Graph
from thermocg.potentials.base import Potential, register


@register
class LennardJones(Potential):
    """Lennard-Jones pairs with a smooth switch to zero at the cutoff.

        u(r) = 4 eps_ab [(sigma_ab / r)^12 - (sigma_ab / r)^6] * S(r)
        S(r) = 1                                  r <= r_s
             = 1 - 10 x^3 + 15 x^4 - 6 x^5       x = (r - r_s) / (r_c - r_s), r_s < r < r_c
             = 0                                  r >= r_c

    with r_s = cutoff_A - switch_width_A (the OpenMM switching polynomial: energy, force and the
    force's derivative are continuous). ``switch_width_A = 0`` gives a plain truncated and shifted
    potential u(r) - u(r_c). ``epsilon_kcal_mol`` and ``sigma_A`` are (n_types, n_types) symmetric
    tables (a scalar for one type). Energy in kcal/mol, r in A. The total energy counts each
    unordered pair once.
    """

    kind = "lennard_jones"

    def __init__(self, type_names: tuple[str, ...] | list[str], *, epsilon_kcal_mol: Any, sigma_A: Any,
                 cutoff_A: float, switch_width_A: float = 1.0) -> None:
        super().__init__(type_names, cutoff_A)
        n = len(self.type_names)
        eps = torch.as_tensor(epsilon_kcal_mol, dtype=torch.float64).expand(n, n).clone()
        sig = torch.as_tensor(sigma_A, dtype=torch.float64).expand(n, n).clone()
        if not (torch.allclose(eps, eps.T) and torch.allclose(sig, sig.T)):
            raise ValueError("LennardJones: epsilon and sigma tables must be symmetric")
        if not 0 <= switch_width_A < cutoff_A:
            raise ValueError("LennardJones: switch_width_A must be in [0, cutoff_A)")
        self.switch_width_A = float(switch_width_A)
        self.register_buffer("epsilon", eps)
        self.register_buffer("sigma", sig)

    def pair_energy(self, r: torch.Tensor, ti: torch.Tensor, tj: torch.Tensor) -> torch.Tensor:
        """u(r) for pairs of types (ti, tj); zero at and beyond the cutoff."""
        eps = self.epsilon[ti, tj]
        sig = self.sigma[ti, tj]
        rc = self.cutoff_A
        inside = r < rc
        r_safe = torch.where(inside, r, torch.full_like(r, rc))
        sr6 = (sig / r_safe) ** 6
        u = 4.0 * eps * (sr6 * sr6 - sr6)
        if self.switch_width_A > 0:
            rs = rc - self.switch_width_A
            x = ((r_safe - rs) / self.switch_width_A).clamp(0.0, 1.0)
            u = u * (1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x * x))
        else:
            src6 = (sig / rc) ** 6
            u = u - 4.0 * eps * (src6 * src6 - src6)
        return torch.where(inside, u, torch.zeros_like(u))

    def forward(self, graph: Graph) -> torch.Tensor:
        u = self.pair_energy(graph.pair_dist, graph.types[graph.pair_i], graph.types[graph.pair_j])
        per_particle = torch.zeros(graph.positions.shape[0], dtype=u.dtype, device=u.device)
        per_particle = per_particle.index_add(0, graph.pair_i, 0.5 * u)  # full list: each pair twice
        return graph.frame_sum(per_particle)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "type_names": list(self.type_names),
            "epsilon_kcal_mol": self.epsilon.tolist(),
            "sigma_A": self.sigma.tolist(),
            "cutoff_A": self.cutoff_A,
            "switch_width_A": self.switch_width_A,
        }
