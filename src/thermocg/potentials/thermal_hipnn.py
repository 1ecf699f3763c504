"""Temperature-dependent HIP-NN-TS: the potential of mean force W(R; T) as a network of R and T.

A force-matched CG potential is a potential of mean force, W(R; T) = U_E(R) - T S(R) (docs/temperature.md).
Two kinds carry the temperature T (K), set by :meth:`~thermocg.potentials.base.Potential.set_temperature`
(MD sets it from its thermostat), through the reduced temperature

    tau = (T - T_ref) / T_ref                    (T_ref: ``reference_temperature_K``, a hyperparameter)

``hipnn_ts_thermal`` (:class:`ThermalHipnnTS`): W linear in T, with two energy heads on one network,

    W(R; T) = E_0(R) + tau E_1(R),    E_k = sum_i sum_l (w_l^(k) . z_i^(l) + b_l^(k))

where z^(l) are the features of every level of one HIP-NN-TS trunk (the one-hot input, then each
interaction block; docs/hipnn_ts.md) and (w^(0), b^(0)), (w^(1), b^(1)) are two hierarchical linear
energy heads. Then, exactly,

    F(R; T) = F_0 + tau F_1   (F_k = -grad E_k),    S(R) = -dW/dT = -E_1 / T_ref,
    U_E(R) = W + T S = E_0 - E_1   (the energetic part; W at T = 0),    -T S = (T / T_ref) E_1.

Why two linear heads on a shared trunk (and not a second network or two head MLPs): the trunk's
last atom layers already give each bead a nonlinear description of its environment, which both parts
need; hippynn's hierarchical energy head is linear on those features, and so is the second one. At a
fixed T the two heads collapse into one with weights w^(0) + tau w^(1) (:meth:`ThermalHipnnTS.forward`
adds them before the product), so an MD step costs what the temperature-agnostic model's costs, and
the fused-kernel trunk is the same code. The thermal heads start at zero: a fresh model is today's
``hipnn_ts`` with the same seed (same trunk, same E_0 head, E_1 = 0), bit for bit, at every T.

``hipnn_ts_tinput`` (:class:`TemperatureInputHipnnTS`): tau as one more input feature of every bead,
appended to its one-hot type; W(R; T) is then any smooth function of tau (the natural baseline). The
feature is the same for every bead of a frame, so in the first interaction block its environment sum is
tau_i times the sum over neighbour types, and the fused kernel still computes the rest.

Both kinds refuse to be evaluated before a temperature is set, and keep T_ref (a hyperparameter), the
valid range (the training temperatures) and the extrapolation limit in the model header.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as functional

from thermocg.neighbors import Graph
from thermocg.potentials.base import register
from thermocg.potentials.hipnn import HipnnTS

__all__ = ["ThermalHipnnTS", "TemperatureInputHipnnTS"]


class _ReducedTemperature:
    """T_ref, the valid range and tau = (T - T_ref) / T_ref, shared by the two temperature-dependent kinds."""

    def _init_temperature(self, reference_temperature_K: float,
                          valid_temperature_range_K: tuple[float, float] | list[float] | None,
                          max_temperature_extrapolation_K: float | None) -> None:
        name = type(self).__name__
        try:
            reference = float(reference_temperature_K)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: reference_temperature_K must be a number, got {reference_temperature_K!r}") \
                from None
        if not (math.isfinite(reference) and reference > 0):
            raise ValueError(f"{name}: reference_temperature_K must be positive, got {reference_temperature_K}")
        self.reference_temperature_K = reference
        if valid_temperature_range_K is not None:
            low, high = (float(x) for x in valid_temperature_range_K)
            if not 0 < low <= high:
                raise ValueError(f"{name}: valid_temperature_range_K must be (T_min, T_max) with 0 < T_min <= T_max, "
                                 f"got {valid_temperature_range_K}")
            self.valid_temperature_range_K = (low, high)
        if max_temperature_extrapolation_K is not None and not max_temperature_extrapolation_K >= 0:
            raise ValueError(f"{name}: max_temperature_extrapolation_K must be non-negative, "
                             f"got {max_temperature_extrapolation_K}")
        self.max_temperature_extrapolation_K = max_temperature_extrapolation_K

    def reduced_temperature(self) -> float:
        """tau = (T - T_ref) / T_ref at the set temperature (a TemperatureNotSetError when none is set)."""
        return (self.require_temperature() - self.reference_temperature_K) / self.reference_temperature_K


@register
class ThermalHipnnTS(_ReducedTemperature, HipnnTS):
    """HIP-NN-TS with an energy head and a thermal head: W(R; T) = E_0(R) + (T - T_ref) / T_ref E_1(R).

    The arguments are those of :class:`~thermocg.potentials.hipnn.HipnnTS` (same trunk, same ``seed``
    draws, so the trunk and the E_0 head equal a ``HipnnTS``'s of that seed) plus
    ``reference_temperature_K`` T_ref (K, a hyperparameter: part of the functional form), and the
    header settings ``valid_temperature_range_K`` (T_min, T_max) and ``max_temperature_extrapolation_K``.
    The thermal heads (``thermal_heads``, one per level like ``energy_heads``) start at zero.

    forward(graph) -> (n_frames,) W at the set temperature, kcal/mol; :meth:`energy_parts` gives
    (E_0, E_1) without a temperature. See the module docstring for S(R) and U_E(R).
    """

    kind = "hipnn_ts_thermal"
    temperature_dependent = True

    def __init__(self, type_names: tuple[str, ...] | list[str], *, reference_temperature_K: float,
                 valid_temperature_range_K: tuple[float, float] | list[float] | None = None,
                 max_temperature_extrapolation_K: float | None = None, **hipnn_ts: Any) -> None:
        super().__init__(type_names, **hipnn_ts)
        self._init_temperature(reference_temperature_K, valid_temperature_range_K, max_temperature_extrapolation_K)
        self.thermal_heads = torch.nn.ModuleList(
            torch.nn.Linear(head.in_features, 1, bias=head.bias is not None) for head in self.energy_heads
        )
        with torch.no_grad():
            for head in self.thermal_heads:
                head.weight.zero_()
                if head.bias is not None:
                    head.bias.zero_()

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "reference_temperature_K": self.reference_temperature_K}

    def forward(self, graph: Graph) -> torch.Tensor:
        """W(R; T) per frame at the set temperature; the heads are combined (w0 + tau w1) before the product."""
        tau = self.reduced_temperature()
        per_bead = None
        for head, thermal, z in zip(self.energy_heads, self.thermal_heads, self.features(graph)):
            bias = None if head.bias is None else head.bias + tau * thermal.bias
            term = functional.linear(z, head.weight + tau * thermal.weight, bias)
            per_bead = term if per_bead is None else per_bead + term
        return graph.frame_sum(per_bead.squeeze(1))

    def energy_parts(self, graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_0, E_1), each (n_frames,) kcal/mol, from one pass of the trunk (no temperature needed).

        W(T) = E_0 + tau E_1; U_E = E_0 - E_1; S = -E_1 / T_ref (kcal/mol/K).
        """
        return self.head_energies(graph, self.features(graph))

    def head_energies(self, graph: Graph, levels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_0, E_1) per frame of the two heads on given per-level features (see :meth:`features`)."""
        energy = thermal = None
        for head, head_1, z in zip(self.energy_heads, self.thermal_heads, levels):
            e, t = head(z), head_1(z)
            energy = e if energy is None else energy + e
            thermal = t if thermal is None else thermal + t
        return graph.frame_sum(energy.squeeze(1)), graph.frame_sum(thermal.squeeze(1))

    def at_temperature(self, temperature_K: float) -> HipnnTS:
        """The temperature-agnostic ``hipnn_ts`` equal to this model at ``temperature_K`` (checked against
        the valid range like :meth:`set_temperature`): the same trunk with heads w0 + tau w1. For engines
        and exports that know no temperature. Same dtype and device."""
        self.set_temperature(temperature_K)
        tau = self.reduced_temperature()
        hyper = {k: v for k, v in super().hyperparameters().items() if k != "type_names"}
        plain = HipnnTS(self.type_names, **hyper).to(dtype=self.dtype, device=self.device)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("thermal_heads.")}
        with torch.no_grad():
            for level, thermal in enumerate(self.thermal_heads):
                state[f"energy_heads.{level}.weight"] = self.energy_heads[level].weight + tau * thermal.weight
                if thermal.bias is not None:
                    state[f"energy_heads.{level}.bias"] = self.energy_heads[level].bias + tau * thermal.bias
        plain.load_state_dict(state, strict=True)
        plain.kernel = self.kernel
        return plain


@register
class TemperatureInputHipnnTS(_ReducedTemperature, HipnnTS):
    """HIP-NN-TS with the reduced temperature tau = (T - T_ref) / T_ref as an input feature of every bead.

    The input of bead i is [one-hot type, tau] (width n_types + 1); everything else is
    :class:`~thermocg.potentials.hipnn.HipnnTS`. Arguments: those of ``HipnnTS`` plus
    ``reference_temperature_K`` (a hyperparameter) and the header settings ``valid_temperature_range_K``
    and ``max_temperature_extrapolation_K``. forward(graph) -> (n_frames,) W(R; T) at the set temperature.
    """

    kind = "hipnn_ts_tinput"
    temperature_dependent = True
    n_frame_inputs = 1

    def __init__(self, type_names: tuple[str, ...] | list[str], *, reference_temperature_K: float,
                 valid_temperature_range_K: tuple[float, float] | list[float] | None = None,
                 max_temperature_extrapolation_K: float | None = None, **hipnn_ts: Any) -> None:
        super().__init__(type_names, **hipnn_ts)
        self._init_temperature(reference_temperature_K, valid_temperature_range_K, max_temperature_extrapolation_K)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "reference_temperature_K": self.reference_temperature_K}

    def frame_inputs(self, graph: Graph) -> torch.Tensor:
        """(N, 1): tau at the set temperature for every bead."""
        positions = graph.positions
        return torch.full((positions.shape[0], 1), self.reduced_temperature(), dtype=positions.dtype,
                          device=positions.device)
