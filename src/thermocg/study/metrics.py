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
from thermocg.rundir import atomic_write_text
from thermocg.study.plan import STUDY_FORMAT_VERSION, ModelSpec, plan_models, state_points

if TYPE_CHECKING:  # pragma: no cover
    from thermocg.analysis.adf import ADFResult
    from thermocg.analysis.rdf import RDFResult

# The analyses are imported where they are used: they import thermocg.neighbors, which imports torch,
# and the study's planning, manifests and report need none of them.

__all__ = ["METRICS", "METRIC_LABELS", "FAMILY_LABELS", "Structure", "measure_structure", "structure_errors",
           "diffusion_ratio", "transferability_matrices", "summarize", "verdicts", "compare_families",
           "write_matrices"]

METRICS = ("force_rmse", "rdf_error", "adf_error", "d_ratio")
METRIC_LABELS = {
    "force_rmse": "force RMSE on mapped AA frames (kcal/mol/A)",
    "rdf_error": "RDF error: mean |g_CG - g_AA|",
    "adf_error": "ADF error: integral |p_CG - p_AA|",
    "d_ratio": "D_CG / D_AA",
}
FAMILY_LABELS = {"hipnn_ts": "HIP-NN-TS", "mscg": "MS-CG"}


# --------------------------------------------------------------------------------------------------
# structure of CG frames, and its errors
# --------------------------------------------------------------------------------------------------

@dataclass
class Structure:
    """RDF (every bead-type pair), ADF and diffusion coefficient of a stretch of CG frames.

    ``adf_cutoff_A``: the neighbour shell of the ADF, A; ``diffusion_A2_fs``: D from the MSD, A^2/fs
    (None for fewer than 3 frames)."""

    rdf: RDFResult
    adf: ADFResult
    adf_cutoff_A: float
    diffusion_A2_fs: float | None


def measure_structure(frames: Frames, rdf_settings: RDFConfig, analysis: AnalysisConfig, *,
                      adf_cutoff_A: float | None, start: int | None = None, stop: int | None = None) -> Structure:
    """RDF, ADF (all beads) and diffusion coefficient of the frames ``[start:stop]``.

    ``adf_cutoff_A`` None: the first minimum of these frames' RDF (pooled over pairs) after its peak.
    """
    from thermocg.analysis.adf import ADF, rdf_first_minimum_A
    from thermocg.analysis.msd import MSD
    from thermocg.analysis.rdf import RDF

    rdf = RDF(frames, r_max_A=rdf_settings.r_max_A, bin_width_A=rdf_settings.bin_width_A).run(start, stop).results
    if adf_cutoff_A is None:
        adf_cutoff_A = rdf_first_minimum_A(rdf.r_A, np.mean(np.stack(list(rdf.g.values())), axis=0))
    adf = ADF(frames, cutoff_A=adf_cutoff_A, bin_width_deg=analysis.adf_bin_width_deg).run(start, stop).results
    diffusion = None
    if adf.n_frames >= 3:
        msd = MSD(frames, fit_start_fraction=analysis.msd_fit_start_fraction,
                  fit_end_fraction=analysis.msd_fit_end_fraction).run(start, stop).results
        diffusion = float(msd.diffusion_A2_fs["all"])
    return Structure(rdf=rdf, adf=adf, adf_cutoff_A=float(adf_cutoff_A), diffusion_A2_fs=diffusion)


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

    ``evaluations``: model name -> state -> the evaluate stage's result (with ``force["rmse"]``,
    ``rdf_error``, ``adf_error`` and ``d_ratio``)."""
    matrices: Matrices = {}
    for metric in METRICS:
        matrices[metric] = {}
        for family in families:
            matrices[metric][family] = {
                m.train_set: {s: _metric_value(evaluations[m.name].get(s), metric) for s in labels}
                for m in models if m.family == family}
    return matrices


def summarize(config: Config, results: dict[str, Any]) -> dict[str, Any]:
    """The study summary (JSON-ready; the report's one input) from the finished units' typed results.

    ``results``: unit name -> its stage's result (units that did not finish are absent, and are NaN
    in the matrices). Holds states, models, references, evaluations, matrices, verdicts and the
    family comparison."""
    states = state_points(config)
    labels = list(states)
    models = plan_models(config)
    references = {s: results[f"ref/{s}"] for s in labels if f"ref/{s}" in results}
    evaluations = {m.name: {s: results[f"eval/{m.name}/{s}"] for s in labels if f"eval/{m.name}/{s}" in results}
                   for m in models}
    trained = {m.name: results.get(f"model/{m.name}") for m in models}
    summary = {
        "format_version": STUDY_FORMAT_VERSION,
        "states": {s: states[s].to_state().to_dict() for s in labels},
        "models": [{"name": m.name, "family": m.family, "train_set": m.train_set,
                    "train_states": list(m.train_states), "pooled": m.pooled} for m in models],
        "families": list(config.study.families),
        "tolerances": {"rdf_error": config.study.rdf_tolerance, "adf_error": config.study.adf_tolerance},
        "references": {s: ref.to_dict() for s, ref in references.items()},
        "aa_ns_per_day": {s: results[f"aa/{s}"].ns_per_day for s in labels if f"aa/{s}" in results},
        "noise": {s: dict(ref.noise) for s, ref in references.items() if ref.noise is not None},
        "evaluations": {name: {s: ev.to_dict() for s, ev in evs.items()} for name, evs in evaluations.items()},
        "training": {name: None if t is None else t.to_dict() for name, t in trained.items()},
        "matrices": transferability_matrices(list(config.study.families), models, labels, evaluations),
    }
    summary["verdicts"] = verdicts(summary)
    summary["comparison"] = compare_families(summary)
    return summary


def _within_tolerance(ev: dict[str, Any], tol: dict[str, float]) -> bool:
    rdf = ev.get("rdf_error")
    adf = ev.get("adf_error")
    if rdf is None or not math.isfinite(rdf) or rdf > tol["rdf_error"]:
        return False
    return adf is None or not math.isfinite(adf) or adf <= tol["adf_error"]


def verdicts(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model: the states where it reproduces the AA structure within the tolerances."""
    tol = summary["tolerances"]
    out = {}
    for m in summary["models"]:
        evs = summary["evaluations"].get(m["name"], {})
        good = [s for s in summary["states"] if s in evs and _within_tolerance(evs[s], tol)]
        out[m["name"]] = {"reproduces_at": good, "evaluated": [s for s in summary["states"] if s in evs],
                          "n_states": len(summary["states"])}
    return out


def _mean(values: list[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def _home_and_away(summary: dict[str, Any], family: str, metric: str) -> dict[str, float]:
    """Mean error of the family's single-state models at their training state and away from it; for
    the D ratio, the error of a ratio: |log(D_CG / D_AA)|."""
    table = summary["matrices"][metric][family]
    singles = [m for m in summary["models"] if m["family"] == family and not m["pooled"]]
    inside = [table[m["train_set"]][s] for m in singles for s in summary["states"] if s in m["train_states"]]
    outside = [table[m["train_set"]][s] for m in singles for s in summary["states"] if s not in m["train_states"]]
    if metric == "d_ratio":
        inside = [abs(math.log(v)) if v and v > 0 else math.nan for v in inside]
        outside = [abs(math.log(v)) if v and v > 0 else math.nan for v in outside]
    return {"single_at_training_state": _mean(inside), "single_away": _mean(outside)}


def _pooled_vs_single(summary: dict[str, Any], family: str) -> dict[str, dict[str, float]]:
    """Per pooled model: its mean RDF/ADF error over the states where some single-state model is away
    from home, and the mean of those single-state models' errors there."""
    singles = [m for m in summary["models"] if m["family"] == family and not m["pooled"]]
    out: dict[str, dict[str, float]] = {}
    for m in summary["models"]:
        if m["family"] != family or not m["pooled"]:
            continue
        out[m["train_set"]] = {}
        for metric in ("rdf_error", "adf_error"):
            table = summary["matrices"][metric][family]
            pooled_err, single_err = [], []
            for s in summary["states"]:
                away = [table[x["train_set"]][s] for x in singles if s not in x["train_states"]]
                if away:
                    pooled_err.append(table[m["train_set"]][s])
                    single_err.append(_mean(away))
            out[m["train_set"]][f"pooled_{metric}"] = _mean(pooled_err)
            out[m["train_set"]][f"single_away_{metric}"] = _mean(single_err)
    return out


def compare_families(summary: dict[str, Any]) -> dict[str, Any]:
    """Means of each error at the training state ("in") and away from it ("out") per family, and
    for pooled models vs single-state models away from the singles' training state."""
    return {
        "families": {family: {metric: _home_and_away(summary, family, metric) for metric in METRICS}
                     for family in summary["families"]},
        "pooled_vs_single": {family: _pooled_vs_single(summary, family) for family in summary["families"]},
    }


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
    return written
