"""The study report: a static HTML page with PNG figures, and a Markdown summary.

:func:`write_report` takes the study summary (:func:`thermocg.study.collect_results`: states,
models, AA reference observables, per (model, state) evaluations, transferability matrices,
verdicts) and writes ``index.html``, ``summary.md`` and ``figures/*.png`` into the report folder:

- heatmaps of the transferability matrices (training set x test state) for the force RMSE, the RDF
  and ADF errors and the diffusion ratio, HIP-NN-TS and MS-CG side by side on one colour scale;
- RDF and ADF overlays per state point: the mapped AA curve and every model's CG MD curve;
- force parity plots (model vs mapped AA force components) per model at its training state(s);
- learning curves written by the trainer (copied from RUN_DIR/models/<name>/);
- a speed table (AA ns/day vs CG ns/day per model) and a verdict per model.

Everything is computed from the summary alone, so a report can be rebuilt from
``RUN_DIR/analysis/study/summary.json`` without rerunning anything.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thermocg.analysis.plots import finish_figure, label_axes, new_figure, pyplot
from thermocg.rundir import atomic_write_bytes, atomic_write_text
from thermocg.study.metrics import FAMILY_LABELS

METRIC_TITLES = {
    "force_rmse": ("Force RMSE on mapped AA frames", "kcal/mol/A"),
    "rdf_error": ("RDF error  mean|g_CG - g_AA|", ""),
    "adf_error": ("ADF error  integral|p_CG - p_AA|", ""),
    "d_ratio": ("Diffusion ratio D_CG / D_AA", ""),
}


def _family(name: str) -> str:
    return FAMILY_LABELS.get(name, name)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "n/a"
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------

def heatmap_figure(summary: dict[str, Any], metric: str, path: Path) -> Path | None:
    """One panel per family, rows = training sets, columns = test states, values annotated.

    Cells where the test state is in the model's training set are outlined."""
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
        shown = np.log10(np.where(grid > 0, grid, np.nan)) if metric == "d_ratio" else grid
        image = ax.imshow(shown, cmap=cmap, aspect="auto", **norm_kw)
        ax.set_xticks(range(len(states)), states, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        label_axes(ax, "test state")
        ax.set_title(_family(family), fontsize=10)
        for i, row in enumerate(rows):
            for j, s in enumerate(states):
                # dark text on light cells: the upper part of viridis, the pale middle of RdBu
                level = image.norm(shown[i, j]) if np.isfinite(shown[i, j]) else 0.0
                light = level > 0.55 if metric != "d_ratio" else 0.25 < level < 0.75
                ax.text(j, i, _fmt(grid[i, j], 2), ha="center", va="center", fontsize=7,
                        color="black" if light else "white")
                if s in model_states.get((family, row), set()):
                    ax.add_patch(pyplot().Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.5, ec="orange"))
    axes[0][0].set_ylabel("training set")
    title, unit = METRIC_TITLES[metric]
    cbar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9)
    cbar.set_label("log10 ratio" if metric == "d_ratio" else unit)
    fig.suptitle(title + "  (orange: training state)", fontsize=10)
    finish_figure(fig, path, dpi=90, tight=False)
    return path


def _model_colors(summary: dict[str, Any]) -> dict[str, Any]:
    cmap = pyplot().get_cmap("tab10")
    return {m["name"]: cmap(k % 10) for k, m in enumerate(summary["models"])}


def _overlay_curves(result: dict[str, Any], kind: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(pair or "all", x, y) curves of a summary's RDF or ADF (the to_dict of an RDFResult/ADFResult)."""
    if kind == "rdf":
        r = np.asarray(result["r_A"])
        return [(pair, r, np.asarray(g)) for pair, g in result["g"].items()]
    return [("all", np.asarray(result["angle_deg"]), np.asarray(result["p"]["all"]))]


def overlay_figure(summary: dict[str, Any], state: str, kind: str, path: Path) -> Path | None:
    """AA vs every model's curve at one state: ``kind`` "rdf" (g(r) per pair) or "adf" (p(theta))."""
    ref = summary["references"].get(state)
    if not ref or not ref.get(kind):
        return None
    families = summary["families"]
    colors = _model_colors(summary)
    fig, axes = new_figure(1, len(families), panel_size=(5.2, 3.6), layout="constrained")
    for ax, family in zip(axes[0], families):
        for key, x, y in _overlay_curves(ref[kind], kind):
            ax.plot(x, y, color="black", lw=2.2, label=f"AA {key}" if kind == "rdf" else "AA")
        for m in summary["models"]:
            ev = summary["evaluations"].get(m["name"], {}).get(state)
            if m["family"] != family or not ev or not ev.get(kind):
                continue
            style = {"color": colors[m["name"]], "lw": 1.4, "ls": "-" if state in m["train_states"] else "--"}
            label = f"{m['train_set']} ({_fmt(ev.get(f'{kind}_error'), 2)})"
            for _, x, y in _overlay_curves(ev[kind], kind):
                ax.plot(x, y, label=label, **style)
                label = None
        if kind == "rdf":
            label_axes(ax, "r (A)", "g(r)")
        else:
            label_axes(ax, "angle (deg)", "p (1/deg)")
        ax.set_title(f"{_family(family)} at {state}", fontsize=10)
        ax.legend(fontsize=7, title="trained on (error)", title_fontsize=7)
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
    fig.suptitle(f"{_family(family)}: force parity at the training state(s)", fontsize=10)
    finish_figure(fig, path, dpi=90, tight=False)
    return path


# --------------------------------------------------------------------------------------------------
# text: verdicts, comparisons, speeds
# --------------------------------------------------------------------------------------------------

def speed_rows(summary: dict[str, Any]) -> list[tuple[str, str, float, float]]:
    """(what, where, ns/day, speed-up vs mean AA) rows: AA per state, then CG per model (mean over states)."""
    aa = {s: _nan(v) for s, v in summary.get("aa_ns_per_day", {}).items()}
    aa_mean = float(np.nanmean(list(aa.values()))) if aa and np.any(np.isfinite(list(aa.values()))) else math.nan
    rows = [("all-atom", s, v, 1.0 if math.isfinite(v) else math.nan) for s, v in aa.items()]
    for m in summary["models"]:
        speeds = [_nan(ev.get("ns_per_day")) for ev in summary["evaluations"].get(m["name"], {}).values()]
        speeds = [v for v in speeds if math.isfinite(v)]
        v = float(np.mean(speeds)) if speeds else math.nan
        rows.append((m["name"], "mean over states", v, v / aa_mean if aa_mean else math.nan))
    return rows


def verdict_lines(summary: dict[str, Any]) -> list[str]:
    """Plain-language findings with the numbers behind them."""
    tol = summary["tolerances"]
    lines = [f"Tolerance: the CG structure matches AA at a state when the RDF error <= {tol['rdf_error']:g} "
             f"and the ADF error <= {tol['adf_error']:g}."]
    noise = summary.get("noise") or {}
    if noise:
        rdf_n = np.mean([v["rdf_error"] for v in noise.values()])
        adf_n = np.mean([v["adf_error"] for v in noise.values()])
        lines.append(f"Noise floor (the AA data, first half vs second half, mean over states): RDF error "
                     f"{_fmt(rdf_n)}, ADF error {_fmt(adf_n)}; errors near these are statistical, not model error.")
    for m in summary["models"]:
        v = summary["verdicts"][m["name"]]
        good = v["reproduces_at"]
        where = ", ".join(good) if good else "no state"
        lines.append(f"{m['name']} (trained on {', '.join(m['train_states'])}): reproduces the AA structure at "
                     f"{len(good)}/{v['n_states']} states ({where}).")
    unstable = [f"{name} at {state}" for name, evs in summary["evaluations"].items()
                for state, ev in evs.items() if ev.get("blowup")]
    if unstable:
        lines.append(f"Unstable CG runs (stopped by the blow-up checks; no structure, counted as no match): "
                     f"{len(unstable)}: {', '.join(unstable)}.")
    fams = summary["comparison"]["families"]
    if len(fams) >= 2:
        a, b = list(fams)[:2]
        for metric, what in (("rdf_error", "RDF error"), ("adf_error", "ADF error"), ("force_rmse", "force RMSE")):
            for where, label in (("single_at_training_state", "at the training state"),
                                 ("single_away", "away from the training state")):
                va, vb = fams[a][metric][where], fams[b][metric][where]
                if math.isfinite(va) and math.isfinite(vb):
                    better = a if va < vb else b
                    ratio = max(va, vb) / min(va, vb) if min(va, vb) > 0 else math.inf
                    lines.append(f"{what} {label} (single-state models, mean): {_family(a)} {_fmt(va)} vs "
                                 f"{_family(b)} {_fmt(vb)}: {_family(better)} is lower by x{_fmt(ratio, 3)}.")
        for metric, what in (("rdf_error", "RDF"), ("adf_error", "ADF")):
            ga, gb = fams[a][metric]["single_away"], fams[b][metric]["single_away"]
            if not (math.isfinite(ga) and math.isfinite(gb)):
                continue
            better, worse = (a, b) if ga < gb else (b, a)
            floor = noise_floor(summary, metric)
            # a winner only when the gap is at least half the noise floor of the metric
            if math.isfinite(floor) and abs(ga - gb) < 0.5 * floor:
                lines.append(f"Verdict ({what}): neither family transfers clearly better: mean {what} error away from "
                             f"the training state {_family(a)} {_fmt(ga)} vs {_family(b)} {_fmt(gb)}, a gap of "
                             f"{_fmt(abs(ga - gb))}, below half the noise floor ({_fmt(floor)}).")
            else:
                lines.append(f"Verdict ({what}): across the study's states, {_family(better)} transfers better "
                             f"(mean {what} error away from the training state {_fmt(min(ga, gb))} vs "
                             f"{_fmt(max(ga, gb))}).")
    for family, cmp in summary["comparison"]["pooled_vs_single"].items():
        for name, c in cmp.items():
            for metric, what in (("rdf", "RDF"), ("adf", "ADF")):
                p, s_ = c.get(f"pooled_{metric}_error", math.nan), c.get(f"single_away_{metric}_error", math.nan)
                if math.isfinite(p) and math.isfinite(s_):
                    lines.append(f"{_family(family)} pooled model '{name}': mean {what} error {_fmt(p)} vs {_fmt(s_)} "
                                 f"for single-state models away from their training state: the pooled model "
                                 f"{'beats' if p < s_ else 'does not beat'} them.")
    return lines


def noise_floor(summary: dict[str, Any], metric: str) -> float:
    """Mean over states of the AA first-half vs second-half error of ``metric`` (NaN if unknown)."""
    values = [v.get(metric) for v in (summary.get("noise") or {}).values()]
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def _matrix_md(summary: dict[str, Any], metric: str, family: str) -> str:
    states = list(summary["states"])
    table = summary["matrices"][metric].get(family, {})
    out = ["| trained on | " + " | ".join(states) + " |", "|---" * (len(states) + 1) + "|"]
    for row, values in table.items():
        out.append(f"| {row} | " + " | ".join(_fmt(values[s]) for s in states) + " |")
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


def _draw_figures(summary: dict[str, Any], out_dir: Path, run_dir: str | os.PathLike | None) -> _Figures:
    """Every figure into ``out_dir/figures``; the trainer's learning curves (and MS-CG fit and potential
    plots) found in RUN_DIR/models/<name>/ are copied there, so that the report is self-contained."""
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)

    def rel(path: Path | None) -> str | None:
        return None if path is None else os.path.relpath(path, out_dir)

    states = list(summary["states"])
    curves: dict[str, list[str]] = {}
    if run_dir is not None:
        for m in summary["models"]:
            for name in ("learning_curve.png", "fit.png", "potential.png"):
                src = Path(run_dir) / "models" / m["name"] / name
                if src.exists():
                    dst = atomic_write_bytes(fig_dir / f"{Path(name).stem}_{m['name']}.png", src.read_bytes())
                    curves.setdefault(m["name"], []).append(rel(dst))
    return _Figures(
        heatmaps={m: rel(heatmap_figure(summary, m, fig_dir / f"heatmap_{m}.png")) for m in METRIC_TITLES},
        rdf={s: rel(overlay_figure(summary, s, "rdf", fig_dir / f"rdf_{s}.png")) for s in states},
        adf={s: rel(overlay_figure(summary, s, "adf", fig_dir / f"adf_{s}.png")) for s in states},
        parity={f: rel(parity_figure(summary, f, fig_dir / f"parity_{f}.png")) for f in summary["families"]},
        curves=curves,
    )


def _markdown(summary: dict[str, Any], title: str, lines: list[str], figures: _Figures) -> str:
    states = list(summary["states"])
    md = [f"# {title}", "", "## States", ""]
    md += [f"- `{s}`: " + ", ".join(f"{k} = {v:g}" for k, v in summary["states"][s].items()) for s in states]
    md += ["", "## Findings", ""] + [f"- {line}" for line in lines]
    for metric, (name, unit) in METRIC_TITLES.items():
        md += ["", f"## {name}" + (f" ({unit})" if unit else ""), ""]
        for family in summary["families"]:
            md += [f"**{_family(family)}**", "", _matrix_md(summary, metric, family), ""]
        if figures.heatmaps.get(metric):
            md += [f"![{metric}]({figures.heatmaps[metric]})", ""]
    md += ["## Speed", "", "| run | where | ns/day | vs AA |", "|---|---|---|---|"]
    md += [f"| {a} | {b} | {_fmt(c)} | {_fmt(d, 2)} |" for a, b, c, d in speed_rows(summary)]
    return "\n".join(md) + "\n"


def _html_head(summary: dict[str, Any], title: str, lines: list[str]) -> list[str]:
    """Title, states and models, the headline verdicts and every finding."""
    h = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
         f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    h.append("<p class='note'>States: " + ", ".join(
        f"<b>{html.escape(s)}</b> (" + ", ".join(f"{k} = {v:g}" for k, v in values.items()) + ")"
        for s, values in summary["states"].items())
        + ". Models: " + ", ".join(html.escape(m["name"]) for m in summary["models"]) + ".</p>")
    headline = [x for x in lines if x.startswith("Verdict")]
    if headline:
        h.append("<p class='headline'>" + "<br>".join(html.escape(x) for x in headline) + "</p>")
    h.append("<h2>Findings</h2><ul class='verdict'>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>")
    return h


def _html(summary: dict[str, Any], title: str, lines: list[str], figures: _Figures) -> str:
    h = _html_head(summary, title, lines)
    h.append("<h2>Transferability matrices</h2><p class='note'>Rows: training set; columns: test state; "
             "highlighted: the model was trained at that state. CSV/JSON in analysis/study/.</p>")
    for metric, (name, unit) in METRIC_TITLES.items():
        h.append(f"<h3>{html.escape(name)}{' (' + unit + ')' if unit else ''}</h3>")
        if figures.heatmaps.get(metric):
            h.append(f"<img src='{figures.heatmaps[metric]}' alt='{metric}'>")
        for family in summary["families"]:
            h.append(f"<p><b>{_family(family)}</b></p>" + _matrix_html(summary, metric, family))
    h.append("<h2>RDF: AA vs CG models, per state</h2><p class='note'>Solid: model at its training state; "
             "dashed: away from it. Legend: training set (RDF error).</p>")
    h += [f"<img src='{p}' alt='rdf {s}'>" for s, p in figures.rdf.items() if p]
    h.append("<h2>ADF: AA vs CG models, per state</h2>")
    adf_imgs = [f"<img src='{p}' alt='adf {s}'>" for s, p in figures.adf.items() if p]
    h += adf_imgs or ["<p class='note'>No angle distributions were computed.</p>"]
    h.append("<h2>Force parity</h2>")
    h += [f"<img src='{p}' alt='parity {f}'>" for f, p in figures.parity.items() if p]
    h.append("<h2>Training</h2>")
    for name, paths in figures.curves.items():
        h.append(f"<p><b>{html.escape(name)}</b></p>"
                 + "".join(f"<img class='small' src='{p}' alt='{name}'>" for p in paths))
    if not figures.curves:
        h.append("<p class='note'>No learning curves were found.</p>")
    h.append("<h2>Speed</h2><table><tr><th>run</th><th>where</th><th>ns/day</th><th>vs AA</th></tr>")
    h += [f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td><td>{_fmt(c)}</td><td>{_fmt(d, 2)}</td></tr>"
          for a, b, c, d in speed_rows(summary)]
    h.append("</table><p class='note'>CG ns/day include setup; AA ns/day as the all-atom runner measured it.</p>")
    h.append("</body></html>")
    return "\n".join(h)


def write_report(summary: dict[str, Any], out_dir: str | os.PathLike, *, run_dir: str | os.PathLike | None = None,
                 title: str = "thermocg transferability study") -> Path:
    """Write ``index.html``, ``summary.md`` and ``figures/`` for a study summary; return index.html.

    ``run_dir`` (optional) is where the trainer's learning curves are found
    (RUN_DIR/models/<name>/learning_curve.png); they are copied next to the report so it is
    self-contained.
    """
    out_dir = Path(out_dir)
    figures = _draw_figures(summary, out_dir, run_dir)
    lines = verdict_lines(summary)
    atomic_write_text(out_dir / "summary.md", _markdown(summary, title, lines, figures))
    return atomic_write_text(out_dir / "index.html", _html(summary, title, lines, figures))
