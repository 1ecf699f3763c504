"""Figures, and CG against AA for one state point.

The figure helpers (:func:`pyplot`, :func:`new_figure`, :func:`label_axes`, :func:`curve_style`,
:func:`finish_figure`) are the one place where thermocg makes, labels, saves (atomically) and closes a
matplotlib figure; the analyses' ``plot_*`` functions and the study report use them.

:func:`compare_to_reference` computes, for a CG MD run and the mapped all-atom reference, the RDF
(thermocg.analysis.rdf), the ADF over the *reference's* first neighbour shell (so both count the same
neighbours), the MSD and diffusion coefficient, and the density; optionally the force errors of the
potential on the reference frames. :func:`plot_cg_vs_aa` draws the overlays (reference in black).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from thermocg.dataset import H5MDDataset
from thermocg.rundir import atomic_savefig, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from thermocg.config import AnalysisConfig

# (no module-level import of the analyses or thermocg.neighbors, which imports torch: the study report
# uses the figure helpers without them)

__all__ = ["plot_cg_vs_aa", "compare_to_reference", "pyplot", "new_figure", "label_axes", "curve_style",
           "finish_figure"]


# ------------------------------------------------------------------------------------- figure helpers

def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (thermocg's figures go to files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def new_figure(rows: int = 1, cols: int = 1, *, panel_size: tuple[float, float] = (4.5, 3.4),
               figsize: tuple[float, float] | None = None, **subplots: Any) -> tuple[Any, np.ndarray]:
    """A figure of ``rows x cols`` panels, each ``panel_size`` inches (or the whole ``figsize``).

    Returns ``(fig, axes)`` with ``axes`` always a 2-D array; ``subplots`` go to ``plt.subplots``
    (e.g. ``layout="constrained"``)."""
    size = figsize or (panel_size[0] * cols, panel_size[1] * rows)
    return pyplot().subplots(rows, cols, figsize=size, squeeze=False, **subplots)


def label_axes(ax: Any, xlabel: str | None = None, ylabel: str | None = None, title: str | None = None, *,
               fontsize: float | None = None) -> None:
    """Axis labels and a title (None: left as they are)."""
    size = {} if fontsize is None else {"fontsize": fontsize}
    if xlabel is not None:
        ax.set_xlabel(xlabel, **size)
    if ylabel is not None:
        ax.set_ylabel(ylabel, **size)
    if title is not None:
        ax.set_title(title, **size)


def curve_style(label: str, reference: str | None) -> dict[str, Any]:
    """Line style of one labelled curve: the reference thick and black on top, the others thin."""
    return {"color": "black", "lw": 2.0, "zorder": 3} if label == reference else {"lw": 1.3}


def finish_figure(fig: Any, path: str | os.PathLike | None, *, dpi: int = 120, tight: bool = True) -> Any:
    """Lay out ``fig`` (``tight``: ``tight_layout``; False for constrained layouts), and when ``path``
    is given save it atomically and close it. Returns the figure."""
    if tight:
        fig.tight_layout()
    if path is not None:
        atomic_savefig(fig, path, dpi=dpi)
        pyplot().close(fig)
    return fig


# ------------------------------------------------------------------------------------- CG against AA

def plot_cg_vs_aa(path: str | os.PathLike | None, *, rdf: dict[str, Any] | None = None,
                  adf: dict[str, Any] | None = None, msd: dict[str, Any] | None = None,
                  density: dict[str, Any] | None = None, reference: str = "AA", title: str | None = None):
    """One row of panels: g(r) per bead-type pair, p(theta), MSD(tau); densities in the legend.

    Each argument maps a label (e.g. "AA", "hipnn_ts") to that observable's result object; the label
    ``reference`` is drawn in black. Returns the figure (saved atomically when ``path`` is given).
    """
    panels: list[tuple[str, str]] = []
    if rdf:
        pairs: list[str] = []
        for res in rdf.values():
            pairs.extend(p for p in res.g if p not in pairs)
        panels.extend(("rdf", p) for p in pairs)
    if adf:
        panels.append(("adf", "all"))
    if msd:
        panels.append(("msd", "all"))
    if not panels:
        raise ValueError("plot_cg_vs_aa: nothing to plot")
    fig, axes = new_figure(1, len(panels), panel_size=(4.2, 3.4))

    def legend_label(label: str) -> str:
        if density and label in density:
            return f"{label} ({density[label].mean_density_g_cm3:.3f} g/cm³)"
        return label

    for ax, (kind, key) in zip(axes[0], panels):
        if kind == "rdf":
            for label, res in rdf.items():
                if key in res.g:
                    ax.plot(res.r_A, res.g[key], label=legend_label(label), **curve_style(label, reference))
            ax.axhline(1.0, color="grey", lw=0.6, ls=":")
            label_axes(ax, "r (Å)", f"g(r) {key}")
        elif kind == "adf":
            for label, res in adf.items():
                if key in res.p:
                    ax.plot(res.angle_deg, res.p[key], label=legend_label(label), **curve_style(label, reference))
            ax.set_xlim(0, 180)
            label_axes(ax, "θ (deg)", "p(θ) (1/deg)")
            ax.set_title(f"angles within {next(iter(adf.values())).cutoff_A:.2f} Å", fontsize=9)
        else:
            for label, res in msd.items():
                d = res.diffusion_1e5_cm2_s.get(key, float("nan"))
                ax.plot(res.lag_fs / 1000.0, res.msd_A2[key], label=f"{label} D={d:.3g}e-5 cm²/s",
                        **curve_style(label, reference))
            label_axes(ax, "τ (ps)", "MSD (Å²)")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return finish_figure(fig, path)


def _observables(sources: dict[str, tuple[H5MDDataset, int]], settings: "AnalysisConfig", *,
                 rdf_bin_width_A: float, reference_label: str) -> dict[str, dict[str, Any]]:
    """RDF, ADF, density and (where possible) MSD of each source ``label -> (dataset, first frame)``.

    The ADF shell is ``settings.adf_cutoff_A``, or the first minimum of the reference's RDF (capped
    just below half the smallest box), the same for every source."""
    from thermocg.analysis.adf import ADF, rdf_first_minimum_A
    from thermocg.analysis.density import Density
    from thermocg.analysis.msd import MSD
    from thermocg.analysis.rdf import RDF
    from thermocg.neighbors import perpendicular_widths

    results: dict[str, dict[str, Any]] = {"rdf": {}, "adf": {}, "msd": {}, "density": {}}
    for name, (ds, first) in sources.items():
        results["rdf"][name] = RDF(ds, bin_width_A=rdf_bin_width_A).run(start=first).results
    adf_cut = settings.adf_cutoff_A
    if adf_cut is None:
        half = min(perpendicular_widths(ds.boxes()[0]).min() for ds, _ in sources.values()) / 2.0
        ref_rdf = results["rdf"][reference_label]
        adf_cut = min(rdf_first_minimum_A(ref_rdf.r_A, np.mean(list(ref_rdf.g.values()), axis=0)), half * 0.999)
    for name, (ds, first) in sources.items():
        results["adf"][name] = ADF(ds, cutoff_A=adf_cut, bin_width_deg=settings.adf_bin_width_deg).run(
            start=first).results
        results["density"][name] = Density(ds).run(start=first).results
        if len(ds) - first >= 3:
            try:
                results["msd"][name] = MSD(ds, fit_start_fraction=settings.msd_fit_start_fraction,
                                           fit_end_fraction=settings.msd_fit_end_fraction).run(start=first).results
            except ValueError:
                pass  # unevenly spaced frames: no MSD for this source
    return results


def compare_to_reference(trajectory: str | os.PathLike, reference: str | os.PathLike, out_dir: str | os.PathLike, *,
                         label: str = "CG", reference_label: str = "AA", potential: Any = None,
                         settings: "AnalysisConfig | None" = None, rdf_bin_width_A: float = 0.05,
                         title: str | None = None) -> dict[str, Any]:
    """Observables of a CG MD ``trajectory`` (H5MD) against the mapped AA ``reference`` (H5MD CG dataset).

    Writes to ``out_dir``: ``{rdf,adf,msd,density}_{label}.json`` and ``..._{reference_label}.json``,
    ``comparison.json`` (the error metrics: compare_rdf per pair, compare_adf per key, relative errors
    of D and density, and force errors of ``potential`` on the reference frames when given) and
    ``overlay.png``. ``settings`` is an :class:`thermocg.config.AnalysisConfig` (defaults if None);
    its ``discard_fraction`` of the MD frames is dropped as equilibration. Returns the comparison dict.
    """
    from thermocg.analysis.adf import compare_adf
    from thermocg.analysis.rdf import compare_rdf
    from thermocg.config import AnalysisConfig

    settings = settings or AnalysisConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with H5MDDataset(trajectory) as cg_ds, H5MDDataset(reference) as aa_ds:
        start = int(settings.discard_fraction * len(cg_ds))
        results = _observables({label: (cg_ds, start), reference_label: (aa_ds, 0)}, settings,
                               rdf_bin_width_A=rdf_bin_width_A, reference_label=reference_label)
        forces = None
        if potential is not None and aa_ds.has_forces:
            from thermocg.analysis.forces import force_errors

            forces = force_errors(potential, aa_ds, batch_frames=settings.force_batch_frames)
    for kind, per_source in results.items():
        for name, res in per_source.items():
            res.save_json(out / f"{kind}_{name}.json")
    comparison: dict[str, Any] = {
        "label": label, "reference": reference_label, "trajectory": str(trajectory), "reference_file": str(reference),
        "md_frames_discarded": start,
        "rdf": compare_rdf(results["rdf"][label], results["rdf"][reference_label]),
        "adf": compare_adf(results["adf"][label], results["adf"][reference_label]),
        "density_g_cm3": {name: r.mean_density_g_cm3 for name, r in results["density"].items()},
    }
    if label in results["msd"] and reference_label in results["msd"]:
        d, d_ref = (results["msd"][n].diffusion_1e5_cm2_s["all"] for n in (label, reference_label))
        comparison["diffusion_1e5_cm2_s"] = {label: d, reference_label: d_ref,
                                             "relative_error": (d - d_ref) / d_ref if d_ref else float("nan")}
    if forces is not None:
        comparison["force_errors"] = {k: v for k, v in forces.items() if k != "parity"}
    atomic_write_text(out / "comparison.json", json.dumps(comparison, indent=1))
    plot_cg_vs_aa(out / "overlay.png", rdf=results["rdf"], adf=results["adf"], msd=results["msd"] or None,
                  density=results["density"], reference=reference_label, title=title)
    return comparison
