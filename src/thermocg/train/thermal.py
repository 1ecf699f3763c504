"""Training of the temperature-dependent kinds: each state's temperature, energy matching, thermal response.

The derivations are in docs/temperature.md ("Temperature-dependent HIP-NN-TS"); in short, for a model
W(R; T) = E_0(R) + tau E_1(R), tau = (T - T_ref) / T_ref (``hipnn_ts_thermal``), and a frame at the
temperature T of its state s with mapped all-atom forces f (kcal/mol/A) and potential energy u (kcal/mol):

- force matching at the frame's temperature: F(R; T) = F_0 + tau F_1 against f (the loss of
  :func:`thermocg.train.force_loss`); batches hold frames of one state, so one temperature, set on the
  model (:meth:`~thermocg.potentials.base.Potential.set_temperature`) before the batch;
- energy matching (Lebold & Noid 2019): U_E(R) = E_0 - E_1 is the conditional mean of u at R (up to a
  constant per state, the free energy of the integrated-out degrees of freedom), so

      d_E = (U_E(R) + c_s - u) / s_E,    loss_E = mean d_E^2

  with one learnt offset c_s per state (kcal/mol; started at the mean of u - U_E over the state's
  training frames) and s_E the energy scale;
- thermal response (Sahrmann et al. 2026): d<f>_R / d beta = -Cov_R(f, u), so with the linear model
  T_ref dF/dT = F_1 and

      y = (T_ref / (k_B T^2)) (f - F(R; T)) (u - U(R)),    E[y | R] = F_1(R) + (T_ref / k_B T^2) (F - F_hat)(U - U_hat),
      d_R = (F_1(R) - y) / s_F,    loss_R = mean d_R^2

  where F(R; T) and U(R) are the model's own current estimates, held fixed in the target (detached):
  U = U_E + c_s when energy matching is on, else the state's mean energy. The bias is the product of
  the errors of the mean force and of the conditional mean energy, so the estimator is consistent.

Both extra terms are mean squares whatever ``train.loss`` is: only a squared loss regresses onto a
conditional mean, which is what both estimators rely on (an absolute loss would give the median); and
not the root, see :meth:`ThermalTraining.combine`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from thermocg import units
from thermocg.config import TrainConfig
from thermocg.neighbors import Graph, build_graph
from thermocg.potentials.base import Potential, SumPotential, energy_and_forces
from thermocg.train.data import StateData, TrainError, TrainWarning

#: the network kind of each ``train.temperature_dependence``
NETWORK_KINDS = {"none": "hipnn_ts", "linear": "hipnn_ts_thermal", "input": "hipnn_ts_tinput"}


def uses_energies(config: TrainConfig) -> bool:
    """Whether the fit needs the frames' all-atom potential energies (energy matching or thermal response)."""
    return config.energy_weight > 0 or config.thermal_response_weight > 0


def training_temperatures(states: Sequence[StateData]) -> list[float]:
    """The distinct temperatures (K) of the states, sorted; a TrainError naming a state without one."""
    missing = [s.label for s in states if s.temperature_K is None]
    if missing:
        raise TrainError(f"training data, state {missing[0]}: no temperature (the frames carry no state point); a "
                         "temperature-dependent model needs each state's temperature")
    return sorted({float(s.temperature_K) for s in states})


def resolve_temperature(config: TrainConfig, resolved: TrainConfig, states: Sequence[StateData]) -> None:
    """Fill the temperature choices of ``resolved`` (in place) from the prepared states.

    - one training temperature without energy terms: a :class:`TrainWarning`, and
      ``temperature_dependence`` becomes "none" (today's ``hipnn_ts``: E_1 cannot be learnt);
    - one temperature with energy terms: ``max_temperature_extrapolation_K`` must be given (the model is
      a first-order expansion about that temperature);
    - ``reference_temperature_K``: the mean temperature of the training frames when None;
    - energy terms: every state must carry finite energies; ``energy_scale_kcal_mol`` from the data.
    """
    if config.temperature_dependence == "none":
        return
    temperatures = training_temperatures(states)
    if len(temperatures) == 1 and not uses_energies(config):
        warnings.warn(
            f"train: every training frame is at one temperature ({temperatures[0]:g} K), which cannot give the "
            f"temperature dependence of temperature_dependence: {config.temperature_dependence}; training the "
            "temperature-agnostic hipnn_ts (train states at two or more temperatures, or give energies and set "
            "train.energy_weight or train.thermal_response_weight)", TrainWarning, stacklevel=4)
        resolved.temperature_dependence = "none"
        resolved.reference_temperature_K = resolved.max_temperature_extrapolation_K = None
        return
    if len(temperatures) == 1 and config.max_temperature_extrapolation_K is None:
        raise TrainError(
            f"train: every training frame is at {temperatures[0]:g} K, so the fitted temperature dependence is a "
            "first-order expansion about that temperature; set train.max_temperature_extrapolation_K (how far from "
            f"{temperatures[0]:g} K the model may be used)")
    if resolved.reference_temperature_K is None:
        weights = np.array([len(s.train) for s in states], dtype=np.float64)
        resolved.reference_temperature_K = float(np.dot(weights, [s.temperature_K for s in states]) / weights.sum())
    _resolve_energies(config, resolved, states)


def adopt_temperature_range(resolved: TrainConfig, potential: Potential, states: Sequence[StateData]) -> None:
    """For a given temperature-dependent ``potential`` (``Trainer(potential=...)``): its valid range becomes
    the training temperatures' when it has none; the energy choices are resolved as for a built model."""
    if not potential.temperature_dependent:
        return
    temperatures = training_temperatures(states)
    if potential.valid_temperature_range_K is None:
        potential.valid_temperature_range_K = (temperatures[0], temperatures[-1])
    _resolve_energies(resolved, resolved, states)


def _resolve_energies(config: TrainConfig, resolved: TrainConfig, states: Sequence[StateData]) -> None:
    """Every state has finite energies when the energy terms are on; the energy scale from the data."""
    if uses_energies(config):
        for s in states:
            if s.potential_energy is None:
                raise TrainError(f"training data, state {s.label}: no all-atom potential energies "
                                 "(potential_energy_kcal_mol), which train.energy_weight and "
                                 "train.thermal_response_weight need; generate or import the data with energies")
            if not np.all(np.isfinite(s.potential_energy)):
                bad = int(np.argwhere(~np.isfinite(s.potential_energy))[0, 0])
                raise TrainError(f"training data, state {s.label}: potential energy of frame {bad} is NaN or inf")
        if resolved.energy_scale_kcal_mol is None:
            resolved.energy_scale_kcal_mol = energy_scale(states)


def energy_scale(states: Sequence[StateData]) -> float:
    """The RMS fluctuation of the training frames' energies about their state's mean, pooled, kcal/mol
    (1 when they do not fluctuate)."""
    squares, count = 0.0, 0
    for s in states:
        u = s.potential_energy[s.train]
        squares += float(np.sum((u - u.mean()) ** 2))
        count += len(u)
    scale = math.sqrt(squares / max(count, 1))
    return scale if scale > 0 else 1.0


@contextmanager
def state_temperature(potential: Potential, state: StateData) -> Iterator[None]:
    """Evaluate a temperature-dependent ``potential`` at ``state``'s temperature inside the block (agnostic
    potentials are left alone); the previous temperature is restored afterwards."""
    if not potential.temperature_dependent:
        yield
        return
    if state.temperature_K is None:
        raise TrainError(f"state {state.label}: no temperature, and the {potential.kind} model is temperature-dependent")
    before = potential.temperature_K
    with warnings.catch_warnings():  # training temperatures are inside the range by construction
        warnings.simplefilter("ignore")
        potential.set_temperature(state.temperature_K)
    try:
        yield
    finally:
        potential._temperature_K = before
        for term in getattr(potential, "terms", ()):
            term._temperature_K = before


def energy_parts(potential: Potential, graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
    """(E_0, E_1) per frame of a potential linear in tau (W = E_0 + tau E_1): a ``hipnn_ts_thermal``, or a
    sum of one with temperature-agnostic terms (which belong to E_0)."""
    parts = getattr(potential, "energy_parts", None)
    if parts is not None:
        return parts(graph)
    if isinstance(potential, SumPotential):
        e0 = e1 = None
        for term in potential.terms:
            a, b = energy_parts(term, graph)
            e0 = a if e0 is None else e0 + a
            e1 = b if e1 is None else e1 + b
        return e0, e1
    if potential.temperature_dependent:
        raise TrainError(f"energy matching and the thermal response need a model linear in the reduced temperature "
                         f"(hipnn_ts_thermal); a {potential.kind} term has no energy parts")
    energy = potential(graph)
    return energy, torch.zeros_like(energy)


def thermal_predictions(potential: Potential, positions: torch.Tensor, box: torch.Tensor, types: np.ndarray, *,
                        tau: float, with_f1: bool, create_graph: bool) -> dict[str, torch.Tensor | None]:
    """One pass of a linear-in-tau model over a batch: ``W`` and ``U_E`` (n_frames,) kcal/mol, the forces
    ``F`` = -grad W at tau and, with ``with_f1``, ``F1`` = -grad E_1 (n_frames, n_beads, 3) kcal/mol/A.

    ``create_graph``: keep the graph for a loss on these (training); otherwise everything is detached.
    """
    positions = positions.detach().requires_grad_(True)
    types_t = torch.as_tensor(types, dtype=torch.long, device=positions.device)
    with torch.enable_grad():
        graph = build_graph(positions, box, types_t, potential.cutoff_A)
        e0, e1 = energy_parts(potential, graph)
        w = e0 + tau * e1
        # the graph stays for the second gradient, and for a loss on the energies when training
        (grad_w,) = torch.autograd.grad(w.sum(), positions, create_graph=create_graph,
                                        retain_graph=with_f1 or create_graph)
        f1 = None
        if with_f1:
            (grad_1,) = torch.autograd.grad(e1.sum(), positions, create_graph=create_graph)
            f1 = -grad_1
    out = {"W": w, "U_E": e0 - e1, "F": -grad_w, "F1": f1}
    if not create_graph:
        out = {k: None if v is None else v.detach() for k, v in out.items()}
    return out


def thermal_response_target(forces: torch.Tensor, mean_forces: torch.Tensor, energies: torch.Tensor,
                            mean_energies: torch.Tensor, *, temperature_K: float,
                            reference_temperature_K: float) -> torch.Tensor:
    """The regression target of F_1 = T_ref dF/dT: y = (T_ref / (k_B T^2)) (f - F(R)) (u - U(R)).

    forces, mean_forces: (n_frames, n_beads, 3) kcal/mol/A, the mapped forces and the model's mean force
    at T; energies, mean_energies: (n_frames,) kcal/mol, the all-atom potential energies and their
    estimated conditional mean at R. Returns (n_frames, n_beads, 3) kcal/mol/A, whose conditional mean
    at R is T_ref (d<f>_R/dT) = -(T_ref / (k_B T^2)) d<f>_R/d beta = (T_ref / (k_B T^2)) Cov_R(f, u),
    up to the product of the errors of the two estimates (docs/temperature.md).
    """
    factor = reference_temperature_K / (units.KB_KCAL_MOL_K * temperature_K**2)
    return factor * (forces - mean_forces) * (energies - mean_energies).reshape(-1, 1, 1)


class ThermalTraining(torch.nn.Module):
    """The trainer's part for a temperature-dependent model: each state's temperature, and the energy and
    thermal-response terms of the loss for ``hipnn_ts_thermal`` (see the module docstring).

    Its parameters (``offsets``: one per state, in units of the energy scale, added to ``base`` kcal/mol)
    are trained with the model's by the same optimiser; its state is saved in the checkpoint.
    """

    def __init__(self, config: TrainConfig, potential: Potential, states: Sequence[StateData]) -> None:
        super().__init__()
        self.config = config
        self.energy_weight = float(config.energy_weight)
        self.response_weight = float(config.thermal_response_weight)
        self.reference_K = float(potential.reference_temperature_K)
        self.force_scale = float(config.force_scale_kcal_mol_A)
        self.energy_scale = float(config.energy_scale_kcal_mol or 1.0)
        n = len(states)
        #: state label -> index of its offset (labels are unique, see prepare_states)
        self.index = {s.label: k for k, s in enumerate(states)}
        self.offsets = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))
        self.register_buffer("base", torch.zeros(n, dtype=torch.float64))
        #: each state's mean training energy (the thermal response's U without energy matching)
        self.register_buffer("mean_energy", torch.tensor(
            [float(np.mean(s.potential_energy[s.train])) if s.potential_energy is not None else 0.0 for s in states],
            dtype=torch.float64))

    @property
    def uses_energies(self) -> bool:
        return self.energy_weight > 0 or self.response_weight > 0

    def reduced_temperature(self, state: StateData) -> float:
        return (float(state.temperature_K) - self.reference_K) / self.reference_K

    def start(self, potential: Potential, states: Sequence[StateData], *, batch_size: int) -> None:
        """The offsets' starting point: base_s = mean over the training frames of u - U_E (one pass)."""
        if self.energy_weight <= 0:
            return
        for k, s in enumerate(states):
            residual = []
            for start in range(0, len(s.train), batch_size):
                idx = s.train[start:start + batch_size]
                predicted = self._predict(potential, s, idx, with_f1=False, create_graph=False)
                residual.append(s.potential_energy[idx] - predicted["U_E"].cpu().to(torch.float64).numpy())
            self.base[k] = float(np.mean(np.concatenate(residual)))

    def offset(self, state: StateData) -> torch.Tensor:
        """c_s of ``state``, kcal/mol (float64 scalar)."""
        k = self.index[state.label]
        return self.base[k] + self.energy_scale * self.offsets[k]

    def _predict(self, potential: Potential, state: StateData, idx: np.ndarray, *, with_f1: bool,
                 create_graph: bool) -> dict[str, torch.Tensor | None]:
        dtype, device = potential.dtype, potential.device
        positions = torch.as_tensor(state.positions[idx], dtype=dtype, device=device)
        box = torch.as_tensor(state.box[idx], dtype=dtype, device=device)
        return thermal_predictions(potential, positions, box, state.types, tau=self.reduced_temperature(state),
                                   with_f1=with_f1, create_graph=create_graph)

    def residuals(self, potential: Potential, state: StateData, idx: np.ndarray, *,
                  create_graph: bool) -> dict[str, torch.Tensor]:
        """The batch's force prediction ``F`` and reference ``f`` (kcal/mol/A), and the scaled residuals of
        the energy term ``d_E`` (n_frames,) and of the thermal-response term ``d_R`` (n_frames, n_beads, 3),
        each present when its weight is positive."""
        dtype, device = potential.dtype, potential.device
        reference = torch.as_tensor(state.forces[idx], dtype=dtype, device=device)
        out: dict[str, torch.Tensor] = {"f": reference}
        if not self.uses_energies:
            with state_temperature(potential, state):
                positions = torch.as_tensor(state.positions[idx], dtype=dtype, device=device)
                box = torch.as_tensor(state.box[idx], dtype=dtype, device=device)
                _, out["F"] = energy_and_forces(potential, positions, box, state.types, create_graph=create_graph)
            return out
        predicted = self._predict(potential, state, idx, with_f1=self.response_weight > 0, create_graph=create_graph)
        out["F"] = predicted["F"]
        energies = torch.as_tensor(state.potential_energy[idx], dtype=torch.float64, device=device)
        offset = self.offset(state) if create_graph else self.offset(state).detach()
        model_energy = predicted["U_E"].to(torch.float64) + offset
        if self.energy_weight > 0:
            out["d_E"] = (model_energy - energies) / self.energy_scale
        if self.response_weight > 0:
            mean_energy = model_energy.detach() if self.energy_weight > 0 else \
                self.mean_energy[self.index[state.label]].expand_as(energies)
            target = thermal_response_target(reference.to(torch.float64), predicted["F"].detach().to(torch.float64),
                                             energies, mean_energy, temperature_K=float(state.temperature_K),
                                             reference_temperature_K=self.reference_K)
            out["d_R"] = (predicted["F1"] - target.to(dtype)) / self.force_scale
        return out

    def combine(self, force_term: torch.Tensor, d_energy: torch.Tensor | None,
                d_response: torch.Tensor | None) -> torch.Tensor:
        """loss = force term + energy_weight mean(d_E^2) + thermal_response_weight mean(d_R^2).

        Mean squares, not their roots: the targets' noise is large and the same for every model, and
        under a square root it would divide the term's gradient by that noise and hide the term's
        improvement (in F_1, say) from the validation loss, which then picks too early an epoch
        (measured: F_1 error 0.53 with roots, 0.21 with mean squares, one temperature, 300 frames)."""
        loss = force_term
        if d_energy is not None and d_energy.numel():
            loss = loss + self.energy_weight * d_energy.square().mean().to(loss.dtype)
        if d_response is not None and d_response.numel():
            loss = loss + self.response_weight * d_response.square().mean().to(loss.dtype)
        return loss

    def evaluate(self, potential: Potential, states: Sequence[StateData], part: str, *,
                 batch_size: int) -> dict[str, Any]:
        """Pooled over the states' ``part`` frames: "F", "f" (flat float64 arrays of force components),
        "d_E", "d_R" (flat arrays of the scaled residuals; None when their terms are off)."""
        pooled: dict[str, list[np.ndarray]] = {"F": [], "f": [], "d_E": [], "d_R": []}
        with _frozen_parameters(potential, self):
            for s in states:
                idx_all = getattr(s, part)
                for start in range(0, len(idx_all), batch_size):
                    out = self.residuals(potential, s, idx_all[start:start + batch_size], create_graph=False)
                    for key in pooled:
                        if key in out:
                            pooled[key].append(out[key].detach().cpu().to(torch.float64).numpy().ravel())
        return {key: np.concatenate(v) if v else None for key, v in pooled.items()}

    def energy_errors(self, potential: Potential, states: Sequence[StateData], part: str, *,
                      batch_size: int) -> dict[str, dict[str, float]]:
        """Per state, the RMS of U_E(R) - u about its mean over the ``part`` frames (the energy error up to
        the state's constant, kcal/mol, independent of the learnt offsets) beside the RMS fluctuation of u
        about its mean, and the fraction of u's variance that U_E explains (r2)."""
        out: dict[str, dict[str, float]] = {}
        with _frozen_parameters(potential, self):
            for s in states:
                idx_all = getattr(s, part)
                if len(idx_all) == 0 or s.potential_energy is None:
                    continue
                model = np.concatenate([
                    self._predict(potential, s, idx_all[a:a + batch_size], with_f1=False,
                                  create_graph=False)["U_E"].cpu().to(torch.float64).numpy()
                    for a in range(0, len(idx_all), batch_size)])
                u = s.potential_energy[idx_all]
                residual = model - u
                # about the mean: one frame says nothing (NaN, written as null)
                error, spread = (float(np.std(residual)), float(np.std(u))) if len(u) > 1 else (math.nan, math.nan)
                out[s.label] = {"energy_rmse_kcal_mol": error, "energy_std_kcal_mol": spread,
                                "energy_r2": 1.0 - error**2 / spread**2 if spread > 0 else math.nan,
                                "n_frames": int(len(u))}
        return out


@contextmanager
def _frozen_parameters(*modules: torch.nn.Module) -> Iterator[None]:
    """Parameters without gradients inside the block (forces still by autograd on positions)."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
