"""CG against AA for one state point: the observables of a CG MD run next to those of the mapped
all-atom reference, as one overlay figure plus JSON of every result and of the error metrics.

:func:`compare_to_reference` computes, for both trajectories, the RDF (thermocg.analysis.rdf), the
ADF over the *reference's* first neighbour shell (so both count the same neighbours), the MSD and
diffusion coefficient, and the density; optionally the force errors of the potential on the
reference frames. :func:`plot_cg_vs_aa` draws the overlays (reference in black).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from thermocg.dataset import H5MDDataset
from thermocg.neighbors import perpendicular_widths

__all__ = ["plot_cg_vs_aa", "compare_to_reference"]


def plot_cg_vs_aa(path: str | os.PathLike | None, *, rdf: dict[str, Any] | None = None,
                  adf: dict[str, Any] | None = None, msd: dict[str, Any] | None = None,
                  density: dict[str, Any] | None = None, reference: str = "AA", title: str | None = None):
    """One row of panels: g(r) per bead-type pair, p(theta), MSD(tau); densities in the legend.

    Each argument maps a label (e.g. "AA", "hipnn_ts") to that observable's result object; the label
    ``reference`` is drawn in black. Returns the figure (saved atomically when ``path`` is given).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from thermocg.rundir import atomic_savefig

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
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)

    def style(label: str) -> dict[str, Any]:
        return {"color": "black", "lw": 2.0, "zorder": 3} if label == reference else {"lw": 1.3}

    def legend_label(label: str) -> str:
        if density and label in density:
            return f"{label} ({density[label].mean_density_g_cm3:.3f} g/cm³)"
        return label

    for ax, (kind, key) in zip(axes[0], panels):
        if kind == "rdf":
            for label, res in rdf.items():
                if key in res.g:
                    ax.plot(res.r_A, res.g[key], label=legend_label(label), **style(label))
            ax.axhline(1.0, color="grey", lw=0.6, ls=":")
            ax.set_xlabel("r (Å)")
            ax.set_ylabel(f"g(r) {key}")
        elif kind == "adf":
            for label, res in adf.items():
                if key in res.p:
                    ax.plot(res.angle_deg, res.p[key], label=legend_label(label), **style(label))
            cut = next(iter(adf.values())).cutoff_A
            ax.set_xlabel("θ (deg)")
            ax.set_ylabel("p(θ) (1/deg)")
            ax.set_xlim(0, 180)
            ax.set_title(f"angles within {cut:.2f} Å", fontsize=9)
        else:
            for label, res in msd.items():
                d = res.diffusion_1e5_cm2_s.get(key, float("nan"))
                ax.plot(res.lag_fs / 1000.0, res.msd_A2[key], label=f"{label} D={d:.3g}e-5 cm²/s", **style(label))
            ax.set_xlabel("τ (ps)")
            ax.set_ylabel("MSD (Å²)")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        atomic_savefig(fig, path, dpi=120)
        plt.close(fig)
    return fig


def compare_to_reference(trajectory: str | os.PathLike, reference: str | os.PathLike, out_dir: str | os.PathLike, *,
                         label: str = "CG", reference_label: str = "AA", potential: Any = None,
                         settings: Any = None, rdf_bin_width_A: float = 0.05, title: str | None = None) -> dict[str, Any]:
    """Observables of a CG MD ``trajectory`` (H5MD) against the mapped AA ``reference`` (H5MD CG dataset).

    Writes to ``out_dir``: ``{rdf,adf,msd,density}_{label}.json`` and ``..._{reference_label}.json``,
    ``comparison.json`` (the error metrics: compare_rdf per pair, compare_adf per key, relative errors
    of D and density, and force errors of ``potential`` on the reference frames when given) and
    ``overlay.png``. ``settings`` is an :class:`thermocg.config.AnalysisConfig` (defaults if None);
    its ``discard_fraction`` of the MD frames is dropped as equilibration. Returns the comparison dict.
    """
    from thermocg.analysis.adf import ADF, compare_adf
    from thermocg.analysis.density import Density
    from thermocg.analysis.msd import MSD
    from thermocg.analysis.rdf import RDF, compare_rdf
    from thermocg.config import AnalysisConfig
    from thermocg.rundir import atomic_write_text

    settings = settings or AnalysisConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with H5MDDataset(trajectory) as cg_ds, H5MDDataset(reference) as aa_ds:
        start = int(settings.discard_fraction * len(cg_ds))
        sources = {label: (cg_ds, start), reference_label: (aa_ds, 0)}
        results: dict[str, dict[str, Any]] = {"rdf": {}, "adf": {}, "msd": {}, "density": {}}
        half = min(perpendicular_widths(ds.read(0).box[0]).min() for ds in (aa_ds, cg_ds)) / 2.0
        for name, (ds, first) in sources.items():
            results["rdf"][name] = RDF(ds, start=first, bin_width_A=rdf_bin_width_A).run().results
        # one shell for both: the reference's first minimum unless the config fixes it
        adf_cut = settings.adf_cutoff_A
        if adf_cut is None:
            from thermocg.analysis.adf import rdf_first_minimum_A

            ref_rdf = results["rdf"][reference_label]
            adf_cut = min(rdf_first_minimum_A(ref_rdf.r_A, np.mean(list(ref_rdf.g.values()), axis=0)), half * 0.999)
        for name, (ds, first) in sources.items():
            results["adf"][name] = ADF(ds, cutoff_A=adf_cut, bin_width_deg=settings.adf_bin_width_deg,
                                       start=first).run().results
            results["density"][name] = Density(ds, start=first).run().results
            if len(ds) - first >= 3:
                try:
                    results["msd"][name] = MSD(ds, start=first, fit_start_fraction=settings.msd_fit_start_fraction,
                                               fit_end_fraction=settings.msd_fit_end_fraction).run().results
                except ValueError:
                    pass  # unevenly spaced frames: no MSD for this source
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
