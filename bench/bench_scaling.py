"""Cost per bead of CG MD from 1,000 to 64,000 beads, beside the all-atom cost per molecule.

CG: one-bead methanol at 0.786 g/cm^3 on a jittered lattice (as bench_md.py), the HIP-NN-TS of
``--n-features`` ... (default: the reference network, 128 features, 20 sensitivities, r_c 15 A), float32,
Langevin BAOAB at ``--cg-timestep-fs`` through ``thermocg.md.CGSimulation`` (1 A skin list, blow-up
checks every 10 steps), ``--threads`` threads. All-atom: the same number of TraPPE-UA methanol
molecules (rigid bonds, PME, LangevinMiddle at ``--aa-timestep-fs`` = 2 fs, OpenMM CPU platform,
default settings), minimised briefly, warmed up, timed.

Each (kind, size) runs in its own subprocess, so that its peak memory is its own: after the warm-up
(the model, the frame, the first force call) the kernel's peak-RSS counter is reset
(/proc/self/clear_refs) and the peak *increase* over the resident size then is read from VmHWM after
the timed steps (``--blocks`` blocks of ``--steps`` steps; the fastest block's time per step is
reported: on a shared machine the least disturbed) (glibc's mmap threshold is pinned at 64 KiB in the children, so memory freed before
the steps is returned and not counted as resident). Per step, the CG child also times its parts on
the same frame: the neighbour search (vesin + the sorted pair index), one force call with that list
(graph, forward, autograd backward), and the rest of a step (integrator arithmetic, list checks,
blow-up checks, rebuilds amortised).

Flat means: time per bead per step and peak memory per bead within 1.3x of the 1,000-bead figures at
every size. Wall times depend on the machine's load (printed); the process CPU time per step (all
threads) is reported beside them, which a shared machine disturbs much less (cache contention aside).

    python bench/bench_scaling.py [--sizes 1000,8000,27000,64000] [--steps 3] [--threads 2]

Prints a table and ends with one line of JSON (``cg_time_per_bead_ratio``, ``cg_memory_per_bead_ratio``,
``speedup_vs_openmm_allatom_ns_per_day`` per size ...).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> int:
    """Reset VmHWM to the current RSS; returns the RSS (bytes)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def _peak_increase(rss_before: int) -> int:
    return _status_kib("VmHWM") * 1024 - rss_before


def child_cg(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    import bench_md

    from thermocg.md import BlowUpDetector, CGSimulation, LangevinBAOAB
    from thermocg.neighbors import pair_index
    from thermocg.potentials.base import energy_and_forces

    n = args.child_size
    frame = bench_md.make_frame(n, seed=1)
    _, model = bench_md.build_network(bench_md.network_params(args), frame, with_hippynn=False)
    integrator = LangevinBAOAB(args.cg_timestep_fs, temperature_K=300.0, friction_per_ps=1.0)
    relaxed = BlowUpDetector(max_force_kcal_mol_A=1e9, min_distance_A=0.0, max_temperature_factor=1e9)
    sim = CGSimulation.from_frames(model, frame, integrator, seed=0, temperature_K=300.0, blowup=relaxed)
    sim.step(1)
    rss = _reset_peak()
    block_times, block_cpu = [], []
    for _ in range(args.blocks):  # blocks of steps, as a run takes them (blow-up checks every 10 steps)
        start, cpu0 = time.perf_counter(), time.process_time()
        sim.step(args.steps)
        block_times.append((time.perf_counter() - start) / args.steps)
        block_cpu.append((time.process_time() - cpu0) / args.steps)
    peak = _peak_increase(rss)
    # the parts, on the current frame
    state = sim.device_state
    x32 = state.positions.to(torch.float32)
    box32 = state.box.to(torch.float32)
    types = torch.zeros(n, dtype=torch.long)
    list_times, force_times = [], []
    for _ in range(3):  # the fastest of three: the machine is shared
        start = time.perf_counter()
        pairs = pair_index(x32[None], box32[None], model.cutoff_A + 1.0)
        list_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        energy_and_forces(model, x32, box32, types, pairs=pairs)
        force_times.append(time.perf_counter() - start)
    list_s, force_s = min(list_times), min(force_times)
    return {"kind": "cg", "n": n, "step_s": min(block_times), "step_blocks_s": block_times,
            "step_cpu_s": min(block_cpu),
            "peak_bytes": peak, "list_s": list_s, "force_s": force_s,
            "n_neighbor_builds": sim.n_neighbor_builds, "steps": args.steps,
            "pairs_per_bead": pairs.pair_i.numel() / n, "load_average_1min": os.getloadavg()[0]}


def child_aa(args: argparse.Namespace) -> dict:
    import openmm

    from thermocg import units
    from thermocg.allatom.build import build_box
    from thermocg.allatom.molecules import get_molecule
    from thermocg.allatom.runner import build_system, resolve_cutoff_A

    n = args.child_size
    molecule = get_molecule(args.molecule)
    positions, box = build_box(molecule, n, 0.786, rng=np.random.default_rng(2))
    system = build_system(molecule, n, box, cutoff_A=resolve_cutoff_A(molecule, box))
    integrator = openmm.LangevinMiddleIntegrator(300.0, 1.0, args.aa_timestep_fs * units.FS_TO_PS)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": str(args.threads)})
    context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.asarray(box) * units.A_TO_NM])
    context.setPositions(np.asarray(positions) * units.A_TO_NM)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 100)
    context.setVelocitiesToTemperature(300.0, 2)
    integrator.step(10)
    context.getState(getEnergy=True)
    rss = _reset_peak()
    stretch_times = []
    for _ in range(3):  # three stretches; the median
        start = time.perf_counter()
        integrator.step(args.aa_steps)
        energy = context.getState(getEnergy=True).getPotentialEnergy()._value
        stretch_times.append((time.perf_counter() - start) / args.aa_steps)
    step_s = float(np.median(stretch_times))
    if not np.isfinite(energy):
        raise SystemExit(f"all-atom run of {n} molecules is unstable")
    return {"kind": "aa", "n": n, "n_atoms": system.getNumParticles(), "step_s": step_s,
            "peak_bytes": _peak_increase(rss), "load_average_1min": os.getloadavg()[0]}


def run_child(kind: str, size: int, argv: list[str], timeout_s: float) -> dict | None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_WAIT_POLICY="passive")
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", kind, "--child-size", str(size)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        print(f"  {kind} {size}: over {timeout_s:.0f} s, skipped", flush=True)
        return None
    if done.returncode != 0:
        print(f"  {kind} {size}: failed ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode})",
              flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,8000,27000,64000", help="bead (molecule) counts, cubes")
    parser.add_argument("--aa-sizes", default=None, help="all-atom molecule counts (default: --sizes; none: no all-atom)")
    parser.add_argument("--steps", type=int, default=3, help="CG steps per timed block")
    parser.add_argument("--blocks", type=int, default=2, help="timed blocks per size; the fastest is reported")
    parser.add_argument("--aa-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cg-timestep-fs", type=float, default=4.0)
    parser.add_argument("--aa-timestep-fs", type=float, default=2.0)
    parser.add_argument("--molecule", default="methanol_trappe")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="per child")
    parser.add_argument("--n-features", type=int, default=128)
    parser.add_argument("--n-sensitivities", type=int, default=20)
    parser.add_argument("--cutoff-A", type=float, default=15.0)
    parser.add_argument("--soft-min-A", type=float, default=2.0)
    parser.add_argument("--soft-max-A", type=float, default=13.0)
    parser.add_argument("--n-interaction-layers", type=int, default=1)
    parser.add_argument("--n-atom-layers", type=int, default=3)
    parser.add_argument("--child", choices=("cg", "aa"), help=argparse.SUPPRESS)
    parser.add_argument("--child-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        print(json.dumps(child_cg(args) if args.child == "cg" else child_aa(args)))
        return
    passthrough = [a for a in sys.argv[1:]]
    sizes = [int(s) for s in args.sizes.split(",")]
    aa_sizes = [] if args.aa_sizes == "none" else [int(s) for s in (args.aa_sizes or args.sizes).split(",")]
    print(f"{args.threads} threads, load average {os.getloadavg()[0]:.1f}; CG at {args.cg_timestep_fs} fs, all-atom at "
          f"{args.aa_timestep_fs} fs", flush=True)
    cg, aa = {}, {}
    for n in sizes:
        cg[n] = run_child("cg", n, passthrough, args.timeout_s)
        if cg[n]:
            print(f"  CG {n}: {json.dumps(cg[n])}", flush=True)
    for n in aa_sizes:
        aa[n] = run_child("aa", n, passthrough, args.timeout_s)
        if aa[n]:
            print(f"  AA {n}: {json.dumps(aa[n])}", flush=True)
    base = cg.get(sizes[0])
    rows = ["| beads | CG ms/step | CG us/step/bead | x 1st | CPU us/step/bead | x 1st | list us/bead | force us/bead | "
            "rest us/bead | CG peak MB | CG kB/bead | x 1st | AA ms/step | AA us/step/molecule | CG/AA ns/day |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    out: dict = {"threads": args.threads, "cg_timestep_fs": args.cg_timestep_fs, "aa_timestep_fs": args.aa_timestep_fs,
                 "load_average_1min": round(os.getloadavg()[0], 2), "sizes": sizes,
                 "cg_us_per_step_per_bead": {}, "cg_kb_per_bead": {}, "cg_time_per_bead_ratio": {},
                 "cg_cpu_us_per_step_per_bead": {}, "cg_cpu_time_per_bead_ratio": {},
                 "cg_memory_per_bead_ratio": {}, "aa_us_per_step_per_molecule": {},
                 "speedup_vs_openmm_allatom_ns_per_day": {}}
    for n in sorted(set(sizes) | set(aa_sizes)):
        c, a = cg.get(n), aa.get(n)
        cells = [str(n)]
        if c:
            per_bead = c["step_s"] / n * 1e6
            kb = c["peak_bytes"] / n / 1e3
            t_ratio = per_bead / (base["step_s"] / base["n"] * 1e6) if base else float("nan")
            m_ratio = kb / (base["peak_bytes"] / base["n"] / 1e3) if base else float("nan")
            rest = max(c["step_s"] - c["force_s"] - c["list_s"] * c["n_neighbor_builds"] / max(c["steps"], 1), 0.0)
            cpu_per_bead = c["step_cpu_s"] / n * 1e6
            c_ratio = cpu_per_bead / (base["step_cpu_s"] / base["n"] * 1e6) if base else float("nan")
            out["cg_cpu_us_per_step_per_bead"][n] = round(cpu_per_bead, 3)
            out["cg_cpu_time_per_bead_ratio"][n] = round(c_ratio, 3)
            cells += [f"{c['step_s'] * 1e3:.0f}", f"{per_bead:.1f}", f"{t_ratio:.2f}", f"{cpu_per_bead:.1f}",
                      f"{c_ratio:.2f}", f"{c['list_s'] / n * 1e6:.2f}",
                      f"{c['force_s'] / n * 1e6:.1f}", f"{rest / n * 1e6:.1f}", f"{c['peak_bytes'] / 1e6:.0f}",
                      f"{kb:.1f}", f"{m_ratio:.2f}"]
            out["cg_us_per_step_per_bead"][n] = round(per_bead, 3)
            out["cg_kb_per_bead"][n] = round(kb, 2)
            out["cg_time_per_bead_ratio"][n] = round(t_ratio, 3)
            out["cg_memory_per_bead_ratio"][n] = round(m_ratio, 3)
        else:
            cells += ["-"] * 11
        if a:
            cells += [f"{a['step_s'] * 1e3:.1f}", f"{a['step_s'] / n * 1e6:.2f}"]
            out["aa_us_per_step_per_molecule"][n] = round(a["step_s"] / n * 1e6, 4)
        else:
            cells += ["-", "-"]
        if c and a:
            ratio = (args.cg_timestep_fs / c["step_s"]) / (args.aa_timestep_fs / a["step_s"])
            cells.append(f"{ratio:.3f}")
            out["speedup_vs_openmm_allatom_ns_per_day"][n] = round(ratio, 4)
        else:
            cells.append("-")
        rows.append("| " + " | ".join(cells) + " |")
    print("\n".join(rows))
    t_ratios, m_ratios = out["cg_time_per_bead_ratio"].values(), out["cg_memory_per_bead_ratio"].values()
    out["cg_flat_within_1_3x"] = bool(t_ratios) and max(t_ratios) <= 1.3 and max(m_ratios) <= 1.3
    cpu_ratios = out["cg_cpu_time_per_bead_ratio"].values()
    out["cg_cpu_flat_within_1_3x"] = bool(cpu_ratios) and max(cpu_ratios) <= 1.3 and max(m_ratios) <= 1.3
    out["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
