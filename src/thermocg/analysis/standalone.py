"""``thermocg analyze``: RDF, ADF, MSD and D, and density of any trajectory, compared with a reference.

::

    thermocg analyze TRAJ [--reference REF] [--topology TOP] [--reference-topology TOP] [--output DIR]
        [--discard-fraction 0] [--r-max-A R] [--rdf-bin-width-A 0.05] [--adf-cutoff-A R]
        [--frame-interval-fs DT] [--mass TYPE=AMU] [--bead-type NAME=TYPE]

TRAJ and REF are anything :func:`thermocg.structure.load_trajectory` reads: our H5MD (a run's
traj.h5md, a CG dataset), extxyz, or any trajectory MDAnalysis reads with its topology (.gro/.xtc,
.pdb/.dcd, LAMMPS data + dump, ...). Per trajectory, over its frames after the first
``--discard-fraction`` (default 0: all):

- **RDF** g(r) per bead-type pair (:class:`~thermocg.analysis.rdf.RDF`), on [0, r_max] with r_max
  ``--r-max-A`` or half the shortest box width of both files, so both have the same bins;
- **ADF** p(theta) of neighbour pairs within the shell ``--adf-cutoff-A``, by default the first
  minimum of the reference's RDF (the trajectory's without a reference), the same shell for both
  (:class:`~thermocg.analysis.adf.ADF`);
- **MSD** and the diffusion coefficient D (:class:`~thermocg.analysis.msd.MSD`), when the frames'
  times are known (from the file, or ``--frame-interval-fs``) and evenly spaced;
- **density** (:class:`~thermocg.analysis.density.Density`), when the masses are known (from the file,
  or ``--mass``).

With a reference, the comparison holds the study's metrics, each from its one implementation: the
RDF error (:func:`~thermocg.analysis.rdf.rdf_error`: mean over pairs of mean |g - g_ref|), the ADF
error (:func:`~thermocg.analysis.adf.adf_error`: integral of |p - p_ref|, 0 = same, 2 = disjoint), the
D ratio D / D_ref (:func:`thermocg.study.metrics.diffusion_ratio`), the density ratio, and the
per-pair and per-type details of :func:`~thermocg.analysis.rdf.compare_rdf` and
:func:`~thermocg.analysis.adf.compare_adf`. Pairs are matched by bead-type name (``--bead-type``
renames types of both files).

Written to DIR (default ``analysis``), each file atomically: ``summary.json`` (the numbers above,
where each trajectory's types came from, what could not be computed and why), ``rdf.json``,
``adf.json``, ``msd.json``, ``density.json`` (the typed results of the trajectory, and
``*_reference.json`` of the reference), and ``analysis.png`` (g(r) per pair, p(theta), MSD, densities
in the legend; the reference in black).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thermocg.analysis.adf import ADF, ADFResult, adf_error, compare_adf, rdf_first_minimum_A
from thermocg.analysis.density import Density, DensityResult
from thermocg.analysis.msd import MSD, MSDResult
from thermocg.analysis.rdf import RDF, RDFResult, compare_rdf, rdf_error
from thermocg.neighbors import perpendicular_widths
from thermocg.rundir import atomic_write_text

__all__ = ["AnalyzeSettings", "Observables", "AnalyzeResult", "Source", "analyze", "run_analyze"]


@dataclass
class AnalyzeSettings:
    """How ``analyze`` measures (the command's options; None: chosen from the data, see the module)."""

    discard_fraction: float = 0.0
    r_max_A: float | None = None
    rdf_bin_width_A: float = 0.05
    adf_cutoff_A: float | None = None
    adf_bin_width_deg: float = 2.0
    msd_fit_start_fraction: float = 0.1
    msd_fit_end_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.discard_fraction < 1.0:
            raise ValueError(f"--discard-fraction must be in [0, 1), got {self.discard_fraction}")
        for flag, value in (("--r-max-A", self.r_max_A), ("--rdf-bin-width-A", self.rdf_bin_width_A),
                            ("--adf-cutoff-A", self.adf_cutoff_A), ("adf_bin_width_deg", self.adf_bin_width_deg)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{flag} must be positive, got {value}")
        if not 0 <= self.msd_fit_start_fraction < self.msd_fit_end_fraction <= 1:
            raise ValueError("MSD fit window: need 0 <= msd_fit_start_fraction < msd_fit_end_fraction <= 1")


@dataclass
class Source:
    """One trajectory to analyse: ``frames`` (Frames or an open H5MDDataset), whether its masses and
    frame times are known, and a label for files and figures."""

    frames: Any
    label: str
    masses_known: bool = True
    time_known: bool = True
    path: str | None = None
    type_source: str | None = None

    @property
    def n_frames(self) -> int:
        return int(getattr(self.frames, "n_frames", None) or len(self.frames))

    def boxes(self) -> np.ndarray:
        return self.frames.box if hasattr(self.frames, "box") else self.frames.boxes()


@dataclass
class Observables:
    """What ``analyze`` measured on one trajectory (frames ``first_frame`` on); ``msd`` and
    ``density`` are None when they could not be computed (``notes`` says why)."""

    label: str
    rdf: RDFResult
    adf: ADFResult
    msd: MSDResult | None
    density: DensityResult | None
    n_frames_total: int
    first_frame: int
    notes: list[str] = field(default_factory=list)

    @property
    def diffusion_1e5_cm2_s(self) -> float | None:
        return None if self.msd is None else float(self.msd.diffusion_1e5_cm2_s["all"])

    @property
    def density_g_cm3(self) -> float | None:
        return None if self.density is None else float(self.density.mean_density_g_cm3)


@dataclass
class AnalyzeResult:
    """Observables of the trajectory (and of the reference), the comparison (None without a
    reference), the ADF shell and RDF range used, and the files written (empty for :func:`analyze`)."""

    trajectory: Observables
    reference: Observables | None
    comparison: dict[str, Any] | None
    r_max_A: float
    adf_cutoff_A: float
    paths: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The summary.json content (JSON-ready: NaN and inf as None)."""
        def per_source(obs: Observables | None) -> dict[str, Any] | None:
            if obs is None:
                return None
            return {"frames_total": obs.n_frames_total, "first_frame": obs.first_frame,
                    "frames_analysed": obs.rdf.n_frames, "pairs": obs.rdf.pairs,
                    "diffusion_1e5_cm2_s": obs.diffusion_1e5_cm2_s, "density_g_cm3": obs.density_g_cm3,
                    "adf_mean_neighbors": obs.adf.mean_neighbors, "notes": obs.notes}

        return _json_ready({
            "r_max_A": self.r_max_A, "adf_cutoff_A": self.adf_cutoff_A,
            "trajectory": per_source(self.trajectory), "reference": per_source(self.reference),
            "comparison": self.comparison, "files": {k: str(v) for k, v in self.paths.items()},
        })


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------------------------
# the analysis, on trajectories in memory or H5MD files
# --------------------------------------------------------------------------------------------------

def _half_width(source: Source, first: int) -> float:
    return min(perpendicular_widths(b).min() for b in source.boxes()[first:]) / 2.0


def _measure(source: Source, settings: AnalyzeSettings, *, r_max_A: float, adf_cutoff_A: float | None,
             rdf: RDFResult | None = None) -> Observables:
    """RDF (unless given), ADF, MSD and density of ``source`` after its discarded frames."""
    first = int(settings.discard_fraction * source.n_frames)
    notes: list[str] = []
    if rdf is None:
        rdf = RDF(source.frames, r_max_A=r_max_A, bin_width_A=settings.rdf_bin_width_A).run(start=first).results
    if adf_cutoff_A is None:
        adf_cutoff_A = _first_shell(rdf, _half_width(source, first))
    adf = ADF(source.frames, cutoff_A=adf_cutoff_A, bin_width_deg=settings.adf_bin_width_deg).run(start=first).results
    msd = None
    if not source.time_known:
        notes.append("no MSD: the file has no frame times (give --frame-interval-fs)")
    elif source.n_frames - first < 3:
        notes.append(f"no MSD: {source.n_frames - first} frames analysed, 3 needed")
    else:
        try:
            msd = MSD(source.frames, fit_start_fraction=settings.msd_fit_start_fraction,
                      fit_end_fraction=settings.msd_fit_end_fraction).run(start=first).results
        except ValueError as exc:  # unevenly spaced frames, too short a fit window
            notes.append(f"no MSD: {exc}")
    density = None
    if source.masses_known:
        density = Density(source.frames).run(start=first).results
    else:
        notes.append("no mass density: the file gives no masses (give --mass TYPE=AMU for each bead type)")
    return Observables(label=source.label, rdf=rdf, adf=adf, msd=msd, density=density,
                       n_frames_total=source.n_frames, first_frame=first, notes=notes)


def _first_shell(rdf: RDFResult, half_width_A: float) -> float:
    """The first minimum after the first peak of the pair-pooled g(r), kept inside the box."""
    pooled = np.mean(np.stack(list(rdf.g.values())), axis=0)
    return float(min(rdf_first_minimum_A(rdf.r_A, pooled), 0.999 * half_width_A))


def compare(result: Observables, reference: Observables) -> dict[str, Any]:
    """The study's metrics of ``result`` against ``reference`` (module docstring), with details."""
    from thermocg.study.metrics import diffusion_ratio

    d, d_ref = result.diffusion_1e5_cm2_s, reference.diffusion_1e5_cm2_s
    rho, rho_ref = result.density_g_cm3, reference.density_g_cm3
    return {
        "rdf_error": rdf_error(result.rdf, reference.rdf),
        "adf_error": adf_error(result.adf, reference.adf),
        "d_ratio": diffusion_ratio(d, d_ref),
        "density_ratio": rho / rho_ref if rho is not None and rho_ref else None,
        "rdf": compare_rdf(result.rdf, reference.rdf),
        "adf": compare_adf(result.adf, reference.adf),
        "pairs_only_in_trajectory": [p for p in result.rdf.pairs if p not in reference.rdf.g],
        "pairs_only_in_reference": [p for p in reference.rdf.pairs if p not in result.rdf.g],
    }


def analyze(trajectory: Source, reference: Source | None = None, settings: AnalyzeSettings | None = None
            ) -> AnalyzeResult:
    """RDF, ADF, MSD and density of ``trajectory`` (and ``reference``), and the comparison (module
    docstring); writes nothing."""
    settings = settings or AnalyzeSettings()
    sources = [trajectory] + ([reference] if reference is not None else [])
    firsts = [int(settings.discard_fraction * s.n_frames) for s in sources]
    half = min(_half_width(s, first) for s, first in zip(sources, firsts))
    r_max = settings.r_max_A if settings.r_max_A is not None else half
    if r_max > half * (1 + 1e-12):
        raise ValueError(f"--r-max-A {r_max:g} exceeds half the shortest box width of the frames ({half:.4f} A)")
    shell_source = reference if reference is not None else trajectory
    shell_rdf = RDF(shell_source.frames, r_max_A=r_max, bin_width_A=settings.rdf_bin_width_A).run(
        start=firsts[-1] if reference is not None else firsts[0]).results
    cutoff = settings.adf_cutoff_A if settings.adf_cutoff_A is not None else _first_shell(shell_rdf, half)
    observed_reference = None
    if reference is not None:
        observed_reference = _measure(reference, settings, r_max_A=r_max, adf_cutoff_A=cutoff, rdf=shell_rdf)
        observed = _measure(trajectory, settings, r_max_A=r_max, adf_cutoff_A=cutoff)
    else:
        observed = _measure(trajectory, settings, r_max_A=r_max, adf_cutoff_A=cutoff, rdf=shell_rdf)
    comparison = compare(observed, observed_reference) if observed_reference is not None else None
    return AnalyzeResult(trajectory=observed, reference=observed_reference, comparison=comparison,
                         r_max_A=float(r_max), adf_cutoff_A=float(cutoff))


# --------------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------------

def _source(path: str | os.PathLike, topology: str | os.PathLike | None, label: str, *, bead_types: dict[str, str],
            masses_amu: dict[str, float], frame_interval_fs: float | None) -> Any:
    from thermocg.structure import load_trajectory

    loaded = load_trajectory(path, topology=topology, bead_types=bead_types, masses_amu=masses_amu,
                             frame_interval_fs=frame_interval_fs)
    metadata = getattr(loaded.frames, "metadata", {}) or {}
    source = Source(frames=loaded.frames, label=label, masses_known=loaded.masses_known,
                    time_known=bool(metadata.get("time_known", True)), path=str(path), type_source=loaded.type_source)
    return loaded, source


def write_outputs(result: AnalyzeResult, out_dir: str | os.PathLike, *, inputs: dict[str, Any]) -> dict[str, Path]:
    """The JSON files and the figure of a result in ``out_dir`` (atomically); returns their paths."""
    from thermocg.analysis.plots import plot_cg_vs_aa

    out = Path(out_dir)
    paths: dict[str, Path] = {}
    observed = [result.trajectory] + ([result.reference] if result.reference is not None else [])
    for obs in observed:
        suffix = "" if obs is result.trajectory else "_reference"
        for kind in ("rdf", "adf", "msd", "density"):
            value = getattr(obs, kind)
            if value is not None:
                paths[f"{kind}{suffix}"] = value.save_json(out / f"{kind}{suffix}.json")
    reference_label = result.reference.label if result.reference is not None else None
    paths["figure"] = out / "analysis.png"
    paths["summary"] = out / "summary.json"
    result.paths = paths
    plot_cg_vs_aa(paths["figure"], rdf={o.label: o.rdf for o in observed}, adf={o.label: o.adf for o in observed},
                  msd={o.label: o.msd for o in observed if o.msd is not None} or None,
                  density={o.label: o.density for o in observed if o.density is not None} or None,
                  reference=reference_label or "", title=_title(inputs))
    atomic_write_text(paths["summary"], json.dumps({"inputs": _json_ready(inputs), **result.summary()}, indent=1))
    return paths


def _title(inputs: dict[str, Any]) -> str | None:
    names = [Path(str(inputs[k])).name for k in ("trajectory", "reference") if inputs.get(k)]
    return " vs ".join(names) or None


def run_analyze(trajectory: str | os.PathLike, *, reference: str | os.PathLike | None = None,
                topology: str | os.PathLike | None = None, reference_topology: str | os.PathLike | None = None,
                output: str | os.PathLike = "analysis", discard_fraction: float = 0.0, r_max_A: float | None = None,
                rdf_bin_width_A: float = 0.05, adf_cutoff_A: float | None = None,
                frame_interval_fs: float | None = None, mass: list[str] | dict[str, float] | None = None,
                bead_type: list[str] | dict[str, str] | None = None) -> AnalyzeResult:
    """``thermocg analyze``: read the trajectory (and the reference; its topology defaults to
    ``topology``), :func:`analyze`, write DIR's files (module docstring); returns the result."""
    from thermocg.structure import parse_assignments

    settings = AnalyzeSettings(discard_fraction=discard_fraction, r_max_A=r_max_A, rdf_bin_width_A=rdf_bin_width_A,
                               adf_cutoff_A=adf_cutoff_A)
    options = {"bead_types": parse_assignments(bead_type, "--bead-type"),
               "masses_amu": parse_assignments(mass, "--mass", number=True), "frame_interval_fs": frame_interval_fs}
    opened = []
    try:
        loaded, traj = _source(trajectory, topology, "trajectory", **options)
        opened.append(loaded)
        ref = None
        if reference is not None:
            loaded, ref = _source(reference, reference_topology or topology, "reference", **options)
            opened.append(loaded)
        result = analyze(traj, ref, settings)
        inputs = {"trajectory": str(trajectory), "reference": None if reference is None else str(reference),
                  "topology": None if topology is None else str(topology),
                  "reference_topology": None if reference is None or not (reference_topology or topology)
                  else str(reference_topology or topology),
                  "bead_types_from": {s.label: s.type_source for s in (traj, ref) if s is not None},
                  "settings": settings.__dict__, **{k: v for k, v in options.items() if v}}
        write_outputs(result, output, inputs=inputs)
    finally:
        for loaded in opened:
            loaded.close()
    return result
