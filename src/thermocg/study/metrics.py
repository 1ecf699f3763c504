"""The study's numbers: structure of CG frames, errors against the all-atom reference, the
transferability matrices, verdicts and the family comparison.

Error metrics (the matrices; each defined once, in the module named):

- force error: RMSE of the force components (kcal/mol/A) of the model on the mapped AA frames
  (:func:`thermocg.analysis.forces.force_errors`);
- RDF error: mean over bead-type pairs of the mean over r of |g_CG(r) - g_AA(r)|
  (:func:`thermocg.analysis.rdf.rdf_error`);
- ADF error: integral over theta of |p_CG(theta) - p_AA(theta)| (p normalised to 1; 0 = identical,
  2 = disjoint), angles between neighbours within the first RDF shell of the AA data
  (:func:`thermocg.analysis.adf.adf_error`);
- D ratio: D_CG / D_AA from the mean-square displacement (1 = same mobility; CG models with
  Langevin friction are usually faster, a known artefact of coarse-graining).

The same errors per bead-type pair (RDF), per centre bead type (ADF) and per bead type (forces, D)
are in :mod:`thermocg.study.per_type`, with the compositions of the states.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from thermocg.config import AnalysisConfig, Config, RDFConfig
from thermocg.frames import Frames
from thermocg.progress import Progress
from thermocg.rundir import atomic_write_text
from thermocg.study.plan import (STUDY_FORMAT_VERSION, ModelSpec, base_family, family_section, imported_labels,
                                 network_sizes, plan_models, state_points, study_variants, temperature_dependent,
                                 variant_name)

if TYPE_CHECKING:  # pragma: no cover
    from thermocg.analysis.adf import ADFResult
    from thermocg.analysis.rdf import RDFResult

# The analyses are imported where they are used: they import thermocg.neighbors, which imports torch,
# and the study's planning, manifests and report need none of them.

__all__ = ["METRICS", "METRIC_LABELS", "FAMILY_LABELS", "Structure", "measure_structure", "structure_errors",
           "diffusion_ratio", "transferability_matrices", "summarize", "verdicts", "compare_families",
           "write_matrices", "noise_floor", "judge", "tolerance_rule", "state_tolerances", "force_noise", "key_figures",
           "compared_families", "held_out_comparison", "family_label", "network_frontier",
           "ranges_over_runs"]

METRICS = ("force_rmse", "rdf_error", "adf_error", "d_ratio")
METRIC_LABELS = {
    "force_rmse": "force RMSE on mapped AA frames (kcal/mol/A)",
    "rdf_error": "RDF error: mean |g_CG - g_AA|",
    "adf_error": "ADF error: integral |p_CG - p_AA|",
    "d_ratio": "D_CG / D_AA",
}
FAMILY_LABELS = {"hipnn_ts": "HIP-NN-TS", "mscg": "MS-CG", "hipnn_ts_thermal": "HIP-NN-TS thermal (E_0 + tau E_1)",
                 "hipnn_ts_tinput": "HIP-NN-TS with T input", "mscg_thermal": "MS-CG thermal (f_0 + dT f_1)"}


def family_label(variant: str) -> str:
    """A family (of one network size: ``hipnn_ts.small``) in words: ``HIP-NN-TS [small]``."""
    family, _, size = variant.partition(".")
    label = FAMILY_LABELS.get(family, family)
    return f"{label} [{size}]" if size else label


# --------------------------------------------------------------------------------------------------
# structure of CG frames, and its errors
# --------------------------------------------------------------------------------------------------

@dataclass
class Structure:
    """RDF (every bead-type pair), ADF and diffusion coefficient of a stretch of CG frames.

    ``adf_cutoff_A``: the neighbour shell of the ADF, A; ``diffusion_A2_fs``: D from the MSD, A^2/fs
    (None for fewer than 3 frames), over every bead; ``diffusion_per_type_A2_fs``: D of the beads of
    each type (None with ``diffusion_A2_fs``)."""

    rdf: RDFResult
    adf: ADFResult
    adf_cutoff_A: float
    diffusion_A2_fs: float | None
    diffusion_per_type_A2_fs: dict[str, float] | None = None


def measure_structure(frames: Frames, rdf_settings: RDFConfig, analysis: AnalysisConfig, *,
                      adf_cutoff_A: float | None, start: int | None = None, stop: int | None = None,
                      progress: Progress | None = None) -> Structure:
    """RDF, ADF (all beads) and diffusion coefficient of the frames ``[start:stop]``.

    ``adf_cutoff_A`` None: the first minimum of these frames' RDF (pooled over pairs) after its peak.
    ``progress`` advances by one per frame of each analysis (two or three passes).
    """
    from thermocg.analysis.adf import ADF, rdf_first_minimum_A
    from thermocg.analysis.msd import MSD
    from thermocg.analysis.rdf import RDF

    bar = progress or False
    rdf = RDF(frames, r_max_A=rdf_settings.r_max_A, bin_width_A=rdf_settings.bin_width_A).run(
        start, stop, progress=bar).results
    if adf_cutoff_A is None:
        adf_cutoff_A = rdf_first_minimum_A(rdf.r_A, np.mean(np.stack(list(rdf.g.values())), axis=0))
    adf = ADF(frames, cutoff_A=adf_cutoff_A, bin_width_deg=analysis.adf_bin_width_deg).run(
        start, stop, progress=bar).results
    diffusion, per_type = None, None
    if adf.n_frames >= 3:
        msd = MSD(frames, fit_start_fraction=analysis.msd_fit_start_fraction,
                  fit_end_fraction=analysis.msd_fit_end_fraction).run(start, stop, progress=bar).results
        diffusion = float(msd.diffusion_A2_fs["all"])
        per_type = {k: float(v) for k, v in msd.diffusion_A2_fs.items() if k != "all"}
    return Structure(rdf=rdf, adf=adf, adf_cutoff_A=float(adf_cutoff_A), diffusion_A2_fs=diffusion,
                     diffusion_per_type_A2_fs=per_type)


def diffusion_ratio(diffusion_A2_fs: float | None, reference_A2_fs: float | None) -> float | None:
    """D / D_ref, or None when either is unknown (or D_ref is 0)."""
    if diffusion_A2_fs is None or not reference_A2_fs:
        return None
    return diffusion_A2_fs / reference_A2_fs


def structure_errors(structure: Structure, reference: Structure | Any) -> dict[str, float | None]:
    """``rdf_error``, ``adf_error`` (on the "all" angles) and ``d_ratio`` of ``structure`` against
    ``reference`` (a Structure, or anything with its ``rdf``, ``adf`` and ``diffusion_A2_fs``)."""
    from thermocg.analysis.adf import adf_error
    from thermocg.analysis.rdf import rdf_error

    return {
        "rdf_error": rdf_error(structure.rdf, reference.rdf),
        "adf_error": adf_error(structure.adf, reference.adf),
        "d_ratio": diffusion_ratio(structure.diffusion_A2_fs, reference.diffusion_A2_fs),
    }


# --------------------------------------------------------------------------------------------------
# the summary: matrices, verdicts, family comparison
# --------------------------------------------------------------------------------------------------

def _metric_value(evaluation: Any, metric: str) -> float:
    if evaluation is None:
        return math.nan
    value = evaluation.force["rmse"] if metric == "force_rmse" else getattr(evaluation, metric)
    return math.nan if value is None else float(value)


#: metric -> family -> training set -> test state -> value
Matrices = dict[str, dict[str, dict[str, dict[str, float]]]]


def transferability_matrices(families: list[str], models: list[ModelSpec], labels: list[str],
                             evaluations: dict[str, dict[str, Any]]) -> Matrices:
    """metric -> family -> training set -> test state -> value (NaN where no evaluation finished).

    ``families``: the study's families and their network sizes (:func:`~thermocg.study.plan.study_variants`);
    ``evaluations``: model name -> state -> the evaluate stage's result (with ``force["rmse"]``,
    ``rdf_error``, ``adf_error`` and ``d_ratio``)."""
    matrices: Matrices = {}
    for metric in METRICS:
        matrices[metric] = {}
        for family in families:
            matrices[metric][family] = {
                m.train_set: {s: _metric_value(evaluations[m.name].get(s), metric) for s in labels}
                for m in models if m.variant == family}
    return matrices


def tolerance_rule(config: Config) -> dict[str, Any]:
    """How "reproduces the AA structure" is judged: ``noise_multiple`` (study.tolerance_noise_multiple)
    and the absolute tolerances that replace it where given (None: the multiple)."""
    study = config.study
    return {"noise_multiple": study.tolerance_noise_multiple,
            "absolute": {"rdf_error": study.rdf_tolerance, "adf_error": study.adf_tolerance}}


def state_tolerances(rule: dict[str, Any], noise: dict[str, dict[str, float]],
                     states: list[str]) -> dict[str, dict[str, float | None]]:
    """Per state, the RDF and ADF tolerances: the absolute one where given, else the multiple of that
    state's noise floor (None where the floor is unknown: fewer than 4 AA frames)."""
    out: dict[str, dict[str, float | None]] = {}
    for s in states:
        out[s] = {}
        for metric in ("rdf_error", "adf_error"):
            absolute = rule["absolute"].get(metric)
            floor = (noise.get(s) or {}).get(metric)
            if absolute is not None:
                out[s][metric] = float(absolute)
            elif floor is not None and math.isfinite(floor):
                out[s][metric] = float(rule["noise_multiple"]) * float(floor)
            else:
                out[s][metric] = None
    return out


def _stability(config: Config, evaluations: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The blow-up checks every CG run went through, how many runs were evaluated, and which blew up."""
    settings = config.simulate
    unstable = {f"md/{name}/{s}": ev.blowup for name, evs in evaluations.items() for s, ev in evs.items()
                if ev.blowup}
    return {"checks": {"check_interval_steps": settings.check_interval_steps,
                       "max_temperature_factor": settings.max_temperature_factor,
                       "max_force_kcal_mol_A": settings.max_force_kcal_mol_A,
                       "min_distance_A": settings.min_distance_A},
            "n_runs": sum(len(evs) for evs in evaluations.values()), "unstable": unstable}


def summarize(config: Config, results: dict[str, Any], *, failed: dict[str, str] | None = None) -> dict[str, Any]:
    """The study summary (JSON-ready; the report's one input) from the finished units' typed results.

    ``results``: unit name -> its stage's result (units that did not finish are absent, and are NaN
    in the matrices); ``failed``: unit name -> why it failed or did not run. Holds states (declared,
    measured density, imported or generated), models, references, noise floors, tolerances per
    state, evaluations, matrices, verdicts, the family comparison, the failures and the stability
    checks."""
    states = state_points(config)
    labels = list(states)
    models = plan_models(config)
    references = {s: results[f"ref/{s}"] for s in labels if f"ref/{s}" in results}
    evaluations = {m.name: {s: results[f"eval/{m.name}/{s}"] for s in labels if f"eval/{m.name}/{s}" in results}
                   for m in models}
    trained = {m.name: results.get(f"model/{m.name}") for m in models}
    noise = {s: dict(ref.noise) for s, ref in references.items() if ref.noise is not None}
    rule = tolerance_rule(config)
    allatom = {s: results[f"aa/{s}"] for s in labels if f"aa/{s}" in results}
    variants = study_variants(config)
    summary = {
        "format_version": STUDY_FORMAT_VERSION,
        "states": {s: states[s].to_state().to_dict() for s in labels},
        "imported": [s for s in labels if s in imported_labels(config)],
        "measured_density_g_cm3": {s: ref.density_g_cm3 for s, ref in references.items()},
        # "family": the family of one network size (hipnn_ts, hipnn_ts.small), as the matrices group models
        "models": [{"name": m.name, "family": m.variant, "train_set": m.train_set,
                    "train_states": list(m.train_states), "pooled": m.pooled,
                    "base_family": variant_name(base_family(m.family), m.size),
                    "temperature_dependent": temperature_dependent(m.family), "network_family": m.family,
                    "size": m.size or "base"}
                   for m in models],
        "families": variants,
        "network_sizes": network_sizes(config),
        "tolerances": {**rule, "per_state": state_tolerances(rule, noise, labels)},
        "references": {s: ref.to_dict() for s, ref in references.items()},
        "aa_ns_per_day": {s: aa.ns_per_day for s, aa in allatom.items()},
        "aa_speed_note": {s: aa.speed_note for s, aa in allatom.items()},
        "aa_run": {s: {"platform": aa.platform, "n_threads": aa.n_threads} for s, aa in allatom.items()},
        "md_speed": _md_speeds(models, labels, results),
        "noise": noise,
        "state_distances": state_distances(references),
        "evaluations": {name: {s: ev.to_dict() for s, ev in evs.items()} for name, evs in evaluations.items()},
        "training": {name: None if t is None else t.to_dict() for name, t in trained.items()},
        "matrices": transferability_matrices(variants, models, labels, evaluations),
        "failed": dict(failed or {}),
        "stability": _stability(config, evaluations),
        "friction": {"mode": config.study.langevin_friction, "simulate_friction_per_ps": config.simulate.friction_per_ps,
                     "integrator": config.simulate.integrator},
    }
    summary["verdicts"] = verdicts(summary)
    summary["comparison"] = compare_families(summary)
    summary["frontier"] = network_frontier(summary)
    _add_per_type(summary)
    return summary


def state_distances(references: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """How far apart the states' all-atom structures are, in the study's own error metrics:
    ``{"rdf_error" | "adf_error": {row: {column: error of the row state's AA structure against the column
    state's}}}`` (the column is the reference, as a CG run at the column state is judged). The error a
    model would show at the column state if it reproduced the row state's structure exactly: what
    transfer between the two has to bridge. Between states closer than the noise floor no study can
    tell a model that transfers from one that ignores the state."""
    from thermocg.analysis.adf import adf_error
    from thermocg.analysis.rdf import rdf_error

    labels = list(references)
    out: dict[str, dict[str, dict[str, float]]] = {"rdf_error": {}, "adf_error": {}}
    for a in labels:
        out["rdf_error"][a] = {b: rdf_error(references[a].rdf, references[b].rdf) for b in labels}
        out["adf_error"][a] = {b: adf_error(references[a].adf, references[b].adf) for b in labels}
    return out


#: what each CG run's speed is recorded with (thermocg.md.MDRunSummary), and whether it blew up
MD_SPEED_KEYS = ("ns_per_day", "steps_per_s", "wall_s", "n_steps", "timestep_fs", "n_threads", "device", "blowup")


def _md_speeds(models: list[ModelSpec], labels: list[str], results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """model name -> state -> the speed of its CG run as the MD stage measured it (:data:`MD_SPEED_KEYS`)."""
    out: dict[str, dict[str, Any]] = {}
    for m in models:
        runs = {s: results[f"md/{m.name}/{s}"] for s in labels if f"md/{m.name}/{s}" in results}
        out[m.name] = {s: {key: getattr(run, key, None) for key in MD_SPEED_KEYS} for s, run in runs.items()}
    return out


def _add_per_type(summary: dict[str, Any]) -> None:
    """The per bead type matrices and means, and the compositions of the states and the errors by
    composition distance (:mod:`thermocg.study.per_type`), into the summary (in place)."""
    from thermocg.study.per_type import composition_summary, per_type_summary

    summary["per_type"] = per_type_summary(summary)
    summary["composition"] = composition_summary(summary)


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def verdicts(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model: where it reproduces the AA structure (RDF and ADF errors within the state's
    tolerances), where it is indistinguishable from the AA data (both errors within the noise floor),
    where it could not be judged (no tolerance: no noise floor), and where it was not evaluated."""
    tolerances = summary["tolerances"]["per_state"]
    noise = summary.get("noise") or {}
    out = {}
    for m in summary["models"]:
        evs = summary["evaluations"].get(m["name"], {})
        good, same, unjudged = [], [], []
        for s in summary["states"]:
            ev = evs.get(s)
            if ev is None:
                continue
            rdf, adf = ev.get("rdf_error"), ev.get("adf_error")
            tol = tolerances.get(s, {})
            if tol.get("rdf_error") is None or tol.get("adf_error") is None:
                unjudged.append(s)
            elif _finite(rdf) and _finite(adf) and rdf <= tol["rdf_error"] and adf <= tol["adf_error"]:
                good.append(s)
            floor = noise.get(s) or {}
            if (_finite(rdf) and _finite(adf) and _finite(floor.get("rdf_error")) and _finite(floor.get("adf_error"))
                    and rdf <= floor["rdf_error"] and adf <= floor["adf_error"]):
                same.append(s)
        out[m["name"]] = {"reproduces_at": good, "indistinguishable_at": same, "unjudged": unjudged,
                          "evaluated": [s for s in summary["states"] if s in evs],
                          "not_evaluated": [s for s in summary["states"] if s not in evs],
                          "n_states": len(summary["states"])}
    return out


def _nan_of(value: Any) -> float:
    return math.nan if value is None else float(value)


def _mean(values: list[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def force_noise(evaluation: dict[str, Any] | None) -> float:
    """The noise floor of one force RMSE: the difference of the RMSEs of the two halves of its frames."""
    halves = (evaluation or {}).get("force", {}).get("rmse_halves")
    if not halves or not all(_finite(h) for h in halves):
        return math.nan
    return abs(float(halves[0]) - float(halves[1]))


def noise_floor(summary: dict[str, Any], metric: str, entries: list[tuple[str, str]] | None = None) -> float:
    """The noise floor of a mean of ``metric`` over ``entries`` ((model name, state) pairs; None: over
    every state once): the mean of the entries' floors. RDF/ADF: the state's first-half vs second-half
    error of the AA data; force RMSE: the difference of the RMSEs on the two halves of the evaluated
    frames. Not divided by sqrt(n): the CG runs at one state share its AA reference, so their errors
    are not independent. NaN when unknown (and always for the D ratio)."""
    if metric in ("rdf_error", "adf_error"):
        noise = summary.get("noise") or {}
        states = [s for _, s in entries] if entries is not None else list(noise)
        return _mean([(noise.get(s) or {}).get(metric, math.nan) for s in states])
    if metric == "force_rmse":
        evaluations = summary["evaluations"]
        if entries is None:
            entries = [(name, s) for name, evs in evaluations.items() for s in evs]
        return _mean([force_noise(evaluations.get(name, {}).get(s)) for name, s in entries])
    return math.nan


def _entries(summary: dict[str, Any], family: str, home: bool) -> list[tuple[str, str]]:
    """(model, state) pairs of the family's single-state models at (home) or away from their state."""
    singles = [m for m in summary["models"] if m["family"] == family and not m["pooled"]]
    return [(m["name"], s) for m in singles for s in summary["states"] if (s in m["train_states"]) == home]


def _home_and_away(summary: dict[str, Any], family: str, metric: str) -> dict[str, float]:
    """Mean error of the family's single-state models at their training state and away from it; for
    the D ratio, the error of a ratio: |log(D_CG / D_AA)|."""
    table = summary["matrices"][metric][family]
    names = {m["name"]: m["train_set"] for m in summary["models"]}
    out = {}
    for where, home in (("single_at_training_state", True), ("single_away", False)):
        values = [table[names[name]][s] for name, s in _entries(summary, family, home)]
        if metric == "d_ratio":
            values = [abs(math.log(v)) if v and v > 0 else math.nan for v in values]
        out[where] = _mean(values)
    return out


def comparison_floor(summary: dict[str, Any], metric: str, where: str) -> float:
    """The noise floor of the family comparison of ``metric`` ``where`` ("single_at_training_state" or
    "single_away"): over the (model, state) pairs of every family's single-state models there."""
    home = where == "single_at_training_state"
    entries = [e for family in summary["families"] for e in _entries(summary, family, home)]
    return noise_floor(summary, metric, entries)


def _pooled_vs_single(summary: dict[str, Any], family: str) -> dict[str, dict[str, float]]:
    """Per pooled model: its mean RDF/ADF error over the states where some single-state model is away
    from home, the mean of those single-state models' errors there, and the noise floor of those
    states (``<metric>_noise_floor``)."""
    singles = [m for m in summary["models"] if m["family"] == family and not m["pooled"]]
    out: dict[str, dict[str, float]] = {}
    for m in summary["models"]:
        if m["family"] != family or not m["pooled"]:
            continue
        out[m["train_set"]] = {}
        for metric in ("rdf_error", "adf_error"):
            table = summary["matrices"][metric][family]
            pooled_err, single_err, states = [], [], []
            for s in summary["states"]:
                away = [table[x["train_set"]][s] for x in singles if s not in x["train_states"]]
                if away:
                    pooled_err.append(table[m["train_set"]][s])
                    single_err.append(_mean(away))
                    states.append(s)
            out[m["train_set"]][f"pooled_{metric}"] = _mean(pooled_err)
            out[m["train_set"]][f"single_away_{metric}"] = _mean(single_err)
            out[m["train_set"]][f"{metric}_noise_floor"] = noise_floor(summary, metric, [("", s) for s in states])
    return out


def compared_families(summary: dict[str, Any]) -> list[str]:
    """The two families the single-state comparison weighs against each other: the first two with
    single-state models (the temperature-dependent families have none by default), else the first two."""
    with_singles = [f for f in summary["families"]
                    if any(m["family"] == f and not m["pooled"] for m in summary["models"])]
    return (with_singles if len(with_singles) >= 2 else list(summary["families"]))[:2]


def _model_means(summary: dict[str, Any], m: dict[str, Any], metric: str, states: list[str]) -> float:
    table = summary["matrices"][metric][m["family"]]
    return _mean([table[m["train_set"]][s] for s in states])


def held_out_comparison(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model: the states it trained at (``trained_at``) and the others (``held_out``), its mean RDF
    and ADF errors over each (``<metric>_seen``, ``<metric>_held_out``) with the noise floor of those
    states (``<metric>_held_out_noise_floor``), and, for a temperature-dependent model, the same means
    of its family's temperature-agnostic model trained on the same states (``baseline``: its name;
    ``baseline_<metric>_held_out``, ``baseline_<metric>_seen``) and the ratio of the held-out means
    (``<metric>_held_out_ratio``: this model's over the baseline's). Models with no held-out state
    have NaN there."""
    by_key = {(m["family"], m["train_set"]): m for m in summary["models"]}
    out: dict[str, dict[str, Any]] = {}
    for m in summary["models"]:
        seen = [s for s in summary["states"] if s in m["train_states"]]
        held = [s for s in summary["states"] if s not in m["train_states"]]
        entry: dict[str, Any] = {"trained_at": seen, "held_out": held}
        base = by_key.get((m.get("base_family", m["family"]), m["train_set"])) if m.get("temperature_dependent") else None
        entry["baseline"] = base["name"] if base else None
        for metric in ("rdf_error", "adf_error"):
            entry[f"{metric}_seen"] = _model_means(summary, m, metric, seen)
            entry[f"{metric}_held_out"] = _model_means(summary, m, metric, held)
            entry[f"{metric}_seen_noise_floor"] = noise_floor(summary, metric, [("", s) for s in seen])
            entry[f"{metric}_held_out_noise_floor"] = noise_floor(summary, metric, [("", s) for s in held])
            if base:
                entry[f"baseline_{metric}_seen"] = _model_means(summary, base, metric, seen)
                b = entry[f"baseline_{metric}_held_out"] = _model_means(summary, base, metric, held)
                a = entry[f"{metric}_held_out"]
                entry[f"{metric}_held_out_ratio"] = a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else math.nan
        out[m["name"]] = entry
    return out


def compare_families(summary: dict[str, Any]) -> dict[str, Any]:
    """Means of each error at the training state ("in") and away from it ("out") per family, the noise
    floor of each such comparison, and pooled models vs single-state models away from the singles'
    training state."""
    return {
        "families": {family: {metric: _home_and_away(summary, family, metric) for metric in METRICS}
                     for family in summary["families"]},
        "noise_floors": {metric: {where: comparison_floor(summary, metric, where)
                                  for where in ("single_at_training_state", "single_away")} for metric in METRICS},
        "pooled_vs_single": {family: _pooled_vs_single(summary, family) for family in summary["families"]},
        "held_out": held_out_comparison(summary),
    }


def _median(values: list[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(values)) if values else math.nan


def _size_point(summary: dict[str, Any], variant: str) -> dict[str, Any]:
    """One network size of one family on the frontier (:func:`network_frontier`)."""
    models = [m for m in summary["models"] if m["family"] == variant]
    trained = [(summary.get("training") or {}).get(m["name"]) or {} for m in models]
    aa = {s: _nan_of(v) for s, v in (summary.get("aa_ns_per_day") or {}).items()}
    speeds, ratios, threads = [], [], set()
    for m in models:
        for s, run in ((summary.get("md_speed") or {}).get(m["name"]) or {}).items():
            if run.get("blowup") or not _finite(run.get("ns_per_day")):
                continue  # a run stopped early spreads its set-up over fewer steps
            speeds.append(float(run["ns_per_day"]))
            ratios.append(float(run["ns_per_day"]) / aa[s] if _finite(aa.get(s)) and aa[s] > 0 else math.nan)
            threads.add(run.get("n_threads"))
    known_ratios = [r for r in ratios if math.isfinite(r)]
    point: dict[str, Any] = {
        "family": variant, "size": models[0]["size"] if models else variant.partition(".")[2] or "base",
        "network": (summary.get("network_sizes") or {}).get(models[0]["size"] if models else "base"),
        "cutoff_A": next((float(t["cutoff_A"]) for t in trained if _finite(t.get("cutoff_A"))), math.nan),
        "n_parameters": next((int(t["n_parameters"]) for t in trained if t.get("n_parameters")), None),
        "n_runs": len(speeds), "cg_ns_per_day": _median(speeds), "cg_threads": sorted(t for t in threads if t),
        "speed_ratio": _median(known_ratios),
        "speed_ratio_range": [min(known_ratios), max(known_ratios)] if known_ratios else [math.nan, math.nan],
    }
    for where, home in (("at", True), ("away", False)):
        entries = [(m["name"], s) for m in models for s in summary["states"]
                   if (s in m["train_states"]) == home and s in summary["evaluations"].get(m["name"], {})]
        for metric in ("rdf_error", "adf_error"):
            point[f"{metric}_{where}"] = _mean([_nan_of(summary["evaluations"][n][s].get(metric)) for n, s in entries])
            point[f"{metric}_{where}_noise_floor"] = noise_floor(summary, metric, entries)
    return point


def network_frontier(summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The speed-accuracy frontier of the network sizes (``study.network_sizes`` besides the train
    section's ``base``): per HIP-NN-TS family, one point per size; {} with one size.

    A point: the size's ``network`` (the train keys it trains with), the trained models' ``cutoff_A``
    and ``n_parameters``, and from the study's own runs: ``cg_ns_per_day`` (median over its CG runs that
    did not blow up), ``speed_ratio`` (median over those runs of CG ns/day over the all-atom ns/day of
    the same state) and its ``speed_ratio_range``, ``cg_threads``; the mean RDF and ADF errors of its
    models at their training states (``<metric>_at``) and away from them (``<metric>_away``) with the
    noise floor of those (model, state) entries (``<metric>_<where>_noise_floor``); and against the base
    size, ``vs_base``: ``<metric>_<where>`` -> :func:`judge` (a: this size, b: base)."""
    sizes = summary.get("network_sizes") or {}
    if len(sizes) < 2:
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for family in summary["families"]:
        if "." in family or family_section(family) != "train":
            continue
        points = [_size_point(summary, family)] + [_size_point(summary, variant_name(family, name))
                                                   for name in list(sizes)[1:]]
        base = points[0]
        base["vs_base"] = {}
        for point in points[1:]:
            point["vs_base"] = {}
            for key in (f"{metric}_{where}" for metric in ("rdf_error", "adf_error") for where in ("at", "away")):
                a, b = point[key], base[key]
                point["vs_base"][key] = (judge(a, b, point[f"{key}_noise_floor"])
                                         if math.isfinite(a) and math.isfinite(b) else None)
        out[family] = points
    return out


def judge(a: float, b: float, floor: float) -> dict[str, Any]:
    """Two values against a noise floor: the gap, and whether it exceeds the floor (``resolved``; None
    when the floor is unknown), the gap in units of the floor (``in_floors``) and which is lower
    (``lower``: "a" or "b", None when equal)."""
    gap = abs(a - b)
    known = floor is not None and math.isfinite(floor) and floor > 0
    return {"gap": gap, "floor": floor if known else math.nan, "resolved": (gap > floor) if known else None,
            "in_floors": gap / floor if known else math.nan, "lower": None if a == b else ("a" if a < b else "b")}


def key_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The study's headline numbers, flat: per family and metric the single-state means at and away
    from the training state (``<family>.<metric>.<where>``; D ratio as |log D_CG/D_AA|), each pooled
    model's mean RDF/ADF error over all states (``<model>.<metric>``), the mean noise floors
    (``noise.<metric>``), each model's count of states where it reproduces the AA structure
    (``<model>.states_within_tolerance``) and the RDF/ADF transfer verdict (``verdict.<metric>``: the
    family that transfers better, or "indistinguishable", as the report states it)."""
    out: dict[str, Any] = {}
    fams = summary["comparison"]["families"]
    for family, metrics in fams.items():
        for metric, where in metrics.items():
            for key, value in where.items():
                out[f"{family}.{metric}.{key}"] = value
    for m in summary["models"]:
        if m["pooled"]:
            for metric in ("rdf_error", "adf_error"):
                out[f"{m['name']}.{metric}"] = _mean([summary["matrices"][metric][m["family"]][m["train_set"]][s]
                                                      for s in summary["states"]])
        out[f"{m['name']}.states_within_tolerance"] = len(summary["verdicts"][m["name"]]["reproduces_at"])
        held = (summary["comparison"].get("held_out") or {}).get(m["name"]) or {}
        for metric in ("rdf_error", "adf_error"):
            for key in ("held_out", "held_out_ratio"):
                if math.isfinite(_nan_of(held.get(f"{metric}_{key}"))):
                    out[f"{m['name']}.{metric}.{key}"] = held[f"{metric}_{key}"]
    for metric in ("rdf_error", "adf_error"):
        out[f"noise.{metric}"] = noise_floor(summary, metric)
        if len(fams) >= 2:
            a, b = compared_families(summary)
            floor = summary["comparison"]["noise_floors"][metric]["single_away"]
            va, vb = fams[a][metric]["single_away"], fams[b][metric]["single_away"]
            if math.isfinite(va) and math.isfinite(vb):
                jd = judge(va, vb, floor)
                out[f"verdict.{metric}"] = ("indistinguishable" if jd["resolved"] is False else
                                            family_label(a if jd["lower"] == "a" else b))
    return out


def ranges_over_runs(figures: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per key figure, its range over several runs of one study (``figures``: run name -> the run's
    :func:`key_figures`): ``min`` and ``max`` of the numbers (the distinct values, for words) and the
    value of every run."""
    keys = list(dict.fromkeys(k for fig in figures.values() for k in fig))
    out = {}
    for key in keys:
        values = {run: fig.get(key) for run, fig in figures.items()}
        numbers = [float(v) for v in values.values() if isinstance(v, (int, float)) and math.isfinite(float(v))]
        if numbers:
            out[key] = {"min": min(numbers), "max": max(numbers), "values": values}
        else:
            out[key] = {"distinct": sorted({str(v) for v in values.values()}), "values": values}
    return out


def json_text(data: Any, *, nan_as_null: bool = True, **kwargs: Any) -> str:
    """JSON of a summary-like object: NumPy scalars and arrays as plain numbers, anything else
    (paths) as text; NaN as null (for readers other than Python) unless ``nan_as_null`` is False."""
    def plain(obj: Any) -> Any:
        if isinstance(obj, (np.floating, np.integer)):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        return str(obj)

    text = json.dumps(data, default=plain, **kwargs)
    return text.replace("NaN", "null") if nan_as_null else text


def write_matrices(summary: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """The matrices as CSV (one wide file per metric and family, plus one long file) and JSON."""
    out_dir = Path(out_dir)
    written = []
    states = list(summary["states"])
    long_rows = ["family,metric,train_set,test_state,value"]
    for metric, by_family in summary["matrices"].items():
        for family, table in by_family.items():
            lines = ["train_set," + ",".join(states)]
            for train_set, row in table.items():
                lines.append(train_set + "," + ",".join(f"{row[s]:.6g}" for s in states))
                long_rows.extend(f"{family},{metric},{train_set},{s},{row[s]:.6g}" for s in states)
            written.append(atomic_write_text(out_dir / f"{metric}_{family}.csv", "\n".join(lines) + "\n"))
    written.append(atomic_write_text(out_dir / "matrices.csv", "\n".join(long_rows) + "\n"))
    matrices_json = json.loads(json_text(summary["matrices"]))
    written.append(atomic_write_text(out_dir / "matrices.json", json.dumps(
        {"metrics": METRIC_LABELS, "matrices": matrices_json}, indent=1)))
    if summary.get("per_type"):
        from thermocg.study.per_type import write_per_type_matrices

        written.append(write_per_type_matrices(summary, out_dir))
    return written
