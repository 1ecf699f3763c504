"""What ``thermocg run-md`` costs per step on top of driving OpenMM or LAMMPS by hand with the same model.

``run-md --engine openmm|lammps`` advances the engine in chunks up to the next check or report, checks
for blow-ups every 10 steps (the model evaluated once more at the current positions: the engines do not
hand back the forces they used), and writes traj.h5md, thermo.csv and restart.npz. Its peer here is the
bare engine bridge (bench_engines.py's runners: ``OpenMMEngine.simulation().step(n)``, ``LammpsEngine.run(n)``)
with the same model, frame, temperature (300 K), friction (1/ps) and timestep (2 fs), writing nothing.

Each repeat times both for ``--steps`` and for twice as many steps, from a fresh start each time (run-md
reads the structure from an H5MD file and loads the model file; the peer builds its engine from the
frame and model in memory); the difference between the two lengths is the marginal cost of ``--steps``
steps, free of set-up. Reported: CPU time of this process per marginal step (``time.process_time``),
``overhead_ratio_runmd_vs_bare_<engine>`` = run-md / bare (> 1 is slower; the median over repeats, with
the range), and the same for the whole runs of ``--steps`` steps (set-up included). The system and the
models are bench_engines.py's (one-bead methanol-like beads melted from a lattice; ``hipnn``: a small
HIP-NN-TS plus Lennard-Jones, ``lj``: Lennard-Jones alone).

    python bench/bench_runmd.py [--n-beads 512] [--steps 200] [--repeats 3] [--threads 1] [--models hipnn,lj]

Measured here (512 beads, 1 thread, 200 and 400 steps x 3 repeats, a shared machine at a load of 5-9, so
the per-repeat ratios scatter widely): HIP-NN-TS + LJ, run-md / bare per marginal step 1.28 with OpenMM
(repeats 0.84-1.34) and 1.14 with LAMMPS (1.00-1.58); LJ alone 1.35 (1.18-2.76) and 1.14 (1.13-2.02).
Whole 200-step runs, set-up and files included: 1.35 / 1.40 (HIP-NN-TS) and 1.67 / 1.68 (LJ). So run-md's
checks and files cost roughly 15-35 % per step on top of the bare engine, most of it the extra model
evaluation of every check (one in 10 steps) and its own neighbour list; ``thermocg run-md --engine
thermocg`` has no such cost (its checks reuse the forces of the step).

Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_engines import LammpsRunner, OpenMMRunner, liquid_frame, make_frame, make_model, setup

ENGINES = {"openmm": OpenMMRunner, "lammps": LammpsRunner}


def bare_cpu_s(engine: str, model, frame, n_steps: int) -> float:
    cpu = time.process_time()
    runner = ENGINES[engine](model, frame)
    runner.seconds_per_step(n_steps, seed=1)
    if hasattr(runner, "close"):
        runner.close()
    return time.process_time() - cpu


def runmd_cpu_s(engine: str, model_file: Path, structure: Path, work: Path, n_steps: int) -> float:
    from thermocg.md.standalone import run_md

    cpu = time.process_time()
    summary = run_md(model=model_file, structure=structure, temperature_K=300.0, duration_ps=n_steps * 2e-3,
                     timestep_fs=2.0, engine=engine, output=work, overwrite=True, progress=False, device="cpu")
    elapsed = time.process_time() - cpu
    if summary.blowup or summary.n_steps != n_steps:
        raise SystemExit(f"run-md {engine}: {summary.n_steps} steps, blow-up {summary.blowup}")
    return elapsed


def bench_model(name: str, frame, args, work: Path) -> dict[str, float | list[float]]:
    from thermocg.dataset import write_frames
    from thermocg.potentials.base import save_potential

    model = make_model(name)
    model_file = save_potential(model, work / f"{name}.safetensors")
    structure = write_frames(frame, work / "start.h5md", kind="cg")
    out: dict[str, float | list[float]] = {}
    for engine in ENGINES:
        runmd_cpu_s(engine, model_file, structure, work / "warm", max(10, args.steps // 10))  # warm-up
        bare_cpu_s(engine, model, frame, max(10, args.steps // 10))
        marginal, whole = [], []
        for r in range(args.repeats):
            costs = {}
            for n in (args.steps, 2 * args.steps):
                order = ("runmd", "bare") if r % 2 == 0 else ("bare", "runmd")  # alternate who runs first
                for who in order:
                    costs[who, n] = (runmd_cpu_s(engine, model_file, structure, work / "run", n) if who == "runmd"
                                     else bare_cpu_s(engine, model, frame, n))
            per_step = {who: (costs[who, 2 * args.steps] - costs[who, args.steps]) / args.steps
                        for who in ("runmd", "bare")}
            marginal.append(per_step["runmd"] / per_step["bare"])
            whole.append(costs["runmd", args.steps] / costs["bare", args.steps])
            print(f"  {name} {engine} repeat {r}: run-md {1e3 * per_step['runmd']:.2f} ms CPU/step, bare "
                  f"{1e3 * per_step['bare']:.2f} ms (ratio {marginal[-1]:.3f}); whole {args.steps}-step runs "
                  f"{costs['runmd', args.steps]:.2f} s vs {costs['bare', args.steps]:.2f} s", file=sys.stderr)
        out[f"{name}_overhead_ratio_runmd_vs_bare_{engine}"] = round(statistics.median(marginal), 3)
        out[f"{name}_overhead_ratio_runmd_vs_bare_{engine}_range"] = [round(min(marginal), 3), round(max(marginal), 3)]
        out[f"{name}_whole_run_ratio_runmd_vs_bare_{engine}"] = round(statistics.median(whole), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-beads", type=int, default=512)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="hipnn,lj")
    parser.add_argument("--equilibration-steps", type=int, default=1000)
    args = parser.parse_args()
    setup(args.threads)
    frame = liquid_frame(make_frame(args.n_beads, seed=1), args.equilibration_steps)
    out: dict[str, float | int | list[float]] = {"n_beads": args.n_beads, "steps": args.steps,
                                                "repeats": args.repeats, "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            out.update(bench_model(name.strip(), frame, args, Path(tmp)))
    first = args.models.split(",")[0].strip()
    for engine in ENGINES:
        out[f"speedup_vs_bare_{engine}"] = round(1.0 / out[f"{first}_overhead_ratio_runmd_vs_bare_{engine}"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
