"""The study per bead type, and composition as a state variable.

A liquid of several bead types (a mixture, or a molecule mapped to several beads) has one RDF per
type pair, angles centred on each type, forces on each type and a diffusion coefficient per type.
The study's headline numbers stay the ones of :mod:`thermocg.study.metrics` (the RDF error is the
mean over pairs, the ADF error that of the angles around every bead, the force RMSE and D ratio over
every bead); this module adds, beside them:

- per (model, state): the RDF error of each type pair (:func:`thermocg.analysis.rdf.mean_abs_dg`),
  the ADF error of the angles centred on each bead type (:func:`thermocg.analysis.adf.adf_error` with
  ``key=type``; the neighbours are of any type, within the same shell as the headline ADF), the
  force RMSE per bead type (:class:`thermocg.analysis.forces.ForceErrorAccumulator`) and D_CG/D_AA per
  bead type;
- per state: the noise floor of each of those RDF and ADF errors (first half of the AA data against
  the second) and of each force RMSE per type (the two halves of the evaluated frames);
- the matrices of each (training set x test state), per key and family, and the means of the
  single-state models at and away from their training state and of each pooled model, each with the
  noise floor it is to be judged against (:func:`per_type_summary`);
- for state points with a composition, every state's mole fractions and the errors of the
  single-state models as a function of how far the test composition is from the training one
  (:func:`composition_summary`).

Why centre types and not angle triplets for the ADF: at the sizes a study can afford (a few hundred
beads) the triplets of a binary mixture (six of them) hold too few angles each to rise above their
own noise; the angles around each centre type are the many-body signature of that species' first
shell (water's tetrahedral cage, methanol's chains) and have the statistics to show it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from thermocg.rundir import atomic_write_text

__all__ = ["PER_TYPE_METRICS", "per_type_errors", "per_type_noise", "per_type_force_noise", "per_type_summary",
           "composition_summary", "composition_distance", "bead_types_and_pairs", "write_per_type_matrices"]

#: the per-key metrics of the summary: name -> (what it is, the key it runs over)
PER_TYPE_METRICS = {
    "rdf_pair_error": ("RDF error per bead-type pair: mean |g_CG - g_AA|", "pair"),
    "adf_centre_error": ("ADF error per centre bead type: integral |p_CG - p_AA|", "centre type"),
    "force_rmse": ("force RMSE per bead type (kcal/mol/A)", "bead type"),
    "d_ratio": ("D_CG / D_AA per bead type", "bead type"),
}


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def _mean(values: list[float]) -> float:
    values = [float(v) for v in values if _finite(v)]
    return float(np.mean(values)) if values else math.nan


# --------------------------------------------------------------------------------------------------
# per (model, state): errors per key
# --------------------------------------------------------------------------------------------------

def per_type_errors(structure: Any, reference: Any) -> dict[str, dict[str, float]]:
    """The per-key errors of ``structure`` against ``reference`` (both with ``rdf``, ``adf`` and,
    optionally, ``diffusion_per_type_A2_fs``: a :class:`thermocg.study.metrics.Structure` or a
    reference result).

    Returns ``rdf_pair_errors`` (pair -> mean |g - g_ref| over r, for the pairs in both),
    ``adf_centre_errors`` (bead type -> integral |p - p_ref| of the angles centred on that type, for
    the types with angles in both) and ``d_ratio_per_type`` (bead type -> D / D_ref, for the types
    with both D known and D_ref > 0)."""
    from thermocg.analysis.adf import adf_error
    from thermocg.analysis.rdf import mean_abs_dg

    rdf = {pair: mean_abs_dg(structure.rdf, reference.rdf, pair) for pair in reference.rdf.g if pair in structure.rdf.g}
    adf = {}
    for key, n_ref in reference.adf.n_angles.items():
        if key != "all" and n_ref > 0 and structure.adf.n_angles.get(key, 0) > 0:
            adf[key] = adf_error(structure.adf, reference.adf, key=key)
    d_ratio = {}
    d_cg = getattr(structure, "diffusion_per_type_A2_fs", None) or {}
    d_aa = getattr(reference, "diffusion_per_type_A2_fs", None) or {}
    for key, d in d_cg.items():
        if _finite(d) and _finite(d_aa.get(key)) and d_aa[key] > 0:
            d_ratio[key] = float(d) / float(d_aa[key])
    return {"rdf_pair_errors": rdf, "adf_centre_errors": adf, "d_ratio_per_type": d_ratio}


def per_type_noise(second: Any, first: Any) -> dict[str, dict[str, float]]:
    """The noise floor per key of a state: the per-pair RDF and per-centre ADF errors of the second
    half of its AA data against the first (:func:`per_type_errors` without the D ratios)."""
    errors = per_type_errors(second, first)
    return {"rdf_pair_errors": errors["rdf_pair_errors"], "adf_centre_errors": errors["adf_centre_errors"]}


def per_type_force_noise(force: dict[str, Any] | None) -> dict[str, float]:
    """Bead type -> the noise floor of its force RMSE at one (model, state): the difference of the
    RMSEs of the two halves of the evaluated frames (``force["per_type_rmse_halves"]``)."""
    out = {}
    for key, halves in ((force or {}).get("per_type_rmse_halves") or {}).items():
        if halves and len(halves) == 2 and all(_finite(h) for h in halves):
            out[key] = abs(float(halves[0]) - float(halves[1]))
    return out


# --------------------------------------------------------------------------------------------------
# the summary: matrices per key, home/away/pooled means with their noise floors
# --------------------------------------------------------------------------------------------------

def bead_types_and_pairs(summary: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The bead types and type pairs of a study (from its AA references, in their order; else from
    its evaluations)."""
    types: list[str] = []
    pairs: list[str] = []
    sources = list((summary.get("references") or {}).values())
    sources += [ev for evs in (summary.get("evaluations") or {}).values() for ev in evs.values()]
    for result in sources:
        rdf = result.get("rdf") or {}
        for name, count in (rdf.get("n_per_type") or {}).items():
            if count and name not in types:
                types.append(name)
        for pair in rdf.get("g") or {}:
            if pair not in pairs:
                pairs.append(pair)
    return types, pairs


def _value(evaluation: dict[str, Any] | None, metric: str, key: str) -> float:
    if not evaluation:
        return math.nan
    if metric == "force_rmse":
        value = ((evaluation.get("force") or {}).get("per_type") or {}).get(key, {}).get("rmse")
    else:
        field = {"rdf_pair_error": "rdf_pair_errors", "adf_centre_error": "adf_centre_errors",
                 "d_ratio": "d_ratio_per_type"}[metric]
        value = (evaluation.get(field) or {}).get(key)
    return float(value) if _finite(value) else math.nan


def _noise(summary: dict[str, Any], metric: str, key: str, model: str, state: str) -> float:
    """The noise floor of one per-key error at (model, state)."""
    if metric == "force_rmse":
        ev = summary["evaluations"].get(model, {}).get(state)
        return per_type_force_noise((ev or {}).get("force")).get(key, math.nan)
    field = {"rdf_pair_error": "rdf_pair_errors", "adf_centre_error": "adf_centre_errors"}.get(metric)
    if field is None:
        return math.nan
    noise = ((summary.get("references") or {}).get(state) or {}).get("noise_per_type") or {}
    value = (noise.get(field) or {}).get(key)
    return float(value) if _finite(value) else math.nan


def _means(summary: dict[str, Any], metric: str, key: str, family: str,
           matrix: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Single-state models at and away from their training state, and each pooled model over every
    state: the mean of ``metric`` for ``key`` and the noise floor of that mean (the mean of its
    entries' floors, as :func:`thermocg.study.metrics.noise_floor`)."""
    out: dict[str, Any] = {}
    models = [m for m in summary["models"] if m["family"] == family]
    states = list(summary["states"])
    for where, home in (("single_at_training_state", True), ("single_away", False)):
        entries = [(m, s) for m in models if not m["pooled"] for s in states if (s in m["train_states"]) == home]
        out[where] = {"mean": _mean([matrix[m["train_set"]][s] for m, s in entries]),
                      "noise_floor": _mean([_noise(summary, metric, key, m["name"], s) for m, s in entries])}
    out["pooled"] = {m["train_set"]: {"mean": _mean([matrix[m["train_set"]][s] for s in states]),
                                      "noise_floor": _mean([_noise(summary, metric, key, m["name"], s) for s in states])}
                     for m in models if m["pooled"]}
    return out


def per_type_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The per-key part of a study summary (JSON-ready), from its ``models``, ``states``,
    ``references`` and ``evaluations`` (as :func:`thermocg.study.metrics.summarize` holds them):

    - ``types``, ``pairs``: the bead types and type pairs;
    - ``matrices``: metric -> key -> family -> training set -> test state -> value (NaN where not
      evaluated), for ``rdf_pair_error`` (per pair), ``adf_centre_error``, ``force_rmse`` and
      ``d_ratio`` (per bead type);
    - ``noise``: metric -> key -> state -> the AA noise floor (RDF per pair, ADF per centre type);
    - ``means``: metric -> key -> family -> ``single_at_training_state`` / ``single_away`` ->
      {mean, noise_floor}, and ``pooled`` -> pooled set -> {mean, noise_floor} (the D ratio as the
      mean |log D_CG/D_AA|, without a floor)."""
    types, pairs = bead_types_and_pairs(summary)
    keys = {"rdf_pair_error": pairs, "adf_centre_error": types, "force_rmse": types, "d_ratio": types}
    states = list(summary["states"])
    matrices: dict[str, Any] = {}
    means: dict[str, Any] = {}
    for metric, metric_keys in keys.items():
        matrices[metric], means[metric] = {}, {}
        for key in metric_keys:
            matrices[metric][key], means[metric][key] = {}, {}
            for family in summary["families"]:
                table = {m["train_set"]: {s: _value(summary["evaluations"].get(m["name"], {}).get(s), metric, key)
                                          for s in states}
                         for m in summary["models"] if m["family"] == family}
                matrices[metric][key][family] = table
                if metric == "d_ratio":  # the error of a ratio: |log(D_CG / D_AA)|
                    table = {row: {s: abs(math.log(v)) if _finite(v) and v > 0 else math.nan for s, v in cells.items()}
                             for row, cells in table.items()}
                means[metric][key][family] = _means(summary, metric, key, family, table)
    noise = {metric: {key: {s: _noise(summary, metric, key, "", s) for s in states} for key in keys[metric]}
             for metric in ("rdf_pair_error", "adf_centre_error")}
    return {"types": types, "pairs": pairs, "matrices": matrices, "noise": noise, "means": means}


# --------------------------------------------------------------------------------------------------
# composition as a state variable
# --------------------------------------------------------------------------------------------------

def composition_distance(a: dict[str, float] | None, b: dict[str, float] | None) -> float:
    """How far apart two compositions are: the largest |x_a(k) - x_b(k)| over the molecule types k
    (for a binary mixture, the difference of either mole fraction). NaN when either is None."""
    if a is None or b is None:
        return math.nan
    return max(abs(float(a.get(k, 0.0)) - float(b.get(k, 0.0))) for k in set(a) | set(b))


def composition_summary(summary: dict[str, Any]) -> dict[str, Any] | None:
    """Composition in the study (JSON-ready), or None when no state point has one.

    - ``compositions``: state -> mole fractions (None for a state without one);
    - ``by_distance``: metric (``rdf_error``, ``adf_error``, ``force_rmse``) -> family -> rows, one
      per (|delta x|, |delta T|) that a single-state model's test states are from its training
      state, in increasing order: ``delta_x``, ``delta_T_K``, ``mean`` (over those (model, state)
      entries), ``n`` and ``noise_floor`` (the mean floor of those entries, as the headline
      comparisons use; the force RMSE's from its two halves of frames)."""
    from thermocg.study.metrics import noise_floor

    states = summary["states"]
    compositions = {s: values.get("mole_fractions") for s, values in states.items()}
    if not any(compositions.values()):
        return None
    by_distance: dict[str, Any] = {}
    for metric in ("rdf_error", "adf_error", "force_rmse"):
        by_distance[metric] = {}
        for family in summary["families"]:
            groups: dict[tuple[float, float], list[tuple[str, str, float]]] = {}
            for m in summary["models"]:
                if m["family"] != family or m["pooled"]:
                    continue
                home = m["train_states"][0]
                for s in states:
                    value = summary["matrices"][metric][family][m["train_set"]][s]
                    dx = composition_distance(compositions[home], compositions[s])
                    dt = abs(float(states[home]["temperature_K"]) - float(states[s]["temperature_K"]))
                    key = (round(dx, 6) if math.isfinite(dx) else math.nan, round(dt, 6))
                    groups.setdefault(key, []).append((m["name"], s, value))
            rows = []
            for (dx, dt), entries in sorted(groups.items(),
                                             key=lambda kv: (kv[0][1], kv[0][0] if math.isfinite(kv[0][0]) else math.inf)):
                rows.append({"delta_x": dx, "delta_T_K": dt, "mean": _mean([v for _, _, v in entries]),
                             "n": sum(1 for _, _, v in entries if _finite(v)),
                             "noise_floor": noise_floor(summary, metric, [(n, s) for n, s, _ in entries])})
            by_distance[metric][family] = rows
    return {"compositions": compositions, "by_distance": by_distance}


def write_per_type_matrices(summary: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """``per_type.csv`` in ``out_dir``: one row per (family, metric, key, training set, test state)
    of the per-key matrices, with the AA noise floor of the test state where the metric has one."""
    per_type = summary["per_type"]
    rows = ["family,metric,key,train_set,test_state,value,noise_floor"]
    for metric, by_key in per_type["matrices"].items():
        for key, by_family in by_key.items():
            floors = per_type["noise"].get(metric, {}).get(key, {})
            for family, table in by_family.items():
                for train_set, cells in table.items():
                    rows.extend(f"{family},{metric},{key},{train_set},{s},{v:.6g},{floors.get(s, math.nan):.6g}"
                                for s, v in cells.items())
    return atomic_write_text(Path(out_dir) / "per_type.csv", "\n".join(rows) + "\n")
