#!/usr/bin/env python
"""The speed-accuracy frontier of HIP-NN-TS: for a few network sizes, CG ns/day against the all-atom run
beside the RDF and ADF errors at the training state and away from it, all on the same data.

Design (one study, every size treated alike):

- **Data**: the CG datasets of a finished demo study (``--demo-run``: RUN/cg/<state>.h5md; 64 one-bead
  methanols, TraPPE-UA, 280/310/340 K), copied into ``OUT/run/cg``. Every size is trained on the same
  single state (``--train-state``, 310 K by default) with the same seed and the demo config's schedule
  (``--config``: its ``train`` section with only the size changed). A single middle state leaves two
  held-out states, one colder and one warmer, so "away from the training state" is an extrapolation in
  both directions, the harder test, and the smallest training set is where a larger network could
  overfit; pooling the ends (280 + 340 K) would leave a single, interpolated held-out state.
- **Cutoff**: ``thermocg.study``'s automatic rule over every state's box (:func:`hipnn_cutoff_A`, the
  largest the 64-molecule boxes allow, about 8 A) unless a size fixes a shorter one.
- **CG MD** (:func:`thermocg.md.simulate`, Langevin BAOAB, friction ``simulate.friction_per_ps``) of every
  model at every state's temperature from the state's last mapped AA frame, ``--duration-ps`` long at
  ``--timestep-fs`` (12 fs, the recommended single step of docs/performance.md), frames every
  ``--frame-fs``; the first ``analysis.discard_fraction`` is dropped. Because the 12 fs evidence was
  measured on the demo's size only, every size also runs once at the training state at the demo's
  ``--check-timestep-fs`` (4 fs): the 12 fs run "leaves the structure unchanged" when its RDF and ADF
  errors against the 4 fs run are below that run's own noise floor (its first half against its second).
- **Errors**: the study's (:func:`thermocg.study.reference_observables`, :func:`measure_structure`,
  :func:`structure_errors`): RDF error mean |g_CG - g_AA|, ADF error integral |p_CG - p_AA| in the AA's
  first shell, and the noise floor of each state's AA data (its first half against its second).
- **Speed**: ``bench/bench_md.py`` per size as a subprocess (1,000 beads, ``--bench-threads``, no
  hippynn, ``--bench-repeats`` interleaved repeats): CG ns/day single step at ``--timestep-fs`` and at
  the r-RESPA 24 fs / 6 scheme, and all-atom OpenMM ns/day of 1,000 TraPPE methanols in the same run;
  besides the ratio of the medians, the CG/AA ratio within each repeat (the two timed back to back, so
  a change of a shared machine's load hits both) and its median and range. The benchmark times an
  untrained network of the same size (the cost does not depend on the weights). GROMACS (``--gmx``,
  when on the PATH): the same all-atom system from the exported inputs, timed interleaved with
  bench_md.py's OpenMM run, once per invocation.

A size whose 12 fs check fails is rerun at the step it needs (``--sizes reference --timestep-fs 4
--check-timestep-fs 0 --out OTHER``); ``--collect`` merges the sizes of several output directories on
the same data (also: sizes run in parallel), ``--other-seeds`` adds the same sizes trained with another
``--seed`` to the figure and to ``seeds.md``.

Outputs in OUT: ``results.json`` (updated after every step; a rerun skips what is there, and training
resumes from its checkpoint), ``frontier.md`` (the table), ``frontier.png`` (errors against the CG/AA
ns/day ratio) and, with ``--other-seeds``, ``seeds.md``. Last line: JSON.

    nice -n 10 python scripts/frontier.py --demo-run RUN --out frontier \\
        [--sizes small,demo,middle,reference] [--duration-ps 40] [--threads 1]
    python scripts/frontier.py --demo-run RUN --out final --collect frontier frontier-ref4 --other-seeds f2025
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: the sizes on offer: width, sensitivities, dense layers per atom; ``cutoff_A`` None: the largest the data allow
SIZES: dict[str, dict[str, Any]] = {
    "small": dict(n_features=16, n_sensitivities=8, n_atom_layers=2, cutoff_A=6.0),
    "demo": dict(n_features=32, n_sensitivities=12, n_atom_layers=2, cutoff_A=None),
    "middle": dict(n_features=64, n_sensitivities=16, n_atom_layers=2, cutoff_A=None),
    "reference": dict(n_features=128, n_sensitivities=20, n_atom_layers=3, cutoff_A=None),
}
#: added to the config seed per state (the same for every size: the runs differ only by the model)
STATE_SEED_OFFSET = 1000


def parse_sizes(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SIZES]
    if unknown or not names:
        raise SystemExit(f"--sizes: unknown size(s) {unknown or text!r}; choose from {', '.join(SIZES)}")
    return names


def write_json(path: Path, data: dict) -> None:
    from thermocg.rundir import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


# ------------------------------------------------------------------------------------- set-up

def prepare_run_dir(demo_run: Path, run_dir: Path, labels: list[str]) -> None:
    """Copy the CG datasets of ``labels`` from the demo run (never written to) into ``run_dir/cg``."""
    from thermocg.rundir import RunDir, atomic_path

    source, target = RunDir(demo_run), RunDir(run_dir)
    for label in labels:
        src, dst = source.cg_dataset(label), target.cg_dataset(label)
        if not src.exists():
            raise SystemExit(f"--demo-run: {src} does not exist (run the demo study first)")
        if dst.exists() and dst.stat().st_size == src.stat().st_size:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst, keep_suffix=True) as partial:
            shutil.copyfile(src, partial)


def study_config(config_path: Path, *, threads: int):
    """The demo config with progress bars off and one thread everywhere."""
    from thermocg.config import load_config

    config = load_config(config_path)
    return dataclasses.replace(
        config, study=dataclasses.replace(config.study, progress=False, max_workers=1, threads_per_worker=threads),
        train=dataclasses.replace(config.train, progress=False, n_threads=threads))


# ------------------------------------------------------------------------------------- stages

def train_size(config, run_dir: Path, size: str, train_state: str) -> dict[str, Any]:
    """Train HIP-NN-TS of ``size`` on ``train_state`` with the config's schedule and seed; returns where
    the model is and its resolved network (cutoff and sensitivity range included)."""
    import yaml

    from thermocg.study.stages import hipnn_cutoff_A
    from thermocg.train import run_train

    spec = SIZES[size]
    cutoff = spec["cutoff_A"] if spec["cutoff_A"] is not None else hipnn_cutoff_A(config, run_dir)
    name = f"hipnn_ts-{size}"
    train = dataclasses.replace(config.train, name=name, train_states=[train_state], cutoff_A=float(cutoff),
                                n_features=spec["n_features"], n_sensitivities=spec["n_sensitivities"],
                                n_atom_layers=spec["n_atom_layers"])
    start = time.perf_counter()
    summary = run_train(dataclasses.replace(config, train=train), run_dir, name=name, train_states=[train_state])
    resolved = yaml.safe_load((Path(summary.model_path).parent / "resolved.yaml").read_text())["config"]["train"]
    return {"model_path": str(summary.model_path), "n_epochs": summary.n_epochs, "best_epoch": summary.best_epoch,
            "stopped_at_max_epochs": summary.stopped_at_max_epochs, "wall_s": time.perf_counter() - start,
            "network": {k: resolved[k] for k in ("n_features", "n_sensitivities", "n_interaction_layers",
                                                 "n_atom_layers", "cutoff_A", "dist_soft_min_A", "dist_soft_max_A")},
            "n_parameters": count_parameters(summary.model_path)}


def count_parameters(model_path: str | os.PathLike) -> int:
    from thermocg.potentials.base import load_potential

    return int(sum(p.numel() for p in load_potential(model_path).parameters()))


def cg_structure(config, model_path: str, run_dir: Path, label: str, reference, *, timestep_fs: float,
                 duration_ps: float, frame_fs: float, seed: int):
    """One Langevin run of the model at state ``label`` from its last mapped AA frame; returns (record, the
    Structure of the frames after the discard, or None if it blew up)."""
    from thermocg.dataset import H5MDDataset
    from thermocg.md import simulate
    from thermocg.potentials.base import load_potential
    from thermocg.rundir import RunDir
    from thermocg.study import measure_structure

    with H5MDDataset(RunDir(run_dir).cg_dataset(label), kind="cg") as ds:
        initial = ds.read(len(ds) - 1)
    every = int(round(frame_fs / timestep_fs))
    if every < 1 or abs(every * timestep_fs - frame_fs) > 1e-6:
        raise SystemExit(f"--frame-fs {frame_fs:g} is not a multiple of the timestep {timestep_fs:g} fs")
    n_steps = int(round(duration_ps * 1000.0 / timestep_fs))
    settings = config.simulate
    run = simulate(load_potential(model_path), initial, temperature_K=float(initial.state.temperature_K),
                   timestep_fs=timestep_fs, n_steps=n_steps, seed=seed, save_interval_steps=every,
                   friction_per_ps=settings.friction_per_ps, integrator="langevin", save_velocities=False,
                   save_forces=False, skin_A=settings.skin_A, check_interval_steps=settings.check_interval_steps,
                   max_temperature_factor=settings.max_temperature_factor,
                   max_force_kcal_mol_A=settings.max_force_kcal_mol_A, min_distance_A=settings.min_distance_A,
                   raise_on_blowup=False, progress=False)
    record = {"timestep_fs": timestep_fs, "n_steps": run.n_steps, "duration_ps": duration_ps,
              "wall_s": run.wall_time_s, "blowup": run.blowup}
    if run.blowup or run.frames is None:
        return record, None
    start = int(run.frames.n_frames * config.analysis.discard_fraction)
    t = run.thermo["temperature_K"]
    record.update(n_frames=run.frames.n_frames - start, temperature_K=float(np.mean(t[len(t) // 5:])))
    structure = measure_structure(run.frames, config.rdf, config.analysis, adf_cutoff_A=reference.adf_cutoff_A,
                                  start=start)
    return record, (structure, run.frames, start)


def halves_noise(config, frames, start: int, adf_cutoff_A: float) -> dict[str, float]:
    """The study's noise floor of a run: its first half against its second (after the discard)."""
    from thermocg.study import measure_structure, structure_errors

    middle = start + (frames.n_frames - start) // 2
    first = measure_structure(frames, config.rdf, config.analysis, adf_cutoff_A=adf_cutoff_A, start=start,
                              stop=middle)
    second = measure_structure(frames, config.rdf, config.analysis, adf_cutoff_A=adf_cutoff_A, start=middle)
    errors = structure_errors(second, first)
    return {"rdf_error": errors["rdf_error"], "adf_error": errors["adf_error"]}


def bench_size(network: dict[str, Any], *, threads: int, repeats: int, steps: int, aa_steps: int, timestep_fs: float,
               log: Path) -> dict[str, Any]:
    """``bench/bench_md.py`` for this network (no hippynn), single steps of ``timestep_fs``; its JSON line,
    the output kept in ``log``."""
    from thermocg.rundir import atomic_write_text

    command = [sys.executable, str(ROOT / "bench" / "bench_md.py"), "--no-hippynn", "--threads", str(threads),
               "--repeats", str(repeats), "--steps", str(steps), "--aa-steps", str(aa_steps),
               "--cg-timestep-fs", str(timestep_fs),
               "--n-features", str(network["n_features"]), "--n-sensitivities", str(network["n_sensitivities"]),
               "--n-atom-layers", str(network["n_atom_layers"]),
               "--n-interaction-layers", str(network["n_interaction_layers"]),
               "--cutoff-A", str(network["cutoff_A"]), "--soft-min-A", str(network["dist_soft_min_A"]),
               "--soft-max-A", str(network["dist_soft_max_A"])]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENMM_CPU_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    atomic_write_text(log, " ".join(command) + "\n\n" + done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"bench_md.py failed ({done.returncode}); its output is in {log}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {**out, "log": str(log), **repeat_ratios(done.stdout, out["cg_timestep_fs"], out["allatom_timestep_fs"])}


_REPEAT = re.compile(r"repeat \d+: ours ([0-9.]+) steps/s(?:, ours r-RESPA [0-9.]+ outer steps/s)?, "
                     r"all-atom ([0-9.]+) steps/s")


def repeat_ratios(bench_output: str, cg_timestep_fs: float, aa_timestep_fs: float) -> dict[str, Any]:
    """CG single-step ns/day over all-atom ns/day in each of bench_md.py's interleaved repeats (the two
    timed back to back, so a change of the machine's load hits both), their median and range."""
    ratios = [float(cg) * cg_timestep_fs / (float(aa) * aa_timestep_fs) for cg, aa in _REPEAT.findall(bench_output)]
    if not ratios:
        return {}
    return {"repeat_cg_vs_aa": ratios, "repeat_cg_vs_aa_median": float(np.median(ratios)),
            "repeat_cg_vs_aa_min": min(ratios), "repeat_cg_vs_aa_max": max(ratios)}


def gromacs_ns_per_day(gmx: str, out: Path, *, n_molecules: int, threads: int, timestep_fs: float, n_steps: int,
                       repeats: int, openmm_steps: int, seed: int = 2) -> dict[str, Any]:
    """All-atom GROMACS ns/day of the system bench_md.py runs in OpenMM: ``n_molecules`` TraPPE-UA methanols
    at 0.786 g/cm^3 and 300 K, the same build and cutoff (the force field's 14 A, PME), minimised in OpenMM,
    written by :func:`thermocg.allatom.gromacs.write_gromacs_inputs` (SD integrator, bonds rigid by
    LINCS), ``repeats`` runs of ``n_steps`` at ``timestep_fs`` on ``threads`` OpenMP threads; the median of
    the ns/day GROMACS reports in md.log (its own timing, set-up excluded). Interleaved with the
    repeats, bench_md.py's all-atom OpenMM run of the same system (``openmm_steps`` per repeat), so that
    ``gromacs_vs_openmm`` is a ratio measured in one run like the benchmark's own."""
    import statistics

    import openmm

    from thermocg import units
    from thermocg.allatom.build import build_box
    from thermocg.allatom.gromacs import write_gromacs_inputs
    from thermocg.allatom.molecules import get_molecule
    from thermocg.allatom.runner import build_system, resolve_cutoff_A
    from thermocg.study.stages import _performance_ns_per_day

    molecule = get_molecule("methanol_trappe")
    positions, box = build_box(molecule, n_molecules, 0.786, rng=np.random.default_rng(seed))
    cutoff = resolve_cutoff_A(molecule, box)
    system = build_system(molecule, n_molecules, box, cutoff_A=cutoff)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": str(threads)})
    context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.asarray(box) * units.A_TO_NM])
    context.setPositions(np.asarray(positions) * units.A_TO_NM)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    minimised = context.getState(getPositions=True).getPositions(asNumpy=True)._value * units.NM_TO_A
    work = out / "gromacs"
    length_ps = n_steps * timestep_fs * 1e-3
    write_gromacs_inputs(molecule, n_molecules, minimised, box, work, cutoff_A=cutoff, temperature_K=300.0,
                         timestep_fs=timestep_fs, production_ps=length_ps, save_interval_fs=length_ps * 1000.0,
                         seed=seed, equilibration_ps=0.0)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GMX_MAXBACKUP": "-1"}

    def gmx_run(*args: str) -> None:
        done = subprocess.run([gmx, *args], cwd=work, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"gmx {args[0]} failed in {work}:\n{done.stderr[-2000:]}")

    gmx_run("grompp", "-f", "nvt.mdp", "-c", "conf.gro", "-p", "topol.top", "-o", "nvt.tpr")
    spec = importlib.util.spec_from_file_location("bench_md", ROOT / "bench" / "bench_md.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    openmm_md = bench.AllAtomMD("methanol_trappe", n_molecules, threads, timestep_fs, seed)
    speeds, openmm_speeds = [], []
    for r in range(repeats):
        gmx_run("mdrun", "-deffnm", f"rep{r}", "-s", "nvt.tpr", "-ntmpi", "1", "-ntomp", str(threads))
        speeds.append(_performance_ns_per_day(work / f"rep{r}.log"))
        openmm_speeds.append(bench.ns_per_day(openmm_md.steps_per_s(openmm_steps), timestep_fs))
    if any(v is None for v in speeds):
        raise SystemExit(f"gmx mdrun: no ns/day in the logs in {work}")
    return {"gromacs_ns_per_day": statistics.median(speeds), "repeats_ns_per_day": speeds,
            "openmm_ns_per_day": statistics.median(openmm_speeds), "openmm_repeats_ns_per_day": openmm_speeds,
            "gromacs_vs_openmm": statistics.median(speeds) / statistics.median(openmm_speeds),
            "n_molecules": n_molecules,
            "n_atoms": system.getNumParticles(), "threads": threads, "timestep_fs": timestep_fs, "n_steps": n_steps,
            "cutoff_A": cutoff, "load_average_1min": round(os.getloadavg()[0], 2)}


# ------------------------------------------------------------------------------------- report

def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def table(results: dict[str, Any]) -> str:
    """The markdown table: one row per size."""
    labels, train = results["states"], results["train_state"]
    order = [train] + [s for s in labels if s != train]
    noise = results["noise"]
    head = ["size", "features / sens. / atom layers", "cutoff (A)", "parameters", "CG step (fs)",
            "CG ns/day", "CG r-RESPA ns/day", "AA OpenMM ns/day", "CG/AA", "CG/AA per repeat: median (range)",
            "CG/AA (r-RESPA)"]
    head += [f"RDF err {s}{' (train)' if s == train else ''}" for s in order]
    head += [f"ADF err {s}{' (train)' if s == train else ''}" for s in order]
    gromacs = (results.get("gromacs") or {}).get("gromacs_vs_openmm")
    if gromacs:
        head.insert(11, "CG/AA GROMACS")
    head += ["timestep check at the train state"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size, entry in results["sizes"].items():
        net, bench = entry["train"]["network"], entry.get("bench") or {}
        aa = bench.get("allatom_ns_per_day")
        row = [size, f"{net['n_features']} / {net['n_sensitivities']} / {net['n_atom_layers']}",
               f"{net['cutoff_A']:.2f}", f"{entry['train']['n_parameters']:,}",
               _fmt(bench.get("cg_timestep_fs"), 0), _fmt(bench.get("cg_single_ns_per_day"), 3),
               _fmt(bench.get("cg_respa_ns_per_day"), 3), _fmt(aa, 3),
               _fmt(bench.get("speedup_single_vs_openmm_allatom_ns_per_day"), 2),
               (f"{bench['repeat_cg_vs_aa_median']:.2f} ({bench['repeat_cg_vs_aa_min']:.2f}-"
                f"{bench['repeat_cg_vs_aa_max']:.2f})" if bench.get("repeat_cg_vs_aa") else "-"),
               _fmt(bench.get("speedup_vs_openmm_allatom_ns_per_day"), 2)]
        if gromacs:
            cg_vs_openmm = bench.get("speedup_single_vs_openmm_allatom_ns_per_day")
            row.append(_fmt(cg_vs_openmm / gromacs if cg_vs_openmm else None, 2))
        for metric in ("rdf_error", "adf_error"):
            for s in order:
                run = entry["md"].get(s, {})
                row.append("blew up" if run.get("blowup") else _fmt(run.get(metric)))
        check = entry.get("timestep_check") or {}
        row.append(check.get("verdict", "-"))
        lines.append("| " + " | ".join(row) + " |")
    floor = " ".join(f"{s}: RDF {noise[s]['rdf_error']:.4f}, ADF {noise[s]['adf_error']:.4f};" for s in order)
    lines += ["", f"Noise floor of the errors (each state's mapped AA data, first half against second): {floor}"]
    if gromacs:
        g = results["gromacs"]
        lines += ["", f"All-atom GROMACS, the same {g['n_molecules']} molecules ({g['n_atoms']} sites), "
                      f"{g['threads']} thread(s), {g['timestep_fs']:g} fs: {g['gromacs_ns_per_day']:.3f} ns/day "
                      f"(median of {', '.join(f'{v:.3f}' for v in g['repeats_ns_per_day'])}), against OpenMM "
                      f"interleaved with it {g['openmm_ns_per_day']:.3f} ns/day: GROMACS/OpenMM = {gromacs:.2f}. "
                      f"CG/AA GROMACS = (CG/AA OpenMM of the row) / (GROMACS/OpenMM), each a ratio measured "
                      f"within one run"]
    return "\n".join(lines) + "\n"


def figure(results: dict[str, Any], path: Path, *, other_seeds: list[dict[str, Any]] | None = None) -> None:
    """RDF and ADF errors against the CG/AA ns/day ratio (CG single step, all-atom OpenMM timed in the same
    benchmark run: on a shared machine the absolute figures move with the load, their ratio much less),
    one marker per size and state: filled at the training state, open away from it, a horizontal line
    through the highest spanning the ratio's range over the benchmark's repeats; the same models trained
    from ``other_seeds`` (their results.json) smaller, beside them; the AA noise floor (mean over states)
    dashed, CG as fast as all-atom dotted."""
    from thermocg.analysis.plots import finish_figure, label_axes, new_figure

    fig, axes = new_figure(1, 2, panel_size=(5.2, 3.9))
    train = results["train_state"]
    markers = {s: m for s, m in zip(results["states"], ("v", "o", "^", "s", "D"))}
    sizes = [(name, e) for name, e in results["sizes"].items()
             if (e.get("bench") or {}).get("speedup_single_vs_openmm_allatom_ns_per_day")]
    for ax, metric, label in zip(axes[0], ("rdf_error", "adf_error"), ("RDF error  mean|g_CG - g_AA|",
                                                                       "ADF error  integral|p_CG - p_AA|")):
        for k, (name, entry) in enumerate(sizes):
            bench = entry["bench"]
            x = bench.get("repeat_cg_vs_aa_median") or bench["speedup_single_vs_openmm_allatom_ns_per_day"]
            ys = [(s, run[metric]) for s, run in entry["md"].items() if run.get(metric) is not None]
            for s, y in ys:
                held_out = s != train
                ax.plot([x], [y], ls="none", marker=markers[s], ms=7, color=f"C{k}",
                        mfc="none" if held_out else f"C{k}", label=f"{name} {s}{'' if held_out else ' (train)'}")
            for other in other_seeds or []:
                for s, run in other["sizes"].get(name, {}).get("md", {}).items():
                    if run.get(metric) is not None:
                        ax.plot([x * 1.04], [run[metric]], ls="none", marker=markers[s], ms=4, color=f"C{k}",
                                mfc="none" if s != train else f"C{k}", alpha=0.6)
            if not ys:  # every run of this size blew up
                continue
            if bench.get("repeat_cg_vs_aa"):  # the spread of the per-repeat ratios, at the highest point
                ax.hlines(max(y for _, y in ys), bench["repeat_cg_vs_aa_min"], bench["repeat_cg_vs_aa_max"],
                          color=f"C{k}", lw=0.8, alpha=0.7)
            ax.annotate(name, (x, max(y for _, y in ys)), textcoords="offset points", xytext=(4, 6), fontsize=8,
                        color=f"C{k}")
        floor = float(np.mean([results["noise"][s][metric] for s in results["states"]]))
        ax.axhline(floor, color="grey", ls="--", lw=0.9, label="AA noise floor (mean)")
        ax.axvline(1.0, color="black", ls=":", lw=0.9, label="as fast as all-atom OpenMM")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        label_axes(ax, "CG / all-atom ns/day (1,000 molecules)", label)
    axes[0, 1].legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    finish_figure(fig, path, dpi=110)


def seeds_table(runs: list[dict[str, Any]]) -> str:
    """RDF and ADF errors of every size at every state, one column per seed (the runs' results), and
    the spread (max - min) over seeds."""
    seeds = [r["seed"] if "seed" in r else r.get("settings", {}).get("seed") for r in runs]
    train = runs[0]["train_state"]
    head = ["size", "state", *[f"RDF err seed {s}" for s in seeds], "RDF spread",
            *[f"ADF err seed {s}" for s in seeds], "ADF spread"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size in runs[0]["sizes"]:
        for state in [train] + [s for s in runs[0]["states"] if s != train]:
            row = [size, state + (" (train)" if state == train else "")]
            for metric in ("rdf_error", "adf_error"):
                values = [r["sizes"].get(size, {}).get("md", {}).get(state, {}).get(metric) for r in runs]
                row += [_fmt(v) for v in values]
                known = [v for v in values if v is not None]
                row.append(_fmt(max(known) - min(known)) if len(known) == len(values) else "-")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-run", required=True, type=Path, help="a finished demo study (its cg/ is read)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    parser.add_argument("--sizes", default="small,demo,middle,reference", help=f"from {', '.join(SIZES)}")
    parser.add_argument("--train-state", default="T310_rho0.777")
    parser.add_argument("--max-epochs", type=int, default=None, help="override train.max_epochs (all sizes)")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed (training and MD)")
    parser.add_argument("--timestep-fs", type=float, default=12.0)
    parser.add_argument("--check-timestep-fs", type=float, default=4.0, help="0: no timestep check")
    parser.add_argument("--check-duration-ps", type=float, default=None, help="its length (default --duration-ps)")
    parser.add_argument("--duration-ps", type=float, default=40.0)
    parser.add_argument("--frame-fs", type=float, default=120.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training and CG MD")
    parser.add_argument("--bench-threads", type=int, default=1)
    parser.add_argument("--bench-repeats", type=int, default=5)
    parser.add_argument("--bench-steps", type=int, default=150,
                        help="timed CG steps per repeat (long enough to time under load)")
    parser.add_argument("--bench-aa-steps", type=int, default=300)
    parser.add_argument("--no-bench", action="store_true")
    parser.add_argument("--gmx", default=shutil.which("gmx"), help="GROMACS for the all-atom ns/day (default: gmx "
                        "on the PATH; none: skipped)")
    parser.add_argument("--gromacs-steps", type=int, default=2000, help="all-atom GROMACS steps per repeat (2 fs)")
    parser.add_argument("--gromacs-repeats", type=int, default=3)
    parser.add_argument("--no-gromacs", action="store_true")
    parser.add_argument("--collect", nargs="+", type=Path, default=None,
                        help="merge the sizes of these output directories (invocations on the same data, e.g. "
                             "one size each in parallel) into OUT, then write the table and figure")
    parser.add_argument("--other-seeds", nargs="*", type=Path, default=[],
                        help="output directories of the same sizes trained with other --seed: in the figure, "
                             "and OUT/seeds.md (the errors per seed)")
    args = parser.parse_args(argv)
    sizes = parse_sizes(args.sizes)

    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    import torch

    torch.set_num_threads(args.threads)
    from thermocg.study import reference_observables, state_points, structure_errors

    config = study_config(args.config, threads=args.threads)
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)
    if args.max_epochs is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, max_epochs=args.max_epochs))
    labels = list(state_points(config))
    if args.train_state not in labels:
        raise SystemExit(f"--train-state {args.train_state!r} is not a state of {args.config} ({', '.join(labels)})")
    out = args.out
    if args.collect:
        results = collect(args.collect, sizes)
        return finish(args, results, out, labels)
    run_dir = out / "run"
    prepare_run_dir(args.demo_run, run_dir, labels)
    results_path = out / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    settings = {k: str(v) if isinstance(v, Path) else [str(p) for p in v] if isinstance(v, list) else v
                for k, v in vars(args).items()}
    results.update(states=labels, train_state=args.train_state, settings=settings, seed=int(config.seed))
    results.setdefault("sizes", {})

    references = {}
    for label in labels:
        references[label] = reference_observables(config, run_dir, label)
    results["noise"] = {s: references[s].noise for s in labels}
    results["adf_cutoff_A"] = {s: references[s].adf_cutoff_A for s in labels}
    write_json(results_path, results)
    print(f"noise floor: {json.dumps(results['noise'])}", flush=True)

    for size in sizes:
        entry = results["sizes"].setdefault(size, {"md": {}})
        entry["train"] = train_size(config, run_dir, size, args.train_state)  # resumes from its checkpoint
        write_json(results_path, {**results, "sizes": _saved(results["sizes"])})
        print(f"{size}: trained {json.dumps(entry['train'])}", flush=True)
        for k, label in enumerate(labels):
            if label in entry["md"]:
                continue
            record, got = cg_structure(config, entry["train"]["model_path"], run_dir, label, references[label],
                                       timestep_fs=args.timestep_fs, duration_ps=args.duration_ps,
                                       frame_fs=args.frame_fs, seed=int(config.seed) + STATE_SEED_OFFSET * (k + 1))
            if got is not None:
                errors = structure_errors(got[0], references[label])
                record.update(rdf_error=errors["rdf_error"], adf_error=errors["adf_error"])
                if label == args.train_state:
                    entry["_structure_12"] = got  # for the timestep check (not saved)
            entry["md"][label] = record
            write_json(results_path, {**results, "sizes": _saved(results["sizes"])})
            print(f"{size} at {label}: {json.dumps(record)}", flush=True)
        if args.check_timestep_fs and "timestep_check" not in entry:
            entry["timestep_check"] = timestep_check(config, entry, run_dir, args, references[args.train_state],
                                                     seed=int(config.seed) + STATE_SEED_OFFSET * (
                                                         labels.index(args.train_state) + 1))
            write_json(results_path, {**results, "sizes": _saved(results["sizes"])})
            print(f"{size}: timestep check {json.dumps(entry['timestep_check'])}", flush=True)
        entry.pop("_structure_12", None)
        if not args.no_bench and "bench" not in entry:
            entry["bench"] = bench_size(entry["train"]["network"], threads=args.bench_threads,
                                        repeats=args.bench_repeats, steps=args.bench_steps,
                                        aa_steps=args.bench_aa_steps, timestep_fs=args.timestep_fs,
                                        log=out / "bench" / f"{size}.log")
            write_json(results_path, {**results, "sizes": _saved(results["sizes"])})
            print(f"{size}: bench {json.dumps(entry['bench'])}", flush=True)

    return finish(args, results, out, labels)


def collect(directories: list[Path], sizes: list[str]) -> dict[str, Any]:
    """The results of several invocations on the same data merged: ``sizes`` (in that order) from
    whichever directory holds them; states, training state, noise floors and seed must agree."""
    parts = [json.loads((d / "results.json").read_text()) for d in directories]
    merged = {k: v for k, v in parts[0].items() if k != "sizes"}
    merged["sizes"] = {}
    for d, part in zip(directories, parts):
        for key in ("states", "train_state", "noise", "seed"):
            if part.get(key) != merged.get(key):
                raise SystemExit(f"--collect: {d} differs from {directories[0]} in {key!r}")
        for size, entry in part["sizes"].items():
            bench, log = entry.get("bench"), d / "bench" / f"{size}.log"
            if bench and "repeat_cg_vs_aa" not in bench and log.exists():  # results of an earlier version
                bench.update(repeat_ratios(log.read_text(), bench["cg_timestep_fs"], bench["allatom_timestep_fs"]))
        merged["sizes"].update(part["sizes"])
        merged.setdefault("gromacs", part.get("gromacs"))
        if merged["gromacs"] is None:
            merged.pop("gromacs")
    missing = [s for s in sizes if s not in merged["sizes"]]
    if missing:
        raise SystemExit(f"--collect: no directory holds the size(s) {missing}")
    merged["sizes"] = {s: merged["sizes"][s] for s in sizes}
    merged["collected_from"] = [str(d) for d in directories]
    return merged


def finish(args, results: dict[str, Any], out: Path, labels: list[str]) -> int:
    """GROMACS once (unless it is there or skipped), then results.json, frontier.md, seeds.md and
    frontier.png in ``out``; the summary JSON line."""
    from thermocg.rundir import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    if not args.no_gromacs and args.gmx and "gromacs" not in results:
        results["gromacs"] = gromacs_ns_per_day(args.gmx, out, n_molecules=1000, threads=args.bench_threads,
                                                timestep_fs=2.0, n_steps=args.gromacs_steps,
                                                repeats=args.gromacs_repeats, openmm_steps=args.bench_aa_steps)
        print(f"GROMACS: {json.dumps(results['gromacs'])}", flush=True)
    results["sizes"] = _saved(results["sizes"])
    write_json(out / "results.json", results)
    atomic_write_text(out / "frontier.md", table(results))
    others = [json.loads((d / "results.json").read_text()) for d in args.other_seeds]
    if others:
        atomic_write_text(out / "seeds.md", seeds_table([results, *others]))
    if not args.no_bench:
        figure(results, out / "frontier.png", other_seeds=others)
    print(table(results))
    print(json.dumps({"results": str(out / "results.json"), "table": str(out / "frontier.md"),
                      "noise": results["noise"],
                      "sizes": {s: {"cg_single_ns_per_day": (e.get("bench") or {}).get("cg_single_ns_per_day"),
                                    **{f"{m}_{lab}": e["md"].get(lab, {}).get(m) for lab in labels
                                       for m in ("rdf_error", "adf_error")}}
                                for s, e in results["sizes"].items()}}))
    return 0


def _saved(sizes: dict[str, Any]) -> dict[str, Any]:
    """The sizes' entries without the in-memory structures."""
    return {s: {k: v for k, v in e.items() if not k.startswith("_")} for s, e in sizes.items()}


def timestep_check(config, entry: dict[str, Any], run_dir: Path, args, reference, *, seed: int) -> dict[str, Any]:
    """Is ``--timestep-fs`` safe for this size? The training-state run against a run at
    ``--check-timestep-fs`` (``--check-duration-ps`` long, same seed), by the study's errors, against the
    noise floor of the latter (its halves)."""
    from thermocg.study import structure_errors

    got = entry.get("_structure_12")
    if got is None and not entry["md"][args.train_state].get("blowup"):  # a resumed run: the same run again
        _, got = cg_structure(config, entry["train"]["model_path"], run_dir, args.train_state, reference,
                              timestep_fs=args.timestep_fs, duration_ps=args.duration_ps, frame_fs=args.frame_fs,
                              seed=seed)
    if got is None:
        return {"verdict": f"the {args.timestep_fs:g} fs run blew up"}
    record, check = cg_structure(config, entry["train"]["model_path"], run_dir, args.train_state, reference,
                                 timestep_fs=args.check_timestep_fs,
                                 duration_ps=args.check_duration_ps or args.duration_ps,
                                 frame_fs=args.frame_fs, seed=seed)
    if check is None:
        return {**record, "verdict": f"{args.check_timestep_fs:g} fs run blew up"}
    errors = structure_errors(got[0], check[0])
    floor = halves_noise(config, check[1], check[2], reference.adf_cutoff_A)
    unchanged = errors["rdf_error"] < floor["rdf_error"] and errors["adf_error"] < floor["adf_error"]
    verdict = (f"{'unchanged' if unchanged else 'changed'} (RDF {errors['rdf_error']:.4f} / floor "
               f"{floor['rdf_error']:.4f}, ADF {errors['adf_error']:.4f} / {floor['adf_error']:.4f})")
    return {**record, "rdf_error": errors["rdf_error"], "adf_error": errors["adf_error"], "noise_floor": floor,
            "unchanged": unchanged, "verdict": verdict}


if __name__ == "__main__":
    sys.exit(main())
