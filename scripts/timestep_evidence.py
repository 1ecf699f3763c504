#!/usr/bin/env python
"""Is a larger CG timestep, or an r-RESPA outer step, safe? RDF, ADF, temperature and potential energy
of Langevin CG MD at several timesteps against a 1 fs reference run, with the noise floor.

One model, one state (a CG dataset gives the start frame: its last one). Every run is Langevin
(BAOAB, or BAOAB-RESPA) at the state's temperature, friction ``--friction-per-ps``, ``--duration-ps``
long (of which the first ``--discard-ps`` are dropped), frames every 120 fs (a multiple of every
timestep used). The reference is the single-step run at ``--reference-fs`` (1 fs); its noise floor is
the study's: the error of its first half against its second half. Errors are the study's
(``thermocg.analysis.rdf.rdf_error``: mean over r of |g - g_ref|; ``thermocg.analysis.adf.adf_error``:
integral of |p - p_ref|);
the ADF shell is the first minimum of the reference RDF, as the study takes it. A run "leaves the
structure unchanged" when both errors are below the noise floor and its mean kinetic temperature is
within 2% of the thermostat's target. Temperatures and potential energies are given with standard
errors from 5 block averages (a rough estimate: with 5 blocks the error of the error is about 35%).

Single-step runs: ``--single 2,4,6,8,10,12``; r-RESPA runs: ``--respa 8:4,12:6`` (outer fs : inner
steps) with the fast part ``--fast pair`` (an MS-CG pair fitted to the model's own forces on the
dataset's frames, ``--pair-cutoff-A``) or ``--fast prior``. Results go to OUT/results.json after each
run (``--resume`` skips runs already there), then OUT/table.md and OUT/structure.png (steps/s are in
results.json only: on a shared machine they measure the load). Last line: JSON.
To spread the runs over processes: ``--reference-from A/results.json`` takes the reference run (and
its noise floor) of another invocation instead of running it, and ``--collect A B ...`` merges the
results of invocations with the same reference into OUT.

    nice -n 10 python scripts/timestep_evidence.py --model RUN/models/hipnn_ts-pooled/model.safetensors \\
        --dataset RUN/cg/T310_rho0.777.h5md --out timestep-T310 --duration-ps 100
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

FRAME_FS = 120.0


def parse_respa(text: str) -> list[tuple[float, int]]:
    out = []
    for item in filter(None, text.split(",")):
        outer, _, inner = item.partition(":")
        out.append((float(outer), int(inner)))
    return out


def block_stats(values: np.ndarray, n_blocks: int = 5) -> tuple[float, float]:
    """Mean and its standard error from ``n_blocks`` block means."""
    values = np.asarray(values, dtype=np.float64)
    blocks = np.array_split(values, n_blocks)
    means = np.array([b.mean() for b in blocks if len(b)])
    return float(values.mean()), float(means.std(ddof=1) / math.sqrt(len(means)))


def structure(frames, *, rdf_bin_A: float, adf_cutoff_A: float | None, adf_bin_deg: float) -> dict:
    from thermocg.analysis.adf import ADF, rdf_first_minimum_A
    from thermocg.analysis.rdf import RDF

    rdf = RDF(frames, bin_width_A=rdf_bin_A).run().results
    g_all = np.mean(np.stack(list(rdf.g.values())), axis=0)
    if adf_cutoff_A is None:
        adf_cutoff_A = rdf_first_minimum_A(rdf.r_A, g_all)
    adf = ADF(frames, cutoff_A=adf_cutoff_A, bin_width_deg=adf_bin_deg).run().results
    return {"rdf": {"r_A": rdf.r_A.tolist(), "g": {k: v.tolist() for k, v in rdf.g.items()}},
            "adf": {"theta_deg": adf.angle_deg.tolist(), "p": adf.p["all"].tolist()},
            "adf_cutoff_A": float(adf_cutoff_A)}


def run_md(model, initial, *, name: str, timestep_fs: float, inner_steps: int, fast, temperature_K: float,
           friction_per_ps: float, duration_ps: float, discard_ps: float, seed: int):
    """One Langevin run; returns (frames after the discard, thermo after the discard, record)."""
    from thermocg.md import simulate

    integrator = "respa_langevin" if fast is not None else "langevin"
    n_steps = int(round(duration_ps * 1000.0 / timestep_fs))
    every = int(round(FRAME_FS / timestep_fs))
    start = time.perf_counter()
    result = simulate(model, initial, temperature_K=temperature_K, timestep_fs=timestep_fs, n_steps=n_steps,
                      seed=seed, save_interval_steps=every, thermo_interval_steps=every,
                      friction_per_ps=friction_per_ps, integrator=integrator, fast_potential=fast,
                      respa_inner_steps=inner_steps, save_forces=False, raise_on_blowup=False, progress=False)
    wall = time.perf_counter() - start
    record = {"name": name, "integrator": integrator, "timestep_fs": timestep_fs, "inner_steps": inner_steps,
              "n_steps": result.n_steps, "wall_s": wall, "steps_per_s": result.n_steps / wall,
              "ns_per_day": result.n_steps * timestep_fs * 1e-6 * 86400.0 / wall, "blowup": result.blowup}
    if result.blowup or result.frames is None:
        return None, None, record
    times_ps = result.frames.time_fs * 1e-3
    keep = np.nonzero(times_ps >= discard_ps)[0]
    thermo = {k: v[result.thermo["time_ps"] >= discard_ps] for k, v in result.thermo.items()}
    return result.frames.select(keep), thermo, record


def _typed(structure_dict: dict) -> tuple[SimpleNamespace, SimpleNamespace]:
    """The RDF and ADF of a :func:`structure` dict as the attributes the study's error functions read."""
    rdf = SimpleNamespace(r_A=np.asarray(structure_dict["rdf"]["r_A"]),
                          g={k: np.asarray(v) for k, v in structure_dict["rdf"]["g"].items()})
    adf = SimpleNamespace(angle_deg=np.asarray(structure_dict["adf"]["theta_deg"]),
                          p={"all": np.asarray(structure_dict["adf"]["p"])})
    return rdf, adf


def errors_against(reference: dict, other: dict) -> dict:
    """The study's RDF and ADF errors (thermocg.analysis.rdf.rdf_error, thermocg.analysis.adf.adf_error)
    of ``other`` against ``reference``."""
    from thermocg.analysis.adf import adf_error
    from thermocg.analysis.rdf import rdf_error

    ref_rdf, ref_adf = _typed(reference)
    rdf, adf = _typed(other)
    return {"rdf_error": rdf_error(rdf, ref_rdf), "adf_error": adf_error(adf, ref_adf)}


def write_json(path: Path, data: dict) -> None:
    from thermocg.rundir import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def verdict(run: dict, floor: dict, target_K: float) -> str:
    """"unchanged" when the RDF and ADF errors are below the noise floor and the mean temperature is
    within 2% of the thermostat's target; otherwise what failed."""
    if run.get("blowup"):
        return "blew up"
    failed = [name for name, bad in (("RDF", run["rdf_error"] >= floor["rdf_error"]),
                                     ("ADF", run["adf_error"] >= floor["adf_error"]),
                                     (f"T {100 * (run['temperature_K'] / target_K - 1):+.1f}%",
                                      abs(run["temperature_K"] / target_K - 1) > 0.02)) if bad]
    return "unchanged" if not failed else "changed: " + ", ".join(failed)


def table(results: dict) -> str:
    ref, floor = results["reference"], results["noise_floor"]
    lines = [f"Target {results['temperature_K']:g} K. Reference: single step {ref['timestep_fs']:g} fs; noise floor "
             f"(its halves): RDF "
             f"{floor['rdf_error']:.4f}, ADF {floor['adf_error']:.4f}; T = {ref['temperature_K']:.1f} +- "
             f"{ref['temperature_K_stderr']:.1f} K; <U> = {ref['potential_kcal_mol']:.2f} +- "
             f"{ref['potential_kcal_mol_stderr']:.2f} kcal/mol", "",
             "| run | outer dt (fs) | inner steps | RDF error | ADF error | T (K) | <U> (kcal/mol) | model calls/ps "
             "| verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in results["runs"]:
        calls = 1000.0 / run["timestep_fs"]
        if run.get("blowup"):
            lines.append(f"| {run['name']} | {run['timestep_fs']:g} | {run['inner_steps']} | - | - | - | - | "
                         f"{calls:.0f} | blew up ({run['blowup'].split(':')[0].replace('simulation blew up at ', '')}) |")
            continue
        lines.append(
            f"| {run['name']} | {run['timestep_fs']:g} | {run['inner_steps']} | {run['rdf_error']:.4f} | "
            f"{run['adf_error']:.4f} | {run['temperature_K']:.1f} +- {run['temperature_K_stderr']:.1f} | "
            f"{run['potential_kcal_mol']:.2f} +- {run['potential_kcal_mol_stderr']:.2f} | {calls:.0f} | "
            f"{verdict(run, floor, results['temperature_K'])} |")
    return "\n".join(lines) + "\n"


def figure(results: dict, structures: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from thermocg.rundir import atomic_savefig

    fig, (ax_g, ax_p, ax_e) = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    names = ["reference"] + [r["name"] for r in results["runs"] if r["name"] in structures]
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(names)))
    for name, color in zip(names, colors):
        s = structures[name]
        style = dict(color="black", lw=2.0) if name == "reference" else dict(color=color, lw=1.0)
        pair = next(iter(s["rdf"]["g"]))
        ax_g.plot(s["rdf"]["r_A"], s["rdf"]["g"][pair], label=name, **style)
        ax_p.plot(s["adf"]["theta_deg"], s["adf"]["p"], **style)
    ax_g.set(xlabel="r (A)", ylabel="g(r)", title="RDF")
    ax_p.set(xlabel="angle (deg)", ylabel="p(angle) (1/deg)", title=f"ADF (shell {results['adf_cutoff_A']:.2f} A)")
    ax_g.legend(fontsize=7)
    for kind, marker in (("langevin", "o"), ("respa_langevin", "s")):
        runs = [r for r in results["runs"] if r["integrator"] == kind and not r.get("blowup")]
        if runs:
            dt = [r["timestep_fs"] for r in runs]
            ax_e.plot(dt, [r["rdf_error"] for r in runs], marker=marker, color="C0", label=f"RDF, {kind}")
            ax_e.plot(dt, [r["adf_error"] for r in runs], marker=marker, color="C1", label=f"ADF, {kind}")
    ax_e.axhline(results["noise_floor"]["rdf_error"], color="C0", ls="--", lw=0.8, label="noise floor RDF")
    ax_e.axhline(results["noise_floor"]["adf_error"], color="C1", ls="--", lw=0.8, label="noise floor ADF")
    ax_e.set(xlabel="(outer) timestep (fs)", ylabel="error vs reference", title="errors", yscale="log")
    ax_e.legend(fontsize=7)
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True, help="CG dataset (.h5md) of the state: its last frame starts")
    parser.add_argument("--out", required=True)
    parser.add_argument("--temperature-K", type=float, default=None, help="default: the dataset's state")
    parser.add_argument("--friction-per-ps", type=float, default=1.0)
    parser.add_argument("--duration-ps", type=float, default=100.0)
    parser.add_argument("--discard-ps", type=float, default=10.0)
    parser.add_argument("--reference-fs", type=float, default=1.0)
    parser.add_argument("--single", default="2,4,6,8,10,12")
    parser.add_argument("--respa", default="8:4,12:6,16:8,20:10")
    parser.add_argument("--fast", choices=("pair", "prior"), default="pair")
    parser.add_argument("--pair-cutoff-A", type=float, default=5.0)
    parser.add_argument("--rdf-bin-A", type=float, default=0.1)
    parser.add_argument("--adf-bin-deg", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--reference-from", default=None, help="results.json whose reference run to use")
    parser.add_argument("--collect", nargs="+", default=None, help="merge these result directories into OUT")
    args = parser.parse_args(argv)
    if args.collect:
        return collect(args.collect, Path(args.out))

    import torch

    torch.set_num_threads(args.threads)
    from thermocg.dataset import read_frames
    from thermocg.md.splitting import fast_part, split_statistics
    from thermocg.potentials.base import load_potential

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_potential(args.model)
    data = read_frames(args.dataset)
    initial = data.select(slice(-1, None))
    temperature = args.temperature_K or data.state.temperature_K
    results_path = out / "results.json"
    previous = json.loads(results_path.read_text()) if args.resume and results_path.exists() else {}
    done = {r["name"]: r for r in previous.get("runs", [])}
    structures: dict = previous.get("structures", {})
    common = dict(temperature_K=temperature, friction_per_ps=args.friction_per_ps, duration_ps=args.duration_ps,
                  discard_ps=args.discard_ps, seed=args.seed)
    results = {**{k: v for k, v in vars(args).items() if k not in ("model", "dataset", "out", "temperature_K")},
               "model": args.model, "dataset": args.dataset, "temperature_K": temperature, "n_beads": data.n_particles}

    def observables(thermo: dict) -> dict:
        t, t_err = block_stats(thermo["temperature_K"])
        u, u_err = block_stats(thermo["potential_kcal_mol"])
        return {"temperature_K": t, "temperature_K_stderr": t_err, "potential_kcal_mol": u,
                "potential_kcal_mol_stderr": u_err}

    if args.reference_from:
        source = json.loads(Path(args.reference_from).read_text())
        previous = {**previous, **{k: source[k] for k in ("reference", "noise_floor", "adf_cutoff_A")}}
        structures["reference"] = source["structures"]["reference"]
    if "reference" in previous:
        results.update(reference=previous["reference"], noise_floor=previous["noise_floor"],
                       adf_cutoff_A=previous["adf_cutoff_A"])
    else:
        frames, thermo, record = run_md(model, initial, name="reference", timestep_fs=args.reference_fs,
                                        inner_steps=1, fast=None, **common)
        if frames is None:
            raise SystemExit(f"the reference run blew up: {record['blowup']}")
        ref = structure(frames, rdf_bin_A=args.rdf_bin_A, adf_cutoff_A=None, adf_bin_deg=args.adf_bin_deg)
        half = frames.n_frames // 2
        kw = dict(rdf_bin_A=args.rdf_bin_A, adf_cutoff_A=ref["adf_cutoff_A"], adf_bin_deg=args.adf_bin_deg)
        first, second = structure(frames.select(slice(0, half)), **kw), structure(frames.select(slice(half, None)), **kw)
        results.update(reference={**record, **observables(thermo), "n_frames": frames.n_frames},
                       noise_floor=errors_against(first, second), adf_cutoff_A=ref["adf_cutoff_A"])
        structures["reference"] = ref
        write_json(results_path, {**results, "runs": [], "structures": structures})
        print(f"reference {args.reference_fs:g} fs: {record['steps_per_s']:.1f} steps/s, noise floor "
              f"{results['noise_floor']}", flush=True)

    fast = None
    plan = [(f"single {dt:g} fs", dt, 1) for dt in map(float, filter(None, args.single.split(",")))]
    plan += [(f"RESPA {outer:g} fs / {inner}", outer, inner) for outer, inner in parse_respa(args.respa)]
    runs = []
    for name, dt, inner in plan:
        if name in done:
            runs.append(done[name])
            continue
        is_respa = name.startswith("RESPA")
        if is_respa and fast is None:
            fast = fast_part(model, args.fast, frames=data, cutoff_A=args.pair_cutoff_A)
            results["fast_part"] = {"kind": args.fast, "cutoff_A": fast.cutoff_A,
                                    **split_statistics(model, fast, data.select(slice(0, None, 4)))}
        frames, thermo, record = run_md(model, initial, name=name, timestep_fs=dt, inner_steps=inner,
                                        fast=fast if is_respa else None, **common)
        if frames is not None:
            got = structure(frames, rdf_bin_A=args.rdf_bin_A, adf_cutoff_A=results["adf_cutoff_A"],
                            adf_bin_deg=args.adf_bin_deg)
            record.update(errors_against(structures["reference"], got), **observables(thermo))
            structures[name] = got
        runs.append(record)
        write_json(results_path, {**results, "runs": runs, "structures": structures})
        print(f"{name}: {json.dumps({k: v for k, v in record.items() if k != 'name'})}", flush=True)
    results["runs"] = runs
    return finish(results, structures, out)


def finish(results: dict, structures: dict, out: Path) -> int:
    """Verdicts, then results.json, table.md and structure.png in ``out``; the summary JSON line."""
    from thermocg.rundir import atomic_write_text

    runs = results["runs"]
    for run in runs:
        run["verdict"] = verdict(run, results["noise_floor"], results["temperature_K"])
    write_json(out / "results.json", {**results, "structures": structures})
    atomic_write_text(out / "table.md", table(results))
    figure(results, structures, out / "structure.png")
    print(table(results))
    safe = [r["timestep_fs"] for r in runs if r["verdict"] == "unchanged" and r["integrator"] == "langevin"]
    safe_respa = [r["timestep_fs"] for r in runs if r["verdict"] == "unchanged" and r["integrator"] != "langevin"]
    print(json.dumps({"largest_unchanged_single_fs": max(safe, default=None),
                      "largest_unchanged_respa_outer_fs": max(safe_respa, default=None),
                      "noise_floor": results["noise_floor"], "results": str(out / "results.json")}))
    return 0


def collect(directories: list[str], out: Path) -> int:
    """Merge the results of several invocations that share one reference run."""
    parts = [json.loads((Path(d) / "results.json").read_text()) for d in directories]
    merged = {k: v for k, v in parts[0].items() if k not in ("runs", "structures")}
    if merged.get("temperature_K") is None:  # results of a first version of this script
        from thermocg.dataset import read_frames

        merged["temperature_K"] = read_frames(merged["dataset"]).state.temperature_K
    structures = {"reference": parts[0]["structures"]["reference"]}
    runs = []
    for part in parts:
        if part["reference"] != merged["reference"]:
            raise SystemExit("--collect: the result directories do not share one reference run")
        merged.setdefault("fast_part", part.get("fast_part"))
        for run in part["runs"]:
            if run["name"] not in {r["name"] for r in runs}:
                runs.append(run)
                if run["name"] in part["structures"]:
                    structures[run["name"]] = part["structures"][run["name"]]
    order = {"langevin": 0, "respa_langevin": 1}
    merged["runs"] = sorted(runs, key=lambda r: (order[r["integrator"]], r["timestep_fs"]))
    out.mkdir(parents=True, exist_ok=True)
    return finish(merged, structures, out)


if __name__ == "__main__":
    sys.exit(main())
