"""The automatic choices of force matching (cutoff, prior, sensitivity range, force scale) and the model."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from thermocg.config import TrainConfig
from thermocg.frames import Frames
from thermocg.neighbors import check_cutoff_fits, perpendicular_widths
from thermocg.potentials.base import Potential, SumPotential
from thermocg.potentials.hipnn import HipnnTS
from thermocg.potentials.priors import RepulsivePrior, derive_repulsive_prior
from thermocg.train.data import StateData, TrainError, prepare_states
from thermocg.train.thermal import resolve_temperature

#: the reference study's cutoff, A
REFERENCE_CUTOFF_A = 15.0
#: the automatic cutoff stays this fraction below half the shortest box width (see automatic_cutoff_A)
BOX_MARGIN = 0.999
#: the reference study's dist_soft_max / dist_hard_max (13 A / 15 A)
SOFT_MAX_FRACTION = 13.0 / 15.0


def automatic_cutoff_A(boxes: Iterable[np.ndarray], *, largest_A: float = REFERENCE_CUTOFF_A) -> float:
    """The HIP-NN-TS cutoff chosen from the periodic boxes a model will meet, A.

    cutoff = min(largest_A, floor_0.01A(0.999 w / 2)), w the shortest perpendicular width
    (:func:`thermocg.neighbors.perpendicular_widths`) over every box given, floored to 0.01 A.
    Beyond w / 2 a bead would meet two images of one neighbour, which a minimum-image model does not
    intend; the 0.1% margin keeps the cutoff strictly inside the box, so round-off in a box read
    back from a file, or a fluctuating NPT box, cannot push it over. ``largest_A``: the reference
    study's 15 A, the value in boxes wider than 30 A.

    ``boxes``: arrays (3, 3) or (n_frames, 3, 3) A, rows the cell vectors (triclinic allowed); pass
    the boxes of every state point the model will be simulated at (the study does), or of its
    training frames (the trainer does when ``train.cutoff_A`` is null).
    """
    if not largest_A > 0:
        raise ValueError(f"automatic_cutoff_A: largest_A must be positive, got {largest_A}")
    half, n_boxes = math.inf, 0
    for box in boxes:
        cells = np.asarray(box, dtype=np.float64).reshape(-1, 3, 3)
        n_boxes += len(cells)
        for cell in np.unique(cells, axis=0):  # NVT: one box for every frame
            half = min(half, float(perpendicular_widths(cell).min()) / 2.0)
    if n_boxes == 0:
        raise ValueError("automatic_cutoff_A: no boxes given")
    if not math.isfinite(half) or half <= 0:
        raise ValueError(f"automatic_cutoff_A: degenerate box (half the shortest width is {half} A)")
    cutoff = min(float(largest_A), float(np.floor(half * BOX_MARGIN * 100) / 100))
    if cutoff <= 0:
        raise ValueError(f"automatic_cutoff_A: the boxes are too small for any cutoff (half the shortest "
                         f"perpendicular width is {half:.4g} A)")
    return cutoff


def check_cutoff(cutoff_A: float, states: Sequence[StateData], key: str, hint: str) -> None:
    """A TrainError unless ``cutoff_A`` fits half the shortest box width of every state."""
    for s in states:
        try:
            check_cutoff_fits(cutoff_A, s.box, what=f"state {s.label}: {key}")
        except ValueError as exc:
            raise TrainError(f"{exc}{hint}") from None


def force_scale(states: Sequence[StateData]) -> float:
    """The RMS of every training force component, kcal/mol/A (1 if they are all zero)."""
    squares, count = 0.0, 0
    for s in states:
        f = s.forces[s.train]
        squares += float(np.sum(f * f))
        count += f.size
    scale = math.sqrt(squares / max(count, 1))
    return scale if scale > 0 else 1.0


def resolve_choices(config: TrainConfig, states: Sequence[StateData]) -> tuple[TrainConfig, Any]:
    """Fill every ``None`` of ``config`` from the prepared states; returns (resolved config, prior or None).

    - cutoff_A: :func:`automatic_cutoff_A` of every state's boxes; a given cutoff beyond half a box
      is an error.
    - prior taper/strength: :func:`~thermocg.potentials.priors.derive_repulsive_prior` on the
      training frames (taper at the first r where the CG RDF exceeds ``prior_threshold``,
      strength the mean |F| of the CG forces); the smallest taper is the RDF onset.
    - dist_soft_min_A = max(onset - 1 A, onset / 2); dist_soft_max_A = 13/15 cutoff.
    - force_scale_kcal_mol_A: the RMS of all training force components.
    - the temperature choices (:func:`thermocg.train.thermal.resolve_temperature`): T_ref, the energy
      scale, and the fallback to the agnostic model for frames of one temperature.
    """
    resolved = copy.deepcopy(config)
    resolve_temperature(config, resolved, states)
    if resolved.cutoff_A is None:
        resolved.cutoff_A = automatic_cutoff_A(s.box for s in states)
    else:
        check_cutoff(resolved.cutoff_A, states, "train.cutoff_A",
                     "; or leave train.cutoff_A null to have it chosen from the boxes")
    prior = None
    onset = resolved.prior_taper_A
    if resolved.prior or (resolved.dist_soft_min_A is None and onset is None):
        prior = derive_repulsive_prior([s.frames("train") for s in states], threshold=resolved.prior_threshold,
                                       dr_A=resolved.prior_dr_A, perc=resolved.prior_perc)
        if onset is None:
            onset = float(np.min(np.asarray(prior.hyperparameters()["taper_A"], dtype=np.float64)))
    if resolved.dist_soft_min_A is None:
        resolved.dist_soft_min_A = float(max(onset - 1.0, 0.5 * onset))
    if resolved.dist_soft_max_A is None:
        resolved.dist_soft_max_A = float(SOFT_MAX_FRACTION * resolved.cutoff_A)
    if not resolved.dist_soft_min_A < resolved.dist_soft_max_A <= resolved.cutoff_A:
        raise TrainError(
            f"train: need dist_soft_min_A < dist_soft_max_A <= cutoff_A, got {resolved.dist_soft_min_A:.3f}, "
            f"{resolved.dist_soft_max_A:.3f}, {resolved.cutoff_A:.3f} A (a small box forces a small cutoff; "
            "set dist_soft_min_A)"
        )
    if resolved.force_scale_kcal_mol_A is None:
        resolved.force_scale_kcal_mol_A = force_scale(states)
    if not resolved.prior:
        return resolved, None
    # the per-pair taper and strength tables are recorded in the model description
    return resolved, _prior_with_overrides(prior, resolved)


def resolve_train_config(config: TrainConfig, frames_list: Frames | Sequence[Frames]) -> tuple[TrainConfig, Any]:
    """The automatic choices of :class:`Trainer` for ``frames_list`` (with ``config.frame_stride`` and
    ``config.split`` applied): (resolved config, the derived prior or None). See :mod:`thermocg.train`."""
    return resolve_choices(config, prepare_states(frames_list, config))


_AUTOMATIC_KEYS = ("cutoff_A", "dist_soft_min_A", "dist_soft_max_A", "force_scale_kcal_mol_A",
                   "reference_temperature_K", "energy_scale_kcal_mol")


def automatic_choices(config: TrainConfig, resolved: TrainConfig, potential: Potential) -> dict[str, Any]:
    """What was chosen from the data (keys the user left at None), for ``resolved.yaml``."""
    chosen: dict[str, Any] = {k: getattr(resolved, k) for k in _AUTOMATIC_KEYS
                              if getattr(config, k) is None and getattr(resolved, k) is not None}
    if resolved.temperature_dependence != config.temperature_dependence:
        chosen["temperature_dependence"] = resolved.temperature_dependence  # one training temperature
    if potential.temperature_dependent:
        chosen["valid_temperature_range_K"] = list(potential.valid_temperature_range_K)
    for term in getattr(potential, "terms", [potential]):
        if term.kind == "repulsive_prior":
            hp = term.hyperparameters()
            chosen["prior_type_names"] = list(term.type_names)
            chosen["prior_taper_A"] = hp["taper_A"]
            chosen["prior_strength_kcal_mol_A"] = hp["strength_kcal_mol_A"]
    return chosen


def _prior_with_overrides(prior: Any, config: TrainConfig) -> Any:
    """The derived prior with ``prior_taper_A`` / ``prior_strength_kcal_mol_A`` overriding every pair."""
    if config.prior_taper_A is None and config.prior_strength_kcal_mol_A is None:
        return prior
    hp = dict(prior.hyperparameters())
    n = len(prior.type_names)
    if config.prior_taper_A is not None:
        hp["taper_A"] = np.full((n, n), config.prior_taper_A).tolist()
    if config.prior_strength_kcal_mol_A is not None:
        hp["strength_kcal_mol_A"] = np.full((n, n), config.prior_strength_kcal_mol_A).tolist()
    type_names = hp.pop("type_names", prior.type_names)
    return RepulsivePrior(type_names, **hp)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, restoring the global state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_model(config: TrainConfig, type_names: tuple[str, ...], *, seed: int, prior: Any = None,
                temperature_range_K: tuple[float, float] | None = None) -> Potential:
    """HIP-NN-TS (initialised from ``seed``) plus the repulsive prior, as a SumPotential.

    ``config`` must be resolved (:func:`resolve_train_config`). With ``temperature_dependence`` linear
    or input the network is ``hipnn_ts_thermal`` or ``hipnn_ts_tinput`` (T_ref from the config) whose
    valid range is ``temperature_range_K`` (the training temperatures' min and max).
    """
    if prior is not None and tuple(prior.type_names) != tuple(type_names):
        raise TrainError(f"prior bead types {prior.type_names} differ from the model's {type_names}")
    settings = dict(n_features=config.n_features, n_sensitivities=config.n_sensitivities,
                    dist_soft_min_A=config.dist_soft_min_A, dist_soft_max_A=config.dist_soft_max_A,
                    cutoff_A=config.cutoff_A, n_interaction_layers=config.n_interaction_layers,
                    n_atom_layers=config.n_atom_layers, seed=seed)
    with _seeded(seed):
        if config.temperature_dependence == "none":
            network = HipnnTS(type_names, **settings)
        else:
            from thermocg.potentials.thermal_hipnn import TemperatureInputHipnnTS, ThermalHipnnTS

            if temperature_range_K is None or config.reference_temperature_K is None:
                raise TrainError("build_model: a temperature-dependent network needs the resolved "
                                 "reference_temperature_K and the training temperatures' range")
            cls = ThermalHipnnTS if config.temperature_dependence == "linear" else TemperatureInputHipnnTS
            network = cls(type_names, reference_temperature_K=config.reference_temperature_K,
                          valid_temperature_range_K=temperature_range_K,
                          max_temperature_extrapolation_K=config.max_temperature_extrapolation_K, **settings)
    terms = [network] + ([prior] if prior is not None else [])
    model = SumPotential(terms)
    return model.to(getattr(torch, config.dtype))
