"""The study report: a static HTML page with PNG figures, and a Markdown summary.

:func:`write_report` takes the study summary (:func:`thermocg.study.collect_results`: states,
models, AA reference observables and noise floors, per (model, state) evaluations, transferability
matrices, verdicts, failures) and writes ``index.html``, ``summary.md`` and ``figures/*.png`` into
the report folder:

- the state points: declared and measured density (for imported data, the density of the
  trajectory's boxes), where the AA data came from and how fast it ran, the noise floor and the
  tolerances of each state;
- findings in plain language, every comparison weighed against the noise floor of the states it
  is about: a gap within the noise floor is called *indistinguishable*;
- the units that failed or did not run, by name, with the reason; unstable CG runs by name, or the
  statement that every run passed the blow-up checks;
- heatmaps of the transferability matrices (training set x test state) for the force RMSE, the RDF
  and ADF errors and the diffusion ratio, HIP-NN-TS and MS-CG side by side on one colour scale;
- RDF overlays per state point (with a zoom on the first peak, where the differences live) and ADF
  overlays: the mapped AA curve and every model's CG MD curve;
- force parity plots per model at its training state(s), and which frames the force errors used;
- the Langevin friction that would match the AA diffusion, per model and state;
- learning curves (drawn from each model's ``metrics.csv``, plain tick labels) with a warning next
  to any training that stopped at its epoch cap while still improving;
- a speed table (AA ns/day, for imported data from the engine's log when there is one, vs CG);
- with several network sizes (``study.network_sizes``): the speed-accuracy frontier, a figure and a
  table of each size's CG ns/day relative to the all-atom run at the same state against its RDF and
  ADF errors at and away from the training states, each size weighed against the base network with
  the noise floor;
- with several bead types (a mixture, or a molecule of several beads): the errors per type pair
  (RDF), per centre bead type (ADF), per bead type (force RMSE, D ratio), their means at and away
  from the training state with per-key noise floors, heatmaps, and RDF/ADF overlays per pair and
  centre type; with compositions: each state's mole fractions and the errors of the single-state
  models by the distance of the test composition from the training one
  (:mod:`thermocg.study.per_type`).

Everything is computed from the summary (and the models' own files for the learning curves), so a
report can be rebuilt from ``RUN_DIR/analysis/study/summary.json`` without rerunning anything.
"""

from __future__ import annotations

import csv
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thermocg.analysis.plots import finish_figure, label_axes, new_figure, pyplot
from thermocg.rundir import atomic_write_bytes, atomic_write_text
from thermocg.study.metrics import compared_families, family_label, force_noise, judge, noise_floor

METRIC_TITLES = {
    "force_rmse": ("Force RMSE on held-out mapped AA frames", "kcal/mol/A"),
    "rdf_error": ("RDF error  mean|g_CG - g_AA|", ""),
    "adf_error": ("ADF error  integral|p_CG - p_AA|", ""),
    "d_ratio": ("Diffusion ratio D_CG / D_AA", ""),
}

_WHAT = {"rdf_error": "RDF error", "adf_error": "ADF error", "force_rmse": "force RMSE"}
_WHERE = {"single_at_training_state": "at the training state", "single_away": "away from the training state"}


def _family(name: str) -> str:
    return family_label(name)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "n/a"
    if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
        return f"{v:.{digits - 1}e}"
    if abs(v) >= 10 ** digits:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------

def heatmap_figure(summary: dict[str, Any], metric: str, path: Path) -> Path | None:
    """One panel per family, rows = training sets, columns = test states, values annotated.

    Cells where the test state is in the model's training set are outlined; cells without an
    evaluation read "n/a"."""
    families = summary["families"]
    states = list(summary["states"])
    tables = summary["matrices"][metric]
    grids = []
    for family in families:
        table = tables.get(family, {})
        rows = list(table)
        grids.append((family, rows, np.array([[_nan(table[r][s]) for s in states] for r in rows], dtype=float)))
    values = np.concatenate([g.ravel() for _, _, g in grids]) if grids else np.array([])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    if metric == "d_ratio":
        cmap = "RdBu_r"
        span = max(abs(np.log10(values[values > 0])).max() if np.any(values > 0) else 1.0, 0.05)
        norm_kw = {"vmin": -span, "vmax": span}
    else:
        cmap = "viridis"
        norm_kw = {"vmin": 0.0, "vmax": float(values.max())}
    n_rows = max(len(rows) for _, rows, _ in grids)
    fig, axes = new_figure(1, len(grids), figsize=(2.0 + 1.25 * len(states) * len(grids) + 1.5, 1.6 + 0.55 * n_rows),
                           layout="constrained")
    model_states = {(m["family"], m["train_set"]): set(m["train_states"]) for m in summary["models"]}
    image = None
    for ax, (family, rows, grid) in zip(axes[0], grids):
        image = _heatmap_panel(ax, grid, rows, states, ratio=metric == "d_ratio", cmap=cmap, norm_kw=norm_kw,
                               home={r: model_states.get((family, r), set()) for r in rows})
        ax.set_title(_family(family), fontsize=10)
    axes[0][0].set_ylabel("training set")
    title, unit = METRIC_TITLES[metric]
    cbar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9)
    cbar.set_label("log10 ratio" if metric == "d_ratio" else unit)
    fig.suptitle(title + "  (orange: training state)", fontsize=10)
    finish_figure(fig, path, dpi=90, tight=False)
    return path


def _heatmap_panel(ax: Any, grid: np.ndarray, rows: list[str], states: list[str], *, ratio: bool, cmap: str,
                   norm_kw: dict[str, float], home: dict[str, set[str]]) -> Any:
    """One heatmap panel: ``grid`` (rows x states) annotated, cells of a row's training states
    (``home``) outlined; a ratio is shown on a log10 scale. Returns the image (for a colour bar)."""
    shown = np.log10(np.where(grid > 0, grid, np.nan)) if ratio else grid
    image = ax.imshow(shown, cmap=cmap, aspect="auto", **norm_kw)
    ax.set_xticks(range(len(states)), states, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    label_axes(ax, "test state")
    for i, row in enumerate(rows):
        for j, s in enumerate(states):
            # dark text on light cells: the upper part of viridis, the pale middle of RdBu
            level = image.norm(shown[i, j]) if np.isfinite(shown[i, j]) else 0.0
            light = level > 0.55 if not ratio else 0.25 < level < 0.75
            ax.text(j, i, _fmt(grid[i, j], 2), ha="center", va="center", fontsize=7,
                    color="black" if light else "white")
            if s in home.get(row, set()):
                ax.add_patch(pyplot().Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.5, ec="orange"))
    return image


def _model_colors(summary: dict[str, Any]) -> dict[str, Any]:
    cmap = pyplot().get_cmap("tab10")
    return {m["name"]: cmap(k % 10) for k, m in enumerate(summary["models"])}


def _overlay_curves(result: dict[str, Any], kind: str, key: str | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(pair or "all", x, y) curves of a summary's RDF or ADF (the to_dict of an RDFResult/ADFResult):
    every pair of the RDF (``key``: that pair only), the ADF of every centre (``key``: of the angles
    centred on that bead type)."""
    if kind == "rdf":
        r = np.asarray(result["r_A"])
        return [(pair, r, np.asarray(g, dtype=float)) for pair, g in result["g"].items() if key in (None, pair)]
    name = key or "all"
    if name not in result["p"]:
        return []
    return [(name, np.asarray(result["angle_deg"]), np.asarray(result["p"][name], dtype=float))]


def first_peak_window(r_A: np.ndarray, g: np.ndarray) -> tuple[float, float] | None:
    """The r range (A) around the first peak of g(r): from where g first reaches 5% of its maximum to
    half a peak-width past where it falls back below 1 after the peak (the first shell's edge).
    None when g has no peak above 1."""
    r_A, g = np.asarray(r_A, dtype=float), np.asarray(g, dtype=float)
    if g.size < 3 or not np.isfinite(g).any() or np.nanmax(g) <= 1.0:
        return None
    peak = int(np.nanargmax(g))
    onset = int(np.argmax(g >= 0.05 * g[peak]))
    after = np.flatnonzero(g[peak:] < 1.0)
    end = peak + int(after[0]) if after.size else len(g) - 1
    width = max(r_A[end] - r_A[peak], r_A[peak] - r_A[onset], 2 * (r_A[1] - r_A[0]))
    return float(max(r_A[0], r_A[onset] - 0.1 * width)), float(min(r_A[-1], r_A[end] + 0.5 * width))


def overlay_figure(summary: dict[str, Any], state: str, kind: str, path: Path, *, key: str | None = None) -> Path | None:
    """AA vs every model's curve at one state: ``kind`` "rdf" (g(r) per pair, and below it a zoom on
    the first peak) or "adf" (p(theta)); ``key``: one bead-type pair of the RDF, or the angles centred
    on one bead type of the ADF (default: every pair; the angles around every bead)."""
    ref = summary["references"].get(state)
    if not ref or not ref.get(kind):
        return None
    families = summary["families"]
    colors = _model_colors(summary)
    ref_curves = _overlay_curves(ref[kind], kind, key)
    if not ref_curves:
        return None
    window = None
    if kind == "rdf":
        window = first_peak_window(ref_curves[0][1], np.mean([y for _, _, y in ref_curves], axis=0))
    rows = 2 if window is not None else 1
    fig, axes = new_figure(rows, len(families), panel_size=(5.2, 3.6 if rows == 1 else 3.2), layout="constrained")
    for col, family in enumerate(families):
        panels = [axes[0][col]] + ([axes[1][col]] if rows == 2 else [])
        for row, ax in enumerate(panels):
            shown: list[np.ndarray] = []
            for curve_key, x, y in ref_curves:
                ax.plot(x, y, color="black", lw=2.2,
                        label=(f"AA {curve_key}" if kind == "rdf" else "AA") if row == 0 else None)
                shown.append(y if window is None else y[(x >= window[0]) & (x <= window[1])])
            for m in summary["models"]:
                ev = summary["evaluations"].get(m["name"], {}).get(state)
                if m["family"] != family or not ev or not ev.get(kind):
                    continue
                style = {"color": colors[m["name"]], "lw": 1.4, "ls": "-" if state in m["train_states"] else "--"}
                error = ev.get(f"{kind}_error") if key is None else (
                    ev.get("rdf_pair_errors" if kind == "rdf" else "adf_centre_errors") or {}).get(key)
                label = f"{m['train_set']} ({_fmt(error, 2)})" if row == 0 else None
                for _, x, y in _overlay_curves(ev[kind], kind, key):
                    ax.plot(x, y, label=label, **style)
                    if window is not None:
                        shown.append(y[(x >= window[0]) & (x <= window[1])])
                    label = None
            if kind == "rdf":
                label_axes(ax, "r (A)", "g(r)")
            else:
                label_axes(ax, "angle (deg)", "p (1/deg)")
            if row == 0:
                what = "" if key is None else (f", pair {key}" if kind == "rdf" else f", angles around {key}")
                ax.set_title(f"{_family(family)} at {state}{what}", fontsize=10)
                ax.legend(fontsize=7, title="trained on (error)", title_fontsize=7)
            else:
                values = np.concatenate([v[np.isfinite(v)] for v in shown if v.size]) if shown else np.array([1.0])
                lo, hi = float(values.min()), float(values.max())
                pad = 0.06 * (hi - lo + 1e-9)
                ax.set_xlim(*window)
                ax.set_ylim(lo - pad, hi + pad)
                ax.set_title(f"first peak, {window[0]:.1f}-{window[1]:.1f} A", fontsize=9)
    finish_figure(fig, path, dpi=90, tight=False)
    return path


def parity_figure(summary: dict[str, Any], family: str, path: Path) -> Path | None:
    """Model vs mapped-AA force components, one panel per model, at its training state(s)."""
    models = [m for m in summary["models"] if m["family"] == family]
    panels = []
    for m in models:
        evs = summary["evaluations"].get(m["name"], {})
        pts = [np.asarray(evs[s]["parity"]) for s in m["train_states"] if s in evs and evs[s].get("parity")]
        if pts:
            rmse = np.mean([evs[s]["force"]["rmse"] for s in m["train_states"] if s in evs])
            panels.append((m, np.concatenate(pts), rmse))
    if not panels:
        return None
    n = len(panels)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = new_figure(rows, cols, panel_size=(3.2, 3.4), layout="constrained")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, (m, pts, rmse) in zip(axes.ravel(), panels):
        lim = float(np.percentile(np.abs(pts), 99.5)) * 1.1 or 1.0
        ax.hexbin(pts[:, 0], pts[:, 1], gridsize=40, extent=(-lim, lim, -lim, lim), mincnt=1, cmap="viridis",
                  bins="log")
        ax.plot([-lim, lim], [-lim, lim], color="red", lw=0.8)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_title(f"{m['name']}\nRMSE {_fmt(rmse)} kcal/mol/A", fontsize=8)
        label_axes(ax, "mapped AA force (kcal/mol/A)", "CG model force", fontsize=7)
    fig.suptitle(f"{_family(family)}: force parity on held-out frames of the training state(s)", fontsize=10)
    finish_figure(fig, path, dpi=90, tight=False)
    return path


def read_learning_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """The rows of a trainer's ``metrics.csv`` (one per epoch) as numbers; [] when absent or unreadable."""
    try:
        with open(path, newline="") as f:
            rows = [{k: float(v) for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(f)]
    except (OSError, ValueError):
        return []
    return [r for r in rows if "epoch" in r]


def _plain_log_axis(ax: Any, axis: str = "y") -> None:
    """A log axis (``axis`` "y" or "x") labelled with plain numbers (0.5, 1, 2, 5), not powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    getattr(ax, f"set_{axis}scale")("log")
    which = getattr(ax, f"{axis}axis")
    which.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    which.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    which.set_minor_formatter(NullFormatter())


def learning_curve_figure(history: list[dict[str, float]], training: dict[str, Any] | None, name: str,
                          path: Path) -> Path | None:
    """Training and validation loss, and the validation force RMSE, per epoch (log axes with plain
    tick labels); the kept (best) epoch marked, and the epoch cap when training stopped there while
    still improving."""
    if not history:
        return None
    epochs = np.array([r["epoch"] for r in history])
    fig, axes = new_figure(1, 2, panel_size=(4.4, 3.2), layout="constrained")
    ax_loss, ax_rmse = axes[0]
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        values = np.array([r.get(key, math.nan) for r in history])
        if np.isfinite(values).any():
            ax_loss.plot(epochs, values, label=label)
    rmse = np.array([r.get("val_force_rmse_kcal_mol_A", math.nan) for r in history])
    if np.isfinite(rmse).any():
        ax_rmse.plot(epochs, rmse, color="C1")
    capped = bool(training and training.get("stopped_at_max_epochs"))
    best = training.get("best_epoch") if training else None
    for ax in (ax_loss, ax_rmse):
        _plain_log_axis(ax)
        if best:
            ax.axvline(best, color="green", ls="--", lw=0.9, label="kept (best) epoch" if ax is ax_loss else None)
    label_axes(ax_loss, "epoch", "loss")
    label_axes(ax_rmse, "epoch", "validation force RMSE (kcal/mol/A)")
    ax_loss.legend(fontsize=7, frameon=False)
    title = f"{name}: {len(history)} epochs"
    if capped:
        title += " - stopped at the epoch cap while still improving"
    fig.suptitle(title, fontsize=9, color="firebrick" if capped else "black")
    finish_figure(fig, path, dpi=90, tight=False)
    return path


#: what the frontier table and figure show
_FRONTIER_NOTE = ("Each network size (study.network_sizes; base: the train section's) trains the same models. "
                  "CG / AA ns/day: each CG run's ns/day over the all-atom ns/day of the same state, median (and "
                  "range) over the size's runs that did not blow up. Errors: the mean over the size's models at "
                  "their training states and away from them; against the base size a gap within the noise floor "
                  "of those states is indistinguishable.")

#: the sentence under the frontier: what the speeds measure
FRONTIER_SPEED_NOTE = ("Speeds are this study's own runs, timed as they ran; on a shared machine they measure "
                       "its load too (the CG/AA ratio pairs runs that may have met different loads).")


def _frontier_threads(summary: dict[str, Any]) -> str:
    """"CG: 1 thread; AA: OpenMM CPU, 1 thread" from the runs' records ("" when nothing is known)."""
    cg = sorted({t for points in (summary.get("frontier") or {}).values() for p in points
                 for t in (p.get("cg_threads") or [])})
    runs = [r for r in (summary.get("aa_run") or {}).values() if r and r.get("platform")]
    parts = [f"CG: {', '.join(str(t) for t in cg)} thread{'s' if cg != [1] else ''}"] if cg else []
    if runs:
        platforms = sorted({r["platform"] for r in runs})
        threads = sorted({r["n_threads"] for r in runs if r.get("n_threads")})
        count = f", {', '.join(str(t) for t in threads)} thread{'s' if threads != [1] else ''}" if threads else ""
        parts.append(f"AA: OpenMM {'/'.join(platforms)}{count}")
    return "; ".join(parts)


def frontier_figure(summary: dict[str, Any], path: Path) -> Path | None:
    """The speed-accuracy frontier of the network sizes: RDF error (left) and ADF error (right) against
    the CG/AA ns/day ratio (median over each size's runs; a horizontal bar spans its range), one colour
    per size, filled markers at the training states and open ones away from them (one marker shape per
    HIP-NN-TS family); the noise floor of those means as grey lines (dashed: at the training states,
    dotted: away); the vertical dotted line: as fast as the all-atom run. Without any all-atom speed
    the x axis is the CG ns/day itself. None when the study has one size."""
    frontier = summary.get("frontier") or {}
    if not frontier:
        return None
    points = [p for family_points in frontier.values() for p in family_points]
    relative = any(_finite(p.get("speed_ratio")) for p in points)
    xkey = "speed_ratio" if relative else "cg_ns_per_day"
    sizes = list(dict.fromkeys(p["size"] for p in points))
    fig, axes = new_figure(1, 2, panel_size=(5.0, 3.8), layout="constrained")
    shapes = dict(zip(frontier, ("o", "s", "^", "D")))
    for ax, metric in zip(axes[0], ("rdf_error", "adf_error")):
        shown = [0.0]
        for family, family_points in frontier.items():
            for p in family_points:
                x = _nan(p.get(xkey))
                if not math.isfinite(x):
                    continue
                color = f"C{sizes.index(p['size']) % 10}"
                ys = [_nan(p.get(f"{metric}_{where}")) for where in ("at", "away")]
                for y, filled in zip(ys, (True, False)):
                    if math.isfinite(y):
                        ax.plot([x], [y], ls="none", marker=shapes[family], ms=7, color=color,
                                mfc=color if filled else "none")
                known = [y for y in ys if math.isfinite(y)]
                shown += known
                span = p.get("speed_ratio_range") or []
                if relative and known and len(span) == 2 and all(_finite(v) for v in span):
                    ax.hlines(max(known), _nan(span[0]), _nan(span[1]), color=color, lw=0.8, alpha=0.7)
                if known:
                    ax.annotate(p["size"], (x, max(known)), textcoords="offset points", xytext=(4, 5), fontsize=8,
                                color=color)
            base = family_points[0]
            for where, ls in (("at", "--"), ("away", ":")):
                floor = _nan(base.get(f"{metric}_{where}_noise_floor"))
                if math.isfinite(floor):
                    ax.axhline(floor, color="grey", ls=ls, lw=0.9)
                    shown.append(floor)
        if relative:
            ax.axvline(1.0, color="black", ls=":", lw=0.8)
        _plain_log_axis(ax, "x")
        ax.set_ylim(0, 1.2 * max(shown) or 1.0)
        label_axes(ax, "CG / all-atom ns/day at the same state" if relative else
                   "CG ns/day (no all-atom speed known)", METRIC_TITLES[metric][0])
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="none", marker="o", color="black", label="at the training states"),
               Line2D([], [], ls="none", marker="o", color="black", mfc="none", label="away from them"),
               Line2D([], [], color="grey", ls="--", label="noise floor (at)"),
               Line2D([], [], color="grey", ls=":", label="noise floor (away)")]
    if len(frontier) > 1:
        handles += [Line2D([], [], ls="none", marker=shapes[f], color="grey", label=_family(f)) for f in frontier]
    axes[0][1].legend(handles=handles, fontsize=7, loc="best")
    threads = _frontier_threads(summary)
    fig.suptitle("Speed-accuracy frontier of the network sizes", fontsize=10)
    fig.text(0.01, 0.0, (f"{threads}. " if threads else "") + FRONTIER_SPEED_NOTE, fontsize=7, color="dimgray",
             ha="left", va="bottom", wrap=True)
    fig.get_layout_engine().set(rect=(0, 0.07, 1, 0.93))
    finish_figure(fig, path, dpi=90, tight=False)
    return path


def _friction_cells(summary: dict[str, Any]) -> list[tuple[str, dict[str, tuple[float, float, float]]]]:
    """(model, {state: (friction used, friction fitted, D ratio)}) for every model with a fit."""
    rows = []
    for m in summary["models"]:
        cells = {}
        for s, ev in summary["evaluations"].get(m["name"], {}).items():
            if _finite(ev.get("friction_fit_per_ps")):
                cells[s] = (_nan(ev.get("friction_per_ps")), float(ev["friction_fit_per_ps"]), _nan(ev.get("d_ratio")))
        if cells:
            rows.append((m["name"], cells))
    return rows


# --------------------------------------------------------------------------------------------------
# text: verdicts, comparisons, speeds
# --------------------------------------------------------------------------------------------------

def speed_rows(summary: dict[str, Any]) -> list[tuple[str, str, float, float, str]]:
    """(what, where, ns/day, speed-up vs mean AA, note) rows: AA per state (the note says where its
    speed comes from or why it is missing), then CG per model (mean over states)."""
    aa = {s: _nan(v) for s, v in summary.get("aa_ns_per_day", {}).items()}
    notes = summary.get("aa_speed_note") or {}
    known = [v for v in aa.values() if math.isfinite(v)]
    aa_mean = float(np.mean(known)) if known else math.nan
    rows = [("all-atom", s, v, 1.0 if math.isfinite(v) else math.nan, notes.get(s) or "") for s, v in aa.items()]
    for m in summary["models"]:
        speeds = [_nan(ev.get("ns_per_day")) for ev in summary["evaluations"].get(m["name"], {}).values()]
        speeds = [v for v in speeds if math.isfinite(v)]
        v = float(np.mean(speeds)) if speeds else math.nan
        note = "" if speeds else "not evaluated"
        rows.append((m["name"], "mean over states", v, v / aa_mean if aa_mean else math.nan, note))
    return rows


def _network_text(network: dict[str, Any] | None) -> str:
    """"32 / 12 / 1 / 2": features / sensitivities / interaction layers / atom layers."""
    if not network:
        return "n/a"
    return " / ".join(str(network.get(k, "?")) for k in ("n_features", "n_sensitivities", "n_interaction_layers",
                                                          "n_atom_layers"))


def _against_base(jd: dict[str, Any] | None) -> str:
    """A size's error against the base size's: "indistinguishable", "lower by 0.02 (3.1x the noise floor)"."""
    if not jd:
        return ""
    if jd["resolved"] is False:
        return "indistinguishable"
    side = "lower" if jd["lower"] == "a" else "higher"
    if jd["resolved"] is None:
        return f"{side} by {_fmt(jd['gap'])} (no noise floor known)"
    return f"{side} by {_fmt(jd['gap'])}, {_fmt(jd['in_floors'], 2)}x the noise floor"


def frontier_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """The frontier table (:func:`thermocg.study.metrics.network_frontier`): per HIP-NN-TS family and
    network size, its network, cutoff, parameters, CG ns/day and its ratio to the all-atom ns/day
    (median and range over its runs), and its mean RDF and ADF errors at and away from the training
    states, each non-base size's weighed against the base size's with the noise floor; then a row of
    the noise floors. [] with one size."""
    frontier = summary.get("frontier") or {}
    rows = []
    for family, points in frontier.items():
        for p in points:
            span = [_nan(v) for v in (p.get("speed_ratio_range") or [])]
            ratio = _fmt(p.get("speed_ratio"))
            if len(span) == 2 and all(math.isfinite(v) for v in span) and span[0] != span[1]:
                ratio += f" ({_fmt(span[0])}-{_fmt(span[1])})"
            row = {"family": _family(family)} if len(frontier) > 1 else {}
            row.update({"size": p["size"],
                        "features / sens. / int. / atom layers": _network_text(p.get("network")),
                        "cutoff (A)": _fmt(p.get("cutoff_A"), 3),
                        "parameters": f"{p['n_parameters']:,}" if p.get("n_parameters") else "n/a",
                        "CG ns/day": _fmt(p.get("cg_ns_per_day")),
                        "CG / AA ns/day": ratio})
            for metric, what in (("rdf_error", "RDF"), ("adf_error", "ADF")):
                for where, label in (("at", "at training states"), ("away", "away")):
                    text = _fmt(p.get(f"{metric}_{where}"))
                    verdict = _against_base(((p.get("vs_base") or {}).get(f"{metric}_{where}")))
                    row[f"{what} error {label}"] = text + (f" ({verdict})" if verdict else "")
            rows.append(row)
        base = points[0]
        floor = {k: "" for k in rows[-1]}
        floor["size"] = "noise floor"
        for metric, what in (("rdf_error", "RDF"), ("adf_error", "ADF")):
            for where, label in (("at", "at training states"), ("away", "away")):
                floor[f"{what} error {label}"] = _fmt(base.get(f"{metric}_{where}_noise_floor"))
        if len(frontier) > 1:
            floor["family"] = _family(family)
        rows.append(floor)
    return rows


def frontier_lines(summary: dict[str, Any]) -> list[str]:
    """Per HIP-NN-TS family with several network sizes: their speeds relative to the all-atom run, and
    each size's RDF and ADF errors against the base size's, weighed against the noise floor."""
    lines = []
    for family, points in (summary.get("frontier") or {}).items():
        speeds = ", ".join(f"{p['size']} {_fmt(p.get('speed_ratio'))}x" for p in points)
        parts = []
        base = points[0]
        for p in points[1:]:
            verdicts = []
            for metric, what in (("rdf_error", "RDF"), ("adf_error", "ADF")):
                for where, label in (("at", "at the training states"), ("away", "away from them")):
                    jd = (p.get("vs_base") or {}).get(f"{metric}_{where}")
                    if jd:
                        verdicts.append(f"{what} error {label} {_fmt(p.get(f'{metric}_{where}'))} vs "
                                        f"{_fmt(base.get(f'{metric}_{where}'))}: {_against_base(jd)}")
            if verdicts:
                parts.append(f"{p['size']} against base: " + "; ".join(verdicts))
        lines.append(f"Network sizes of {_family(family)} (speed-accuracy frontier): CG ns/day over the all-atom "
                     f"ns/day at the same state, median over each size's runs: {speeds}. "
                     + ". ".join(parts) + ("." if parts else ""))
    return lines


def _gap_sentence(lower: str, jd: dict[str, Any]) -> str:
    """"X is lower by 0.08, 5.3x the noise floor (0.015)" or "indistinguishable (...)"."""
    if jd["resolved"] is None:
        return f"{lower} is lower by {_fmt(jd['gap'])} (no noise floor known to judge the gap against)"
    if jd["resolved"]:
        return f"{lower} is lower by {_fmt(jd['gap'])}, {_fmt(jd['in_floors'], 2)}x the noise floor ({_fmt(jd['floor'])})"
    return f"indistinguishable (a gap of {_fmt(jd['gap'])}, within the noise floor {_fmt(jd['floor'])})"


def tolerance_line(summary: dict[str, Any]) -> str:
    """How "reproduces the AA structure" was judged."""
    tol = summary["tolerances"]
    parts = []
    for metric, what in (("rdf_error", "RDF error"), ("adf_error", "ADF error")):
        absolute = tol["absolute"].get(metric)
        parts.append(f"its {what} is at most {_fmt(absolute)} (absolute)" if absolute is not None else
                     f"its {what} is at most {_fmt(tol['noise_multiple'])}x that state's noise floor")
    per_state = "; ".join(f"{s}: RDF {_fmt(t.get('rdf_error'))}, ADF {_fmt(t.get('adf_error'))}"
                          for s, t in tol["per_state"].items())
    return f"Tolerance: a model reproduces the AA structure at a state when {' and '.join(parts)} ({per_state})."


def _failure_reason(summary: dict[str, Any], model: str, state: str | None = None) -> str | None:
    """Why a model (at a state) has no evaluation: the first failed unit of that model (and state)."""
    failed = summary.get("failed") or {}
    names = [f"model/{model}"] + ([f"md/{model}/{state}", f"eval/{model}/{state}"] if state else
                                  [n for n in failed if n.startswith((f"md/{model}/", f"eval/{model}/"))])
    for name in names:
        if name in failed:
            return f"{name}: {failed[name]}"
    return None


def _model_line(summary: dict[str, Any], m: dict[str, Any]) -> str:
    v = summary["verdicts"][m["name"]]
    head = f"{m['name']} (trained on {', '.join(m['train_states'])})"
    if not v["evaluated"]:
        reason = _failure_reason(summary, m["name"])
        return f"{head}: not evaluated" + (f" ({reason})." if reason else " (its units did not finish).")
    good = v["reproduces_at"]
    judged = [s for s in v["evaluated"] if s not in v["unjudged"]]
    of = f"{len(judged)} evaluated state{'s' if len(judged) != 1 else ''}"
    if len(judged) == v["n_states"]:
        of = f"{v['n_states']} state{'s' if v['n_states'] != 1 else ''}"
    text = f"{head}: reproduces the AA structure at {len(good)} of {of} ({', '.join(good) if good else 'none'})"
    if v["indistinguishable_at"]:
        text += f"; indistinguishable from the AA data (both errors within the noise floor) at " \
                f"{', '.join(v['indistinguishable_at'])}"
    if v["unjudged"]:
        text += f"; not judged at {', '.join(v['unjudged'])} (no noise floor and no absolute tolerance)"
    for s in v["not_evaluated"]:
        reason = _failure_reason(summary, m["name"], s)
        text += f"; not evaluated at {s}" + (f" ({reason})" if reason else "")
    return text + "."


def _stability_line(summary: dict[str, Any]) -> str | None:
    stability = summary.get("stability") or {}
    n_runs = stability.get("n_runs", 0)
    unstable = stability.get("unstable") or {}
    checks = stability.get("checks") or {}
    if unstable:
        names = "; ".join(f"{name} ({reason.split(';')[0]})" for name, reason in unstable.items())
        return (f"Unstable CG runs (stopped by the blow-up checks; no structure, counted as no match): "
                f"{len(unstable)} of {n_runs}: {names}.")
    if not n_runs:
        return None
    return (f"Stability: all {n_runs} evaluated CG runs passed the blow-up checks (every "
            f"{checks.get('check_interval_steps', '?')} steps and at every saved frame: temperature below "
            f"{_fmt(checks.get('max_temperature_factor'))}x the target, forces below "
            f"{_fmt(checks.get('max_force_kcal_mol_A'))} kcal/mol/A, no two beads closer than "
            f"{_fmt(checks.get('min_distance_A'))} A).")


def _family_lines(summary: dict[str, Any]) -> list[str]:
    """Family against family, at and away from the training state, and the headline verdicts."""
    fams = summary["comparison"]["families"]
    floors = summary["comparison"].get("noise_floors", {})
    if len(fams) < 2:
        return []
    a, b = compared_families(summary)
    lines = []
    for metric in ("rdf_error", "adf_error", "force_rmse"):
        for where, label in _WHERE.items():
            va, vb = _nan(fams[a][metric][where]), _nan(fams[b][metric][where])
            if not (math.isfinite(va) and math.isfinite(vb)):
                continue
            jd = judge(va, vb, _nan(floors.get(metric, {}).get(where)))
            lower = _family(a) if jd["lower"] == "a" else _family(b)
            what = _WHAT[metric]
            lines.append(f"{what[0].upper()}{what[1:]} {label} (single-state models, mean): {_family(a)} {_fmt(va)} "
                         f"vs {_family(b)} {_fmt(vb)}: {_gap_sentence(lower, jd)}.")
    for metric, what in (("rdf_error", "RDF"), ("adf_error", "ADF")):
        ga, gb = _nan(fams[a][metric]["single_away"]), _nan(fams[b][metric]["single_away"])
        if not (math.isfinite(ga) and math.isfinite(gb)):
            continue
        jd = judge(ga, gb, _nan(floors.get(metric, {}).get("single_away")))
        better = _family(a) if jd["lower"] == "a" else _family(b)
        if jd["resolved"] is False:
            lines.append(f"Verdict ({what}): neither family transfers better: mean {what} error away from the training "
                         f"state {_family(a)} {_fmt(ga)} vs {_family(b)} {_fmt(gb)}, a gap of {_fmt(jd['gap'])} within "
                         f"the noise floor ({_fmt(jd['floor'])}): indistinguishable.")
        elif jd["resolved"]:
            lines.append(f"Verdict ({what}): across the study's states, {better} transfers better: mean {what} error "
                         f"away from the training state {_fmt(min(ga, gb))} vs {_fmt(max(ga, gb))}, a gap of "
                         f"{_fmt(jd['gap'])}, {_fmt(jd['in_floors'], 2)}x the noise floor ({_fmt(jd['floor'])}).")
        else:
            lines.append(f"Verdict ({what}): {better} has the lower mean {what} error away from the training state "
                         f"({_fmt(min(ga, gb))} vs {_fmt(max(ga, gb))}); no noise floor is known to judge the gap.")
    return lines


def _pooled_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    for family, cmp in summary["comparison"]["pooled_vs_single"].items():
        for name, c in cmp.items():
            for metric, what in (("rdf_error", "RDF"), ("adf_error", "ADF")):
                p, s_ = _nan(c.get(f"pooled_{metric}")), _nan(c.get(f"single_away_{metric}"))
                if not (math.isfinite(p) and math.isfinite(s_)):
                    continue
                jd = judge(p, s_, _nan(c.get(f"{metric}_noise_floor")))
                head = (f"{_family(family)} pooled model '{name}': mean {what} error {_fmt(p)} vs {_fmt(s_)} for "
                        f"single-state models away from their training state: ")
                if jd["resolved"] is False:
                    lines.append(head + f"indistinguishable (a gap of {_fmt(jd['gap'])}, within the noise floor "
                                        f"{_fmt(jd['floor'])}).")
                    continue
                side = "lower" if p < s_ else "higher"
                size = (f", {_fmt(jd['in_floors'], 2)}x the noise floor ({_fmt(jd['floor'])})" if jd["resolved"]
                        else " (no noise floor known to judge the gap against)")
                lines.append(head + f"the pooled model is {side} by {_fmt(jd['gap'])}{size}.")
    return lines


def _held_out_lines(summary: dict[str, Any]) -> list[str]:
    """Per pooled model with held-out states: its mean RDF/ADF errors at the states it saw in training
    and at the held-out ones, and for a temperature-dependent model the held-out errors of the
    temperature-agnostic model of its family trained on the same states, weighed against the noise
    floor of the held-out states."""
    lines = []
    held_out = (summary.get("comparison") or {}).get("held_out") or {}
    for m in summary["models"]:
        entry = held_out.get(m["name"])
        if not entry or not m["pooled"] or not entry["held_out"]:
            continue
        parts = []
        for metric, what in (("rdf_error", "RDF"), ("adf_error", "ADF")):
            seen, held = _nan(entry.get(f"{metric}_seen")), _nan(entry.get(f"{metric}_held_out"))
            if not math.isfinite(held):
                continue
            text = (f"{what} error {_fmt(held)} held out vs {_fmt(seen)} seen (noise floor "
                    f"{_fmt(entry.get(f'{metric}_held_out_noise_floor'))})")
            base = _nan(entry.get(f"baseline_{metric}_held_out"))
            if entry.get("baseline") and math.isfinite(base):
                jd = judge(held, base, _nan(entry.get(f"{metric}_held_out_noise_floor")))
                verdict = ("indistinguishable from it: the gap is within the noise floor" if jd["resolved"] is False
                           else f"{'lower' if held < base else 'higher'} by {_fmt(jd['gap'])}, "
                                f"{_fmt(jd['in_floors'], 2)}x the noise floor" if jd["resolved"]
                           else f"{'lower' if held < base else 'higher'}; no noise floor known to judge the gap")
                text += (f"; {entry['baseline']} there: {_fmt(base)}, ratio {_fmt(entry.get(f'{metric}_held_out_ratio'))}, "
                         f"{verdict}")
            parts.append(text)
        if parts:
            lines.append(f"Held-out states of {m['name']} (trained at {', '.join(entry['trained_at'])}; held out: "
                         f"{', '.join(entry['held_out'])}): " + "; ".join(parts) + ".")
    return lines


def _diffusion_lines(summary: dict[str, Any]) -> list[str]:
    """The D ratios and the friction that would match the AA diffusion."""
    ratios = [_nan(ev.get("d_ratio")) for evs in summary["evaluations"].values() for ev in evs.values()]
    ratios = [r for r in ratios if math.isfinite(r)]
    if not ratios:
        return []
    friction = summary.get("friction") or {}
    used = "the fitted friction of each (model, state) (study.langevin_friction: match_diffusion)" \
        if friction.get("mode") == "match_diffusion" else \
        f"a Langevin friction of {_fmt(friction.get('simulate_friction_per_ps'))}/ps (simulate.friction_per_ps)"
    lines = [f"Dynamics: D_CG / D_AA from {_fmt(min(ratios))} to {_fmt(max(ratios))} over the {len(ratios)} "
             f"evaluated runs, which used {used}."]
    per_state = []
    for s in summary["states"]:
        fits = [float(evs[s]["friction_fit_per_ps"]) for evs in summary["evaluations"].values()
                if s in evs and _finite(evs[s].get("friction_fit_per_ps"))]
        if fits:
            per_state.append(f"{s} {_fmt(float(np.median(fits)))}/ps")
    if per_state:
        lines.append("Langevin friction that would bring D_CG to D_AA (median over models; per model in the "
                     f"diffusion table): {', '.join(per_state)}. A value at or below 0 means the model is slower "
                     "than AA even without a thermostat.")
    return lines


def _training_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    for name, t in (summary.get("training") or {}).items():
        if t and t.get("stopped_at_max_epochs"):
            lines.append(f"Training of {name} stopped at train.max_epochs ({t.get('n_epochs')}) while still improving "
                         f"(best epoch {t.get('best_epoch')}): its errors would likely fall with more epochs.")
    return lines


def _force_frames_line(summary: dict[str, Any]) -> str | None:
    parts = []
    for s in summary["states"]:
        which = next((evs[s].get("force_frames") for evs in summary["evaluations"].values()
                      if s in evs and evs[s].get("force_frames")), None)
        if which:
            parts.append(f"{s}: {which}")
    return "Force errors were computed on " + "; ".join(parts) + "." if parts else None


def verdict_lines(summary: dict[str, Any]) -> list[str]:
    """Plain-language findings with the numbers behind them; every comparison weighed against the noise
    floor of its states (a gap within it is "indistinguishable")."""
    lines = [tolerance_line(summary)]
    noise = summary.get("noise") or {}
    if noise:
        per_state = "; ".join(f"{s}: RDF {_fmt(v.get('rdf_error'))}, ADF {_fmt(v.get('adf_error'))}"
                              for s, v in noise.items())
        lines.append(f"Noise floor (the AA data, first half vs second half): {per_state}. A gap within the noise "
                     "floor is reported as indistinguishable.")
    distance = state_distance_line(summary)
    if distance:
        lines.append(distance)
    failed = summary.get("failed") or {}
    if failed:
        lines.append(f"Failed or not run ({len(failed)} units): " + "; ".join(f"{n}: {r}" for n, r in failed.items())
                     + ".")
    lines += [_model_line(summary, m) for m in summary["models"]]
    stability = _stability_line(summary)
    if stability:
        lines.append(stability)
    lines += _training_lines(summary)
    lines += _family_lines(summary)
    lines += per_type_lines(summary)
    lines += _pooled_lines(summary)
    lines += _held_out_lines(summary)
    lines += composition_lines(summary)
    lines += _diffusion_lines(summary)
    lines += frontier_lines(summary)
    frames = _force_frames_line(summary)
    if frames:
        lines.append(frames)
    return lines


def composition_text(fractions: dict[str, float] | None) -> str:
    """Mole fractions in words: ``x(methanol_trappe) = 0.25, x(water_spce) = 0.75``; "" for None."""
    return ", ".join(f"x({name}) = {x:.4g}" for name, x in (fractions or {}).items())


def _state_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """One row per state: declared state point (and for a mixture its composition), measured density,
    AA source and speed, noise, tolerance."""
    rows = []
    imported = set(summary.get("imported") or [])
    mixture = any(values.get("mole_fractions") for values in summary["states"].values())
    for s, values in summary["states"].items():
        noise = (summary.get("noise") or {}).get(s, {})
        tol = summary["tolerances"]["per_state"].get(s, {})
        speed = summary.get("aa_ns_per_day", {}).get(s)
        note = (summary.get("aa_speed_note") or {}).get(s) or ""
        rows.append({
            "state": s,
            "declared": ", ".join(f"{k} = {v:g}" for k, v in values.items() if k != "mole_fractions"),
            **({"composition": composition_text(values.get("mole_fractions"))} if mixture else {}),
            "measured density (g/cm^3)": _fmt(summary.get("measured_density_g_cm3", {}).get(s), 4),
            "AA data": "imported" if s in imported else "generated",
            "AA ns/day": f"{_fmt(speed)}" + (f" ({note})" if note and not _finite(speed) else ""),
            "noise floor RDF / ADF": f"{_fmt(noise.get('rdf_error'))} / {_fmt(noise.get('adf_error'))}",
            "tolerance RDF / ADF": f"{_fmt(tol.get('rdf_error'))} / {_fmt(tol.get('adf_error'))}",
        })
    return rows


def _state_distance(summary: dict[str, Any], metric: str, a: str, b: str) -> tuple[float, float]:
    """(error of state a's AA structure judged against state b's, that error in noise floors of b)."""
    value = _nan(summary["state_distances"][metric][a].get(b))
    floor = _nan(((summary.get("noise") or {}).get(b) or {}).get(metric))
    return value, judge(value, 0.0, floor)["in_floors"]


def _state_pairs(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pair of states (in config order) with the AA-vs-AA errors between them and each error's
    ratio to the noise floor of the state judged against (the second)."""
    distances = summary.get("state_distances") or {}
    labels = [s for s in summary["states"] if s in (distances.get("rdf_error") or {})]
    pairs = []
    for k, a in enumerate(labels):
        for b in labels[k + 1:]:
            entry = {"from": a, "to": b}
            for metric in ("rdf_error", "adf_error"):
                entry[metric], entry[f"{metric}_floors"] = _state_distance(summary, metric, a, b)
            pairs.append(entry)
    return pairs


def state_distance_line(summary: dict[str, Any]) -> str | None:
    """A finding: how far apart the states' AA structures are, against the noise floor (None with one state)."""
    pairs = [p for p in _state_pairs(summary) if _finite(p["rdf_error_floors"]) and _finite(p["adf_error_floors"])]
    if not pairs:
        return None
    widest = max(pairs, key=lambda p: max(p["rdf_error_floors"], p["adf_error_floors"]))
    close = [p for p in pairs if p["rdf_error_floors"] <= 1 and p["adf_error_floors"] <= 1]
    text = ("How far apart the states are (one state's AA structure judged against another's, with the same "
            "RDF and ADF errors: what a model has to bridge to transfer between them): the widest pair, "
            f"{widest['from']} against {widest['to']}, differs by RDF {_fmt(widest['rdf_error'])} "
            f"({_fmt(widest['rdf_error_floors'], 2)}x the noise floor) and ADF {_fmt(widest['adf_error'])} "
            f"({_fmt(widest['adf_error_floors'], 2)}x)")
    if close:
        text += (f"; {len(close)} of {len(pairs)} pairs differ by less than the noise floor in both "
                 "(" + ", ".join(f"{p['from']}/{p['to']}" for p in close) + "): between those, transfer cannot be "
                 "told apart from ignoring the state")
    else:
        text += f"; every one of the {len(pairs)} pairs differs by more than the noise floor in RDF or ADF"
    return text + "."


def state_distance_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """The AA-vs-AA matrix: row = the state whose AA structure is judged, column = the state it is judged
    against; cells "RDF / ADF", with their multiple of the column state's noise floor."""
    rdf = (summary.get("state_distances") or {}).get("rdf_error") or {}
    if len(rdf) < 2:
        return []
    rows = []
    for a in rdf:
        row = {"AA structure of \\ judged at": a}
        for b in rdf[a]:
            if a == b:
                row[b] = "-"
                continue
            (r, r_floors), (d, d_floors) = (_state_distance(summary, m, a, b) for m in ("rdf_error", "adf_error"))
            row[b] = f"{_fmt(r)} / {_fmt(d)} ({_fmt(r_floors, 2)}x / {_fmt(d_floors, 2)}x)"
        rows.append(row)
    return rows


STATE_DISTANCE_NOTE = ("Each cell: the RDF / ADF error of the row state's AA structure judged against the column "
                       "state's (as a CG run at the column state is judged), and its multiple of the column "
                       "state's noise floor. A model that reproduced the row state's structure exactly would "
                       "show this error at the column state; below the noise floor the two states cannot tell a "
                       "model that transfers from one that ignores the state.")


def _matrix_md(summary: dict[str, Any], metric: str, family: str) -> str:
    states = list(summary["states"])
    table = summary["matrices"][metric].get(family, {})
    models = {m["train_set"]: m["train_states"] for m in summary["models"] if m["family"] == family}
    out = ["| trained on | " + " | ".join(states) + " | trained at |", "|---" * (len(states) + 2) + "|"]
    for row, values in table.items():
        seen = models.get(row, [])
        where = "every state" if set(seen) == set(states) else ", ".join(seen)
        out.append(f"| {row} | " + " | ".join(_fmt(values[s]) for s in states) + f" | {where} |")
    return "\n".join(out)


def _matrix_html(summary: dict[str, Any], metric: str, family: str) -> str:
    states = list(summary["states"])
    table = summary["matrices"][metric].get(family, {})
    models = {m["train_set"]: set(m["train_states"]) for m in summary["models"] if m["family"] == family}
    head = "".join(f"<th>{html.escape(s)}</th>" for s in states)
    body = []
    for row, values in table.items():
        cells = "".join(
            f"<td class='{'home' if s in models.get(row, set()) else ''}'>{_fmt(values[s])}</td>" for s in states)
        body.append(f"<tr><th>{html.escape(row)}</th>{cells}</tr>")
    return f"<table><tr><th>trained on \\ test</th>{head}</tr>{''.join(body)}</table>"


def _table_html(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _table_md(rows: list[dict[str, str]]) -> list[str]:
    if not rows:
        return []
    keys = list(rows[0])
    return (["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
            + ["| " + " | ".join(str(r[k]).replace("|", "/") for k in keys) + " |" for r in rows])


def _friction_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    states = list(summary["states"])
    rows = []
    for name, cells in _friction_cells(summary):
        row = {"model": name}
        for s in states:
            used, fit, ratio = cells.get(s, (math.nan, math.nan, math.nan))
            row[s] = f"{_fmt(fit)} (ran at {_fmt(used)}, D ratio {_fmt(ratio)})" if math.isfinite(fit) else "n/a"
        rows.append(row)
    return rows


def _failed_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    return [{"unit": n, "reason": r} for n, r in (summary.get("failed") or {}).items()]


# --------------------------------------------------------------------------------------------------
# several bead types, and composition as a state variable (thermocg.study.per_type)
# --------------------------------------------------------------------------------------------------

def _per_type(summary: dict[str, Any]) -> dict[str, Any]:
    return summary.get("per_type") or {}


def several_types(summary: dict[str, Any]) -> bool:
    """Whether the study has more than one bead type (then its per-type results are reported)."""
    per_type = _per_type(summary)
    return len(per_type.get("types") or []) > 1 or len(per_type.get("pairs") or []) > 1


def per_type_heatmap_figure(summary: dict[str, Any], metric: str, path: Path) -> Path | None:
    """The matrices of one per-key metric (``rdf_pair_error``, ``adf_centre_error``, ``force_rmse`` or
    ``d_ratio`` of :func:`thermocg.study.per_type.per_type_summary`): one row of panels per key (type
    pair or bead type), one column per family, one colour scale; training states outlined."""
    from thermocg.study.per_type import PER_TYPE_METRICS

    by_key = _per_type(summary).get("matrices", {}).get(metric) or {}
    families = summary["families"]
    states = list(summary["states"])
    panels = []
    for key, tables in by_key.items():
        for family in families:
            table = tables.get(family, {})
            rows = list(table)
            panels.append((key, family, rows, np.array([[_nan(table[r][s]) for s in states] for r in rows], dtype=float)))
    values = np.concatenate([g.ravel() for *_, g in panels]) if panels else np.array([])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    ratio = metric == "d_ratio"
    if ratio:
        positive = values[values > 0]
        span = max(float(np.abs(np.log10(positive)).max()) if positive.size else 1.0, 0.05)
        cmap, norm_kw = "RdBu_r", {"vmin": -span, "vmax": span}
    else:
        cmap, norm_kw = "viridis", {"vmin": 0.0, "vmax": float(values.max())}
    n_rows = max(len(rows) for _, _, rows, _ in panels)
    fig, axes = new_figure(len(by_key), len(families), panel_size=(1.6 + 1.2 * len(states), 1.4 + 0.5 * n_rows),
                           layout="constrained")
    model_states = {(m["family"], m["train_set"]): set(m["train_states"]) for m in summary["models"]}
    image = None
    for ax, (key, family, rows, grid) in zip(axes.ravel(), panels):
        image = _heatmap_panel(ax, grid, rows, states, ratio=ratio, cmap=cmap, norm_kw=norm_kw,
                               home={r: model_states.get((family, r), set()) for r in rows})
        ax.set_title(f"{_family(family)}: {key}", fontsize=9)
        ax.set_ylabel("training set", fontsize=8)
    cbar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9)
    cbar.set_label("log10 ratio" if ratio else "")
    fig.suptitle(PER_TYPE_METRICS[metric][0] + "  (orange: training state)", fontsize=10)
    finish_figure(fig, path, dpi=90, tight=False)
    return path


def _per_type_figures(summary: dict[str, Any], fig_dir: Path, rel: Any) -> dict[str, dict[str, str | None]]:
    """The per-type figures of a study with several bead types: a heatmap per per-key metric, and
    RDF overlays per (state, pair) and ADF overlays per (state, centre type)."""
    if not several_types(summary):
        return {"heatmaps": {}, "rdf": {}, "adf": {}}
    per_type = _per_type(summary)
    heatmaps = {m: rel(per_type_heatmap_figure(summary, m, fig_dir / f"heatmap_per_type_{m}.png"))
                for m in per_type.get("matrices", {})}
    rdf, adf = {}, {}
    for state in summary["states"]:
        for pair in per_type.get("pairs", []):
            rdf[f"{state} {pair}"] = rel(overlay_figure(summary, state, "rdf", fig_dir / f"rdf_{state}_{pair}.png",
                                                        key=pair))
        for name in per_type.get("types", []):
            adf[f"{state} {name}"] = rel(overlay_figure(summary, state, "adf", fig_dir / f"adf_{state}_{name}.png",
                                                        key=name))
    return {"heatmaps": heatmaps, "rdf": rdf, "adf": adf}


_PER_TYPE_WHAT = {"rdf_pair_error": "RDF error of pair", "adf_centre_error": "ADF error around",
                  "force_rmse": "force RMSE of", "d_ratio": "abs log(D_CG/D_AA) of"}


def per_type_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """The per-key means: one row per (metric, key); per family the single-state models at and away
    from their training state and each pooled model (mean over every state), and the noise floor of
    the "away" means (per-key floors: :mod:`thermocg.study.per_type`)."""
    rows = []
    for metric, by_key in (_per_type(summary).get("means") or {}).items():
        for key, by_family in by_key.items():
            row = {"metric": _PER_TYPE_WHAT.get(metric, metric), "key": key}
            floors = []
            for family, means in by_family.items():
                label = _family(family)
                row[f"{label} home"] = _fmt(means["single_at_training_state"]["mean"])
                row[f"{label} away"] = _fmt(means["single_away"]["mean"])
                for name, pooled in means["pooled"].items():
                    row[f"{label} {name}"] = _fmt(pooled["mean"])
                floors.append(_nan(means["single_away"]["noise_floor"]))
            finite = [f for f in floors if math.isfinite(f)]
            row["noise floor (away)"] = _fmt(float(np.mean(finite)) if finite else math.nan)
            rows.append(row)
    return rows


def diffusion_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """Per state, the AA self-diffusion coefficient of each bead type (1e-5 cm^2/s) and the range of
    D_CG/D_AA of each type over the models run there."""
    from thermocg.analysis.msd import A2_PER_FS_TO_1E5_CM2_PER_S

    types = _per_type(summary).get("types") or []
    ratios = (_per_type(summary).get("matrices") or {}).get("d_ratio") or {}
    rows = []
    for s in summary["states"]:
        d_aa = ((summary.get("references") or {}).get(s) or {}).get("diffusion_per_type_A2_fs") or {}
        row = {"state": s}
        for t in types:
            row[f"D_AA {t} (1e-5 cm^2/s)"] = _fmt(_nan(d_aa.get(t)) * A2_PER_FS_TO_1E5_CM2_PER_S)
            values = [v for table in (ratios.get(t) or {}).values() for cells in table.values()
                      for v in [_nan(cells.get(s))] if math.isfinite(v)]
            row[f"D_CG/D_AA {t}"] = f"{_fmt(min(values))}-{_fmt(max(values))}" if values else "n/a"
        rows.append(row)
    return rows


def per_type_lines(summary: dict[str, Any]) -> list[str]:
    """Per type pair (RDF) and centre type (ADF): the families' mean errors away from the training
    state, weighed against that key's noise floor. Empty for one bead type."""
    if not several_types(summary) or len(summary["families"]) < 2:
        return []
    a, b = compared_families(summary)
    lines = []
    for metric, what in (("rdf_pair_error", "RDF error of the pair"), ("adf_centre_error", "ADF error of the angles around")):
        for key, by_family in ((_per_type(summary).get("means") or {}).get(metric) or {}).items():
            ma, mb = by_family[a]["single_away"], by_family[b]["single_away"]
            va, vb = _nan(ma["mean"]), _nan(mb["mean"])
            if not (math.isfinite(va) and math.isfinite(vb)):
                continue
            floors = [f for f in (_nan(ma["noise_floor"]), _nan(mb["noise_floor"])) if math.isfinite(f)]
            jd = judge(va, vb, float(np.mean(floors)) if floors else math.nan)
            lower = _family(a) if jd["lower"] == "a" else _family(b)
            lines.append(f"{what} {key} away from the training state (single-state models, mean): {_family(a)} "
                         f"{_fmt(va)} vs {_family(b)} {_fmt(vb)}: {_gap_sentence(lower, jd)}.")
    return lines


def _distance_label(row: dict[str, Any], with_temperature: bool) -> str:
    text = f"|dx| {_fmt(row['delta_x'], 3)}"
    return text + (f", |dT| {_fmt(row['delta_T_K'])} K" if with_temperature else "")


def composition_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """Errors of the single-state models by the distance of the test state's composition from their
    training state's: one row per (metric, distance), a column per family and the noise floor."""
    composition = summary.get("composition") or {}
    rows = []
    for metric, by_family in (composition.get("by_distance") or {}).items():
        distances: dict[tuple[float, float], dict[str, Any]] = {}
        for family, entries in by_family.items():
            for entry in entries:
                distances.setdefault((entry["delta_x"], entry["delta_T_K"]), {})[family] = entry
        with_t = any(dt for _, dt in distances)
        for (dx, dt), cells in distances.items():
            row = {"metric": _WHAT.get(metric, metric),
                   "distance from the training state": _distance_label({"delta_x": dx, "delta_T_K": dt}, with_t)}
            floors = []
            for family in summary["families"]:
                entry = cells.get(family)
                row[_family(family)] = f"{_fmt(entry['mean'])} (n={entry['n']})" if entry else "n/a"
                if entry:
                    floors.append(_nan(entry["noise_floor"]))
            finite = [f for f in floors if math.isfinite(f)]
            row["noise floor"] = _fmt(float(np.mean(finite)) if finite else math.nan)
            rows.append(row)
    return rows


def composition_lines(summary: dict[str, Any]) -> list[str]:
    """Per family and structural error: the error at the training composition against the error at the
    farthest composition, weighed against the noise floor (does the model lose accuracy as the
    composition moves away?). Empty when the states have no compositions or one composition."""
    composition = summary.get("composition") or {}
    lines = []
    for metric in ("rdf_error", "adf_error"):
        for family, entries in ((composition.get("by_distance") or {}).get(metric) or {}).items():
            same_t = [e for e in entries if not e["delta_T_K"] and math.isfinite(_nan(e["mean"]))]
            home = next((e for e in same_t if e["delta_x"] == 0), None)
            far = max((e for e in same_t if e["delta_x"] > 0), key=lambda e: e["delta_x"], default=None)
            if home is None or far is None:
                continue
            floor = _nan(far["noise_floor"])
            jd = judge(_nan(home["mean"]), _nan(far["mean"]), floor)
            series = ", ".join(f"{_fmt(e['mean'])} at |dx| {_fmt(e['delta_x'], 3)}" for e in same_t)
            head = f"{_family(family)} single-composition models, {_WHAT[metric]} by composition distance: {series}"
            if jd["resolved"] is False:
                tail = (f"the error at |dx| {_fmt(far['delta_x'], 3)} is indistinguishable from that at the training "
                        f"composition (a gap of {_fmt(jd['gap'])}, within the noise floor {_fmt(jd['floor'])})")
            elif jd["resolved"]:
                side = "higher" if jd["lower"] == "a" else "lower"
                tail = (f"at |dx| {_fmt(far['delta_x'], 3)} the error is {side} by {_fmt(jd['gap'])}, "
                        f"{_fmt(jd['in_floors'], 2)}x the noise floor ({_fmt(jd['floor'])})")
            else:
                tail = "no noise floor is known to judge the change against"
            lines.append(f"{head}: {tail}.")
    return lines


def _per_type_markdown(summary: dict[str, Any], figures: "_Figures") -> list[str]:
    md: list[str] = []
    if several_types(summary):
        md += ["", "## Per bead type", "",
               "Means of the single-state models at (home) and away from their training state and of each pooled "
               "model over every state; per-key noise floors (the AA data's halves; forces: the evaluated frames' "
               "halves). Full matrices in analysis/study/per_type.csv.", ""]
        md += _table_md(per_type_rows(summary))
        per_type = _per_type(summary)
        for metric in ("rdf_pair_error", "adf_centre_error"):
            for key, tables in (per_type.get("matrices", {}).get(metric) or {}).items():
                md += ["", f"**{_PER_TYPE_WHAT[metric]} {key}**", ""]
                for family in summary["families"]:
                    md += [f"{_family(family)}", "", _matrix_rows_md(summary, tables.get(family, {})), ""]
        for metric, path in figures.per_type.get("heatmaps", {}).items():
            if path:
                md += [f"![{metric}]({path})", ""]
        md += ["Self-diffusion per bead type: the AA value and the range of D_CG/D_AA over the models:", ""]
        md += _table_md(diffusion_rows(summary))
    rows = composition_rows(summary)
    if rows:
        compositions = (summary.get("composition") or {}).get("compositions") or {}
        md += ["", "## Composition", ""]
        md += [f"- {s}: {composition_text(x) or 'no composition'}" for s, x in compositions.items()]
        md += ["", "Single-state models by the distance of the test composition from the training one "
               "(|dx|: the largest difference of a mole fraction):", ""] + _table_md(rows)
    return md


def _matrix_rows_md(summary: dict[str, Any], table: dict[str, dict[str, float]]) -> str:
    states = list(summary["states"])
    out = ["| trained on | " + " | ".join(states) + " |", "|---" * (len(states) + 1) + "|"]
    out += [f"| {row} | " + " | ".join(_fmt(values[s]) for s in states) + " |" for row, values in table.items()]
    return "\n".join(out)


def _per_type_html(summary: dict[str, Any], figures: "_Figures") -> list[str]:
    h: list[str] = []
    if several_types(summary):
        h.append("<h2>Per bead type</h2><p class='note'>The headline errors above are over every bead (the RDF error "
                 "is the mean over the type pairs). Here per type pair (RDF), per centre bead type (ADF: angles "
                 "between neighbours of any type within the same shell), per bead type (forces, diffusion): the "
                 "single-state models at (home) and away from their training state, each pooled model over every "
                 "state, and the noise floor of the away means. Full matrices in analysis/study/per_type.csv.</p>")
        h.append(_table_html(per_type_rows(summary)))
        h += [f"<img src='{p}' alt='{m}'>" for m, p in figures.per_type.get("heatmaps", {}).items() if p]
        h.append("<h3>Self-diffusion per bead type</h3><p class='note'>The AA value and the range of "
                 "D_CG/D_AA over the models run at each state.</p>" + _table_html(diffusion_rows(summary)))
        h.append("<h3>RDF per type pair: AA vs CG models</h3><p class='note'>Solid: model at its training state; "
                 "dashed: away from it. Legend: training set (that pair's RDF error).</p>")
        h += [f"<img src='{p}' alt='rdf {k}'>" for k, p in figures.per_type.get("rdf", {}).items() if p]
        h.append("<h3>ADF per centre bead type</h3>")
        h += [f"<img src='{p}' alt='adf {k}'>" for k, p in figures.per_type.get("adf", {}).items() if p]
    rows = composition_rows(summary)
    if rows:
        h.append("<h2>Composition</h2><p class='note'>Single-state models by the distance of the test state's "
                 "composition from their training state's (|dx|: the largest difference of a mole fraction), with "
                 "the noise floor of those entries.</p>" + _table_html(rows))
    return h


# --------------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1150px;
       color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 1.8em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td.home { background: #fff1d6; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0; } img.small { max-width: 560px; }
p.headline { font-size: 1.1em; background: #eef5ff; border-left: 4px solid #3a7bd5; padding: 0.6em 1em; }
p.warning { background: #fff0f0; border-left: 4px solid #c0392b; padding: 0.4em 1em; }
ul.verdict li { margin: 0.25em 0; } .note { color: #666; font-size: 0.9em; }
"""


@dataclass
class _Figures:
    """The report's figures (paths relative to the report folder; None: nothing to draw)."""

    heatmaps: dict[str, str | None]
    rdf: dict[str, str | None]
    adf: dict[str, str | None]
    parity: dict[str, str | None]
    curves: dict[str, list[str]]
    #: several bead types: "heatmaps" (per-key metric), "rdf" ("<state> <pair>"), "adf" ("<state> <type>")
    per_type: dict[str, dict[str, str | None]] = field(default_factory=dict)
    #: several network sizes: the speed-accuracy frontier
    frontier: str | None = None


def _model_figures(summary: dict[str, Any], fig_dir: Path, run_dir: str | os.PathLike | None,
                   rel: Any) -> dict[str, list[str]]:
    """Per model: its learning curve, drawn from RUN_DIR/models/<name>/metrics.csv (the trainer's own
    learning_curve.png when there is no metrics.csv), and the MS-CG fit's pair plots, copied."""
    curves: dict[str, list[str]] = {}
    if run_dir is None:
        return curves
    for m in summary["models"]:
        model_dir = Path(run_dir) / "models" / m["name"]
        history = read_learning_history(model_dir / "metrics.csv")
        drawn = learning_curve_figure(history, (summary.get("training") or {}).get(m["name"]), m["name"],
                                      fig_dir / f"learning_curve_{m['name']}.png")
        sources = [] if drawn else [model_dir / "learning_curve.png"]
        sources += sorted(model_dir.glob("pair_*.png"))
        paths = [rel(drawn)] if drawn else []
        for src in sources:
            if src.exists():
                paths.append(rel(atomic_write_bytes(fig_dir / f"{src.stem}_{m['name']}.png", src.read_bytes())))
        if paths:
            curves[m["name"]] = paths
    return curves


def _draw_figures(summary: dict[str, Any], out_dir: Path, run_dir: str | os.PathLike | None) -> _Figures:
    """Every figure into ``out_dir/figures`` (model files found in RUN_DIR/models/<name>/ included, so
    that the report is self-contained)."""
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)

    def rel(path: Path | None) -> str | None:
        return None if path is None else os.path.relpath(path, out_dir)

    states = list(summary["states"])
    # several type pairs: one RDF figure per (state, pair) instead (_per_type_figures)
    rdf_states = [] if several_types(summary) else states
    return _Figures(
        heatmaps={m: rel(heatmap_figure(summary, m, fig_dir / f"heatmap_{m}.png")) for m in METRIC_TITLES},
        rdf={s: rel(overlay_figure(summary, s, "rdf", fig_dir / f"rdf_{s}.png")) for s in rdf_states},
        adf={s: rel(overlay_figure(summary, s, "adf", fig_dir / f"adf_{s}.png")) for s in states},
        parity={f: rel(parity_figure(summary, f, fig_dir / f"parity_{f}.png")) for f in summary["families"]},
        curves=_model_figures(summary, fig_dir, run_dir, rel),
        per_type=_per_type_figures(summary, fig_dir, rel),
        frontier=rel(frontier_figure(summary, fig_dir / "frontier.png")),
    )


def _markdown(summary: dict[str, Any], title: str, lines: list[str], figures: _Figures) -> str:
    md = [f"# {title}", "", "## States", ""] + _table_md(_state_rows(summary))
    distances = state_distance_rows(summary)
    if distances:
        md += ["", "## How far apart the states are (AA against AA)", "", STATE_DISTANCE_NOTE, ""] + _table_md(distances)
    md += ["", "## Findings", ""] + [f"- {line}" for line in lines]
    if summary.get("failed"):
        md += ["", "## Failed units", ""] + _table_md(_failed_rows(summary))
    md += ["", "Matrices: rows are training sets, columns test states; the last column names the states each "
           "model was trained at (the others are held out for it)."]
    for metric, (name, unit) in METRIC_TITLES.items():
        md += ["", f"## {name}" + (f" ({unit})" if unit else ""), ""]
        for family in summary["families"]:
            md += [f"**{_family(family)}**", "", _matrix_md(summary, metric, family), ""]
        if figures.heatmaps.get(metric):
            md += [f"![{metric}]({figures.heatmaps[metric]})", ""]
    md += _per_type_markdown(summary, figures) + [""]
    friction = _friction_rows(summary)
    if friction:
        md += ["## Langevin friction matching the AA diffusion (1/ps)", ""] + _table_md(friction) + [""]
    md += ["## Speed", "", "| run | where | ns/day | vs AA | note |", "|---|---|---|---|---|"]
    md += [f"| {a} | {b} | {_fmt(c)} | {_fmt(d, 2)} | {e} |" for a, b, c, d, e in speed_rows(summary)]
    frontier = frontier_rows(summary)
    if frontier:
        md += ["", "## Speed-accuracy frontier of the network sizes", "", _FRONTIER_NOTE, ""] + _table_md(frontier)
        if figures.frontier:
            md += ["", f"![speed-accuracy frontier]({figures.frontier})"]
        threads = _frontier_threads(summary)
        md += ["", (f"{threads}. " if threads else "") + FRONTIER_SPEED_NOTE]
    return "\n".join(md) + "\n"


def _html_head(summary: dict[str, Any], title: str, lines: list[str]) -> list[str]:
    """Title, the states table, models, the headline verdicts, every finding and the failed units."""
    h = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
         f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
         "<h2>State points</h2>", _table_html(_state_rows(summary)),
         "<p class='note'>Measured density: the mean over the mapped AA frames' boxes (for imported data, what the "
         "trajectory holds, beside the declared state point). Noise floor: each error between the first and the "
         "second half of that state's AA data.</p>",
         "<p class='note'>Models: " + ", ".join(html.escape(m["name"]) for m in summary["models"]) + ".</p>"]
    distances = state_distance_rows(summary)
    if distances:
        h += ["<h2>How far apart the states are (AA against AA)</h2>", _table_html(distances),
              f"<p class='note'>{html.escape(STATE_DISTANCE_NOTE)}</p>"]
    headline = [x for x in lines if x.startswith("Verdict")]
    if headline:
        h.append("<p class='headline'>" + "<br>".join(html.escape(x) for x in headline) + "</p>")
    h.append("<h2>Findings</h2><ul class='verdict'>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>")
    if summary.get("failed"):
        h.append(f"<h2>Failed units ({len(summary['failed'])})</h2>" + _table_html(_failed_rows(summary))
                 + "<p class='note'>Tracebacks in RUN_DIR/study/failed/; a rerun retries them.</p>")
    return h


def _html(summary: dict[str, Any], title: str, lines: list[str], figures: _Figures) -> str:
    h = _html_head(summary, title, lines)
    h.append("<h2>Transferability matrices</h2><p class='note'>Rows: training set; columns: test state; "
             "highlighted: the model was trained at that state; n/a: not evaluated or unstable. CSV/JSON in "
             "analysis/study/.</p>")
    for metric, (name, unit) in METRIC_TITLES.items():
        h.append(f"<h3>{html.escape(name)}{' (' + unit + ')' if unit else ''}</h3>")
        if figures.heatmaps.get(metric):
            h.append(f"<img src='{figures.heatmaps[metric]}' alt='{metric}'>")
        for family in summary["families"]:
            h.append(f"<p><b>{_family(family)}</b></p>" + _matrix_html(summary, metric, family))
    h.append("<h2>RDF: AA vs CG models, per state</h2><p class='note'>Solid: model at its training state; "
             "dashed: away from it. Legend: training set (RDF error). Lower panels: the first peak.</p>")
    h += [f"<img src='{p}' alt='rdf {s}'>" for s, p in figures.rdf.items() if p]
    if several_types(summary):
        h.append("<p class='note'>Several bead types: one figure per state and type pair, under Per bead type.</p>")
    h.append("<h2>ADF: AA vs CG models, per state</h2>")
    adf_imgs = [f"<img src='{p}' alt='adf {s}'>" for s, p in figures.adf.items() if p]
    h += adf_imgs or ["<p class='note'>No angle distributions were computed.</p>"]
    h += _per_type_html(summary, figures)
    h.append("<h2>Force parity</h2>")
    frames = _force_frames_line(summary)
    if frames:
        h.append(f"<p class='note'>{html.escape(frames)}</p>")
    h += [f"<img src='{p}' alt='parity {f}'>" for f, p in figures.parity.items() if p]
    friction = _friction_rows(summary)
    if friction:
        h.append("<h2>Diffusion: the Langevin friction that matches D_AA (1/ps)</h2><p class='note'>Per model and "
                 "state: the friction at which the CG diffusion would equal the AA one (frictions add: "
                 "kT/D = zeta_CG + m gamma), with the friction the run used and its D_CG/D_AA.</p>"
                 + _table_html(friction))
    h.append("<h2>Training</h2>")
    training = summary.get("training") or {}
    for name, paths in figures.curves.items():
        t = training.get(name) or {}
        h.append(f"<p><b>{html.escape(name)}</b></p>")
        if t.get("stopped_at_max_epochs"):
            h.append(f"<p class='warning'>Training stopped at train.max_epochs ({t.get('n_epochs')}) while still "
                     f"improving (best epoch {t.get('best_epoch')}): its errors would likely fall with more epochs; "
                     "raise train.max_epochs.</p>")
        h.append("".join(f"<img class='small' src='{p}' alt='{name}'>" for p in paths))
    if not figures.curves:
        h.append("<p class='note'>No learning curves were found.</p>")
    h.append("<h2>Speed</h2><table><tr><th>run</th><th>where</th><th>ns/day</th><th>vs AA</th><th>note</th></tr>")
    h += [f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td><td>{_fmt(c)}</td><td>{_fmt(d, 2)}</td>"
          f"<td>{html.escape(e)}</td></tr>" for a, b, c, d, e in speed_rows(summary)]
    h.append("</table><p class='note'>CG ns/day include setup; AA ns/day as the all-atom runner measured it, or "
             "for imported data as the engine's log reports it.</p>")
    frontier = frontier_rows(summary)
    if frontier:
        h.append("<h2>Speed-accuracy frontier of the network sizes</h2>"
                 f"<p class='note'>{html.escape(_FRONTIER_NOTE)}</p>")
        if figures.frontier:
            h.append(f"<img src='{figures.frontier}' alt='speed-accuracy frontier'>")
        threads = _frontier_threads(summary)
        h.append(_table_html(frontier) + f"<p class='note'>{html.escape((threads + '. ') if threads else '')}"
                 f"{html.escape(FRONTIER_SPEED_NOTE)}</p>")
    h.append("</body></html>")
    return "\n".join(h)


def write_report(summary: dict[str, Any], out_dir: str | os.PathLike, *, run_dir: str | os.PathLike | None = None,
                 title: str = "thermocg transferability study") -> Path:
    """Write ``index.html``, ``summary.md`` and ``figures/`` for a study summary; return index.html.

    ``run_dir`` (optional) is where the models' files are found (RUN_DIR/models/<name>/metrics.csv
    for the learning curves, MS-CG's pair plots); the figures are written or copied next to the
    report so it is self-contained.
    """
    out_dir = Path(out_dir)
    figures = _draw_figures(summary, out_dir, run_dir)
    lines = verdict_lines(summary)
    atomic_write_text(out_dir / "summary.md", _markdown(summary, title, lines, figures))
    return atomic_write_text(out_dir / "index.html", _html(summary, title, lines, figures))


__all__ = ["write_report", "verdict_lines", "speed_rows", "tolerance_line", "heatmap_figure", "overlay_figure",
           "frontier_figure", "frontier_rows", "frontier_lines",
           "per_type_heatmap_figure", "per_type_rows", "per_type_lines", "composition_rows", "composition_lines",
           "composition_text", "several_types", "diffusion_rows",
           "parity_figure", "learning_curve_figure", "read_learning_history", "first_peak_window", "noise_floor",
           "force_noise"]
